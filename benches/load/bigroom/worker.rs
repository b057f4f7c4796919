//! One client process of the big room: this bench binary run again with
//! `--bigroom-worker`. It holds its share of the members' connections on one mio
//! loop (the load [`Client`]: the upgrade checked, every frame parsed, every message
//! checked byte for byte and in order), opens them at a bounded pace when told to
//! join, sends when told to (if it holds the room's sender), and reports each
//! milestone on its stdout as it reaches it (see [`lines`](super::lines)).

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use super::lines::{Command, Progress, Report, Tally};
use super::{MESSAGE_SIZE, ROOM_PATH};
use crate::client::{Client, Mode};
use crate::payload::PayloadFormat;
use crate::sys::raise_nofile_limit;
use crate::target::{Protocol, Target};

/// Loopback source addresses the connections take turns at: about 600 connections
/// each (see `sys::connect_from`).
const SOURCE_ADDRESSES: u8 = 32;
/// How often a worker reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// What one client process is to do: its arguments after `--bigroom-worker`.
#[derive(Clone, Debug)]
pub struct Spec {
    pub addr: SocketAddr,
    /// Connections this process opens.
    pub share: usize,
    /// Members of the room over all processes: the count that fills it.
    pub members: usize,
    /// This process's connections on their way at once.
    pub in_flight: usize,
    /// The round's payload nonce.
    pub nonce: u16,
    /// Whether its first connection is the room's sender.
    pub sender: bool,
}

impl Spec {
    pub fn args(&self) -> Vec<String> {
        let s = self;
        [
            "--bigroom-worker".to_string(),
            s.addr.to_string(),
            s.share.to_string(),
            s.members.to_string(),
            s.in_flight.to_string(),
            s.nonce.to_string(),
            u8::from(s.sender).to_string(),
        ]
        .into()
    }

    fn parse(args: &[String]) -> Result<Spec, String> {
        let [addr, share, members, in_flight, nonce, sender] = args else {
            return Err("ADDR SHARE MEMBERS IN_FLIGHT NONCE SENDER".into());
        };
        let bad = |what: &str| format!("bad {what}");
        Ok(Spec {
            addr: addr.parse().map_err(|_| bad("address"))?,
            share: share.parse().map_err(|_| bad("share"))?,
            members: members.parse().map_err(|_| bad("member count"))?,
            in_flight: in_flight.parse().map_err(|_| bad("in-flight count"))?,
            nonce: nonce.parse().map_err(|_| bad("nonce"))?,
            sender: sender == "1",
        })
    }
}

/// `--bigroom-worker ADDR SHARE MEMBERS IN_FLIGHT NONCE SENDER`: runs until told to
/// quit (or until its stdin closes).
pub fn main(args: &[String]) {
    let spec = match Spec::parse(args) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("--bigroom-worker: {e}");
            std::process::exit(2);
        }
    };
    let (fd_limit, _) = raise_nofile_limit();
    let target = Target {
        addr: spec.addr,
        host: spec.addr.to_string(),
        path: ROOM_PATH.into(),
        protocol: Protocol::WebSocket,
    };
    let format = PayloadFormat::new(spec.nonce, MESSAGE_SIZE);
    let mode = Mode::Chat {
        senders: 1,
        rate_hz: 0.0,
        verbatim: false,
    };
    let mut client = Client::new(target, true, Instant::now(), format, mode).expect("mio poll");
    client.spread_sources(SOURCE_ADDRESSES);
    let commands = read_commands(client.waker().expect("mio waker"));
    say(&Report::Ready { fd_limit });
    if commands.recv() != Ok(Command::Join) {
        return;
    }
    let tally = run(&spec, &mut client, &commands);
    say(&Report::Result(tally));
}

/// The worker's loop, from `join` to `quit`: returns what it saw.
fn run(spec: &Spec, client: &mut Client, commands: &Receiver<Command>) -> Tally {
    let share = spec.share;
    let (mut sent, mut said_got) = (0u32, 0u32);
    let (mut said_welcomed, mut said_settled) = (false, false);
    let mut next_progress = Instant::now();
    loop {
        client.start_paced(share, spec.in_flight, spec.members as u64);
        client.pump(Duration::from_millis(100));
        loop {
            match commands.try_recv() {
                Ok(Command::Send(n)) => {
                    if spec.sender {
                        (0..n).for_each(|_| client.send_now(0));
                    }
                    sent += n;
                }
                Ok(Command::Join) => {}
                Err(TryRecvError::Empty) => break,
                Ok(Command::Quit) | Err(TryRecvError::Disconnected) => {
                    client.count_missing(sent);
                    return Tally {
                        progress: progress(client),
                        complete: client.members_with(sent),
                        errors: client.checks.errors.clone(),
                    };
                }
            }
        }
        // every connection welcomed, or dead (a refusal: the orchestrator says how
        // many were welcomed)
        if !said_welcomed && client.started() == share && client.welcomes + client.dead >= share {
            said_welcomed = true;
            say(&Report::Progress(progress(client)));
            say(&Report::Welcomed);
        }
        if !said_settled && client.told_full >= share {
            said_settled = true;
            say(&Report::Settled);
        }
        if said_got < sent && client.members_with(sent) + client.dead >= share {
            said_got = sent;
            say(&Report::Got(sent));
        }
        if Instant::now() >= next_progress {
            next_progress += PROGRESS_EVERY;
            say(&Report::Progress(progress(client)));
        }
    }
}

fn progress(client: &Client) -> Progress {
    Progress {
        started: client.started(),
        welcomed: client.welcomes,
        told: client.told_full,
        dead: client.dead,
    }
}

/// Writes a report line on stdout (the orchestrator reads it at once).
fn say(report: &Report) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", report.line());
    let _ = out.flush();
}

/// The commands from stdin, read on a thread of their own; each one wakes the loop
/// through `waker`. The end of stdin counts as `quit`.
fn read_commands(waker: mio::Waker) -> Receiver<Command> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match Command::parse(&line) {
                Some(command) => {
                    if tx.send(command).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
                None => eprintln!("--bigroom-worker: unknown command {line:?}"),
            }
        }
        let _ = tx.send(Command::Quit);
        let _ = waker.wake();
    });
    rx
}
