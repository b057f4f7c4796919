//! Global limits: what no number of connections may multiply past a bound.
//!
//! Every per-connection limit multiplies with the connections one client can
//! open, so each gets a global one here: the bytes held for unfinished messages
//! over all connections (`--input-budget`: past it the largest holder is closed
//! with 1013, Try Again Later), the time a message may take to arrive
//! (`--message-timeout` and `--message-min-rate`: close 1008), and the
//! connections one address may hold (`--max-connections-per-ip`: 503). The
//! history's global bound is the chat's own (`chat.rs`).

use super::writes::push_close;
use super::Server;
use crate::connection::{Connection, Phase};
use crate::message::CloseCode;
use crate::session::MessagePace;
use log::warn;
use std::net::IpAddr;
use std::time::Instant;

/// The bytes a connection holds for input still arriving.
pub(super) fn input_held_by(conn: &Connection) -> usize {
    match &conn.phase {
        Phase::WebSocket(ws) => ws.session.buffered(),
        _ => 0,
    }
}

impl Server {
    /// After a read of `len` bytes was taken by connection `key`, which held
    /// `held_before` bytes of input before it: updates the global total and the
    /// message deadline, and enforces the budget.
    pub(super) fn account_input(&mut self, key: usize, held_before: usize, len: usize) {
        let pace = MessagePace {
            grace: self.config.message_timeout,
            min_rate: self.config.message_min_rate,
        };
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        if let Phase::WebSocket(ws) = &mut conn.phase {
            ws.session.after_input(Instant::now, len, pace);
        }
        let held_after = input_held_by(conn);
        self.input_held = self.input_held.saturating_sub(held_before) + held_after;
        if self.input_held > self.config.input_budget {
            self.enforce_input_budget();
        }
    }

    /// A connection's input is about to be dropped with it: forget its share.
    pub(super) fn forget_input(&mut self, key: usize) {
        if let Some(conn) = self.connections.get(key) {
            self.input_held = self.input_held.saturating_sub(input_held_by(conn));
        }
    }

    /// Closes the connections holding the most unfinished input until the total
    /// is back under `--input-budget`. The largest holder pays, not the newest:
    /// an attacker's large unfinished messages go before anyone's ordinary ones,
    /// and a connection that holds nothing is never closed for the budget.
    fn enforce_input_budget(&mut self) {
        while self.input_held > self.config.input_budget {
            let largest = (self.connections.iter())
                .filter(|(_, conn)| !conn.doomed)
                .map(|(key, conn)| (input_held_by(conn), key))
                .max();
            match largest {
                Some((held, key)) if held > 0 => self.refuse_input(key, held),
                _ => return,
            }
        }
    }

    /// Fails connection `key`, which holds `held` bytes of unfinished input, for
    /// the input budget: its buffers are freed at once, and it gets close 1013.
    fn refuse_input(&mut self, key: usize, held: usize) {
        self.metrics.input_budget_closes += 1;
        warn!(
            "{} [{key}] closed with 1013: its {held} bytes of unfinished input put the total over --input-budget ({} bytes)",
            self.peer(key),
            self.config.input_budget
        );
        let reason = "server busy: too much unfinished input, try again later";
        self.fail_for_input(key, CloseCode::TRY_AGAIN_LATER, reason);
    }

    /// A message started and did not finish in time: close 1008.
    pub(super) fn message_timed_out(&mut self, key: usize) {
        self.metrics.message_timeouts += 1;
        warn!(
            "{} [{key}] closed with 1008: a message did not arrive in time (--message-timeout, --message-min-rate)",
            self.peer(key)
        );
        let reason = "message not finished in time";
        self.fail_for_input(key, CloseCode::POLICY_VIOLATION, reason);
    }

    /// Fails connection `key` for what it sent (or has not finished sending):
    /// its input is given up and its buffers freed at once, it gets our close
    /// frame with `code` unless one was sent already, it leaves its room, and
    /// TCP closes once the frame is out.
    fn fail_for_input(&mut self, key: usize, code: CloseCode, reason: &str) {
        self.forget_input(key);
        // The close frame comes after what the member's room was sent before it.
        self.queue_room_batch_of(key); // batches.rs, "Order"
        let Some((conn, mut outbox)) = self.connection_and_outbox(key) else {
            return;
        };
        let Phase::WebSocket(ws) = &mut conn.phase else {
            return;
        };
        if ws.session.discard_input() {
            push_close(conn, key, code, reason, &mut outbox);
        }
        self.leave_room(key); // rooms.rs
        self.close_after_flush(key); // closing.rs
    }

    /// Whether one more connection from `ip` passes `--max-connections-per-ip`;
    /// if so it is counted.
    pub(super) fn admit_address(&mut self, ip: IpAddr) -> bool {
        let Some(limit) = self.config.max_connections_per_ip else {
            return true;
        };
        let open = self.connections_per_ip.entry(ip).or_insert(0);
        if *open >= limit {
            return false;
        }
        *open += 1;
        true
    }

    /// A connection from `ip` is freed.
    pub(super) fn release_address(&mut self, ip: IpAddr) {
        if let Some(open) = self.connections_per_ip.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                self.connections_per_ip.remove(&ip);
            }
        }
    }
}
