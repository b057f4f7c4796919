//! The room batches (`batches.rs`) with the loop driven by hand, so that what
//! happens within one iteration is the test's to choose: real sockets on
//! 127.0.0.1, real upgrades, and `broadcast`, `relay`, reads and the batch step
//! called in the order a test needs. Every member's stream is then read and
//! checked frame by frame.

use super::reading::ReadUntil;
use super::Server;
use crate::chat::{self, Member, SharedFrame};
use crate::config::Config;
use crate::frame::{self, OpCode};
use mio::Events;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A server whose loop the test turns.
struct Loop {
    server: Server,
    events: Events,
}

impl Loop {
    fn new(change: impl FnOnce(&mut Config)) -> Loop {
        let mut config = Config {
            addr: "127.0.0.1:0".parse().unwrap(),
            max_message_rate: 0,
            ..Config::default()
        };
        change(&mut config);
        Loop {
            server: Server::bind_with(config, None).unwrap(),
            events: Events::with_capacity(256),
        }
    }

    /// Turns the loop until three iterations in a row find nothing to do.
    fn settle(&mut self) {
        let mut quiet = 0;
        for _ in 0..2000 {
            self.server
                .iterate(&mut self.events, Duration::from_millis(2))
                .unwrap();
            let idle = self.events.is_empty() && self.server.pending.flush.is_empty();
            quiet = if idle { quiet + 1 } else { 0 };
            if quiet == 3 {
                return;
            }
        }
        panic!("the loop did not settle");
    }

    /// A TCP connection the server has accepted, not yet upgraded.
    fn open(&mut self) -> Client {
        let stream = TcpStream::connect(self.server.local_addr()).unwrap();
        stream.set_nodelay(true).unwrap();
        self.settle();
        let local = stream.local_addr().unwrap();
        let key = (self.server.connections.iter())
            .find(|(_, conn)| conn.peer == local)
            .map(|(key, _)| key)
            .expect("accepted");
        Client {
            stream,
            buffered: Vec::new(),
            key,
        }
    }

    /// A member upgraded on `path` (with `extra` header lines), its first
    /// frames (a chat welcome, history, join notices) read and dropped.
    fn member(&mut self, path: &str, extra: &str) -> Client {
        let mut client = self.open();
        client.send(upgrade_request(path, extra).as_bytes());
        self.settle();
        let head = client.read_head();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        client
    }

    /// Reads what connection `key` sent, now, in the middle of the iteration,
    /// until `done` says the server took it in.
    fn read_now(&mut self, key: usize, done: impl Fn(&Server) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done(&self.server) {
            assert!(Instant::now() < deadline, "the server did not read it");
            self.server.read_connection(key, ReadUntil::WouldBlock);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn segments(&self, key: usize) -> usize {
        self.server.connections[key].output.segments()
    }
}

/// One frame as a client got it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

impl Got {
    fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).unwrap()
    }

    fn is(&self, kind: &str) -> bool {
        self.opcode == 1 && self.text().contains(&format!("\"type\":\"{kind}\""))
    }
}

/// A client on a blocking socket.
struct Client {
    stream: TcpStream,
    buffered: Vec<u8>,
    /// The server's slab key for it.
    key: usize,
}

impl Client {
    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut out = Vec::new();
        frame::encode_client_frame(&mut out, 0x80 | opcode, [1, 2, 3, 4], payload);
        self.send(&out);
    }

    /// Takes what the socket holds now into the buffer.
    fn fill(&mut self) {
        self.stream.set_nonblocking(true).unwrap();
        let mut chunk = vec![0; 1 << 16];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buffered.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        self.stream.set_nonblocking(false).unwrap();
    }

    fn read_head(&mut self) -> String {
        self.fill();
        let end = (self.buffered.windows(4))
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head")
            + 4;
        let head: Vec<u8> = self.buffered.drain(..end).collect();
        String::from_utf8(head).unwrap()
    }

    /// Every whole frame that has arrived.
    fn frames(&mut self) -> Vec<Got> {
        self.fill();
        let mut got = Vec::new();
        while let Some((frame, len)) = parse(&self.buffered) {
            self.buffered.drain(..len);
            got.push(frame);
        }
        got
    }
}

