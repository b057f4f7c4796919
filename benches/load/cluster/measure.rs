//! One measured round of a cluster workload: a fresh room, its members spread
//! round-robin over the setup's servers, the usual warm-up, window and drain of
//! `round.rs`, and around the window the figures only a cluster has: every
//! process's CPU time (nodes, Redis, client), the nodes' `/metrics` counters
//! (posts, commands, writes, events, faults) and Redis's own `INFO commandstats`
//! (reset at the start of the window).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::procs::{scrape, Node, Redis};
use super::{Setup, Shape};
use crate::checks::ErrorCounts;
use crate::client::{Client, Mode, NodeSplit, OrderCheck};
use crate::options::Options;
use crate::payload::{PayloadFormat, MIN_PAYLOAD_LEN};
use crate::round::{percentile, set_up};
use crate::servers::settle;
use crate::sys::{cpu_ns, steal_ticks, wait_ns};
use crate::target::{Protocol, Target};
use crate::workloads::WorkloadKind;

/// What a round measured; NaN where a figure does not apply (no Redis, no other
/// node).
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Deliveries per second, and chat messages (posts) per second.
    pub rate: f64,
    pub msgs_per_s: f64,
    /// Deliveries per CPU second of the servers: nodes plus Redis.
    pub per_cpu: f64,
    /// Per server process (node 0, node 1, ...): CPU / wall, and CPU ns per
    /// delivery to its own members.
    pub node_cpu: Vec<f64>,
    pub node_ns: Vec<f64>,
    /// Per server process: deliveries to its members per time its loop slept
    /// (`voluntary_ctxt_switches`): how much work one wake-up found.
    pub node_dps: Vec<f64>,
    pub redis_cpu: f64,
    pub client_cpu: f64,
    /// Redis CPU per chat message (µs), from /proc.
    pub redis_us_per_msg: f64,
    /// Redis's own accounting (`INFO commandstats`, wall-clock µs, so time spent
    /// waiting for a CPU counts): µs per EVALSHA, EVALSHA calls per chat message,
    /// the commands the scripts ran per EVALSHA and their µs per EVALSHA.
    pub evalsha_us: f64,
    pub evalsha_per_msg: f64,
    pub calls_per_evalsha: f64,
    pub nested_us: f64,
    /// Chat messages per write to Redis, over all nodes (`/metrics`): the
    /// batching (a node sends a room's messages of one loop iteration as one
    /// script call, and everything of an iteration in one write).
    pub msgs_per_write: f64,
    /// Room events each node received per chat message posted.
    pub events_per_msg: f64,
    /// Latency (µs) of deliveries to members on the sender's node, and on another.
    pub p50_same: f64,
    pub p99_same: f64,
    pub p50_other: f64,
    pub p99_other: f64,
    /// Run-queue wait / wall: the most any node waited, Redis, the client; steal.
    pub wait_nodes: f64,
    pub wait_redis: f64,
    pub wait_client: f64,
    pub steal: f64,
}

/// A round that ran.
#[derive(Clone, Debug, Default)]
pub struct RoundResult {
    pub figures: Figures,
    pub errors: ErrorCounts,
    pub order: OrderCheck,
    /// Cluster counters that should not move under load (gaps, island messages,
    /// bad replies, link failures), with their increase.
    pub anomalies: Vec<String>,
    /// Redis's busiest commands in the window: (name, calls, µs).
    pub top_commands: Vec<(String, u64, u64)>,
    pub note: String,
}

/// A round that ran, or why it could not.
pub type RoundOutcome = Result<RoundResult, String>;

/// The counters of `/metrics` that a round reads.
const COUNTERS: [&str; 9] = [
    "loopchat_cluster_posts_total",
    "loopchat_cluster_commands_total",
    "loopchat_cluster_writes_total",
    "loopchat_cluster_events_received_total",
    "loopchat_cluster_gaps_detected_total",
    "loopchat_cluster_gaps_unrepaired_total",
    "loopchat_cluster_island_messages_total",
    "loopchat_cluster_bad_replies_total",
    "loopchat_cluster_link_failures_total",
];

/// Every process's counters at one end of the window.
struct Sample {
    cpu: Vec<Option<u64>>,  // nodes..., redis, client
    wait: Vec<Option<u64>>, // the same order
    sleeps: Vec<Option<u64>>,
    steal: Option<(u64, u64)>,
    at: Instant,
}

/// The times a process blocked (its loop slept in `epoll_wait`, mostly), from
/// `voluntary_ctxt_switches` of /proc/PID/status (the main thread: loopchat has
/// no other).
fn sleeps(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
        .trim()
        .parse()
        .ok()
}

