//! Load benchmark for loopchat: echo, chat and relay throughput, latency and memory,
//! against the limit of a raw TCP server and against tokio-tungstenite.
//!
//! `cargo bench --bench load` runs, in one process tree:
//!
//! * a WebSocket load client of our own, on one mio poll loop (no async runtime):
//!   masked client frames, the HTTP upgrade, and a per-message check. Every message
//!   carries a round nonce, the connection id of its sender, a sequence number, the
//!   send timestamp and a checksum, padded with a pattern derived from the sequence
//!   number, so the client notices anything lost, reordered or corrupted;
//! * the servers under comparison, each in its own process (so its CPU time can be read
//!   from /proc/PID and it can be pinned with `taskset`):
//!   - `loopchat` itself (`CARGO_BIN_EXE_loopchat`, with `--max-message-rate 0`: the
//!     chat workloads send far past its default flood control), on `/echo`,
//!     `/chat/ROOM` and `/relay/ROOM` (each message passed on verbatim),
//!   - `raw-tcp-echo`: a raw TCP echo server on the same kind of mio loop, no framing:
//!     the physical limit for echo (this binary re-invoked with `--serve raw-echo PORT`),
//!   - `raw-tcp-fanout`: the same loop relaying every client frame unchanged to every
//!     connection, the cost of broadcast without framing (`--serve raw-fanout PORT`);
//!     the limit for both the chat and the relay workloads,
//!   - `tokio-tungstenite`: an echo + broadcast chat server on a current-thread tokio
//!     runtime, what a Rust user would pick, with a 4 KiB read buffer as a careful
//!     user would set it (`--serve tokio PORT 4096`); it has no relay endpoint.
//!
//! Rounds are interleaved (round-robin over the servers) and every figure printed is the
//! median over the rounds. `--url ws://host:port/path` measures any server instead.
//! The big room ([`bigroom`]) is a workload of its own kind: 19,000 members of one
//! room, held by two client processes (this binary again, `--bigroom-worker`), against
//! a fresh loopchat per round; it reports join, settle and broadcast times and peak
//! memory. Run `cargo bench --bench load -- --help` for the options.
//!
//! The modules, in the order a run meets them: [`options`] (flags), [`run`] (the
//! orchestrator), [`workloads`], [`servers`] (starting the servers under test),
//! [`round`] (one measured round), [`client`] (the load client, over [`wire`] framing,
//! the [`payload`] format and the per-message [`checks`]), [`report`] (medians, tables,
//! targets), [`sys`] (what is asked of the operating system), [`compare`] (the
//! comparison servers behind `--serve`) and [`bigroom`] (the big room, its client
//! processes and what they say to each other). [`cluster`] runs the cluster
//! workloads: loopchat nodes over one Redis (`--cluster`, or `--filter cluster/`).

mod bigroom;
mod checks;
mod client;
mod cluster;
mod compare;
mod options;
mod payload;
mod report;
mod round;
mod run;
mod servers;
mod sys;
mod target;
mod wire;
mod workloads;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--serve") => return serve(&args[1..]),
        Some("--bigroom-worker") => return bigroom::worker::main(&args[1..]),
        _ => {}
    }
    if args.is_empty() {
        // `cargo test --benches` runs bench targets without arguments: stay cheap.
        // The payload format's and JSON lookups' self-tests are microseconds, and this
        // is where they can run
        // (a `harness = false` target is not built with `cfg(test)`).
        payload::self_test();
        wire::self_test();
        bigroom::lines::self_test();
        client::split_self_test();
        println!("load bench: run it with `cargo bench --bench load` (see `-- --help`)");
        return;
    }
    let options = match options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprint!("{}", options::HELP);
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    let ok = run::run_all(options);
    std::process::exit(if ok { 0 } else { 1 });
}

/// `--serve KIND PORT [READ_BUFFER]`: runs one comparison server until killed. The
/// orchestrator starts these as child processes of its own binary.
fn serve(args: &[String]) {
    let kind = args.first().cloned().unwrap_or_default();
    let port: u16 = args
        .get(1)
        .and_then(|p| p.parse().ok())
        .expect("--serve KIND PORT");
    let read_buffer: Option<usize> = args.get(2).and_then(|p| p.parse().ok());
    sys::raise_nofile_limit();
    match kind.as_str() {
        "raw-echo" => compare::raw::serve_echo(port),
        "raw-fanout" => compare::raw::serve_fanout(port),
        "tokio" => compare::tokio_chat::serve(port, read_buffer),
        k => panic!("unknown server kind {k}"),
    }
}
