//! The cluster workloads' figures: medians over rounds, each group's table as it
//! ends (with Redis's busiest commands, the evidence for its CPU per message), the
//! targets with what limits each, and the closing summary in Markdown.
//!
//! Targets, for each `cluster/nN/...` workload: Redis CPU per chat message under
//! 10 µs; more than 8 messages per write to Redis (the issue says "commands
//! per write"; a node sends a room's messages of one iteration as one script
//! call, so messages per write is what measures the batching); each node's CPU per delivery
//! within 1.3x of the single server's (no Redis, same shape and window); nothing
//! lost, reordered, duplicated or corrupt, one sequence for every member, and no
//! cluster fault counter moving. Each check says what limits its figure, from what
//! the round measured: Redis's own split of an EVALSHA (the commands it runs, the
//! Lua call around them), the window that bounds a write's messages, and how much
//! work a server's loop found per wake-up.

use std::fmt::Write as _;
use std::time::Instant;

use super::measure::{Figures, RoundOutcome, RoundResult};
use super::{Group, Setup, Shape};
use crate::checks::ErrorCounts;
use crate::report::{fmt_num, fmt_pct, fmt_us, median};
use crate::sys::loadavg;

/// Redis CPU per chat message must stay under this (µs).
const REDIS_US_PER_MSG: f64 = 10.0;
/// Commands per write to Redis must be above this.
const MSGS_PER_WRITE: f64 = 8.0;
/// Each node's CPU per delivery, over the single server's, at most this.
const NODE_CPU_RATIO: f64 = 1.3;

/// A setup's rounds, summed up.
struct Aggregate {
    median: Figures,
    errors: ErrorCounts,
    /// Rounds whose members did not all see one sequence, and how many differed.
    order_rounds: usize,
    order_differing: usize,
    anomalies: Vec<String>,
    rounds: usize,
    failures: Vec<String>,
    /// The last round's busiest Redis commands and note.
    last: Option<RoundResult>,
}

fn aggregate(outcomes: &[RoundOutcome]) -> Aggregate {
    let ok: Vec<&RoundResult> = outcomes.iter().filter_map(|r| r.as_ref().ok()).collect();
    let m = |g: &dyn Fn(&Figures) -> f64| median(ok.iter().map(|r| g(&r.figures)).collect());
    let servers = ok.first().map_or(0, |r| r.figures.node_ns.len());
    let mut errors = ErrorCounts::default();
    let mut anomalies = Vec::new();
    let (mut order_rounds, mut order_differing) = (0, 0);
    for r in &ok {
        errors.merge(&r.errors);
        anomalies.extend(r.anomalies.iter().cloned());
        if r.order.differing > 0 {
            order_rounds += 1;
            order_differing += r.order.differing;
        }
    }
    let median = Figures {
        rate: m(&|f| f.rate),
        msgs_per_s: m(&|f| f.msgs_per_s),
        per_cpu: m(&|f| f.per_cpu),
        node_cpu: (0..servers).map(|i| m(&|f| f.node_cpu[i])).collect(),
        node_ns: (0..servers).map(|i| m(&|f| f.node_ns[i])).collect(),
        node_dps: (0..servers).map(|i| m(&|f| f.node_dps[i])).collect(),
        redis_cpu: m(&|f| f.redis_cpu),
        client_cpu: m(&|f| f.client_cpu),
        redis_us_per_msg: m(&|f| f.redis_us_per_msg),
        evalsha_us: m(&|f| f.evalsha_us),
        evalsha_per_msg: m(&|f| f.evalsha_per_msg),
        calls_per_evalsha: m(&|f| f.calls_per_evalsha),
        nested_us: m(&|f| f.nested_us),
        msgs_per_write: m(&|f| f.msgs_per_write),
        events_per_msg: m(&|f| f.events_per_msg),
        p50_same: m(&|f| f.p50_same),
        p99_same: m(&|f| f.p99_same),
        p50_other: m(&|f| f.p50_other),
        p99_other: m(&|f| f.p99_other),
        wait_nodes: m(&|f| f.wait_nodes),
        wait_redis: m(&|f| f.wait_redis),
        wait_client: m(&|f| f.wait_client),
        steal: m(&|f| f.steal),
    };
    Aggregate {
        median,
        errors,
        order_rounds,
        order_differing,
        anomalies,
        rounds: ok.len(),
        failures: outcomes
            .iter()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect(),
        last: ok.last().map(|r| (*r).clone()),
    }
}

/// "1.23" or "-".
fn fmt_f(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "-".into()
    }
}

