//! Load benchmark for loopchat (issue 5: "Fast enough to be the target of choice").
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
//!   - `loopchat` itself (`CARGO_BIN_EXE_loopchat`),
//!   - `raw-tcp-echo`: a raw TCP echo server on the same kind of mio loop, no framing:
//!     the physical limit for echo (this binary re-invoked with `--serve raw-echo PORT`),
//!   - `raw-tcp-fanout`: the same loop relaying every client frame unchanged to every
//!     connection, the cost of broadcast without framing (`--serve raw-fanout PORT`),
//!   - `tokio-tungstenite`: an echo + broadcast chat server on a current-thread tokio
//!     runtime, what a Rust user would pick (`--serve tokio PORT`).
//!
//! Rounds are interleaved (round-robin over the servers) and every figure printed is the
//! median over the rounds. `--url ws://host:port/path` measures any server instead.
//! Run `cargo bench --bench load -- --help` for the options.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

const HELP: &str = "\
loopchat load benchmark

usage: cargo bench --bench load -- [options] [FILTER...]

  --quick              one round, a subset of the workloads
  --filter NAME        only workloads whose name contains NAME (repeatable; bare
                       words are filters too). Names: echo/c100/if1 ... chat/r1000/s10/1KiB,
                       latency/r1000/s10x10hz, mem/echo1000, mem/idle10000
  --rounds N           interleaved rounds per workload (default 3, --quick: 1)
  --secs S             measured seconds per round (default 2)
  --idle-conns N       connections for mem/idle (default 10000)
  --no-pin             do not pin server to CPU 0 and client to CPU 1
  --verbose            print every round, not only the medians
  --tokio-read-buffer N  tungstenite read_buffer_size for the tokio server (default:
                       tungstenite's own, 128 KiB, zero-filled before every read)
  --loopchat PATH      loopchat binary (default: the one cargo built)
  --loopchat-arg ARG   extra argument for loopchat (repeatable)
  --url ws://H:P/PATH  measure this server instead (echo workloads, or chat workloads
                       when PATH starts with /chat); no ratios. tcp://H:P targets a
                       raw TCP echo server (e.g. `load --serve raw-echo PORT`), and
                       tcp://H:P/chat a raw fan-out (`load --serve raw-fanout PORT`)
  --server-pid PID     with --url: read that process's CPU time and memory
  --serve raw-echo|raw-fanout|tokio PORT   (internal) run a comparison server
";

#[derive(Clone)]
struct Opts {
    quick: bool,
    filters: Vec<String>,
    rounds: usize,
    secs: f64,
    idle_conns: usize,
    pin: bool,
    loopchat_bin: PathBuf,
    loopchat_args: Vec<String>,
    url: Option<String>,
    server_pid: Option<u32>,
    verbose: bool,
    tokio_read_buffer: Option<usize>,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        quick: false,
        filters: vec![],
        rounds: 0,
        secs: 2.0,
        idle_conns: 10_000,
        pin: true,
        loopchat_bin: PathBuf::from(env!("CARGO_BIN_EXE_loopchat")),
        loopchat_args: vec![],
        url: None,
        server_pid: None,
        verbose: false,
        tokio_read_buffer: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--bench" => {} // cargo bench passes this to harness = false targets
            "--quick" => o.quick = true,
            "--no-pin" => o.pin = false,
            "--verbose" | "-v" => o.verbose = true,
            "--tokio-read-buffer" => {
                o.tokio_read_buffer = Some(
                    val("--tokio-read-buffer")?
                        .parse()
                        .map_err(|e| format!("--tokio-read-buffer: {e}"))?,
                )
            }
            "--filter" => o.filters.push(val("--filter")?),
            "--rounds" => {
                o.rounds = val("--rounds")?
                    .parse()
                    .map_err(|e| format!("--rounds: {e}"))?
            }
            "--secs" => o.secs = val("--secs")?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--idle-conns" => {
                o.idle_conns = val("--idle-conns")?
                    .parse()
                    .map_err(|e| format!("--idle-conns: {e}"))?
            }
            "--loopchat" => o.loopchat_bin = PathBuf::from(val("--loopchat")?),
            "--loopchat-arg" => o.loopchat_args.push(val("--loopchat-arg")?),
            "--url" => o.url = Some(val("--url")?),
            "--server-pid" => {
                o.server_pid = Some(
                    val("--server-pid")?
                        .parse()
                        .map_err(|e| format!("--server-pid: {e}"))?,
                )
            }
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => o.filters.push(s.to_string()),
        }
    }
    if o.rounds == 0 {
        o.rounds = if o.quick { 1 } else { 3 };
    }
    if !(o.secs > 0.0 && o.secs <= 60.0) {
        return Err("--secs must be in (0, 60]".into());
    }
    o.idle_conns = o.idle_conns.clamp(1, 100_000);
    o.rounds = o.rounds.clamp(1, 50);
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        let kind = args.get(1).cloned().unwrap_or_default();
        let port: u16 = args
            .get(2)
            .and_then(|p| p.parse().ok())
            .expect("--serve KIND PORT");
        let read_buffer: Option<usize> = args.get(3).and_then(|p| p.parse().ok());
        raise_nofile_limit();
        match kind.as_str() {
            "raw-echo" => serve_raw_echo(port),
            "raw-fanout" => serve_raw_fanout(port),
            "tokio" => serve_tokio(port, read_buffer),
            k => panic!("unknown server kind {k}"),
        }
        return;
    }
    if args.is_empty() {
        // `cargo test --benches` runs bench targets without arguments: stay cheap.
        println!("load bench: run it with `cargo bench --bench load` (see `-- --help`)");
        return;
    }
    let opts = match parse_opts(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprint!("{HELP}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    let ok = run_all(opts);
    std::process::exit(if ok { 0 } else { 1 });
}

// ---------------------------------------------------------------------------------------
// Small helpers: /proc, rlimits, pinning
// ---------------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
fn raise_nofile_limit() -> (u64, u64) {
    #[repr(C)]
    struct RLimit {
        cur: u64,
        max: u64,
    }
    extern "C" {
        fn getrlimit(resource: i32, rlim: *mut RLimit) -> i32;
        fn setrlimit(resource: i32, rlim: *const RLimit) -> i32;
    }
    const RLIMIT_NOFILE: i32 = 7;
    let mut r = RLimit { cur: 0, max: 0 };
    // SAFETY: plain libc calls on a properly sized, repr(C) struct (rlim_t is 64-bit).
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut r) != 0 {
            return (0, 0);
        }
        if r.cur < r.max {
            let want = RLimit {
                cur: r.max,
                max: r.max,
            };
            if setrlimit(RLIMIT_NOFILE, &want) == 0 {
                r.cur = r.max;
            }
        }
    }
    (r.cur, r.max)
}

#[cfg(not(target_os = "linux"))]
fn raise_nofile_limit() -> (u64, u64) {
    (1024, 1024)
}

/// CPU time (user + system) of a whole process, in nanoseconds. Uses the per-thread
/// `schedstat` (ns resolution) when present, else utime+stime from /proc/PID/stat.
fn cpu_ns(pid: u32) -> Option<u64> {
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        let mut sum = 0u64;
        let mut any = false;
        for e in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                if let Some(v) = s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    sum += v;
                    any = true;
                }
            }
        }
        if any {
            return Some(sum);
        }
    }
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields 14 and 15 of stat are f[11], f[12] after "pid (comm) "
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000_000) // CLK_TCK = 100 on Linux
}

/// Time the process's threads spent runnable but waiting for a CPU (ns): the second
/// field of schedstat. Non-zero means something else ran on "our" core (noise).
/// The machine's (steal, total) CPU time in clock ticks, from the first line of
/// /proc/stat. Steal is time the hypervisor gave this VM's CPUs to someone else:
/// noise that no process's run-queue wait shows.
fn steal_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    Some((*fields.get(7)?, fields.iter().take(8).sum()))
}

fn wait_ns(pid: u32) -> Option<u64> {
    let rd = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0u64;
    let mut any = false;
    for e in rd.flatten() {
        if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
            if let Some(v) = s
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
            {
                sum += v;
                any = true;
            }
        }
    }
    any.then_some(sum)
}

/// Servers get SIGKILL if the bench process dies without unwinding (SIGKILL,
/// `timeout`, ...), so that no server outlives the run; `Server::drop` covers the
/// normal and the panic paths.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    extern "C" {
        fn prctl(option: i32, ...) -> i32;
    }
    const PR_SET_PDEATHSIG: i32 = 1;
    const SIGKILL: u64 = 9;
    // SAFETY: prctl is async-signal-safe, allowed between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn have_taskset() -> bool {
    Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn free_port() -> io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn now_ms_epoch() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Payload format
// ---------------------------------------------------------------------------------------
//
// bytes  0..4   round nonce        (hex)
//        4..9   sender conn id     (hex, < 2^20)
//        9..16  sequence number    (hex, < 2^28)
//       16..27  send time, ns since client start (hex, < 2^44 ~ 4.9 h)
//       27..31  FNV checksum of bytes 0..27 (hex)
//       31..    filler: 'a' + (i + seq) % 26 ... (checked byte for byte)

const PHDR: usize = 31;
const MIN_SIZE: usize = 32;
const HEX: &[u8; 16] = b"0123456789abcdef";

fn put_hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = HEX[(v & 15) as usize];
        v >>= 4;
    }
}

