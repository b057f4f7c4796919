//! Every tunable and limit of the server, with its default, its flag and its check.
//!
//! `Config::default()` is what `cargo run --release` uses; [`parse_args`] turns the
//! command line (and `RUST_LOG`) into a `Config`, or into a message that names the
//! flag at fault and says what it accepts. A limit that is crossed at run time gets
//! the close code or HTTP status of the RFC that governs it; see the README's table.

use crate::handshake;
use crate::redis_url::RedisUrl;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// The server's settings. Every field has a command-line flag.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--addr`: the address to listen on. The flag also takes `:PORT` (all
    /// interfaces) and `HOST:PORT` with a host name (its first address).
    pub addr: SocketAddr,
    /// `--static-dir`: serve files from this folder instead of the embedded page.
    pub static_dir: Option<PathBuf>,
    /// `--log-level` (or `RUST_LOG`): error, warn, info, debug, trace or off.
    pub log_level: log::LevelFilter,
    /// `--ping-interval`: how often each WebSocket peer is pinged; a peer that has
    /// not answered the previous ping by the next one is dropped.
    pub ping_interval: Duration,
    /// `--max-message-size`: the largest message accepted on `/echo` and
    /// `/relay`, in bytes (close 1009).
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
    /// `--max-message-rate`: chat messages a member may send per second, with
    /// bursts of twice that; past it they are dropped with a notice (0: no limit).
    pub max_message_rate: u32,
    /// `--member-list-limit`: rooms with more members send no member list in
    /// the welcome (the page shows the count instead).
    pub member_list_limit: usize,
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
    /// `--subprotocol` (repeatable): WebSocket subprotocols the server answers
    /// to, each an RFC 7230 token. Of a client's `Sec-WebSocket-Protocol` offer,
    /// the first one on this list is selected (RFC 6455 §4.2.2); none if empty.
    pub subprotocols: Vec<String>,
    /// `--shutdown-timeout`: on SIGINT/SIGTERM, how long to flush close frames.
    pub shutdown_timeout: Duration,
    /// `--permessage-deflate`: offer RFC 7692 compression to clients that ask.
    pub permessage_deflate: bool,
    /// `--deflate-min-size`: messages shorter than this go out uncompressed.
    pub deflate_min_size: usize,
    /// `--deflate-level`: 1 (fastest) to 9 (smallest).
    pub deflate_level: u32,
    /// `--tls-cert`: PEM certificate chain, leaf first (certbot's `fullchain.pem`);
    /// with `--tls-key`, serve https:// and wss:// on `--addr`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`: PEM private key of `--tls-cert` (certbot's `privkey.pem`).
    pub tls_key: Option<PathBuf>,
    /// `--redis`: make this process a node of the cluster that shares this
    /// Redis (rooms, order, counts and history over every node).
    pub redis: Option<RedisUrl>,
    /// `--reuse-port`: listen with SO_REUSEPORT, so that several processes
    /// (nodes) share one address and the kernel spreads connections over them.
    pub reuse_port: bool,
    /// `--presence-ttl`: how long a node's members stay counted without its
    /// refresh (every third of it); a dead node's members leave after this.
    pub presence_ttl: Duration,
    /// `--redis-ping`: how often the node pings Redis on both connections; no
    /// answer within three intervals drops the link.
    pub redis_ping: Duration,
    /// `--redis-max-queue`: bytes waiting to go to Redis, or from it for rooms
    /// being synchronised, beyond which the link is dropped and rebuilt.
    pub redis_max_queue: usize,
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
            max_message_rate: 10,
            member_list_limit: 100,
            history_budget: 32 << 20,
            max_connections_per_ip: None,
            allowed_origins: Vec::new(),
            subprotocols: Vec::new(),
            shutdown_timeout: Duration::from_secs(2),
            permessage_deflate: false,
            deflate_min_size: 256,
            deflate_level: 2,
            tls_cert: None,
            tls_key: None,
            redis: None,
            reuse_port: false,
            presence_ttl: Duration::from_secs(30),
            redis_ping: Duration::from_secs(1),
            redis_max_queue: 16 << 20,
        }
    }
}

