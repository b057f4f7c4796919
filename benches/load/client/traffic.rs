//! What the load client sends and how it checks what comes back: echo (every
//! connection keeps `inflight` messages out and gets each back) and chat or relay
//! (senders broadcast to every member of a room, as fast as a window allows or at a
//! fixed rate); the per-message checks on receipt, and the final count of what never
//! came.

use std::time::{Duration, Instant};

use super::{Client, ConnState, Mode};
use crate::target::Protocol;
use crate::wire::{json_str_field, json_uint_field, push_masked_frame, OP_TEXT};

impl Client {
    pub(super) fn on_open(&mut self, index: usize) {
        if self.sending {
            if let Mode::Echo { .. } = self.mode {
                self.echo_top_up(index);
            }
        }
    }

    /// Sends connection `index`'s next message.
    fn send_message(&mut self, index: usize) {
        let sent_ns = self.now_ns();
        let c = &mut self.conns[index];
        if c.state != ConnState::Open {
            return;
        }
        self.format
            .write(&mut self.payload_buf, c.id, c.sent, sent_ns);
        c.sent += 1;
        c.mask_rng ^= c.mask_rng << 13;
        c.mask_rng ^= c.mask_rng >> 17;
        c.mask_rng ^= c.mask_rng << 5;
        let mask = c.mask_rng.to_ne_bytes();
        push_masked_frame(&mut c.write_buf, OP_TEXT, &self.payload_buf, mask);
        self.total_sent += 1;
        self.queue_flush(index);
    }

    fn echo_top_up(&mut self, index: usize) {
        if let Mode::Echo { inflight } = self.mode {
            while self.conns[index].state == ConnState::Open
                && self.conns[index]
                    .sent
                    .saturating_sub(self.conns[index].received)
                    < inflight
            {
                self.send_message(index);
            }
        }
    }

