//! Writing: the one path by which frames reach a connection's queue, and the one
//! place queues are written to sockets.
//!
//! [`queue_frame`] queues a frame, or a room's batch of frames (`batches.rs`),
//! under `--max-output` (a peer past it is closed as a slow reader instead) and
//! puts the connection on the flush list;
//! [`Server::flush_pending_writes`] writes the listed connections, at most
//! `FLUSHES_PER_ITERATION` per loop iteration, each with as few system calls as
//! its queue allows ("write before sleeping": a connection waits for a writable
//! event only when its socket is full). What a flush leads to (draining after the
//! last bytes, reading again after a pause, a dead socket) is returned as a
//! [`FlushOutcome`] for the loop to act on. Two writes happen elsewhere, both
//! documented where they are: `OutputQueue::make_room` writes early when a queue
//! passes the limit, and `accept.rs` writes a 503 to a socket it never admits.
//! A TLS socket takes plaintext and writes records (`tls.rs`); a flush also
//! writes the records it holds, such as the handshake's, so a connection with
//! nothing queued may still be on the flush list.

use super::batches::RoomBatches;
use super::{Pending, Server};
use crate::chat::SharedFrame;
use crate::config::Config;
use crate::connection::{AfterFlush, Connection, Phase, Socket};
use crate::frame::{self, OpCode};
use crate::message::{self, CloseCode};
use crate::metrics::{self, Metrics};
use crate::output::{Flushed, OutputQueue};
use log::warn;
use slab::Slab;
use std::io;
use std::time::Instant;

/// Connections flushed per iteration. A broadcast to thousands of members would
/// otherwise keep the loop from reading for as long as its writes take (about 6 ms
/// per 1,000 on a small VM). Between slices the loop polls again: new input is
/// read, and a message that arrived meanwhile joins the frames still queued for
/// the members not yet written, in the same write.
const FLUSHES_PER_ITERATION: usize = 128;

