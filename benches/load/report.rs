//! From rounds to what is printed: the medians over a workload's rounds, each
//! workload's table (and every round's line with `--verbose`), the checks against the
//! performance targets (see [`targets`]), and the closing summary in Markdown (every
//! server's figures, loopchat's ratios to the raw limit and to tokio-tungstenite, the
//! targets).

mod bigroom;
mod targets;

pub use bigroom::print_bigroom_round;

use std::collections::HashMap;
use std::time::Instant;

use crate::checks::ErrorCounts;
use crate::round::{Figures, RoundOutcome, RoundResult};
use crate::servers::ServerKind;
use crate::sys::loadavg;
use crate::workloads::{Workload, WorkloadKind};

/// A workload's rounds on one server, summed up.
#[derive(Clone, Debug, Default)]
pub struct Aggregate {
    /// The median of each figure over the successful rounds.
    pub median: Figures,
    pub per_cpu_min: f64,
    pub per_cpu_max: f64,
    /// The last successful round's note.
    pub note: String,
    pub errors: ErrorCounts,
    /// Successful rounds.
    pub rounds: usize,
    pub failures: Vec<String>,
}

/// The median, NaNs left out (NaN if nothing is left).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn aggregate(outcomes: &[RoundOutcome]) -> Aggregate {
    let ok: Vec<&RoundResult> = outcomes.iter().filter_map(|r| r.as_ref().ok()).collect();
    let m = |g: fn(&Figures) -> f64| median(ok.iter().map(|r| g(&r.figures)).collect());
    let mut errors = ErrorCounts::default();
    for r in &ok {
        errors.merge(&r.errors);
    }
    let per_cpu = ok.iter().map(|r| r.figures.per_cpu);
    Aggregate {
        median: Figures {
            rate: m(|f| f.rate),
            per_cpu: m(|f| f.per_cpu),
            server_cpu: m(|f| f.server_cpu),
            client_cpu: m(|f| f.client_cpu),
            server_wait: m(|f| f.server_wait),
            client_wait: m(|f| f.client_wait),
            steal: m(|f| f.steal),
            p50_us: m(|f| f.p50_us),
            p99_us: m(|f| f.p99_us),
            mem_kb: m(|f| f.mem_kb),
        },
        per_cpu_min: per_cpu.clone().fold(f64::NAN, f64::min),
        per_cpu_max: per_cpu.fold(f64::NAN, f64::max),
        note: ok.last().map(|r| r.note.clone()).unwrap_or_default(),
        errors,
        rounds: ok.len(),
        failures: outcomes
            .iter()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect(),
    }
}

/// A whole number with thousands separators ("-" for NaN).
pub fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        return "-".into();
    }
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && ch != '-' {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

pub fn fmt_pct(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{:.0}%", x * 100.0)
    }
}

/// Run-queue wait of server / client as % of wall time (how much other processes
/// delayed them), then the machine's steal time (how much the hypervisor did):
/// noise indicators, "0%/0% 0%" on a quiet machine.
fn fmt_wait(f: &Figures) -> String {
    let (s, c, steal) = (f.server_wait, f.client_wait, f.steal);
    format!("{}/{} {}", fmt_pct(s), fmt_pct(c), fmt_pct(steal))
}

pub fn fmt_us(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else if x >= 10_000.0 {
        format!("{:.1} ms", x / 1000.0)
    } else {
        format!("{:.0} us", x)
    }
}

/// The figure columns of a table line, under `print_table_header`'s headings.
fn figure_columns(f: &Figures) -> String {
    format!(
        "{:>12} {:>14} {:>8} {:>8} {:>9} {:>9} {:>13}",
        fmt_num(f.rate),
        fmt_num(f.per_cpu),
        fmt_pct(f.server_cpu),
        fmt_pct(f.client_cpu),
        fmt_us(f.p50_us),
        fmt_us(f.p99_us),
        fmt_wait(f),
    )
}

