//! Soak: 5,000 concurrent WebSocket connections in one chat room.
//!
//! Ignored by default; CI runs it with
//! `cargo test --release --test soak -- --ignored --nocapture`.
//!
//! The server is the `loopchat` binary in a child process, so its resident memory
//! (`VmRSS` in `/proc/PID/status`) is its own, not the test's. The clients are
//! nonblocking sockets on one `mio::Poll` in this process. All of them join
//! `/chat/soak` (the first 100 joins are announced one by one, the rest together
//! in one `presence` notice per room per timer tick, so filling the room costs
//! O(N) notices rather than 12.5 million), then one member sends 20 messages and every
//! connection must receive all 20, in order. Finally SIGTERM: every connection
//! must get close 1001 and the process must exit 0. The whole test is bounded by
//! a deadline; RSS is reported before and after connecting. Kernel socket buffers
//! are not part of RSS.

mod common;
use common::*;
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 5_000;
const MESSAGES: usize = 20;
/// Handshakes in progress at once (the listen backlog is larger).
const IN_FLIGHT: usize = 256;
/// Descriptors kept free in this process besides one per client.
const SPARE_FDS: u64 = 128;

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the TCP connection, then the 101.
    Upgrading,
    Open,
    /// The server ended the connection.
    Ended,
}

struct Client {
    stream: MioStream,
    state: State,
    request_sent: bool,
    /// Bytes received and not yet parsed (a partial frame at most, once open).
    input: Vec<u8>,
    /// Messages received so far, in order ("soak-00", "soak-01", ...).
    messages: usize,
    /// Saw the join notice that says the room is full.
    saw_everyone: bool,
    close_code: Option<u16>,
    error: Option<String>,
}

/// Counts over all clients, kept up to date as frames arrive.
#[derive(Debug, Default)]
struct Totals {
    opened: usize,
    upgrading: usize,
    open: usize,
    saw_everyone: usize,
    got_all_messages: usize,
    closed_1001: usize,
    ended: usize,
    errors: usize,
}

struct Soak {
    poll: Poll,
    clients: Vec<Client>,
    totals: Totals,
    addr: SocketAddr,
    target: usize,
    buffer: Vec<u8>,
}

impl Soak {
    fn open_more(&mut self) {
        while self.totals.opened < self.target && self.totals.upgrading < IN_FLIGHT {
            let mut stream = MioStream::connect(self.addr).expect("connect");
            let token = Token(self.clients.len());
            self.poll
                .registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .expect("register");
            self.clients.push(Client {
                stream,
                state: State::Upgrading,
                request_sent: false,
                input: Vec::new(),
                messages: 0,
                saw_everyone: false,
                close_code: None,
                error: None,
            });
            self.totals.opened += 1;
            self.totals.upgrading += 1;
        }
    }

    /// One poll, and the work for every event it returned.
    fn turn(&mut self, events: &mut Events) {
        self.poll
            .poll(events, Some(Duration::from_millis(100)))
            .expect("poll");
        for event in events.iter() {
            let i = event.token().0;
            if event.is_writable() {
                self.send_request(i);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                self.read(i);
            }
        }
    }

    fn fail(&mut self, i: usize, error: String) {
        let client = &mut self.clients[i];
        if client.error.is_none() {
            client.error = Some(error);
            self.totals.errors += 1;
        }
    }

