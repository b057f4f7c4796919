//! A `redis-server` of the test's own: on a free port of 127.0.0.1, in a fresh
//! temp dir, with no persistence, stopped by its PID when dropped. Faults to
//! inject: SIGKILL and a restart on the same port, SIGSTOP and SIGCONT. Plus a
//! minimal RESP client (one command per fresh connection) to look inside it.
//!
//! Without `redis-server` on this machine [`RedisServer::start`] skips the test
//! (fails it under `CI=true`) through `tests/skip`.

use super::{eventually, free_local_port, fresh_temp_dir, READ_TIMEOUT};
use rustix::process::{kill_process, Pid, Signal};
use std::cell::Cell;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

// The test files that skip on their own also have `mod skip;`: this is a
// private second copy, so that every file with `mod common;` compiles.
#[allow(clippy::duplicate_mod)]
#[path = "../skip/mod.rs"]
mod skip;

/// How long a (re)started server has to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server` child process, killed (SIGKILL by PID) on drop.
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    /// `None` after [`RedisServer::kill9`] until [`RedisServer::restart`].
    child: Option<Child>,
    /// The PID of the current (or last) process.
    pid: u32,
    paused: Cell<bool>,
}

impl RedisServer {
    /// Starts a server for `test`, or skips the test (returning `None`; under
    /// `CI=true` it panics instead) when `redis-server` is not installed.
    pub fn start(test: &str) -> Option<RedisServer> {
        let Some(binary) = find_redis_server() else {
            skip::skip(
                test,
                "redis-server is not installed",
                "install it: apt-get install redis-server",
            );
            return None;
        };
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let dir = fresh_temp_dir(&format!(
            "redis-{}",
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let mut server = RedisServer {
            binary,
            port: 0,
            dir,
            child: None,
            pid: 0,
            paused: Cell::new(false),
        };
        // The port was free a moment ago; if another process took it meanwhile,
        // redis-server exits at once and another port is tried.
        let mut last_failure = String::new();
        for _ in 0..3 {
            server.port = free_local_port();
            match server.spawn_and_wait() {
                Ok(()) => return Some(server),
                Err(failure) => last_failure = failure,
            }
        }
        panic!("redis-server did not start: {last_failure}");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The PID of the running process (of the last one after [`Self::kill9`]).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its working directory (a fresh temp dir, removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the process is running (paused counts as running).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL by PID, then waits for the process. Nothing if it is not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                signal(self.pid, Signal::KILL);
            }
            let _ = child.wait();
        }
        self.paused.set(false);
    }

    /// Starts the server again on the same port and dir (after [`Self::kill9`]
    /// if it is running) and waits until it answers `PING`. The data is gone:
    /// nothing is persisted.
    pub fn restart(&mut self) {
        self.kill9();
        if let Err(failure) = self.spawn_and_wait() {
            panic!(
                "redis-server did not restart on port {}: {failure}",
                self.port
            );
        }
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    /// Panics if it is not running (after [`Self::kill9`]).
    pub fn pause(&self) {
        assert!(self.child.is_some(), "pause: redis-server is not running");
        signal(self.pid, Signal::STOP);
        self.paused.set(true);
    }

    /// SIGCONT after [`Self::pause`]; nothing if it is not running.
    pub fn resume(&self) {
        // Only a child not yet waited for: its PID cannot belong to another process.
        if self.child.is_some() {
            signal(self.pid, Signal::CONT);
        }
        self.paused.set(false);
    }

    /// Sends one command and returns its reply rendered simply (see
    /// [`command_at`]); panics if the server does not answer within the read
    /// timeout.
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("redis {args:?} on port {}: {e}", self.port))
    }

    /// [`Self::command`], with the I/O error instead of a panic.
    pub fn try_command(&self, args: &[&str]) -> std::io::Result<String> {
        command_at(self.addr(), args, READ_TIMEOUT)
    }

    /// The last lines of the server's log file (for failure messages).
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir)
    }

    /// Spawns redis-server on `self.port` and waits for `+PONG`; on failure the
    /// child is killed and waited for, and the error carries the log's tail.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let stderr = std::fs::File::create(self.dir.join("redis.stderr")).expect("stderr file");
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--daemonize", "no"])
            .args(["--protected-mode", "no"])
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.binary.display()))?;
        self.pid = child.id();
        self.child = Some(child);
        self.paused.set(false);
        let addr = self.addr();
        let mut exited = None;
        let up = eventually(START_TIMEOUT, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                exited = Some(status);
                return true;
            }
            command_at(addr, &["PING"], Duration::from_secs(1)).is_ok_and(|r| r == "PONG")
        });
        match (up, exited) {
            (true, None) => Ok(()),
            (_, Some(status)) => {
                self.child = None;
                Err(format!("it exited ({status}); {}", self.log_tail()))
            }
            (false, None) => {
                self.kill9();
                Err(format!(
                    "no +PONG on {addr} in {START_TIMEOUT:?}; {}",
                    self.log_tail()
                ))
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.paused.get() {
            self.resume();
        }
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `signal` to process `pid`; panics if that fails (the process is ours
/// and not yet waited for, so it exists).
fn signal(pid: u32, signal: Signal) {
    let target = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .expect("a PID");
    kill_process(target, signal).unwrap_or_else(|e| panic!("kill({pid}, {signal:?}): {e}"));
}

/// `redis-server` on the PATH, else in /usr/bin or /usr/sbin.
fn find_redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// The last 30 lines of `redis.log` and of redis-server's stderr in `dir`.
fn log_tail(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["redis.log", "redis.stderr"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        out.push_str(&format!("--- {name} (tail) ---\n{tail}\n"));
    }
    out
}

/// Sends one command (a RESP array of bulk strings) to `addr` over a fresh
/// connection and returns the reply rendered simply: `+OK` → `OK`, `:3` → `3`,
/// a bulk string → its text, a nil → `(nil)`, an array → its items joined with
/// '\n', an error → `-ERR ...` (with the `-`). An error if nothing answers
/// within `timeout` (connecting, or reading each line).
pub fn command_at(addr: SocketAddr, args: &[&str], timeout: Duration) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    read_reply(&mut BufReader::new(stream))
}

/// Reads one RESP2 reply.
fn read_reply(reader: &mut impl BufRead) -> std::io::Result<String> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches("\r\n");
    let Some(kind) = line.chars().next() else {
        return Err(bad("empty reply line".into()));
    };
    let rest = &line[1..];
    let length = || {
        rest.parse::<i64>()
            .map_err(|_| bad(format!("bad length {line:?}")))
    };
    match kind {
        '+' | ':' => Ok(rest.to_string()),
        '-' => Ok(line.to_string()),
        '$' => match usize::try_from(length()?) {
            Err(_) => Ok("(nil)".into()),
            Ok(n) => {
                let mut bulk = vec![0; n + 2];
                reader.read_exact(&mut bulk)?;
                bulk.truncate(n);
                Ok(String::from_utf8_lossy(&bulk).into_owned())
            }
        },
        '*' => match usize::try_from(length()?) {
            Err(_) => Ok("(nil)".into()),
            Ok(n) => {
                let items = (0..n)
                    .map(|_| read_reply(reader))
                    .collect::<std::io::Result<Vec<_>>>()?;
                Ok(items.join("\n"))
            }
        },
        _ => Err(bad(format!("unknown reply {line:?}"))),
    }
}