    pub fn start_sending(&mut self) {
        self.sending = true;
        let now = Instant::now();
        match self.mode {
            Mode::Echo { .. } => {
                for index in 0..self.conns.len() {
                    self.echo_top_up(index);
                }
            }
            Mode::Chat {
                senders, rate_hz, ..
            } => {
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

    /// Chat: sends what is due (at a fixed rate) or what the windows allow.
    pub(super) fn chat_top_up(&mut self) {
        let Mode::Chat {
            senders, rate_hz, ..
        } = self.mode
        else {
            return;
        };
        if !self.sending {
            return;
        }
        if rate_hz > 0.0 {
            self.send_due(senders, Duration::from_secs_f64(1.0 / rate_hz));
        } else {
            self.fill_windows(senders);
        }
    }

    /// Each sender sends what is due, every `period`; one that fell behind (more than
    /// ten periods) starts again from now rather than burst.
    fn send_due(&mut self, senders: usize, period: Duration) {
        let now = Instant::now();
        for s in 0..senders {
            let mut n = 0;
            while self.next_due[s] <= now && n < 10 {
                self.send_message(s);
                self.next_due[s] += period;
                n += 1;
            }
            if self.next_due[s] <= now {
                self.next_due[s] = now + period; // fell behind: do not burst
            }
        }
    }

    /// Senders take turns sending while their own copies outstanding are under the
    /// per-sender window and the deliveries outstanding under the global one.
    fn fill_windows(&mut self, senders: usize) {
        let receivers = self.conns.len() as u64;
        loop {
            let mut progress = false;
            for s in 0..senders {
                let own = self.conns[s]
                    .sent
                    .saturating_sub(self.next_expected[s * senders + s]);
                let global = (self.total_sent * receivers).saturating_sub(self.total_delivered);
                if own < self.chat_window && global < receivers * self.chat_global {
                    self.send_message(s);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
    }

    /// How long the next poll may wait: no longer than until a sender is due.
    pub(super) fn next_timeout(&self, max: Duration) -> Duration {
        if self.sending && !self.next_due.is_empty() {
            let now = Instant::now();
            let due = self.next_due.iter().min().copied().unwrap_or(now + max);
            return due.saturating_duration_since(now).min(max);
        }
        max
    }

    /// Counts one delivery and its latency, while measuring.
    fn record(&mut self, sent_ns: u64, now: u64) {
        if self.measuring {
            self.delivered += 1;
            self.latencies_ns
                .push(now.saturating_sub(sent_ns).min(u32::MAX as u64) as u32);
        }
    }

    /// A whole message received on connection `index`.
    pub(super) fn on_message(&mut self, index: usize, op: u8, payload: &[u8], now: u64) {
        match self.mode {
            Mode::Echo { .. } => self.on_echo(index, op, payload, now),
            Mode::Chat { senders, .. } => self.on_chat(index, senders, op, payload, now),
        }
    }

    fn on_echo(&mut self, index: usize, op: u8, payload: &[u8], now: u64) {
        let Some(stamp) = self.checks.decode(
            &self.format,
            payload,
            || format!("conn {index}"),
            || format!("unrecognised echo ({} bytes)", payload.len()),
        ) else {
            return;
        };
        let c = &mut self.conns[index];
        if stamp.conn != c.id {
            let note = format!("conn {index}: echo carries conn id {}", stamp.conn);
            return self.checks.corrupt(note);
        }
        if op != OP_TEXT && self.target.protocol == Protocol::WebSocket {
            self.checks.protocol_error("text echoed as binary".into());
        }
        let got = || format!("conn {index}: got");
        if !self.checks.sequence(&mut c.received, stamp.seq, got) {
            return;
        }
        self.total_delivered += 1;
        self.record(stamp.sent_ns, now);
        if self.sending {
            self.echo_top_up(index);
        }
    }

    fn on_chat(&mut self, index: usize, senders: usize, op: u8, payload: &[u8], now: u64) {
        if op != OP_TEXT {
            let note = format!("receiver {index}: a binary frame (all were sent as text)");
            return self.checks.protocol_error(note);
        }
        let Some(text) = self.chat_text(index, payload) else {
            return;
        };
        let Some(stamp) = self.checks.decode(
            &self.format,
            text,
            || format!("receiver {index}"),
            || "unrecognised message text".into(),
        ) else {
            return;
        };
        let sender = stamp.conn as usize;
        if sender >= senders {
            let note = format!("receiver {index}: message from unknown sender {sender}");
            return self.checks.corrupt(note);
        }
        let expected = &mut self.next_expected[index * senders + sender];
        let stream = || format!("receiver {index}: sender {sender}");
        if !self.checks.sequence(expected, stamp.seq, stream) {
            return;
        }
        self.total_delivered += 1;
        self.record(stamp.sent_ns, now);
        self.split_delivery(index, sender, stamp.seq, stamp.sent_ns, now);
    }

    /// Whether the server passes our payloads on unchanged: a raw fan-out (it relays
    /// our own frames, still masked) or a `/relay` room (the same payload in a server
    /// frame); then every frame must be one of ours, checked byte for byte.
    pub fn verbatim(&self) -> bool {
        self.target.protocol == Protocol::RawTcp
            || matches!(self.mode, Mode::Chat { verbatim: true, .. })
    }

    /// The text a chat message carries: the payload itself where the server passes it
    /// on verbatim, else the `text` of a JSON `message`; `None` for anything else
    /// (welcome, join, presence, leave, ...), whose member count and flood-control
    /// notices are noted on the way.
    fn chat_text<'a>(&mut self, index: usize, payload: &'a [u8]) -> Option<&'a [u8]> {
        if self.verbatim() {
            return Some(payload);
        }
        let kind = json_str_field(payload, b"type", 0);
        if kind != Some(b"message".as_slice()) {
            if self.measuring {
                self.notices_measured += 1;
            }
            match kind.unwrap_or_default() {
                b"welcome" => {
                    let c = &mut self.conns[index];
                    self.welcomes += usize::from(!c.welcomed);
                    c.welcomed = true;
                }
                b"join" | b"presence" => {
                    self.announces = true;
                    let online = json_uint_field(payload, b"online").unwrap_or(0);
                    let c = &mut self.conns[index];
                    let full = self.full_room;
                    self.told_full += usize::from(full > 0 && c.online < full && online >= full);
                    c.online = c.online.max(online);
                }
                // {"type":"notice","code":"rate_limited",...}: loopchat's flood control
                // dropped this member's message (and says so once)
                b"notice"
                    if json_str_field(payload, b"code", 0) == Some(b"rate_limited".as_slice()) =>
                {
                    self.rate_limited += 1
                }
                _ => {}
            }
            return None;
        }
        let text = json_str_field(payload, b"text", self.format.size);
        if text.is_none() {
            self.checks.protocol_error("message without text".into());
        }
        text
    }

    /// Messages (echo) or deliveries (chat) sent and not yet received back.
    fn outstanding(&self) -> u64 {
        match self.mode {
            Mode::Echo { .. } => self
                .conns
                .iter()
                .filter(|c| c.state == ConnState::Open)
                .map(|c| c.sent.saturating_sub(c.received) as u64)
                .sum(),
            Mode::Chat { .. } => {
                let live = self
                    .conns
                    .iter()
                    .filter(|c| c.state == ConnState::Open)
                    .count() as u64;
                (self.total_sent * live).saturating_sub(self.total_delivered)
            }
        }
    }

    /// Stops sending and waits (bounded) for everything in flight; then counts what
    /// never came as lost.
    pub fn drain_and_verify(&mut self, limit: Duration) {
        self.sending = false;
        let deadline = Instant::now() + limit;
        while self.outstanding() > 0 && Instant::now() < deadline {
            self.pump(Duration::from_millis(20));
        }
        match self.mode {
            Mode::Echo { .. } => self.count_unechoed(),
            Mode::Chat { senders, .. } => self.count_undelivered(senders),
        }
    }

    /// Chat: connection `index` sends its next message, written at once (the big
    /// room's sender; the other workloads send through their windows or rates).
    pub fn send_now(&mut self, index: usize) {
        self.send_message(index);
        self.flush_queued();
    }

    /// Chat: open connections that received, in order, at least `k` messages
    /// from sender 0.
    pub fn members_with(&self, k: u32) -> usize {
        let Mode::Chat { senders, .. } = self.mode else {
            return 0;
        };
        (0..self.conns.len())
            .filter(|&r| self.conns[r].state == ConnState::Open)
            .filter(|&r| self.next_expected[r * senders] >= k)
            .count()
    }

    /// Chat: counts as lost what each open connection has not received of the
    /// `sent` messages of sender 0 (which may be another process's connection).
    pub fn count_missing(&mut self, sent: u32) {
        let Mode::Chat { senders, .. } = self.mode else {
            return;
        };
        for r in 0..self.conns.len() {
            let got = self.next_expected[r * senders];
            if self.conns[r].state == ConnState::Open && got < sent {
                let errors = &mut self.checks.errors;
                errors.lost += u64::from(sent - got);
                errors.note(format!("receiver {r}: got {got} of {sent}"));
            }
        }
    }

    fn count_unechoed(&mut self) {
        for (index, c) in self.conns.iter().enumerate() {
            if c.state == ConnState::Open && c.received != c.sent {
                let errors = &mut self.checks.errors;
                errors.lost += (c.sent - c.received) as u64;
                let (s, r) = (c.sent, c.received);
                errors.note(format!("conn {index}: sent {s}, {r} echoed back"));
            }
        }
    }

    fn count_undelivered(&mut self, senders: usize) {
        for r in 0..self.conns.len() {
            if self.conns[r].state != ConnState::Open {
                continue;
            }
            for s in 0..senders {
                let got = self.next_expected[r * senders + s];
                let sent = self.conns[s].sent;
                if got != sent {
                    let errors = &mut self.checks.errors;
                    errors.lost += sent.saturating_sub(got) as u64;
                    errors.note(format!("receiver {r}: got {got} of {sent} from sender {s}"));
                }
            }
        }
    }
}