/// The usage text printed by `--help`.
pub const USAGE: &str = "\
loopchat: a WebSocket chat server on one mio poll loop (RFC 6455)

USAGE:
    loopchat [OPTIONS]

Serves the chat page at http://ADDR/, the chat at ws://ADDR/chat[/ROOM]
(?name=NICK), an echo endpoint at ws://ADDR/echo, a relay (every message to
every member, verbatim) at ws://ADDR/relay/ROOM, and metrics at /metrics.

OPTIONS:
    --addr ADDR               listen address: IP:PORT, HOST:PORT (first address
                              HOST resolves to), or :PORT for all interfaces
                              [default: 127.0.0.1:8080]
    --static-dir DIR          serve files from DIR instead of the embedded page
    --log-level LEVEL         off|error|warn|info|debug|trace [default: info, or RUST_LOG]
    --ping-interval DUR       ping every peer this often; no pong by the next ping
                              drops it [default: 30s]
    --max-message-size SIZE   largest message on /echo and /relay; larger gets close
                              1009 [default: 1MiB]
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
    --max-message-rate N      chat messages per second per member, bursts of twice
                              that; more are dropped with a notice, and a sender
                              that keeps on is closed with 1008 (0: no limit)
                              [default: 10]
    --member-list-limit N     rooms larger than this send no member list [default: 100]
    --history-budget SIZE     bytes of history kept over all rooms; the least
                              recently active rooms' go first [default: 32MiB]
    --max-connections-per-ip N
                              open connections from one address before new ones
                              get 503 [default: no limit]
    --allowed-origin ORIGIN   allow browser pages from ORIGIN (repeatable; * for any)
                              [default: only the server's own origin]
    --subprotocol NAME        answer a client that offers WebSocket subprotocol NAME
                              with it (repeatable; the client's first offer on the
                              list wins) [default: none selected]
    --shutdown-timeout DUR    time to flush close frames on SIGINT/SIGTERM [default: 2s]
    --permessage-deflate      compress messages for clients that offer it (RFC 7692)
                              [default: off]
    --deflate-min-size SIZE   messages shorter than this go out uncompressed [default: 256]
    --deflate-level N         1 (fastest) to 9 (smallest) [default: 2]
    --tls-cert FILE           PEM certificate chain (leaf first, as certbot's
                              fullchain.pem): serve https:// and wss:// on --addr;
                              SIGHUP reloads it [default: plain http:// and ws://]
    --tls-key FILE            PEM private key of --tls-cert (certbot's privkey.pem)
    --redis URL               be one node of a cluster sharing this Redis:
                              redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]; rooms,
                              their order, counts and history span every node
                              [default: none, a single server]
    --reuse-port              listen with SO_REUSEPORT: run one process per core
                              on the same --addr, each with the same --redis
    --presence-ttl DUR        a node's members stay counted this long without its
                              refresh; a dead node's members leave after it [default: 30s]
    --redis-ping DUR          ping Redis this often; no answer in 3 pings drops the
                              link, which is rebuilt [default: 1s]
    --redis-max-queue SIZE    bytes waiting to go to Redis before the link is
                              dropped and rebuilt [default: 16MiB]
    -h, --help                print this help
    -V, --version             print the version

A flag takes its value as \"--flag VALUE\" or \"--flag=VALUE\".
DUR is a number with an optional unit: ms, s, m (minutes) or h; a bare number
is seconds (\"30\", \"0.5\", \"250ms\", \"90s\", \"2m\", \"1h\").
SIZE is a whole number of bytes with an optional unit, in any case: B, k/KB/KiB,
m/MB/MiB, g/GB/GiB; all are 1024-based (\"64k\" = \"64KB\" = \"64KiB\" = 65536).
RUST_LOG, if set and --log-level is not given, is read for a LEVEL or
loopchat=LEVEL directive (directives for other crates are ignored).
";

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
}

/// The log levels, as a message lists them.
const LEVELS: &str = "off, error, warn, info, debug or trace";

/// Parses the arguments after the program name. `rust_log` is the value of the
/// `RUST_LOG` variable, used when `--log-level` is not given; a value that is
/// not a level is an error then, as a bad `--log-level` is.
///
/// An error is one line naming the flag (or `RUST_LOG`) and what it accepts.
/// A flag's value is the next argument unless that starts with `--`: then the
/// flag has no value, and the next argument is not swallowed as one.
pub fn parse_args<I>(args: I, rust_log: Option<&str>) -> Result<Command, String>
where
    I: IntoIterator<Item = String>,
{
    let mut config = Config::default();
    let mut log_level_given = false;
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        if arg.len() < 2 || !arg.starts_with('-') {
            return Err(format!(
                "unexpected argument {arg:?} (loopchat takes options only)"
            ));
        }
        // Accept both "--flag value" and "--flag=value".
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ => {}
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next_if(|next| !next.starts_with("--")))
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        set_flag(&mut config, &flag, &mut value)?;
        log_level_given |= flag == "--log-level";
    }
    if let (false, Some(value)) = (log_level_given, rust_log) {
        if let Some(level) = level_from_rust_log(value)? {
            config.log_level = level;
        }
    }
    Ok(Command::Run(Box::new(config)))
}

/// Applies one flag to `config`, taking its value from `value` when it has one.
fn set_flag(
    config: &mut Config,
    flag: &str,
    value: &mut dyn FnMut() -> Result<String, String>,
) -> Result<(), String> {
    let with_flag = |message: String| format!("{flag}: {message}");
    match flag {
        "--addr" => config.addr = parse_addr(&value()?).map_err(with_flag)?,
        "--static-dir" => {
            let dir = PathBuf::from(value()?);
            if !dir.is_dir() {
                return Err(with_flag(format!("{:?} is not a directory", dir.display())));
            }
            config.static_dir = Some(dir);
        }
        "--log-level" => {
            let v = value()?;
            config.log_level = v
                .parse()
                .map_err(|_| with_flag(format!("{v:?} is not a log level (use {LEVELS})")))?;
        }
        "--ping-interval" => config.ping_interval = duration(&value()?).map_err(with_flag)?,
        "--max-message-size" => config.max_message_size = size(&value()?).map_err(with_flag)?,
        "--max-chat-message-size" => {
            config.max_chat_message_size = size(&value()?).map_err(with_flag)?
        }
        "--input-budget" => config.input_budget = size(&value()?).map_err(with_flag)?,
        "--message-timeout" => config.message_timeout = duration(&value()?).map_err(with_flag)?,
        "--message-min-rate" => {
            config.message_min_rate = size_or_zero(&value()?).map_err(with_flag)?
        }
        "--history-budget" => config.history_budget = size_or_zero(&value()?).map_err(with_flag)?,
        "--max-message-rate" => {
            let v = value()?;
            config.max_message_rate = v
                .trim()
                .parse()
                .map_err(|_| with_flag(format!("{v:?} is not a whole number")))?;
        }
        "--member-list-limit" => config.member_list_limit = count(&value()?).map_err(with_flag)?,
        "--max-connections-per-ip" => {
            config.max_connections_per_ip = Some(positive_count(&value()?).map_err(with_flag)?)
        }
        "--max-output" => config.max_output = size(&value()?).map_err(with_flag)?,
        "--max-header-bytes" => config.max_header_bytes = size(&value()?).map_err(with_flag)?,
        "--max-headers" => config.max_headers = positive_count(&value()?).map_err(with_flag)?,
        "--handshake-timeout" => {
            config.handshake_timeout = duration(&value()?).map_err(with_flag)?
        }
        "--close-timeout" => config.close_timeout = duration(&value()?).map_err(with_flag)?,
        "--max-connections" => {
            config.max_connections = Some(positive_count(&value()?).map_err(with_flag)?)
        }
        "--history" => config.history = count(&value()?).map_err(with_flag)?,
        "--history-bytes" => config.history_bytes = size(&value()?).map_err(with_flag)?,
        "--idle-rooms" => config.idle_rooms = count(&value()?).map_err(with_flag)?,
        "--allowed-origin" => config.allowed_origins.push(value()?),
        "--subprotocol" => {
            let name = value()?;
            if !handshake::is_token(&name) {
                return Err(with_flag(format!(
                    "{name:?} is not a token (letters, digits and !#$%&'*+-.^_`|~ only; \
                     RFC 7230 §3.2.6)"
                )));
            }
            if !config.subprotocols.contains(&name) {
                config.subprotocols.push(name);
            }
        }
        "--shutdown-timeout" => config.shutdown_timeout = duration(&value()?).map_err(with_flag)?,
        "--permessage-deflate" if cfg!(feature = "deflate") => config.permessage_deflate = true,
        "--permessage-deflate" => {
            return Err(with_flag(
                "this loopchat was built without the `deflate` feature".into(),
            ))
        }
        "--deflate-min-size" => {
            config.deflate_min_size = size_or_zero(&value()?).map_err(with_flag)?
        }
        "--deflate-level" => {
            let v = value()?;
            config.deflate_level = match v.trim().parse() {
                Ok(level @ 1..=9) => level,
                _ => return Err(with_flag(format!("{v:?} is not a level from 1 to 9"))),
            };
        }
        "--tls-cert" | "--tls-key" if !cfg!(feature = "tls") => {
            return Err(with_flag(
                "this loopchat was built without the `tls` feature".into(),
            ))
        }
        "--tls-cert" => config.tls_cert = Some(PathBuf::from(value()?)),
        "--tls-key" => config.tls_key = Some(PathBuf::from(value()?)),
        "--redis" if !cfg!(feature = "redis") => {
            return Err(with_flag(
                "this loopchat was built without the `redis` feature".into(),
            ))
        }
        "--redis" => config.redis = Some(RedisUrl::parse(&value()?).map_err(with_flag)?),
        "--reuse-port" => config.reuse_port = true,
        "--presence-ttl" => config.presence_ttl = duration(&value()?).map_err(with_flag)?,
        "--redis-ping" => config.redis_ping = duration(&value()?).map_err(with_flag)?,
        "--redis-max-queue" => config.redis_max_queue = size(&value()?).map_err(with_flag)?,
        _ => return Err(format!("unknown option {flag:?}")),
    }
    Ok(())
}

/// The level `RUST_LOG` sets for this crate: a `loopchat=LEVEL` directive, else a
/// bare `LEVEL` one (as in `RUST_LOG=warn,loopchat=debug`); `None` if it has
/// neither. Directives for other crates are ignored, since this logger has one
/// level, but a directive that is not `LEVEL` or `TARGET=LEVEL` is an error.
fn level_from_rust_log(value: &str) -> Result<Option<log::LevelFilter>, String> {
    let (mut ours, mut bare) = (None, None);
    for directive in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bad = || {
            format!("RUST_LOG: {directive:?} is not a log level (use {LEVELS}, or loopchat=LEVEL)")
        };
        match directive.split_once('=') {
            Some((target, level)) => {
                let level: log::LevelFilter = level.trim().parse().map_err(|_| bad())?;
                match target.trim() {
                    "" => return Err(bad()),
                    "loopchat" if ours.is_none() => ours = Some(level),
                    _ => {}
                }
            }
            None => {
                let level = directive.parse().map_err(|_| bad())?;
                bare = bare.or(Some(level));
            }
        }
    }
    Ok(ours.or(bare))
}

