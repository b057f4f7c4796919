//! The load client: many WebSocket (or raw TCP) connections on one mio poll loop, no
//! async runtime. This module opens the connections (connect, HTTP upgrade), reads and
//! writes them ([`reading`] cuts what it reads into frames and messages), and
//! [`traffic`] decides what to send and checks what comes back.

mod reading;
mod split;
mod traffic;

pub use split::{self_test as split_self_test, NodeSplit, OrderCheck};

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::checks::MessageChecks;
use crate::payload::PayloadFormat;
use crate::sys::connect_from;
use crate::target::{Protocol, Target};
use crate::wire::WS_KEY;

/// Connections that may be connecting or handshaking at once.
const MAX_PENDING_CONNECTS: usize = 256;
/// A larger frame from the server is a protocol error.
const MAX_FRAME: u64 = 64 << 20;

/// Where a connection stands (its `Debug` form appears in notes).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConnState {
    Connecting,
    Handshake,
    Open,
    Dead,
}

/// What the connections do once open.
#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    /// Every connection sends and gets its own messages back, `inflight` at a time.
    Echo { inflight: u32 },
    /// Senders are conns 0..senders; every conn is a receiver (the sender included).
    /// `rate_hz` 0: as fast as the window allows. `verbatim`: the server passes each
    /// payload on unchanged (`/relay`), with no welcome or notices; else it is a chat
    /// server's JSON `message` (unless the target is a raw fan-out, verbatim too).
    Chat {
        senders: usize,
        rate_hz: f64,
        verbatim: bool,
    },
}

/// One client connection.
struct Connection {
    socket: Option<TcpStream>,
    state: ConnState,
    /// What was read but not yet used: the start of a frame, or of the handshake reply.
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
    /// Bytes of `write_buf` already written.
    write_pos: usize,
    /// In `Client::to_flush`.
    queued_for_flush: bool,
    /// A fragmented message's payload so far, and its opcode.
    fragments: Vec<u8>,
    fragment_opcode: u8,
    /// xorshift state for the frame masks.
    mask_rng: u32,
    id: u32,
    /// Messages sent.
    sent: u32,
    /// Echo: the sequence number expected back next.
    received: u32,
    /// Chat: the server's welcome has come.
    welcomed: bool,
    /// Chat: the highest member count a `join` or `presence` notice has told it.
    online: u64,
}

/// The client of one round: its connections, what they sent and expect back, and
/// what it measured.
pub struct Client {
    poll: Poll,
    events: Option<Events>,
    conns: Vec<Connection>,
    pub target: Target,
    /// The time base of the payloads' send times.
    t0: Instant,
    format: PayloadFormat,
    pub mode: Mode,
    // sending state
    sending: bool,
    pub chat_window: u32,    // per-sender outstanding (own copy not yet back)
    pub chat_global: u64,    // outstanding deliveries, in messages per receiver
    next_expected: Vec<u32>, // chat: [receiver * senders + sender] next expected seq
    next_due: Vec<Instant>,
    total_sent: u64,
    total_delivered: u64,
    // measurement
    pub measuring: bool,
    pub delivered: u64,
    pub latencies_ns: Vec<u32>, // saturating
    last_rx: Instant,
    pub checks: MessageChecks,
    /// Chat: some member got a `join` or `presence` notice (the server announces
    /// arrivals, so set-up waits until every member has been told the full count).
    pub announces: bool,
    /// Chat: frames other than messages (notices) received while measuring.
    pub notices_measured: u64,
    /// Chat: `rate_limited` notices (the server's flood control dropped a message).
    pub rate_limited: u64,
    /// Chat: connections that got their welcome.
    pub welcomes: usize,
    /// Chat: the member count that fills the room (0: not given), and the
    /// connections a notice has told that the room holds that many.
    full_room: u64,
    pub told_full: usize,
    /// Connections that died (closed, failed to connect or upgrade).
    pub dead: usize,
    /// Loopback source addresses the connections take turns at (127.0.0.2 on);
    /// 0: the kernel's choice.
    sources: u8,
    scratch: Vec<u8>,
    payload_buf: Vec<u8>,
    to_flush: Vec<usize>,
    /// A room spread over several servers (the cluster workloads); `None`: one.
    pub split: Option<NodeSplit>,
}

