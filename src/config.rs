//! Every tunable and limit of the server, with its default, its flag and its check.
//!
//! `Config::default()` is what `cargo run --release` uses; [`parse_args`] turns the
//! command line into a `Config`. A limit that is crossed at run time gets the close
//! code or HTTP status of the RFC that governs it; see the README's table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The server's settings. Every field has a command-line flag.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--addr`: the address to listen on.
    pub addr: SocketAddr,
    /// `--static-dir`: serve files from this folder instead of the embedded page.
    pub static_dir: Option<PathBuf>,
    /// `--log-level` (or `RUST_LOG`): error, warn, info, debug, trace or off.
    pub log_level: log::LevelFilter,
    /// `--ping-interval`: how often each WebSocket peer is pinged; a peer that has
    /// not answered the previous ping by the next one is dropped.
    pub ping_interval: Duration,
    /// `--max-message-size`: the largest message accepted on `/echo`, in bytes
    /// (close 1009).
    pub max_message_size: usize,
    /// `--max-chat-message-size`: the largest message accepted on `/chat`
    /// (close 1009): chat-sized, as a chat message is kept in history and sent
    /// to every member.
    pub max_chat_message_size: usize,
    /// `--input-budget`: bytes held for unfinished messages over all connections;
    /// past it the largest holder is closed with 1013 (Try Again Later).
    pub input_budget: usize,
    /// `--message-timeout`: time a message may take from its first byte, before
    /// the `--message-min-rate` extension (close 1008 when crossed).
    pub message_timeout: Duration,
    /// `--message-min-rate`: bytes per second that earn a message in progress one
    /// more second (0: none; the timeout alone bounds a message).
    pub message_min_rate: usize,
    /// `--max-output`: bytes queued for one peer beyond which it is a slow reader
    /// and is disconnected (close 1008).
    pub max_output: usize,
    /// `--max-header-bytes`: the largest HTTP request head (431).
    pub max_header_bytes: usize,
    /// `--max-headers`: the most header fields in one request (431).
    pub max_headers: usize,
    /// `--handshake-timeout`: time allowed from accept to a complete request
    /// head; on a keep-alive connection, time allowed without progress (a
    /// response being read, or the next request). Slower connections are closed.
    pub handshake_timeout: Duration,
    /// `--close-timeout`: how long the server waits for the peer's side of a
    /// closing handshake (and for the peer to close TCP) before dropping it.
    pub close_timeout: Duration,
    /// `--max-connections`: open connections beyond which new ones get 503.
    /// `None`: derived from the open-files limit at start.
    pub max_connections: Option<usize>,
    /// `--history`: chat messages replayed to a newcomer, per room.
    pub history: usize,
    /// `--history-bytes`: bytes of history kept per room (older messages go first).
    pub history_bytes: usize,
    /// `--idle-rooms`: rooms without members whose history is kept.
    pub idle_rooms: usize,
    /// `--history-budget`: bytes of history kept over all rooms; past it the
    /// least recently active rooms' history goes first.
    pub history_budget: usize,
    /// `--max-connections-per-ip`: open connections from one address beyond
    /// which new ones get 503. `None` (the default): no such limit, so that load
    /// tests from one machine work.
    pub max_connections_per_ip: Option<usize>,
    /// `--allowed-origin` (repeatable): browser origins allowed besides the
    /// server's own; `*` allows all.
    pub allowed_origins: Vec<String>,
    /// `--shutdown-timeout`: on SIGINT/SIGTERM, how long to flush close frames.
    pub shutdown_timeout: Duration,
    /// `--permessage-deflate`: offer RFC 7692 compression to clients that ask.
    pub permessage_deflate: bool,
    /// `--deflate-min-size`: messages shorter than this go out uncompressed.
    pub deflate_min_size: usize,
    /// `--deflate-level`: 1 (fastest) to 9 (smallest).
    pub deflate_level: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            static_dir: None,
            log_level: log::LevelFilter::Info,
            ping_interval: Duration::from_secs(30),
            max_message_size: 1 << 20,
            max_chat_message_size: 64 * 1024,
            input_budget: 64 << 20,
            message_timeout: Duration::from_secs(10),
            message_min_rate: 1024,
            max_output: 1 << 20,
            max_header_bytes: 8 * 1024,
            max_headers: 64,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            max_connections: None,
            history: 50,
            history_bytes: 64 * 1024,
            idle_rooms: 64,
            history_budget: 32 << 20,
            max_connections_per_ip: None,
            allowed_origins: Vec::new(),
            shutdown_timeout: Duration::from_secs(2),
            permessage_deflate: false,
            deflate_min_size: 256,
            deflate_level: 1,
        }
    }
}

