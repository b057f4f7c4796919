//! One peer: its socket, its unparsed input, its write queue and its phase.
//!
//! A connection starts in [`Phase::Http`], may become a [`Phase::WebSocket`] after
//! the RFC 6455 §4 handshake, and ends in [`Phase::Draining`]: after its last bytes
//! are flushed, the server half-closes TCP and reads until the peer closes too
//! (§7.1.1: the server closes the TCP connection first), so the peer never sees a
//! reset that could destroy our last frame. The WebSocket protocol state lives in
//! the connection's [`Session`]; the TCP-level state (has the peer sent its FIN,
//! is reading paused, is the connection to be freed) lives here. The server
//! decides; this module holds the state.

use crate::chat::{Member, Pace};
use crate::deflate::Agreement;
use crate::output::OutputQueue;
use crate::session::Session;
use mio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

/// Where a connection is in its life.
// Most connections spend their life upgraded: boxing the WebSocket state would
// add an allocation per upgrade and a pointer chase per read, to save bytes only
// during the short HTTP phase.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Phase {
    /// Reading HTTP requests (keep-alive and pipelining allowed).
    Http,
    /// Upgraded: exchanging frames.
    WebSocket(WebSocket),
    /// Our last bytes are out and our side of TCP is shut; discarding input until
    /// the peer closes or the deadline passes.
    Draining,
}

/// What a WebSocket connection is for.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// `/echo`: every message comes back as it came.
    Echo,
    /// `/chat[/room]`: a member of a chat room.
    Chat {
        room: Rc<str>,
        member: Member,
        /// Flood control (`--max-message-rate`).
        pace: Pace,
    },
    /// `/relay/room`: a member of a relay room (messages passed on verbatim).
    Relay { room: Rc<str> },
}

/// An upgraded connection: what it is for, and its protocol state.
#[derive(Debug)]
pub struct WebSocket {
    pub endpoint: Endpoint,
    pub session: Session,
    /// permessage-deflate, if agreed at the upgrade (RFC 7692).
    pub deflate: Option<Agreement>,
}

/// What to do once the write queue is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFlush {
    KeepOpen,
    /// Shut our side of TCP and drain: the response or close frame was the last.
    Shutdown,
}

/// One peer of the server.
#[derive(Debug)]
pub struct Connection {
    pub socket: TcpStream,
    pub peer: SocketAddr,
    pub phase: Phase,
    /// HTTP bytes not yet parsed (empty once upgraded).
    pub input: Vec<u8>,
    /// How far the search for the end of the current request head has looked.
    pub scanned: usize,
    pub output: OutputQueue,
    /// The TCP-level deadline: the request head (HTTP), or the last bytes going
    /// out and the peer's FIN (closing). The WebSocket close handshake's own
    /// deadline is the session's.
    pub deadline: Option<Instant>,
    pub after_flush: AfterFlush,
    /// The peer closed its side (read returned 0): read no more.
    pub peer_closed: bool,
    /// Reading waits until the output queue drains (HTTP pipelining backpressure).
    pub read_paused: bool,
    /// HTTP responses queued so far (an idle keep-alive connection has some).
    pub requests_served: u64,
    /// Already in the server's list of connections to flush.
    pub flush_queued: bool,
    /// Marked for removal at the end of the loop iteration; receives nothing more.
    pub doomed: bool,
}

impl Connection {
    pub fn new(socket: TcpStream, peer: SocketAddr, deadline: Instant) -> Self {
        Connection {
            socket,
            peer,
            phase: Phase::Http,
            input: Vec::new(),
            scanned: 0,
            output: OutputQueue::default(),
            deadline: Some(deadline),
            after_flush: AfterFlush::KeepOpen,
            peer_closed: false,
            read_paused: false,
            requests_served: 0,
            flush_queued: false,
            doomed: false,
        }
    }

    /// The WebSocket state, if upgraded.
    pub fn websocket(&mut self) -> Option<&mut WebSocket> {
        match &mut self.phase {
            Phase::WebSocket(ws) => Some(ws),
            _ => None,
        }
    }

    /// Whether new data frames may still be queued to this peer.
    pub fn accepts_frames(&self) -> bool {
        !self.doomed
            && self.after_flush == AfterFlush::KeepOpen
            && matches!(&self.phase, Phase::WebSocket(ws) if ws.session.is_open())
    }
}
