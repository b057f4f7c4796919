//! The big-room workload (`bigroom/m19000`): one chat room of `--bigroom-members`
//! members, 19,000 by default, filled from two client processes, against a fresh
//! loopchat each round. A round, in order:
//!
//! 1. loopchat starts as for every workload (`--max-message-rate 0`), plus
//!    `--max-connections` the members plus 100 (within its open-files limit: it
//!    raises its soft limit to the hard one itself);
//! 2. two client processes start: this bench binary again with `--bigroom-worker`
//!    ([`worker`]), each holding half of the members' connections on one mio loop,
//!    pinned to the client's CPU (the server has the other one). Their sockets
//!    connect from 32 loopback source addresses in turn, 127.0.0.2 to 127.0.0.33:
//!    from one address, the kernel's search for a free port to the one server
//!    address takes about 1 ms per connect past 14,000 connections
//!    (`sys::connect_from`), which made the join a measure of the client's kernel;
//! 3. **join**: told `join`, both open their connections to `/chat/big`, at most
//!    `--bigroom-in-flight` (both together, 128 by default: loopchat's listen backlog
//!    is 128, so its accept queue never overflows) on their way at a time, that is
//!    connecting, upgrading or waiting for the welcome. The join time runs from the
//!    command to the last member's welcome;
//! 4. **settle**: until every member has been told by a `join` or `presence` notice
//!    that all are online (past `--member-list-limit`, 100, joins are announced
//!    together once per timer tick, about a second);
//! 5. **broadcast**: the first member sends one message, and the broadcast time
//!    runs until every member has it; then it sends two more at once, and every
//!    member must have all three, in order, each checked byte for byte;
//! 6. the server's peak RSS (VmHWM) and CPU time; then the clients quit, each
//!    reporting what it saw (lost, misordered, corrupt, closed), and the server's CPU
//!    time for the departures of every member at once.
//!
//! The processes talk over pipes, a line per command or report ([`lines`]). Every
//! time is taken here, when a report is read (a thread per worker stamps its lines
//! as they come), so one clock measures both processes.

pub mod lines;
pub mod worker;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::checks::ErrorCounts;
use crate::options::Options;
use crate::round::next_nonce;
use crate::run::CLIENT_CPU;
use crate::servers::{spawn_server_with, ServerKind};
use crate::sys::{
    command_on_cpu, cpu_ns, die_with_parent, listen_overflows, loadavg, raise_nofile_limit,
    status_kb, wait_ns,
};
use crate::workloads::Workload;
use lines::{Command, Progress, Report, Tally};
use worker::Spec;

/// The client processes; each holds its share of the members' sockets.
pub const WORKERS: usize = 2;
/// The room, on every round's fresh server.
pub const ROOM_PATH: &str = "/chat/big";
/// The text of each message: the load payload format, checked byte for byte.
pub const MESSAGE_SIZE: usize = 64;
/// Messages the first member sends: one alone, then this many more at once.
const MORE: u32 = 2;
/// Descriptors a process needs besides its sockets (and what the server is given
/// beyond the members in `--max-connections`).
const SPARE_FDS: u64 = 64;
const EXTRA_CONNECTIONS: usize = 100;
/// How long each phase may take before the round gives up on it.
const JOIN_LIMIT: Duration = Duration::from_secs(30);
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
const DELIVERY_LIMIT: Duration = Duration::from_secs(10);
const QUIT_LIMIT: Duration = Duration::from_secs(10);
const IDLE_LIMIT: Duration = Duration::from_secs(30);