/// The usage text printed by `--help`.
pub const USAGE: &str = "\
loopchat: a WebSocket chat server on one mio poll loop (RFC 6455)

USAGE:
    loopchat [OPTIONS]

Serves the chat page at http://ADDR/, the chat at ws://ADDR/chat[/ROOM]
(?name=NICK), an echo endpoint at ws://ADDR/echo, and metrics at /metrics.

OPTIONS:
    --addr ADDR               listen address [default: 127.0.0.1:8080]
    --static-dir DIR          serve files from DIR instead of the embedded page
    --log-level LEVEL         off|error|warn|info|debug|trace [default: info, or RUST_LOG]
    --ping-interval DUR       ping every peer this often; no pong by the next ping
                              drops it [default: 30s]
    --max-message-size SIZE   largest message on /echo; larger gets close 1009 [default: 1MiB]
    --max-chat-message-size SIZE
                              largest message on /chat; larger gets close 1009 [default: 64KiB]
    --input-budget SIZE       bytes held for unfinished messages over all connections;
                              past it the largest holder gets close 1013 [default: 64MiB]
    --message-timeout DUR     time a message may take from its first byte, plus one
                              second per --message-min-rate bytes received; slower
                              gets close 1008 [default: 10s]
    --message-min-rate SIZE   bytes per second that earn a message more time
                              (0: none) [default: 1KiB]
    --max-output SIZE         bytes queued for one peer before it is dropped as a
                              slow reader with close 1008 [default: 1MiB]
    --max-header-bytes SIZE   largest request head; larger gets 431 [default: 8KiB]
    --max-headers N           most header fields in a request; more gets 431 [default: 64]
    --handshake-timeout DUR   time allowed for a complete request, and for an idle
                              or stalled keep-alive connection [default: 10s]
    --close-timeout DUR       time allowed for the peer's side of a close [default: 5s]
    --max-connections N       open connections before new ones get 503
                              [default: the open-files limit less 64]
    --history N               chat messages replayed to a newcomer [default: 50]
    --history-bytes SIZE      bytes of history kept per room [default: 64KiB]
    --idle-rooms N            rooms without members whose history is kept [default: 64]
    --history-budget SIZE     bytes of history kept over all rooms; the least
                              recently active rooms' go first [default: 32MiB]
    --max-connections-per-ip N
                              open connections from one address before new ones
                              get 503 [default: no limit]
    --allowed-origin ORIGIN   allow browser pages from ORIGIN (repeatable; * for any)
                              [default: only the server's own origin]
    --shutdown-timeout DUR    time to flush close frames on SIGINT/SIGTERM [default: 2s]
    --permessage-deflate      compress messages for clients that offer it (RFC 7692)
                              [default: off]
    --deflate-min-size SIZE   messages shorter than this go out uncompressed [default: 256]
    --deflate-level N         1 (fastest) to 9 (smallest) [default: 1]
    -h, --help                print this help

DUR is seconds (\"30\", \"0.5\", \"30s\") or milliseconds (\"250ms\").
SIZE is bytes with an optional suffix: K, KiB, M, MiB (1024-based).
";

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Help,
}

/// Parses the arguments after the program name. `rust_log` is the value of the
/// `RUST_LOG` variable, used when `--log-level` is not given.
pub fn parse_args<I>(args: I, rust_log: Option<&str>) -> Result<Command, String>
where
    I: IntoIterator<Item = String>,
{
    let mut config = Config::default();
    if let Some(level) = rust_log.and_then(level_from_rust_log) {
        config.log_level = level;
    }
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Accept both "--flag value" and "--flag=value".
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let bad = |what: &str, v: &str| format!("{flag}: {what}: {v:?}");
        match flag.as_str() {
            "--addr" => {
                let v = value()?;
                config.addr = v
                    .parse()
                    .map_err(|_| bad("not an address like 127.0.0.1:8080", &v))?;
            }
            "--static-dir" => {
                let dir = PathBuf::from(value()?);
                if !dir.is_dir() {
                    return Err(bad("not a directory", &dir.display().to_string()));
                }
                config.static_dir = Some(dir);
            }
            "--log-level" => {
                let v = value()?;
                config.log_level = parse_level(&v).map_err(|e| format!("{flag}: {e}"))?;
            }
            "--ping-interval" => config.ping_interval = positive_duration(&flag, &value()?)?,
            "--max-message-size" => config.max_message_size = positive_size(&flag, &value()?)?,
            "--max-chat-message-size" => {
                config.max_chat_message_size = positive_size(&flag, &value()?)?
            }
            "--input-budget" => config.input_budget = positive_size(&flag, &value()?)?,
            "--message-timeout" => config.message_timeout = positive_duration(&flag, &value()?)?,
            "--message-min-rate" => config.message_min_rate = size(&flag, &value()?)?,
            "--history-budget" => config.history_budget = size(&flag, &value()?)?,
            "--max-connections-per-ip" => {
                config.max_connections_per_ip = Some(positive_count(&flag, &value()?)?)
            }
            "--max-output" => config.max_output = positive_size(&flag, &value()?)?,
            "--max-header-bytes" => config.max_header_bytes = positive_size(&flag, &value()?)?,
            "--max-headers" => config.max_headers = positive_count(&flag, &value()?)?,
            "--handshake-timeout" => {
                config.handshake_timeout = positive_duration(&flag, &value()?)?
            }
            "--close-timeout" => config.close_timeout = positive_duration(&flag, &value()?)?,
            "--max-connections" => config.max_connections = Some(positive_count(&flag, &value()?)?),
            "--history" => config.history = count(&flag, &value()?)?,
            "--history-bytes" => config.history_bytes = positive_size(&flag, &value()?)?,
            "--idle-rooms" => config.idle_rooms = count(&flag, &value()?)?,
            "--allowed-origin" => config.allowed_origins.push(value()?),
            "--shutdown-timeout" => config.shutdown_timeout = positive_duration(&flag, &value()?)?,
            "--permessage-deflate" if cfg!(feature = "deflate") => config.permessage_deflate = true,
            "--permessage-deflate" => {
                return Err(format!(
                    "{flag}: this loopchat was built without the `deflate` feature"
                ))
            }
            "--deflate-min-size" => config.deflate_min_size = size(&flag, &value()?)?,
            "--deflate-level" => {
                let v = value()?;
                config.deflate_level = match v.trim().parse() {
                    Ok(level @ 1..=9) => level,
                    _ => return Err(bad("not a level from 1 to 9", &v)),
                };
            }
            _ => return Err(format!("unknown option {arg:?} (see --help)")),
        }
    }
    Ok(Command::Run(Box::new(config)))
}

