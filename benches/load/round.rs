//! One measured round: a fresh client against one server, for one workload. It opens
//! the connections, warms up, measures deliveries, latency and CPU time (the server's
//! and its own, from /proc) over the measured seconds, then drains and counts what was
//! lost; or, for the memory workloads, reads the server's RSS.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::checks::ErrorCounts;
use crate::client::{Client, Mode};
use crate::options::Options;
use crate::payload::{PayloadFormat, MIN_PAYLOAD_LEN};
use crate::servers::{settle, Server, ServerKind};
use crate::sys::{cpu_ns, raise_nofile_limit, status_kb, steal_ticks, wait_ns};
use crate::workloads::{Workload, WorkloadKind};

/// What a round measured (and, in an aggregate, the medians over rounds).
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub rate: f64,        // messages (deliveries) per second
    pub per_cpu: f64,     // per server CPU second
    pub server_cpu: f64,  // server CPU / wall
    pub client_cpu: f64,  // client CPU / wall
    pub server_wait: f64, // server runnable-but-waiting / wall
    pub client_wait: f64, // client runnable-but-waiting / wall
    pub steal: f64,       // the machine's CPU time stolen by the hypervisor / its CPU time
    pub p50_us: f64,
    pub p99_us: f64,
    pub mem_kb: f64, // MemEcho: VmHWM; MemIdle: bytes per connection
}

#[derive(Clone, Debug, Default)]
pub struct RoundResult {
    pub figures: Figures,
    pub note: String,
    pub errors: ErrorCounts,
}

/// A round that ran, or why it could not.
pub type RoundOutcome = Result<RoundResult, String>;

static ROUND_NONCE: AtomicU64 = AtomicU64::new(1);

/// A nonce for the next round's payloads, different in each round and process.
pub fn next_nonce() -> u16 {
    let n = ROUND_NONCE.fetch_add(1, Ordering::Relaxed);
    ((std::process::id() as u64 * 7919 + n * 40503) & 0xffff) as u16
}

/// One measured round of `workload` against `server`; `t0` is the payloads' time base.
pub fn run_round(
    workload: &Workload,
    server: &Server,
    options: &Options,
    t0: Instant,
) -> RoundOutcome {
    let nonce = next_nonce();
    let external = server.kind == ServerKind::External;
    let mut target = server.target.clone();
    if !external {
        target.path = workload.kind.path(nonce);
    }
    let format = PayloadFormat::new(nonce, workload.size.max(MIN_PAYLOAD_LEN));
    let client =
        Client::new(target, !external, t0, format, workload.mode()).map_err(|e| e.to_string())?;
    if workload.kind == WorkloadKind::MemIdle {
        let pid = server.pid.ok_or("mem/idle needs a server pid")?;
        return measure_idle_memory(client, workload, pid);
    }
    let secs = workload.measured_secs(options.secs);
    measure_traffic(client, workload, server.pid, secs, external)
}

/// mem/idle: opens the connections (as many as the client's fd limit allows) and
/// reports the server's RSS growth per connection.
fn measure_idle_memory(mut client: Client, workload: &Workload, pid: u32) -> RoundOutcome {
    let mut result = RoundResult::default();
    let rss0 = status_kb(pid, "VmRSS:").unwrap_or(0);
    let (soft, _) = raise_nofile_limit();
    let fit = (soft as usize).saturating_sub(64).min(workload.conns);
    let open = client.open_all(fit, Duration::from_secs(60));
    client.pump_for(Duration::from_millis(300));
    settle(&[pid]);
    let rss1 = status_kb(pid, "VmRSS:").unwrap_or(0);
    result.errors = client.checks.errors.clone();
    if open == 0 {
        return Err("no connection opened".into());
    }
    result.figures.mem_kb = (rss1.saturating_sub(rss0) * 1024) as f64 / open as f64;
    let wanted = workload.conns;
    let limited = if fit < wanted {
        format!("; client fd limit {soft} allows {fit}")
    } else {
        String::new()
    };
    result.note =
        format!("{open} conns open (of {wanted} wanted{limited}), RSS {rss0} -> {rss1} KiB");
    drop(client);
    settle(&[pid]);
    Ok(result)
}

