//! Helpers shared by the integration tests: a server on 127.0.0.1 port 0 for the
//! length of a test ([`with_server`]), a raw WebSocket client that speaks bytes
//! (for malformed input), HTTP over a raw socket, and the metrics page. Every read
//! has a timeout, so a broken server fails a test instead of hanging it.
//!
//! Each test binary compiles this module on its own and uses only some of it
//! (`http.rs` runs no child process, `shutdown.rs` no echo fixture), so unused
//! helpers are allowed rather than warned about in every binary.
#![allow(dead_code)]

use loopchat::{Config, RunningServer, ServerHandle};

/// `loopchat` processes (cluster nodes) and a blocking chat client for them.
pub mod node;
/// A TCP proxy that stalls (blackhole) or closes (reset) the links through it.
pub mod proxy;
/// A `redis-server` of the test's own (cluster tests), and a minimal RESP client.
pub mod redis;
/// https and wss clients, and certificates made at test time.
#[cfg(feature = "tls")]
pub mod tls;
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

/// The test configuration with `change` applied: `config_with(|c| c.history = 2)`.
pub fn config_with(change: impl FnOnce(&mut Config)) -> Config {
    let mut config = config();
    change(&mut config);
    config
}

/// Starts a server with `config` on its own thread. Tests that are not about
/// stopping the server use [`with_server`] instead.
pub fn start(config: Config) -> RunningServer {
    loopchat::spawn(config).expect("server starts")
}

/// The fixture of (almost) every test: starts a server with `config`, runs `test`
/// with its address, then stops it and asserts that it stopped cleanly. Whatever
/// `test` opened is closed (dropped) before the stop. If `test` panics, the server
/// is left running until the test process ends.
pub fn with_server(config: Config, test: impl FnOnce(SocketAddr)) {
    with_stoppable_server(config, |addr, _| test(addr));
}

/// [`with_server`] for a test that starts the shutdown itself, with the
/// [`ServerHandle`] it is given, to watch what its peers get; the stop at the end
/// then waits for the server's thread and asserts, as always, a clean stop.
pub fn with_stoppable_server(config: Config, test: impl FnOnce(SocketAddr, &ServerHandle)) {
    let server = start(config);
    test(server.addr, &server.handle);
    server.stop().expect("the server stops cleanly");
}

/// [`with_server`] with the default test configuration and one TCP connection
/// to it, for the HTTP rules that one client can show.
pub fn with_connection(test: impl FnOnce(&mut Raw)) {
    with_server(config(), |addr| test(&mut Raw::connect(addr)));
}

/// [`with_server`] with the default test configuration and one WebSocket
/// connection to its `/echo`, for the RFC 6455 rules that one peer can show.
pub fn with_echo(test: impl FnOnce(&mut Raw)) {
    with_server(config(), |addr| test(&mut Raw::websocket(addr, "/echo")));
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
    let mut out = Vec::new();
    let first_byte = if fin { 0x80 } else { 0 } | opcode;
    loopchat::frame::encode_client_frame(&mut out, first_byte, [0x5a, 0xc3, 0x0f, 0x96], payload);
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

/// The server's answer to an upgrade at the front of `input`, as a raw client
/// reads it: `None` until the head is whole; then the head is taken out of
/// `input`, and it is `Ok` for 101 Switching Protocols, else `Err(head)`.
pub fn take_upgrade_response(input: &mut Vec<u8>) -> Option<Result<(), String>> {
    let end = input.windows(4).position(|w| w == b"\r\n\r\n")?;
    if !input.starts_with(b"HTTP/1.1 101") {
        return Some(Err(String::from_utf8_lossy(&input[..end]).into_owned()));
    }
    input.drain(..end + 4);
    Some(Ok(()))
}

/// Parses one unmasked server frame at the start of `buf`.
pub fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let (opcode, payload, len) = server_frame_bounds(buf)?;
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let frame = Frame {
        fin: buf[0] & 0x80 != 0,
        opcode,
        payload: buf[payload].to_vec(),
    };
    Some((frame, len))
}

/// Where the frame at the start of `buf` lies, once it is all there: its opcode,
/// the range of its payload, and its whole length (header included).
pub fn server_frame_bounds(buf: &[u8]) -> Option<(u8, std::ops::Range<usize>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, start) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(buf.get(2..10)?);
            (u64::from_be_bytes(be) as usize, 10)
        }
        n => (n as usize, 2),
    };
    (buf.len() >= start + len).then(|| (buf[0] & 0x0f, start..start + len, start + len))
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