impl Sample {
    fn take(pids: &[u32], cpu_first: bool) -> Sample {
        let cpu = |pids: &[u32]| pids.iter().map(|&p| cpu_ns(p)).collect();
        let wait = |pids: &[u32]| pids.iter().map(|&p| wait_ns(p)).collect();
        let slept = |pids: &[u32]| pids.iter().map(|&p| sleeps(p)).collect();
        if cpu_first {
            let (cpu, at) = (cpu(pids), Instant::now());
            Sample {
                cpu,
                at,
                sleeps: slept(pids),
                wait: wait(pids),
                steal: steal_ticks(),
            }
        } else {
            let (wait, steal, sleeps) = (wait(pids), steal_ticks(), slept(pids));
            Sample {
                wait,
                steal,
                sleeps,
                cpu: cpu(pids),
                at: Instant::now(),
            }
        }
    }
}

/// Seconds between two readings of a counter in ns.
fn secs(a: Option<u64>, b: Option<u64>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e9,
        _ => f64::NAN,
    }
}

/// Each node's `/metrics` counters (zero for a server without Redis).
fn counters(nodes: &[Node], linked: bool) -> Result<Vec<HashMap<String, f64>>, String> {
    nodes
        .iter()
        .map(|n| {
            if linked {
                scrape(n.addr).map_err(|e| format!("/metrics of {}: {e}", n.addr))
            } else {
                Ok(HashMap::new())
            }
        })
        .collect()
}

/// The increase of counter `name`, summed over the nodes.
fn delta(before: &[HashMap<String, f64>], after: &[HashMap<String, f64>], name: &str) -> f64 {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.get(name).unwrap_or(&0.0) - b.get(name).unwrap_or(&0.0))
        .sum()
}

