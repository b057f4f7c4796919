//! Counters of what the server did, rendered for `GET /metrics`.
//!
//! The format is Prometheus' text exposition format (version 0.0.4). The loop owns
//! one `Metrics`; counting is a plain integer increment (no atomics, no locks), so
//! it costs nothing measurable on the hot path. Gauges such as open connections by
//! phase are computed when the page is asked for, and so are the standard
//! `process_*` figures (memory, CPU time, file descriptors, start time), read
//! from `/proc/self` ([`ProcessStats`]).

use crate::message::CloseCode;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Every counter the server keeps. Names follow Prometheus conventions.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub connections_accepted: u64,
    /// Refused with 503 because `--max-connections` was reached.
    pub connections_refused: u64,
    /// `accept` failures (EMFILE and the like).
    pub accept_errors: u64,
    pub http_requests: u64,
    pub upgrades: u64,
    pub messages_in: u64,
    pub bytes_in: u64,
    /// Frames queued to peers, control frames included (a broadcast to 100
    /// members counts 100).
    pub frames_out: u64,
    pub bytes_out: u64,
    pub broadcasts: u64,
    /// Messages relayed to a relay room.
    pub relays: u64,
    /// Empty or whitespace-only chat messages, ignored.
    pub blank_messages_ignored: u64,
    /// Chat messages dropped by flood control (`--max-message-rate`).
    pub messages_rate_limited: u64,
    /// Members closed with 1008 for flooding on past the rate.
    pub flood_closes: u64,
    /// Chat members renamed (`/nick`).
    pub renames: u64,
    /// Peers disconnected because their queued output passed `--max-output`.
    pub slow_readers_dropped: u64,
    pub handshake_timeouts: u64,
    pub pong_timeouts: u64,
    pub pings_sent: u64,
    /// Refused with 503 at `--max-connections-per-ip`.
    pub connections_refused_per_ip: u64,
    /// Closed with 1013 for the global `--input-budget`.
    pub input_budget_closes: u64,
    /// Closed with 1008 for a message that did not arrive in time.
    pub message_timeouts: u64,
    /// Compressed messages received (permessage-deflate).
    pub compressed_messages_in: u64,
    /// Compressed frames queued to peers (a broadcast to 100 counts 100).
    pub compressed_frames_out: u64,
    /// Close frames the server sent, by code.
    pub closes_sent: BTreeMap<u16, u64>,
    /// Close frames the server received, by the status code they carried
    /// (count them with [`Metrics::close_frame_received`]).
    pub closes_received: BTreeMap<u16, u64>,
    /// Close frames received without a status code (rendered as `code="none"`).
    pub closes_received_without_code: u64,
    /// WebSocket connections that ended without a close frame from the peer (it
    /// closed TCP first); RFC 6455 §7.1.5 calls their close code 1006.
    pub closed_abnormally: u64,
    /// Requests refused, by HTTP status.
    pub http_errors: BTreeMap<u16, u64>,
}

/// Values measured at the moment of rendering.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    pub http: usize,
    pub websocket: usize,
    pub closing: usize,
    pub max_connections: usize,
    pub rooms: usize,
    /// Relay rooms with members.
    pub relay_rooms: usize,
    /// Bytes held for unfinished messages over all connections.
    pub input_held_bytes: usize,
    /// Bytes of chat history kept over all rooms.
    pub history_bytes: usize,
    /// Open WebSocket connections that agreed to permessage-deflate.
    pub deflate: usize,
    /// Messages compressed (at most one per broadcast) and inflated, so far.
    pub compress_calls: u64,
    pub inflate_calls: u64,
    /// The link to the cluster's Redis, when `--redis` is given.
    pub cluster: Option<ClusterFigures>,
}

/// The cluster link's state and counters (`--redis`), for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterFigures {
    pub link_up: bool,
    /// Times the link came up (reconnects: all but the first).
    pub link_ups: u64,
    pub link_failures: u64,
    /// Messages, renames sent to Redis; room events received from it.
    pub posts: u64,
    pub events_received: u64,
    pub gaps_detected: u64,
    pub gaps_repaired: u64,
    pub gaps_unrepaired: u64,
    /// Messages delivered on this node only, because the link was down.
    pub island_messages: u64,
    /// Replies from Redis that were errors, of an unexpected type or malformed.
    pub bad_replies: u64,
    /// Commands sent and writes made to Redis (their ratio: commands per write).
    pub commands: u64,
    pub writes: u64,
}