/// One unmasked server frame at the start of `buf`, and its length.
fn parse(buf: &[u8]) -> Option<(Got, usize)> {
    let (len, start) = match *buf.get(1)? & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(start..start + len)?.to_vec();
    let got = Got {
        rsv1: buf[0] & 0x40 != 0,
        opcode: buf[0] & 0x0f,
        payload,
    };
    Some((got, start + len))
}

fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A chat message's frame, as `websocket.rs` makes it.
fn message(room: &str, text: &str) -> SharedFrame {
    let from = Member {
        key: usize::MAX,
        id: 999,
        name: "sender".into(),
    };
    chat::message_frame(room, &from, text, 0)
}

/// A relayed message's frame, as `websocket.rs` makes it.
fn relayed(opcode: OpCode, payload: &[u8]) -> SharedFrame {
    let mut out = Vec::new();
    frame::encode_frame(&mut out, opcode, payload);
    out.into()
}

/// The payloads of the chat messages among `frames`, in order.
fn messages(frames: &[Got]) -> Vec<&str> {
    (frames.iter().filter(|f| f.is("message")))
        .map(Got::text)
        .collect()
}

fn payload_text(frame: &SharedFrame) -> &str {
    std::str::from_utf8(frame::server_payload(frame)).unwrap()
}

#[test]
fn a_burst_goes_to_each_member_as_one_buffer_whole_and_in_order() {
    let mut l = Loop::new(|_| {});
    let mut members: Vec<Client> = (0..3).map(|_| l.member("/relay/r", "")).collect();
    let sent: Vec<SharedFrame> = (0..40)
        .map(|i| {
            relayed(
                OpCode::Text,
                format!("message {i} {}", "x".repeat(i * 7)).as_bytes(),
            )
        })
        .collect();
    let frames_before = l.server.metrics.frames_out;
    for frame in &sent {
        l.server.relay("r", Rc::clone(frame));
    }
    assert_eq!(l.server.metrics.relays, 40);
    l.server.queue_room_batches();
    for member in &members {
        assert_eq!(l.segments(member.key), 1, "one push per member");
    }
    // Deliveries are still counted per message per member.
    assert_eq!(l.server.metrics.frames_out - frames_before, 40 * 3);
    l.settle();
    for member in &mut members {
        let got = member.frames();
        let want: Vec<&[u8]> = sent.iter().map(|f| frame::server_payload(f)).collect();
        let got_payloads: Vec<&[u8]> = got.iter().map(|f| &f.payload[..]).collect();
        assert_eq!(got_payloads, want);
        assert!(got.iter().all(|f| f.opcode == 1 && !f.rsv1));
    }
}

#[test]
fn one_frame_in_an_iteration_is_queued_as_itself() {
    let mut l = Loop::new(|_| {});
    let mut members: Vec<Client> = (0..3).map(|_| l.member("/relay/r", "")).collect();
    let frame = relayed(OpCode::Binary, b"alone");
    l.server.relay("r", Rc::clone(&frame));
    l.server.queue_room_batches();
    // No copy: the test's reference and one per member's queue.
    assert_eq!(Rc::strong_count(&frame), 1 + 3);
    l.settle();
    for member in &mut members {
        assert_eq!(member.frames()[0].payload, b"alone");
    }
}

