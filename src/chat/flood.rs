//! Flood control for one chat member: a token bucket (`--max-message-rate`).
//!
//! Sans-IO: the caller passes the time. A person who types in a burst keeps
//! every message up to twice the rate; past it messages are dropped and the
//! sender is told once per run of drops; a sender that keeps going for
//! `FLOOD_CLOSE_SECONDS` worth of messages past its limit is a script, and is
//! closed (1008, RFC 6455 §7.4.1 "policy violation").

use std::time::Instant;

/// Flood control for one member: a token bucket that refills `rate` messages a
/// second up to a burst of twice that. Sans-IO: the caller passes the time.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    tokens: f32,
    last: Instant,
    /// Messages dropped since the last one that passed.
    dropped: u32,
}

/// What flood control says of one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Dropped; the first drop of a run gets a notice to the sender.
    DropWithNotice,
    Drop,
    /// Dropped past a whole `FLOOD_CLOSE_SECONDS` of excess: close with 1008.
    Close,
}

/// A sender that keeps going this many seconds' worth of messages past its
/// limit (at the allowed rate) is not a person who typed too fast: it is closed.
pub const FLOOD_CLOSE_SECONDS: u32 = 20;

impl Pace {
    pub fn new(now: Instant, rate: u32) -> Self {
        Pace {
            tokens: (2 * rate) as f32,
            last: now,
            dropped: 0,
        }
    }

    /// Whether one more message may pass now (`clock`, read only when there is
    /// a limit), at `rate` messages a second (0: always).
    pub fn admit(&mut self, clock: impl FnOnce() -> Instant, rate: u32) -> Admit {
        if rate == 0 {
            return Admit::Yes; // and the clock is not read: load tests run here
        }
        let now = clock();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f32();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate as f32).min((2 * rate) as f32);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.dropped = 0;
            return Admit::Yes;
        }
        self.dropped += 1;
        match self.dropped {
            1 => Admit::DropWithNotice,
            n if n >= FLOOD_CLOSE_SECONDS * rate => Admit::Close,
            _ => Admit::Drop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_control_allows_a_burst_then_the_rate_then_closes_a_flood() {
        let start = Instant::now();
        let mut pace = Pace::new(start, 5);
        let admitted: Vec<Admit> = (0..12).map(|_| pace.admit(|| start, 5)).collect();
        assert!(admitted[..10].iter().all(|a| *a == Admit::Yes));
        assert_eq!(admitted[10..], [Admit::DropWithNotice, Admit::Drop]);
        // A second later, five more pass.
        let later = start + std::time::Duration::from_secs(1);
        let passed = (0..8)
            .filter(|_| pace.admit(|| later, 5) == Admit::Yes)
            .count();
        assert_eq!(passed, 5);
        // A sender that never stops is closed after 20 seconds' worth.
        let mut closed = false;
        for _ in 0..(FLOOD_CLOSE_SECONDS * 5) {
            closed |= pace.admit(|| later, 5) == Admit::Close;
        }
        assert!(closed);
        // Rate 0: no limit.
        let mut free = Pace::new(start, 0);
        assert!((0..1000).all(|_| free.admit(|| start, 0) == Admit::Yes));
    }
}
