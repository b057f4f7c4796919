//! Timers: one tick drives every deadline. Each tick scans the connections once
//! (a full scan of 10,000 connections costs little and is the clearest code):
//! HTTP request deadlines and idle keep-alive, the TCP close deadline, and each
//! WebSocket session's heartbeat (RFC 6455 §5.5.2) and close deadline (§7.1.1).

use super::writes::{queue_frame, Outgoing};
use super::Server;
use crate::config::Config;
use crate::connection::Phase;
use crate::frame::OpCode;
use crate::session::Tick;
use log::warn;
use std::time::{Duration, Instant};

/// The payload of our heartbeat pings.
const PING_PAYLOAD: &[u8] = b"loopchat";

/// How often the timers run: a quarter of the shortest timeout, within 5 ms..1 s.
pub(super) fn tick_interval(config: &Config) -> Duration {
    [
        config.ping_interval,
        config.handshake_timeout,
        config.close_timeout,
        config.message_timeout,
    ]
    .into_iter()
    .min()
    .unwrap_or(Duration::from_secs(1))
    .div_f64(4.0)
    .clamp(Duration::from_millis(5), Duration::from_secs(1))
}

/// What the tick found for one connection.
enum Due {
    Expired(&'static str),
    Ping,
    MessageTimeout,
}

impl Server {
    /// Deadlines and heartbeats, checked once per tick.
    pub(super) fn run_timers(&mut self) {
        let now = Instant::now();
        self.next_tick = now + self.tick;
        if self.refused_unlogged > 0 {
            warn!(
                "refused {} connections: at the limit of {}",
                self.refused_unlogged, self.max_connections
            );
            self.refused_unlogged = 0;
        }
        self.announce_presence(); // rooms.rs
        let mut due = Vec::new();
        let ping_interval = self.config.ping_interval;
        for (key, conn) in self.connections.iter_mut() {
            if conn.doomed {
                continue;
            }
            if conn.deadline.is_some_and(|d| d <= now) {
                let reason = match &conn.phase {
                    Phase::Http if conn.requests_served > 0 && conn.input.is_empty() => {
                        "idle keep-alive connection closed"
                    }
                    Phase::Http => {
                        self.metrics.handshake_timeouts += 1;
                        "no complete request in time"
                    }
                    _ => "did not close in time",
                };
                due.push((key, Due::Expired(reason)));
            } else if let Phase::WebSocket(ws) = &mut conn.phase {
                match ws.session.on_tick(now, ping_interval) {
                    Tick::Idle => {}
                    Tick::Ping => due.push((key, Due::Ping)),
                    Tick::PongTimeout => {
                        self.metrics.pong_timeouts += 1;
                        due.push((key, Due::Expired("no pong to the last ping")));
                    }
                    Tick::CloseTimeout => {
                        due.push((key, Due::Expired("no close frame from the peer in time")))
                    }
                    Tick::MessageTimeout => due.push((key, Due::MessageTimeout)),
                }
            }
        }
        for (key, what) in due {
            match what {
                Due::Expired(reason) => self.drop_connection(key, reason), // closing.rs
                Due::Ping => self.ping(key),
                Due::MessageTimeout => self.message_timed_out(key), // limits.rs
            }
        }
    }

    /// Sends a heartbeat ping, after what the member's room was sent before it
    /// (`batches.rs`, "Order").
    pub(super) fn ping(&mut self, key: usize) {
        self.queue_room_batch_of(key); // batches.rs
        let Some((conn, mut outbox)) = self.connection_and_outbox(key) else {
            return;
        };
        if queue_frame(
            conn,
            key,
            Outgoing::Frame(OpCode::Ping, PING_PAYLOAD),
            &mut outbox,
        ) {
            outbox.metrics.pings_sent += 1;
        }
    }
}