impl ClusterFigures {
    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP loopchat_cluster_link_up 1 when both connections to Redis are up.\n\
             # TYPE loopchat_cluster_link_up gauge\nloopchat_cluster_link_up {}",
            u8::from(self.link_up)
        );
        let counters = [
            ("cluster_reconnects_total", "Times the link to Redis came back after a loss.", self.link_ups.saturating_sub(1)),
            ("cluster_link_failures_total", "Times the link to Redis was lost or could not be made.", self.link_failures),
            ("cluster_posts_total", "Messages and renames sent to Redis.", self.posts),
            ("cluster_events_received_total", "Room events received from Redis.", self.events_received),
            ("cluster_gaps_detected_total", "Gaps found in a room's sequence numbers.", self.gaps_detected),
            ("cluster_gaps_repaired_total", "Gaps filled entirely from the room's history in Redis.", self.gaps_repaired),
            ("cluster_gaps_unrepaired_total", "Gaps that could not be filled (notices, past the history, or Redis lost the room).", self.gaps_unrepaired),
            ("cluster_island_messages_total", "Messages delivered on this node only, while the link was down.", self.island_messages),
            ("cluster_bad_replies_total", "Replies from Redis that were errors, unexpected or malformed.", self.bad_replies),
            ("cluster_commands_total", "Commands sent to Redis.", self.commands),
            ("cluster_writes_total", "Writes to Redis (commands per write: batching).", self.writes),
        ];
        render_counters(out, &counters);
    }
}

impl Metrics {
    /// Counts a close frame from a peer: `code` is its status code, `None` for a
    /// close frame without one.
    pub fn close_frame_received(&mut self, code: Option<CloseCode>) {
        match code {
            Some(code) => count(&mut self.closes_received, code.0),
            None => self.closes_received_without_code += 1,
        }
    }

    /// Counts a WebSocket connection whose peer went away without a close frame.
    pub fn connection_closed_abnormally(&mut self) {
        self.closed_abnormally += 1;
    }

    /// The text of `GET /metrics`, process figures included.
    pub fn render(&self, gauges: Gauges) -> String {
        self.render_with(gauges, &ProcessStats::read())
    }