/// Prints round `round`'s outcome on a `kind` server: a failure always, figures if
/// `show` (`--verbose`, or a latency workload).
pub fn print_round(round: usize, kind: ServerKind, outcome: &RoundOutcome, show: bool) {
    match outcome {
        Err(e) => println!("   round {round} {}: FAILED: {e}", kind.name()),
        Ok(r) if show => println!(
            "   round {round} {:<18} {}  {}{}",
            kind.name(),
            figure_columns(&r.figures),
            r.errors.summary(),
            if r.figures.mem_kb > 0.0 {
                format!(" mem {:.0}", r.figures.mem_kb)
            } else {
                String::new()
            }
        ),
        Ok(_) => {}
    }
}

/// A figure checked against its target.
struct TargetCheck {
    what: String,
    value: String,
    target: String,
    met: bool,
}

/// What a run has printed so far that the summary repeats, and whether all went well.
pub struct Report {
    table: Vec<String>,
    /// loopchat's messages per server-CPU-second and its ratios, a line per workload.
    ratios: Vec<String>,
    checks: Vec<TargetCheck>,
    /// The big room's table, a line per round.
    bigroom: Vec<String>,
    all_ok: bool,
}

impl Default for Report {
    fn default() -> Self {
        Report {
            table: Vec::new(),
            ratios: Vec::new(),
            checks: Vec::new(),
            bigroom: Vec::new(),
            all_ok: true,
        }
    }
}

/// A ratio as "1.23x" ("-" if there is none).
fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r.is_finite() => format!("{r:.2}x"),
        _ => "-".into(),
    }
}

impl Report {
    /// Prints a workload's table (one line per server in `kinds`, from `outcomes`),
    /// its notes and its target checks. `external`: the server is `--url`'s.
    pub fn add_workload(
        &mut self,
        workload: &Workload,
        kinds: &[ServerKind],
        outcomes: &HashMap<ServerKind, Vec<RoundOutcome>>,
        external: bool,
    ) {
        let aggregates: HashMap<ServerKind, Aggregate> =
            outcomes.iter().map(|(k, v)| (*k, aggregate(v))).collect();
        print_table_header(workload.kind);
        for &kind in kinds {
            if let Some(a) = aggregates.get(&kind) {
                self.add_row(workload, kind, a);
            }
        }
        if !workload.kind.is_memory() {
            for &kind in kinds {
                match aggregates.get(&kind) {
                    Some(a) if !a.note.is_empty() => {
                        println!("   note ({}): {}", kind.name(), a.note)
                    }
                    _ => {}
                }
            }
        }
        self.check_targets(workload, &aggregates, external);
        if !external && !workload.kind.is_memory() {
            self.add_ratios(workload, &aggregates);
        }
    }

    /// Keeps loopchat's figure per server-CPU-second and its ratios to the raw limit
    /// and to tokio-tungstenite for the summary.
    fn add_ratios(&mut self, workload: &Workload, aggregates: &HashMap<ServerKind, Aggregate>) {
        let Some(loopchat) = aggregates
            .get(&ServerKind::Loopchat)
            .filter(|a| a.rounds > 0)
        else {
            return;
        };
        let raw = if workload.kind.is_room() {
            ServerKind::RawFanout
        } else {
            ServerKind::RawEcho
        };
        let tokio = if workload.kind == WorkloadKind::Relay {
            "(no relay endpoint)".to_string()
        } else {
            fmt_ratio(targets::per_cpu_ratio(aggregates, ServerKind::Tokio))
        };
        self.ratios.push(format!(
            "| {} | {} | {} | {} |",
            workload.name,
            fmt_num(loopchat.median.per_cpu),
            fmt_ratio(targets::per_cpu_ratio(aggregates, raw)),
            tokio,
        ));
    }

    /// Prints server `kind`'s line and its error notes.
    fn add_row(&mut self, workload: &Workload, kind: ServerKind, a: &Aggregate) {
        if a.rounds == 0 {
            println!("   {:<18} no successful round", kind.name());
            self.all_ok = false;
            return;
        }
        if workload.kind.is_memory() {
            print_memory_row(workload.kind, kind, a);
        } else {
            self.add_traffic_row(workload, kind, a);
        }
        if a.errors.total() > 0 {
            self.all_ok = false;
            for n in &a.errors.notes {
                println!("      ! {n}");
            }
        }
        if !a.failures.is_empty() {
            self.all_ok = false;
        }
    }

