//! TLS in the loop: `https://` and `wss://` on `--addr` (RFC 8446 for TLS 1.3,
//! RFC 5246 for 1.2; RFC 6455 §11.1.2 and §4.1 for `wss`).
//!
//! The loop's phases do not change: a TLS connection's [`Socket`] reads and
//! writes plaintext (`connection.rs`, `tls/stream.rs`: a TLS read is short only
//! once the socket said `WouldBlock`, as a TCP read is), and three small hooks
//! do the rest. Reading puts a connection whose handshake has records to send
//! on the flush list, and reads on past a short read that the peer's
//! close_notify came with (`reading.rs`); a flush writes the records rustls
//! holds after the queue (`output.rs`); closing sends close_notify before
//! TCP's half-close (`closing.rs`). This module makes each accepted socket a TLS one, and
//! reloads the certificate on SIGHUP.
//!
//! The limits keep their meaning. `--handshake-timeout` runs from accept, so it
//! covers the TLS handshake and the HTTP request: the handshake's own records
//! never reset it, and a peer that sends no ClientHello or sends garbage is
//! closed as a slowloris is (garbage at once, for a TLS error). `--max-output`
//! counts the ciphertext rustls may hold: rustls keeps at most
//! [`buffer_limit`] bytes, and the queue gets the rest of the limit
//! (`Socket::queue_limit`). A connection refused for `--max-connections` is
//! closed without a word: a 503 would first cost a handshake.

use super::Server;
use crate::config::Config;
use crate::connection::Socket;
use crate::tls::Identity;
use log::{error, info, warn};
use mio::net::TcpStream;
use std::path::PathBuf;

/// The most ciphertext rustls holds for one peer (rustls's own default).
const MAX_TLS_BUFFER: usize = 64 * 1024;

/// The certificate the server presents, and where it came from.
#[derive(Debug)]
pub(super) struct Tls {
    cert: PathBuf,
    key: PathBuf,
    /// What new connections get; open ones keep the one they started with.
    identity: Identity,
    /// rustls's buffer limit for every connection (see [`buffer_limit`]).
    buffer_limit: usize,
}

/// How much ciphertext rustls may hold for one peer: half of `--max-output`, at
/// most 64 KiB. The output queue gets the rest of the limit.
pub(super) fn buffer_limit(max_output: usize) -> usize {
    (max_output / 2).clamp(1, MAX_TLS_BUFFER)
}

impl Tls {
    /// The TLS side of a server started with `identity` (loaded from `config`'s
    /// files); `None` when the server speaks plain TCP.
    pub(super) fn new(config: &Config, identity: Option<Identity>) -> Option<Tls> {
        let identity = identity?;
        log_identity("serving https:// and wss:// with", &identity);
        Some(Tls {
            cert: config.tls_cert.clone().unwrap_or_default(),
            key: config.tls_key.clone().unwrap_or_default(),
            identity,
            buffer_limit: buffer_limit(config.max_output),
        })
    }
}

/// Logs which certificate is in use; an expired one as a warning.
fn log_identity(what: &str, identity: &Identity) {
    if identity.expired {
        warn!("{what} an EXPIRED certificate: {}", identity.description);
    } else {
        info!("{what} certificate {}", identity.description);
    }
}

impl Server {
    /// Whether the server speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A newly accepted TCP socket as a connection's socket: TLS, presenting the
    /// current certificate, when the server speaks TLS.
    pub(super) fn wrap_socket(&self, tcp: TcpStream) -> Result<Socket, String> {
        match &self.tls {
            None => Ok(Socket::plain(tcp)),
            Some(tls) => Ok(Socket::tls(tcp, tls.identity.accept(tls.buffer_limit)?)),
        }
    }

    /// SIGHUP: reads the certificate and key files again. New connections get
    /// the new pair; open ones keep theirs. A pair that does not load is logged
    /// and the old one kept.
    pub(super) fn reload_tls(&mut self) {
        let Some(tls) = &mut self.tls else {
            info!("SIGHUP: no TLS certificate to reload (started without --tls-cert)");
            return;
        };
        match Identity::load(&tls.cert, &tls.key) {
            Ok(identity) => {
                log_identity("SIGHUP: new connections get", &identity);
                tls.identity = identity;
            }
            Err(e) => error!(
                "SIGHUP: certificate not reloaded, still serving {}: {e}",
                tls.identity.description
            ),
        }
    }
}