    /// The text of `GET /metrics` with the given process figures.
    pub fn render_with(&self, gauges: Gauges, process: &ProcessStats) -> String {
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, labels: &[(&str, usize)]| {
            let _ = writeln!(
                out,
                "# HELP loopchat_{name} {help}\n# TYPE loopchat_{name} gauge"
            );
            for (label, value) in labels {
                let _ = writeln!(out, "loopchat_{name}{label} {value}");
            }
        };
        gauge(
            "connections_open",
            "Open connections by phase.",
            &[
                ("{phase=\"http\"}", gauges.http),
                ("{phase=\"websocket\"}", gauges.websocket),
                ("{phase=\"closing\"}", gauges.closing),
            ],
        );
        gauge(
            "connections_max",
            "The connection limit.",
            &[("", gauges.max_connections)],
        );
        gauge("rooms", "Chat rooms with members.", &[("", gauges.rooms)]);
        gauge(
            "relay_rooms",
            "Relay rooms with members.",
            &[("", gauges.relay_rooms)],
        );
        gauge(
            "input_held_bytes",
            "Bytes held for unfinished messages over all connections (--input-budget).",
            &[("", gauges.input_held_bytes)],
        );
        gauge(
            "history_bytes",
            "Bytes of chat history kept over all rooms (--history-budget).",
            &[("", gauges.history_bytes)],
        );
        gauge(
            "deflate_connections",
            "Open WebSocket connections with permessage-deflate.",
            &[("", gauges.deflate)],
        );

        let closes_received: BTreeMap<String, u64> = (self.closes_received.iter())
            .map(|(code, n)| (code.to_string(), *n))
            .chain(
                (self.closes_received_without_code > 0)
                    .then(|| ("none".to_string(), self.closes_received_without_code)),
            )
            .collect();

        let counters: [(&str, &str, u64); 23] = [
            (
                "connections_accepted_total",
                "TCP connections accepted.",
                self.connections_accepted,
            ),
            (
                "connections_refused_total",
                "Connections refused at the connection limit.",
                self.connections_refused,
            ),
            (
                "accept_errors_total",
                "Failed accept calls (such as EMFILE).",
                self.accept_errors,
            ),
            (
                "http_requests_total",
                "HTTP requests parsed.",
                self.http_requests,
            ),
            (
                "upgrades_total",
                "Successful WebSocket upgrades.",
                self.upgrades,
            ),
            (
                "messages_in_total",
                "WebSocket messages received.",
                self.messages_in,
            ),
            ("bytes_in_total", "Bytes read from sockets.", self.bytes_in),
            (
                "frames_out_total",
                "Frames queued to peers.",
                self.frames_out,
            ),
            (
                "bytes_out_total",
                "Bytes written to sockets.",
                self.bytes_out,
            ),
            (
                "broadcasts_total",
                "Chat messages broadcast to a room.",
                self.broadcasts,
            ),
            (
                "blank_messages_ignored_total",
                "Empty or whitespace-only chat messages, ignored.",
                self.blank_messages_ignored,
            ),
            (
                "messages_rate_limited_total",
                "Chat messages dropped by flood control (--max-message-rate).",
                self.messages_rate_limited,
            ),
            (
                "renames_total",
                "Chat members renamed with /nick.",
                self.renames,
            ),
            (
                "relays_total",
                "Messages relayed verbatim to a relay room.",
                self.relays,
            ),
            (
                "slow_readers_dropped_total",
                "Peers dropped for exceeding the output limit.",
                self.slow_readers_dropped,
            ),
            (
                "handshake_timeouts_total",
                "Connections closed for not completing a request in time.",
                self.handshake_timeouts,
            ),
            (
                "pong_timeouts_total",
                "Peers dropped for not answering a ping.",
                self.pong_timeouts,
            ),
            ("pings_sent_total", "Heartbeat pings sent.", self.pings_sent),
            (
                "connections_closed_abnormally_total",
                "WebSocket connections that ended without a close frame from the peer (1006).",
                self.closed_abnormally,
            ),
            (
                "compress_calls_total",
                "Messages compressed (permessage-deflate): at most one per broadcast.",
                gauges.compress_calls,
            ),
            (
                "inflate_calls_total",
                "Compressed messages inflated.",
                gauges.inflate_calls,
            ),
            (
                "compressed_messages_in_total",
                "Compressed messages received.",
                self.compressed_messages_in,
            ),
            (
                "compressed_frames_out_total",
                "Compressed frames queued to peers.",
                self.compressed_frames_out,
            ),
        ];
        render_counters(&mut out, &counters);
        labelled_counter(
            &mut out,
            "closes_sent_total",
            "Close frames sent, by code.",
            "code",
            &self.closes_sent,
        );
        labelled_counter(
            &mut out,
            "closes_received_total",
            "Close frames received, by the code they carried (none: a close frame without one).",
            "code",
            &closes_received,
        );
        labelled_counter(
            &mut out,
            "http_errors_total",
            "HTTP requests refused, by status.",
            "status",
            &self.http_errors,
        );
        let refusals: BTreeMap<String, u64> = [
            ("max_connections", self.connections_refused),
            ("max_connections_per_ip", self.connections_refused_per_ip),
            ("input_budget", self.input_budget_closes),
            ("message_timeout", self.message_timeouts),
            ("message_rate", self.flood_closes),
        ]
        .into_iter()
        .map(|(limit, n)| (limit.to_string(), n))
        .collect();
        labelled_counter(
            &mut out,
            "limit_refusals_total",
            "Connections refused or closed by a global limit, by limit.",
            "limit",
            &refusals,
        );
        let _ = writeln!(
            out,
            "# HELP loopchat_build_info The running build; the value is always 1.\n\
             # TYPE loopchat_build_info gauge\n\
             loopchat_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(cluster) = &gauges.cluster {
            cluster.render(&mut out);
        }
        process.render(&mut out);
        out
    }
}

/// The process' own figures, under the names every Prometheus client library
/// uses. A figure that could not be read is `None` and left off the page.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    /// The soft `RLIMIT_NOFILE`; `None` also when it is unlimited.
    pub max_fds: Option<u64>,
}