#[test]
fn relay_text_and_binary_in_one_batch_keep_their_opcodes_and_order() {
    let mut l = Loop::new(|_| {});
    let mut members: Vec<Client> = (0..2).map(|_| l.member("/relay/mixed", "")).collect();
    let sent: Vec<(u8, Vec<u8>)> = (0..20u8)
        .map(|i| match i % 2 {
            0 => (1, format!("text {i}").into_bytes()),
            _ => (2, vec![i, 0, 255, i]),
        })
        .collect();
    for (opcode, payload) in &sent {
        let opcode = if *opcode == 1 {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        l.server.relay("mixed", relayed(opcode, payload));
    }
    l.settle();
    for member in &mut members {
        let got: Vec<(u8, Vec<u8>)> = (member.frames().into_iter())
            .map(|f| (f.opcode, f.payload))
            .collect();
        assert_eq!(got, sent);
    }
}

#[test]
fn a_member_who_joins_mid_burst_gets_only_what_came_after_its_welcome() {
    let mut l = Loop::new(|_| {});
    let mut ann = l.member("/chat/r?name=ann", "");
    let mut bob = l.member("/chat/r?name=bob", "");
    ann.frames();
    bob.frames();
    let mut cy = l.open();
    cy.send(upgrade_request("/chat/r?name=cy", "").as_bytes());
    // One iteration: two messages, cy's upgrade is read (it joins), a third.
    l.server.broadcast("r", message("r", "one"));
    l.server.broadcast("r", message("r", "two"));
    let key = cy.key;
    l.read_now(key, |s| s.chat.members("r").contains(&key));
    l.server.broadcast("r", message("r", "three"));
    l.settle();
    assert!(cy.read_head().starts_with("HTTP/1.1 101"));
    let to_cy = cy.frames();
    assert!(to_cy[0].is("welcome"), "{to_cy:?}");
    // "one" and "two" reach cy as history, before its join notice; "three" after.
    let kinds: Vec<&str> = (to_cy.iter().skip(1))
        .map(|f| if f.is("join") { "join" } else { "message" })
        .collect();
    assert_eq!(kinds, ["message", "message", "join", "message"]);
    let texts: Vec<String> = messages(&to_cy).iter().map(|t| t.to_string()).collect();
    let want: Vec<String> = ["one", "two", "three"]
        .iter()
        .map(|t| payload_text(&message("r", t)).to_string())
        .collect();
    assert_eq!(texts, want);
    for member in [&mut ann, &mut bob] {
        let got = member.frames();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(messages(&got[..2]), want[..2]);
        assert!(got[2].is("join") && got[2].text().contains("\"name\":\"cy\""));
        assert_eq!(messages(&got[3..]), want[2..]);
    }
}

#[test]
fn a_member_who_leaves_mid_burst_gets_what_came_before_and_nothing_after() {
    let mut l = Loop::new(|_| {});
    let mut ann = l.member("/chat/r?name=ann", "");
    let mut bob = l.member("/chat/r?name=bob", "");
    let mut cy = l.member("/chat/r?name=cy", "");
    for member in [&mut ann, &mut bob, &mut cy] {
        member.frames();
    }
    // One iteration: a message, cy's close frame is read (it leaves), another.
    l.server.broadcast("r", message("r", "before"));
    cy.send_frame(8, &1000u16.to_be_bytes());
    let key = cy.key;
    l.read_now(key, |s| !s.chat.members("r").contains(&key));
    l.server.broadcast("r", message("r", "after"));
    l.settle();
    let (before, after) = (message("r", "before"), message("r", "after"));
    let to_cy = cy.frames();
    assert_eq!(to_cy.len(), 2, "{to_cy:?}");
    assert_eq!(to_cy[0].text(), payload_text(&before));
    assert_eq!((to_cy[1].opcode, &to_cy[1].payload[..]), (8, &[3, 232][..]));
    for member in [&mut ann, &mut bob] {
        let got = member.frames();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].text(), payload_text(&before));
        assert!(got[1].is("leave") && got[1].text().contains("\"name\":\"cy\""));
        assert_eq!(got[2].text(), payload_text(&after));
    }
}

