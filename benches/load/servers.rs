//! The servers under test: which there are, starting one as its own process (pinned,
//! killed with the bench) and waiting until it listens and is idle.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::options::Options;
use crate::sys::{command_on_cpu, cpu_ns, die_with_parent, free_port};
use crate::target::{Protocol, Target};

/// The CPU the servers are pinned to (the client takes the other one).
pub const SERVER_CPU: u32 = 0;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ServerKind {
    Loopchat,
    RawEcho,
    RawFanout,
    Tokio,
    /// The server of `--url`, started by someone else.
    External,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Loopchat => "loopchat",
            ServerKind::RawEcho => "raw-tcp-echo",
            ServerKind::RawFanout => "raw-tcp-fanout",
            ServerKind::Tokio => "tokio-tungstenite",
            ServerKind::External => "target",
        }
    }
}

/// A server process; killed (by its PID) and reaped when dropped, also on panic.
pub struct Server {
    pub kind: ServerKind,
    child: Option<Child>,
    pub pid: Option<u32>,
    pub target: Target,
}

impl Server {
    /// The `--url` server: not ours to start or stop; `pid` from `--server-pid`.
    pub fn external(target: Target, pid: Option<u32>) -> Server {
        Server {
            kind: ServerKind::External,
            child: None,
            pid,
            target,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts a server of `kind` on a free loopback port (on SERVER_CPU if `pin`), and
/// waits until it listens and is idle.
pub fn spawn_server(kind: ServerKind, options: &Options, pin: bool) -> Result<Server, String> {
    spawn_server_with(kind, options, pin, &[])
}

/// [`spawn_server`], with `extra` arguments for loopchat after all the others.
pub fn spawn_server_with(
    kind: ServerKind,
    options: &Options,
    pin: bool,
    extra: &[String],
) -> Result<Server, String> {
    let port = free_port().map_err(|e| format!("free port: {e}"))?;
    let (prog, mut args) = command_line(kind, options, port)?;
    if kind == ServerKind::Loopchat {
        args.extend(extra.iter().cloned());
    }
    let mut cmd = command_on_cpu(&prog, &args, pin.then_some(SERVER_CPU));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    die_with_parent(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", prog.display()))?;
    let pid = child.id();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let protocol = match kind {
        ServerKind::RawEcho | ServerKind::RawFanout => Protocol::RawTcp,
        _ => Protocol::WebSocket,
    };
    let mut server = Server {
        kind,
        child: Some(child),
        pid: Some(pid),
        target: Target {
            addr,
            host: format!("127.0.0.1:{port}"),
            path: "/".into(),
            protocol,
        },
    };
    wait_listening(&mut server)?;
    // wait for the probe connection to be processed
    settle(&[pid]);
    Ok(server)
}

/// The program and arguments that run a server of `kind` on `port`: loopchat, or this
/// binary with `--serve`.
pub fn command_line(
    kind: ServerKind,
    options: &Options,
    port: u16,
) -> Result<(PathBuf, Vec<String>), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let serve = |what: &str| vec!["--serve".to_string(), what.to_string(), port.to_string()];
    Ok(match kind {
        ServerKind::Loopchat => {
            let addr = format!("127.0.0.1:{port}");
            // Flood control off: the chat workloads send far more than a person
            // would (the default, 10 messages/s per member, would drop them).
            let mut args: Vec<String> = [
                "--addr",
                &addr,
                "--log-level",
                "warn",
                "--ping-interval",
                "3600",
                "--max-message-rate",
                "0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(options.loopchat_args.iter().cloned());
            (options.loopchat_bin.clone(), args)
        }
        ServerKind::RawEcho => (me, serve("raw-echo")),
        ServerKind::RawFanout => (me, serve("raw-fanout")),
        ServerKind::Tokio => {
            let mut args = serve("tokio");
            if let Some(n) = options.tokio_read_buffer {
                args.push(n.to_string());
            }
            (me, args)
        }
        ServerKind::External => unreachable!(),
    })
}

/// Waits (at most 10 s) until `server` accepts a connection; an error if it exits or
/// does not listen by then.
fn wait_listening(server: &mut Server) -> Result<(), String> {
    let name = server.kind.name();
    let addr = server.target.addr;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = server.child.as_mut().unwrap().try_wait() {
            return Err(format!("{name} exited at start: {status}"));
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{name} did not listen on {addr} within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most 3 s) until the given processes stop burning CPU (e.g. finishing a
/// teardown), so that one server's leftovers do not run during another's round.
pub fn settle(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let a: u64 = pids.iter().filter_map(|&p| cpu_ns(p)).sum();
        std::thread::sleep(Duration::from_millis(50));
        let b: u64 = pids.iter().filter_map(|&p| cpu_ns(p)).sum();
        if b.saturating_sub(a) < 1_000_000 || Instant::now() > deadline {
            return;
        }
    }
}
