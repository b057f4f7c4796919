//! The workloads: what each measures (echo throughput, chat fan-out, verbatim relay
//! fan-out, latency at a fixed rate, memory), the full list, and the selection a run
//! makes from it (`--quick`, filters, what a `--url` server can take).

use crate::client::Mode;
use crate::options::Options;
use crate::servers::ServerKind;
use crate::target::url_path;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WorkloadKind {
    /// Messages echoed per second.
    Echo,
    /// Chat deliveries per second.
    Chat,
    /// Relay deliveries per second: `/relay/ROOM` passes each message on verbatim.
    Relay,
    /// Chat latency at a fixed message rate.
    Latency,
    /// Peak RSS of a fresh server under echo load.
    MemEcho,
    /// RSS per idle connection.
    MemIdle,
    /// One big chat room filled from two client processes: join and settle time,
    /// one broadcast to every member, the server's peak RSS (`bigroom.rs`).
    BigRoom,
}

impl WorkloadKind {
    /// Whether it runs in a chat room (`/chat/ROOM`).
    pub fn is_chat(self) -> bool {
        matches!(self, WorkloadKind::Chat | WorkloadKind::Latency)
    }

    /// Whether it is a fan-out to the members of a room (chat or relay; else echo).
    pub fn is_room(self) -> bool {
        self.is_chat() || self == WorkloadKind::Relay
    }

    /// A memory figure: one round, against a fresh server each time.
    pub fn is_memory(self) -> bool {
        matches!(self, WorkloadKind::MemEcho | WorkloadKind::MemIdle)
    }

    /// The path to load on a server of ours (a room of its own per round for chat
    /// and relay).
    pub fn path(self, nonce: u16) -> String {
        if self.is_chat() {
            format!("/chat/bench-{nonce:04x}")
        } else if self == WorkloadKind::Relay {
            format!("/relay/bench-{nonce:04x}")
        } else {
            "/echo".into()
        }
    }

    /// The servers it compares: loopchat, the raw TCP limit, tokio-tungstenite. The
    /// tokio server has no relay endpoint (its /chat wraps each message in JSON, as
    /// loopchat's does), so relay compares loopchat with the raw fan-out alone.
    pub fn local_servers(self) -> Vec<ServerKind> {
        match self {
            WorkloadKind::BigRoom => vec![ServerKind::Loopchat],
            WorkloadKind::Relay => vec![ServerKind::Loopchat, ServerKind::RawFanout],
            k if k.is_chat() => vec![
                ServerKind::Loopchat,
                ServerKind::RawFanout,
                ServerKind::Tokio,
            ],
            _ => vec![ServerKind::Loopchat, ServerKind::RawEcho, ServerKind::Tokio],
        }
    }
}

#[derive(Clone, Debug)]
pub struct Workload {
    pub name: String,
    pub kind: WorkloadKind,
    /// Connections (receivers, for chat).
    pub conns: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Echo: messages in flight per connection.
    pub inflight: u32,
    /// Chat and relay: how many of the connections send.
    pub senders: usize,
    /// Latency: messages per second per sender (0: as fast as the window allows).
    pub rate_hz: f64,
    /// Part of `--quick`.
    pub quick: bool,
}

impl Workload {
    pub fn mode(&self) -> Mode {
        if self.kind.is_room() {
            Mode::Chat {
                senders: self.senders,
                rate_hz: self.rate_hz,
                verbatim: self.kind == WorkloadKind::Relay,
            }
        } else {
            Mode::Echo {
                inflight: self.inflight.max(1),
            }
        }
    }

    /// The measured seconds of a round, `--secs` asking `secs` (latency takes at
    /// least 3 s, for its p99).
    pub fn measured_secs(&self, secs: f64) -> f64 {
        match self.kind {
            WorkloadKind::Latency => secs.max(3.0),
            _ => secs,
        }
    }

    /// Rounds to run, `--rounds` asking `rounds` (a memory figure takes one).
    pub fn rounds(&self, rounds: usize) -> usize {
        if self.kind.is_memory() {
            1
        } else {
            rounds
        }
    }

