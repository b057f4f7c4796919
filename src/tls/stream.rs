//! One connection's TLS (RFC 8446 for 1.3, RFC 5246 for 1.2) over any byte
//! stream: ciphertext from the socket in, plaintext out, and back.
//!
//! rustls's connection is sans-IO: `read_tls` takes ciphertext, `reader()` gives
//! the plaintext it decrypted, `writer()` takes plaintext and `write_tls` gives
//! ciphertext. [`TlsStream`] joins those to a socket with the contract of
//! `std::io::Read` and `Write`, so the loop treats a TLS connection as it treats
//! TCP: reads until `WouldBlock`, `Ok(0)` for the peer's end, and an output queue
//! that writes until `WouldBlock` and then waits for a writable event.
//!
//! Two rules keep the edge-triggered loop honest. A read drains the socket to
//! `WouldBlock` (or fills the caller's buffer), so no ciphertext waits in the
//! kernel without an event to come for it; and what the handshake wants to send
//! stays in rustls until the loop flushes it (`wants_write`). Output is bounded:
//! rustls buffers at most `buffer_limit` bytes of ciphertext, and a write that
//! finds ciphertext still pending says `WouldBlock` instead of taking more.

use rustls::{ServerConfig, ServerConnection};
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

/// A server-side TLS connection, driven over a socket the caller lends.
#[derive(Debug)]
pub struct TlsStream {
    conn: ServerConnection,
    buffer_limit: usize,
    close_notify_sent: bool,
    /// The peer's stream has ended (its close_notify, or TCP EOF).
    ended: bool,
}

impl TlsStream {
    /// A new connection that will present `config`'s certificate. rustls keeps
    /// at most `buffer_limit` bytes of ciphertext (and of plaintext written
    /// before the handshake ends) waiting for the socket.
    pub fn new(config: Arc<ServerConfig>, buffer_limit: usize) -> Result<TlsStream, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        conn.set_buffer_limit(Some(buffer_limit));
        Ok(TlsStream {
            conn,
            buffer_limit,
            close_notify_sent: false,
            ended: false,
        })
    }

    /// The most bytes rustls holds for the peer (see [`TlsStream::new`]).
    pub fn buffer_limit(&self) -> usize {
        self.buffer_limit
    }

    /// Decrypts what `socket` holds into `buf`: plaintext left from the last
    /// call first, then ciphertext read until `buf` is full or the socket would
    /// block. `Ok(0)` when the peer has ended the stream (its close_notify, or
    /// TCP EOF), `WouldBlock` when nothing is left to read now. A TLS error (a
    /// bad ClientHello, plain HTTP, a bad record) is `InvalidData`; the alert
    /// rustls queued for it is written first, as a last try.
    ///
    /// A read shorter than `buf` has emptied the socket (a read from it came
    /// back short, or said `WouldBlock`), unless the stream has
    /// [`ended`](TlsStream::ended): then the next read says so.
    pub fn read<S: Read + Write>(&mut self, socket: &mut S, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        // The last read from the socket was short: it is empty (the rule the
        // loop follows for TCP too), and asking again would only say so.
        let mut drained = false;
        loop {
            match self.conn.reader().read(&mut buf[filled..]) {
                // buf is full: the rest waits in rustls for the next call.
                Ok(n) if filled + n == buf.len() => return Ok(buf.len()),
                // The peer's close_notify, after all its data.
                Ok(0) => {
                    self.ended = true;
                    return Ok(filled);
                }
                Ok(n) => {
                    filled += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP EOF without close_notify: an end all the same (browsers do it).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.ended = true;
                    return Ok(filled);
                }
                Err(e) => return Err(e),
            }
            if drained {
                return match filled {
                    0 => Err(io::ErrorKind::WouldBlock.into()),
                    n => Ok(n),
                };
            }
            let mut probe = ShortReadProbe {
                socket: &mut *socket,
                short: false,
            };
            match self.conn.read_tls(&mut probe) {
                // EOF: the reader says so on the next turn.
                Ok(0) => {}
                Ok(_) => drained = probe.short,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => return Ok(filled),
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                let _ = self.conn.write_tls(socket);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("TLS: {e}"),
                ));
            }
        }
    }

    /// Encrypts `plain` into rustls and pushes the ciphertext to `socket`.
    /// `WouldBlock` while earlier ciphertext is still waiting for the socket:
    /// only what rustls took counts as written, and rustls takes no more than
    /// its buffer limit.
    pub fn write<S: Write>(&mut self, socket: &mut S, plain: &[u8]) -> io::Result<usize> {
        self.write_vectored(socket, &[IoSlice::new(plain)])
    }

    /// [`TlsStream::write`] for several slices: rustls makes records across them.
    pub fn write_vectored<S: Write>(
        &mut self,
        socket: &mut S,
        plain: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        self.flush(socket)?;
        let taken = self.conn.writer().write_vectored(plain)?;
        match self.flush(socket) {
            Ok(()) => {}
            // Written next time, when the socket has room.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if taken == 0 && plain.iter().any(|s| !s.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    /// Writes the ciphertext rustls holds (handshake messages, alerts, records)
    /// until none is left, or `WouldBlock`.
    pub fn flush<S: Write>(&mut self, socket: &mut S) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether the peer has ended its stream: the next read returns `Ok(0)`.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Whether ciphertext is waiting for the socket.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Queues our close_notify alert (RFC 8446 §6.1), once; [`TlsStream::flush`]
    /// sends it.
    pub fn close_notify(&mut self) {
        if !self.close_notify_sent {
            self.close_notify_sent = true;
            self.conn.send_close_notify();
        }
    }

    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }
}

