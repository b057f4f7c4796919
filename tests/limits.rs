//! Limits, backpressure and hostile input, over real sockets on 127.0.0.1.
//!
//! Each limit of `Config` is crossed once and must be answered with its HTTP
//! status or close code; slow readers must be dropped without stalling the others
//! or growing memory; abrupt disconnects must leave nothing behind. No assertion
//! here is about how long something took (the machine is shared): the tests wait
//! for the server's state with `eventually` and check outcomes. Every loop is
//! bounded in count, and every wait in time.

mod common;
use common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long to wait for the server to reach a state before failing.
const STATE_TIMEOUT: Duration = Duration::from_secs(30);

// ---- Helpers ------------------------------------------------------------------------

/// `head_lines` (a request line and headers, each ending in CRLF) padded with
/// `X-Pad-NN` headers spread over `pad_lines` lines, then the blank line, so that
/// the whole head is exactly `total` bytes.
fn padded_head(head_lines: &str, total: usize, pad_lines: usize) -> Vec<u8> {
    const LINE_OVERHEAD: usize = "X-Pad-00: \r\n".len();
    let budget = total - head_lines.len() - 2;
    let mut head = head_lines.to_string();
    for i in 0..pad_lines {
        let line = budget / pad_lines + usize::from(i < budget % pad_lines);
        assert!(
            line > LINE_OVERHEAD,
            "not enough room for {pad_lines} pad lines"
        );
        head.push_str(&format!(
            "X-Pad-{i:02}: {}\r\n",
            "p".repeat(line - LINE_OVERHEAD)
        ));
    }
    head.push_str("\r\n");
    assert_eq!(head.len(), total);
    head.into_bytes()
}

/// The start of a `GET path` request that asks to close after the response.
fn get_lines(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n")
}

