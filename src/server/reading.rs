//! Reading: bytes off a ready socket into the shared read buffer, and on to the
//! phase that takes them (HTTP requests, WebSocket frames, or nothing while
//! draining). A bounded number of reads per wake-up, so one fast sender cannot
//! starve the others; what is left is read on the next iteration. A TLS socket
//! reads decrypted plaintext the same way (`tls.rs`); reading it may also give
//! the handshake records to send, so it is then put on the flush list.

use super::Server;
use crate::connection::{AfterFlush, Phase};
use std::io::{self, Read};
use std::time::Instant;

/// Reads from one socket per wake-up (each up to `READ_BUFFER_SIZE`).
const READS_PER_WAKE: usize = 16;
/// One read takes up to this much: enough for everything a loopback socket holds
/// in the common case, so one `read` call empties it.
pub(super) const READ_BUFFER_SIZE: usize = 256 * 1024;

/// When a socket counts as drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadUntil {
    /// Read until `read` says `WouldBlock` (or the peer's FIN): the rule mio states
    /// for edge-triggered sources. Used when no new event will come for what is
    /// left: after the peer's FIN, and for leftovers of an earlier wake-up.
    WouldBlock,
    /// Stop after a read shorter than the buffer: it took all the socket held, and
    /// with epoll (mio's backend on Linux) any byte arriving after it raises a new
    /// edge, so the read that would only say `WouldBlock` is skipped, one system
    /// call less per wake-up (tokio makes the same choice).
    ShortRead,
}

impl Server {
    /// Reads from connection `key` until it is drained (as `until` says), its read
    /// budget is spent, or it ends, and acts on each piece as it arrives.
    pub(super) fn read_connection(&mut self, key: usize, until: ReadUntil) {
        // The shared buffer is moved out while in use so that the handlers below
        // may borrow the rest of the server.
        let mut buffer = std::mem::take(&mut self.read_buffer);
        let mut budget_spent = true;
        for _ in 0..READS_PER_WAKE {
            let Some(conn) = self
                .connections
                .get_mut(key)
                .filter(|c| !c.doomed && !c.peer_closed && !c.read_paused)
            else {
                budget_spent = false;
                break;
            };
            match conn.socket.read(&mut buffer[..]) {
                Ok(0) => {
                    self.on_peer_closed(key);
                    budget_spent = false;
                    break;
                }
                Ok(n) => {
                    self.metrics.bytes_in += n as u64;
                    self.on_bytes(key, &mut buffer[..n]);
                    // (A short TLS read has drained the socket too, unless
                    // the peer's close_notify came with it: read that next.)
                    let ended = self
                        .connections
                        .get(key)
                        .is_some_and(|c| c.socket.read_ended());
                    if n < buffer.len() && until == ReadUntil::ShortRead && !ended {
                        budget_spent = false;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    budget_spent = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.drop_connection(key, &format!("read error: {e}"));
                    budget_spent = false;
                    break;
                }
            }
        }
        self.read_buffer = buffer;
        // The TLS handshake answers (or an alert) wait in rustls: write them.
        if self
            .connections
            .get(key)
            .is_some_and(|c| c.socket.wants_write())
        {
            self.queue_flush(key);
        }
        // Not drained: no new event will come for what is left, so the next
        // iteration reads again (after the others had their turn).
        if budget_spent {
            self.pending.read_more.push(key);
        }
    }

    /// Reads again from connections that ran out of read budget last time, or
    /// whose reading was paused and resumed.
    pub(super) fn read_leftovers(&mut self) {
        let keys = std::mem::take(&mut self.pending.read_more);
        for key in keys {
            self.read_connection(key, ReadUntil::WouldBlock);
        }
    }

    /// Dispatches freshly read bytes by phase.
    fn on_bytes(&mut self, key: usize, bytes: &mut [u8]) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        match conn.phase {
            Phase::Http => {
                conn.input.extend_from_slice(bytes);
                self.serve_http(key); // requests.rs
            }
            Phase::WebSocket(_) => self.on_websocket_bytes(key, bytes), // websocket.rs
            Phase::Draining => {} // discarded: we are only waiting for the FIN
        }
    }

    /// The peer closed its side (read returned 0).
    fn on_peer_closed(&mut self, key: usize) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        let abnormal = matches!(&conn.phase, Phase::WebSocket(ws) if !ws.session.input_finished());
        if abnormal {
            self.metrics.connection_closed_abnormally();
        }
        let reason = if abnormal {
            "closed without a close frame (1006)"
        } else {
            "closed"
        };
        if conn.output.is_empty() || matches!(conn.phase, Phase::Draining) {
            self.drop_connection(key, reason);
            return;
        }
        // A peer may half-close right after its last request or close frame: what
        // we owe it (the response, our close frame) still goes out, then we close.
        conn.peer_closed = true;
        conn.after_flush = AfterFlush::Shutdown;
        conn.deadline = Some(Instant::now() + self.config.close_timeout);
        self.leave_room(key);
        self.queue_flush(key);
    }
}