/// What `--addr` accepts, for its error messages.
const ADDR_FORMS: &str =
    "use IP:PORT, HOST:PORT or :PORT, such as 127.0.0.1:8080, localhost:8080, [::1]:8080 \
     or :8080 for all interfaces";

/// A listen address: `IP:PORT` (`[IPv6]:PORT`), `:PORT` for all IPv4 interfaces
/// (`0.0.0.0:PORT`), or `HOST:PORT`, which is resolved to the host's first address.
pub fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    let all_interfaces;
    let full = match value.strip_prefix(':') {
        Some(port) => {
            all_interfaces = format!("0.0.0.0:{port}");
            &all_interfaces
        }
        None => value,
    };
    if let Ok(addr) = full.parse() {
        return Ok(addr);
    }
    let Some((host, port)) = full.rsplit_once(':') else {
        return Err(format!("{value:?} is not an address ({ADDR_FORMS})"));
    };
    let Ok(port) = port.parse::<u16>() else {
        return Err(format!("{value:?} has no valid port ({ADDR_FORMS})"));
    };
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

/// A value split into its number and its unit: the trailing ASCII letters,
/// lowercased ("10 KiB" is ("10", "kib")).
fn number_and_unit(value: &str) -> (&str, String) {
    let value = value.trim();
    let number = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = value[number.len()..].to_ascii_lowercase();
    (number.trim(), unit)
}