/// A raw connection plus a thread writing `pieces` to it one by one, `pause`
/// apart, until a write fails, `stop` is set, or the pieces run out.
fn slow_writer(
    addr: SocketAddr,
    pieces: Vec<Vec<u8>>,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> (Raw, JoinHandle<usize>) {
    let raw = Raw::connect(addr);
    let mut stream = raw.stream.try_clone().expect("clone socket");
    let writer = thread::spawn(move || {
        let mut written = 0;
        for piece in pieces {
            if stop.load(Ordering::SeqCst) || stream.write_all(&piece).is_err() {
                break;
            }
            written += 1;
            thread::sleep(pause);
        }
        written
    });
    (raw, writer)
}

/// What one chat member saw, gathered by [`spawn_chat_reader`].
#[derive(Debug, Default)]
struct Seen {
    /// The `text` of every `message` frame, in order of arrival.
    messages: Vec<String>,
    /// The `name` in every `leave` notice.
    leaves: Vec<String>,
    /// Why reading stopped, if not at the `done` message.
    ended_early: Option<String>,
}

/// Live counts from a chat reader, for the sender's pacing and for waiting.
#[derive(Debug, Default)]
struct Progress {
    messages: AtomicUsize,
    leaves: AtomicUsize,
}

/// Reads `raw`'s chat frames on a thread until a message whose text is `done`;
/// the thread returns what it saw and the connection, still open.
fn spawn_chat_reader(mut raw: Raw, done: &str, progress: Arc<Progress>) -> JoinHandle<(Seen, Raw)> {
    let done = done.to_string();
    thread::spawn(move || {
        let mut seen = Seen::default();
        loop {
            let Some(frame) = raw.read_frame() else {
                seen.ended_early = Some("connection ended".into());
                return (seen, raw);
            };
            if frame.opcode == op::CLOSE {
                seen.ended_early = Some(format!("close {}", frame.close_code()));
                return (seen, raw);
            }
            if frame.opcode != op::TEXT {
                continue;
            }
            let json = frame.text();
            match json_field(json, "type") {
                Some("message") => {
                    let text = json_field(json, "text").expect("message text").to_string();
                    if text == done {
                        return (seen, raw);
                    }
                    seen.messages.push(text);
                    progress.messages.fetch_add(1, Ordering::SeqCst);
                }
                Some("leave") => {
                    seen.leaves
                        .push(json_field(json, "name").unwrap_or("?").to_string());
                    progress.leaves.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
    })
}

/// Message number `i` of a test, padded to `size` bytes: "m00042 xxxx…".
fn numbered(i: usize, size: usize) -> String {
    let mut text = format!("m{i:05} ");
    text.extend(std::iter::repeat_n('x', size.saturating_sub(text.len())));
    text
}

/// Waits (bounded) until every reader in `readers` has seen at least `count`
/// messages. A sender that waits here before each message keeps every reader
/// within a window of it: whoever keeps up is never far enough behind to be a
/// slow reader. Polls more often than `eventually`, since it runs per message.
fn wait_for_readers(readers: &[Arc<Progress>], count: usize) {
    let deadline = Instant::now() + STATE_TIMEOUT;
    for progress in readers {
        while progress.messages.load(Ordering::SeqCst) < count {
            assert!(
                Instant::now() < deadline,
                "a reader is stuck at {} messages, waiting for {count}",
                progress.messages.load(Ordering::SeqCst)
            );
            thread::sleep(Duration::from_micros(200));
        }
    }
}

fn assert_in_order(who: &str, messages: &[String], count: usize, size: usize) {
    assert_eq!(messages.len(), count, "{who}: number of messages");
    for (i, text) in messages.iter().enumerate() {
        assert!(
            *text == numbered(i, size),
            "{who}: message {i} is {:?}",
            &text[..text.len().min(20)]
        );
    }
}

// ---- HTTP request head: size, header count, incremental scanning ---------------------

#[test]
fn head_at_the_byte_limit_is_served_one_byte_over_gets_431_then_close() {
    with_server(config(), |addr| {
        let limit = config().max_header_bytes;

        let mut at_limit = Raw::connect(addr);
        at_limit.send(&padded_head(&get_lines("/metrics"), limit, 8));
        let (status, _, body) = at_limit.read_response(false);
        assert_eq!(status, 200, "a head of exactly max_header_bytes is allowed");
        assert!(String::from_utf8_lossy(&body).contains("loopchat_http_requests_total"));

        let mut over = Raw::connect(addr);
        over.send(&padded_head(&get_lines("/metrics"), limit + 1, 8));
        let (status, head, _) = over.read_response(false);
        assert_eq!(status, 431, "{head}");
        assert_eq!(header_value(&head, "connection").as_deref(), Some("close"));
        assert!(over.closed_by_server(), "the server closes after the 431");

        // A head that never ends is refused once it passes the limit, not at its end.
        let mut endless = Raw::connect(addr);
        endless.send(b"GET / HTTP/1.1\r\nHost: t\r\n");
        let line = format!("X-Endless: {}\r\n", "e".repeat(500));
        for _ in 0..=limit / line.len() {
            endless.send(line.as_bytes());
        }
        let (status, _, _) = endless.read_response(false);
        assert_eq!(status, 431);
        assert!(endless.closed_by_server());

        assert_eq!(
            metric(addr, "loopchat_http_errors_total{status=\"431\"}"),
            2
        );
    });
}

#[test]
fn more_header_fields_than_max_headers_gets_431_then_close() {
    with_server(config_with(|c| c.max_headers = 8), |addr| {
        // Host and Connection plus six more: exactly eight fields.
        let mut lines = get_lines("/");
        for i in 0..6 {
            lines.push_str(&format!("X-Field-{i}: v\r\n"));
        }
        let mut at_limit = Raw::connect(addr);
        at_limit.send(format!("{lines}\r\n").as_bytes());
        assert_eq!(at_limit.read_response(false).0, 200);

        lines.push_str("X-Field-6: one too many\r\n");
        let mut over = Raw::connect(addr);
        over.send(format!("{lines}\r\n").as_bytes());
        let (status, head, _) = over.read_response(false);
        assert_eq!(status, 431, "{head}");
        assert!(over.closed_by_server());
    });
}

/// The search for the end of the head resumes where it stopped (unit-tested in
/// `http.rs`); here, over a socket: a 7 KiB upgrade request whose last 2,000 bytes
/// (the blank line included) come one per write, followed by a first frame, is
/// answered once and correctly.
#[test]
fn a_head_dripped_one_byte_per_write_is_answered_correctly() {
    with_server(config(), |addr| {
        let lines = upgrade_request("/echo", "");
        let lines = &lines[..lines.len() - 2]; // without its blank line
        let mut bytes = padded_head(lines, 7 * 1024, 20);
        bytes.extend_from_slice(&client_frame(true, op::TEXT, b"right behind the head"));
        let (bulk, drip) = bytes.split_at(7 * 1024 - 2000);

        let mut raw = Raw::connect(addr);
        raw.send(bulk);
        for byte in drip {
            raw.send(std::slice::from_ref(byte));
        }
        let head = raw.read_head();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(
            header_value(&head, "sec-websocket-accept").as_deref(),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        let echo = raw.read_frame().expect("the echo of the first frame");
        assert_eq!(echo.payload, b"right behind the head");
        assert_eq!(metric(addr, "loopchat_upgrades_total"), 1);
    });
}

// ---- Handshake deadline -------------------------------------------------------------

#[test]
fn silent_slowloris_and_dripping_connections_are_cut_off_while_others_are_served() {
    let config = config_with(|c| {
        c.handshake_timeout = Duration::from_millis(300);
    });
    with_server(config, |addr| {
        // Upgraded before the others and then idle: the deadline is for requests only.
        let mut upgraded = Raw::websocket(addr, "/echo");

        let stop = Arc::new(AtomicBool::new(false));
        let mut silent = Raw::connect(addr);
        // Header lines, 100 ms apart, never the blank line (at most 10 s of them).
        let mut loris_lines = vec![b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec()];
        loris_lines.extend((0..100).map(|i| format!("X-Loris-{i}: wait\r\n").into_bytes()));
        let (mut slowloris, loris) =
            slow_writer(addr, loris_lines, Duration::from_millis(100), stop.clone());
        // A valid request, one byte every 100 ms: it would take ~15 s to complete.
        let drip_bytes = upgrade_request("/echo", "").into_bytes();
        let (mut dripper, drip) = slow_writer(
            addr,
            drip_bytes.iter().map(|b| vec![*b]).collect(),
            Duration::from_millis(100),
            stop.clone(),
        );
        // A keep-alive connection that goes quiet after its first response.
        let mut keep_alive = Raw::connect(addr);
        keep_alive.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(keep_alive.read_response(false).0, 200);

        // Meanwhile, ordinary clients are served.
        let (status, _, _) = get(addr, "/");
        assert_eq!(status, 200);
        let mut ws = client(addr, "/echo");
        ws.send(tungstenite::Message::text("meanwhile")).unwrap();
        assert_eq!(ws.read().unwrap(), tungstenite::Message::text("meanwhile"));

        assert!(silent.closed_by_server(), "silent connection still open");
        assert!(slowloris.closed_by_server(), "slowloris still open");
        assert!(dripper.closed_by_server(), "dripping connection still open");
        assert!(keep_alive.closed_by_server(), "idle keep-alive still open");
        stop.store(true, Ordering::SeqCst);
        let loris_writes = loris.join().unwrap();
        let drip_writes = drip.join().unwrap();
        assert!(loris_writes < 101, "the slowloris sent all its lines");
        assert!(
            drip_writes < drip_bytes.len(),
            "the drip completed its request"
        );

        upgraded.send_frame(true, op::TEXT, b"still here");
        assert_eq!(upgraded.read_frame().unwrap().payload, b"still here");
        // The silent, slowloris and dripping connections never completed a request;
        // the idle keep-alive one did, so its close is not a handshake timeout.
        let timeouts = metric(addr, "loopchat_handshake_timeouts_total");
        assert_eq!(timeouts, 3, "handshake timeouts counted: {timeouts}");
    });
}

// ---- Message size ---------------------------------------------------------------------

/// A masked frame header (with its masking key) announcing `len` payload bytes,
/// and none of the payload.
fn header_only(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut header = vec![if fin { 0x80 } else { 0 } | opcode];
    if len <= 125 {
        header.push(0x80 | len as u8);
    } else if len <= 0xffff {
        header.push(0x80 | 126);
        header.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        header.push(0x80 | 127);
        header.extend_from_slice(&len.to_be_bytes());
    }
    header.extend_from_slice(&[1, 2, 3, 4]);
    header
}

#[test]
fn a_message_over_max_message_size_gets_1009_from_its_header_alone() {
    let config = config_with(|c| {
        c.max_message_size = 1000;
        c.max_chat_message_size = 500;
    });
    with_server(config, |addr| {
        let mut at_limit = Raw::websocket(addr, "/echo");
        at_limit.send_frame(true, op::BINARY, &[7; 1000]);
        assert_eq!(at_limit.read_frame().unwrap().payload, vec![7; 1000]);

        // 1001 bytes announced; the payload never comes, so only the header can decide.
        let mut over = Raw::websocket(addr, "/echo");
        over.send(&header_only(true, op::TEXT, 1001));
        over.expect_close(1009);
        assert!(over.closed_by_server());

        // A 64-bit length of a terabyte: refused, nothing reserved for it.
        let mut huge = Raw::websocket(addr, "/echo");
        huge.send(&header_only(true, op::BINARY, 1 << 40));
        assert_eq!(huge.read_until_close().1, Some(1009));

        // The limit is for the whole message: 600 bytes, then a 401-byte fragment.
        let mut fragmented = Raw::websocket(addr, "/echo");
        fragmented.send_frame(false, op::TEXT, &[b'a'; 600]);
        fragmented.send(&header_only(true, op::CONTINUATION, 401));
        assert_eq!(fragmented.read_until_close().1, Some(1009));

        // The chat has its own, smaller limit (--max-chat-message-size).
        let mut chat = Raw::websocket(addr, "/chat/size");
        chat.send(&header_only(true, op::TEXT, 501));
        let (_, code) = chat.read_until_close();
        assert_eq!(code, Some(1009));

        assert_eq!(metric(addr, "loopchat_closes_sent_total{code=\"1009\"}"), 4);
    });
}

// ---- Output limit: slow readers ---------------------------------------------------------

/// One member of `/chat/slow` never reads. The others (one reader, and a sender
/// that also reads) get 1 KiB messages, paced so that their own queues stay far
/// below the limit, until the server drops the silent one. They receive every
/// message in order and its leave notice; it is disconnected; memory stays bounded.
#[test]
fn a_chat_member_that_never_reads_is_dropped_and_the_others_get_every_message() {
    const MAX_OUTPUT: usize = 64 * 1024;
    const SIZE: usize = 1024;
    const MAX_MESSAGES: usize = 20_000;
    const AFTER_DROP: usize = 100;
    /// Messages in flight: ~16 KiB, a quarter of the limit.
    const WINDOW: usize = 16;
    let config = config_with(|c| {
        c.max_output = MAX_OUTPUT;
        c.close_timeout = Duration::from_secs(1);
        c.max_message_rate = 0; // a load, not a person: no flood control
    });
    with_server(config, |addr| {
        let mut slow = Raw::websocket(addr, "/chat/slow?name=slowpoke");
        let reader_progress = Arc::new(Progress::default());
        let reader = spawn_chat_reader(
            Raw::websocket(addr, "/chat/slow?name=reader"),
            "done",
            reader_progress.clone(),
        );
        let mut sender = Raw::websocket(addr, "/chat/slow?name=sender");
        let sender_progress = Arc::new(Progress::default());
        let sender_reader =
            spawn_chat_reader(sender.reading_half(), "done", sender_progress.clone());
        let pacing = [reader_progress.clone(), sender_progress.clone()];
        let rss_before = rss_kib(None);

        let mut sent = 0;
        let mut sent_at_drop = None;
        while sent < MAX_MESSAGES {
            if sent_at_drop.is_none() && sender_progress.leaves.load(Ordering::SeqCst) > 0 {
                sent_at_drop = Some(sent);
            }
            if sent_at_drop.is_some_and(|at| sent >= at + AFTER_DROP) {
                break;
            }
            wait_for_readers(&pacing, (sent + 1).saturating_sub(WINDOW));
            sender.send_frame(true, op::TEXT, numbered(sent, SIZE).as_bytes());
            sent += 1;
        }
        let sent_at_drop = sent_at_drop.unwrap_or_else(|| {
            panic!(
                "the silent member was not dropped after {MAX_MESSAGES} messages of {SIZE} bytes"
            )
        });
        sender.send_frame(true, op::TEXT, b"done");
        let (reader_saw, _reader) = reader.join().unwrap();
        let (sender_saw, _sender_reading) = sender_reader.join().unwrap();
        let rss_after = rss_kib(None);

        for (who, seen) in [("reader", &reader_saw), ("sender", &sender_saw)] {
            assert_eq!(seen.ended_early, None, "{who}");
            assert_in_order(who, &seen.messages, sent, SIZE);
            assert_eq!(seen.leaves, vec!["slowpoke"], "{who}: leave notices");
        }
        assert_eq!(metric(addr, "loopchat_slow_readers_dropped_total"), 1);
        assert_eq!(metric(addr, "loopchat_closes_sent_total{code=\"1008\"}"), 1);
        // The slow member's connection is gone from the server (after its close
        // deadline, since its full socket could not take the close frame).
        wait_until_open(addr, (1, 2, 0), STATE_TIMEOUT).unwrap();
        // What it got before that is an unbroken prefix of the messages, then the end.
        let (frames, _) = slow.read_until_close();
        let got: Vec<String> = frames
            .iter()
            .filter(|f| json_field(f.text(), "type") == Some("message"))
            .map(|f| json_field(f.text(), "text").unwrap().to_string())
            .collect();
        assert!(got.len() < sent, "the silent member got everything");
        assert_in_order("silent member", &got, got.len(), SIZE);
        assert!(slow.closed_by_server());

        let growth = rss_after.saturating_sub(rss_before);
        println!(
        "slow reader (chat): dropped after {sent_at_drop} messages of {SIZE} bytes ({} KiB \
         had reached it); test-process RSS (server and clients) {rss_before} KiB -> {rss_after} KiB (+{growth} KiB, bound 65536 KiB)",
        got.len() * SIZE / 1024
    );
        assert!(growth < 64 * 1024, "memory grew by {growth} KiB");
    });
}

/// Sends frames made by `frame(i)` in 64 KiB batches on a connection that never
/// reads, until the server counts a slow reader or writes fail (at most 64 MiB).
/// Returns how many frames were sent.
fn flood_without_reading(
    raw: &mut Raw,
    addr: SocketAddr,
    frame: impl Fn(usize) -> Vec<u8>,
) -> usize {
    raw.stream
        .set_write_timeout(Some(READ_TIMEOUT))
        .expect("write timeout");
    let mut sent = 0;
    for batch in 0..1024 {
        let mut bytes = Vec::with_capacity(70 * 1024);
        let first = sent;
        while bytes.len() < 64 * 1024 {
            bytes.extend(frame(sent));
            sent += 1;
        }
        if raw.stream.write_all(&bytes).is_err() {
            return first;
        }
        if batch % 16 == 15 && metric(addr, "loopchat_slow_readers_dropped_total") > 0 {
            break;
        }
    }
    sent
}

#[test]
fn an_echo_client_that_never_reads_is_disconnected_instead_of_growing_memory() {
    const SIZE: usize = 1024;
    let config = config_with(|c| {
        c.max_output = 64 * 1024;
        c.close_timeout = Duration::from_secs(1);
    });
    with_server(config, |addr| {
        let rss_before = rss_kib(None);
        let mut raw = Raw::websocket(addr, "/echo");
        let sent = flood_without_reading(&mut raw, addr, |i| {
            client_frame(true, op::TEXT, numbered(i, SIZE).as_bytes())
        });
        assert!(
            eventually(STATE_TIMEOUT, || metric(
                addr,
                "loopchat_slow_readers_dropped_total"
            ) == 1),
            "no slow reader dropped after {sent} messages"
        );
        wait_until_empty(addr, STATE_TIMEOUT).unwrap();
        let rss_after = rss_kib(None);

        // What came back is an unbroken prefix of what was sent, then a close 1008
        // (if it fit in the socket before the deadline) or the end of the connection.
        let (echoes, code) = raw.read_until_close();
        let texts: Vec<String> = echoes.iter().map(|f| f.text().to_string()).collect();
        assert!(texts.len() < sent);
        assert_in_order("echo", &texts, texts.len(), SIZE);
        assert!(matches!(code, None | Some(1008)), "close code {code:?}");

        let growth = rss_after.saturating_sub(rss_before);
        println!(
        "slow reader (echo): {sent} messages of {SIZE} bytes sent, {} echoed; \
         test-process RSS (server and client) {rss_before} KiB -> {rss_after} KiB (+{growth} KiB, bound 65536 KiB)",
        texts.len()
    );
        assert!(growth < 64 * 1024, "memory grew by {growth} KiB");
        // The server still serves.
        let mut ws = client(addr, "/echo");
        ws.send(tungstenite::Message::text("after")).unwrap();
        assert_eq!(ws.read().unwrap(), tungstenite::Message::text("after"));
    });
}

#[test]
fn a_ping_flood_from_a_peer_that_never_reads_pongs_is_disconnected() {
    let config = config_with(|c| {
        c.max_output = 64 * 1024;
        c.close_timeout = Duration::from_secs(1);
    });
    with_server(config, |addr| {
        let mut raw = Raw::websocket(addr, "/echo");
        let sent = flood_without_reading(&mut raw, addr, |_| {
            client_frame(true, op::PING, &[b'p'; 125])
        });
        assert!(
            eventually(STATE_TIMEOUT, || metric(
                addr,
                "loopchat_slow_readers_dropped_total"
            ) == 1),
            "no slow reader dropped after {sent} pings"
        );
        wait_until_empty(addr, STATE_TIMEOUT).unwrap();
        let (pongs, code) = raw.read_until_close();
        assert!(pongs
            .iter()
            .all(|f| f.opcode == op::PONG && f.payload == [b'p'; 125]));
        assert!(pongs.len() < sent);
        assert!(matches!(code, None | Some(1008)), "close code {code:?}");
    });
}

/// A member that reads everything as fast as it comes is not a slow reader, even
/// when another member sends a burst: here 2 MiB of messages in one write, with
/// the default output limit (1 MiB).
#[test]
fn a_burst_from_one_sender_does_not_drop_members_that_keep_reading() {
    const SIZE: usize = 1024;
    const COUNT: usize = 2048;
    with_server(config_with(|c| c.max_message_rate = 0), |addr| {
        let reader_progress = Arc::new(Progress::default());
        let reader = spawn_chat_reader(
            Raw::websocket(addr, "/chat/burst?name=reader"),
            "done",
            reader_progress,
        );
        let mut sender = Raw::websocket(addr, "/chat/burst?name=sender");
        let sender_reader =
            spawn_chat_reader(sender.reading_half(), "done", Arc::new(Progress::default()));
        let mut burst = Vec::new();
        for i in 0..COUNT {
            burst.extend(client_frame(true, op::TEXT, numbered(i, SIZE).as_bytes()));
        }
        burst.extend(client_frame(true, op::TEXT, b"done"));
        sender.send(&burst);
        let (reader_saw, _reader) = reader.join().unwrap();
        let (sender_saw, _sender_reading) = sender_reader.join().unwrap();
        let dropped = metric(addr, "loopchat_slow_readers_dropped_total");
        for (who, seen) in [("reader", &reader_saw), ("sender", &sender_saw)] {
            assert_eq!(
                seen.ended_early,
                None,
                "{who} was cut off after {} messages ({dropped} slow readers dropped)",
                seen.messages.len()
            );
            assert_in_order(who, &seen.messages, COUNT, SIZE);
        }
        assert_eq!(dropped, 0);
    });
}

/// Pipelined HTTP requests from a client that does not read its responses must
/// not make the server queue responses without bound: 10,000 `GET /` (270 KB of
/// requests) would be 10,000 copies of the page (over 100 MiB). Once the client
/// reads, every response comes, in order.
#[test]
fn pipelined_requests_from_a_client_that_does_not_read_do_not_grow_memory() {
    const REQUESTS: usize = 10_000;
    with_server(config(), |addr| {
        let page_len = get(addr, "/").2.len();
        let rss_before = rss_kib(None);
        let mut raw = Raw::connect(addr);
        let mut requests = "GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(REQUESTS - 1);
        requests.push_str("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        // The server may stop reading: write from a thread, so this one can wait.
        let mut stream = raw.stream.try_clone().unwrap();
        let writer = thread::spawn(move || stream.write_all(requests.as_bytes()).is_ok());
        // Wait until the server stops making progress (bounded): between two readings
        // 200 ms apart, the only new request is the one asking for the metrics.
        let mut last = 0;
        eventually(STATE_TIMEOUT, || {
            thread::sleep(Duration::from_millis(200));
            let now = metric(addr, "loopchat_http_requests_total");
            std::mem::replace(&mut last, now) + 1 == now
        });
        let rss_after = rss_kib(None);
        let growth = rss_after.saturating_sub(rss_before);
        println!(
        "pipelining: {last} requests parsed (metrics requests included) while the client did not read; \
         RSS {rss_before} KiB -> {rss_after} KiB (+{growth} KiB, bound 65536 KiB)"
    );
        assert!(growth < 64 * 1024, "memory grew by {growth} KiB");

        for i in 0..REQUESTS {
            let (status, _, body) = raw.read_response(false);
            assert_eq!((status, body.len()), (200, page_len), "response {i}");
        }
        assert!(raw.closed_by_server());
        assert!(
            writer.join().unwrap(),
            "the requests could not all be written"
        );
        drop(raw);
        wait_until_empty(addr, STATE_TIMEOUT).unwrap();
    });
}

// ---- Closing deadline ---------------------------------------------------------------------

/// After its last response (or close frame) the server half-closes and waits for
/// the peer's FIN, for `close_timeout` at most. Peers that never close are dropped
/// then, and meanwhile the loop sleeps: the binary's CPU time over a second of
/// waiting must be less than half of it (an idle loop uses next to none; before
/// 25ab295 it spun, re-shutting the socket on every writable event, and the
/// deadline never passed).
#[test]
fn a_peer_that_never_closes_after_the_last_response_is_dropped_without_spinning() {
    let (mut child, addr) = spawn_binary(&["--close-timeout", "2s", "--log-level", "warn"]);
    let cpu_seconds = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        // utime and stime, fields 14 and 15 of stat(5), in clock ticks (100 Hz).
        (fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()) as f64 / 100.0
    };
    // One after an HTTP response with `Connection: close`, one after a WebSocket
    // closing handshake: both see the server's FIN and keep their sockets open.
    let mut lingering = Raw::connect(addr);
    lingering.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(lingering.read_response(false).0, 200);
    let mut lingering_ws = Raw::websocket(addr, "/echo");
    lingering_ws.send_frame(true, op::CLOSE, &close_payload(1000, b""));
    assert_eq!(lingering_ws.read_until_close().1, Some(1000));
    let (cpu_before, started) = (cpu_seconds(child.pid()), Instant::now());
    thread::sleep(Duration::from_secs(1));
    let cpu = cpu_seconds(child.pid()) - cpu_before;
    let wall = started.elapsed().as_secs_f64();
    assert!(
        cpu < wall / 2.0,
        "the server used {cpu:.2} s of CPU in {wall:.2} s with two draining peers"
    );
    wait_until_open(addr, (1, 0, 0), STATE_TIMEOUT)
        .unwrap_or_else(|last| panic!("the lingering peers are still there: {last}"));
    assert!(lingering.closed_by_server());
    assert!(lingering_ws.closed_by_server());
    send_signal(child.pid(), "TERM");
    assert!(child
        .wait_timeout(STATE_TIMEOUT)
        .is_some_and(|s| s.success()));
}

// ---- Connection limit ---------------------------------------------------------------------

#[test]
fn past_max_connections_new_peers_get_503_and_the_listener_recovers() {
    with_server(config_with(|c| c.max_connections = Some(5)), |addr| {
        let mut peers: Vec<Raw> = (0..5).map(|_| Raw::websocket(addr, "/echo")).collect();

        // The sixth, silent: a 503 with Retry-After, then the end of the connection.
        let mut sixth = Raw::connect(addr);
        let (status, head, body) = sixth.read_response(false);
        assert_eq!(status, 503, "{head}");
        assert!(header_value(&head, "retry-after").is_some(), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("503"));
        assert!(sixth.closed_by_server());
        let mut refused = 1;
        // The seventh sends its request at once: refused all the same (503 or closed).
        match try_websocket(addr, "/echo") {
            Ok(_) => panic!("a seventh connection was upgraded past the limit"),
            Err(status) => assert!(matches!(status, 503 | 0), "status {status}"),
        }
        refused += 1;
        // The five are unharmed.
        for (i, peer) in peers.iter_mut().enumerate() {
            peer.send_frame(true, op::TEXT, format!("peer {i}").as_bytes());
            assert_eq!(peer.read_frame().unwrap().text(), format!("peer {i}"));
        }

        // Two leave properly; new connections are accepted again (each attempt made
        // before the server has freed their slots is refused, and counted here).
        for mut peer in peers.drain(..2) {
            peer.send_frame(true, op::CLOSE, &close_payload(1000, b""));
            assert_eq!(peer.read_until_close().1, Some(1000));
        }
        let mut newcomers = Vec::new();
        let accepted = eventually(STATE_TIMEOUT, || match try_websocket(addr, "/echo") {
            Ok(raw) => {
                newcomers.push(raw);
                newcomers.len() == 2
            }
            Err(_) => {
                refused += 1;
                false
            }
        });
        assert!(accepted, "no new connection accepted after two left");
        for peer in &mut newcomers {
            peer.send_frame(true, op::TEXT, b"newcomer");
            assert_eq!(peer.read_frame().unwrap().payload, b"newcomer");
        }

        // Make room for the metrics request, then check the count of refusals.
        drop(newcomers);
        let mut page = None;
        assert!(eventually(STATE_TIMEOUT, || {
            page = try_metrics(addr);
            if page.is_none() {
                refused += 1;
            }
            page.is_some()
        }));
        let page = page.unwrap();
        assert_eq!(metric_in(&page, "loopchat_connections_max"), 5);
        assert_eq!(
            metric_in(&page, "loopchat_connections_refused_total"),
            refused
        );
    });
}

// ---- Accept errors: back off, do not spin, recover ---------------------------------------

/// The binary with an open-files limit of 32 (about 24 connections) and 40
/// clients at once: `accept` fails with EMFILE, the server backs off (100 ms, so
/// it cannot have failed more often than once per 100 ms) and, as clients leave,
/// accepts and serves every one of them.
#[test]
fn accept_failing_with_emfile_backs_off_and_recovers() {
    const CLIENTS: usize = 40;
    let (mut child, addr) = spawn_binary_limited(
        Some(32),
        &["--max-connections", "1000", "--log-level", "error"],
    );
    let started = Instant::now();
    let clients: Vec<Raw> = (0..CLIENTS)
        .map(|_| {
            let mut raw = Raw::connect(addr);
            raw.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            raw
        })
        .collect();
    for (i, mut raw) in clients.into_iter().enumerate() {
        let (status, _, _) = raw.read_response(false);
        assert_eq!(status, 200, "client {i}");
        // Dropped here: the server sees the FIN and frees the descriptor.
    }
    let mut page = None;
    assert!(eventually(STATE_TIMEOUT, || {
        page = try_metrics(addr);
        page.is_some()
    }));
    let page = page.unwrap();
    let errors = metric_in(&page, "loopchat_accept_errors_total");
    let elapsed_ms = started.elapsed().as_millis() as u64;
    println!("accept backoff: {errors} failed accepts over {elapsed_ms} ms for {CLIENTS} clients");
    assert!(
        errors >= 1,
        "no accept error: the open-files limit did not bite"
    );
    assert!(
        errors <= elapsed_ms / 100 + 2,
        "{errors} failed accepts in {elapsed_ms} ms: not backing off"
    );
    assert!(metric_in(&page, "loopchat_connections_accepted_total") > CLIENTS as u64);

    let mut ws = Raw::websocket(addr, "/echo");
    ws.send_frame(true, op::TEXT, b"recovered");
    assert_eq!(ws.read_frame().unwrap().payload, b"recovered");
    drop(ws);
    send_signal(child.pid(), "TERM");
    let status = child
        .wait_timeout(STATE_TIMEOUT)
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status}: {}", child.stderr_text());
}

// ---- Heartbeat ------------------------------------------------------------------------------

#[test]
fn a_peer_that_never_answers_pings_is_dropped_one_that_does_stays() {
    let config = config_with(|c| c.ping_interval = Duration::from_millis(200));
    with_server(config, |addr| {
        // tungstenite answers pings by itself while it reads.
        let mut ws = client(addr, "/echo");
        let polite = thread::spawn(move || {
            let mut pings = 0;
            while pings < 5 {
                match ws.read().expect("read") {
                    tungstenite::Message::Ping(_) => pings += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
            ws.send(tungstenite::Message::text("still connected"))
                .unwrap();
            loop {
                match ws.read().expect("read") {
                    tungstenite::Message::Text(text) => return text.as_str().to_string(),
                    tungstenite::Message::Ping(_) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        // A raw peer that answers each ping with a pong of the same payload.
        let mut answering = Raw::websocket(addr, "/echo");
        let answerer = thread::spawn(move || {
            let mut pings = 0;
            while pings < 3 {
                let frame = answering.read_frame().expect("a frame");
                assert_eq!(frame.opcode, op::PING, "{frame:?}");
                answering.send_frame(true, op::PONG, &frame.payload);
                pings += 1;
            }
            answering.send_frame(true, op::TEXT, b"pong pong");
            loop {
                let frame = answering.read_frame().expect("a frame");
                if frame.opcode == op::TEXT {
                    return frame.payload;
                }
                answering.send_frame(true, op::PONG, &frame.payload);
            }
        });

        // A raw peer that reads but never answers.
        let mut mute = Raw::websocket(addr, "/echo");
        let ping = mute.read_frame().expect("a ping");
        assert_eq!(ping.opcode, op::PING);
        assert!(!ping.payload.is_empty(), "pings carry a payload to match");
        assert!(mute.closed_by_server(), "the mute peer was not dropped");
        assert!(eventually(STATE_TIMEOUT, || metric(
            addr,
            "loopchat_pong_timeouts_total"
        ) >= 1));

        assert_eq!(polite.join().unwrap(), "still connected");
        assert_eq!(answerer.join().unwrap(), b"pong pong");
        assert_eq!(metric(addr, "loopchat_pong_timeouts_total"), 1);
    });
}

// ---- Origin policy ------------------------------------------------------------------------------

#[test]
fn foreign_origins_get_403_allowed_and_absent_origins_are_accepted() {
    let config = config_with(|c| {
        c.allowed_origins = vec!["https://good.example".to_string()];
    });
    with_server(config, |addr| {
        let upgrade = |origin: Option<&str>| {
            let extra = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
            let mut raw = Raw::connect(addr);
            raw.send(upgrade_request("/echo", &extra).as_bytes());
            let (status, _, _) = raw.read_response(true);
            (status, raw)
        };
        let (status, mut evil) = upgrade(Some("https://evil.example"));
        assert_eq!(status, 403);
        assert!(evil.closed_by_server());
        assert_eq!(upgrade(Some("https://good.example")).0, 101);
        assert_eq!(upgrade(Some("http://127.0.0.1")).0, 101, "same origin");
        assert_eq!(upgrade(None).0, 101, "no Origin: not a browser");
    });

    let config = config_with(|c| c.allowed_origins = vec!["*".to_string()]);
    with_server(config, |addr| {
        let mut raw = Raw::connect(addr);
        raw.send(upgrade_request("/echo", "Origin: https://evil.example\r\n").as_bytes());
        assert_eq!(raw.read_response(true).0, 101);
    });
}

// ---- Abrupt disconnects and deferred removal -------------------------------------------------

/// Half of a masked 100-byte text frame: its header and 40 bytes of payload.
fn half_frame() -> Vec<u8> {
    let frame = client_frame(true, op::TEXT, &[b'h'; 100]);
    frame[..frame.len() - 60].to_vec()
}

/// One client that connects, does a little, and vanishes (kind `kind % 8`).
/// Dropping a socket with unread input makes Linux send RST instead of FIN.
fn vanish(addr: SocketAddr, kind: usize) {
    match kind % 8 {
        // Connect and go.
        0 => drop(TcpStream::connect(addr).expect("connect")),
        // Half of an upgrade request.
        1 => {
            let request = upgrade_request("/echo", "");
            Raw::connect(addr).send(&request.as_bytes()[..request.len() / 2]);
        }
        // A whole upgrade request, gone before the 101 (which meets a closed socket).
        2 => Raw::connect(addr).send(upgrade_request("/chat/storm", "").as_bytes()),
        // Upgraded, then half a frame.
        3 => Raw::websocket(addr, "/echo").send(&half_frame()),
        // A chat member with its welcome and notices unread (RST).
        4 => drop(Raw::websocket(addr, "/chat/storm")),
        // An echo never read (RST).
        5 => Raw::websocket(addr, "/echo").send_frame(true, op::TEXT, b"unread echo"),
        // A chat message, then half a frame, nothing read.
        6 => {
            let mut raw = Raw::websocket(addr, "/chat/storm");
            raw.send_frame(true, op::TEXT, b"bye");
            raw.send(&half_frame());
        }
        // A close frame, gone before the server's answer to it.
        _ => {
            let mut raw = Raw::websocket(addr, "/chat/storm");
            raw.send_frame(true, op::CLOSE, &close_payload(1000, b""));
        }
    }
}

#[test]
fn a_storm_of_abrupt_disconnects_leaves_no_connection_behind() {
    const CLIENTS_PER_THREAD: usize = 50;
    // Timers far away: whatever is freed is freed because the disconnect was seen.
    let config = config_with(|c| {
        c.handshake_timeout = Duration::from_secs(120);
        c.close_timeout = Duration::from_secs(120);
        c.ping_interval = Duration::from_secs(120);
    });
    with_server(config, |addr| {
        // A member that stays, reading the notices of the others coming and going.
        let observer = spawn_chat_reader(
            Raw::websocket(addr, "/chat/storm?name=observer"),
            "done",
            Arc::default(),
        );
        let storm: Vec<JoinHandle<()>> = (0..4)
            .map(|t| {
                thread::spawn(move || {
                    for i in 0..CLIENTS_PER_THREAD {
                        vanish(addr, t + i * 4);
                    }
                })
            })
            .collect();
        for thread in storm {
            thread.join().unwrap();
        }
        // Everything but the observer goes away, on disconnects alone.
        wait_until_open(addr, (1, 1, 0), STATE_TIMEOUT).unwrap();
        assert_eq!(metric(addr, "loopchat_rooms"), 1);

        // The server still serves: the chat, the echo and a page.
        let mut speaker = Raw::websocket(addr, "/chat/storm?name=speaker");
        speaker.send_frame(true, op::TEXT, b"done");
        let (observed, observer) = observer.join().unwrap();
        assert_eq!(observed.ended_early, None);
        // Every client that joined the room (kinds 2, 4, 6 and 7) was announced gone.
        let members = (0..4 * CLIENTS_PER_THREAD)
            .filter(|kind| matches!(kind % 8, 2 | 4 | 6 | 7))
            .count();
        assert_eq!(observed.leaves.len(), members);
        let mut ws = client(addr, "/echo");
        ws.send(tungstenite::Message::text("after the storm"))
            .unwrap();
        assert_eq!(
            ws.read().unwrap(),
            tungstenite::Message::text("after the storm")
        );
        assert_eq!(get(addr, "/").0, 200);
        drop((speaker, ws, observer));
        wait_until_empty(addr, STATE_TIMEOUT).unwrap();
        println!(
            "storm: {} clients vanished; the observer saw {} leave notices",
            4 * CLIENTS_PER_THREAD,
            observed.leaves.len()
        );
    });
}

/// A room of readers, a sender, and a dozen members that vanish (RST, some in the
/// middle of a frame) in the middle of a burst of messages: the readers get every
/// message in order and a leave notice for each, and the slab empties afterwards.
#[test]
fn members_failing_during_a_broadcast_do_not_disturb_the_others() {
    const READERS: usize = 24;
    const FRAGILE: usize = 12;
    const COUNT: usize = 400;
    const DROP_AT: usize = 150;
    const SIZE: usize = 200;
    const WINDOW: usize = 32;
    with_server(config_with(|c| c.max_message_rate = 0), |addr| {
        let progress: Vec<Arc<Progress>> = (0..READERS).map(|_| Arc::default()).collect();
        let readers: Vec<JoinHandle<(Seen, Raw)>> = progress
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let raw = Raw::websocket(addr, &format!("/chat/fail?name=reader-{i}"));
                spawn_chat_reader(raw, "done", p.clone())
            })
            .collect();
        let mut fragile: Vec<Raw> = (0..FRAGILE)
            .map(|i| Raw::websocket(addr, &format!("/chat/fail?name=fragile-{i}")))
            .collect();
        let mut sender = Raw::websocket(addr, "/chat/fail?name=sender");
        let sender_progress = Arc::new(Progress::default());
        let sender_reader =
            spawn_chat_reader(sender.reading_half(), "done", sender_progress.clone());

        let mut pacing = progress.clone();
        pacing.push(sender_progress.clone());
        for i in 0..COUNT {
            if i == DROP_AT {
                for (j, mut member) in fragile.drain(..).enumerate() {
                    if j % 2 == 0 {
                        member.send(&half_frame());
                    }
                }
            }
            wait_for_readers(&pacing, (i + 1).saturating_sub(WINDOW));
            sender.send_frame(true, op::TEXT, numbered(i, SIZE).as_bytes());
        }
        // Every leave is known before the last message, so every reader has seen them.
        wait_until_open(addr, (1, READERS as u64 + 1, 0), STATE_TIMEOUT).unwrap();
        sender.send_frame(true, op::TEXT, b"done");

        let mut expected_leaves: Vec<String> =
            (0..FRAGILE).map(|i| format!("fragile-{i}")).collect();
        expected_leaves.sort();
        for (i, reader) in readers.into_iter().enumerate() {
            let (mut seen, _reader) = reader.join().unwrap();
            assert_eq!(seen.ended_early, None, "reader {i}");
            assert_in_order(&format!("reader {i}"), &seen.messages, COUNT, SIZE);
            seen.leaves.sort();
            assert_eq!(seen.leaves, expected_leaves, "reader {i}");
        }
        let (seen, _) = sender_reader.join().unwrap();
        assert_in_order("sender", &seen.messages, COUNT, SIZE);
        assert_eq!(metric(addr, "loopchat_slow_readers_dropped_total"), 0);

        drop(sender);
        wait_until_empty(addr, STATE_TIMEOUT).unwrap();
    });
}
