//! The cluster workloads (`--filter cluster/`, or `--cluster` with the rest): chat
//! broadcast through loopchat's Redis cluster (`--redis`), one Redis and 1 or 2
//! nodes, against one loopchat without Redis in the same room shape.
//!
//! For each room shape (members, senders, message size) the bench starts its own
//! `redis-server` (a free loopback port, a temp dir, no persistence; killed by PID
//! at the end), a loopchat without Redis (the single server, "no Redis"), one node
//! for `cluster/n1/...` and two for `cluster/n2/...`, all with `--redis`. Rounds
//! run round-robin over the setups (single, n1, n2, single, ...), each in a fresh
//! room whose members are spread round-robin over the setup's servers (member `i`
//! on node `i % N`): the senders are members 0.., so one sender is on node 0 and
//! ten are spread five and five.
//!
//! Every setup of a shape gets the same closed-loop window: 1 sender keeps up to 64
//! messages in flight, 10 senders up to 8 each (a message leaves the window when the
//! sender's own copy is back). The `chat/...` workloads keep 8 per sender and 16 in
//! all, which would cap a node at 8 messages per write to Redis (at most the
//! window in flight), so the single server is re-measured
//! here with the cluster's window rather than taken from them.
//!
//! Nodes run with `--presence-ttl 300s`: a presence refresh (one script per 500
//! of a node's members, every third of the TTL) is a cost per member and 10 s at
//! the default, not per message, and at 300 s none falls inside a measured window.
//!
//! Pinning (unless `--no-pin`): node `i` on CPU `i`, the single server on CPU 0;
//! Redis floats over every CPU; the client stays on CPU 1 except with two nodes,
//! where it floats too. Two nodes, Redis and the client on 2 CPUs are more than
//! the machine has: the output says so, and the run-queue waits show how much.
//!
//! Figures per round ([`measure`]), medians over rounds and the targets
//! ([`summary`]): deliveries per second of summed server CPU (nodes + Redis), each
//! node's CPU per delivery against the single server's, Redis CPU per chat message
//! (from /proc, and Redis's own `INFO commandstats` for EVALSHA), commands per
//! write to Redis (from the nodes' `/metrics`), deliveries per sleep of each
//! server's loop, latency p50/p99 for members on the sender's node and on the
//! other node, and the checks: nothing lost, reordered, duplicated (a duplicate
//! counts as "reordered": older than the message expected) or corrupt, every
//! member's sequence the same (`client::split`), no cluster fault counter moving.

mod measure;
mod procs;
mod summary;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::options::Options;
use crate::sys::pin_this_process;
use measure::{run_round, RoundOutcome};
use procs::{find_program, Node, Redis};
pub use summary::ClusterReport;

/// The client's CPU when it does not float (as in `run.rs`).
const CLIENT_CPU: u32 = 1;

/// A room shape: members, senders, message size, and the window each sender keeps.
#[derive(Clone, Debug)]
pub struct Shape {
    pub members: usize,
    pub senders: usize,
    pub size: usize,
    pub size_name: &'static str,
    /// Messages in flight per sender (its own copy not yet back).
    pub window: u32,
}

impl Shape {
    /// `r100/s10/32B`.
    fn tail(&self) -> String {
        format!("r{}/s{}/{}", self.members, self.senders, self.size_name)
    }
}

/// What serves the room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// One loopchat without Redis: what a node is compared with.
    Single,
    /// This many loopchat nodes over one Redis.
    Nodes(usize),
}

impl Setup {
    /// Whether it goes through Redis.
    pub fn linked(self) -> bool {
        matches!(self, Setup::Nodes(_))
    }

    fn servers(self) -> usize {
        match self {
            Setup::Single => 1,
            Setup::Nodes(n) => n,
        }
    }

    /// Its name for `shape`: `cluster/n2/r100/s10/32B`, or the single server's
    /// `chat/r100/s10/32B` (no Redis).
    pub fn name(self, shape: &Shape) -> String {
        match self {
            Setup::Single => format!("chat/{} (no Redis)", shape.tail()),
            Setup::Nodes(n) => format!("cluster/n{n}/{}", shape.tail()),
        }
    }
}

/// A shape and the setups it runs on (the single server first, always).
#[derive(Clone, Debug)]
pub struct Group {
    pub shape: Shape,
    pub setups: Vec<Setup>,
}

/// Every cluster workload's shape.
fn shapes() -> Vec<Shape> {
    let mut v = Vec::new();
    for (size, size_name) in [(32, "32B"), (1024, "1KiB")] {
        v.push(Shape {
            members: 100,
            senders: 10,
            size,
            size_name,
            window: 8,
        });
        v.push(Shape {
            members: 1000,
            senders: 1,
            size,
            size_name,
            window: 64,
        });
    }
    v
}

/// The cluster workloads this run asked for: none unless `--cluster` is given or
/// a filter names `cluster`; then those whose name contains a filter (all if there
/// is no filter, or the filter is about clusters as a whole). None with `--url`.
pub fn select(options: &Options) -> Vec<Group> {
    let named = options.filters.iter().any(|f| f.contains("cluster"));
    if options.url.is_some() || !(options.cluster || named) {
        return Vec::new();
    }
    let wanted = |name: &str| {
        options.filters.is_empty()
            || options
                .filters
                .iter()
                .any(|f| name.contains(f.as_str()) || f == "cluster" || f == "cluster/")
    };
    shapes()
        .into_iter()
        .filter_map(|shape| {
            let setups: Vec<Setup> = [Setup::Nodes(1), Setup::Nodes(2)]
                .into_iter()
                .filter(|s| wanted(&s.name(&shape)))
                .collect();
            if setups.is_empty() {
                return None;
            }
            Some(Group {
                setups: [vec![Setup::Single], setups].concat(),
                shape,
            })
        })
        .collect()
}