/// A frame to queue on one connection.
#[derive(Debug, Clone, Copy)]
pub(super) enum Outgoing<'a> {
    /// Encoded once, shared by every recipient (a broadcast).
    Shared(&'a SharedFrame),
    /// Encoded for this connection only (an echo, a pong, a ping).
    Frame(OpCode, &'a [u8]),
    /// A compressed payload, encoded with RSV1 for this connection only.
    Compressed(OpCode, &'a [u8]),
    /// Several frames sent to a room in one loop iteration, in one buffer shared
    /// by every recipient of its kind (`batches.rs`).
    Batch(BatchFrames<'a>),
}

/// A room's batch as queued on a member: its bytes, and what they hold.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchFrames<'a> {
    pub bytes: &'a SharedFrame,
    /// Frames in `bytes`, and how many of them are compressed (for the counters).
    pub frames: u64,
    pub compressed: u64,
    /// The length of the last frame, for `--max-output` (see `push_frame`).
    pub last: usize,
}

/// What queuing output touches besides the connection itself: the flush list,
/// the counters and the limits. Split from the server so that a caller may hold a
/// connection (or the chat) while it queues.
pub(super) struct Outbox<'s> {
    pub pending: &'s mut Pending,
    pub metrics: &'s mut Metrics,
    pub config: &'s Config,
    /// The rooms' pending batches, for output that must follow them
    /// (`batches::catch_up`).
    pub batches: &'s mut RoomBatches,
}

/// What a flush leads to, for the loop to act on (`Server::on_flushed`).
#[derive(Debug)]
pub(super) enum FlushOutcome {
    /// The last bytes before a close are out: shut TCP and drain.
    LastBytesOut(usize),
    /// A paused HTTP connection's queue fell back under the limit: read on.
    ResumeReading(usize),
    /// The socket failed.
    Failed(usize, io::Error),
}

/// Queues `frame` for connection `key`, the one way data and ping frames reach a
/// queue. Returns false if the peer takes no more frames, or is past
/// `--max-output` and was just closed as a slow reader. A queue thus holds at most
/// the limit plus one message.
pub(super) fn queue_frame(
    conn: &mut Connection,
    key: usize,
    frame: Outgoing,
    outbox: &mut Outbox,
) -> bool {
    if !conn.accepts_frames() {
        return false;
    }
    if !push_frame(
        &mut conn.socket,
        &mut conn.output,
        frame,
        outbox.metrics,
        outbox.config,
    ) {
        close_slow_reader(conn, key, outbox);
        return false;
    }
    push_flush(conn, key, outbox.pending);
    true
}

/// The step every queued frame takes: make room under `--max-output` (a queue
/// past it is written early, see `OutputQueue::make_room`), push, count. Returns
/// false if the peer is past the limit. Takes the connection's parts, so that
/// `websocket.rs` can queue a reply while the session still lends its payload;
/// the caller puts the connection on the flush list.
///
/// A batch of frames is checked as its frames were one by one: before it, and
/// after it less its last frame (the queue as it was before that frame), so a
/// queue still holds at most the limit plus one message. A peer found past it
/// after the batch keeps the batch only if it has started to go out.
pub(super) fn push_frame(
    socket: &mut Socket,
    output: &mut OutputQueue,
    frame: Outgoing,
    metrics: &mut Metrics,
    config: &Config,
) -> bool {
    let limit = socket.queue_limit(config.max_output); // less what TLS may hold
    if !output.make_room(socket, limit, &mut metrics.bytes_out) {
        return false;
    }
    match frame {
        Outgoing::Shared(shared) => {
            metrics.compressed_frames_out += u64::from(frame::is_compressed(shared));
            output.push_shared(shared)
        }
        Outgoing::Frame(opcode, payload) => {
            output.push_owned(|out| frame::encode_frame(out, opcode, payload))
        }
        Outgoing::Compressed(opcode, payload) => {
            metrics.compressed_frames_out += 1;
            output.push_owned(|out| frame::encode_compressed_frame(out, opcode, payload))
        }
        Outgoing::Batch(batch) => {
            metrics.compressed_frames_out += batch.compressed;
            metrics.frames_out += batch.frames;
            output.push_shared(batch.bytes);
            let before_last = limit.saturating_add(batch.last);
            return output.make_room(socket, before_last, &mut metrics.bytes_out);
        }
    }
    metrics.frames_out += 1;
    true
}

/// Queues a shared frame on the connection `key` of the slab, if it is there.
pub(super) fn deliver(
    connections: &mut Slab<Connection>,
    outbox: &mut Outbox,
    key: usize,
    frame: &SharedFrame,
) {
    if let Some(conn) = connections.get_mut(key) {
        queue_frame(conn, key, Outgoing::Shared(frame), outbox);
    }
}

/// Queues our close frame. The caller decides that one is due (the session says
/// so); a close frame is never refused for the output limit: it is what a slow
/// reader gets.
pub(super) fn push_close(
    conn: &mut Connection,
    key: usize,
    code: CloseCode,
    reason: &str,
    outbox: &mut Outbox,
) {
    conn.output
        .push_owned(|out| message::encode_close(out, code, reason));
    metrics::count(&mut outbox.metrics.closes_sent, code.0);
    outbox.metrics.frames_out += 1;
    push_flush(conn, key, outbox.pending);
}

/// Starts the closing handshake from our side (§7.1.2), once: the session moves
/// to `CloseSent` and our close frame is queued.
pub(super) fn start_close(
    conn: &mut Connection,
    key: usize,
    code: CloseCode,
    reason: &str,
    outbox: &mut Outbox,
) {
    let deadline = Instant::now() + outbox.config.close_timeout;
    let Phase::WebSocket(ws) = &mut conn.phase else {
        return;
    };
    if ws.session.start_close(deadline) {
        push_close(conn, key, code, reason, outbox);
    }
}

/// A peer past `--max-output`: its unsent backlog is dropped and a close 1008 is
/// queued at once (so nothing more is queued for it), and it leaves its room in
/// the slow-reader step of the loop (`closing.rs`), not here in the middle of a
/// delivery.
pub(super) fn close_slow_reader(conn: &mut Connection, key: usize, outbox: &mut Outbox) {
    outbox.metrics.slow_readers_dropped += 1;
    warn!(
        "{} [{key}] slow reader: {} bytes queued (limit {}); disconnecting",
        conn.peer,
        conn.output.queued(),
        outbox.config.max_output
    );
    conn.output.discard_unstarted();
    start_close(
        conn,
        key,
        CloseCode::POLICY_VIOLATION,
        "slow reader",
        outbox,
    );
    outbox.pending.slow.push(key);
}

/// Adds connection `key` to the flush list, once.
pub(super) fn push_flush(conn: &mut Connection, key: usize, pending: &mut Pending) {
    if !conn.flush_queued && !conn.doomed {
        conn.flush_queued = true;
        pending.flush.push_back(key);
    }
}

impl Server {
    /// A connection and the outbox to queue its output with.
    pub(super) fn connection_and_outbox(
        &mut self,
        key: usize,
    ) -> Option<(&mut Connection, Outbox<'_>)> {
        let conn = self.connections.get_mut(key)?;
        let outbox = Outbox {
            pending: &mut self.pending,
            metrics: &mut self.metrics,
            config: &self.config,
            batches: &mut self.batches,
        };
        Some((conn, outbox))
    }

    /// Remembers that `key` has output to flush at the end of this iteration.
    pub(super) fn queue_flush(&mut self, key: usize) {
        if let Some(conn) = self.connections.get_mut(key) {
            push_flush(conn, key, &mut self.pending);
        }
    }

    /// Writes each listed connection's queue, many frames per call. At most
    /// `FLUSHES_PER_ITERATION` connections are flushed, in the order they were
    /// listed; the rest wait for the next iteration, which polls without sleeping.
    /// So behind a broadcast to N members, a reply waits up to N / 128
    /// iterations, and a member's queue collects the broadcasts made meanwhile.
    pub(super) fn flush_pending_writes(&mut self) -> Vec<FlushOutcome> {
        let mut outcomes = Vec::new();
        for _ in 0..FLUSHES_PER_ITERATION {
            let Some(key) = self.pending.flush.pop_front() else {
                break;
            };
            // A key left here by a connection freed since may now name a new
            // connection. Flushing that one early is harmless: writing sooner than
            // asked is always allowed, and its own entry still comes later.
            let Some(conn) = self.connections.get_mut(key) else {
                continue;
            };
            conn.flush_queued = false;
            if conn.doomed {
                continue;
            }
            match conn.output.flush(&mut conn.socket) {
                Ok((written, flushed)) => {
                    self.metrics.bytes_out += written as u64;
                    if written > 0 && matches!(conn.phase, Phase::Http) {
                        // An HTTP connection's clock runs from its last progress:
                        // a response being read is not cut off, a stalled one is.
                        conn.deadline = Some(Instant::now() + self.config.handshake_timeout);
                    }
                    if flushed == Flushed::All && conn.after_flush == AfterFlush::Shutdown {
                        outcomes.push(FlushOutcome::LastBytesOut(key));
                    } else if conn.read_paused && conn.output.queued() <= self.config.max_output {
                        outcomes.push(FlushOutcome::ResumeReading(key));
                    }
                }
                Err(e) => outcomes.push(FlushOutcome::Failed(key, e)),
            }
        }
        outcomes
    }
}
