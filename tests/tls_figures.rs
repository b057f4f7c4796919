//! The figures of the README's TLS section, measured on the binary as a child
//! process (so its resident memory and CPU time are its own):
//!
//! - memory per idle connection: N WebSocket connections to `/echo`, opened and
//!   then left idle, over TLS (wss) and, for comparison, over TCP (ws); the
//!   child's `VmRSS` before and after, divided by N (kernel socket buffers are
//!   not part of RSS);
//! - TLS handshakes per second of server CPU: one client thread makes full
//!   handshakes (no resumption) one after another for a bounded time, for TLS
//!   1.3 and for 1.2; the server's CPU time is read from `/proc/PID/stat`.
//!
//! Ignored by default; run them with
//! `cargo test --release --test tls_figures -- --ignored --nocapture --test-threads 1`.
//! `LOOPCHAT_FIGURES_CONNECTIONS` sets N (default 5,000); `LOOPCHAT_FIGURES_BIN`
//! names another loopchat binary for the plain-TCP figure (to compare builds).
#![cfg(feature = "tls")]

mod common;
use common::tls::*;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long the handshake loop runs, per TLS version.
const HANDSHAKE_RUN: Duration = Duration::from_secs(4);
/// At most this many handshakes per TLS version, whatever the time.
const MAX_HANDSHAKES: usize = 50_000;

fn connections() -> usize {
    std::env::var("LOOPCHAT_FIGURES_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

/// Raises this process's open-files soft limit to the hard limit and checks
/// that `n` connections fit.
fn make_room_for(n: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    assert!(
        soft > n as u64 + 128,
        "open-files limit {soft} is too low for {n} connections"
    );
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = rustix::param::clock_ticks_per_second();
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// Upgrades `stream` to a WebSocket on `/echo` by hand (no per-connection
/// client buffers beyond the socket's): sends the request, reads the 101.
fn upgrade_by_hand(stream: &mut impl ReadWrite) {
    stream
        .write_all(upgrade_request("/echo", "").as_bytes())
        .expect("write the upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("read the 101");
        assert_eq!(n, 1, "the server closed during the upgrade");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Opens `n` idle WebSocket connections with `open`, and returns the child's
/// RSS growth per connection, in bytes.
fn rss_per_connection<T>(
    what: &str,
    pid: u32,
    addr: SocketAddr,
    n: usize,
    mut open: impl FnMut(SocketAddr) -> T,
) -> f64 {
    // Warm up: the first connections grow the slab and the allocator's arenas.
    let warm: Vec<T> = (0..64).map(|_| open(addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(Some(pid));
    let started = Instant::now();
    let held: Vec<T> = (0..n).map(|_| open(addr)).collect();
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(Some(pid));
    let per = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    println!(
        "{what}: {n} idle connections opened in {:.1} s; server RSS {before} KiB -> {after} KiB: \
         {per:.0} B per connection",
        took.as_secs_f64()
    );
    drop((warm, held));
    per
}

/// Starts `binary` (the loopchat under test unless another is named) with
/// `args` and settings for holding many idle connections.
fn spawn_idle_server(binary: Option<&str>, args: &[String]) -> (KillOnDrop, SocketAddr) {
    let port = free_local_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let binary = binary.unwrap_or(env!("CARGO_BIN_EXE_loopchat"));
    let child = std::process::Command::new(binary)
        .args(["--addr", &addr.to_string()])
        .args(["--log-level", "warn", "--ping-interval", "300s"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn loopchat");
    let mut child = KillOnDrop { child, log: None };
    wait_until_listening(&mut child, addr);
    (child, addr)
}

#[test]
#[ignore = "figures: `cargo test --release --test tls_figures -- --ignored --nocapture --test-threads 1`"]
fn memory_per_idle_connection_over_tls_and_tcp() {
    let n = connections();
    make_room_for(n);
    let cert = TestCert::new("figures-memory", "figures.test");
    let client = client_config(&[&cert.der], Versions::Both);

    let (tls_server, addr) = spawn_idle_server(None, &cert.args());
    let tls = rss_per_connection("wss (TLS 1.3)", tls_server.pid(), addr, n, |addr| {
        let mut socket = tls_connect(addr, &client);
        upgrade_by_hand(&mut socket);
        socket
    });
    drop(tls_server);

    let other = std::env::var("LOOPCHAT_FIGURES_BIN").ok();
    let (plain_server, addr) = spawn_idle_server(other.as_deref(), &[]);
    let what = match &other {
        Some(bin) => format!("ws ({bin})"),
        None => "ws".to_string(),
    };
    let plain = rss_per_connection(&what, plain_server.pid(), addr, n, |addr| {
        let mut socket = TcpStream::connect(addr).expect("connect");
        socket.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        upgrade_by_hand(&mut socket);
        socket
    });
    println!("TLS costs {:.0} B more per idle connection", tls - plain);
}

#[test]
#[ignore = "figures: `cargo test --release --test tls_figures -- --ignored --nocapture --test-threads 1`"]
fn tls_handshakes_per_second_of_server_cpu() {
    let cert = TestCert::new("figures-handshakes", "figures.test");
    let (server, addr) = spawn_idle_server(None, &cert.args());
    for (name, versions) in [
        ("TLS 1.3", Versions::Both),
        ("TLS 1.2", Versions::Tls12Only),
    ] {
        let client = client_config(&[&cert.der], versions);
        // A few to warm up (page faults, the session cache).
        for _ in 0..50 {
            drop(tls_connect(addr, &client));
        }
        let cpu_before = cpu_time(server.pid());
        let started = Instant::now();
        let mut done = 0;
        while started.elapsed() < HANDSHAKE_RUN && done < MAX_HANDSHAKES {
            let mut socket = tls_connect(addr, &client);
            socket.conn.send_close_notify();
            let _ = socket.flush();
            done += 1;
        }
        let wall = started.elapsed();
        // Let the server finish closing the last ones before reading its clock.
        std::thread::sleep(Duration::from_millis(200));
        let cpu = cpu_time(server.pid()) - cpu_before;
        println!(
            "{name}: {done} full handshakes in {:.2} s ({:.0}/s wall, one client thread); \
             server CPU {:.2} s: {:.0} handshakes per server-CPU-second ({:.0} µs each)",
            wall.as_secs_f64(),
            done as f64 / wall.as_secs_f64(),
            cpu.as_secs_f64(),
            done as f64 / cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / done as f64
        );
    }
}