/// "p50 / p99" in µs or ms, "-" where there were none.
fn fmt_lat(p50: f64, p99: f64) -> String {
    if p50.is_nan() {
        "-".into()
    } else {
        format!("{} / {}", fmt_us(p50), fmt_us(p99))
    }
}

/// Each server's CPU per delivery in ns, with its ratio to `single`'s.
fn fmt_node_ns(f: &Figures, single: f64) -> String {
    f.node_ns
        .iter()
        .map(|&ns| {
            if single.is_finite() {
                format!("{ns:.0} ({:.2}x)", ns / single)
            } else {
                format!("{ns:.0}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each server's deliveries per sleep of its loop.
fn fmt_dps(f: &Figures) -> String {
    let v: Vec<String> = f.node_dps.iter().map(|&d| fmt_num(d)).collect();
    v.join(", ")
}

/// CPU / wall of the nodes, Redis and the client.
fn fmt_cpus(f: &Figures) -> String {
    let nodes: Vec<String> = f.node_cpu.iter().map(|&c| fmt_pct(c)).collect();
    format!(
        "{} / {} / {}",
        nodes.join("+"),
        fmt_pct(f.redis_cpu),
        fmt_pct(f.client_cpu)
    )
}

/// Run-queue waits (the most any node waited, Redis, the client) and steal.
fn fmt_waits(f: &Figures) -> String {
    format!(
        "{}/{}/{} {}",
        fmt_pct(f.wait_nodes),
        fmt_pct(f.wait_redis),
        fmt_pct(f.wait_client),
        fmt_pct(f.steal)
    )
}

/// The errors, the order check and the fault counters, in one cell.
fn fmt_integrity(a: &Aggregate) -> String {
    let mut s = a.errors.summary();
    if a.order_rounds > 0 {
        let _ = write!(
            s,
            "; order differs for {} member(s) in {} round(s)",
            a.order_differing, a.order_rounds
        );
    } else {
        s.push_str(", one order");
    }
    if !a.anomalies.is_empty() {
        let _ = write!(s, "; {}", a.anomalies.join(", "));
    }
    s
}

/// Prints round `round`'s outcome: a failure always, figures if `verbose`.
pub fn print_round(round: usize, name: &str, outcome: &RoundOutcome, verbose: bool) {
    match outcome {
        Err(e) => println!("   round {round} {name}: FAILED: {e}"),
        Ok(r) if verbose => {
            let f = &r.figures;
            println!(
                "   round {round} {name}: {} deliveries/s, {} per CPU-s, node ns/delivery {}, \
                 Redis {} us/msg, {} msgs/write, p50/p99 same {} other {}, CPU {}, waits {}, {}",
                fmt_num(f.rate),
                fmt_num(f.per_cpu),
                fmt_node_ns(f, f64::NAN),
                fmt_f(f.redis_us_per_msg, 2),
                fmt_f(f.msgs_per_write, 1),
                fmt_lat(f.p50_same, f.p99_same),
                fmt_lat(f.p50_other, f.p99_other),
                fmt_cpus(f),
                fmt_waits(f),
                r.errors.summary(),
            );
        }
        Ok(_) => {}
    }
}

/// A figure checked against its target, and what limits it.
struct TargetCheck {
    what: String,
    value: String,
    goal: String,
    met: bool,
    limit: String,
}

/// What the cluster workloads printed that the summary repeats.
pub struct ClusterReport {
    figures: Vec<String>,
    checks: Vec<TargetCheck>,
    all_ok: bool,
}

impl Default for ClusterReport {
    fn default() -> Self {
        ClusterReport {
            figures: Vec::new(),
            checks: Vec::new(),
            all_ok: true,
        }
    }
}

impl ClusterReport {
    /// Marks the run as failed (the workloads could not run).
    pub fn fail(&mut self) {
        self.all_ok = false;
    }

    /// Prints a group's table, its evidence and its targets; keeps them for the
    /// summary.
    pub fn add_group(&mut self, group: &Group, outcomes: &[(Setup, Vec<RoundOutcome>)]) {
        let shape = &group.shape;
        let aggregates: Vec<(Setup, Aggregate)> =
            outcomes.iter().map(|(s, v)| (*s, aggregate(v))).collect();
        let single = aggregates
            .iter()
            .find(|(s, a)| *s == Setup::Single && a.rounds > 0)
            .map(|(_, a)| a.median.clone())
            .unwrap_or_default();
        let single_ns = single.node_ns.first().copied().unwrap_or(f64::NAN);
        for (setup, a) in &aggregates {
            let name = setup.name(shape);
            if a.rounds == 0 {
                println!("   {name}: no successful round");
                self.all_ok = false;
                continue;
            }
            if !a.failures.is_empty() || a.errors.total() > 0 || a.order_rounds > 0 {
                self.all_ok = false;
            }
            if !a.anomalies.is_empty() {
                self.all_ok = false;
            }
            self.add_row(&name, *setup, a, single_ns);
            if setup.linked() {
                self.check_targets(&name, shape, *setup, a, &single);
            }
        }
    }

    /// Prints a setup's figures (three lines) and keeps its summary row.
    fn add_row(&mut self, name: &str, setup: Setup, a: &Aggregate, single_ns: f64) {
        let f = &a.median;
        let ns = fmt_node_ns(f, if setup.linked() { single_ns } else { f64::NAN });
        println!(
            "   {name}: {} deliveries/s ({} msgs/s), {} deliveries per CPU-s of {}, \
             CPU per delivery by server (ns): {ns}; deliveries per sleep of the loop: {}",
            fmt_num(f.rate),
            fmt_num(f.msgs_per_s),
            fmt_num(f.per_cpu),
            if setup.linked() {
                "nodes + Redis"
            } else {
                "the server"
            },
            fmt_dps(f),
        );
        if setup.linked() {
            println!(
                "      Redis {} us CPU per msg; EVALSHA {} per msg, {} us each by Redis's clock, \
                 of which its {} commands {} us; {} messages per write; {} events per node \
                 per msg",
                fmt_f(f.redis_us_per_msg, 2),
                fmt_f(f.evalsha_per_msg, 2),
                fmt_f(f.evalsha_us, 2),
                fmt_f(f.calls_per_evalsha, 1),
                fmt_f(f.nested_us, 2),
                fmt_f(f.msgs_per_write, 1),
                fmt_f(f.events_per_msg, 2),
            );
        }
        println!(
            "      p50/p99 sender's node {}, other node {}; CPU nodes/Redis/client {}; \
             run-queue wait nodes/Redis/client, steal {}; {}",
            fmt_lat(f.p50_same, f.p99_same),
            fmt_lat(f.p50_other, f.p99_other),
            fmt_cpus(f),
            fmt_waits(f),
            fmt_integrity(a),
        );
        for n in a.errors.notes.iter().chain(&a.failures) {
            println!("      ! {n}");
        }
        if let Some(last) = &a.last {
            if !last.note.is_empty() {
                println!("      note: {}", last.note);
            }
            if setup.linked() && !last.top_commands.is_empty() {
                let top: Vec<String> = last
                    .top_commands
                    .iter()
                    .take(8)
                    .map(|(c, calls, usec)| {
                        format!(
                            "{c} {calls} x {:.2} us",
                            *usec as f64 / (*calls).max(1) as f64
                        )
                    })
                    .collect();
                println!(
                    "      Redis INFO commandstats in the last window: {}",
                    top.join(", ")
                );
            }
        }
        self.figures.push(format!(
            "| {name} | {} | {} | {} | {ns} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt_num(f.rate),
            fmt_num(f.msgs_per_s),
            fmt_num(f.per_cpu),
            fmt_dps(f),
            fmt_f(f.redis_us_per_msg, 2),
            if f.evalsha_us.is_finite() {
                format!("{:.2} ({:.2})", f.evalsha_us, f.nested_us)
            } else {
                "-".into()
            },
            fmt_f(f.msgs_per_write, 1),
            fmt_lat(f.p50_same, f.p99_same),
            fmt_lat(f.p50_other, f.p99_other),
            fmt_cpus(f),
            fmt_waits(f),
            fmt_integrity(a),
        ));
    }

    /// Prints and keeps a check.
    fn check(&mut self, c: TargetCheck) {
        println!(
            "   target: {} = {} ({}): {}; {}",
            c.what,
            c.value,
            c.goal,
            if c.met { "met" } else { "NOT met" },
            c.limit
        );
        self.checks.push(c);
    }

    fn check_targets(
        &mut self,
        name: &str,
        shape: &Shape,
        setup: Setup,
        a: &Aggregate,
        single: &Figures,
    ) {
        let f = &a.median;
        let single_ns = single.node_ns.first().copied().unwrap_or(f64::NAN);
        let Setup::Nodes(nodes) = setup else {
            return;
        };
        // Redis CPU per chat message, with Redis's own split of it.
        self.check(TargetCheck {
            what: format!("{name} Redis CPU per chat message"),
            value: format!("{} us", fmt_f(f.redis_us_per_msg, 2)),
            goal: format!("< {REDIS_US_PER_MSG} us"),
            met: f.redis_us_per_msg < REDIS_US_PER_MSG,
            limit: format!(
                "{} EVALSHA per msg (a room's messages of one loop iteration per call), {} us \
                 each by Redis's clock (wall time; Redis waited for a CPU {} of the time), of \
                 which the {} commands it runs {} us and the Lua call itself the rest",
                fmt_f(f.evalsha_per_msg, 3),
                fmt_f(f.evalsha_us, 2),
                fmt_pct(f.wait_redis),
                fmt_f(f.calls_per_evalsha, 1),
                fmt_f(f.nested_us, 2),
            ),
        });
        // Batching: messages posted per write, at most what the window lets a
        // node have in flight.
        let senders_on = |node: usize| (0..shape.senders).filter(|s| s % nodes == node).count();
        let busiest = (0..nodes).map(senders_on).max().unwrap_or(0);
        let in_flight = busiest as u32 * shape.window;
        self.check(TargetCheck {
            what: format!("{name} messages per write to Redis"),
            value: fmt_f(f.msgs_per_write, 1),
            goal: format!("> {MSGS_PER_WRITE}"),
            met: f.msgs_per_write > MSGS_PER_WRITE,
            limit: format!(
                "a write carries what the node read since its loop last turned (a room's \
                 messages in one EVALSHA): at most the {in_flight} messages the client keeps in flight \
                 on the busiest node ({busiest} sender(s) x {}), fewer the faster the loop \
                 turns (nodes at {} CPU)",
                shape.window,
                f.node_cpu
                    .iter()
                    .map(|&c| fmt_pct(c))
                    .collect::<Vec<_>>()
                    .join("+"),
            ),
        });
        // Each node's CPU per delivery against the single server's.
        let worst = f.node_ns.iter().copied().fold(f64::NAN, f64::max);
        let ratio = worst / single_ns;
        let per_node = shape.members as f64 / nodes as f64;
        self.check(TargetCheck {
            what: format!("{name} node CPU per delivery / single server without Redis"),
            value: format!("{}x (worst node)", fmt_f(ratio, 3)),
            goal: format!("<= {NODE_CPU_RATIO}x"),
            met: ratio <= NODE_CPU_RATIO,
            limit: format!(
                "{} ns vs {} ns per delivery, {:+.2} us per chat message on a node with \
                 {per_node:.0} members: the EVALSHA out, its reply and the event back, spread \
                 over those members' deliveries, and less work per wake-up ({} deliveries per \
                 sleep of a node's loop, {} on the single server; nodes at {} CPU, the single \
                 server at {})",
                fmt_f(worst, 0),
                fmt_f(single_ns, 0),
                (worst - single_ns) * per_node / 1000.0,
                fmt_dps(f),
                fmt_dps(single),
                f.node_cpu
                    .iter()
                    .map(|&c| fmt_pct(c))
                    .collect::<Vec<_>>()
                    .join("+"),
                single.node_cpu.first().map_or("-".into(), |&c| fmt_pct(c)),
            ),
        });
        let clean = a.errors.total() == 0
            && a.order_rounds == 0
            && a.anomalies.is_empty()
            && a.failures.is_empty();
        self.check(TargetCheck {
            what: format!("{name} nothing lost, reordered, duplicated; one order"),
            value: fmt_integrity(a),
            goal: "0, one order".into(),
            met: clean,
            limit: format!("{} round(s) checked", a.rounds),
        });
    }

    /// Prints the cluster summary in Markdown; true if every round ran clean.
    pub fn print_summary(&self, started: Instant) -> bool {
        if self.figures.is_empty() && self.checks.is_empty() {
            return self.all_ok;
        }
        println!();
        println!(
            "== cluster summary ({:.0} s since the start; load average now {})",
            started.elapsed().as_secs_f64(),
            loadavg()
        );
        println!();
        println!(
            "| workload | deliveries/s | msgs/s | deliveries per CPU-s (nodes + Redis) | \
             CPU per delivery by server, ns (x single) | deliveries per \
             sleep of a server's loop | Redis CPU per msg, us | EVALSHA by \
             Redis's clock, us (its commands) | messages per write | p50 / p99 sender's node | p50 / p99 other node \
             | CPU nodes / Redis / client | run-queue wait nodes/Redis/client, steal | \
             errors, order |"
        );
        println!("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|---|");
        for l in &self.figures {
            println!("{l}");
        }
        if !self.checks.is_empty() {
            println!();
            println!("| target | measured | goal | | what limits it |");
            println!("|---|---:|---|---|---|");
            for c in &self.checks {
                let met = if c.met { "met" } else { "NOT met" };
                println!(
                    "| {} | {} | {} | {met} | {} |",
                    c.what, c.value, c.goal, c.limit
                );
            }
        }
        if !self.all_ok {
            println!("\nsome cluster rounds failed or saw errors (see above)");
        }
        self.all_ok
    }
}