/// The socket as rustls reads it, noting whether a read came back shorter than
/// asked for.
struct ShortReadProbe<'s, S> {
    socket: &'s mut S,
    short: bool,
}

impl<S: Read> Read for ShortReadProbe<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// One direction of an in-memory socket: what was written and not yet read;
    /// `capacity` bounds it like a kernel buffer.
    #[derive(Default)]
    struct Pipe {
        bytes: VecDeque<u8>,
        capacity: usize,
        closed: bool,
    }

    /// The server's end of an in-memory socket pair.
    struct End<'a> {
        incoming: &'a mut Pipe,
        outgoing: &'a mut Pipe,
    }

    impl Read for End<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.incoming.bytes.is_empty() {
                return if self.incoming.closed {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = buf.len().min(self.incoming.bytes.len());
            for (b, byte) in buf.iter_mut().zip(self.incoming.bytes.drain(..n)) {
                *b = byte;
            }
            Ok(n)
        }
    }

    impl Write for End<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let room = self
                .outgoing
                .capacity
                .saturating_sub(self.outgoing.bytes.len());
            if room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(room);
            self.outgoing.bytes.extend(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A rustls client and a `TlsStream` joined by two pipes.
    struct Pair {
        client: rustls::ClientConnection,
        server: TlsStream,
        to_server: Pipe,
        to_client: Pipe,
    }

    impl Pair {
        fn new(buffer_limit: usize) -> Pair {
            let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            let identity = crate::tls::Identity::from_pem(
                certified.cert.pem().as_bytes(),
                certified.signing_key.serialize_pem().as_bytes(),
            )
            .unwrap();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(certified.cert.der().clone()).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let client_config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = "localhost".try_into().unwrap();
            let unbounded = || Pipe {
                capacity: usize::MAX,
                ..Pipe::default()
            };
            Pair {
                client: rustls::ClientConnection::new(Arc::new(client_config), name).unwrap(),
                server: identity.accept(buffer_limit).unwrap(),
                to_server: unbounded(),
                to_client: unbounded(),
            }
        }

        /// The server's stream and its end of the socket, borrowed apart.
        fn server(&mut self) -> (&mut TlsStream, End<'_>) {
            let end = End {
                incoming: &mut self.to_server,
                outgoing: &mut self.to_client,
            };
            (&mut self.server, end)
        }

        /// Moves the client's ciphertext to the server's pipe and the server's
        /// to the client, and returns the plaintext the client got.
        fn client_turn(&mut self) -> Vec<u8> {
            while self.client.wants_write() {
                let mut out = Vec::new();
                self.client.write_tls(&mut out).unwrap();
                self.to_server.bytes.extend(out);
            }
            let bytes: Vec<u8> = self.to_client.bytes.drain(..).collect();
            let mut plain = Vec::new();
            let mut slice = &bytes[..];
            while !slice.is_empty() {
                self.client.read_tls(&mut slice).unwrap();
                self.client.process_new_packets().unwrap();
                let _ = self.client.reader().read_to_end(&mut plain);
            }
            plain
        }

        /// Runs the handshake to its end.
        fn handshake(&mut self) {
            let mut buf = [0u8; 1024];
            for _ in 0..10 {
                self.client_turn();
                let (server, mut end) = self.server();
                let nothing = server.read(&mut end, &mut buf).unwrap_err();
                assert_eq!(nothing.kind(), io::ErrorKind::WouldBlock);
                server.flush(&mut end).unwrap();
                if !self.client.is_handshaking() && !self.server.is_handshaking() {
                    self.client_turn();
                    return;
                }
            }
            panic!("no handshake");
        }
    }

    #[test]
    fn plaintext_both_ways_after_a_handshake() {
        let mut pair = Pair::new(64 * 1024);
        pair.handshake();
        pair.client
            .writer()
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .unwrap();
        pair.client_turn();
        let mut buf = [0u8; 64];
        let (server, mut end) = pair.server();
        assert_eq!(server.read(&mut end, &mut buf).unwrap(), 18);
        assert_eq!(&buf[..18], b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(server.write(&mut end, b"HTTP/1.1 200 OK\r\n").unwrap(), 17);
        assert!(!server.wants_write());
        assert_eq!(pair.client_turn(), b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn a_read_fills_the_buffer_and_keeps_the_rest_for_the_next() {
        let mut pair = Pair::new(64 * 1024);
        pair.handshake();
        let sent: Vec<u8> = (0..60_000u32).map(|i| i as u8).collect();
        pair.client.writer().write_all(&sent).unwrap();
        pair.client_turn();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 25_000];
        let (server, mut end) = pair.server();
        loop {
            match server.read(&mut end, &mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, sent);
    }

    #[test]
    fn a_full_socket_stops_writes_within_the_buffer_limit() {
        let limit = 8 * 1024;
        let mut pair = Pair::new(limit);
        pair.handshake();
        pair.to_client.capacity = 0; // the peer stops reading
        let big = vec![b'x'; 100_000];
        let (server, mut end) = pair.server();
        let taken = server.write(&mut end, &big).unwrap();
        assert!(taken > 0 && taken <= limit, "{taken}");
        assert!(server.wants_write());
        let again = server.write(&mut end, &big).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::WouldBlock);
        let flushed = server.flush(&mut end).unwrap_err();
        assert_eq!(flushed.kind(), io::ErrorKind::WouldBlock);
        // Room again: the ciphertext goes out, and the client reads it all.
        pair.to_client.capacity = usize::MAX;
        let (server, mut end) = pair.server();
        server.flush(&mut end).unwrap();
        assert_eq!(pair.client_turn().len(), taken);
    }

    #[test]
    fn plain_http_is_a_tls_error_with_an_alert() {
        let mut pair = Pair::new(64 * 1024);
        pair.to_server
            .bytes
            .extend(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".iter());
        let mut buf = [0u8; 64];
        let (server, mut end) = pair.server();
        let error = server.read(&mut end, &mut buf).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        assert_eq!(pair.to_client.bytes.front(), Some(&0x15), "an alert record");
    }

    #[test]
    fn the_peers_close_notify_and_eof_read_as_the_end() {
        let mut buf = [0u8; 64];
        let mut pair = Pair::new(64 * 1024);
        pair.handshake();
        pair.client.writer().write_all(b"bye").unwrap();
        pair.client.send_close_notify();
        pair.client_turn();
        let (server, mut end) = pair.server();
        assert_eq!(server.read(&mut end, &mut buf).unwrap(), 3);
        assert!(
            server.ended(),
            "a short read with the end behind it says so"
        );
        assert_eq!(server.read(&mut end, &mut buf).unwrap(), 0);

        // TCP EOF without close_notify ends the stream too.
        let mut pair = Pair::new(64 * 1024);
        pair.handshake();
        pair.to_server.closed = true;
        let (server, mut end) = pair.server();
        assert_eq!(server.read(&mut end, &mut buf).unwrap(), 0);
    }

    #[test]
    fn close_notify_is_queued_once() {
        let mut pair = Pair::new(64 * 1024);
        pair.handshake();
        pair.server.close_notify();
        pair.server.close_notify();
        let (server, mut end) = pair.server();
        server.flush(&mut end).unwrap();
        // One alert record: a 5-byte header and an encrypted alert.
        let sent = pair.to_client.bytes.len();
        assert!(sent > 5 && sent < 64, "{sent}");
        pair.client_turn();
        let read = pair.client.reader().read(&mut [0u8; 8]).unwrap();
        assert_eq!(read, 0, "the client sees a clean close");
    }
}