/// The level `RUST_LOG` sets for this crate: a `loopchat=LEVEL` directive, else a
/// bare `LEVEL` one (as in `RUST_LOG=warn,loopchat=debug`). Directives for other
/// crates are ignored, since this logger has one level.
fn level_from_rust_log(value: &str) -> Option<log::LevelFilter> {
    let directives: Vec<&str> = value.split(',').map(str::trim).collect();
    let ours = directives
        .iter()
        .find_map(|d| d.strip_prefix("loopchat="))
        .and_then(|l| l.parse().ok());
    ours.or_else(|| directives.iter().find_map(|d| d.parse().ok()))
}

fn parse_level(value: &str) -> Result<log::LevelFilter, String> {
    value
        .parse()
        .map_err(|_| format!("not a log level (off, error, warn, info, debug, trace): {value:?}"))
}

/// A duration: "30", "0.5", "30s" or "250ms"; must be above zero.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    let (number, scale) = if let Some(ms) = value.strip_suffix("ms") {
        (ms, 0.001)
    } else {
        (value.strip_suffix('s').unwrap_or(value), 1.0)
    };
    let seconds: f64 = number.trim().parse().ok()?;
    let seconds = seconds * scale;
    (seconds.is_finite() && seconds > 0.0 && seconds < 1e9)
        .then(|| Duration::from_secs_f64(seconds))
}