// ---- Added for the http, handshake, echo, chat and conformance tests ----------------

impl Raw {
    /// Everything the server sends until it ends the connection (EOF or reset),
    /// starting with any bytes already buffered. `None` if the read timeout passes
    /// first (the server kept the connection open).
    pub fn read_to_eof(&mut self) -> Option<Vec<u8>> {
        let mut all = std::mem::take(&mut self.buffered);
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Some(all),
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return None
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Some(all),
            }
        }
    }

    /// Bytes received but not consumed yet by `read_frame`/`read_head`.
    pub fn buffered(&self) -> &[u8] {
        &self.buffered
    }

    /// The next frame, which must be a text frame; its payload as a string.
    pub fn read_text(&mut self) -> String {
        let frame = self
            .read_frame()
            .expect("a frame, not the end of the connection");
        assert_eq!(frame.opcode, op::TEXT, "expected a text frame: {frame:?}");
        assert!(frame.fin, "expected an unfragmented frame: {frame:?}");
        frame.text().to_string()
    }

    /// Sends `text` in one text frame and asserts that the next frame is its echo:
    /// the same text, in one text frame.
    #[track_caller]
    pub fn expect_echo(&mut self, text: &str) {
        self.send_frame(true, op::TEXT, text.as_bytes());
        assert_eq!(self.read_text(), text);
    }

    /// Asserts that the next frame is a pong carrying `payload` (RFC 6455 §5.5.3:
    /// the application data of the ping it answers).
    #[track_caller]
    pub fn expect_pong(&mut self, payload: &[u8]) {
        let pong = self
            .read_frame()
            .expect("a pong, not the end of the connection");
        assert_eq!((pong.opcode, pong.payload.as_slice()), (op::PONG, payload));
    }

    /// Asserts that the next thing from the server is a close frame with `code`,
    /// with no data frame before it.
    #[track_caller]
    pub fn expect_close(&mut self, code: u16) {
        self.expect_close_for("", code);
    }

    /// Asserts that the server ends TCP (EOF or reset) without sending anything
    /// more: after its close frame, or after a response that closes.
    #[track_caller]
    pub fn expect_eof(&mut self) {
        self.expect_eof_for("");
    }

    /// [`Raw::expect_close`], then [`Raw::expect_eof`]: how the server ends a
    /// WebSocket connection, whether the client or the server started the close.
    #[track_caller]
    pub fn expect_close_then_eof(&mut self, code: u16) {
        self.expect_close_then_eof_for("", code);
    }

    /// [`Raw::expect_close_then_eof`] for one `case` of several, which a failure
    /// names.
    #[track_caller]
    pub fn expect_close_then_eof_for(&mut self, case: &str, code: u16) {
        self.expect_close_for(case, code);
        self.expect_eof_for(case);
    }

    #[track_caller]
    fn expect_close_for(&mut self, case: &str, code: u16) {
        let case = failure_prefix(case);
        let (before, got) = self.read_until_close();
        assert!(
            before.is_empty(),
            "{case}frames before the close: {before:?}"
        );
        assert_eq!(got, Some(code), "{case}close code");
    }

    #[track_caller]
    fn expect_eof_for(&mut self, case: &str) {
        let case = failure_prefix(case);
        let rest = self
            .read_to_eof()
            .unwrap_or_else(|| panic!("{case}the server did not end the connection"));
        assert!(rest.is_empty(), "{case}bytes before the end: {rest:?}");
    }
}

/// `"case: "` to start a failure message with, or nothing for no case.
fn failure_prefix(case: &str) -> String {
    if case.is_empty() {
        String::new()
    } else {
        format!("{case}: ")
    }
}