impl ProcessStats {
    /// Reads `/proc/self/stat`, `/proc/stat` (boot time), `/proc/self/fd` and the
    /// file descriptor limit: a few small reads, done only when the page is asked for.
    pub fn read() -> ProcessStats {
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|text| parse_proc_stat(&text));
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| parse_boot_time(&text));
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64);
        let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        // The kernel's USER_HZ, in which /proc/*/stat counts CPU time and start
        // time (100 on every common Linux; the auxiliary vector says for sure).
        let ticks = match rustix::param::clock_ticks_per_second() {
            0 => 100.0,
            ticks => ticks as f64,
        };
        let page_size = rustix::param::page_size() as u64;
        ProcessStats {
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / ticks),
            resident_bytes: stat.map(|s| s.rss_pages.saturating_mul(page_size)),
            virtual_bytes: stat.map(|s| s.vsize),
            start_time_seconds: stat
                .zip(boot_time)
                .map(|(s, boot)| boot as f64 + s.start_time as f64 / ticks),
            open_fds,
            max_fds,
        }
    }

    /// Appends the `process_*` families that have a value.
    fn render(&self, out: &mut String) {
        let families: [(&str, &str, &str, Option<String>); 6] = [
            (
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time spent, in seconds.",
                self.cpu_seconds.map(|v| v.to_string()),
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                self.resident_bytes.map(|v| v.to_string()),
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                self.virtual_bytes.map(|v| v.to_string()),
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch, in seconds.",
                self.start_time_seconds.map(|v| v.to_string()),
            ),
            (
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                self.open_fds.map(|v| v.to_string()),
            ),
            (
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors (the soft limit).",
                self.max_fds.map(|v| v.to_string()),
            ),
        ];
        for (name, kind, help, value) in families {
            if let Some(value) = value {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
                );
            }
        }
    }
}

/// The fields of `/proc/[pid]/stat` (proc(5)) that `/metrics` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    /// Field 14: user-mode CPU time, in clock ticks.
    utime: u64,
    /// Field 15: kernel-mode CPU time, in clock ticks.
    stime: u64,
    /// Field 22: start time, in clock ticks after boot.
    start_time: u64,
    /// Field 23: virtual memory size, in bytes.
    vsize: u64,
    /// Field 24: resident set size, in pages.
    rss_pages: u64,
}

/// Parses one `/proc/[pid]/stat` line. Field 2 is the command name in
/// parentheses, which may itself hold spaces and parentheses, so the fields are
/// counted from after the *last* `)`. `None` for anything malformed.
fn parse_proc_stat(line: &str) -> Option<ProcStat> {
    let (_, rest) = line.rsplit_once(')')?;
    // rest starts at field 3 (the state).
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n.checked_sub(3)?)?.parse().ok() };
    Some(ProcStat {
        utime: field(14)?,
        stime: field(15)?,
        start_time: field(22)?,
        vsize: field(23)?,
        // A signed field in the kernel's format; never negative in practice.
        rss_pages: fields.get(24 - 3)?.parse::<i64>().ok()?.max(0) as u64,
    })
}

/// The boot time (`btime`, seconds since the epoch) from `/proc/stat`.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// Appends a counter family with one line per entry of `map`, labelled `label`.
/// Appends counter families, each `(name, help, value)`.
fn render_counters(out: &mut String, counters: &[(&str, &str, u64)]) {
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP loopchat_{name} {help}\n# TYPE loopchat_{name} counter\nloopchat_{name} {value}"
        );
    }
}

fn labelled_counter<K: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    map: &BTreeMap<K, u64>,
) {
    let _ = writeln!(
        out,
        "# HELP loopchat_{name} {help}\n# TYPE loopchat_{name} counter"
    );
    for (key, value) in map {
        let _ = writeln!(out, "loopchat_{name}{{{label}=\"{key}\"}} {value}");
    }
}

