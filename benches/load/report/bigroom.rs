//! The big room's report: a line per round as it ends, then its table, and its three
//! targets: every member joined in under 10 s, a broadcast reaching every member in
//! order with nothing lost, misordered or corrupted, and the server's peak RSS under
//! 64 MB. A target is met only if it was met in every round.

use std::time::Duration;

use super::{fmt_num, Report};
use crate::bigroom::{BigRoomOutcome, BigRoomResult};
use crate::workloads::Workload;

const JOIN_TARGET: Duration = Duration::from_secs(10);
const PEAK_RSS_TARGET_BYTES: f64 = 64e6;

/// "7.12 s", "145 ms", or "-" for a phase that did not complete.
fn fmt_time(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) if d >= Duration::from_secs(1) => format!("{:.2} s", d.as_secs_f64()),
        Some(d) => format!("{:.0} ms", d.as_secs_f64() * 1e3),
    }
}

fn fmt_mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 * 1024.0 / 1e6)
}

/// "7.12 s (6.80-7.50 s)": the median and the range over the rounds, or what was not
/// reached.
fn fmt_spread(values: &[Option<Duration>]) -> String {
    if values.iter().any(Option::is_none) || values.is_empty() {
        let missing = values.iter().filter(|v| v.is_none()).count();
        return format!("not reached in {missing} of {} rounds", values.len());
    }
    let mut v: Vec<Duration> = values.iter().flatten().copied().collect();
    v.sort();
    let median = v[v.len() / 2];
    if v.len() == 1 {
        return fmt_time(Some(median));
    }
    let (lo, hi) = (v[0], v[v.len() - 1]);
    format!(
        "{} ({}-{})",
        fmt_time(Some(median)),
        fmt_time(Some(lo)),
        fmt_time(Some(hi))
    )
}

/// The table's heading, in Markdown.
const HEADING: &str = "| round | members welcomed | join | all told | 1 message to all | \
     2 more to all | members with all 3, in order | peak RSS | server CPU: join / total / departures \
     | clients CPU | load average before, after | errors |\n\
     |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|";

/// A round's row of the table.
fn row(round: usize, r: &BigRoomResult) -> String {
    format!(
        "| {round} | {} of {} | {} | {} | {} | {} | {} | {} | {:.2} / {:.2} / {:.2} s \
         (departures {}) | {:.2} s | {}, {} | {} |",
        fmt_num(r.welcomed as f64),
        fmt_num(r.members as f64),
        fmt_time(r.join),
        fmt_time(r.settle),
        fmt_time(r.broadcast),
        fmt_time(r.more),
        if r.sent == 0 {
            "-".into()
        } else {
            fmt_num(r.complete as f64)
        },
        fmt_mb(r.peak_rss_kb),
        r.cpu_join,
        r.cpu_total,
        r.cpu_departures,
        fmt_time(r.departures),
        r.client_cpu,
        r.load_before,
        r.load_after,
        r.errors.summary(),
    )
}

