//! The figures of the README's TLS section, measured on the binary as a child
//! process (so its resident memory and CPU time are its own):
//!
//! - memory per idle connection: N WebSocket connections to `/echo`, opened and
//!   then left idle, over TLS (wss) and, for comparison, over TCP (ws); the
//!   child's `VmRSS` before and after, divided by N (kernel socket buffers are
//!   not part of RSS);
//! - TLS handshakes per second of server CPU: one client thread makes full
//!   handshakes (no resumption) one after another for a bounded time, for TLS
//!   1.3 and for 1.2; the server's CPU time is read from `/proc/PID/stat`;
//! - echo and chat broadcast over wss against ws, per second of server CPU: 100
//!   echo connections with one message each in flight (32 B and 16 KiB), and
//!   one sender to 100 chat members (1 KiB), from one client thread.
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
        // A load, not a person: no flood control on the broadcast figure.
        .args(["--max-message-rate", "0"])
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

/// Reads one unmasked server frame from `stream`: its opcode and payload.
fn read_frame(stream: &mut impl Read) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).expect("a frame header");
    let len = match head[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            stream.read_exact(&mut ext).unwrap();
            u16::from_be_bytes(ext) as usize
        }
        127 => {
            let mut ext = [0u8; 8];
            stream.read_exact(&mut ext).unwrap();
            u64::from_be_bytes(ext) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).expect("a frame payload");
    (head[0] & 0x0f, payload)
}

/// Upgrades `stream` on `path` by hand.
fn upgrade_on(stream: &mut impl ReadWrite, path: &str) {
    stream
        .write_all(upgrade_request(path, "").as_bytes())
        .expect("write the upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).expect("read the 101"), 1);
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
}

/// Runs `work` against the server `pid` and returns messages per second of
/// the server's CPU time; prints the figure.
fn per_server_cpu_second(what: &str, pid: u32, messages: usize, work: impl FnOnce()) -> f64 {
    let before = cpu_time(pid);
    let started = Instant::now();
    work();
    let wall = started.elapsed();
    let cpu = cpu_time(pid) - before;
    let rate = messages as f64 / cpu.as_secs_f64();
    println!(
        "{what}: {messages} in {:.2} s wall, server CPU {:.2} s: {rate:.0} per server-CPU-second",
        wall.as_secs_f64(),
        cpu.as_secs_f64()
    );
    rate
}

/// Echo and broadcast over the connections `open` makes; returns the three
/// rates (echo 32 B, echo 16 KiB, broadcast deliveries of 1 KiB).
fn echo_and_broadcast<T: ReadWrite>(
    what: &str,
    pid: u32,
    addr: SocketAddr,
    mut open: impl FnMut(SocketAddr, &str) -> T,
) -> [f64; 3] {
    const CONNECTIONS: usize = 100;
    let mut rates = [0.0; 3];
    for (i, (size, rounds)) in [(32usize, 5_000usize), (16 * 1024, 1_000)]
        .into_iter()
        .enumerate()
    {
        let mut conns: Vec<T> = (0..CONNECTIONS).map(|_| open(addr, "/echo")).collect();
        let frame = client_frame(true, op::BINARY, &vec![b'e'; size]);
        rates[i] = per_server_cpu_second(
            &format!("{what} echo, {CONNECTIONS} conns, {size} B"),
            pid,
            CONNECTIONS * rounds,
            || {
                for _ in 0..rounds {
                    for conn in conns.iter_mut() {
                        conn.write_all(&frame).unwrap();
                    }
                    for conn in conns.iter_mut() {
                        assert_eq!(read_frame(conn).1.len(), size);
                    }
                }
            },
        );
    }
    // Broadcast: every member gets every message; the sender is member 0.
    let room = format!("/chat/figures{}", std::process::id());
    let mut members: Vec<T> = (0..CONNECTIONS).map(|_| open(addr, &room)).collect();
    // Skip the welcome, history and join notices: wait for a marker.
    members[0]
        .write_all(&client_frame(true, op::TEXT, b"ready"))
        .unwrap();
    for member in members.iter_mut() {
        while !String::from_utf8_lossy(&read_frame(member).1).contains("\"text\":\"ready\"") {}
    }
    const MESSAGES: usize = 3_000;
    let frame = client_frame(true, op::TEXT, &vec![b'b'; 1024]);
    rates[2] = per_server_cpu_second(
        &format!("{what} broadcast, 1 sender to {CONNECTIONS} members, 1 KiB"),
        pid,
        MESSAGES * CONNECTIONS,
        || {
            for _ in 0..MESSAGES {
                members[0].write_all(&frame).unwrap();
                for member in members.iter_mut() {
                    assert_eq!(read_frame(member).0, op::TEXT);
                }
            }
        },
    );
    rates
}

#[test]
#[ignore = "figures: `cargo test --release --test tls_figures -- --ignored --nocapture --test-threads 1`"]
fn echo_and_broadcast_per_second_of_server_cpu_over_tls_and_tcp() {
    let cert = TestCert::new("figures-load", "figures.test");
    let client = client_config(&[&cert.der], Versions::Both);
    let (tls_server, addr) = spawn_idle_server(None, &cert.args());
    let tls = echo_and_broadcast("wss", tls_server.pid(), addr, |addr, path| {
        let mut socket = tls_connect(addr, &client);
        upgrade_on(&mut socket, path);
        socket
    });
    drop(tls_server);
    let (plain_server, addr) = spawn_idle_server(None, &[]);
    let plain = echo_and_broadcast("ws", plain_server.pid(), addr, |addr, path| {
        let mut socket = TcpStream::connect(addr).expect("connect");
        socket.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        socket.set_nodelay(true).unwrap();
        upgrade_on(&mut socket, path);
        socket
    });
    for (what, (t, p)) in ["echo 32 B", "echo 16 KiB", "broadcast 1 KiB"]
        .iter()
        .zip(tls.iter().zip(plain.iter()))
    {
        println!(
            "{what}: wss does {:.2}x the work of ws per server-CPU-second",
            t / p
        );
    }
}