    /// Prints a throughput line, and keeps it for the summary table.
    fn add_traffic_row(&mut self, workload: &Workload, kind: ServerKind, a: &Aggregate) {
        let f = &a.median;
        println!(
            "   {:<18} {}  {}",
            kind.name(),
            figure_columns(f),
            a.errors.summary()
        );
        let spread = if a.rounds > 1 {
            format!("{}-{}", fmt_num(a.per_cpu_min), fmt_num(a.per_cpu_max))
        } else {
            "-".into()
        };
        self.table.push(format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            workload.name,
            kind.name(),
            fmt_num(f.rate),
            fmt_num(f.per_cpu),
            spread,
            fmt_pct(f.server_cpu),
            fmt_pct(f.client_cpu),
            fmt_us(f.p50_us),
            fmt_us(f.p99_us),
            fmt_wait(f),
            a.errors.summary()
        ));
        if f.client_cpu > 0.93 {
            println!(
                "   {:<18} (client near 100% CPU: this server may be client-bound here)",
                ""
            );
        }
    }

    /// Prints the run's summary: the throughput table and the targets in Markdown.
    /// Returns whether every round ran without error.
    pub fn print_summary(&self, started: Instant) -> bool {
        println!();
        println!(
            "== summary ({:.0} s; load average now {})",
            started.elapsed().as_secs_f64(),
            loadavg()
        );
        if !self.table.is_empty() {
            println!();
            println!("| workload | server | msgs/s | msgs per server-CPU-s | (min-max over rounds) | server CPU | client CPU | p50 | p99 | run-queue wait srv/cli, steal | errors |");
            println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
            for l in &self.table {
                println!("{l}");
            }
        }
        if !self.ratios.is_empty() {
            println!();
            println!("| workload | loopchat msgs per server-CPU-s | loopchat / raw limit | loopchat / tokio |");
            println!("|---|---:|---:|---:|");
            for l in &self.ratios {
                println!("{l}");
            }
        }
        if !self.bigroom.is_empty() {
            println!();
            for l in &self.bigroom {
                println!("{l}");
            }
        }
        if !self.checks.is_empty() {
            println!();
            println!("| target | measured | goal | |");
            println!("|---|---:|---|---|");
            for c in &self.checks {
                let met = if c.met { "met" } else { "NOT met" };
                println!("| {} | {} | {} | {} |", c.what, c.value, c.target, met);
            }
        }
        if !self.all_ok {
            println!("\nsome rounds failed or saw errors (see above)");
        }
        self.all_ok
    }
}

fn print_table_header(kind: WorkloadKind) {
    if kind.is_memory() {
        let figure = if kind == WorkloadKind::MemEcho {
            "VmHWM"
        } else {
            "bytes/conn"
        };
        println!("   {:<18} {:>14}  detail", "server", figure);
    } else {
        println!(
            "   {:<18} {:>12} {:>14} {:>8} {:>8} {:>9} {:>9} {:>13}  errors",
            "server",
            "msgs/s",
            "msgs/srv-CPU-s",
            "srv CPU",
            "cli CPU",
            "p50",
            "p99",
            "wait s/c steal",
        );
    }
}

fn print_memory_row(workload: WorkloadKind, kind: ServerKind, a: &Aggregate) {
    let value = if workload == WorkloadKind::MemEcho {
        format!("{} KiB", fmt_num(a.median.mem_kb))
    } else {
        format!("{} B", fmt_num(a.median.mem_kb))
    };
    let errors = if a.errors.total() > 0 {
        format!(" errors: {}", a.errors.summary())
    } else {
        String::new()
    };
    println!("   {:<18} {:>14}  {}{}", kind.name(), value, a.note, errors);
}