/// A close frame payload: the code, big-endian, then the reason bytes.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// A fresh, empty directory under the system temp dir, unique to this process and
/// `tag`. The caller removes it.
pub fn fresh_temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("loopchat-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

// ---- limits helpers ----
// Added for tests/limits.rs, tests/shutdown.rs and tests/soak.rs: the metrics page
// as a whole, resident memory, crude JSON field access for chat frames, and
// running the `loopchat` binary as a child process.

/// The whole `/metrics` page, or `None` when the server does not answer 200 (at
/// its connection limit it answers 503, or closes at once).
pub fn try_metrics(addr: SocketAddr) -> Option<String> {
    let mut raw = Raw::connect(addr);
    raw.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let head = raw.read_head();
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let length = header_value(&head, "content-length")?.parse().ok()?;
    String::from_utf8(raw.read_exact(length)).ok()
}

/// The value of metric `name` (with its labels, exactly as rendered) in a page
/// returned by [`try_metrics`]; 0 if absent.
pub fn metric_in(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Open connections as `/metrics` counts them: `(http, websocket, closing)`.
/// The connection asking for the page is itself one open HTTP connection, so a
/// server with nobody else connected reports `(1, 0, 0)`.
pub fn open_by_phase(addr: SocketAddr) -> Option<(u64, u64, u64)> {
    try_metrics(addr).map(|page| open_in(&page))
}

/// Open connections `(http, websocket, closing)` in a page returned by
/// [`try_metrics`].
fn open_in(page: &str) -> (u64, u64, u64) {
    (
        metric_in(page, "loopchat_connections_open{phase=\"http\"}"),
        metric_in(page, "loopchat_connections_open{phase=\"websocket\"}"),
        metric_in(page, "loopchat_connections_open{phase=\"closing\"}"),
    )
}

/// Waits until [`open_by_phase`] reads `expected`. Returns the last reading if
/// that does not happen in `timeout`.
pub fn wait_until_open(
    addr: SocketAddr,
    expected: (u64, u64, u64),
    timeout: Duration,
) -> Result<(), String> {
    let mut open = None;
    if eventually(timeout, || {
        open = open_by_phase(addr);
        open == Some(expected)
    }) {
        Ok(())
    } else {
        Err(format!("open (http, websocket, closing) = {open:?}"))
    }
}

/// Waits until nobody but the metrics request itself is connected, and no chat
/// room is left. Returns the last reading if that does not happen in `timeout`.
pub fn wait_until_empty(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let mut last = String::from("no reading");
    let empty = eventually(timeout, || match try_metrics(addr) {
        Some(page) => {
            let open = open_in(&page);
            let rooms = metric_in(&page, "loopchat_rooms");
            last = format!("open (http, websocket, closing) = {open:?}, rooms = {rooms}");
            open == (1, 0, 0) && rooms == 0
        }
        None => false,
    });
    if empty {
        Ok(())
    } else {
        Err(last)
    }
}

/// Resident memory in KiB (`VmRSS`) of process `pid`, or of this process.
pub fn rss_kib(pid: Option<u32>) -> u64 {
    proc_status_kib(pid, "VmRSS")
}

/// `field` (`VmRSS`, `VmHWM`, ...) of `/proc/PID/status` (this process's for
/// `None`), in KiB.
pub fn proc_status_kib(pid: Option<u32>, field: &str) -> u64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {path}"))
}

/// The raw value of `"field":` in a flat JSON object such as a chat frame: the
/// contents of a string (escapes left as they are), or a number as written.
pub fn json_field<'a>(json: &'a str, field: &str) -> Option<&'a str> {
    let key = format!("\"{field}\":");
    let rest = &json[json.find(&key)? + key.len()..];
    if let Some(string) = rest.strip_prefix('"') {
        let bytes = string.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'"' => return Some(&string[..i]),
                _ => i += 1,
            }
        }
        None
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim())
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bind port 0, read, release).
pub fn free_local_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A child process that is killed (SIGKILL, by its PID) if the test ends
/// without having waited for it. Its stderr, if `log` is set, goes to that file.
pub struct KillOnDrop {
    pub child: std::process::Child,
    pub log: Option<std::path::PathBuf>,
}

