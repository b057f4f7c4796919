//! The orchestrator: sets the run up (fd limit, CPU pinning, the `--url` target), then
//! for each selected workload starts the servers, runs the rounds interleaved over
//! them, and hands the outcomes to the report; last, the summary.

use std::collections::HashMap;
use std::time::Instant;

use crate::bigroom;
use crate::cluster;
use crate::options::Options;
use crate::report::{print_bigroom_round, print_round, Report};
use crate::round::{run_round, RoundOutcome};
use crate::servers::{spawn_server, Server, ServerKind, SERVER_CPU};
use crate::sys::{have_taskset, loadavg, pin_this_process, raise_nofile_limit};
use crate::target::{parse_url, Protocol, Target};
use crate::workloads::{self, Workload, WorkloadKind};

/// The CPU the client is pinned to (and the big room's client processes).
pub const CLIENT_CPU: u32 = 1;

/// Runs every selected workload; true if every round ran without error.
pub fn run_all(options: Options) -> bool {
    let started = Instant::now();
    let Some(bench) = Bench::set_up(options) else {
        return false;
    };
    let workloads = workloads::select(&bench.options);
    let clusters = cluster::select(&bench.options);
    if workloads.is_empty() && clusters.is_empty() {
        println!("no workload matches");
        return true;
    }
    let mut report = Report::default();
    for workload in &workloads {
        bench.run_workload(workload, &mut report);
    }
    let cluster_report = cluster::run_all(&clusters, &bench.options, bench.pin, bench.t0);
    let ok = workloads.is_empty() || report.print_summary(started);
    cluster_report.print_summary(started) && ok
}

/// What every workload of a run shares.
struct Bench {
    options: Options,
    /// Servers on SERVER_CPU, the client on CLIENT_CPU.
    pin: bool,
    /// `--url`'s server, instead of ours.
    external: Option<Target>,
    /// The time base of the payloads' send times.
    t0: Instant,
}

impl Bench {
    /// Prints the run's heading, raises the fd limit, pins the client and parses
    /// `--url`; `None` (said on stderr) if the URL is bad.
    fn set_up(options: Options) -> Option<Bench> {
        let t0 = Instant::now();
        let (soft, hard) = raise_nofile_limit();
        let ncpu = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        println!(
            "loopchat load bench: {} round(s) x {:.1} s per workload and server, interleaved",
            options.rounds, options.secs
        );
        println!(
            "client RLIMIT_NOFILE {soft} (hard {hard}); {ncpu} CPUs; load average {}",
            loadavg()
        );
        let pin = set_up_pinning(&options, ncpu);
        if options.url.is_none() {
            let buffer = match options.tokio_read_buffer {
                Some(n) => format!("{n} B"),
                None => "tungstenite's default (128 KiB, zero-filled every read)".into(),
            };
            println!(
                "servers: loopchat with --max-message-rate 0 (flood control off){}; \
                 tokio-tungstenite read buffer {buffer}",
                if options.loopchat_args.is_empty() {
                    String::new()
                } else {
                    format!(" {}", options.loopchat_args.join(" "))
                }
            );
        }
        let external = external_target(&options).ok()?;
        Some(Bench {
            options,
            pin,
            external,
            t0,
        })
    }

    /// The servers a workload is run on, in the order of the rounds and the table.
    fn server_kinds(&self, kind: WorkloadKind) -> Vec<ServerKind> {
        if self.external.is_some() {
            vec![ServerKind::External]
        } else {
            kind.local_servers()
        }
    }

    /// A server of `kind`: `--url`'s, or a new process.
    fn server(&self, kind: ServerKind) -> Result<Server, String> {
        match &self.external {
            Some(target) if kind == ServerKind::External => {
                Ok(Server::external(target.clone(), self.options.server_pid))
            }
            _ => spawn_server(kind, &self.options, self.pin),
        }
    }