    fn send_request(&mut self, i: usize) {
        let client = &mut self.clients[i];
        if client.request_sent || client.state != State::Upgrading {
            return;
        }
        // Writable before the connection is established means it failed.
        if let Ok(Some(e)) | Err(e) = client.stream.take_error() {
            return self.fail(i, format!("connect: {e}"));
        }
        if client.stream.peer_addr().is_err() {
            return; // not connected yet: another writable event will come
        }
        let request = upgrade_request("/chat/soak", "");
        match client.stream.write(request.as_bytes()) {
            Ok(n) if n == request.len() => client.request_sent = true,
            Ok(n) => self.fail(i, format!("short write of the request: {n}")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.fail(i, format!("write: {e}")),
        }
    }

    fn read(&mut self, i: usize) {
        loop {
            let client = &mut self.clients[i];
            if client.state == State::Ended {
                return;
            }
            match client.stream.read(&mut self.buffer) {
                Ok(0) => {
                    client.state = State::Ended;
                    self.totals.ended += 1;
                    let _ = self.poll.registry().deregister(&mut client.stream);
                    return;
                }
                Ok(n) => {
                    let bytes = std::mem::take(&mut self.buffer);
                    self.on_bytes(i, &bytes[..n]);
                    self.buffer = bytes;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = self.poll.registry().deregister(&mut client.stream);
                    client.state = State::Ended;
                    self.totals.ended += 1;
                    return self.fail(i, format!("read: {e}"));
                }
            }
        }
    }

    fn on_bytes(&mut self, i: usize, bytes: &[u8]) {
        let target = self.target;
        let client = &mut self.clients[i];
        client.input.extend_from_slice(bytes);
        if client.state == State::Upgrading {
            match take_upgrade_response(&mut client.input) {
                None => return,
                Some(Err(head)) => return self.fail(i, format!("upgrade refused: {head}")),
                Some(Ok(())) => {}
            }
            client.state = State::Open;
            self.totals.upgrading -= 1;
            self.totals.open += 1;
        }
        let client = &mut self.clients[i];
        let mut pos = 0;
        let mut error = None;
        while let Some((opcode, payload, len)) = server_frame_bounds(&client.input[pos..]) {
            let payload = &client.input[pos..][payload];
            match opcode {
                op::TEXT => {
                    let text = std::str::from_utf8(payload).unwrap_or("");
                    match json_field(text, "type") {
                        // Past --member-list-limit (100) joins come coalesced, once
                        // per timer tick, in `presence` notices that carry the count.
                        Some("join" | "presence") => {
                            let online: usize = json_field(text, "online")
                                .and_then(|o| o.parse().ok())
                                .unwrap_or(0);
                            if online == target && !client.saw_everyone {
                                client.saw_everyone = true;
                                self.totals.saw_everyone += 1;
                            }
                        }
                        Some("message") => {
                            let expected = format!("soak-{:02}", client.messages);
                            let got = json_field(text, "text").unwrap_or("?");
                            if got != expected {
                                error = Some(format!("expected {expected}, got {got}"));
                            }
                            client.messages += 1;
                            if client.messages == MESSAGES {
                                self.totals.got_all_messages += 1;
                            }
                        }
                        _ => {}
                    }
                }
                op::PING => {
                    let pong = client_frame(true, op::PONG, payload);
                    let _ = client.stream.write(&pong);
                }
                op::CLOSE => {
                    let code = match payload {
                        [a, b, ..] => u16::from_be_bytes([*a, *b]),
                        _ => 1005,
                    };
                    if client.close_code.is_none() {
                        client.close_code = Some(code);
                        if code == 1001 {
                            self.totals.closed_1001 += 1;
                        }
                    }
                }
                other => error = Some(format!("unexpected opcode {other}")),
            }
            pos += len;
        }
        client.input.drain(..pos);
        if let Some(error) = error {
            self.fail(i, error);
        }
    }

    /// Runs the loop until `done` holds; panics with the totals at `deadline`.
    fn run_until(&mut self, what: &str, deadline: Instant, done: impl Fn(&Totals) -> bool) {
        let mut events = Events::with_capacity(1024);
        while !done(&self.totals) {
            assert!(
                Instant::now() < deadline,
                "soak: timed out waiting for {what}: {:?}",
                self.totals
            );
            if self.totals.errors > 0 {
                let first = self.clients.iter().find_map(|c| c.error.clone());
                panic!(
                    "soak: {} clients failed, first: {first:?}; {:?}",
                    self.totals.errors, self.totals
                );
            }
            self.open_more();
            self.turn(&mut events);
        }
    }
}

/// Raises this process's open-files soft limit to the hard limit; returns how
/// many connections fit (at most `CONNECTIONS`).
fn connections_that_fit() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            limit.current = Some(maximum);
            let _ = setrlimit(Resource::Nofile, limit);
        }
    }
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let fit = soft.saturating_sub(SPARE_FDS).min(CONNECTIONS as u64) as usize;
    if fit < CONNECTIONS {
        println!(
            "soak: open-files limit here is {soft} (hard limit reached), so {fit} connections \
             instead of {CONNECTIONS}; raise `ulimit -Hn` to run the full soak"
        );
    }
    fit
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[test]
#[ignore = "soak: run with `cargo test --release --test soak -- --ignored --nocapture`"]
fn five_thousand_connections_each_get_every_message_in_order() {
    let budget = if cfg!(debug_assertions) {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(60)
    };
    let deadline = Instant::now() + budget;
    let target = connections_that_fit();
    assert!(target >= 100, "too few descriptors for a soak: {target}");
    // A load test: flood control off, as the README says for load tools.
    let (mut child, addr) = spawn_binary(&[
        "--log-level",
        "warn",
        "--ping-interval",
        "300s",
        "--max-message-rate",
        "0",
    ]);
    let pid = child.pid();
    let rss_idle = rss_kib(Some(pid));

    let mut soak = Soak {
        poll: Poll::new().expect("poll"),
        clients: Vec::with_capacity(target),
        totals: Totals::default(),
        addr,
        target,
        buffer: vec![0; 256 * 1024],
    };
    let started = Instant::now();
    // Every member has seen the last join: all are in, and every queue is empty.
    soak.run_until("every connection to join", deadline, |t| {
        t.saw_everyone == target
    });
    let joined_in = started.elapsed();
    let rss_connected = rss_kib(Some(pid));

    // One member speaks; every member, the speaker too, must hear it all in order.
    let mut burst = Vec::new();
    for k in 0..MESSAGES {
        burst.extend(client_frame(
            true,
            op::TEXT,
            format!("soak-{k:02}").as_bytes(),
        ));
    }
    soak.clients[0]
        .stream
        .write_all(&burst)
        .expect("send the messages");
    soak.run_until("every message everywhere", deadline, |t| {
        t.got_all_messages == target
    });
    let rss_after = rss_kib(Some(pid));
    let per_connection = (rss_connected.saturating_sub(rss_idle)) as f64 / target as f64;
    println!(
        "soak: {target} connections, {MESSAGES} messages each, all in order; server RSS \
         {:.1} MiB idle, {:.1} MiB with {target} connections ({per_connection:.1} KiB per \
         connection), {:.1} MiB after the messages; joined in {:.1} s",
        mib(rss_idle),
        mib(rss_connected),
        mib(rss_after),
        joined_in.as_secs_f64()
    );

    // A graceful shutdown with everyone connected: 1001 for all, exit status 0.
    send_signal(pid, "TERM");
    soak.run_until("close 1001 on every connection", deadline, |t| {
        t.closed_1001 == target
    });
    let status = child
        .wait_timeout(deadline.saturating_duration_since(Instant::now()))
        .unwrap_or_else(|| panic!("no exit after SIGTERM: {}", child.stderr_text()));
    assert_eq!(status.code(), Some(0), "{}", child.stderr_text());
    assert_eq!(soak.totals.errors, 0);
}