/// What a size may be, for its error messages.
const SIZE_FORMS: &str =
    "use a whole number with an optional unit: B, k/KB/KiB, m/MB/MiB, g/GB/GiB, all 1024-based";

/// A byte size: a whole number with an optional unit in any case, `B`, `k`/`KB`/
/// `KiB`, `m`/`MB`/`MiB` or `g`/`GB`/`GiB`. Every unit is 1024-based, as in
/// nginx (`10k` is 10240): for a limit, the unit's spelling should not change it.
/// Must be above zero. The error says what was wrong and what is accepted.
fn size(value: &str) -> Result<usize, String> {
    let (number, unit) = number_and_unit(value);
    let scale: usize = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{value:?} is not a size ({SIZE_FORMS})")),
    };
    let n: usize = match number.parse() {
        Ok(n) => n,
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
            return Err(format!("{value:?} is too large"))
        }
        Err(_) => return Err(format!("{value:?} is not a size ({SIZE_FORMS})")),
    };
    match n.checked_mul(scale) {
        Some(0) => Err(format!("{value:?} is not above zero")),
        Some(bytes) => Ok(bytes),
        None => Err(format!("{value:?} is too large")),
    }
}

/// A byte size as `--max-message-size` and the other SIZE flags take it: "12",
/// "64k", "64KB", "64KiB", "16M", "1GiB" (all units 1024-based, any case); `None`
/// unless above zero.
pub fn parse_size(value: &str) -> Option<usize> {
    size(value).ok()
}