    /// Starts the servers of `kinds` for a whole workload; one that cannot start gets
    /// its failure in `outcomes` and no rounds.
    fn start_servers(
        &self,
        kinds: &[ServerKind],
        outcomes: &mut HashMap<ServerKind, Vec<RoundOutcome>>,
    ) -> Vec<Server> {
        let mut servers = Vec::new();
        for &kind in kinds {
            match self.server(kind) {
                Ok(s) => servers.push(s),
                Err(e) => {
                    println!("   {}: cannot start: {e}", kind.name());
                    outcomes.entry(kind).or_default().push(Err(e));
                }
            }
        }
        servers
    }

    /// Runs one workload's rounds, round-robin over its servers, and reports them.
    fn run_workload(&self, workload: &Workload, report: &mut Report) {
        println!();
        println!("== {}: {}", workload.name, workload.describe());
        if workload.kind == WorkloadKind::BigRoom {
            return self.run_bigroom(workload, report);
        }
        let kinds = self.server_kinds(workload.kind);
        let mut outcomes: HashMap<ServerKind, Vec<RoundOutcome>> = HashMap::new();
        let fresh = workload.kind.is_memory();
        // servers live for the whole workload (fresh ones per round for memory figures)
        let servers = if fresh {
            Vec::new()
        } else {
            self.start_servers(&kinds, &mut outcomes)
        };
        let show_rounds = self.options.verbose || workload.kind == WorkloadKind::Latency;
        for round in 0..workload.rounds(self.options.rounds) {
            for &kind in &kinds {
                let outcome = if fresh {
                    self.server(kind)
                        .and_then(|s| run_round(workload, &s, &self.options, self.t0))
                } else if let Some(s) = servers.iter().find(|s| s.kind == kind) {
                    run_round(workload, s, &self.options, self.t0)
                } else {
                    continue;
                };
                print_round(round + 1, kind, &outcome, show_rounds);
                outcomes.entry(kind).or_default().push(outcome);
            }
        }
        drop(servers);
        report.add_workload(workload, &kinds, &outcomes, self.external.is_some());
    }

    /// The big room's rounds, each against a fresh loopchat (`bigroom.rs`).
    fn run_bigroom(&self, workload: &Workload, report: &mut Report) {
        println!(
            "   {} client processes, {} connections in flight at most; server on CPU {}",
            bigroom::WORKERS,
            self.options.bigroom_in_flight,
            if self.pin {
                "0, clients on CPU 1"
            } else {
                "any (not pinned)"
            }
        );
        let mut outcomes = Vec::new();
        for round in 0..workload.rounds(self.options.rounds) {
            let outcome = bigroom::run_round(workload, &self.options, self.pin);
            print_bigroom_round(round + 1, &outcome);
            outcomes.push(outcome);
        }
        report.add_bigroom(workload, &outcomes);
    }
}

/// Decides on CPU pinning (not with `--url`), pins this process to CLIENT_CPU, and
/// says so; true if the servers are to be pinned.
fn set_up_pinning(options: &Options, ncpu: usize) -> bool {
    let pin = options.pin && options.url.is_none() && ncpu >= 2 && have_taskset();
    if pin {
        let ok = pin_this_process(CLIENT_CPU);
        println!(
            "pinning: servers on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}{}",
            if ok { "" } else { " (client pin FAILED)" }
        );
    } else if options.url.is_none() {
        let why = if !options.pin {
            "--no-pin"
        } else if ncpu < 2 {
            "fewer than 2 CPUs"
        } else {
            "taskset not found"
        };
        println!("pinning: off ({why})");
    }
    pin
}

/// `--url`'s server, said on stdout (or its error on stderr).
fn external_target(options: &Options) -> Result<Option<Target>, ()> {
    let Some(url) = options.url.as_deref() else {
        return Ok(None);
    };
    let target = parse_url(url).map_err(|e| eprintln!("--url: {e}"))?;
    println!("target: {url} ({})", target.addr);
    if !target.addr.ip().is_loopback() {
        println!("note: the target is not on loopback; network latency is included");
    }
    if target.protocol == Protocol::WebSocket && target.path.starts_with("/chat") {
        println!(
            "hint: if chat workloads show drops (lost), run loopchat with \
             --max-message-rate 0 (its flood control drops past 10 msg/s per member)"
        );
    }
    Ok(Some(target))
}