impl KillOnDrop {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the process wrote to stderr so far (its log file, or a piped stderr
    /// once it has exited).
    pub fn stderr_text(&mut self) -> String {
        let mut text = String::new();
        if let Some(log) = &self.log {
            text = std::fs::read_to_string(log).unwrap_or_default();
        } else if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    }

    /// Everything the process wrote to a piped stdout (call after it exited).
    pub fn stdout_text(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(log) = &self.log {
            let _ = std::fs::remove_file(log);
        }
    }
}

/// Sends `signal` ("TERM", "INT", ...) to process `pid` with kill(1).
pub fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Starts the `loopchat` binary on a free port of 127.0.0.1 with `args` after
/// `--addr`, and waits until it accepts connections. Its stderr (the log) goes to
/// a file in the temp dir, so a chatty log never blocks it on a full pipe.
pub fn spawn_binary(args: &[&str]) -> (KillOnDrop, SocketAddr) {
    spawn_binary_limited(None, args)
}

/// [`spawn_binary`], with the open-files limit (soft and hard) lowered to
/// `fd_limit` first if given (by `ulimit -n` in `/bin/sh`, which then `exec`s).
pub fn spawn_binary_limited(fd_limit: Option<u32>, args: &[&str]) -> (KillOnDrop, SocketAddr) {
    let port = free_local_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = std::env::temp_dir().join(format!("loopchat-test-{}-{port}.log", std::process::id()));
    let stderr = std::fs::File::create(&log).expect("create log file");
    let binary = env!("CARGO_BIN_EXE_loopchat");
    let mut command = match fd_limit {
        None => std::process::Command::new(binary),
        Some(limit) => {
            let mut sh = std::process::Command::new("/bin/sh");
            sh.arg("-c")
                .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                .arg(binary);
            sh
        }
    };
    let child = command
        .arg("--addr")
        .arg(addr.to_string())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn loopchat");
    let mut child = KillOnDrop {
        child,
        log: Some(log),
    };
    wait_until_listening(&mut child, addr);
    (child, addr)
}

/// Waits until `addr` accepts connections; panics with the child's stderr if the
/// child exits first or it takes unreasonably long.
pub fn wait_until_listening(child: &mut KillOnDrop, addr: SocketAddr) {
    let mut exited = None;
    let up = eventually(Duration::from_secs(20), || {
        if let Ok(Some(status)) = child.child.try_wait() {
            exited = Some(status);
            return true;
        }
        TcpStream::connect(addr).is_ok()
    });
    if let Some(status) = exited {
        panic!("loopchat exited early ({status}): {}", child.stderr_text());
    }
    assert!(up, "loopchat did not listen on {addr}");
}

impl Raw {
    /// A second handle on the same socket that takes over the bytes already
    /// buffered: read from it (on another thread) while this one writes.
    pub fn reading_half(&mut self) -> Raw {
        Raw {
            stream: self.stream.try_clone().expect("clone socket"),
            buffered: std::mem::take(&mut self.buffered),
        }
    }
}

/// Tries to upgrade on `path`: the connection, or the status it got instead
/// (0 if the server closed without a response).
pub fn try_websocket(addr: SocketAddr, path: &str) -> Result<Raw, u16> {
    let mut raw = Raw::connect(addr);
    let _ = raw.stream.write_all(upgrade_request(path, "").as_bytes());
    let head = raw.read_head();
    if head.starts_with("HTTP/1.1 101") {
        Ok(raw)
    } else {
        Err(head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }
}

/// Runs the `loopchat` binary with `args` to completion (at most `timeout`,
/// killed otherwise): its exit status, stdout and stderr.
pub fn run_binary(args: &[&str], timeout: Duration) -> (std::process::ExitStatus, String, String) {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn loopchat");
    let mut child = KillOnDrop { child, log: None };
    let status = child
        .wait_timeout(timeout)
        .unwrap_or_else(|| panic!("loopchat {args:?} did not exit"));
    (status, child.stdout_text(), child.stderr_text())
}

// ---- permessage-deflate helpers ----
// Added for tests/deflate.rs: `Frame` drops the reserved bits, and RSV1 is what
// says a server frame is compressed (RFC 7692 §6).

impl Raw {
    /// The next frame and whether RSV1 ("compressed") is set on it, or `None`
    /// if the connection ended first. RSV2 and RSV3 must be clear.
    pub fn read_frame_rsv1(&mut self) -> Option<(bool, Frame)> {
        loop {
            if let Some((frame, len)) = parse_server_frame(&self.buffered) {
                let first = self.buffered[0];
                assert_eq!(
                    first & 0x30,
                    0,
                    "RSV2/RSV3 set on a server frame: {first:#04x}"
                );
                self.buffered.drain(..len);
                return Some((first & 0x40 != 0, frame));
            }
            if !self.fill() {
                return None;
            }
        }
    }
}