/// What a big-room round measured. Times are from the command that started the
/// phase; `None` where the phase did not complete within its limit.
#[derive(Clone, Debug, Default)]
pub struct BigRoomResult {
    pub members: usize,
    pub in_flight: usize,
    /// Members welcomed, and told the room is full, at the end.
    pub welcomed: usize,
    pub told: usize,
    pub join: Option<Duration>,
    /// From the join command until every member was told all are online.
    pub settle: Option<Duration>,
    /// One message, until every member has it.
    pub broadcast: Option<Duration>,
    /// `MORE` messages at once, until every member has all of them.
    pub more: Option<Duration>,
    /// Messages sent, and the members that got all of them, in order.
    pub sent: u32,
    pub complete: usize,
    /// Members welcomed by the end of each second of the join.
    pub timeline: Vec<usize>,
    /// Connections the machine's listen queues dropped during the join (all
    /// listeners: `sys::listen_overflows`).
    pub listen_overflows: Option<u64>,
    /// The server's VmRSS before the join and once the room settled, its VmHWM
    /// after the broadcasts (KiB).
    pub rss_before_kb: u64,
    pub rss_full_kb: u64,
    pub peak_rss_kb: u64,
    /// The server's CPU seconds: for the join, from the join to the end of the
    /// broadcasts, and for every member's departure (with the time that took).
    pub cpu_join: f64,
    pub cpu_total: f64,
    pub cpu_departures: f64,
    pub departures: Option<Duration>,
    /// The server's run-queue wait, seconds, join to broadcasts (noise).
    pub server_wait: f64,
    /// Both client processes' CPU seconds.
    pub client_cpu: f64,
    pub load_before: String,
    pub load_after: String,
    pub errors: ErrorCounts,
    pub notes: Vec<String>,
}

/// A round that ran (reaching what it reached), or why it could not start.
pub type BigRoomOutcome = Result<BigRoomResult, String>;

/// One round of the big room against a fresh loopchat.
pub fn run_round(workload: &Workload, options: &Options, pin: bool) -> BigRoomOutcome {
    let members = workload.conns;
    let mut r = BigRoomResult {
        members,
        in_flight: options.bigroom_in_flight,
        load_before: loadavg(),
        ..BigRoomResult::default()
    };
    let (soft, hard) = raise_nofile_limit();
    let shares = [members.div_ceil(WORKERS), members / WORKERS];
    if shares[0] as u64 + SPARE_FDS > soft {
        return Err(format!(
            "a client process needs {} descriptors ({} sockets + {SPARE_FDS}) but the \
             open-files limit is {soft} (hard {hard}): raise it (ulimit -n) or lower \
             --bigroom-members",
            shares[0] as u64 + SPARE_FDS,
            shares[0]
        ));
    }
    // loopchat raises its soft limit to the hard one it inherits from us.
    let room = hard.saturating_sub(SPARE_FDS) as usize;
    let max_connections = (members + EXTRA_CONNECTIONS).min(room);
    if max_connections < members {
        r.notes.push(format!(
            "the server's open-files limit {hard} leaves room for {max_connections} \
             connections (--max-connections {max_connections}): fewer than {members}"
        ));
    }
    let extra = ["--max-connections".to_string(), max_connections.to_string()];
    let server = spawn_server_with(ServerKind::Loopchat, options, pin, &extra)?;
    let pid = server.pid.ok_or("no server pid")?;
    let nonce = next_nonce();
    let specs: Vec<Spec> = (0..WORKERS)
        .map(|i| Spec {
            addr: server.target.addr,
            share: shares[i],
            members,
            in_flight: (options.bigroom_in_flight / WORKERS).max(1),
            nonce,
            sender: i == 0,
        })
        .collect();
    let mut workers = Workers::spawn(&specs, pin)?;
    workers.wait_ready()?;
    r.rss_before_kb = status_kb(pid, "VmRSS:").unwrap_or(0);
    measure(&mut r, &mut workers, pid);
    // Every member leaves at once: the clients quit, and their sockets close as
    // they exit.
    let (cpu, left) = (server_cpu(pid), Instant::now());
    workers.quit(&mut r);
    r.departures = wait_idle(pid, IDLE_LIMIT).map(|t| t - left);
    r.cpu_departures = server_cpu(pid) - cpu;
    r.load_after = loadavg();
    drop(server);
    Ok(r)
}

/// Process `pid`'s CPU time, in seconds.
fn server_cpu(pid: u32) -> f64 {
    cpu_ns(pid).unwrap_or(0) as f64 / 1e9
}