/// Prints round `round`'s outcome as it ends.
pub fn print_bigroom_round(round: usize, outcome: &BigRoomOutcome) {
    let r = match outcome {
        Err(e) => return println!("   round {round}: FAILED: {e}"),
        Ok(r) => r,
    };
    println!(
        "   round {round}: {} of {} welcomed in {} (server CPU {:.2} s), all told {} online at {}; \
         1 message to all in {}, 2 more in {}; {} members got all {} sent, in order",
        fmt_num(r.welcomed as f64),
        fmt_num(r.members as f64),
        fmt_time(r.join),
        r.cpu_join,
        fmt_num(r.members as f64),
        fmt_time(r.settle),
        fmt_time(r.broadcast),
        fmt_time(r.more),
        fmt_num(r.complete as f64),
        r.sent,
    );
    let per_second: Vec<String> = r
        .timeline
        .iter()
        .scan(0, |before, &n| {
            let joined = n - (*before).min(n);
            *before = n;
            Some(fmt_num(joined as f64))
        })
        .collect();
    let overflows = r.listen_overflows.map_or("?".into(), |n| fmt_num(n as f64));
    println!(
        "      join: {} connections in flight at most; welcomed in each whole second: {}; \
         connections dropped by a full listen queue meanwhile (whole machine): {overflows}",
        r.in_flight,
        if per_second.is_empty() {
            "-".into()
        } else {
            per_second.join(" ")
        },
    );
    println!(
        "      server: RSS {} KiB before, {} KiB with the room full ({:.0} B per member), \
         peak {} KiB; CPU {:.2} s join to broadcasts (run-queue wait {:.2} s), {:.2} s for \
         the departures ({}); clients CPU {:.2} s; errors: {}",
        fmt_num(r.rss_before_kb as f64),
        fmt_num(r.rss_full_kb as f64),
        r.rss_full_kb.saturating_sub(r.rss_before_kb) as f64 * 1024.0 / r.members as f64,
        fmt_num(r.peak_rss_kb as f64),
        r.cpu_total,
        r.server_wait,
        r.cpu_departures,
        fmt_time(r.departures),
        r.client_cpu,
        r.errors.summary(),
    );
    for note in r.notes.iter().chain(&r.errors.notes) {
        println!("      ! {note}");
    }
}

impl Report {
    /// Prints the big room's table and target checks, and keeps them for the summary.
    pub fn add_bigroom(&mut self, workload: &Workload, outcomes: &[BigRoomOutcome]) {
        let rounds: Vec<&BigRoomResult> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        if rounds.len() < outcomes.len() || rounds.is_empty() {
            self.all_ok = false;
        }
        if rounds.is_empty() {
            println!("   no round ran");
            return;
        }
        self.bigroom.push(HEADING.into());
        for (i, r) in rounds.iter().enumerate() {
            self.bigroom.push(row(i + 1, r));
        }
        let members = fmt_num(workload.conns as f64);
        let all = |f: &dyn Fn(&BigRoomResult) -> bool| rounds.iter().all(|r| f(r));

        let joins: Vec<Option<Duration>> = rounds.iter().map(|r| r.join).collect();
        let joined = all(&|r| r.welcomed == r.members && r.join.is_some_and(|j| j < JOIN_TARGET));
        self.check(
            format!("{} join time, {members} members", workload.name),
            fmt_spread(&joins),
            "< 10 s in every round".into(),
            joined,
        );

        let broadcasts: Vec<Option<Duration>> = rounds.iter().map(|r| r.broadcast).collect();
        let errors = rounds.iter().map(|r| r.errors.total()).sum::<u64>();
        let (lost, misordered, corrupt) = rounds.iter().fold((0, 0, 0), |(l, m, c), r| {
            let e = &r.errors;
            (l + e.lost, m + e.reordered, c + e.corrupt)
        });
        let reached = all(&|r| r.more.is_some() && r.complete == r.members);
        self.check(
            format!("{} one broadcast to all {members}", workload.name),
            format!(
                "{}; 3 messages in order to {}; lost {lost}, misordered {misordered}, \
                 corrupt {corrupt}",
                fmt_spread(&broadcasts),
                if reached { "all" } else { "NOT all" }
            ),
            "every member, in order, 0 errors".into(),
            reached && errors == 0,
        );

        let peak = rounds.iter().map(|r| r.peak_rss_kb).max().unwrap_or(0);
        self.check(
            format!("{} server peak RSS", workload.name),
            format!("{} (highest of {} rounds)", fmt_mb(peak), rounds.len()),
            "< 64 MB".into(),
            peak as f64 * 1024.0 < PEAK_RSS_TARGET_BYTES,
        );
        // a slow join is a target missed; a member never reached is a failed round
        if errors > 0 || !reached || !all(&|r| r.welcomed == r.members) {
            self.all_ok = false;
        }
    }
}