/// Runs the selected groups, printing each one's table and targets; the report
/// prints the cluster summary at the end of the run.
pub fn run_all(groups: &[Group], options: &Options, pin: bool, t0: Instant) -> ClusterReport {
    let mut report = ClusterReport::default();
    if groups.is_empty() {
        return report;
    }
    println!();
    println!("== cluster workloads: chat over one Redis, 1 and 2 loopchat nodes");
    let Some(redis_bin) = find_program(&options.redis_server) else {
        println!(
            "   cannot run them: {} not found (apt-get install redis-server, or \
             --redis-server PATH)",
            options.redis_server.display()
        );
        report.fail();
        return report;
    };
    let (cpu_list, ncpu) = online_cpus();
    println!(
        "   redis-server: {} ({}); {ncpu} CPUs online ({cpu_list})",
        redis_bin.display(),
        redis_version(&redis_bin)
    );
    if pin {
        println!(
            "   pinning: node i on CPU i (the single server on CPU 0); Redis floats over \
             all CPUs; the client on CPU {CLIENT_CPU}, floating with 2 nodes"
        );
    } else {
        println!("   pinning: off");
    }
    if ncpu < 4 {
        println!(
            "   note: with 2 nodes, Redis and the client share {ncpu} CPUs, more busy \
             processes than CPUs (oversubscribed): throughput and latency are cut by \
             the run-queue waits shown; the per-CPU-second figures hold"
        );
    }
    for group in groups {
        let outcomes = run_group(group, options, pin, t0, &redis_bin);
        report.add_group(group, &outcomes);
    }
    report
}

/// The processes of one group: the single server and each setup's nodes, then
/// Redis (fields drop in order: the nodes go before Redis, so that none of them
/// sees its link cut and logs it).
struct Running {
    servers: Vec<(Setup, Vec<Node>)>,
    redis: Redis,
}

fn start_group(
    group: &Group,
    options: &Options,
    pin: bool,
    redis_bin: &Path,
) -> Result<Running, String> {
    let (all_cpus, ncpu) = online_cpus();
    let redis = Redis::start(redis_bin, pin.then_some(all_cpus.as_str()))?;
    let url = redis.url();
    let mut servers = Vec::new();
    for &setup in &group.setups {
        let mut nodes = Vec::new();
        for i in 0..setup.servers() {
            let cpu = pin.then_some((i % ncpu) as u32);
            let linked = setup.linked().then_some(url.as_str());
            nodes.push(Node::start(options, linked, cpu)?);
        }
        servers.push((setup, nodes));
    }
    Ok(Running { servers, redis })
}

/// One group's rounds, round-robin over its setups; the outcomes by setup.
fn run_group(
    group: &Group,
    options: &Options,
    pin: bool,
    t0: Instant,
    redis_bin: &Path,
) -> Vec<(Setup, Vec<RoundOutcome>)> {
    let shape = &group.shape;
    println!();
    println!(
        "== cluster {}: {} members over the setup's servers (round-robin), {} sender(s), \
         {} B messages, {} in flight per sender",
        shape.tail(),
        shape.members,
        shape.senders,
        shape.size,
        shape.window
    );
    let mut outcomes: Vec<(Setup, Vec<RoundOutcome>)> =
        group.setups.iter().map(|&s| (s, Vec::new())).collect();
    let running = match start_group(group, options, pin, redis_bin) {
        Ok(r) => r,
        Err(e) => {
            println!("   cannot start: {e}");
            for (_, v) in &mut outcomes {
                v.push(Err(e.clone()));
            }
            return outcomes;
        }
    };
    let mut nonce = (std::process::id() as u16)
        .wrapping_mul(31)
        .wrapping_add(0x5000);
    for round in 0..options.rounds {
        for (setup, nodes) in &running.servers {
            nonce = nonce.wrapping_add(0x9e3);
            let float_client = pin && setup.servers() >= 2;
            if float_client {
                pin_this_process_to_all();
            }
            let outcome = run_round(
                shape,
                *setup,
                nodes,
                Some(&running.redis),
                options,
                t0,
                nonce,
            );
            if float_client {
                pin_this_process(CLIENT_CPU);
            }
            summary::print_round(round + 1, &setup.name(shape), &outcome, options.verbose);
            if let Some((_, v)) = outcomes.iter_mut().find(|(s, _)| s == setup) {
                v.push(outcome);
            }
        }
    }
    outcomes
}

/// The machine's online CPUs, as a `taskset` list ("0-1") and a count. Not
/// `available_parallelism`: that counts the CPUs this process may use, and the
/// bench pins itself to one.
fn online_cpus() -> (String, usize) {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let count = list
        .split(',')
        .filter_map(|range| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            Some(b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?)
        })
        .sum::<usize>();
    if count == 0 {
        return ("0".into(), 1);
    }
    (list, count)
}

/// Lets every thread of this process run on any online CPU again.
fn pin_this_process_to_all() {
    let _ = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &online_cpus().0,
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status();
}

/// `redis-server --version`'s "v=..." part.
fn redis_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.split_whitespace()
                .find(|w| w.starts_with("v="))
                .map(|w| w.trim_start_matches("v=").to_string())
        })
        .unwrap_or_else(|| "version unknown".into())
}
