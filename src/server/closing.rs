//! Closing: the end of a connection's life, in the order it happens. The close
//! frame is queued (`writes.rs`); TCP is shut once our last bytes are out and the
//! peer's FIN awaited (RFC 6455 §7.1.1: the server closes first, so a reset never
//! destroys our last frame); the connection is marked and freed at the end of
//! the iteration. Over TLS, close_notify (RFC 8446 §6.1) goes out just before
//! TCP's half-close. Also the loop's own end: signals, graceful shutdown (1001
//! to every peer), and when it is complete.

use super::writes::start_close;
use super::Server;
use crate::connection::{AfterFlush, Phase};
use crate::message::CloseCode;
use log::{debug, info};
use std::io;
use std::net::Shutdown;
use std::time::Instant;

impl Server {
    /// The slow readers found since the last call leave their rooms (their close
    /// frames were queued when they were found). Leave notices may find more slow
    /// readers; they are taken in the next round here, until none is left: one
    /// step of the loop, never a nested call.
    pub(super) fn close_slow_readers(&mut self) {
        while !self.pending.slow.is_empty() {
            for key in std::mem::take(&mut self.pending.slow) {
                self.leave_room(key); // rooms.rs
            }
        }
    }

    /// Closes TCP once the queued output (our close frame) is out.
    pub(super) fn close_after_flush(&mut self, key: usize) {
        if let Some(conn) = self.connections.get_mut(key) {
            conn.after_flush = AfterFlush::Shutdown;
            conn.deadline = Some(Instant::now() + self.config.close_timeout);
            self.queue_flush(key);
        }
    }

    /// Our last bytes are out: shut our side of TCP and wait for the peer's FIN.
    pub(super) fn start_draining(&mut self, key: usize) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        if matches!(conn.phase, Phase::Draining) {
            return; // already shut: a writable event after the FIN changes nothing
        }
        if conn.peer_closed {
            return self.drop_connection(key, "closed");
        }
        // TLS: close_notify first (RFC 8446 §6.1), so the peer can tell our end
        // from a truncation. A full socket brings us back here once writable.
        match conn.socket.close_notify() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return self.queue_flush(key),
            Err(e) => {
                debug!("{} [{key}] close_notify: {e}", conn.peer);
                return self.drop_connection(key, "closed");
            }
        }
        if let Err(e) = conn.socket.shutdown(Shutdown::Write) {
            debug!("{} [{key}] shutdown: {e}", conn.peer);
            self.drop_connection(key, "closed");
            return;
        }
        self.forget_input(key); // limits.rs: the session goes with its phase
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        conn.phase = Phase::Draining;
        conn.input = Vec::new();
        conn.deadline = Some(Instant::now() + self.config.close_timeout);
    }

    /// Marks a connection for removal at the end of the iteration.
    pub(super) fn drop_connection(&mut self, key: usize, reason: &str) {
        self.leave_room(key);
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        if conn.doomed {
            return;
        }
        conn.doomed = true;
        info!("{} [{key}] disconnected: {reason}", conn.peer);
        self.pending.doomed.push(key);
    }

    /// Frees the connections marked during this iteration. Until now their slots
    /// stayed occupied, so no slot was reused while events for it were pending.
    pub(super) fn close_deferred(&mut self) {
        for key in std::mem::take(&mut self.pending.doomed) {
            if self.connections.get(key).is_some_and(|c| c.doomed) {
                self.forget_input(key); // limits.rs
                let mut conn = self.connections.remove(key);
                let _ = self.poll.registry().deregister(&mut conn.socket);
                self.release_address(conn.peer.ip()); // limits.rs
            }
        }
    }

    // ---- Shutdown ---------------------------------------------------------------

    /// SIGINT or SIGTERM arrived: shut down gracefully. SIGHUP (handled only
    /// with TLS): reload the certificate (`tls.rs`).
    pub(super) fn read_signals(&mut self) {
        use signal_hook::consts::{SIGHUP, SIGINT};
        let received: Vec<i32> = match &mut self.signals {
            Some(signals) => signals.pending().collect(),
            None => return,
        };
        for signal in received {
            match signal {
                SIGHUP => self.reload_tls(), // tls.rs
                SIGINT => self.begin_shutdown("SIGINT"),
                _ => self.begin_shutdown("SIGTERM"),
            }
        }
    }

    /// Stops accepting, says goodbye (1001) to every WebSocket peer, and closes
    /// the rest. The loop ends when all are gone or the deadline passes.
    pub(super) fn begin_shutdown(&mut self, why: &str) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!(
            "shutting down ({why}): closing {} connections",
            self.connections.len()
        );
        // What the rooms were sent goes out before the 1001s.
        self.queue_room_batches(); // batches.rs
        self.shutdown_deadline = Some(Instant::now() + self.config.shutdown_timeout);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.cluster_shutdown(); // cluster.rs: this node's members leave their rooms
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        for key in keys {
            let Some((conn, mut outbox)) = self.connection_and_outbox(key) else {
                continue;
            };
            match &conn.phase {
                Phase::WebSocket(_) => {
                    let reason = "server shutting down";
                    start_close(conn, key, CloseCode::GOING_AWAY, reason, &mut outbox);
                }
                Phase::Http if conn.output.is_empty() => self.drop_connection(key, "shutdown"),
                Phase::Http => {
                    // Finish the response under way; serve no further request.
                    conn.input = Vec::new();
                    self.close_after_flush(key);
                }
                Phase::Draining => {}
            }
        }
    }

    /// Whether the loop may end: shutting down, and every connection gone or the
    /// deadline passed.
    pub(super) fn shutdown_complete(&self) -> bool {
        match self.shutdown_deadline {
            None => false,
            Some(deadline) => self.connections.is_empty() || Instant::now() >= deadline,
        }
    }
}