/// The phases, each only if the one before completed, and the server's figures at
/// the end of them.
fn measure(r: &mut BigRoomResult, workers: &mut Workers, pid: u32) {
    let cpu = || server_cpu(pid);
    let (cpu0, wait0) = (cpu(), wait_ns(pid).unwrap_or(0));
    let overflows = listen_overflows();
    let go = Instant::now();
    workers.command(Command::Join);
    let joined = workers.wait_until(go + JOIN_LIMIT, true, |w| w.welcomed);
    r.cpu_join = cpu() - cpu0;
    r.listen_overflows = (listen_overflows().zip(overflows)).map(|(b, a)| b.saturating_sub(a));
    r.timeline = std::mem::take(&mut workers.timeline);
    let welcomed: usize = workers.state.iter().map(|w| w.progress.welcomed).sum();
    let joined = joined.filter(|_| welcomed == r.members);
    r.join = joined.map(|t| t - go);
    let settled = joined.and_then(|t| workers.wait_until(t + SETTLE_LIMIT, false, |w| w.settled));
    r.settle = settled.map(|t| t - go);
    if settled.is_some() {
        wait_idle(pid, Duration::from_secs(3));
        r.rss_full_kb = status_kb(pid, "VmRSS:").unwrap_or(0);
        let sent = Instant::now();
        workers.command(Command::Send(1));
        r.sent = 1;
        let got = workers.wait_until(sent + DELIVERY_LIMIT, false, |w| w.got(1));
        r.broadcast = got.map(|t| t - sent);
        if got.is_some() {
            let sent = Instant::now();
            workers.command(Command::Send(MORE));
            r.sent += MORE;
            let got = workers.wait_until(sent + DELIVERY_LIMIT, false, |w| w.got(1 + MORE));
            r.more = got.map(|t| t - sent);
        }
    }
    r.peak_rss_kb = status_kb(pid, "VmHWM:").unwrap_or(0);
    r.cpu_total = cpu() - cpu0;
    r.server_wait = wait_ns(pid).unwrap_or(0).saturating_sub(wait0) as f64 / 1e9;
    r.client_cpu = workers.cpu_seconds();
}

/// Waits until process `pid` stops using CPU (under 1 ms in 50 ms): when it did, or
/// `None` if it was still busy after `limit`.
fn wait_idle(pid: u32, limit: Duration) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    let mut last = cpu_ns(pid)?;
    let mut idle_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = cpu_ns(pid)?;
        if now.saturating_sub(last) < 1_000_000 {
            return Some(idle_since);
        }
        (last, idle_since) = (now, Instant::now());
        if idle_since > deadline {
            return None;
        }
    }
}

/// What the orchestrator knows of one client process.
#[derive(Default)]
struct WorkerState {
    ready: Option<u64>,
    progress: Progress,
    welcomed: Option<Instant>,
    settled: Option<Instant>,
    /// Each `got N`, when it came.
    got: Vec<(u32, Instant)>,
    result: Option<Tally>,
    /// Its stdout closed.
    gone: bool,
}

impl WorkerState {
    fn got(&self, n: u32) -> Option<Instant> {
        self.got.iter().find(|(k, _)| *k >= n).map(|&(_, t)| t)
    }
}

/// A line from a client process, or the end of them.
enum Heard {
    Report(Report),
    /// A line that is not a report (said on stderr, and in the round's notes).
    Strange(String),
    /// Its stdout closed.
    Gone,
}

/// The client processes, their stdin, and their reports (stamped when read).
struct Workers {
    children: Vec<Child>,
    stdin: Vec<ChildStdin>,
    reports: Receiver<(usize, Instant, Heard)>,
    state: Vec<WorkerState>,
    /// Members welcomed over all workers at each second of the join.
    timeline: Vec<usize>,
    /// Lines that were not reports.
    strange: Vec<String>,
}