/// Adds one to `map[key]`.
pub fn count(map: &mut BTreeMap<u16, u64>, key: u16) {
    *map.entry(key).or_insert(0) += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let mut m = Metrics {
            upgrades: 3,
            ..Metrics::default()
        };
        count(&mut m.closes_sent, 1000);
        count(&mut m.closes_sent, 1000);
        count(&mut m.http_errors, 404);
        let text = m.render(Gauges {
            websocket: 2,
            ..Gauges::default()
        });
        assert!(text.contains("loopchat_upgrades_total 3\n"));
        assert!(text.contains("loopchat_connections_open{phase=\"websocket\"} 2\n"));
        assert!(text.contains("loopchat_closes_sent_total{code=\"1000\"} 2\n"));
        assert!(text.contains("loopchat_http_errors_total{status=\"404\"} 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok_and(|v| v >= 0.0), "{line}");
        }
        assert!(text.contains(&format!(
            "loopchat_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn close_codes_received_are_only_those_that_came_in_a_frame() {
        let mut m = Metrics::default();
        m.close_frame_received(Some(CloseCode::NORMAL));
        m.close_frame_received(Some(CloseCode::GOING_AWAY));
        m.close_frame_received(None);
        m.connection_closed_abnormally();
        m.connection_closed_abnormally();
        let text = m.render_with(Gauges::default(), &ProcessStats::default());
        let received: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("loopchat_closes_received_total"))
            .collect();
        assert_eq!(
            received,
            [
                "loopchat_closes_received_total{code=\"1000\"} 1",
                "loopchat_closes_received_total{code=\"1001\"} 1",
                "loopchat_closes_received_total{code=\"none\"} 1",
            ]
        );
        assert!(text.contains("\nloopchat_connections_closed_abnormally_total 2\n"));
    }

    #[test]
    fn process_figures_render_under_standard_names() {
        let stats = ProcessStats {
            cpu_seconds: Some(1.25),
            resident_bytes: Some(4096),
            virtual_bytes: Some(8192),
            start_time_seconds: Some(1_700_000_000.5),
            open_fds: Some(7),
            max_fds: None,
        };
        let text = Metrics::default().render_with(Gauges::default(), &stats);
        for line in [
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.25\n",
            "process_resident_memory_bytes 4096\n",
            "process_virtual_memory_bytes 8192\n",
            "process_start_time_seconds 1700000000.5\n",
            "process_open_fds 7\n",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
        assert!(
            !text.contains("process_max_fds"),
            "an unknown figure is left off"
        );
    }

    #[test]
    fn reads_this_process() {
        let stats = ProcessStats::read();
        assert!(stats.resident_bytes.is_some_and(|v| v > 0), "{stats:?}");
        assert!(stats.virtual_bytes.is_some_and(|v| v > 0), "{stats:?}");
        assert!(stats.open_fds.is_some_and(|v| v >= 3), "{stats:?}");
        assert!(stats.cpu_seconds.is_some_and(|v| v >= 0.0), "{stats:?}");
        let start = stats.start_time_seconds.expect("start time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start > now - 3600.0 && start <= now + 5.0,
            "{start} vs {now}"
        );
    }

    /// A real line (`cat /proc/self/stat`), fields 1-52.
    const STAT: &str = "4242 (loopchat) S 1 4242 4242 0 -1 4194560 1603 0 0 0 \
        17 9 0 0 20 0 2 0 123456 23494656 1234 18446744073709551615 1 1 0 0 0 0 0 \
        4096 17988 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    fn expected() -> ProcStat {
        ProcStat {
            utime: 17,
            stime: 9,
            start_time: 123456,
            vsize: 23494656,
            rss_pages: 1234,
        }
    }

    #[test]
    fn parses_proc_stat() {
        assert_eq!(parse_proc_stat(STAT), Some(expected()));
    }

    #[test]
    fn parses_proc_stat_with_spaces_and_parentheses_in_the_name() {
        for comm in [
            "a b",
            "x) S 9 9 (y",
            "))",
            "(",
            ") 1 2 3 4 5 6 7 8 9 10 11 12 13 14",
        ] {
            let line = STAT.replace("(loopchat)", &format!("({comm})"));
            assert_eq!(parse_proc_stat(&line), Some(expected()), "{line}");
        }
    }

    #[test]
    fn refuses_malformed_proc_stat() {
        for line in [
            "",
            "4242 (loopchat",
            "4242 (loopchat) S 1 2 3",
            &STAT.replace(" 17 9 ", " 17 x "),
            &STAT.replace(" 23494656 ", " -5 "),
        ] {
            assert_eq!(parse_proc_stat(line), None, "{line}");
        }
        // A negative resident set size (signed in the kernel's format) reads as 0.
        let negative = STAT.replace(" 1234 ", " -1 ");
        assert_eq!(parse_proc_stat(&negative).map(|s| s.rss_pages), Some(0));
    }

    #[test]
    fn parses_boot_time() {
        let text = "cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 5\nctxt 9\nbtime 1764576000\nprocesses 77\n";
        assert_eq!(parse_boot_time(text), Some(1_764_576_000));
        assert_eq!(parse_boot_time("cpu 1\nbtime x\n"), None);
        assert_eq!(parse_boot_time(""), None);
    }

    proptest::proptest! {
        #[test]
        fn proc_stat_parsing_never_panics(line in "\\PC*") {
            let _ = parse_proc_stat(&line);
            let _ = parse_boot_time(&line);
        }

        #[test]
        fn proc_stat_parsing_never_panics_on_near_misses(
            comm in "[ a-z()]{0,20}",
            fields in proptest::collection::vec("-?[0-9]{1,20}|[a-zA-Z)(]", 0..60),
        ) {
            let line = format!("1 ({comm}) {}", fields.join(" "));
            let _ = parse_proc_stat(&line);
        }

        #[test]
        fn any_command_name_is_skipped(comm in "\\PC{0,16}") {
            let line = STAT.replace("(loopchat)", &format!("({comm})"));
            proptest::prop_assert_eq!(parse_proc_stat(&line), Some(expected()));
        }
    }
}