impl Client {
    /// A client with no connection yet. `strict`: the server is one of ours, so every
    /// message must be this round's.
    pub fn new(
        target: Target,
        strict: bool,
        t0: Instant,
        format: PayloadFormat,
        mode: Mode,
    ) -> io::Result<Client> {
        Ok(Client {
            poll: Poll::new()?,
            events: Some(Events::with_capacity(1024)),
            conns: Vec::new(),
            target,
            t0,
            payload_buf: vec![0u8; format.size],
            format,
            mode,
            sending: false,
            chat_window: 8,
            chat_global: 16,
            next_expected: Vec::new(),
            next_due: Vec::new(),
            total_sent: 0,
            total_delivered: 0,
            measuring: false,
            delivered: 0,
            latencies_ns: Vec::new(),
            last_rx: Instant::now(),
            checks: MessageChecks::new(strict),
            announces: false,
            notices_measured: 0,
            rate_limited: 0,
            welcomes: 0,
            full_room: 0,
            told_full: 0,
            dead: 0,
            sources: 0,
            scratch: vec![0u8; 64 * 1024],
            to_flush: Vec::new(),
            split: None,
        })
    }

    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn start_conn(&mut self) {
        let id = self.conns.len() as u32;
        let mut c = Connection {
            socket: None,
            state: ConnState::Connecting,
            read_buf: Vec::new(),
            write_buf: Vec::new(),
            write_pos: 0,
            queued_for_flush: false,
            fragments: Vec::new(),
            fragment_opcode: 0,
            mask_rng: 0x9e37_79b9 ^ id.wrapping_mul(0x85eb_ca6b) | 1,
            id,
            sent: 0,
            received: 0,
            welcomed: false,
            online: 0,
        };
        let target = self.addr_for(id as usize);
        let connected = match self.sources {
            0 => TcpStream::connect(target),
            n => {
                let source = Ipv4Addr::new(127, 0, 0, 2 + (id % n as u32) as u8);
                connect_from(source.into(), target)
            }
        };
        match connected {
            Ok(mut s) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                let registry = self.poll.registry();
                if registry
                    .register(&mut s, Token(id as usize), interest)
                    .is_ok()
                {
                    c.socket = Some(s);
                } else {
                    c.state = ConnState::Dead;
                }
            }
            Err(e) => {
                c.state = ConnState::Dead;
                self.checks.errors.note(format!("connect: {e}"));
            }
        }
        if c.state == ConnState::Dead {
            self.checks.errors.connect_failed += 1;
            self.dead += 1;
        }
        self.conns.push(c);
    }

    /// Closes connection `index`; `count_as_error`: count it (as closed, or as failed to
    /// connect if it never opened) and note `why`.
    fn kill(&mut self, index: usize, why: &str, count_as_error: bool) {
        let c = &mut self.conns[index];
        if c.state == ConnState::Dead {
            return;
        }
        let was = c.state;
        c.state = ConnState::Dead;
        self.dead += 1;
        if let Some(mut s) = c.socket.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        if count_as_error {
            let errors = &mut self.checks.errors;
            if was == ConnState::Open {
                errors.closed += 1;
            } else {
                errors.connect_failed += 1;
            }
            errors.note(format!("conn {index} ({was:?}): {why}"));
        }
    }

    fn on_connect(&mut self, index: usize) {
        let c = &mut self.conns[index];
        let Some(s) = c.socket.as_mut() else { return };
        match s.take_error() {
            Ok(Some(e)) | Err(e) => return self.kill(index, &format!("connect: {e}"), true),
            Ok(None) => {}
        }
        match s.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => return self.kill(index, &format!("connect: {e}"), true),
        }
        let _ = s.set_nodelay(true);
        match self.target.protocol {
            Protocol::RawTcp => {
                c.state = ConnState::Open;
                self.on_open(index);
            }
            Protocol::WebSocket => {
                c.state = ConnState::Handshake;
                let _ = write!(
                    &mut c.write_buf,
                    "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
                    self.target.path, self.target.host
                );
                self.queue_flush(index);
            }
        }
    }

    fn queue_flush(&mut self, index: usize) {
        let c = &mut self.conns[index];
        if !c.queued_for_flush {
            c.queued_for_flush = true;
            self.to_flush.push(index);
        }
    }

    /// Writes what connection `index` has to send, as far as the socket takes it.
    fn flush(&mut self, index: usize) {
        let c = &mut self.conns[index];
        c.queued_for_flush = false;
        let Some(s) = c.socket.as_mut() else { return };
        while c.write_pos < c.write_buf.len() {
            match s.write(&c.write_buf[c.write_pos..]) {
                Ok(0) => return self.kill(index, "write returned 0", true),
                Ok(n) => c.write_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.kill(index, &format!("write: {e}"), true),
            }
        }
        c.write_buf.clear();
        c.write_pos = 0;
    }

    /// One poll + dispatch + flush. Bounded by `timeout`.
    pub fn pump(&mut self, timeout: Duration) {
        let mut events = self.events.take().unwrap();
        let timeout = self.next_timeout(timeout);
        if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                panic!("poll: {e}");
            }
        }
        for event in events.iter() {
            self.on_event(event);
        }
        self.events = Some(events);
        self.chat_top_up();
        self.flush_queued();
    }

    fn on_event(&mut self, event: &Event) {
        let index = event.token().0;
        if index >= self.conns.len() {
            return;
        }
        if self.conns[index].state == ConnState::Connecting {
            self.on_connect(index);
            if self.conns[index].state == ConnState::Connecting {
                return;
            }
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.on_readable(index);
        }
        if event.is_writable() && !self.conns[index].write_buf.is_empty() {
            self.queue_flush(index);
        }
    }

    fn flush_queued(&mut self) {
        let mut queued = std::mem::take(&mut self.to_flush);
        for &index in &queued {
            self.flush(index);
        }
        queued.clear();
        if self.to_flush.is_empty() {
            self.to_flush = queued; // keep the allocation
        }
    }

    /// Opens `n` connections, at most MAX_PENDING_CONNECTS handshakes at a time.
    /// Returns how many are open. In chat mode, it also sizes the sequence check.
    pub fn open_all(&mut self, n: usize, limit: Duration) -> usize {
        if let Mode::Chat { senders, .. } = self.mode {
            self.next_expected = vec![0; n * senders];
        }
        let deadline = Instant::now() + limit;
        let mut open;
        let mut pending = 0usize;
        loop {
            while self.conns.len() < n && pending < MAX_PENDING_CONNECTS {
                self.start_conn();
                pending += 1;
            }
            self.pump(Duration::from_millis(5));
            // recount (cheap enough: at most a few hundred passes over <= 100k conns)
            open = 0;
            pending = 0;
            for c in &self.conns {
                match c.state {
                    ConnState::Open => open += 1,
                    ConnState::Connecting | ConnState::Handshake => pending += 1,
                    ConnState::Dead => {}
                }
            }
            if (self.conns.len() == n && pending == 0) || Instant::now() > deadline {
                break;
            }
        }
        open
    }

    /// Chat: waits until the room is full and quiet: every member welcomed (if
    /// `need_welcome`); if the server announces arrivals (`join` notices in a small
    /// room, a `presence` notice per tick, about a second, in a big one), every
    /// member told that `members` are online; then 150 ms of silence. False if that
    /// takes longer than `limit`.
    pub fn wait_ready(&mut self, need_welcome: bool, members: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            self.pump(Duration::from_millis(10));
            let live = || self.conns.iter().filter(|c| c.state != ConnState::Dead);
            let welcomed = !need_welcome || live().all(|c| c.welcomed);
            let told = !self.announces || live().all(|c| c.online >= members as u64);
            if welcomed && told && self.last_rx.elapsed() > Duration::from_millis(150) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
        }
    }

    /// Chat: members not yet welcomed, and not yet told the full count `members`.
    pub fn not_ready(&self, members: usize) -> (usize, usize) {
        let live = || self.conns.iter().filter(|c| c.state != ConnState::Dead);
        let unwelcomed = live().filter(|c| !c.welcomed).count();
        let untold = live().filter(|c| c.online < members as u64).count();
        (unwelcomed, untold)
    }

    /// Chat: starts connections, one at a time, while fewer than `n` were started
    /// and fewer than `in_flight` are still on their way (neither welcomed nor
    /// dead). `members` is the count that fills the room: `told_full` counts the
    /// connections a notice has told so. The big-room workers' pacing.
    pub fn start_paced(&mut self, n: usize, in_flight: usize, members: u64) {
        if let Mode::Chat { senders, .. } = self.mode {
            self.next_expected.resize(n * senders, 0);
        }
        self.full_room = members;
        while self.conns.len() < n
            && self.conns.len().saturating_sub(self.welcomes + self.dead) < in_flight
        {
            self.start_conn();
        }
    }

    /// Connects from `n` (at most 250) loopback addresses in turn, 127.0.0.2 on,
    /// instead of letting the kernel pick the address (for a loopback target:
    /// `sys::connect_from` says why).
    pub fn spread_sources(&mut self, n: u8) {
        if self.target.addr.ip().is_loopback() && self.target.addr.is_ipv4() {
            self.sources = n.min(250);
        }
    }

    /// Connections started so far.
    pub fn started(&self) -> usize {
        self.conns.len()
    }

    /// A waker for this client's poll: `wake` makes a `pump` return at once.
    pub fn waker(&self) -> io::Result<mio::Waker> {
        mio::Waker::new(self.poll.registry(), Token(usize::MAX))
    }

    /// Runs the loop for `d`.
    pub fn pump_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            self.pump((end - now).min(Duration::from_millis(50)));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for c in &mut self.conns {
            if let Some(mut s) = c.socket.take() {
                let _ = self.poll.registry().deregister(&mut s);
            }
        }
    }
}
