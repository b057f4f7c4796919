//! Counters of what the server did, rendered for `GET /metrics`.
//!
//! The format is Prometheus' text exposition format (version 0.0.4). The loop owns
//! one `Metrics`; counting is a plain integer increment (no atomics, no locks), so
//! it costs nothing measurable on the hot path. Gauges such as open connections by
//! phase are computed when the page is asked for.

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
    /// Close frames the server received, by code (1005: none given; 1006: the
    /// peer closed TCP without one).
    pub closes_received: BTreeMap<u16, u64>,
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
    /// Bytes held for unfinished messages over all connections.
    pub input_held_bytes: usize,
    /// Open WebSocket connections that agreed to permessage-deflate.
    pub deflate: usize,
    /// Messages compressed (at most one per broadcast) and inflated, so far.
    pub compress_calls: u64,
    pub inflate_calls: u64,
    /// Bytes of chat history kept over all rooms.
    pub history_bytes: usize,
}

impl Metrics {
    /// The text of `GET /metrics`.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(2048);
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
            "input_held_bytes",
            "Bytes held for unfinished messages over all connections (--input-budget).",
            &[("", gauges.input_held_bytes)],
        );
        gauge(
            "deflate_connections",
            "Open WebSocket connections with permessage-deflate.",
            &[("", gauges.deflate)],
        );
        gauge(
            "history_bytes",
            "Bytes of chat history kept over all rooms (--history-budget).",
            &[("", gauges.history_bytes)],
        );

        let counters: [(&str, &str, u64); 14] = [
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
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP loopchat_{name} {help}\n# TYPE loopchat_{name} counter\nloopchat_{name} {value}"
            );
        }
        let labelled: [(&str, &str, &str, &BTreeMap<u16, u64>); 3] = [
            (
                "closes_sent_total",
                "Close frames sent, by code.",
                "code",
                &self.closes_sent,
            ),
            (
                "closes_received_total",
                "Close frames received, by code.",
                "code",
                &self.closes_received,
            ),
            (
                "http_errors_total",
                "HTTP requests refused, by status.",
                "status",
                &self.http_errors,
            ),
        ];
        for (name, help, label, map) in labelled {
            let _ = writeln!(
                out,
                "# HELP loopchat_{name} {help}\n# TYPE loopchat_{name} counter"
            );
            for (key, value) in map {
                let _ = writeln!(out, "loopchat_{name}{{{label}=\"{key}\"}} {value}");
            }
        }
        for (name, help, value) in [
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
        ] {
            let _ = writeln!(
                out,
                "# HELP loopchat_{name} {help}\n# TYPE loopchat_{name} counter\nloopchat_{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP loopchat_limit_refusals_total Connections refused or closed by a global limit, by limit.\n# TYPE loopchat_limit_refusals_total counter"
        );
        for (limit, value) in [
            ("max_connections", self.connections_refused),
            ("max_connections_per_ip", self.connections_refused_per_ip),
            ("input_budget", self.input_budget_closes),
            ("message_timeout", self.message_timeouts),
        ] {
            let _ = writeln!(
                out,
                "loopchat_limit_refusals_total{{limit=\"{limit}\"}} {value}"
            );
        }
        out
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
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }
}