impl Workers {
    fn spawn(specs: &[Spec], pin: bool) -> Result<Workers, String> {
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let (tx, reports) = mpsc::channel();
        let mut workers = Workers {
            children: Vec::new(),
            stdin: Vec::new(),
            reports,
            state: Vec::new(),
            timeline: Vec::new(),
            strange: Vec::new(),
        };
        for (i, spec) in specs.iter().enumerate() {
            let mut cmd = command_on_cpu(&me, &spec.args(), pin.then_some(CLIENT_CPU));
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            die_with_parent(&mut cmd);
            let mut child = cmd.spawn().map_err(|e| format!("spawn a client: {e}"))?;
            let stdout = child.stdout.take().ok_or("no stdout")?;
            workers.stdin.push(child.stdin.take().ok_or("no stdin")?);
            workers.children.push(child);
            workers.state.push(WorkerState::default());
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let stamp = Instant::now();
                    let heard = match Report::parse(&line) {
                        Some(report) => Heard::Report(report),
                        None => {
                            eprintln!("bigroom client {i}: {line}");
                            Heard::Strange(line)
                        }
                    };
                    if tx.send((i, stamp, heard)).is_err() {
                        return;
                    }
                }
                let _ = tx.send((i, Instant::now(), Heard::Gone));
            });
        }
        Ok(workers)
    }

    /// Every client process's `ready`, or why not.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        if self
            .wait_until(deadline, false, |w| w.ready.map(|_| Instant::now()))
            .is_none()
        {
            return Err("the client processes did not start".into());
        }
        Ok(())
    }

    fn command(&mut self, command: Command) {
        for stdin in &mut self.stdin {
            let _ = writeln!(stdin, "{}", command.line());
            let _ = stdin.flush();
        }
    }

    /// Reads reports until `reached` gives every worker a time (the latest of them is
    /// returned), a worker is gone, or `deadline` passes (`None` for both). `timeline`:
    /// keep the welcomed count at each whole second from now (the join's).
    fn wait_until(
        &mut self,
        deadline: Instant,
        timeline: bool,
        reached: impl Fn(&WorkerState) -> Option<Instant>,
    ) -> Option<Instant> {
        let start = Instant::now();
        loop {
            let times: Option<Vec<Instant>> = self.state.iter().map(&reached).collect();
            if let Some(times) = times {
                return times.into_iter().max();
            }
            if self.state.iter().any(|w| w.gone) {
                return None;
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            let (i, at, heard) = match self.reports.recv_timeout(wait) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            };
            self.on_heard(i, at, heard);
            if timeline {
                self.note_timeline(start, at);
            }
        }
    }

    fn on_heard(&mut self, i: usize, at: Instant, heard: Heard) {
        let w = &mut self.state[i];
        let report = match heard {
            Heard::Report(report) => report,
            Heard::Strange(line) => return self.strange.push(format!("client {i}: {line}")),
            Heard::Gone => return w.gone = true,
        };
        match report {
            Report::Ready { fd_limit } => w.ready = Some(fd_limit),
            Report::Progress(p) => w.progress = p,
            Report::Welcomed => w.welcomed = Some(at),
            Report::Settled => w.settled = Some(at),
            Report::Got(n) => w.got.push((n, at)),
            Report::Result(t) => {
                w.progress = t.progress;
                w.result = Some(t);
            }
        }
    }

    /// Keeps the welcomed count for every whole second of the join passed by `at`.
    fn note_timeline(&mut self, start: Instant, at: Instant) {
        let welcomed: usize = self.state.iter().map(|w| w.progress.welcomed).sum();
        while self.timeline.len() < (at - start).as_secs() as usize {
            self.timeline.push(welcomed);
        }
    }

    fn cpu_seconds(&self) -> f64 {
        let ns: u64 = self.children.iter().filter_map(|c| cpu_ns(c.id())).sum();
        ns as f64 / 1e9
    }

    /// Tells the workers to quit, adds up what they saw into `r`, and waits until
    /// they have exited (their sockets closed).
    fn quit(&mut self, r: &mut BigRoomResult) {
        self.command(Command::Quit);
        let deadline = Instant::now() + QUIT_LIMIT;
        let done = |w: &WorkerState| w.result.as_ref().map(|_| Instant::now());
        self.wait_until(deadline, false, done);
        self.end(deadline);
        for (i, w) in self.state.iter().enumerate() {
            r.welcomed += w.progress.welcomed;
            r.told += w.progress.told;
            match &w.result {
                Some(t) => {
                    r.complete += t.complete;
                    r.errors.merge(&t.errors);
                }
                None => r
                    .notes
                    .push(format!("client {i} did not report at the end")),
            }
        }
        r.notes.append(&mut self.strange);
        let unreached = |what: &str, n: usize| {
            (n < r.members).then(|| format!("{n} of {} members {what}", r.members))
        };
        let missing = [
            unreached("welcomed", r.welcomed),
            unreached("told that all are online", r.told),
        ];
        r.notes.extend(missing.into_iter().flatten());
        let dead: usize = self.state.iter().map(|w| w.progress.dead).sum();
        if dead > 0 {
            r.notes
                .push(format!("{dead} connections failed or were closed"));
        }
    }
}

impl Workers {
    /// Closes the workers' stdin (which a worker takes as `quit`), waits until they
    /// exit or `deadline`, then kills (by PID) any left and reaps them.
    fn end(&mut self, deadline: Instant) {
        self.stdin.clear();
        for child in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.end(Instant::now() + Duration::from_secs(5));
    }
}
