//! loopchat nodes as real processes (the `loopchat` binary, through
//! [`spawn_binary`]) for the cluster tests, and a blocking chat client to talk to
//! them: join a room, say something, read the JSON frames that come back.

use super::{client, json_field, spawn_binary, KillOnDrop, READ_TIMEOUT};
use rustix::process::{kill_process, Pid, Signal};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// A `loopchat` process on a free port of 127.0.0.1, SIGKILLed by its PID when
/// dropped. Its stderr (the log) goes to a file: see [`Node::log`].
pub struct Node {
    /// The child process and its log file.
    pub process: KillOnDrop,
    addr: SocketAddr,
}

impl Node {
    /// Starts `loopchat --addr 127.0.0.1:PORT ARGS...` and waits until it
    /// accepts connections (panics with its log if it exits first).
    pub fn start(args: &[&str]) -> Node {
        let (process, addr) = spawn_binary(args);
        Node { process, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILL by PID, then waits for the process. Its log stays readable.
    pub fn kill9(&mut self) {
        if let Ok(None) = self.process.child.try_wait() {
            let pid = i32::try_from(self.pid()).ok().and_then(Pid::from_raw);
            let _ = kill_process(pid.expect("a PID"), Signal::KILL);
        }
        let _ = self.process.child.wait();
    }

    /// Everything the node has logged (its stderr) so far.
    pub fn log(&self) -> String {
        self.process
            .log
            .as_ref()
            .and_then(|log| std::fs::read_to_string(log).ok())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for `needle` to appear in [`Node::log`].
    pub fn wait_for_log(&self, timeout: Duration, needle: &str) -> bool {
        super::eventually(timeout, || self.log().contains(needle))
    }
}

/// A chat member on `/chat/ROOM`: tungstenite, blocking, each read waiting at
/// most `READ_TIMEOUT` (10 s).
pub struct ChatClient {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    welcome: String,
    /// Every text frame read after the welcome, in order.
    pub seen: Vec<String>,
    closed: bool,
}

impl ChatClient {
    /// Connects to `ws://ADDR/chat/ROOM?name=NAME` and reads the welcome
    /// (panics if the first frame is not one).
    pub fn join(addr: SocketAddr, room: &str, name: &str) -> ChatClient {
        let path = format!("/chat/{room}?name={}", percent_encode(name));
        let mut chat = ChatClient {
            socket: client(addr, &path),
            welcome: String::new(),
            seen: Vec::new(),
            closed: false,
        };
        let welcome = chat
            .read_text(READ_TIMEOUT)
            .unwrap_or_else(|| panic!("no welcome on {addr}{path}"));
        assert_eq!(
            json_field(&welcome, "type"),
            Some("welcome"),
            "first frame on {addr}{path}: {welcome}"
        );
        chat.welcome = welcome;
        chat
    }

    /// The welcome frame's JSON text.
    pub fn welcome(&self) -> &str {
        &self.welcome
    }

    /// Sends `text` as one chat message.
    pub fn say(&mut self, text: &str) {
        self.socket
            .send(Message::text(text))
            .unwrap_or_else(|e| panic!("say {text:?}: {e}"));
    }

    /// The next text frame (also added to `seen`); `None` if none comes within
    /// the read timeout or the connection ends.
    pub fn next_json(&mut self) -> Option<String> {
        let text = self.read_text(READ_TIMEOUT)?;
        self.seen.push(text.clone());
        Some(text)
    }

    /// Reads text frames (all added to `seen`) until one matches `pred` and
    /// returns it; `None` if `deadline` passes or the connection ends first.
    pub fn wait_for(
        &mut self,
        deadline: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let text = self.read_text(left.min(READ_TIMEOUT))?;
            self.seen.push(text.clone());
            if pred(&text) {
                return Some(text);
            }
        }
    }

    /// The `text` of every `"type":"message"` frame in `seen`, in order (JSON
    /// escapes left as they are).
    pub fn messages_texts(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter(|json| json_field(json, "type") == Some("message"))
            .filter_map(|json| json_field(json, "text"))
            .map(str::to_string)
            .collect()
    }

    /// Whether the server closed the connection (a close frame, an end of
    /// stream or an error was read).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The next text frame within `timeout` (other frames are skipped); `None`
    /// on timeout or once the connection has ended.
    fn read_text(&mut self, timeout: Duration) -> Option<String> {
        if self.closed {
            return None;
        }
        if let MaybeTlsStream::Plain(stream) = self.socket.get_ref() {
            stream
                .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
                .expect("set the read timeout");
        }
        let end = Instant::now() + timeout;
        loop {
            match self.socket.read() {
                Ok(Message::Text(text)) => return Some(text.as_str().to_string()),
                Ok(Message::Close(_)) => {
                    self.closed = true;
                    return None;
                }
                Ok(_) if Instant::now() < end => {}
                Ok(_) => return None,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(_) => {
                    self.closed = true;
                    return None;
                }
            }
        }
    }
}

/// `name` with everything but ASCII letters, digits and `-._~` percent-encoded,
/// for a query string.
fn percent_encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
