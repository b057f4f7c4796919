//! Helpers shared by the integration tests: a server on 127.0.0.1 port 0, a raw
//! WebSocket client that speaks bytes (for malformed input), HTTP over a raw
//! socket, and the metrics page. Every read has a timeout, so a broken server
//! fails a test instead of hanging it.
#![allow(dead_code)]

use loopchat::{Config, RunningServer};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long any single read waits before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A test configuration: port 0 on loopback, defaults otherwise.
pub fn config() -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        // Tests stop the server with clients still open: do not wait long for them.
        shutdown_timeout: Duration::from_millis(300),
        ..Config::default()
    }
}

/// Starts a server with `config` on its own thread.
pub fn start(config: Config) -> RunningServer {
    loopchat::spawn(config).expect("server starts")
}

/// A WebSocket opcode, as on the wire.
pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// One frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).expect("server sent UTF-8")
    }

    /// The status code of a close frame (1005 if it has none).
    pub fn close_code(&self) -> u16 {
        assert_eq!(self.opcode, op::CLOSE, "not a close frame: {self:?}");
        match self.payload.as_slice() {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => 1005,
        }
    }
}

/// A masked client frame with any header bits the test wants.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0xc3, 0x0f, 0x96];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A raw TCP client that speaks WebSocket byte by byte.
pub struct Raw {
    pub stream: TcpStream,
    buffered: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buffered: Vec::new(),
        }
    }

    /// Connects and upgrades on `path`; panics unless the answer is 101.
    pub fn websocket(addr: SocketAddr, path: &str) -> Raw {
        let mut raw = Raw::connect(addr);
        let head = raw.request(&upgrade_request(path, ""));
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        raw
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send(&client_frame(fin, opcode, payload));
    }

    /// Sends `request` and returns the response head (up to the blank line).
    pub fn request(&mut self, request: &str) -> String {
        self.send(request.as_bytes());
        self.read_head()
    }

    /// Reads an HTTP response head; the body, if any, stays buffered.
    pub fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = find(&self.buffered, b"\r\n\r\n") {
                let head: Vec<u8> = self.buffered.drain(..end + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            if !self.fill() {
                return String::from_utf8_lossy(&std::mem::take(&mut self.buffered)).into_owned();
            }
        }
    }

    /// Reads a whole response: status code, head, and a body of Content-Length.
    pub fn read_response(&mut self, head_only: bool) -> (u16, String, Vec<u8>) {
        let head = self.read_head();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {head:?}"));
        let length = header_value(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = if head_only {
            Vec::new()
        } else {
            self.read_exact(length)
        };
        (status, head, body)
    }

    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buffered.len() < n {
            assert!(self.fill(), "connection ended before {n} bytes");
        }
        self.buffered.drain(..n).collect()
    }

    /// The next frame, or `None` if the connection ended first.
    pub fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, len)) = parse_server_frame(&self.buffered) {
                self.buffered.drain(..len);
                return Some(frame);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Reads frames until a close frame and returns its code; data frames before it
    /// are returned too, in order.
    pub fn read_until_close(&mut self) -> (Vec<Frame>, Option<u16>) {
        let mut before = Vec::new();
        while let Some(frame) = self.read_frame() {
            if frame.opcode == op::CLOSE {
                return (before, Some(frame.close_code()));
            }
            before.push(frame);
        }
        (before, None)
    }

    /// Whether the server ends the TCP connection (EOF or reset) within the read
    /// timeout; bytes that arrive meanwhile are discarded.
    pub fn closed_by_server(&mut self) -> bool {
        let mut sink = [0u8; 4096];
        let deadline = Instant::now() + READ_TIMEOUT;
        while Instant::now() < deadline {
            match self.stream.read(&mut sink) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
        false
    }

    /// Reads more bytes into the buffer; false on EOF or error.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buffered.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("read timed out after {READ_TIMEOUT:?}")
            }
            Err(_) => false,
        }
    }
}

/// A valid upgrade request for `path`, plus `extra` header lines ("Name: v\r\n").
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Parses one unmasked server frame at the start of `buf`.
pub fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, start) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(buf.get(2..10)?);
            (u64::from_be_bytes(be) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let payload = buf.get(start..start + len)?.to_vec();
    let frame = Frame {
        fin: buf[0] & 0x80 != 0,
        opcode: buf[0] & 0x0f,
        payload,
    };
    Some((frame, start + len))
}

/// The value of header `name` in a response head (case-insensitive).
pub fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A tungstenite client connected to `ws://addr{path}`.
pub fn client(
    addr: SocketAddr,
    path: &str,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let url = format!("ws://{addr}{path}");
    let (socket, response) =
        tungstenite::client::client(url, tungstenite::stream::MaybeTlsStream::Plain(stream))
            .expect("handshake");
    assert_eq!(response.status(), 101);
    socket
}

/// GET `path` on a fresh connection: status and body.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut raw = Raw::connect(addr);
    raw.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    raw.read_response(false)
}

/// The value of a metric line (name with its labels, exactly as rendered).
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (_, _, body) = get(addr, "/metrics");
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes. For waiting
/// on the server's state, never for asserting durations.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
