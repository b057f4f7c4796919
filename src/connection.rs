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
//!
//! A connection's [`Socket`] is TCP, or TLS over TCP for `https://` and `wss://`
//! (RFC 8446, RFC 5246; RFC 6455 §11.1.2). Either way it reads and writes the
//! plaintext with the contract of `std::io::Read` and `Write`, so the phases
//! above it (HTTP, WebSocket, draining) are the same over both.

use crate::chat::{Member, Pace};
use crate::deflate::Agreement;
use crate::output::OutputQueue;
use crate::session::Session;
use crate::tls::TlsStream;
use mio::net::TcpStream;
use mio::{event::Source, Interest, Registry, Token};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
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
    pub socket: Socket,
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
    pub fn new(socket: Socket, peer: SocketAddr, deadline: Instant) -> Self {
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

    /// Whether bytes wait to be written: queued output, or TLS records (a
    /// handshake message, an alert, ciphertext the socket did not take yet).
    pub fn has_output(&self) -> bool {
        !self.output.is_empty() || self.socket.wants_write()
    }

    /// Whether new data frames may still be queued to this peer.
    pub fn accepts_frames(&self) -> bool {
        !self.doomed
            && self.after_flush == AfterFlush::KeepOpen
            && matches!(&self.phase, Phase::WebSocket(ws) if ws.session.is_open())
    }
}

/// A connection's byte stream: TCP, or TLS over TCP. Reads give and writes take
/// plaintext either way. The TLS state is boxed, so a plain connection pays one
/// pointer for it.
#[derive(Debug)]
pub struct Socket {
    tcp: TcpStream,
    tls: Option<Box<TlsStream>>,
}

impl Socket {
    /// Plain TCP.
    pub fn plain(tcp: TcpStream) -> Socket {
        Socket { tcp, tls: None }
    }

    /// TLS over `tcp`, the handshake still to come.
    pub fn tls(tcp: TcpStream, tls: TlsStream) -> Socket {
        Socket {
            tcp,
            tls: Some(Box::new(tls)),
        }
    }

    /// Whether a TLS peer's stream has ended though the last read returned
    /// data: a short read then does not mean the socket is drained, as the end
    /// is still to be read (always false for plain TCP).
    pub fn read_ended(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.ended())
    }

    /// Whether TLS records wait for the socket (always false for plain TCP).
    pub fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.wants_write())
    }

    /// The bytes of `--max-output` (`max_output`) that the queue may hold: all
    /// of them over TCP; over TLS, less what rustls may hold as ciphertext, so
    /// that a slow reader's plaintext and ciphertext together stay within it.
    pub fn queue_limit(&self, max_output: usize) -> usize {
        match &self.tls {
            None => max_output,
            Some(tls) => max_output.saturating_sub(tls.buffer_limit()),
        }
    }

    /// Queues TLS close_notify (RFC 8446 §6.1) and writes it, before TCP is
    /// half-closed. `WouldBlock` if the socket is full: call again once it is
    /// writable. Nothing to do for plain TCP.
    pub fn close_notify(&mut self) -> io::Result<()> {
        match &mut self.tls {
            None => Ok(()),
            Some(tls) => {
                tls.close_notify();
                tls.flush(&mut self.tcp)
            }
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.tcp.shutdown(how)
    }

    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.tcp.set_nodelay(nodelay)
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.tcp.read(buf),
            Some(tls) => tls.read(&mut self.tcp, buf),
        }
    }
}

/// Over TLS, `write` encrypts into rustls and pushes the records out, taking
/// nothing while earlier records still wait; `flush` writes the records left,
/// or says `WouldBlock`. Over TCP, `flush` has nothing to do.
impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.tcp.write(buf),
            Some(tls) => tls.write(&mut self.tcp, buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.tcp.write_vectored(bufs),
            Some(tls) => tls.write_vectored(&mut self.tcp, bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            None => Ok(()),
            Some(tls) => tls.flush(&mut self.tcp),
        }
    }
}

/// Registered with the poll as its TCP socket is.
impl Source for Socket {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.tcp.deregister(registry)
    }
}
