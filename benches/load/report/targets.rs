//! The performance targets, checked after each workload: loopchat's messages per
//! server-CPU-second against the raw TCP limit and tokio-tungstenite, its p99 latency
//! at a fixed rate, its peak memory and its memory per idle connection (with `--url`,
//! the target server's latency and memory).

use std::collections::HashMap;

use super::{fmt_us, Aggregate, Report, TargetCheck};
use crate::servers::ServerKind;
use crate::workloads::{Workload, WorkloadKind};

type Aggregates = HashMap<ServerKind, Aggregate>;

/// Server `kind`'s aggregate, if it had a successful round.
fn successful(aggregates: &Aggregates, kind: ServerKind) -> Option<&Aggregate> {
    aggregates.get(&kind).filter(|a| a.rounds > 0)
}

/// loopchat's messages per server-CPU-second over server `other`'s.
pub(super) fn per_cpu_ratio(aggregates: &Aggregates, other: ServerKind) -> Option<f64> {
    let loopchat = successful(aggregates, ServerKind::Loopchat)?;
    Some(loopchat.median.per_cpu / successful(aggregates, other)?.median.per_cpu)
}

/// Relay has no target of its own: its ratio to the raw fan-out, which
/// gets the very same bytes, is printed for information.
fn relay_ratio(aggregates: &Aggregates) {
    if let Some(r) = per_cpu_ratio(aggregates, ServerKind::RawFanout) {
        println!(
            "   (loopchat /relay / raw TCP fan-out deliveries per server-CPU-s: {r:.3}x; \
             no target, the fan-out is the limit; tokio-tungstenite has no relay endpoint)"
        );
    }
}

impl Report {
    /// Prints and keeps the target checks of `workload`'s results; `external`: the
    /// server is `--url`'s, so there are no ratios and its own figures are checked.
    pub(super) fn check_targets(
        &mut self,
        workload: &Workload,
        aggregates: &Aggregates,
        external: bool,
    ) {
        // The server whose own figures (latency, memory) are checked.
        let own = if external {
            ServerKind::External
        } else {
            ServerKind::Loopchat
        };
        match workload.kind {
            WorkloadKind::Echo if !external => self.echo_targets(workload, aggregates),
            WorkloadKind::Chat if !external => self.chat_targets(workload, aggregates),
            WorkloadKind::Relay if !external => relay_ratio(aggregates),
            WorkloadKind::Latency => self.latency_targets(workload, aggregates, own),
            WorkloadKind::MemEcho | WorkloadKind::MemIdle => {
                self.memory_target(workload, aggregates, own)
            }
            _ => {}
        }
    }

    /// Prints a check and keeps it for the summary.
    pub(super) fn check(&mut self, what: String, value: String, target: String, met: bool) {
        let verdict = if met { "MET" } else { "NOT MET" };
        println!("   {what}: {value}  [target {target}: {verdict}]");
        self.checks.push(TargetCheck {
            what,
            value,
            target,
            met,
        });
    }

    /// Checks loopchat's throughput per server-CPU-second against `other`'s (named
    /// `label`): at least `goal` times as much.
    fn ratio_target(
        &mut self,
        workload: &Workload,
        aggregates: &Aggregates,
        (other, label): (ServerKind, &str),
        unit: &str,
        goal: f64,
    ) {
        if let Some(r) = per_cpu_ratio(aggregates, other) {
            self.check(
                format!(
                    "{} loopchat / {label}, {unit} per server-CPU-s",
                    workload.name
                ),
                format!("{r:.3}x"),
                format!(">= {goal}x"),
                r >= goal,
            );
        }
    }

    fn echo_targets(&mut self, workload: &Workload, aggregates: &Aggregates) {
        let raw = (ServerKind::RawEcho, "raw TCP echo");
        self.ratio_target(workload, aggregates, raw, "msgs", 0.9);
        let tokio = (ServerKind::Tokio, "tokio-tungstenite");
        self.ratio_target(workload, aggregates, tokio, "msgs", 2.0);
    }

    fn chat_targets(&mut self, workload: &Workload, aggregates: &Aggregates) {
        if let Some(r) = per_cpu_ratio(aggregates, ServerKind::RawFanout) {
            println!(
                "   (loopchat / raw TCP fan-out deliveries per server-CPU-s: {r:.3}x; \
                 no target, the fan-out is the limit)"
            );
        }
        let tokio = (ServerKind::Tokio, "tokio-tungstenite");
        self.ratio_target(workload, aggregates, tokio, "deliveries", 1.5);
    }

    fn latency_targets(&mut self, workload: &Workload, aggregates: &Aggregates, own: ServerKind) {
        if let Some(a) = successful(aggregates, own) {
            self.check(
                format!("{} {} p99 latency", workload.name, own.name()),
                fmt_us(a.median.p99_us),
                "< 5 ms".into(),
                a.median.p99_us < 5000.0,
            );
        }
        if let Some(a) = successful(aggregates, ServerKind::RawFanout) {
            println!(
                "   (raw TCP fan-out, the limit of one loop on this machine: p99 {})",
                fmt_us(a.median.p99_us)
            );
        }
        if let Some(r) = per_cpu_ratio(aggregates, ServerKind::Tokio) {
            println!("   (loopchat / tokio-tungstenite deliveries per server-CPU-s: {r:.3}x)");
        }
    }

    fn memory_target(&mut self, workload: &Workload, aggregates: &Aggregates, own: ServerKind) {
        let Some(a) = successful(aggregates, own) else {
            return;
        };
        let kb = a.median.mem_kb;
        if workload.kind == WorkloadKind::MemEcho {
            self.check(
                format!("{} {} peak RSS", workload.name, own.name()),
                format!("{:.1} MB", kb * 1024.0 / 1e6),
                "< 8 MB".into(),
                kb * 1024.0 < 8e6,
            );
        } else {
            self.check(
                format!("{} {} RSS per idle conn", workload.name, own.name()),
                format!("{:.0} B", kb),
                "< 4 KiB".into(),
                kb < 4096.0,
            );
        }
    }
}