/// One round of `shape` on `setup`'s servers (`nodes`, linked through `redis` if
/// the setup has Redis).
pub fn run_round(
    shape: &Shape,
    setup: Setup,
    nodes: &[Node],
    redis: Option<&Redis>,
    options: &Options,
    t0: Instant,
    nonce: u16,
) -> RoundOutcome {
    let redis = if setup.linked() { redis } else { None };
    let members = shape.members;
    let target = Target {
        addr: nodes[0].addr,
        host: nodes[0].addr.to_string(),
        path: WorkloadKind::Chat.path(nonce),
        protocol: Protocol::WebSocket,
    };
    let format = PayloadFormat::new(nonce, shape.size.max(MIN_PAYLOAD_LEN));
    let mode = Mode::Chat {
        senders: shape.senders,
        rate_hz: 0.0,
        verbatim: false,
    };
    let mut client = Client::new(target, true, t0, format, mode).map_err(|e| e.to_string())?;
    client.chat_window = shape.window;
    client.chat_global = (shape.window as u64) * shape.senders as u64;
    client.split = Some(NodeSplit::new(
        nodes.iter().map(|n| n.addr).collect(),
        members,
    ));
    set_up(&mut client, members, false)?;
    client.start_sending();
    client.pump_for(Duration::from_millis(300)); // warm-up

    let mut pids: Vec<u32> = nodes.iter().map(|n| n.pid).collect();
    let redis_pid = redis.map(|r| r.pid);
    pids.extend(redis_pid);
    pids.push(std::process::id());
    let metrics_before = counters(nodes, redis.is_some())?;
    if let Some(r) = redis {
        r.command(&["CONFIG", "RESETSTAT"])
            .map_err(|e| format!("CONFIG RESETSTAT: {e}"))?;
    }
    let before = Sample::take(&pids, false);
    client.measuring = true;
    client.delivered = 0;
    client.latencies_ns.clear();
    if let Some(split) = &mut client.split {
        split.clear_measured();
    }
    client.pump_for(Duration::from_secs_f64(options.secs));
    client.measuring = false;
    let after = Sample::take(&pids, true);
    let stats = match redis {
        Some(r) => r.command_stats()?,
        None => HashMap::new(),
    };
    let metrics_after = counters(nodes, redis.is_some())?;
    client.drain_and_verify(Duration::from_secs(5));

    let wall = after.at.duration_since(before.at).as_secs_f64();
    let n = nodes.len();
    let cpu: Vec<f64> = (0..pids.len())
        .map(|i| secs(before.cpu[i], after.cpu[i]))
        .collect();
    let wait: Vec<f64> = (0..pids.len())
        .map(|i| secs(before.wait[i], after.wait[i]) / wall)
        .collect();
    let redis_cpu = if redis.is_some() { cpu[n] } else { f64::NAN };
    let client_cpu = cpu[pids.len() - 1];
    let split = client.split.take().expect("the split set above");
    let delivered = client.delivered as f64;
    let servers_cpu: f64 =
        cpu[..n].iter().sum::<f64>() + if redis.is_some() { redis_cpu } else { 0.0 };
    let posts = if redis.is_some() {
        delta(
            &metrics_before,
            &metrics_after,
            "loopchat_cluster_posts_total",
        )
    } else {
        delivered / members as f64
    };
    let (evalsha_calls, evalsha_usec) = stats.get("evalsha").copied().unwrap_or((0, 0));
    let (script_calls, script_usec) = stats
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "evalsha" | "config" | "info" | "ping"))
        .fold((0, 0), |(c, u), (_, (calls, usec))| (c + calls, u + usec));
    let nan_unless = |ok: bool, x: f64| if ok { x } else { f64::NAN };
    let linked = redis.is_some();
    let steal = match (before.steal, after.steal) {
        (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => (s1 - s0) as f64 / (t1 - t0) as f64,
        _ => f64::NAN,
    };
    let mut same = split.same_node_ns;
    let mut other = split.other_node_ns;
    let figures = Figures {
        rate: delivered / wall,
        msgs_per_s: posts / wall,
        per_cpu: delivered / servers_cpu,
        node_cpu: cpu[..n].iter().map(|c| c / wall).collect(),
        node_ns: (0..n)
            .map(|i| cpu[i] * 1e9 / split.delivered[i] as f64)
            .collect(),
        node_dps: (0..n)
            .map(|i| match (before.sleeps[i], after.sleeps[i]) {
                (Some(a), Some(b)) if b > a => split.delivered[i] as f64 / (b - a) as f64,
                _ => f64::NAN,
            })
            .collect(),
        redis_cpu: redis_cpu / wall,
        client_cpu: client_cpu / wall,
        redis_us_per_msg: redis_cpu * 1e6 / posts,
        evalsha_us: nan_unless(linked, evalsha_usec as f64 / evalsha_calls as f64),
        evalsha_per_msg: nan_unless(linked, evalsha_calls as f64 / posts),
        calls_per_evalsha: nan_unless(linked, script_calls as f64 / evalsha_calls as f64),
        nested_us: nan_unless(linked, script_usec as f64 / evalsha_calls as f64),
        msgs_per_write: nan_unless(
            linked,
            delta(
                &metrics_before,
                &metrics_after,
                "loopchat_cluster_posts_total",
            ) / delta(
                &metrics_before,
                &metrics_after,
                "loopchat_cluster_writes_total",
            ),
        ),
        events_per_msg: nan_unless(
            linked,
            delta(
                &metrics_before,
                &metrics_after,
                "loopchat_cluster_events_received_total",
            ) / posts
                / n as f64,
        ),
        p50_same: percentile(&mut same, 0.50),
        p99_same: percentile(&mut same, 0.99),
        p50_other: percentile(&mut other, 0.50),
        p99_other: percentile(&mut other, 0.99),
        wait_nodes: wait[..n].iter().copied().fold(f64::NAN, f64::max),
        wait_redis: nan_unless(linked, wait[n]),
        wait_client: wait[pids.len() - 1],
        steal,
    };

    let mut anomalies = Vec::new();
    for name in &COUNTERS[4..] {
        let d = delta(&metrics_before, &metrics_after, name);
        if d > 0.0 {
            anomalies.push(format!("{name} +{d}"));
        }
    }
    for (i, m) in metrics_after.iter().enumerate() {
        if linked && m.get("loopchat_cluster_link_up") != Some(&1.0) {
            anomalies.push(format!("node {i}: link down at the end of the window"));
        }
    }
    let mut top_commands: Vec<(String, u64, u64)> = stats
        .into_iter()
        .map(|(name, (calls, usec))| (name, calls, usec))
        .collect();
    top_commands.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)));
    top_commands.truncate(12);
    let mut notes = Vec::new();
    if client.notices_measured > 0 {
        notes.push(format!(
            "{} notices (not messages) received while measuring",
            client.notices_measured
        ));
    }
    if client.rate_limited > 0 {
        notes.push(format!("{} rate_limited notice(s)", client.rate_limited));
    }
    let result = RoundResult {
        figures,
        errors: client.checks.errors.clone(),
        order: client.order_check(),
        anomalies,
        top_commands,
        note: notes.join("; "),
    };
    drop(client);
    settle(&pids[..pids.len() - 1]);
    Ok(result)
}
