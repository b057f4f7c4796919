//! What the big room's orchestrator and its client processes say to each other over
//! pipes, one line each: the commands (`join`, `send N`, `quit`) to a worker's stdin,
//! and the reports (`ready`, `progress`, `welcomed`, `settled`, `got N`, `result`)
//! from its stdout. Both sides format and parse them here, so they cannot drift.

use crate::checks::ErrorCounts;

/// A command to a client process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Open the connections.
    Join,
    /// The room's sender sends this many more messages; every member expects them.
    Send(u32),
    /// Report what was seen and exit.
    Quit,
}

impl Command {
    pub fn line(self) -> String {
        match self {
            Command::Join => "join".into(),
            Command::Send(n) => format!("send {n}"),
            Command::Quit => "quit".into(),
        }
    }

    pub fn parse(line: &str) -> Option<Command> {
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["join"] => Some(Command::Join),
            ["send", n] => n.parse().ok().map(Command::Send),
            ["quit"] => Some(Command::Quit),
            _ => None,
        }
    }
}

/// A client process's connections so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Connections started (connect called).
    pub started: usize,
    /// Connections that got their welcome.
    pub welcomed: usize,
    /// Connections told, by a `join` or `presence` notice, that the room is full.
    pub told: usize,
    /// Connections that failed or were closed.
    pub dead: usize,
}

/// What a client process saw, at the end.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub progress: Progress,
    /// Members that got every message sent, in order.
    pub complete: usize,
    pub errors: ErrorCounts,
}

/// A report from a client process.
#[derive(Clone, Debug)]
pub enum Report {
    /// Started, with this open-files (soft) limit.
    Ready {
        fd_limit: u64,
    },
    /// Where its connections stand (every 500 ms while it runs).
    Progress(Progress),
    /// Every connection has its welcome, or is dead (the progress line just before
    /// says how many are welcomed).
    Welcomed,
    /// Every connection has been told that the room is full.
    Settled,
    /// Every live connection has the first N messages, in order.
    Got(u32),
    Result(Tally),
}

/// `key=value` pairs of a line, after its first word.
fn fields(line: &str) -> impl Iterator<Item = (&str, u64)> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|f| f.split_once('='))
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
}

impl Progress {
    fn words(&self) -> String {
        let Progress {
            started,
            welcomed,
            told,
            dead,
        } = self;
        format!("started={started} welcomed={welcomed} told={told} dead={dead}")
    }

    fn set(&mut self, key: &str, value: u64) {
        let v = value as usize;
        match key {
            "started" => self.started = v,
            "welcomed" => self.welcomed = v,
            "told" => self.told = v,
            "dead" => self.dead = v,
            _ => {}
        }
    }
}

impl Report {
    pub fn line(&self) -> String {
        match self {
            Report::Ready { fd_limit } => format!("ready fd_limit={fd_limit}"),
            Report::Progress(p) => format!("progress {}", p.words()),
            Report::Welcomed => "welcomed".into(),
            Report::Settled => "settled".into(),
            Report::Got(n) => format!("got {n}"),
            Report::Result(t) => {
                let e = &t.errors;
                format!(
                    "result {} complete={} lost={} reordered={} corrupt={} closed={} \
                     protocol={} connect_failed={} notes={}",
                    t.progress.words(),
                    t.complete,
                    e.lost,
                    e.reordered,
                    e.corrupt,
                    e.closed,
                    e.protocol,
                    e.connect_failed,
                    e.notes.join(" | ")
                )
            }
        }
    }

    pub fn parse(line: &str) -> Option<Report> {
        let first = line.split_whitespace().next()?;
        Some(match first {
            "ready" => Report::Ready {
                fd_limit: fields(line).find(|(k, _)| *k == "fd_limit")?.1,
            },
            "progress" => {
                let mut p = Progress::default();
                fields(line).for_each(|(k, v)| p.set(k, v));
                Report::Progress(p)
            }
            "welcomed" => Report::Welcomed,
            "settled" => Report::Settled,
            "got" => Report::Got(line.split_whitespace().nth(1)?.parse().ok()?),
            "result" => {
                let (counts, notes) = line.split_once(" notes=")?;
                let mut t = Tally::default();
                for (k, v) in fields(counts) {
                    let e = &mut t.errors;
                    match k {
                        "complete" => t.complete = v as usize,
                        "lost" => e.lost = v,
                        "reordered" => e.reordered = v,
                        "corrupt" => e.corrupt = v,
                        "closed" => e.closed = v,
                        "protocol" => e.protocol = v,
                        "connect_failed" => e.connect_failed = v,
                        _ => t.progress.set(k, v),
                    }
                }
                let notes = notes.split(" | ").filter(|n| !n.is_empty());
                t.errors.notes = notes.map(String::from).collect();
                Report::Result(t)
            }
            _ => return None,
        })
    }
}

/// The lines' round trips, run with the bench's other self-tests.
pub fn self_test() {
    for c in [Command::Join, Command::Send(2), Command::Quit] {
        assert_eq!(Command::parse(&c.line()), Some(c));
    }
    let mut tally = Tally {
        progress: Progress {
            started: 9500,
            welcomed: 9499,
            told: 9400,
            dead: 1,
        },
        complete: 9498,
        ..Tally::default()
    };
    tally.errors.lost = 2;
    tally.errors.note("receiver 3: got 1 of 3".into());
    tally.errors.note("conn 7 (Open): EOF from server".into());
    let Some(Report::Result(back)) = Report::parse(&Report::Result(tally.clone()).line()) else {
        panic!("result line does not parse");
    };
    assert_eq!(back.progress, tally.progress);
    assert_eq!((back.complete, back.errors.lost), (9498, 2));
    assert_eq!(back.errors.notes, tally.errors.notes);
    let line = Report::Progress(tally.progress).line();
    assert!(matches!(Report::parse(&line), Some(Report::Progress(p)) if p == tally.progress));
    assert!(matches!(Report::parse("got 3"), Some(Report::Got(3))));
}
