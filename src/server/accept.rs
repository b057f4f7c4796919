//! Accepting: new TCP connections off the listener, a bounded number per wake-up,
//! refused with `503 Service Unavailable` past the connection limit, and a pause
//! instead of a spin when `accept` itself fails (EMFILE and the like). With TLS,
//! each admitted socket starts its handshake (`tls.rs`), and a refused one is
//! closed without a 503, which would first cost a handshake.

use super::Server;
use crate::config::Config;
use crate::connection::Connection;
use crate::http::{Response, Status};
use crate::metrics;
use log::{info, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

/// Connections accepted per wake-up, so an accept flood cannot starve the peers
/// already connected. More are taken on the next iteration.
const ACCEPTS_PER_WAKE: usize = 256;
/// After an `accept` error such as EMFILE, wait this long before accepting again,
/// instead of spinning on a listener that stays ready.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Descriptors kept free for the listener, the poll, logs and static files when
/// the connection limit is derived from RLIMIT_NOFILE.
const RESERVED_FDS: u64 = 64;

impl Server {
    /// Accepts waiting connections, at most `ACCEPTS_PER_WAKE` of them.
    pub(super) fn accept_connections(&mut self) {
        if !self.accept_ready {
            return;
        }
        let now = Instant::now();
        if self.accept_paused_until.is_some_and(|t| t > now) {
            return;
        }
        self.accept_paused_until = None;
        for _ in 0..ACCEPTS_PER_WAKE {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((socket, peer)) => self.admit(socket, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return;
                }
                Err(e) if is_transient_accept_error(&e) => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the listener stays ready but
                    // every accept would fail. Back off instead of spinning.
                    self.metrics.accept_errors += 1;
                    warn!(
                        "accept failed: {e}; pausing accepts for {} ms",
                        ACCEPT_BACKOFF.as_millis()
                    );
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
        // The bound was reached: `accept_ready` stays set, so the next poll returns
        // at once and the rest are accepted then.
    }

    /// Registers a new connection, or refuses it with 503 past the limit.
    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr) {
        self.metrics.connections_accepted += 1;
        let full = self.connections.len() >= self.max_connections;
        if full || !self.admit_address(peer.ip()) {
            let why = if full {
                self.metrics.connections_refused += 1;
                "the server is at its connection limit (--max-connections); try again later"
            } else {
                self.metrics.connections_refused_per_ip += 1;
                "too many connections from this address (--max-connections-per-ip)"
            };
            self.refused_unlogged += 1;
            if !self.is_tls() {
                metrics::count(&mut self.metrics.http_errors, 503);
                self.metrics.bytes_out += refuse(&mut socket, why) as u64;
            }
            return;
        }
        let mut socket = match self.wrap_socket(socket) {
            Ok(socket) => socket, // tls.rs
            Err(e) => {
                warn!("{peer}: cannot start TLS: {e}");
                self.release_address(peer.ip());
                return;
            }
        };
        let _ = socket.set_nodelay(true);
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut socket,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("{peer}: cannot register socket: {e}");
            self.release_address(peer.ip());
            return;
        }
        let deadline = Instant::now() + self.config.handshake_timeout;
        entry.insert(Connection::new(socket, peer, deadline));
        info!("{peer} [{key}] connected");
    }
}

/// Writes a 503 on a socket that is never registered, then shuts it: the one
/// write that does not go through `writes.rs`, as the connection is never
/// admitted. Returns the bytes written.
fn refuse(socket: &mut TcpStream, why: &str) -> usize {
    let response =
        Response::refusal(Status::ServiceUnavailable, why).with_header("Retry-After", "5");
    let mut bytes = Vec::new();
    response.encode_head(&mut bytes, false, SystemTime::now());
    bytes.extend_from_slice(&response.body);
    // A fresh socket's send buffer is empty, so this write completes. The socket is
    // then closed at once (past the limit, we keep no descriptor for it): if the
    // request has already arrived unread, the close sends a reset, which on a real
    // network may overtake the 503; either way the peer learns "not now".
    let written = socket.write(&bytes).unwrap_or(0);
    let _ = socket.shutdown(Shutdown::Write);
    written
}

/// Errors from `accept` that concern one connection only: try the next.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// `--max-connections`, or what the open-files limit leaves room for.
pub(super) fn connection_limit(config: &Config, fd_limit: Option<u64>) -> usize {
    config.max_connections.unwrap_or_else(|| {
        fd_limit
            .map(|limit| limit.saturating_sub(RESERVED_FDS).max(1) as usize)
            .unwrap_or(1024)
    })
}

/// Raises the open-files soft limit to the hard limit; returns the soft limit now
/// in force (`None` if it cannot be read or is unlimited).
pub(super) fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            warn!("could not raise the open-files limit: {e}");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// The listening socket: plain, or with `--reuse-port` shared by every
/// process that binds the same address with SO_REUSEPORT (Linux 3.9: the
/// kernel spreads new connections over them), so that K nodes use K cores.
/// Made with `rustix` (socket, options, bind, listen), no `unsafe`.
pub(super) fn listen(config: &Config) -> io::Result<mio::net::TcpListener> {
    if !config.reuse_port {
        return mio::net::TcpListener::bind(config.addr);
    }
    use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
    let family = match config.addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let socket = rustix::net::socket_with(family, SocketType::STREAM, flags, None)?;
    sockopt::set_socket_reuseaddr(&socket, true)?;
    sockopt::set_socket_reuseport(&socket, true)?;
    rustix::net::bind(&socket, &config.addr)?;
    rustix::net::listen(&socket, 1024)?; // mio's backlog too
    Ok(mio::net::TcpListener::from_std(socket.into()))
}