/// A size that may be zero: a limit that 0 turns off.
fn size_or_zero(value: &str) -> Result<usize, String> {
    match value.trim() {
        "0" => Ok(0),
        v => size(v),
    }
}

/// What a duration may be, for its error messages.
const DURATION_FORMS: &str =
    "use a number with an optional unit: ms, s, m or h; a bare number is seconds";

/// A duration: a number (decimals allowed) with an optional unit in any case,
/// `ms`, `s`, `m` (minutes) or `h`; a bare number is seconds. Must be above zero
/// and below about 30 years. The error says what was wrong and what is accepted.
fn duration(value: &str) -> Result<Duration, String> {
    let (number, unit) = number_and_unit(value);
    let scale = match unit.as_str() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{value:?} is not a duration ({DURATION_FORMS})")),
    };
    let Ok(number) = number.parse::<f64>() else {
        return Err(format!("{value:?} is not a duration ({DURATION_FORMS})"));
    };
    let seconds = number * scale;
    if !seconds.is_finite() || seconds >= 1e9 {
        return Err(format!("{value:?} is too long"));
    }
    let duration = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO);
    if duration.is_zero() {
        return Err(format!("{value:?} is not above zero"));
    }
    Ok(duration)
}

/// A duration as `--ping-interval` and the other DUR flags take it: "30", "0.5",
/// "250ms", "90s", "2m", "1h" (any case); `None` unless above zero.
pub fn parse_duration(value: &str) -> Option<Duration> {
    duration(value).ok()
}