#[test]
fn a_relay_member_who_closes_mid_burst_gets_what_came_before_its_close() {
    let mut l = Loop::new(|_| {});
    let mut stay = l.member("/relay/r", "");
    let mut go = l.member("/relay/r", "");
    l.server.relay("r", relayed(OpCode::Text, b"before"));
    go.send_frame(8, &1000u16.to_be_bytes());
    let key = go.key;
    l.read_now(key, |s| !s.relay.members("r").contains(&key));
    l.server.relay("r", relayed(OpCode::Text, b"after"));
    l.settle();
    let to_go = go.frames();
    assert_eq!(to_go[0].payload, b"before");
    assert_eq!(to_go[1].opcode, 8);
    assert_eq!(to_go.len(), 2);
    let to_stay: Vec<Vec<u8>> = stay.frames().into_iter().map(|f| f.payload).collect();
    assert_eq!(to_stay, [b"before".to_vec(), b"after".to_vec()]);
}

#[test]
fn a_pong_and_a_notice_to_one_member_keep_their_place_in_a_burst() {
    let mut l = Loop::new(|_| {});
    let mut ann = l.member("/chat/r?name=ann", "");
    let mut bob = l.member("/chat/r?name=bob", "");
    ann.frames();
    bob.frames();
    // One iteration: a message, ann's ping (and a bad /nick) read, another.
    l.server.broadcast("r", message("r", "one"));
    ann.send_frame(9, b"p");
    ann.send_frame(1, b"/nick   ");
    let key = ann.key;
    let pongs = l.server.metrics.frames_out;
    l.read_now(key, |s| s.metrics.frames_out >= pongs + 3); // "one", pong, notice
    l.server.broadcast("r", message("r", "two"));
    l.settle();
    let got = ann.frames();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0].text(), payload_text(&message("r", "one")));
    assert_eq!((got[1].opcode, &got[1].payload[..]), (10, &b"p"[..]));
    assert!(got[2].is("notice") && got[2].text().contains("bad_name"));
    assert_eq!(got[3].text(), payload_text(&message("r", "two")));
    // Bob got both messages, in one buffer.
    assert_eq!(messages(&bob.frames()).len(), 2);
}

#[test]
fn a_heartbeat_ping_keeps_its_place_in_a_burst() {
    let mut l = Loop::new(|_| {});
    let mut member = l.member("/relay/r", "");
    let mut other = l.member("/relay/r", "");
    l.server.relay("r", relayed(OpCode::Text, b"one"));
    l.server.ping(member.key);
    l.server.relay("r", relayed(OpCode::Text, b"two"));
    l.settle();
    let got: Vec<(u8, Vec<u8>)> = (member.frames().into_iter())
        .map(|f| (f.opcode, f.payload))
        .collect();
    let want = [
        (1, b"one".to_vec()),
        (9, b"loopchat".to_vec()),
        (1, b"two".to_vec()),
    ];
    assert_eq!(got, want);
    assert_eq!(other.frames().len(), 2);
}

