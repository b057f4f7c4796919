//! The command line: the help text, the options a run takes, and their parsing.

use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;

pub const HELP: &str = "\
loopchat load benchmark

usage: cargo bench --bench load -- [options] [FILTER...]

  --quick              one round, a subset of the workloads
  --filter NAME        only workloads whose name contains NAME (repeatable; bare
                       words are filters too). Names: echo/c100/if1 ... chat/r1000/s10/1KiB,
                       relay/r100/s1/32B ... relay/r1000/s10/1KiB,
                       latency/r1000/s10x10hz, mem/echo1000, mem/idle10000,
                       bigroom/m19000
  --rounds N           interleaved rounds per workload (default 3, --quick: 1)
  --secs S             measured seconds per round (default 2)
  --idle-conns N       connections for mem/idle (default 10000)
  --bigroom-members N  members of bigroom/mN (default 19000): one room filled from
                       two client processes (each holds half the sockets), with a
                       fresh server per round; it needs an open-files hard limit of
                       N + 64 for the server and N/2 + 64 for the clients
  --bigroom-in-flight N
                       big-room connections on their way (connecting, upgrading or
                       waiting for their welcome) at once, over both client
                       processes (default 128: loopchat's listen backlog is 128)
  --no-pin             do not pin server to CPU 0 and client to CPU 1
  --cluster            also run the cluster workloads (loopchat nodes over one
                       Redis; ~2 min): cluster/n1/r100/s10/32B ... cluster/n2/r1000/s1/1KiB.
                       A filter naming `cluster` selects them too (--filter cluster/)
  --redis-server PATH  redis-server for the cluster workloads (default: on PATH)
  --verbose            print every round, not only the medians
  --tokio-read-buffer N|default
                       tungstenite read_buffer_size for the tokio server (default:
                       4096, as a careful user sets it; `default` keeps tungstenite's
                       own, 128 KiB, zero-filled before every read)
  --loopchat PATH      loopchat binary (default: the one cargo built; it is run with
                       --max-message-rate 0, flood control off)
  --loopchat-arg ARG   extra argument for loopchat (repeatable; after the defaults)
  --url ws://H:P/PATH  measure this server instead (echo workloads; chat workloads
                       when PATH starts with /chat, relay workloads when it starts
                       with /relay); no ratios. A loopchat there should run with
                       --max-message-rate 0. tcp://H:P targets a raw TCP echo server
                       (e.g. `load --serve raw-echo PORT`), and tcp://H:P/chat or
                       tcp://H:P/relay a raw fan-out (`load --serve raw-fanout PORT`)
  --server-pid PID     with --url: read that process's CPU time and memory
  --serve raw-echo|raw-fanout|tokio PORT [READ_BUFFER]
                       (internal) run a comparison server
  --bigroom-worker ... (internal) one client process of the big-room workload
";

/// The tokio server's read buffer unless `--tokio-read-buffer` says otherwise: 4 KiB,
/// as a careful user configures it (tungstenite's own default is 128 KiB, which it
/// zero-fills before every read).
pub const DEFAULT_TOKIO_READ_BUFFER: usize = 4096;

/// What one run of the bench was asked to do.
#[derive(Clone)]
pub struct Options {
    pub quick: bool,
    pub filters: Vec<String>,
    pub rounds: usize,
    pub secs: f64,
    pub idle_conns: usize,
    pub pin: bool,
    pub loopchat_bin: PathBuf,
    pub loopchat_args: Vec<String>,
    pub url: Option<String>,
    pub server_pid: Option<u32>,
    pub verbose: bool,
    /// Run the cluster workloads (`cluster.rs`) too.
    pub cluster: bool,
    pub redis_server: PathBuf,
    /// tungstenite's read_buffer_size for the tokio server; `None`: its default.
    pub tokio_read_buffer: Option<usize>,
    /// The big room's members, and its connections on their way at once.
    pub bigroom_members: usize,
    pub bigroom_in_flight: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            quick: false,
            filters: vec![],
            rounds: 0, // 0: not given, see `parse`
            secs: 2.0,
            idle_conns: 10_000,
            pin: true,
            loopchat_bin: PathBuf::from(env!("CARGO_BIN_EXE_loopchat")),
            loopchat_args: vec![],
            url: None,
            server_pid: None,
            verbose: false,
            cluster: false,
            redis_server: PathBuf::from("redis-server"),
            tokio_read_buffer: Some(DEFAULT_TOKIO_READ_BUFFER),
            bigroom_members: 19_000,
            bigroom_in_flight: 128,
        }
    }
}

/// Parses the arguments after `--`. `Err("")` asks for the help, any other `Err` is a
/// usage error to print above it.
pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => {} // cargo bench passes this to harness = false targets
            "--quick" => o.quick = true,
            "--no-pin" => o.pin = false,
            "--verbose" | "-v" => o.verbose = true,
            "--cluster" => o.cluster = true,
            "--redis-server" => o.redis_server = PathBuf::from(value(arg)?),
            "--tokio-read-buffer" => {
                o.tokio_read_buffer = match value(arg)?.as_str() {
                    "default" => None,
                    n => Some(number(arg, n.to_string())?),
                }
            }
            "--filter" => o.filters.push(value(arg)?),
            "--rounds" => o.rounds = number(arg, value(arg)?)?,
            "--secs" => o.secs = number(arg, value(arg)?)?,
            "--idle-conns" => o.idle_conns = number(arg, value(arg)?)?,
            "--bigroom-members" => o.bigroom_members = number(arg, value(arg)?)?,
            "--bigroom-in-flight" => o.bigroom_in_flight = number(arg, value(arg)?)?,
            "--loopchat" => o.loopchat_bin = PathBuf::from(value(arg)?),
            "--loopchat-arg" => o.loopchat_args.push(value(arg)?),
            "--url" => o.url = Some(value(arg)?),
            "--server-pid" => o.server_pid = Some(number(arg, value(arg)?)?),
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
    o.bigroom_members = o.bigroom_members.clamp(2, 100_000);
    o.bigroom_in_flight = o.bigroom_in_flight.clamp(2, 10_000);
    o.rounds = o.rounds.clamp(1, 50);
    Ok(o)
}

/// The value of option `name` as a number.
fn number<T: FromStr>(name: &str, text: String) -> Result<T, String>
where
    T::Err: Display,
{
    text.parse().map_err(|e| format!("{name}: {e}"))
}
