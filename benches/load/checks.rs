//! The per-message checks of the load client and their tally: whether each message
//! received is this round's and intact, and whether it comes in its sender's sequence
//! (a gap counts the messages lost, an older one counts as reordered or duplicated);
//! and the error counts, with the first few notes saying what went wrong.

use std::fmt::Write as _;

use crate::payload::{Decoded, PayloadFormat, Stamp, SEQ_MASK};

/// Notes kept per round (and per aggregate): the first few tell the story.
const MAX_NOTES: usize = 6;

/// What went wrong in a round, by kind, with the first few notes.
#[derive(Default, Clone, Debug)]
pub struct ErrorCounts {
    pub lost: u64,
    pub reordered: u64,
    pub corrupt: u64,
    pub closed: u64,
    pub protocol: u64,
    pub connect_failed: u64,
    pub notes: Vec<String>,
}

impl ErrorCounts {
    pub fn total(&self) -> u64 {
        self.lost
            + self.reordered
            + self.corrupt
            + self.closed
            + self.protocol
            + self.connect_failed
    }

    /// Keeps `s` if fewer than MAX_NOTES notes are kept.
    pub fn note(&mut self, s: String) {
        if self.notes.len() < MAX_NOTES {
            self.notes.push(s);
        }
    }

    /// Adds another round's counts and notes to these.
    pub fn merge(&mut self, o: &ErrorCounts) {
        self.lost += o.lost;
        self.reordered += o.reordered;
        self.corrupt += o.corrupt;
        self.closed += o.closed;
        self.protocol += o.protocol;
        self.connect_failed += o.connect_failed;
        for n in &o.notes {
            self.note(n.clone());
        }
    }

    /// "0", or the non-zero counts: "lost=3 closed=1".
    pub fn summary(&self) -> String {
        if self.total() == 0 {
            return "0".into();
        }
        let mut s = String::new();
        for (k, v) in [
            ("lost", self.lost),
            ("reordered", self.reordered),
            ("corrupt", self.corrupt),
            ("closed", self.closed),
            ("protocol", self.protocol),
            ("connect-failed", self.connect_failed),
        ] {
            if v > 0 {
                let _ = write!(s, "{k}={v} ");
            }
        }
        s.trim_end().to_string()
    }
}

/// The checks a client makes on what it receives, and their tally.
pub struct MessageChecks {
    /// Every message must be this round's (a server of our own); else others' messages
    /// (an external server's other users) are only counted in `foreign`.
    strict: bool,
    pub foreign: u64,
    pub errors: ErrorCounts,
}

impl MessageChecks {
    pub fn new(strict: bool) -> MessageChecks {
        MessageChecks {
            strict,
            foreign: 0,
            errors: ErrorCounts::default(),
        }
    }

    /// Counts a protocol error and notes it.
    pub fn protocol_error(&mut self, note: String) {
        self.errors.protocol += 1;
        self.errors.note(note);
    }

    /// Counts a corrupt message and notes it.
    pub fn corrupt(&mut self, note: String) {
        self.errors.corrupt += 1;
        self.errors.note(note);
    }

    /// Checks one received payload: its stamp if it is this round's and intact. Notes
    /// name the receiver as `who` says ("conn 3"), and `unrecognised` says what a
    /// foreign payload is where that is an error.
    pub fn decode(
        &mut self,
        format: &PayloadFormat,
        payload: &[u8],
        who: impl FnOnce() -> String,
        unrecognised: impl FnOnce() -> String,
    ) -> Option<Stamp> {
        match format.decode(payload) {
            Decoded::Ours(stamp) => return Some(stamp),
            Decoded::Foreign if !self.strict => self.foreign += 1,
            Decoded::Foreign => self.corrupt(format!("{}: {}", who(), unrecognised())),
            Decoded::Corrupt(why) => self.corrupt(format!("{}: {why}", who())),
        }
        None
    }

    /// Checks sequence number `seq` against the one `expected` next from its sender,
    /// and moves `expected` past it. True if the message counts as delivered (the next
    /// one, or one after a gap, whose messages count as lost); false for one older than
    /// expected (reordered or duplicated). `stream` names the sender in notes, as in
    /// "conn 3: got" or "receiver 3: sender 1" (then " seq 7, expected 5").
    pub fn sequence(
        &mut self,
        expected: &mut u32,
        seq: u32,
        stream: impl FnOnce() -> String,
    ) -> bool {
        let want = *expected;
        let on_wire = want & SEQ_MASK;
        if seq == on_wire {
            *expected += 1;
            true
        } else if seq > on_wire {
            self.errors.lost += (seq - on_wire) as u64;
            let note = format!("{} seq {seq}, expected {want}", stream());
            self.errors.note(note);
            *expected = seq + 1;
            true
        } else {
            self.errors.reordered += 1;
            let note = format!("{} seq {seq} after {want}", stream());
            self.errors.note(note);
            false
        }
    }
}