#[cfg(feature = "deflate")]
#[test]
fn deflate_and_plain_members_share_one_room_and_each_frame_is_compressed_once() {
    let mut l = Loop::new(|c| c.permessage_deflate = true);
    let offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    let small_window =
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n";
    let mut plain = l.member("/chat/z?name=plain", "");
    let mut full = l.member("/chat/z?name=full", offer);
    let mut small = l.member("/chat/z?name=small", small_window);
    let mut full2 = l.member("/chat/z?name=full2", offer);
    for member in [&mut plain, &mut full, &mut small, &mut full2] {
        member.frames();
    }
    // Under --deflate-min-size, within a 1 KiB window, and past it.
    let texts: Vec<String> = (0..12)
        .map(|i| match i % 3 {
            0 => format!("short {i}"),
            1 => format!("{i} {}", "within the window ".repeat(20)),
            _ => format!("{i} {}", "past a small window ".repeat(120)),
        })
        .collect();
    let compress_calls = l.server.deflate.calls();
    let compressed_before = l.server.metrics.compressed_frames_out;
    for text in &texts {
        l.server.broadcast("z", message("z", text));
    }
    l.server.queue_room_batches();
    // 8 of the 12 are worth compressing: each is, once, for all its members.
    assert_eq!(l.server.deflate.calls() - compress_calls, 8);
    // full and full2: 8 compressed frames each; small: the 4 within its window.
    assert_eq!(
        l.server.metrics.compressed_frames_out - compressed_before,
        8 + 8 + 4
    );
    l.settle();
    let want: Vec<String> = (texts.iter())
        .map(|t| payload_text(&message("z", t)).to_string())
        .collect();
    let mut inflater = crate::deflate::Inflater::default();
    for (member, compressed) in [
        (&mut plain, [false, false, false]),
        (&mut full, [false, true, true]),
        (&mut small, [false, true, false]),
        (&mut full2, [false, true, true]),
    ] {
        let got = member.frames();
        assert_eq!(got.len(), 12);
        let mut texts = Vec::new();
        for (i, frame) in got.iter().enumerate() {
            assert_eq!(frame.rsv1, compressed[i % 3], "frame {i}");
            let text = if frame.rsv1 {
                let inflated = inflater.inflate(&frame.payload, 1 << 20).unwrap();
                String::from_utf8(inflated.to_vec()).unwrap()
            } else {
                frame.text().to_string()
            };
            texts.push(text);
        }
        assert_eq!(texts, want);
    }
}

#[test]
fn a_slow_reader_found_mid_batch_leaves_after_it_and_the_others_get_everything() {
    let mut l = Loop::new(|c| c.max_output = 256 * 1024);
    let mut ann = l.member("/chat/s?name=ann", "");
    let mut slow = l.member("/chat/s?name=slow", "");
    let mut bob = l.member("/chat/s?name=bob", "");
    for member in [&mut ann, &mut slow, &mut bob] {
        member.frames();
    }
    // slow is in the middle of the room's list: the batch step finds it past
    // --max-output between ann and bob.
    assert_eq!(l.server.chat.members("s"), [ann.key, slow.key, bob.key]);
    let mut sent = Vec::new();
    let (mut to_ann, mut to_bob) = (Vec::new(), Vec::new());
    for round in 0..400 {
        for i in 0..8 {
            let text = format!("{round}.{i} {}", "y".repeat(8000));
            sent.push(payload_text(&message("s", &text)).to_string());
            l.server.broadcast("s", message("s", &text));
        }
        l.settle();
        to_ann.extend(ann.frames());
        to_bob.extend(bob.frames());
        if l.server.metrics.slow_readers_dropped > 0 {
            break;
        }
    }
    assert_eq!(l.server.metrics.slow_readers_dropped, 1);
    l.settle();
    to_ann.extend(ann.frames());
    to_bob.extend(bob.frames());
    for got in [&to_ann, &to_bob] {
        // Every message, in order, then the leave notice, and nothing else.
        assert_eq!(messages(got), sent);
        assert_eq!(got.len(), sent.len() + 1);
        let leave = got.last().unwrap();
        assert!(leave.is("leave") && leave.text().contains("\"name\":\"slow\""));
    }
    // The slow reader: a prefix of the messages, whole and in order, then 1008.
    let mut to_slow = Vec::new();
    for _ in 0..1000 {
        to_slow.extend(slow.frames());
        if to_slow.last().is_some_and(|f: &Got| f.opcode == 8) {
            break;
        }
        l.settle();
    }
    let close = to_slow.pop().unwrap();
    assert_eq!((close.opcode, &close.payload[..2]), (8, &[3, 240][..]));
    assert_eq!(messages(&to_slow), sent[..to_slow.len()]);
    assert!(to_slow.len() < sent.len());
}

// ---- What batching saves ---------------------------------------------------------

/// CPU time this thread has run, from `/proc/thread-self/schedstat`.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let ns: u64 = stat.split_whitespace().next().unwrap().parse().unwrap();
    Duration::from_nanos(ns)
}