fn get_hex(s: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

fn fnv16(b: &[u8]) -> u64 {
    let mut h: u32 = 0x811c9dc5;
    for &x in b {
        h ^= x as u32;
        h = h.wrapping_mul(0x01000193);
    }
    ((h ^ (h >> 16)) & 0xffff) as u64
}

fn make_pattern(max: usize) -> Vec<u8> {
    (0..max + 26).map(|j| b'a' + (j % 26) as u8).collect()
}

fn fill_payload(p: &mut [u8], run: u16, conn: u32, seq: u32, ts: u64, pat: &[u8]) {
    put_hex(&mut p[0..4], run as u64);
    put_hex(&mut p[4..9], conn as u64);
    put_hex(&mut p[9..16], seq as u64);
    put_hex(&mut p[16..27], ts);
    let c = fnv16(&p[..27]);
    put_hex(&mut p[27..31], c);
    let off = ((PHDR as u32 + seq) % 26) as usize;
    let n = p.len() - PHDR;
    p[PHDR..].copy_from_slice(&pat[off..off + n]);
}

enum Dec {
    Ok { conn: u32, seq: u32, ts: u64 },
    Foreign,
    Corrupt(&'static str),
}

fn decode_payload(p: &[u8], run: u16, size: usize, pat: &[u8]) -> Dec {
    if p.len() < PHDR || get_hex(&p[0..4]) != Some(run as u64) {
        return Dec::Foreign;
    }
    if p.len() != size {
        return Dec::Corrupt("wrong length");
    }
    let (Some(conn), Some(seq), Some(ts), Some(chk)) = (
        get_hex(&p[4..9]),
        get_hex(&p[9..16]),
        get_hex(&p[16..27]),
        get_hex(&p[27..31]),
    ) else {
        return Dec::Corrupt("bad header digits");
    };
    if fnv16(&p[..27]) != chk {
        return Dec::Corrupt("checksum mismatch");
    }
    let off = ((PHDR as u64 + seq) % 26) as usize;
    if p[PHDR..] != pat[off..off + size - PHDR] {
        return Dec::Corrupt("filler mismatch");
    }
    Dec::Ok {
        conn: conn as u32,
        seq: seq as u32,
        ts,
    }
}

// ---------------------------------------------------------------------------------------
// Client-side framing
// ---------------------------------------------------------------------------------------
// Written apart from `loopchat::frame` on purpose: the client checks the server's
// frames, and a check that shared the server's code would share its bugs.

const OP_CONT: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BIN: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;

fn mask_in_place(b: &mut [u8], m: [u8; 4]) {
    let m64 = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = b.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().unwrap()) ^ m64;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (j, x) in chunks.into_remainder().iter_mut().enumerate() {
        *x ^= m[j & 3];
    }
}

fn push_masked_frame(out: &mut Vec<u8>, op: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | op);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    mask_in_place(&mut out[start..], mask);
}

/// (header length, fin, opcode, mask, payload length) once the whole header is buffered.
type Header = (usize, bool, u8, Option<[u8; 4]>, u64);

fn parse_header(b: &[u8]) -> Option<Header> {
    if b.len() < 2 {
        return None;
    }
    let fin = b[0] & 0x80 != 0;
    let op = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let (mut hl, len) = match b[1] & 0x7f {
        126 => {
            if b.len() < 4 {
                return None;
            }
            (4, u16::from_be_bytes([b[2], b[3]]) as u64)
        }
        127 => {
            if b.len() < 10 {
                return None;
            }
            (10, u64::from_be_bytes(b[2..10].try_into().unwrap()))
        }
        n => (2, n as u64),
    };
    let mask = if masked {
        if b.len() < hl + 4 {
            return None;
        }
        let m = [b[hl], b[hl + 1], b[hl + 2], b[hl + 3]];
        hl += 4;
        Some(m)
    } else {
        None
    };
    Some((hl, fin, op, mask, len))
}

const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; // RFC 6455 section 1.3

// minimal tolerant JSON string-field lookup: `"key" : "value"` -> raw value bytes
fn json_str_field<'a>(h: &'a [u8], key: &[u8], expect_len: usize) -> Option<&'a [u8]> {
    let mut from = 0;
    while from + key.len() + 2 <= h.len() {
        let rel = h[from..]
            .windows(key.len() + 2)
            .position(|w| w[0] == b'"' && w[w.len() - 1] == b'"' && &w[1..w.len() - 1] == key)?;
        let mut i = from + rel + key.len() + 2;
        while i < h.len() && h[i] == b' ' {
            i += 1;
        }
        if i < h.len() && h[i] == b':' {
            i += 1;
            while i < h.len() && h[i] == b' ' {
                i += 1;
            }
            if i < h.len() && h[i] == b'"' {
                let s = i + 1;
                if expect_len > 0 && s + expect_len < h.len() && h[s + expect_len] == b'"' {
                    return Some(&h[s..s + expect_len]);
                }
                let mut e = s;
                while e < h.len() && h[e] != b'"' {
                    if h[e] == b'\\' {
                        e += 1;
                    }
                    e += 1;
                }
                return Some(&h[s..e.min(h.len())]);
            }
        }
        from = from + rel + 1;
    }
    None
}

// ---------------------------------------------------------------------------------------
// The load client
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Ws,
    Raw,
}

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
    proto: Proto,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    Connecting,
    Handshake,
    Open,
    Dead,
}

struct Conn {
    sock: Option<TcpStream>,
    st: St,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    dirty: bool,
    frag: Vec<u8>,
    frag_op: u8,
    rng: u32,
    id: u32,
    sent: u32,
    rcvd: u32,
    welcomed: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Echo {
        inflight: u32,
    },
    /// senders are conns 0..senders; every conn is a receiver (the sender included).
    Chat {
        senders: usize,
        rate_hz: f64,
    },
}

#[derive(Default, Clone, Debug)]
struct Errs {
    lost: u64,
    reordered: u64,
    corrupt: u64,
    closed: u64,
    proto: u64,
    failed: u64,
    notes: Vec<String>,
}

impl Errs {
    fn total(&self) -> u64 {
        self.lost + self.reordered + self.corrupt + self.closed + self.proto + self.failed
    }
    fn note(&mut self, s: String) {
        if self.notes.len() < 6 {
            self.notes.push(s);
        }
    }
    fn add(&mut self, o: &Errs) {
        self.lost += o.lost;
        self.reordered += o.reordered;
        self.corrupt += o.corrupt;
        self.closed += o.closed;
        self.proto += o.proto;
        self.failed += o.failed;
        for n in &o.notes {
            self.note(n.clone());
        }
    }
    fn summary(&self) -> String {
        if self.total() == 0 {
            return "0".into();
        }
        let mut s = String::new();
        for (k, v) in [
            ("lost", self.lost),
            ("reordered", self.reordered),
            ("corrupt", self.corrupt),
            ("closed", self.closed),
            ("protocol", self.proto),
            ("connect-failed", self.failed),
        ] {
            if v > 0 {
                let _ = write!(s, "{k}={v} ");
            }
        }
        s.trim_end().to_string()
    }
}

const MAX_PENDING_CONNECTS: usize = 256;

struct Client {
    poll: Poll,
    events: Option<Events>,
    conns: Vec<Conn>,
    target: Target,
    strict: bool, // local server: every frame must be ours
    t0: Instant,
    run: u16,
    size: usize,
    pat: Vec<u8>,
    mode: Mode,
    // sending state
    sending: bool,
    chat_window: u32, // per-sender outstanding (own copy not yet back)
    chat_global: u64, // outstanding deliveries, in messages per receiver
    expect: Vec<u32>, // chat: [receiver * senders + sender] next expected seq
    next_due: Vec<Instant>,
    total_sent: u64,
    total_deliv: u64,
    // measurement
    measuring: bool,
    delivered: u64,
    lat: Vec<u32>, // ns, saturating
    last_rx: Instant,
    errs: Errs,
    foreign: u64,
    scratch: Vec<u8>,
    pbuf: Vec<u8>,
    dirty: Vec<usize>,
}

impl Client {
    fn new(
        target: Target,
        strict: bool,
        t0: Instant,
        run: u16,
        size: usize,
        mode: Mode,
    ) -> io::Result<Client> {
        Ok(Client {
            poll: Poll::new()?,
            events: Some(Events::with_capacity(1024)),
            conns: Vec::new(),
            target,
            strict,
            t0,
            run,
            size,
            pat: make_pattern(size),
            mode,
            sending: false,
            chat_window: 8,
            chat_global: 16,
            expect: Vec::new(),
            next_due: Vec::new(),
            total_sent: 0,
            total_deliv: 0,
            measuring: false,
            delivered: 0,
            lat: Vec::new(),
            last_rx: Instant::now(),
            errs: Errs::default(),
            foreign: 0,
            scratch: vec![0u8; 64 * 1024],
            pbuf: vec![0u8; size],
            dirty: Vec::new(),
        })
    }

    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn start_conn(&mut self) {
        let id = self.conns.len() as u32;
        let mut c = Conn {
            sock: None,
            st: St::Connecting,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            dirty: false,
            frag: Vec::new(),
            frag_op: 0,
            rng: 0x9e37_79b9 ^ id.wrapping_mul(0x85eb_ca6b) | 1,
            id,
            sent: 0,
            rcvd: 0,
            welcomed: false,
        };
        match TcpStream::connect(self.target.addr) {
            Ok(mut s) => {
                let tok = Token(id as usize);
                if self
                    .poll
                    .registry()
                    .register(&mut s, tok, Interest::READABLE | Interest::WRITABLE)
                    .is_ok()
                {
                    c.sock = Some(s);
                } else {
                    c.st = St::Dead;
                }
            }
            Err(e) => {
                c.st = St::Dead;
                self.errs.note(format!("connect: {e}"));
            }
        }
        if c.st == St::Dead {
            self.errs.failed += 1;
        }
        self.conns.push(c);
    }