/// Echo, chat and latency (and mem/echo's load): opens and sets up the connections,
/// warms up for 300 ms, measures for `secs`, then drains and checks.
fn measure_traffic(
    mut client: Client,
    workload: &Workload,
    pid: Option<u32>,
    secs: f64,
    external: bool,
) -> RoundOutcome {
    set_up(&mut client, workload.conns, external)?;
    client.start_sending();
    client.pump_for(Duration::from_millis(300)); // warm-up
    let before = Sample::before(pid);
    client.measuring = true;
    client.delivered = 0;
    client.latencies_ns.clear();
    client.pump_for(Duration::from_secs_f64(secs));
    client.measuring = false;
    let after = Sample::after(pid);
    client.drain_and_verify(Duration::from_secs(5));

    let mut result = RoundResult {
        figures: before.figures_until(&after, client.delivered),
        ..RoundResult::default()
    };
    let mut latencies = std::mem::take(&mut client.latencies_ns);
    result.figures.p50_us = percentile(&mut latencies, 0.50);
    result.figures.p99_us = percentile(&mut latencies, 0.99);
    if workload.kind == WorkloadKind::MemEcho {
        if let Some(p) = pid {
            result.figures.mem_kb = status_kb(p, "VmHWM:").unwrap_or(0) as f64;
            let rss = status_kb(p, "VmRSS:").unwrap_or(0);
            result.note = format!("VmRSS now {rss} KiB");
        }
    }
    let mut notes = Vec::new();
    if !result.note.is_empty() {
        notes.push(std::mem::take(&mut result.note));
    }
    if client.checks.foreign > 0 {
        notes.push(format!(
            "{} foreign messages skipped",
            client.checks.foreign
        ));
    }
    if client.notices_measured > 0 {
        let n = client.notices_measured;
        notes.push(format!(
            "{n} notices (not messages) received while measuring"
        ));
    }
    if client.rate_limited > 0 {
        notes.push(format!(
            "{} rate_limited notice(s): the server's flood control dropped messages \
             (run loopchat with --max-message-rate 0)",
            client.rate_limited
        ));
    }
    result.note = notes.join("; ");
    result.errors = client.checks.errors.clone();
    drop(client);
    if let Some(p) = pid {
        settle(&[p]);
    }
    Ok(result)
}

/// Opens `conns` connections (all of them, or an error); for chat and relay, waits
/// until the room is full and quiet (see `Client::wait_ready`).
pub fn set_up(client: &mut Client, conns: usize, external: bool) -> Result<(), String> {
    let open = client.open_all(conns, Duration::from_secs(30));
    if open < conns {
        let errors = &client.checks.errors;
        let (counts, notes) = (errors.summary(), errors.notes.join("; "));
        return Err(format!(
            "only {open}/{conns} connections opened ({counts}: {notes})"
        ));
    }
    if let Mode::Chat { .. } = client.mode {
        // a relay room (and a raw fan-out) sends no welcome and no notices
        let need_welcome = !external && !client.verbatim();
        if !client.wait_ready(need_welcome, conns, Duration::from_secs(20)) {
            let (unwelcomed, untold) = client.not_ready(conns);
            let untold = if client.announces { untold } else { 0 };
            return Err(format!(
                "room setup: after 20 s, {unwelcomed} members without a welcome, \
                 {untold} not told that {conns} are online, or traffic did not calm down"
            ));
        }
    }
    Ok(())
}

/// The counters read at either end of the measured window.
struct Sample {
    server_wait: Option<u64>,
    client_wait: Option<u64>,
    steal: Option<(u64, u64)>,
    server_cpu: Option<u64>,
    client_cpu: Option<u64>,
    at: Instant,
}

impl Sample {
    /// At the start of the window: the CPU times last, next to the clock.
    fn before(pid: Option<u32>) -> Sample {
        let me = std::process::id();
        let (server_wait, client_wait) = (pid.and_then(wait_ns), wait_ns(me));
        let steal = steal_ticks();
        let (server_cpu, client_cpu) = (pid.and_then(cpu_ns), cpu_ns(me));
        Sample {
            server_wait,
            client_wait,
            steal,
            server_cpu,
            client_cpu,
            at: Instant::now(),
        }
    }

    /// At the end of the window: the CPU times first, next to the clock.
    fn after(pid: Option<u32>) -> Sample {
        let me = std::process::id();
        let (server_cpu, client_cpu) = (pid.and_then(cpu_ns), cpu_ns(me));
        let at = Instant::now();
        let (server_wait, client_wait) = (pid.and_then(wait_ns), wait_ns(me));
        Sample {
            server_wait,
            client_wait,
            steal: steal_ticks(),
            server_cpu,
            client_cpu,
            at,
        }
    }

    /// Rates, CPU and noise figures of the window from `self` to `end`, in which
    /// `delivered` messages were delivered.
    fn figures_until(&self, end: &Sample, delivered: u64) -> Figures {
        let wall = end.at.duration_since(self.at).as_secs_f64();
        // seconds spent between the two samples
        let seconds = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
            _ => None,
        };
        let server_cpu = seconds(self.server_cpu, end.server_cpu);
        let per_cpu = match server_cpu {
            Some(cpu) if cpu > 0.0 => delivered as f64 / cpu,
            _ => f64::NAN,
        };
        let steal = match (self.steal, end.steal) {
            (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => (s1 - s0) as f64 / (t1 - t0) as f64,
            _ => f64::NAN,
        };
        Figures {
            rate: delivered as f64 / wall,
            per_cpu,
            server_cpu: server_cpu.map_or(f64::NAN, |s| s / wall),
            client_cpu: seconds(self.client_cpu, end.client_cpu).map_or(0.0, |s| s / wall),
            server_wait: seconds(self.server_wait, end.server_wait).map_or(f64::NAN, |s| s / wall),
            client_wait: seconds(self.client_wait, end.client_wait).map_or(f64::NAN, |s| s / wall),
            steal,
            ..Figures::default()
        }
    }
}

/// The `q` quantile of latencies in ns, in µs (NaN if there are none).
pub fn percentile(v: &mut [u32], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let k = ((v.len() - 1) as f64 * q).round() as usize;
    let (_, x, _) = v.select_nth_unstable(k);
    *x as f64 / 1000.0
}