/// The server thread's CPU time per delivery to a relay room of `members`, with
/// `per_iteration` messages sent to the room in every loop iteration, queued
/// either one message at a time on every member (`per_message`: what the loop
/// did before room batches; a batch step after each message is exactly that)
/// or as one batch per iteration. Open loop: every iteration gets the same
/// number of messages whatever the server's speed, and a thread reads every
/// member's socket meanwhile, so the comparison does not depend on how a
/// client paces itself. Returns (ns of server CPU per delivery, deliveries).
fn fan_out_cost(
    members: usize,
    per_iteration: usize,
    iterations: usize,
    per_message: bool,
) -> (f64, u64) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut l = Loop::new(|c| c.max_output = 64 << 20);
    let mut clients: Vec<Client> = (0..members).map(|_| l.open()).collect();
    for client in &mut clients {
        client.send(upgrade_request("/relay/cost", "").as_bytes());
    }
    l.settle();
    assert_eq!(l.server.relay.members("cost").len(), members);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        let mut streams: Vec<TcpStream> = clients.into_iter().map(|c| c.stream).collect();
        std::thread::spawn(move || {
            let mut sink = vec![0u8; 1 << 16];
            for stream in &mut streams {
                stream.set_nonblocking(true).unwrap();
            }
            while !stop.load(Ordering::Relaxed) {
                for stream in &mut streams {
                    while let Ok(n) = stream.read(&mut sink) {
                        if n == 0 {
                            break;
                        }
                    }
                }
            }
        })
    };
    let payload = [b'x'; 32];
    let frames_before = l.server.metrics.frames_out;
    let start = thread_cpu();
    for _ in 0..iterations {
        for _ in 0..per_iteration {
            l.server.relay("cost", relayed(OpCode::Text, &payload));
            if per_message {
                l.server.queue_room_batches();
            }
        }
        l.server.iterate(&mut l.events, Duration::ZERO).unwrap();
    }
    while !l.server.pending.flush.is_empty() {
        l.server.iterate(&mut l.events, Duration::ZERO).unwrap();
    }
    let cpu = thread_cpu() - start;
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert_eq!(l.server.metrics.slow_readers_dropped, 0);
    let deliveries = l.server.metrics.frames_out - frames_before;
    assert_eq!(deliveries, (members * per_iteration * iterations) as u64);
    (cpu.as_nanos() as f64 / deliveries as f64, deliveries)
}

/// `cargo test --release --lib what_batching_saves -- --ignored --nocapture`:
/// server CPU per delivery, per message against per iteration, interleaved
/// (`BATCH_COST_CASES=100x1,1000x16` picks the cases, members x messages per
/// iteration; `BATCH_COST_RUNS` the runs of each, 3 by default; the median is
/// shown, and the range).
#[test]
#[ignore = "a measurement: run it by hand in release"]
fn what_batching_saves() {
    let cases = std::env::var("BATCH_COST_CASES")
        .unwrap_or_else(|_| "100x1,100x4,100x16,1000x1,1000x4,1000x16".into());
    let runs: usize = (std::env::var("BATCH_COST_RUNS").ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    for case in cases.split(',') {
        let (members, per_iteration) = case.split_once('x').unwrap();
        let (members, per_iteration): (usize, usize) =
            (members.parse().unwrap(), per_iteration.parse().unwrap());
        let iterations = 200_000 / (members * per_iteration) * 10;
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            before.push(fan_out_cost(members, per_iteration, iterations, true).0);
            after.push(fan_out_cost(members, per_iteration, iterations, false).0);
        }
        before.sort_by(f64::total_cmp);
        after.sort_by(f64::total_cmp);
        let (mid, last) = (runs / 2, runs - 1);
        println!(
            "{members} members, {per_iteration} messages per iteration: per message {:.0} ns \
             per delivery ({:.0}-{:.0}), batched {:.0} ns ({:.0}-{:.0}): {:.2}x",
            before[mid],
            before[0],
            before[last],
            after[mid],
            after[0],
            after[last],
            after[mid] / before[mid]
        );
    }
}