fn count(value: &str) -> Result<usize, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number"))
}

fn positive_count(value: &str) -> Result<usize, String> {
    match count(value)? {
        0 => Err(format!("{value:?} is not above zero")),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        parse_with_rust_log(args, None)
    }

    fn parse_with_rust_log(args: &[&str], rust_log: Option<&str>) -> Result<Config, String> {
        match parse_args(args.iter().map(|s| s.to_string()), rust_log)? {
            Command::Run(config) => Ok(*config),
            Command::Help => Err("help".into()),
            Command::Version => Err("version".into()),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.max_message_size, 1 << 20);
        assert_eq!(c.ping_interval, Duration::from_secs(30));
        assert_eq!(c.max_header_bytes, 8192);
        assert!(c.subprotocols.is_empty());
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
    fn cluster_flags() {
        let c = parse(&[
            "--redis",
            "redis://:pw@10.0.0.5:6380/2",
            "--reuse-port",
            "--presence-ttl",
            "5s",
            "--redis-ping",
            "250ms",
            "--redis-max-queue",
            "1MiB",
        ]);
        if cfg!(feature = "redis") {
            let c = c.unwrap();
            let url = c.redis.unwrap();
            assert_eq!((url.host.as_str(), url.port, url.db), ("10.0.0.5", 6380, 2));
            assert_eq!(url.password.as_deref(), Some("pw"));
            assert!(c.reuse_port);
            assert_eq!(c.presence_ttl, Duration::from_secs(5));
            assert_eq!(c.redis_ping, Duration::from_millis(250));
            assert_eq!(c.redis_max_queue, 1 << 20);
            let bad = parse(&["--redis", "localhost:6379"]).unwrap_err();
            assert!(
                bad.starts_with("--redis: ") && bad.contains("redis://"),
                "{bad}"
            );
        } else {
            assert!(c.unwrap_err().contains("without the `redis` feature"));
        }
        let c = parse(&[]).unwrap();
        assert!(c.redis.is_none() && !c.reuse_port);
        assert_eq!(c.presence_ttl, Duration::from_secs(30));
    }

    #[test]
    fn version_in_long_and_short_form() {
        assert_eq!(parse(&["--version"]).unwrap_err(), "version");
        assert_eq!(parse(&["-V"]).unwrap_err(), "version");
        assert_eq!(parse(&["--addr", ":1", "-V"]).unwrap_err(), "version");
    }

    #[test]
    fn rust_log_is_a_default_that_the_flag_overrides() {
        let c = parse_with_rust_log(&[], Some("debug")).unwrap();
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        let c = parse_with_rust_log(&["--log-level", "error"], Some("debug")).unwrap();
        assert_eq!(c.log_level, log::LevelFilter::Error);
        assert_eq!(
            level_from_rust_log("warn,loopchat=trace"),
            Ok(Some(log::LevelFilter::Trace))
        );
        assert_eq!(level_from_rust_log("other=debug"), Ok(None));
        assert_eq!(level_from_rust_log(""), Ok(None));
        assert_eq!(
            level_from_rust_log(" INFO , mio=trace"),
            Ok(Some(log::LevelFilter::Info))
        );
    }

    #[test]
    fn a_rust_log_that_is_not_a_level_is_an_error_naming_rust_log() {
        for garbage in ["garbage", "loopchat=loud", "info,=debug", "warn/regex"] {
            let error = parse_with_rust_log(&[], Some(garbage)).unwrap_err();
            assert!(error.starts_with("RUST_LOG: "), "{error}");
            assert!(
                error.contains("off, error, warn, info, debug or trace"),
                "{error}"
            );
        }
        // Unread when --log-level decides, so a RUST_LOG meant for another
        // program does not stop this one.
        let c = parse_with_rust_log(&["--log-level", "warn"], Some("garbage")).unwrap();
        assert_eq!(c.log_level, log::LevelFilter::Warn);
    }

    #[test]
    fn sizes_take_the_usual_units_in_any_case_all_1024_based() {
        let k = 1 << 10;
        for (text, bytes) in [
            ("12", 12),
            ("12B", 12),
            ("12 b", 12),
            ("10k", 10 * k),
            ("10K", 10 * k),
            ("10kb", 10 * k),
            ("10KB", 10 * k),
            ("10KiB", 10 * k),
            ("10 kib", 10 * k),
            ("10m", 10 << 20),
            ("10MB", 10 << 20),
            ("10MiB", 10 << 20),
            ("1g", 1 << 30),
            ("1GB", 1 << 30),
            ("1GiB", 1 << 30),
            // What the parser took before units were case-insensitive.
            ("64K", 64 * k),
            ("1MiB", 1 << 20),
            (" 64 K ", 64 * k),
            ("+5", 5),
        ] {
            assert_eq!(parse_size(text), Some(bytes), "{text:?}");
        }
    }

    #[test]
    fn a_bad_size_says_what_a_size_is() {
        let error = parse(&["--max-message-size", "10 bananas"]).unwrap_err();
        assert_eq!(
            error,
            "--max-message-size: \"10 bananas\" is not a size (use a whole number with an \
             optional unit: B, k/KB/KiB, m/MB/MiB, g/GB/GiB, all 1024-based)"
        );
        for bad in ["x", "", "k", "1.5M", "-1", "10 KiBs", "10kk"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        assert_eq!(size("0"), Err("\"0\" is not above zero".into()));
        assert_eq!(size("0k"), Err("\"0k\" is not above zero".into()));
        assert!(size("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert!(size("99999999999999G").unwrap_err().contains("too large"));
    }

    #[test]
    fn durations_take_ms_s_m_h_in_any_case_and_a_bare_number_is_seconds() {
        let secs = Duration::from_secs;
        for (text, duration) in [
            ("500ms", Duration::from_millis(500)),
            ("500MS", Duration::from_millis(500)),
            ("90s", secs(90)),
            ("90S", secs(90)),
            ("90", secs(90)),
            ("1.5", Duration::from_millis(1500)),
            ("0.5s", Duration::from_millis(500)),
            ("1m", secs(60)),
            ("1M", secs(60)),
            ("1.5m", secs(90)),
            ("1h", secs(3600)),
            ("2 H", secs(7200)),
            ("10s", secs(10)),
            ("1e3ms", secs(1)),
        ] {
            assert_eq!(parse_duration(text), Some(duration), "{text:?}");
        }
    }

    #[test]
    fn a_bad_duration_says_what_a_duration_is() {
        let error = parse(&["--ping-interval", "soon"]).unwrap_err();
        assert_eq!(
            error,
            "--ping-interval: \"soon\" is not a duration (use a number with an optional unit: \
             ms, s, m or h; a bare number is seconds)"
        );
        for bad in [
            "0", "0ms", "-1", "inf", "NaN", "1d", "", "s", "1e-12", "1e10",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(duration("0"), Err("\"0\" is not above zero".into()));
        assert_eq!(duration("1e10"), Err("\"1e10\" is too long".into()));
    }

    #[test]
    fn an_addr_may_leave_out_the_host_for_all_interfaces() {
        assert_eq!(
            parse_addr(":8080"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 8080)))
        );
        assert_eq!(parse_addr("[::1]:80"), Ok("[::1]:80".parse().unwrap()));
        assert_eq!(
            parse(&["--addr", ":9000"]).unwrap().addr.to_string(),
            "0.0.0.0:9000"
        );
    }

    #[test]
    fn an_addr_may_name_a_host_which_resolves_to_its_first_address() {
        let addr = parse_addr("localhost:8080").unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr.port(), 8080);
    }

    #[test]
    fn a_bad_addr_says_what_an_addr_is() {
        for bad in [
            "nowhere",
            "8080",
            "localhost:",
            "localhost:http",
            ":99999",
            ":",
        ] {
            let error = parse(&["--addr", bad]).unwrap_err();
            assert!(error.starts_with("--addr: "), "{error}");
            assert!(error.contains(":8080 for all interfaces"), "{error}");
        }
    }

    #[test]
    fn a_flag_without_its_value_is_an_error_naming_it() {
        assert_eq!(
            parse(&["--allowed-origin", "--log-level", "info"]).unwrap_err(),
            "--allowed-origin needs a value"
        );
        assert_eq!(
            parse(&["--log-level", "warn", "--allowed-origin"]).unwrap_err(),
            "--allowed-origin needs a value"
        );
        assert_eq!(parse(&["--addr="]).unwrap_err(), "--addr needs a value");
        assert_eq!(
            parse(&["--max-headers", "--help"]).unwrap_err(),
            "--max-headers needs a value"
        );
        // A value may start with one dash; the flag's own check judges it.
        assert_eq!(
            parse(&["--ping-interval", "-1"]).unwrap_err(),
            "--ping-interval: \"-1\" is not above zero"
        );
        // With "=", the value is whatever follows it.
        let c = parse(&["--allowed-origin=--odd"]).unwrap();
        assert_eq!(c.allowed_origins, vec!["--odd"]);
    }

    #[test]
    fn a_positional_argument_is_unexpected_and_an_unknown_flag_is_unknown() {
        assert_eq!(
            parse(&["x"]).unwrap_err(),
            "unexpected argument \"x\" (loopchat takes options only)"
        );
        assert!(parse(&["-"])
            .unwrap_err()
            .starts_with("unexpected argument \"-\""));
        assert!(parse(&["--addr", ":0", "8080"])
            .unwrap_err()
            .starts_with("unexpected argument \"8080\""));
        assert_eq!(
            parse(&["--frobnicate"]).unwrap_err(),
            "unknown option \"--frobnicate\""
        );
        assert_eq!(parse(&["-x"]).unwrap_err(), "unknown option \"-x\"");
    }

    #[test]
    fn no_error_message_carries_its_own_help_hint() {
        // main adds "Try 'loopchat --help'" once; a message that said it too
        // would print the hint twice.
        for args in [
            &["--frobnicate"][..],
            &["x"],
            &["--max-headers"],
            &["--max-output", "lots"],
            &["--subprotocol", "a b"],
        ] {
            let error = parse(args).unwrap_err();
            assert!(!error.contains("help"), "{error}");
        }
    }

    #[test]
    fn subprotocols_are_repeatable_and_kept_in_order_without_repeats() {
        let c = parse(&[
            "--subprotocol",
            "chat.v2",
            "--subprotocol=chat",
            "--subprotocol",
            "chat.v2",
        ])
        .unwrap();
        assert_eq!(c.subprotocols, vec!["chat.v2", "chat"]);
    }

    #[test]
    fn a_subprotocol_must_be_a_token() {
        for bad in ["a b", "a,b", "\"chat\"", "chat/1", "caf\u{e9}", "a;b"] {
            let error = parse(&["--subprotocol", bad]).unwrap_err();
            assert!(
                error.starts_with(&format!("--subprotocol: {bad:?} is not a token")),
                "{error}"
            );
        }
        assert!(parse(&["--subprotocol", "v1.chat+json_~!#$%&'*^`|-"]).is_ok());
    }
}