    fn kill(&mut self, ci: usize, why: &str, count_as_error: bool) {
        let c = &mut self.conns[ci];
        if c.st == St::Dead {
            return;
        }
        let was = c.st;
        c.st = St::Dead;
        if let Some(mut s) = c.sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        if count_as_error {
            if was == St::Open {
                self.errs.closed += 1;
            } else {
                self.errs.failed += 1;
            }
            self.errs.note(format!("conn {ci} ({was:?}): {why}"));
        }
    }

    fn on_connect(&mut self, ci: usize) {
        let c = &mut self.conns[ci];
        let Some(s) = c.sock.as_mut() else { return };
        match s.take_error() {
            Ok(Some(e)) | Err(e) => return self.kill(ci, &format!("connect: {e}"), true),
            Ok(None) => {}
        }
        match s.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => return self.kill(ci, &format!("connect: {e}"), true),
        }
        let _ = s.set_nodelay(true);
        match self.target.proto {
            Proto::Raw => c.st = St::Open,
            Proto::Ws => {
                c.st = St::Handshake;
                let _ = write!(
                    &mut c.wbuf,
                    "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
                    self.target.path, self.target.host
                );
                self.mark_dirty(ci);
            }
        }
        if self.conns[ci].st == St::Open {
            self.on_open(ci);
        }
    }

    fn on_open(&mut self, ci: usize) {
        if self.sending {
            if let Mode::Echo { .. } = self.mode {
                self.echo_top_up(ci);
            }
        }
    }

    fn mark_dirty(&mut self, ci: usize) {
        let c = &mut self.conns[ci];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(ci);
        }
    }

    fn flush(&mut self, ci: usize) {
        let c = &mut self.conns[ci];
        c.dirty = false;
        let Some(s) = c.sock.as_mut() else { return };
        while c.wpos < c.wbuf.len() {
            match s.write(&c.wbuf[c.wpos..]) {
                Ok(0) => return self.kill(ci, "write returned 0", true),
                Ok(n) => c.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.kill(ci, &format!("write: {e}"), true),
            }
        }
        c.wbuf.clear();
        c.wpos = 0;
    }

    fn send_msg(&mut self, ci: usize) {
        let ts = self.now_ns();
        let c = &mut self.conns[ci];
        if c.st != St::Open {
            return;
        }
        fill_payload(&mut self.pbuf, self.run, c.id, c.sent, ts, &self.pat);
        c.sent += 1;
        c.rng ^= c.rng << 13;
        c.rng ^= c.rng >> 17;
        c.rng ^= c.rng << 5;
        push_masked_frame(&mut c.wbuf, OP_TEXT, &self.pbuf, c.rng.to_ne_bytes());
        self.total_sent += 1;
        self.mark_dirty(ci);
    }

    fn echo_top_up(&mut self, ci: usize) {
        if let Mode::Echo { inflight } = self.mode {
            while self.conns[ci].st == St::Open
                && self.conns[ci].sent.saturating_sub(self.conns[ci].rcvd) < inflight
            {
                self.send_msg(ci);
            }
        }
    }

    fn start_sending(&mut self) {
        self.sending = true;
        let now = Instant::now();
        match self.mode {
            Mode::Echo { .. } => {
                for ci in 0..self.conns.len() {
                    self.echo_top_up(ci);
                }
            }
            Mode::Chat { senders, rate_hz } => {
                if rate_hz > 0.0 {
                    let period = Duration::from_secs_f64(1.0 / rate_hz);
                    // stagger the senders over one period
                    self.next_due = (0..senders)
                        .map(|s| now + period.mul_f64(s as f64 / senders as f64))
                        .collect();
                }
            }
        }
    }

    fn chat_top_up(&mut self) {
        let Mode::Chat { senders, rate_hz } = self.mode else {
            return;
        };
        if !self.sending {
            return;
        }
        let r = self.conns.len() as u64;
        if rate_hz > 0.0 {
            let now = Instant::now();
            let period = Duration::from_secs_f64(1.0 / rate_hz);
            for s in 0..senders {
                let mut n = 0;
                while self.next_due[s] <= now && n < 10 {
                    self.send_msg(s);
                    self.next_due[s] += period;
                    n += 1;
                }
                if self.next_due[s] <= now {
                    self.next_due[s] = now + period; // fell behind: do not burst
                }
            }
            return;
        }
        loop {
            let mut progress = false;
            for s in 0..senders {
                let own = self.conns[s]
                    .sent
                    .saturating_sub(self.expect[s * senders + s]);
                let global = (self.total_sent * r).saturating_sub(self.total_deliv);
                if own < self.chat_window && global < r * self.chat_global {
                    self.send_msg(s);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
    }

    fn next_timeout(&self, max: Duration) -> Duration {
        if self.sending && !self.next_due.is_empty() {
            let now = Instant::now();
            let due = self.next_due.iter().min().copied().unwrap_or(now + max);
            return due.saturating_duration_since(now).min(max);
        }
        max
    }

    /// One poll + dispatch + flush. Bounded by `timeout`.
    fn pump(&mut self, timeout: Duration) {
        let mut events = self.events.take().unwrap();
        let timeout = self.next_timeout(timeout);
        if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                panic!("poll: {e}");
            }
        }
        for ev in events.iter() {
            let ci = ev.token().0;
            if ci >= self.conns.len() {
                continue;
            }
            if self.conns[ci].st == St::Connecting {
                self.on_connect(ci);
                if self.conns[ci].st == St::Connecting {
                    continue;
                }
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                self.on_readable(ci);
            }
            if ev.is_writable() && !self.conns[ci].wbuf.is_empty() {
                self.mark_dirty(ci);
            }
        }
        self.events = Some(events);
        self.chat_top_up();
        let dirty = std::mem::take(&mut self.dirty);
        for &ci in &dirty {
            self.flush(ci);
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn on_readable(&mut self, ci: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        loop {
            let c = &mut self.conns[ci];
            if c.st == St::Dead {
                break;
            }
            let Some(s) = c.sock.as_mut() else { break };
            let n = match s.read(&mut scratch) {
                Ok(0) => {
                    self.kill(ci, "EOF from server", true);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.kill(ci, &format!("read: {e}"), true);
                    break;
                }
            };
            self.last_rx = Instant::now();
            let now = self.now_ns();
            let c = &mut self.conns[ci];
            if c.st == St::Handshake {
                c.rbuf.extend_from_slice(&scratch[..n]);
                self.try_handshake(ci);
                if self.conns[ci].st == St::Open && !self.conns[ci].rbuf.is_empty() {
                    let mut rb = std::mem::take(&mut self.conns[ci].rbuf);
                    let used = self.process(ci, &mut rb, now);
                    rb.drain(..used);
                    self.conns[ci].rbuf = rb;
                }
            } else if c.rbuf.is_empty() {
                let used = self.process(ci, &mut scratch[..n], now);
                if used < n {
                    self.conns[ci].rbuf.extend_from_slice(&scratch[used..n]);
                }
            } else {
                c.rbuf.extend_from_slice(&scratch[..n]);
                let mut rb = std::mem::take(&mut c.rbuf);
                let used = self.process(ci, &mut rb, now);
                rb.drain(..used);
                self.conns[ci].rbuf = rb;
            }
            if n < scratch.len() {
                break; // short read: the socket is drained (epoll reports new data again)
            }
        }
        self.scratch = scratch;
    }

    fn try_handshake(&mut self, ci: usize) {
        let c = &mut self.conns[ci];
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&c.rbuf) {
            Ok(httparse::Status::Partial) => {
                if c.rbuf.len() > 16 * 1024 {
                    self.kill(ci, "oversized handshake response", true);
                }
            }
            Ok(httparse::Status::Complete(n)) => {
                let accept = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                    .map(|h| h.value.to_vec());
                if resp.code != Some(101) {
                    let code = resp.code;
                    return self.kill(ci, &format!("handshake status {code:?}"), true);
                }
                if accept.as_deref() != Some(WS_ACCEPT.as_bytes()) {
                    return self.kill(ci, "bad Sec-WebSocket-Accept", true);
                }
                c.rbuf.drain(..n);
                c.st = St::Open;
                self.on_open(ci);
            }
            Err(e) => self.kill(ci, &format!("handshake parse: {e}"), true),
        }
    }

    /// Parses complete frames from `buf`; returns bytes consumed.
    fn process(&mut self, ci: usize, buf: &mut [u8], now: u64) -> usize {
        let mut pos = 0;
        while let Some((hl, fin, op, mask, len)) = parse_header(&buf[pos..]) {
            if len > (64 << 20) {
                self.errs.proto += 1;
                self.kill(ci, "frame over 64 MiB", true);
                return buf.len();
            }
            let end = pos + hl + len as usize;
            if end > buf.len() {
                break;
            }
            let payload = &mut buf[pos + hl..end];
            if let Some(m) = mask {
                if self.target.proto == Proto::Ws {
                    self.errs.proto += 1;
                    self.errs.note("masked frame from server".into());
                }
                mask_in_place(payload, m);
            }
            pos = end;
            self.on_frame(ci, fin, op, payload, now);
            if self.conns[ci].st == St::Dead {
                return buf.len();
            }
        }
        pos
    }

    fn on_frame(&mut self, ci: usize, fin: bool, op: u8, payload: &mut [u8], now: u64) {
        match op {
            OP_PING => {
                let c = &mut self.conns[ci];
                push_masked_frame(&mut c.wbuf, OP_PONG, payload, [1, 2, 3, 4]);
                self.mark_dirty(ci);
            }
            OP_PONG => {}
            OP_CLOSE => {
                let code = if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    0
                };
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned();
                self.kill(ci, &format!("server sent close {code} {reason}"), true);
            }
            OP_TEXT | OP_BIN if fin && self.conns[ci].frag.is_empty() => {
                self.on_msg(ci, op, payload, now)
            }
            OP_TEXT | OP_BIN | OP_CONT => {
                let c = &mut self.conns[ci];
                if op != OP_CONT {
                    c.frag.clear();
                    c.frag_op = op;
                }
                c.frag.extend_from_slice(payload);
                if fin {
                    let mut m = std::mem::take(&mut self.conns[ci].frag);
                    let fop = self.conns[ci].frag_op;
                    self.on_msg(ci, fop, &mut m, now);
                    m.clear();
                    self.conns[ci].frag = m;
                }
            }
            _ => {
                self.errs.proto += 1;
                self.errs.note(format!("unknown opcode {op}"));
            }
        }
    }

    fn record(&mut self, ts: u64, now: u64) {
        if self.measuring {
            self.delivered += 1;
            self.lat
                .push(now.saturating_sub(ts).min(u32::MAX as u64) as u32);
        }
    }

    fn on_msg(&mut self, ci: usize, op: u8, p: &mut [u8], now: u64) {
        match self.mode {
            Mode::Echo { .. } => match decode_payload(p, self.run, self.size, &self.pat) {
                Dec::Ok { conn, seq, ts } => {
                    let c = &mut self.conns[ci];
                    if conn != c.id {
                        self.errs.corrupt += 1;
                        self.errs
                            .note(format!("conn {ci}: echo carries conn id {conn}"));
                        return;
                    }
                    if op != OP_TEXT && self.target.proto == Proto::Ws {
                        self.errs.proto += 1;
                        self.errs.note("text echoed as binary".into());
                    }
                    let want = c.rcvd;
                    if seq == want & 0x0fff_ffff {
                        c.rcvd += 1;
                    } else if seq > want & 0x0fff_ffff {
                        self.errs.lost += (seq - want) as u64;
                        self.errs
                            .note(format!("conn {ci}: got seq {seq}, expected {want}"));
                        c.rcvd = seq + 1;
                    } else {
                        self.errs.reordered += 1;
                        self.errs
                            .note(format!("conn {ci}: got seq {seq} after {want}"));
                        return;
                    }
                    self.total_deliv += 1;
                    self.record(ts, now);
                    if self.sending {
                        self.echo_top_up(ci);
                    }
                }
                Dec::Foreign if !self.strict => self.foreign += 1,
                Dec::Foreign => {
                    self.errs.corrupt += 1;
                    self.errs
                        .note(format!("conn {ci}: unrecognised echo ({} bytes)", p.len()));
                }
                Dec::Corrupt(why) => {
                    self.errs.corrupt += 1;
                    self.errs.note(format!("conn {ci}: {why}"));
                }
            },
            Mode::Chat { senders, .. } => {
                if op != OP_TEXT {
                    self.errs.proto += 1;
                    self.errs.note("binary frame on /chat".into());
                    return;
                }
                let text = if self.target.proto == Proto::Raw {
                    &*p // a raw fan-out relays our own frames: the payload is the text
                } else {
                    let ty = json_str_field(p, b"type", 0);
                    if ty != Some(b"message".as_slice()) {
                        if ty == Some(b"welcome".as_slice()) {
                            self.conns[ci].welcomed = true;
                        }
                        return; // welcome, join, leave, ...
                    }
                    let Some(text) = json_str_field(p, b"text", self.size) else {
                        self.errs.proto += 1;
                        self.errs.note("message without text".into());
                        return;
                    };
                    text
                };
                match decode_payload(text, self.run, self.size, &self.pat) {
                    Dec::Ok { conn, seq, ts } => {
                        let s = conn as usize;
                        if s >= senders {
                            self.errs.corrupt += 1;
                            self.errs
                                .note(format!("conn {ci}: message from unknown sender {s}"));
                            return;
                        }
                        let e = &mut self.expect[ci * senders + s];
                        let want = *e;
                        if seq == want {
                            *e += 1;
                        } else if seq > want {
                            self.errs.lost += (seq - want) as u64;
                            self.errs.note(format!(
                                "receiver {ci}: sender {s} seq {seq}, expected {want}"
                            ));
                            *e = seq + 1;
                        } else {
                            self.errs.reordered += 1;
                            self.errs
                                .note(format!("receiver {ci}: sender {s} seq {seq} after {want}"));
                            return;
                        }
                        self.total_deliv += 1;
                        self.record(ts, now);
                    }
                    Dec::Foreign if !self.strict => self.foreign += 1,
                    Dec::Foreign => {
                        self.errs.corrupt += 1;
                        self.errs
                            .note(format!("receiver {ci}: unrecognised message text"));
                    }
                    Dec::Corrupt(why) => {
                        self.errs.corrupt += 1;
                        self.errs.note(format!("receiver {ci}: {why}"));
                    }
                }
            }
        }
    }

    /// Opens `n` connections, at most MAX_PENDING_CONNECTS handshakes at a time.
    /// Returns how many are open.
    fn open_all(&mut self, n: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut open;
        let mut pending = 0usize;
        loop {
            while self.conns.len() < n && pending < MAX_PENDING_CONNECTS {
                self.start_conn();
                pending += 1;
            }
            self.pump(Duration::from_millis(5));
            // recount (cheap enough: at most a few hundred passes over <= 100k conns)
            open = 0;
            pending = 0;
            for c in &self.conns {
                match c.st {
                    St::Open => open += 1,
                    St::Connecting | St::Handshake => pending += 1,
                    St::Dead => {}
                }
            }
            if (self.conns.len() == n && pending == 0) || Instant::now() > deadline {
                break;
            }
        }
        open
    }

    /// Chat: waits for every welcome (if `need_welcome`) and for 150 ms of silence.
    fn wait_quiet(&mut self, need_welcome: bool, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            self.pump(Duration::from_millis(10));
            let welcomed =
                !need_welcome || self.conns.iter().all(|c| c.welcomed || c.st == St::Dead);
            if welcomed && self.last_rx.elapsed() > Duration::from_millis(150) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
        }
    }

    fn pump_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            self.pump((end - now).min(Duration::from_millis(50)));
        }
    }

    fn outstanding(&self) -> u64 {
        match self.mode {
            Mode::Echo { .. } => self
                .conns
                .iter()
                .filter(|c| c.st == St::Open)
                .map(|c| c.sent.saturating_sub(c.rcvd) as u64)
                .sum(),
            Mode::Chat { .. } => {
                let live = self.conns.iter().filter(|c| c.st == St::Open).count() as u64;
                (self.total_sent * live).saturating_sub(self.total_deliv)
            }
        }
    }

    /// Stops sending and waits (bounded) for everything in flight; then checks counts.
    fn drain_and_verify(&mut self, limit: Duration) {
        self.sending = false;
        let deadline = Instant::now() + limit;
        while self.outstanding() > 0 && Instant::now() < deadline {
            self.pump(Duration::from_millis(20));
        }
        match self.mode {
            Mode::Echo { .. } => {
                for ci in 0..self.conns.len() {
                    let c = &self.conns[ci];
                    if c.st == St::Open && c.rcvd != c.sent {
                        self.errs.lost += (c.sent - c.rcvd) as u64;
                        let (s, r) = (c.sent, c.rcvd);
                        self.errs
                            .note(format!("conn {ci}: sent {s}, {r} echoed back"));
                    }
                }
            }
            Mode::Chat { senders, .. } => {
                for r in 0..self.conns.len() {
                    if self.conns[r].st != St::Open {
                        continue;
                    }
                    for s in 0..senders {
                        let got = self.expect[r * senders + s];
                        let sent = self.conns[s].sent;
                        if got != sent {
                            self.errs.lost += sent.saturating_sub(got) as u64;
                            self.errs
                                .note(format!("receiver {r}: got {got} of {sent} from sender {s}"));
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for c in &mut self.conns {
            if let Some(mut s) = c.sock.take() {
                let _ = self.poll.registry().deregister(&mut s);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Loopchat,
    Raw,
    RawFanout,
    Tokio,
    External,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Loopchat => "loopchat",
            Kind::Raw => "raw-tcp-echo",
            Kind::RawFanout => "raw-tcp-fanout",
            Kind::Tokio => "tokio-tungstenite",
            Kind::External => "target",
        }
    }
}

/// A server process; killed (by its PID) and reaped when dropped, also on panic.
struct Server {
    kind: Kind,
    child: Option<Child>,
    pid: Option<u32>,
    target: Target,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_server(kind: Kind, opts: &Opts, pin: bool) -> Result<Server, String> {
    let port = free_port().map_err(|e| format!("free port: {e}"))?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let (prog, args): (PathBuf, Vec<String>) = match kind {
        Kind::Loopchat => {
            let mut a: Vec<String> = [
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--log-level",
                "warn",
                "--ping-interval",
                "3600",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            a.extend(opts.loopchat_args.iter().cloned());
            (opts.loopchat_bin.clone(), a)
        }
        Kind::Raw => (
            me,
            vec!["--serve".into(), "raw-echo".into(), port.to_string()],
        ),
        Kind::RawFanout => (
            me,
            vec!["--serve".into(), "raw-fanout".into(), port.to_string()],
        ),
        Kind::Tokio => {
            let mut a = vec!["--serve".into(), "tokio".into(), port.to_string()];
            if let Some(n) = opts.tokio_read_buffer {
                a.push(n.to_string());
            }
            (me, a)
        }
        Kind::External => unreachable!(),
    };
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.arg("-c").arg("0").arg(&prog).args(&args);
        c
    } else {
        let mut c = Command::new(&prog);
        c.args(&args);
        c
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    die_with_parent(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", prog.display()))?;
    let pid = child.id();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut srv = Server {
        kind,
        child: Some(child),
        pid: Some(pid),
        target: Target {
            addr,
            host: format!("127.0.0.1:{port}"),
            path: "/".into(),
            proto: if matches!(kind, Kind::Raw | Kind::RawFanout) {
                Proto::Raw
            } else {
                Proto::Ws
            },
        },
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(st)) = srv.child.as_mut().unwrap().try_wait() {
            return Err(format!("{} exited at start: {st}", kind.name()));
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not listen on {addr} within 10 s",
                kind.name()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // wait for the probe connection to be processed
    settle(&[pid]);
    Ok(srv)
}

/// Waits (at most 3 s) until the given processes stop burning CPU (e.g. finishing a
/// teardown), so that one server's leftovers do not run during another's round.
fn settle(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let a: u64 = pids.iter().filter_map(|&p| cpu_ns(p)).sum();
        std::thread::sleep(Duration::from_millis(50));
        let b: u64 = pids.iter().filter_map(|&p| cpu_ns(p)).sum();
        if b.saturating_sub(a) < 1_000_000 || Instant::now() > deadline {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Workloads and rounds
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WKind {
    Echo,
    Chat,
    Latency,
    MemEcho,
    MemIdle,
}

#[derive(Clone, Debug)]
struct Spec {
    name: String,
    kind: WKind,
    conns: usize,
    size: usize,
    inflight: u32,
    senders: usize,
    rate_hz: f64,
    quick: bool,
}

fn workloads(opts: &Opts) -> Vec<Spec> {
    let mut v = Vec::new();
    let mk = |name: String, kind, conns, size, inflight, senders, rate_hz, quick| Spec {
        name,
        kind,
        conns,
        size,
        inflight,
        senders,
        rate_hz,
        quick,
    };
    for (c, i, q) in [
        (100, 1, false),
        (100, 16, true),
        (1000, 1, true),
        (1000, 16, false),
    ] {
        v.push(mk(
            format!("echo/c{c}/if{i}"),
            WKind::Echo,
            c,
            32,
            i,
            0,
            0.0,
            q,
        ));
    }
    for r in [100, 1000] {
        for s in [1, 10] {
            for (size, sname) in [(32, "32B"), (1024, "1KiB")] {
                let q =
                    (r == 100 && s == 10 && size == 32) || (r == 1000 && s == 1 && size == 1024);
                v.push(mk(
                    format!("chat/r{r}/s{s}/{sname}"),
                    WKind::Chat,
                    r,
                    size,
                    0,
                    s,
                    0.0,
                    q,
                ));
            }
        }
    }
    v.push(mk(
        "latency/r1000/s10x10hz".into(),
        WKind::Latency,
        1000,
        32,
        0,
        10,
        10.0,
        true,
    ));
    v.push(mk(
        "mem/echo1000".into(),
        WKind::MemEcho,
        1000,
        32,
        16,
        0,
        0.0,
        true,
    ));
    v.push(mk(
        format!("mem/idle{}", opts.idle_conns),
        WKind::MemIdle,
        opts.idle_conns,
        32,
        0,
        0,
        0.0,
        true,
    ));
    v.retain(|w| !opts.quick || w.quick);
    if !opts.filters.is_empty() {
        v.retain(|w| opts.filters.iter().any(|f| w.name.contains(f.as_str())));
    }
    if opts.url.is_some() {
        let chat = opts
            .url
            .as_deref()
            .map(url_path)
            .unwrap_or_default()
            .starts_with("/chat");
        v.retain(|w| match w.kind {
            WKind::Echo => !chat,
            WKind::Chat | WKind::Latency => chat,
            WKind::MemEcho => !chat && opts.server_pid.is_some(),
            WKind::MemIdle => opts.server_pid.is_some(),
        });
    }
    v
}

#[derive(Clone, Debug, Default)]
struct RoundRes {
    rate: f64,     // messages (deliveries) per second
    per_cpu: f64,  // per server CPU second
    srv_cpu: f64,  // server CPU / wall
    cli_cpu: f64,  // client CPU / wall
    srv_wait: f64, // server runnable-but-waiting / wall
    cli_wait: f64, // client runnable-but-waiting / wall
    steal: f64,    // the machine's CPU time stolen by the hypervisor / its CPU time
    p50_us: f64,
    p99_us: f64,
    mem_kb: f64, // MemEcho: VmHWM; MemIdle: bytes per connection
    mem_note: String,
    errs: Errs,
}

fn percentile(v: &mut [u32], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let k = ((v.len() - 1) as f64 * q).round() as usize;
    let (_, x, _) = v.select_nth_unstable(k);
    *x as f64 / 1000.0
}

static ROUND_NONCE: AtomicU64 = AtomicU64::new(1);

fn next_nonce() -> u16 {
    let n = ROUND_NONCE.fetch_add(1, Ordering::Relaxed);
    ((std::process::id() as u64 * 7919 + n * 40503) & 0xffff) as u16
}

/// One measured round of `spec` against `srv`.
fn run_round(spec: &Spec, srv: &Server, opts: &Opts, t0: Instant) -> Result<RoundRes, String> {
    let nonce = next_nonce();
    let mut target = srv.target.clone();
    let external = srv.kind == Kind::External;
    if !external {
        target.path = match spec.kind {
            WKind::Echo | WKind::MemEcho | WKind::MemIdle => "/echo".into(),
            WKind::Chat | WKind::Latency => format!("/chat/bench-{nonce:04x}"),
        };
    }
    let mode = match spec.kind {
        WKind::Echo | WKind::MemEcho | WKind::MemIdle => Mode::Echo {
            inflight: spec.inflight.max(1),
        },
        WKind::Chat | WKind::Latency => Mode::Chat {
            senders: spec.senders,
            rate_hz: spec.rate_hz,
        },
    };
    let secs = match spec.kind {
        WKind::Latency => opts.secs.max(3.0),
        _ => opts.secs,
    };
    let mut cl = Client::new(target, !external, t0, nonce, spec.size.max(MIN_SIZE), mode)
        .map_err(|e| e.to_string())?;
    let mut res = RoundRes::default();
    let pid = srv.pid;

    if spec.kind == WKind::MemIdle {
        let pid = pid.ok_or("mem/idle needs a server pid")?;
        let rss0 = status_kb(pid, "VmRSS:").unwrap_or(0);
        let (soft, _) = raise_nofile_limit();
        let fit = (soft as usize).saturating_sub(64).min(spec.conns);
        let open = cl.open_all(fit, Duration::from_secs(60));
        cl.pump_for(Duration::from_millis(300));
        settle(&[pid]);
        let rss1 = status_kb(pid, "VmRSS:").unwrap_or(0);
        res.errs = cl.errs.clone();
        if open == 0 {
            return Err("no connection opened".into());
        }
        res.mem_kb = (rss1.saturating_sub(rss0) * 1024) as f64 / open as f64;
        res.mem_note = format!(
            "{open} conns open (of {} wanted{}), RSS {rss0} -> {rss1} KiB",
            spec.conns,
            if fit < spec.conns {
                format!("; client fd limit {soft} allows {fit}")
            } else {
                String::new()
            }
        );
        drop(cl);
        settle(&[pid]);
        return Ok(res);
    }

    if let Mode::Chat { senders, .. } = mode {
        cl.expect = vec![0; spec.conns * senders];
    }
    let open = cl.open_all(spec.conns, Duration::from_secs(30));
    if open < spec.conns {
        let e = cl.errs.summary();
        let notes = cl.errs.notes.join("; ");
        return Err(format!(
            "only {open}/{} connections opened ({e}: {notes})",
            spec.conns
        ));
    }
    if let Mode::Chat { .. } = mode {
        let need_welcome = !external && cl.target.proto == Proto::Ws;
        if !cl.wait_quiet(need_welcome, Duration::from_secs(20)) {
            return Err(
                "chat setup: not every member got its welcome / traffic did not calm down".into(),
            );
        }
    }
    cl.start_sending();
    cl.pump_for(Duration::from_millis(300)); // warm-up
    let me = std::process::id();
    let (q0, r0) = (pid.and_then(wait_ns), wait_ns(me));
    let steal0 = steal_ticks();
    let (s0, c0, w0) = (pid.and_then(cpu_ns), cpu_ns(me), Instant::now());
    cl.measuring = true;
    cl.delivered = 0;
    cl.lat.clear();
    cl.pump_for(Duration::from_secs_f64(secs));
    cl.measuring = false;
    let (s1, c1, wall) = (pid.and_then(cpu_ns), cpu_ns(me), w0.elapsed().as_secs_f64());
    let (q1, r1) = (pid.and_then(wait_ns), wait_ns(me));
    res.steal = match (steal0, steal_ticks()) {
        (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => (s1 - s0) as f64 / (t1 - t0) as f64,
        _ => f64::NAN,
    };
    res.srv_wait = match (q0, q1) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e9 / wall,
        _ => f64::NAN,
    };
    res.cli_wait = match (r0, r1) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e9 / wall,
        _ => f64::NAN,
    };
    cl.drain_and_verify(Duration::from_secs(5));

    res.rate = cl.delivered as f64 / wall;
    if let (Some(a), Some(b)) = (s0, s1) {
        let cpu = (b.saturating_sub(a)) as f64 / 1e9;
        res.srv_cpu = cpu / wall;
        res.per_cpu = if cpu > 0.0 {
            cl.delivered as f64 / cpu
        } else {
            f64::NAN
        };
    } else {
        res.srv_cpu = f64::NAN;
        res.per_cpu = f64::NAN;
    }
    if let (Some(a), Some(b)) = (c0, c1) {
        res.cli_cpu = (b.saturating_sub(a)) as f64 / 1e9 / wall;
    }
    let mut lat = std::mem::take(&mut cl.lat);
    res.p50_us = percentile(&mut lat, 0.50);
    res.p99_us = percentile(&mut lat, 0.99);
    if spec.kind == WKind::MemEcho {
        if let Some(p) = pid {
            res.mem_kb = status_kb(p, "VmHWM:").unwrap_or(0) as f64;
            res.mem_note = format!("VmRSS now {} KiB", status_kb(p, "VmRSS:").unwrap_or(0));
        }
    }
    if cl.foreign > 0 {
        res.mem_note = format!("{} foreign messages skipped", cl.foreign);
    }
    res.errs = cl.errs.clone();
    drop(cl);
    if let Some(p) = pid {
        settle(&[p]);
    }
    Ok(res)
}

fn median(mut v: Vec<f64>) -> f64 {
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

#[derive(Clone, Debug, Default)]
struct Agg {
    rate: f64,
    per_cpu: f64,
    srv_cpu: f64,
    cli_cpu: f64,
    srv_wait: f64,
    cli_wait: f64,
    steal: f64,
    per_cpu_min: f64,
    per_cpu_max: f64,
    p50_us: f64,
    p99_us: f64,
    mem_kb: f64,
    note: String,
    errs: Errs,
    rounds: usize,
    failures: Vec<String>,
}

fn aggregate(rs: &[Result<RoundRes, String>]) -> Agg {
    let ok: Vec<&RoundRes> = rs.iter().filter_map(|r| r.as_ref().ok()).collect();
    let f = |g: fn(&RoundRes) -> f64| median(ok.iter().map(|r| g(r)).collect());
    let mut errs = Errs::default();
    for r in &ok {
        errs.add(&r.errs);
    }
    Agg {
        rate: f(|r| r.rate),
        per_cpu: f(|r| r.per_cpu),
        srv_cpu: f(|r| r.srv_cpu),
        cli_cpu: f(|r| r.cli_cpu),
        srv_wait: f(|r| r.srv_wait),
        cli_wait: f(|r| r.cli_wait),
        steal: f(|r| r.steal),
        per_cpu_min: ok.iter().map(|r| r.per_cpu).fold(f64::NAN, f64::min),
        per_cpu_max: ok.iter().map(|r| r.per_cpu).fold(f64::NAN, f64::max),
        p50_us: f(|r| r.p50_us),
        p99_us: f(|r| r.p99_us),
        mem_kb: f(|r| r.mem_kb),
        note: ok.last().map(|r| r.mem_note.clone()).unwrap_or_default(),
        errs,
        rounds: ok.len(),
        failures: rs
            .iter()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect(),
    }
}

fn fmt_num(x: f64) -> String {
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

fn fmt_pct(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{:.0}%", x * 100.0)
    }
}

/// Run-queue wait of server / client as % of wall time (how much other processes
/// delayed them), then the machine's steal time (how much the hypervisor did):
/// noise indicators, "0%/0% 0%" on a quiet machine.
fn fmt_wait(s: f64, c: f64, steal: f64) -> String {
    let p = |x: f64| {
        if x.is_nan() {
            "-".to_string()
        } else {
            format!("{:.0}%", x * 100.0)
        }
    };
    format!("{}/{} {}", p(s), p(c), p(steal))
}

fn fmt_us(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else if x >= 10_000.0 {
        format!("{:.1} ms", x / 1000.0)
    } else {
        format!("{:.0} us", x)
    }
}

struct Check {
    what: String,
    value: String,
    target: String,
    met: Option<bool>,
}

fn parse_url(u: &str) -> Result<Target, String> {
    // tcp://host:port speaks the raw echo protocol (same bytes, no handshake), and
    // tcp://host:port/chat the raw fan-out one
    let (rest, proto) = match (u.strip_prefix("ws://"), u.strip_prefix("tcp://")) {
        (Some(r), _) => (r, Proto::Ws),
        (_, Some(r)) => (r, Proto::Raw),
        _ => return Err("only ws:// (or tcp:// for a raw echo server) URLs are supported".into()),
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hp = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let addr = hp
        .to_socket_addrs()
        .map_err(|e| format!("resolve {hp}: {e}"))?
        .next()
        .ok_or(format!("resolve {hp}: no address"))?;
    Ok(Target {
        addr,
        host: hostport.to_string(),
        path: path.to_string(),
        proto,
    })
}

fn url_path(u: &str) -> String {
    parse_url(u).map(|t| t.path).unwrap_or_default()
}

fn run_all(opts: Opts) -> bool {
    let t0 = Instant::now();
    let started = Instant::now();
    let (soft, hard) = raise_nofile_limit();
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let pin = opts.pin && opts.url.is_none() && ncpu >= 2 && have_taskset();
    println!(
        "loopchat load bench: {} round(s) x {:.1} s per workload and server, interleaved",
        opts.rounds, opts.secs
    );
    println!(
        "client RLIMIT_NOFILE {soft} (hard {hard}); {ncpu} CPUs; load average {}",
        loadavg()
    );
    if pin {
        let me = std::process::id().to_string();
        let ok = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &me])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        println!(
            "pinning: servers on CPU 0, client on CPU 1{}",
            if ok { "" } else { " (client pin FAILED)" }
        );
    } else if opts.url.is_none() {
        println!(
            "pinning: off ({})",
            if !opts.pin {
                "--no-pin"
            } else if ncpu < 2 {
                "fewer than 2 CPUs"
            } else {
                "taskset not found"
            }
        );
    }
    let ext_target = match opts.url.as_deref().map(parse_url) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            eprintln!("--url: {e}");
            return false;
        }
        None => None,
    };
    if let Some(t) = &ext_target {
        println!("target: {} ({})", opts.url.as_deref().unwrap_or(""), t.addr);
        if !t.addr.ip().is_loopback() {
            println!("note: the target is not on loopback; network latency is included");
        }
    }
    let specs = workloads(&opts);
    if specs.is_empty() {
        println!("no workload matches");
        return true;
    }
    let mut checks: Vec<Check> = Vec::new();
    let mut table: Vec<String> = Vec::new();
    let mut all_ok = true;

    for spec in &specs {
        let kinds: Vec<Kind> = if ext_target.is_some() {
            vec![Kind::External]
        } else {
            match spec.kind {
                WKind::Echo | WKind::MemEcho | WKind::MemIdle => {
                    vec![Kind::Loopchat, Kind::Raw, Kind::Tokio]
                }
                WKind::Chat | WKind::Latency => {
                    vec![Kind::Loopchat, Kind::RawFanout, Kind::Tokio]
                }
            }
        };
        let rounds = match spec.kind {
            WKind::MemEcho | WKind::MemIdle => 1,
            _ => opts.rounds,
        };
        println!();
        let desc = match spec.kind {
            WKind::Echo => format!(
                "{} conns, {} B messages, {} in flight per conn",
                spec.conns, spec.size, spec.inflight
            ),
            WKind::Chat => format!(
                "{} receivers, {} sender(s), {} B messages (rates are deliveries)",
                spec.conns, spec.senders, spec.size
            ),
            WKind::Latency => format!(
                "{} receivers, {} senders x {} msg/s",
                spec.conns, spec.senders, spec.rate_hz
            ),
            WKind::MemEcho => format!(
                "peak RSS (VmHWM) of a fresh server echoing to {} conns, {} in flight",
                spec.conns, spec.inflight
            ),
            WKind::MemIdle => format!("RSS per idle WebSocket connection, {} conns", spec.conns),
        };
        println!("== {}: {}", spec.name, desc);
        let mut results: HashMap<Kind, Vec<Result<RoundRes, String>>> = HashMap::new();
        let fresh = matches!(spec.kind, WKind::MemEcho | WKind::MemIdle);
        // servers live for the whole workload (fresh ones per round for memory figures)
        let mut servers: Vec<Server> = Vec::new();
        if !fresh {
            for &k in &kinds {
                if k == Kind::External {
                    servers.push(Server {
                        kind: k,
                        child: None,
                        pid: opts.server_pid,
                        target: ext_target.clone().unwrap(),
                    });
                    continue;
                }
                match spawn_server(k, &opts, pin) {
                    Ok(s) => servers.push(s),
                    Err(e) => {
                        println!("   {}: cannot start: {e}", k.name());
                        results.entry(k).or_default().push(Err(e));
                    }
                }
            }
        }
        for round in 0..rounds {
            for &k in &kinds {
                let r = if fresh {
                    let srv = if k == Kind::External {
                        Ok(Server {
                            kind: k,
                            child: None,
                            pid: opts.server_pid,
                            target: ext_target.clone().unwrap(),
                        })
                    } else {
                        spawn_server(k, &opts, pin)
                    };
                    srv.and_then(|s| run_round(spec, &s, &opts, t0))
                } else if let Some(s) = servers.iter().find(|s| s.kind == k) {
                    run_round(spec, s, &opts, t0)
                } else {
                    continue;
                };
                match &r {
                    Err(e) => println!("   round {} {}: FAILED: {e}", round + 1, k.name()),
                    Ok(x) if opts.verbose || spec.kind == WKind::Latency => println!(
                        "   round {} {:<18} {:>12} {:>14} {:>8} {:>8} {:>9} {:>9} {:>13}  {}{}",
                        round + 1,
                        k.name(),
                        fmt_num(x.rate),
                        fmt_num(x.per_cpu),
                        fmt_pct(x.srv_cpu),
                        fmt_pct(x.cli_cpu),
                        fmt_us(x.p50_us),
                        fmt_us(x.p99_us),
                        fmt_wait(x.srv_wait, x.cli_wait, x.steal),
                        x.errs.summary(),
                        if x.mem_kb > 0.0 {
                            format!(" mem {:.0}", x.mem_kb)
                        } else {
                            String::new()
                        }
                    ),
                    Ok(_) => {}
                }
                results.entry(k).or_default().push(r);
            }
        }
        drop(servers);

        let aggs: HashMap<Kind, Agg> = results.iter().map(|(k, v)| (*k, aggregate(v))).collect();
        if fresh {
            println!(
                "   {:<18} {:>14}  detail",
                "server",
                if spec.kind == WKind::MemEcho {
                    "VmHWM"
                } else {
                    "bytes/conn"
                },
            );
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
        for &k in &kinds {
            let Some(a) = aggs.get(&k) else { continue };
            if a.rounds == 0 {
                println!("   {:<18} no successful round", k.name());
                all_ok = false;
                continue;
            }
            if fresh {
                let v = if spec.kind == WKind::MemEcho {
                    format!("{} KiB", fmt_num(a.mem_kb))
                } else {
                    format!("{} B", fmt_num(a.mem_kb))
                };
                println!(
                    "   {:<18} {:>14}  {}{}",
                    k.name(),
                    v,
                    a.note,
                    if a.errs.total() > 0 {
                        format!(" errors: {}", a.errs.summary())
                    } else {
                        String::new()
                    }
                );
            } else {
                println!(
                    "   {:<18} {:>12} {:>14} {:>8} {:>8} {:>9} {:>9} {:>13}  {}",
                    k.name(),
                    fmt_num(a.rate),
                    fmt_num(a.per_cpu),
                    fmt_pct(a.srv_cpu),
                    fmt_pct(a.cli_cpu),
                    fmt_us(a.p50_us),
                    fmt_us(a.p99_us),
                    fmt_wait(a.srv_wait, a.cli_wait, a.steal),
                    a.errs.summary()
                );
                table.push(format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    spec.name,
                    k.name(),
                    fmt_num(a.rate),
                    fmt_num(a.per_cpu),
                    if a.rounds > 1 {
                        format!("{}-{}", fmt_num(a.per_cpu_min), fmt_num(a.per_cpu_max))
                    } else {
                        "-".into()
                    },
                    fmt_pct(a.srv_cpu),
                    fmt_pct(a.cli_cpu),
                    fmt_us(a.p50_us),
                    fmt_us(a.p99_us),
                    fmt_wait(a.srv_wait, a.cli_wait, a.steal),
                    a.errs.summary()
                ));
                if a.cli_cpu > 0.93 {
                    println!(
                        "   {:<18} (client near 100% CPU: this server may be client-bound here)",
                        ""
                    );
                }
            }
            if a.errs.total() > 0 {
                all_ok = false;
                for n in &a.errs.notes {
                    println!("      ! {n}");
                }
            }
            if !a.failures.is_empty() {
                all_ok = false;
            }
        }
        if !fresh && a_has_note(&aggs) {
            for (k, a) in &aggs {
                if !a.note.is_empty() {
                    println!("   note ({}): {}", k.name(), a.note);
                }
            }
        }

        // ratios and targets
        let lc = aggs.get(&Kind::Loopchat).filter(|a| a.rounds > 0);
        let ratio = |other: Kind| -> Option<f64> {
            let o = aggs.get(&other).filter(|a| a.rounds > 0)?;
            Some(lc?.per_cpu / o.per_cpu)
        };
        let mut check = |what: String, value: String, target: String, met: Option<bool>| {
            println!(
                "   {what}: {value}  [target {target}: {}]",
                match met {
                    Some(true) => "MET",
                    Some(false) => "NOT MET",
                    None => "n/a",
                }
            );
            checks.push(Check {
                what,
                value,
                target,
                met,
            });
        };
        // The server whose own figures (latency, memory) are checked.
        let k = if ext_target.is_some() {
            Kind::External
        } else {
            Kind::Loopchat
        };
        match spec.kind {
            WKind::Echo if ext_target.is_none() => {
                if let Some(r) = ratio(Kind::Raw) {
                    check(
                        format!(
                            "{} loopchat / raw TCP echo, msgs per server-CPU-s",
                            spec.name
                        ),
                        format!("{r:.3}x"),
                        ">= 0.9x".into(),
                        Some(r >= 0.9),
                    );
                }
                if let Some(r) = ratio(Kind::Tokio) {
                    check(
                        format!(
                            "{} loopchat / tokio-tungstenite, msgs per server-CPU-s",
                            spec.name
                        ),
                        format!("{r:.3}x"),
                        ">= 2x".into(),
                        Some(r >= 2.0),
                    );
                }
            }
            WKind::Chat if ext_target.is_none() => {
                if let Some(r) = ratio(Kind::RawFanout) {
                    println!(
                        "   (loopchat / raw TCP fan-out deliveries per server-CPU-s: {r:.3}x; \
                         no target, the fan-out is the limit)"
                    );
                }
                if let Some(r) = ratio(Kind::Tokio) {
                    check(
                        format!(
                            "{} loopchat / tokio-tungstenite, deliveries per server-CPU-s",
                            spec.name
                        ),
                        format!("{r:.3}x"),
                        ">= 1.5x".into(),
                        Some(r >= 1.5),
                    );
                }
            }
            WKind::Latency => {
                if let Some(a) = aggs.get(&k).filter(|a| a.rounds > 0) {
                    check(
                        format!("{} {} p99 latency", spec.name, k.name()),
                        fmt_us(a.p99_us),
                        "< 5 ms".into(),
                        Some(a.p99_us < 5000.0),
                    );
                }
                if let Some(a) = aggs.get(&Kind::RawFanout).filter(|a| a.rounds > 0) {
                    println!(
                        "   (raw TCP fan-out, the limit of one loop on this machine: p99 {})",
                        fmt_us(a.p99_us)
                    );
                }
                if let Some(r) = ratio(Kind::Tokio) {
                    println!(
                        "   (loopchat / tokio-tungstenite deliveries per server-CPU-s: {r:.3}x)"
                    );
                }
            }
            WKind::MemEcho => {
                if let Some(a) = aggs.get(&k).filter(|a| a.rounds > 0) {
                    check(
                        format!("{} {} peak RSS", spec.name, k.name()),
                        format!("{:.1} MB", a.mem_kb * 1024.0 / 1e6),
                        "< 8 MB".into(),
                        Some(a.mem_kb * 1024.0 < 8e6),
                    );
                }
            }
            WKind::MemIdle => {
                if let Some(a) = aggs.get(&k).filter(|a| a.rounds > 0) {
                    check(
                        format!("{} {} RSS per idle conn", spec.name, k.name()),
                        format!("{:.0} B", a.mem_kb),
                        "< 4 KiB".into(),
                        Some(a.mem_kb < 4096.0),
                    );
                }
            }
            _ => {}
        }
    }

    println!();
    println!(
        "== summary ({:.0} s; load average now {})",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    if !table.is_empty() {
        println!();
        println!("| workload | server | msgs/s | msgs per server-CPU-s | (min-max over rounds) | server CPU | client CPU | p50 | p99 | run-queue wait srv/cli, steal | errors |");
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for l in &table {
            println!("{l}");
        }
    }
    if !checks.is_empty() {
        println!();
        println!("| target | measured | goal | |");
        println!("|---|---:|---|---|");
        for c in &checks {
            let m = match c.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "n/a",
            };
            println!("| {} | {} | {} | {} |", c.what, c.value, c.target, m);
        }
    }
    if !all_ok {
        println!("\nsome rounds failed or saw errors (see above)");
    }
    all_ok
}

fn a_has_note(aggs: &HashMap<Kind, Agg>) -> bool {
    aggs.values().any(|a| !a.note.is_empty())
}

// ---------------------------------------------------------------------------------------
// Comparison server 1: raw TCP echo on one mio loop (no framing)
// ---------------------------------------------------------------------------------------

const RAW_LISTENER: Token = Token(usize::MAX);

/// A poll with a listener on 127.0.0.1:`port`, for the two raw servers.
fn raw_listen(port: u16) -> (Poll, TcpListener) {
    let poll = Poll::new().expect("poll");
    let mut listener = TcpListener::bind(([127, 0, 0, 1], port).into()).expect("bind");
    poll.registry()
        .register(&mut listener, RAW_LISTENER, Interest::READABLE)
        .expect("register");
    (poll, listener)
}

/// Waits for events; a signal's interruption is not an error.
fn raw_poll(poll: &mut Poll, events: &mut Events) {
    while let Err(e) = poll.poll(events, None) {
        if e.kind() != io::ErrorKind::Interrupted {
            panic!("poll: {e}");
        }
    }
}

/// Accepts every waiting connection into `conns`, registered for reading and
/// writing, as `make` builds it.
fn raw_accept<C>(
    listener: &mut TcpListener,
    poll: &Poll,
    conns: &mut slab::Slab<C>,
    make: impl Fn(TcpStream) -> C,
) {
    loop {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nodelay(true);
                let e = conns.vacant_entry();
                let interest = Interest::READABLE | Interest::WRITABLE;
                if poll
                    .registry()
                    .register(&mut s, Token(e.key()), interest)
                    .is_ok()
                {
                    e.insert(make(s));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break, // e.g. EMFILE: try again on the next event
        }
    }
}

struct RawConn {
    sock: TcpStream,
    out: Vec<u8>,
}

fn serve_raw_echo(port: u16) {
    let (mut poll, mut listener) = raw_listen(port);
    let mut conns: slab::Slab<RawConn> = slab::Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        raw_poll(&mut poll, &mut events);
        for ev in events.iter() {
            if ev.token() == RAW_LISTENER {
                raw_accept(&mut listener, &poll, &mut conns, |sock| RawConn {
                    sock,
                    out: Vec::new(),
                });
                continue;
            }
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            let mut close = ev.is_error();
            if !close && ev.is_writable() && !c.out.is_empty() {
                close = write_some(&mut c.sock, &c.out)
                    .map(|w| {
                        c.out.drain(..w);
                    })
                    .is_err();
            }
            if !close && (ev.is_readable() || ev.is_read_closed()) {
                loop {
                    match c.sock.read(&mut buf) {
                        Ok(0) => {
                            close = true;
                            break;
                        }
                        Ok(n) => {
                            if c.out.is_empty() {
                                match write_some(&mut c.sock, &buf[..n]) {
                                    Ok(w) => c.out.extend_from_slice(&buf[w..n]),
                                    Err(_) => close = true,
                                }
                            } else {
                                c.out.extend_from_slice(&buf[..n]);
                            }
                            if close || n < buf.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            close = true;
                            break;
                        }
                    }
                }
            }
            if close {
                let mut c = conns.remove(key);
                let _ = poll.registry().deregister(&mut c.sock);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Comparison server 1b: raw TCP fan-out on one mio loop (framing only to find boundaries)
// ---------------------------------------------------------------------------------------
//
// The physical limit for broadcast: every connection is in one group, and each client
// frame read from any connection is relayed, byte for byte (still masked), to every
// connection, sender included. The server looks at frame headers only to cut the
// stream at frame boundaries (so frames from two senders never interleave); it does not
// unmask, validate UTF-8, wrap the text in JSON or keep history. Like loopchat, it
// gathers everything read in one loop iteration into one shared batch and writes it to
// each connection once at the end of the iteration.

struct FanoutConn {
    sock: TcpStream,
    partial: Vec<u8>, // the start of a frame not yet read whole
    out: Vec<u8>,     // what the socket did not take yet
    dirty: bool,
}

/// Bytes of complete frames at the start of `b` (masked client frames).
fn whole_frames_len(b: &[u8]) -> usize {
    let mut pos = 0;
    while let Some((hl, _, _, _, len)) = parse_header(&b[pos..]) {
        let end = pos + hl + len as usize;
        if end > b.len() {
            break;
        }
        pos = end;
    }
    pos
}

fn serve_raw_fanout(port: u16) {
    const MAX_OUT: usize = 64 << 20; // a reader this far behind is dropped
    let (mut poll, mut listener) = raw_listen(port);
    let mut conns: slab::Slab<FanoutConn> = slab::Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut batch: Vec<u8> = Vec::new();
    let mut closed: Vec<usize> = Vec::new();
    loop {
        raw_poll(&mut poll, &mut events);
        for ev in events.iter() {
            if ev.token() == RAW_LISTENER {
                raw_accept(&mut listener, &poll, &mut conns, |sock| FanoutConn {
                    sock,
                    partial: Vec::new(),
                    out: Vec::new(),
                    dirty: false,
                });
                continue;
            }
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            if ev.is_error() {
                closed.push(key);
                continue;
            }
            if ev.is_writable() && !c.out.is_empty() {
                c.dirty = true;
            }
            if ev.is_readable() || ev.is_read_closed() {
                loop {
                    match c.sock.read(&mut buf) {
                        Ok(0) => {
                            closed.push(key);
                            break;
                        }
                        Ok(n) => {
                            c.partial.extend_from_slice(&buf[..n]);
                            let whole = whole_frames_len(&c.partial);
                            batch.extend_from_slice(&c.partial[..whole]);
                            c.partial.drain(..whole);
                            if n < buf.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            closed.push(key);
                            break;
                        }
                    }
                }
            }
        }
        // One write per connection for everything read in this iteration.
        for (key, c) in conns.iter_mut() {
            if batch.is_empty() && !c.dirty {
                continue;
            }
            c.dirty = false;
            let failed = if c.out.is_empty() {
                write_some(&mut c.sock, &batch).map(|w| c.out.extend_from_slice(&batch[w..]))
            } else {
                c.out.extend_from_slice(&batch);
                write_some(&mut c.sock, &c.out).map(|w| {
                    c.out.drain(..w);
                })
            }
            .is_err();
            if failed || c.out.len() > MAX_OUT {
                closed.push(key);
            }
        }
        batch.clear();
        for key in closed.drain(..) {
            if let Some(mut c) = conns.try_remove(key) {
                let _ = poll.registry().deregister(&mut c.sock);
            }
        }
    }
}

/// Writes as much of `b` as the socket takes; returns how much that was.
fn write_some(sock: &mut TcpStream, b: &[u8]) -> io::Result<usize> {
    let mut off = 0;
    while off < b.len() {
        match sock.write(&b[off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(off)
}

// ---------------------------------------------------------------------------------------
// Comparison server 2: tokio-tungstenite, current-thread runtime
// ---------------------------------------------------------------------------------------
//
// /echo echoes text as text and binary as binary; /chat/<room> broadcasts, to every member
// (sender included), the same JSON `message` object loopchat sends, serialised once per
// message and shared (Utf8Bytes is reference counted) through a tokio broadcast channel.
// Each connection is one task that feeds everything already available and flushes once
// (not a write per message), as a careful user would write it. A member that lags
// more than the channel capacity is closed with 1008, like loopchat's --max-output.

struct TokioState {
    rooms: Mutex<HashMap<String, tokio::sync::broadcast::Sender<tungstenite::Utf8Bytes>>>,
    next_id: AtomicU64,
}

fn serve_tokio(port: u16, read_buffer: Option<usize>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let state = Arc::new(TokioState {
            rooms: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        loop {
            match listener.accept().await {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    tokio::spawn(tokio_conn(sock, state.clone(), read_buffer));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await, // EMFILE etc.
            }
        }
    });
}

fn json_escape(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[allow(clippy::result_large_err)] // the callback's signature is tungstenite's
async fn tokio_conn(
    sock: tokio::net::TcpStream,
    state: Arc<TokioState>,
    read_buffer: Option<usize>,
) {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let mut path = String::new();
    let cb = |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let config =
        read_buffer.map(|n| tungstenite::protocol::WebSocketConfig::default().read_buffer_size(n));
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(sock, cb, config).await else {
        return;
    };
    if path == "/echo" {
        tokio_echo(ws).await;
    } else if path == "/chat" || path.starts_with("/chat/") {
        let room = path.strip_prefix("/chat/").unwrap_or("lobby").to_string();
        tokio_chat(ws, room, state).await;
    }
}

async fn tokio_echo(mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) {
    use futures_util::{FutureExt, SinkExt, StreamExt};
    use tungstenite::Message;
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                if ws.feed(msg).await.is_err() {
                    return;
                }
                // echo whatever else is already decoded/buffered, then flush once
                loop {
                    match ws.next().now_or_never() {
                        Some(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => {
                            if ws.feed(m).await.is_err() {
                                return;
                            }
                        }
                        Some(Some(Ok(Message::Close(_)))) | Some(None) | Some(Some(Err(_))) => {
                            let _ = ws.flush().await;
                            return;
                        }
                        Some(Some(Ok(_))) => {}
                        None => break,
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
            Message::Close(_) => break,
            _ => {} // pings are answered by tungstenite
        }
    }
}

async fn tokio_chat(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    room: String,
    state: Arc<TokioState>,
) {
    use futures_util::{SinkExt, StreamExt};
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    use tungstenite::protocol::frame::coding::CloseCode;
    use tungstenite::protocol::CloseFrame;
    use tungstenite::Message;
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let tx = {
        let mut rooms = state.rooms.lock().unwrap();
        rooms
            .entry(room.clone())
            .or_insert_with(|| tokio::sync::broadcast::channel(4096).0)
            .clone()
    };
    let mut rx = tx.subscribe();
    let online = tx.receiver_count();
    let welcome = format!("{{\"type\":\"welcome\",\"id\":{id},\"name\":\"guest-{id}\",\"room\":\"{room}\",\"online\":{online}}}");
    if ws.send(Message::text(welcome)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let mut j = String::with_capacity(t.len() + 96);
                    let _ = write!(j, "{{\"type\":\"message\",\"id\":{id},\"from\":\"guest-{id}\",\"text\":\"");
                    json_escape(&mut j, t.as_str());
                    let _ = write!(j, "\",\"ts\":{},\"room\":\"{room}\"}}", now_ms_epoch());
                    let _ = tx.send(j.into());
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            r = rx.recv() => match r {
                Ok(m) => {
                    if ws.feed(Message::Text(m)).await.is_err() {
                        break;
                    }
                    let mut lagged = false;
                    loop {
                        match rx.try_recv() {
                            Ok(m) => {
                                if ws.feed(Message::Text(m)).await.is_err() {
                                    lagged = true;
                                    break;
                                }
                            }
                            Err(TryRecvError::Lagged(_)) => {
                                lagged = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if lagged || ws.flush().await.is_err() {
                        let _ = ws.close(Some(CloseFrame { code: CloseCode::Policy, reason: "too slow".into() })).await;
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    let _ = ws.close(Some(CloseFrame { code: CloseCode::Policy, reason: "too slow".into() })).await;
                    break;
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
    drop(rx);
    if tx.receiver_count() == 0 {
        let mut rooms = state.rooms.lock().unwrap();
        if rooms
            .get(&room)
            .map(|t| t.receiver_count() == 0)
            .unwrap_or(false)
        {
            rooms.remove(&room);
        }
    }
}