    /// What it measures, for its heading.
    pub fn describe(&self) -> String {
        let (conns, size, inflight, senders) = (self.conns, self.size, self.inflight, self.senders);
        match self.kind {
            WorkloadKind::Echo => {
                format!("{conns} conns, {size} B messages, {inflight} in flight per conn")
            }
            WorkloadKind::Chat => format!(
                "{conns} receivers, {senders} sender(s), {size} B messages (rates are deliveries)"
            ),
            WorkloadKind::Relay => format!(
                "{conns} members, {senders} sender(s), {size} B messages passed on verbatim \
                 (rates are deliveries)"
            ),
            WorkloadKind::Latency => {
                format!(
                    "{conns} receivers, {senders} senders x {} msg/s",
                    self.rate_hz
                )
            }
            WorkloadKind::MemEcho => format!(
                "peak RSS (VmHWM) of a fresh server echoing to {conns} conns, {inflight} in flight"
            ),
            WorkloadKind::MemIdle => format!("RSS per idle WebSocket connection, {conns} conns"),
            WorkloadKind::BigRoom => format!(
                "{conns} members join one room from 2 client processes: join time, \
                 settle time, 1 + 2 messages to every member in order, server peak RSS"
            ),
        }
    }
}

/// Every workload, in the order they run; mem/idle with `idle_conns` connections,
/// the big room with `bigroom_members`.
fn catalogue(idle_conns: usize, bigroom_members: usize) -> Vec<Workload> {
    let base = Workload {
        name: String::new(),
        kind: WorkloadKind::Echo,
        conns: 0,
        size: 32,
        inflight: 0,
        senders: 0,
        rate_hz: 0.0,
        quick: true,
    };
    let mut v = Vec::new();
    for (conns, inflight, quick) in [
        (100, 1, false),
        (100, 16, true),
        (1000, 1, true),
        (1000, 16, false),
    ] {
        v.push(Workload {
            name: format!("echo/c{conns}/if{inflight}"),
            conns,
            inflight,
            quick,
            ..base.clone()
        });
    }
    for receivers in [100, 1000] {
        for senders in [1, 10] {
            for (size, size_name) in [(32, "32B"), (1024, "1KiB")] {
                let quick = (receivers == 100 && senders == 10 && size == 32)
                    || (receivers == 1000 && senders == 1 && size == 1024);
                v.push(Workload {
                    name: format!("chat/r{receivers}/s{senders}/{size_name}"),
                    kind: WorkloadKind::Chat,
                    conns: receivers,
                    size,
                    senders,
                    quick,
                    ..base.clone()
                });
            }
        }
    }
    // The same rooms on /relay: what a fan-out load tool gets, each message passed on
    // verbatim (no JSON), so the client checks it exactly as the raw fan-out's.
    for receivers in [100, 1000] {
        for senders in [1, 10] {
            for (size, size_name) in [(32, "32B"), (1024, "1KiB")] {
                let quick = (receivers == 1000 && senders == 10 && size == 32)
                    || (receivers == 100 && senders == 1 && size == 1024);
                v.push(Workload {
                    name: format!("relay/r{receivers}/s{senders}/{size_name}"),
                    kind: WorkloadKind::Relay,
                    conns: receivers,
                    size,
                    senders,
                    quick,
                    ..base.clone()
                });
            }
        }
    }
    v.push(Workload {
        name: "latency/r1000/s10x10hz".into(),
        kind: WorkloadKind::Latency,
        conns: 1000,
        senders: 10,
        rate_hz: 10.0,
        ..base.clone()
    });
    v.push(Workload {
        name: "mem/echo1000".into(),
        kind: WorkloadKind::MemEcho,
        conns: 1000,
        inflight: 16,
        ..base.clone()
    });
    v.push(Workload {
        name: format!("mem/idle{idle_conns}"),
        kind: WorkloadKind::MemIdle,
        conns: idle_conns,
        ..base.clone()
    });
    v.push(Workload {
        name: format!("bigroom/m{bigroom_members}"),
        kind: WorkloadKind::BigRoom,
        conns: bigroom_members,
        senders: 1,
        ..base
    });
    v
}

/// The workloads this run asked for: `--quick`'s subset, the filters, and with `--url`
/// those the server can take (echo, chat or relay by its path; memory only with a PID;
/// never the big room, which starts a server of its own with the limits it needs).
pub fn select(options: &Options) -> Vec<Workload> {
    let mut v = catalogue(options.idle_conns, options.bigroom_members);
    v.retain(|w| !options.quick || w.quick);
    if !options.filters.is_empty() {
        v.retain(|w| options.filters.iter().any(|f| w.name.contains(f.as_str())));
    }
    if let Some(url) = &options.url {
        let path = url_path(url);
        let chat = path.starts_with("/chat");
        let relay = path.starts_with("/relay");
        let echo = !chat && !relay;
        let pid = options.server_pid.is_some();
        v.retain(|w| match w.kind {
            WorkloadKind::Echo => echo,
            WorkloadKind::Chat | WorkloadKind::Latency => chat,
            WorkloadKind::Relay => relay,
            WorkloadKind::MemEcho => echo && pid,
            WorkloadKind::MemIdle => pid,
            WorkloadKind::BigRoom => false,
        });
    }
    v
}