/// A byte size: "1048576", "64K", "64KiB", "16M", "16MiB"; must be above zero.
pub fn parse_size(value: &str) -> Option<usize> {
    let value = value.trim();
    let suffixes: [(&str, usize); 6] = [
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("K", 1 << 10),
        ("M", 1 << 20),
        ("G", 1 << 30),
    ];
    let (number, scale) = suffixes
        .iter()
        .find_map(|(s, scale)| value.strip_suffix(s).map(|n| (n, *scale)))
        .unwrap_or((value, 1));
    let n: usize = number.trim().parse().ok()?;
    n.checked_mul(scale).filter(|&bytes| bytes > 0)
}

fn positive_duration(flag: &str, value: &str) -> Result<Duration, String> {
    parse_duration(value).ok_or_else(|| format!("{flag}: not a positive duration: {value:?}"))
}

fn positive_size(flag: &str, value: &str) -> Result<usize, String> {
    parse_size(value).ok_or_else(|| format!("{flag}: not a positive size: {value:?}"))
}

/// A size that may be zero (a limit that 0 turns off).
fn size(flag: &str, value: &str) -> Result<usize, String> {
    match value.trim() {
        "0" => Ok(0),
        v => positive_size(flag, v),
    }
}

fn count(flag: &str, value: &str) -> Result<usize, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: not a count: {value:?}"))
}

fn positive_count(flag: &str, value: &str) -> Result<usize, String> {
    value
        .parse()
        .ok()
        .filter(|&n: &usize| n > 0)
        .ok_or_else(|| format!("{flag}: not a positive count: {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        match parse_args(args.iter().map(|s| s.to_string()), None)? {
            Command::Run(config) => Ok(*config),
            Command::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.max_message_size, 1 << 20);
        assert_eq!(c.ping_interval, Duration::from_secs(30));
        assert_eq!(c.max_header_bytes, 8192);
    }

    #[test]
    fn flags_in_both_forms() {
        let c = parse(&[
            "--addr",
            "0.0.0.0:9000",
            "--max-message-size=16MiB",
            "--ping-interval",
            "250ms",
            "--allowed-origin",
            "https://a",
            "--allowed-origin=https://b",
            "--max-connections",
            "10",
            "--log-level",
            "warn",
        ])
        .unwrap();
        assert_eq!(c.addr.port(), 9000);
        assert_eq!(c.max_message_size, 16 << 20);
        assert_eq!(c.ping_interval, Duration::from_millis(250));
        assert_eq!(c.allowed_origins, vec!["https://a", "https://b"]);
        assert_eq!(c.max_connections, Some(10));
        assert_eq!(c.log_level, log::LevelFilter::Warn);
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(parse(&["--addr", "nowhere"]).is_err());
        assert!(parse(&["--max-message-size", "0"]).is_err());
        assert!(parse(&["--ping-interval", "-1"]).is_err());
        assert!(parse(&["--max-headers"]).is_err());
        assert!(parse(&["--frobnicate"]).is_err());
        assert!(parse(&["--static-dir", "/no/such/dir"]).is_err());
        assert!(parse(&["--log-level", "loud"]).is_err());
        assert_eq!(parse(&["--help"]).unwrap_err(), "help");
    }

    #[test]
    fn rust_log_is_a_default_that_the_flag_overrides() {
        let Command::Run(c) = parse_args(Vec::new(), Some("debug")).unwrap() else {
            panic!()
        };
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        let args = vec!["--log-level".to_string(), "error".to_string()];
        let Command::Run(c) = parse_args(args, Some("debug")).unwrap() else {
            panic!()
        };
        assert_eq!(c.log_level, log::LevelFilter::Error);
        assert_eq!(
            level_from_rust_log("warn,loopchat=trace"),
            Some(log::LevelFilter::Trace)
        );
        assert_eq!(level_from_rust_log("other=debug"), None);
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64K"), Some(65536));
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("inf"), None);
    }
}
