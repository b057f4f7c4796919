//! The processes of a cluster workload: a `redis-server` of the bench's own (a free
//! loopback port, a fresh temp dir, no persistence, killed by its PID when dropped)
//! and loopchat nodes (with `--redis`, or none for the single server they are
//! compared with); plus the two things read from them: a node's `/metrics`, and a
//! Redis command's reply (`CONFIG RESETSTAT`, `INFO commandstats`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::options::Options;
use crate::servers::{command_line, ServerKind};
use crate::sys::{command_on_cpu, die_with_parent, free_port};

/// How long a process has to start listening (and a node to link up).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A scrape or a command that takes longer is an error.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Kills (SIGKILL, by the child's PID) and reaps a child; nothing if it exited.
fn kill(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// `name` as a path: itself if it has a slash, else the first match on `PATH`.
pub fn find_program(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The bench's own `redis-server`.
pub struct Redis {
    child: Child,
    pub pid: u32,
    pub port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts `binary` on a free port of 127.0.0.1, in a fresh temp dir, without
    /// persistence; on `cpus` (a `taskset` list such as "0-1") if given, so that it
    /// does not inherit the client's pinning. Waits until it answers `PING`.
    pub fn start(binary: &Path, cpus: Option<&str>) -> Result<Redis, String> {
        let mut last = String::new();
        for attempt in 0..3 {
            let port = free_port().map_err(|e| format!("free port: {e}"))?;
            let dir = std::env::temp_dir().join(format!(
                "loopchat-load-redis-{}-{port}-{attempt}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let port_text = port.to_string();
            let dir_text = dir.to_string_lossy().into_owned();
            let args = [
                "--port",
                &port_text,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir_text,
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ];
            let cmd = match cpus {
                Some(list) => {
                    let mut c = Command::new("taskset");
                    c.arg("-c").arg(list).arg(binary).args(args);
                    c
                }
                None => {
                    let mut c = Command::new(binary);
                    c.args(args);
                    c
                }
            };
            let child = spawn_quiet(cmd, binary)?;
            let mut redis = Redis {
                pid: child.id(),
                child,
                port,
                dir,
            };
            match redis.wait_ready() {
                Ok(()) => return Ok(redis),
                Err(e) => last = e, // the port was taken meanwhile: another one
            }
        }
        Err(format!("redis-server did not start: {last}"))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited at start: {status}"));
            }
            if let Ok(reply) = self.command(&["PING"]) {
                if reply == "PONG" {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no PONG on port {} within 10 s", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs one command on a fresh connection: a status, integer or bulk reply as
    /// text; an error reply as `Err`.
    pub fn command(&self, args: &[&str]) -> Result<String, String> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let mut stream =
            TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "+" | ":" => Ok(rest.to_string()),
            "-" => Err(rest.to_string()),
            "$" => {
                let n: i64 = rest
                    .parse()
                    .map_err(|_| format!("bad bulk length {rest:?}"))?;
                if n < 0 {
                    return Ok(String::new());
                }
                let mut body = vec![0u8; n as usize + 2];
                reader.read_exact(&mut body).map_err(|e| e.to_string())?;
                body.truncate(n as usize);
                String::from_utf8(body).map_err(|e| e.to_string())
            }
            _ => Err(format!("unexpected reply {line:?}")),
        }
    }

    /// `INFO commandstats`: per command, (calls, microseconds inside Redis).
    pub fn command_stats(&self) -> Result<HashMap<String, (u64, u64)>, String> {
        let info = self.command(&["INFO", "commandstats"])?;
        let mut stats = HashMap::new();
        for line in info.lines() {
            let Some((name, fields)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            stats.insert(name.to_string(), (field("calls"), field("usec")));
        }
        Ok(stats)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        kill(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopchat process: a node of the cluster, or the single server without Redis.
pub struct Node {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
}

impl Node {
    /// Starts loopchat as the bench starts it (`servers::command_line`: flood
    /// control off, `--loopchat-arg`s), plus `--redis URL` if given, on CPU `cpu`
    /// if given. Waits until it listens and, with Redis, until its link is up.
    pub fn start(options: &Options, redis: Option<&str>, cpu: Option<u32>) -> Result<Node, String> {
        let port = free_port().map_err(|e| format!("free port: {e}"))?;
        let (prog, mut args) = command_line(ServerKind::Loopchat, options, port)?;
        if let Some(url) = redis {
            // A presence refresh (one script per 500 of a node's members, every
            // third of the TTL) is a cost per member and 10 s, not per message:
            // at 300 s none falls inside a group's measured windows.
            args.extend(["--redis", url, "--presence-ttl", "300s"].map(String::from));
        }
        let cmd = command_on_cpu(&prog, &args, cpu);
        let child = spawn_quiet(cmd, &prog)?;
        let mut node = Node {
            pid: child.id(),
            child,
            addr: ([127, 0, 0, 1], port).into(),
        };
        node.wait_ready(redis.is_some())?;
        Ok(node)
    }

    fn wait_ready(&mut self, linked: bool) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("loopchat exited at start: {status}"));
            }
            if let Ok(m) = scrape(self.addr) {
                if !linked || m.get("loopchat_cluster_link_up") == Some(&1.0) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let what = if linked { "link up to Redis" } else { "listen" };
                return Err(format!(
                    "loopchat on {} did not {what} within 10 s",
                    self.addr
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A server's `/metrics`: every sample line's name (labels included) and value.
pub fn scrape(addr: SocketAddr) -> Result<HashMap<String, f64>, String> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or("no HTTP body")?;
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// Starts `cmd` with no stdin or stdout (its stderr is the bench's), to die
/// with the bench.
fn spawn_quiet(mut cmd: Command, program: &std::path::Path) -> Result<std::process::Child, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    die_with_parent(&mut cmd);
    cmd.spawn()
        .map_err(|e| format!("spawn {}: {e}", program.display()))
}
