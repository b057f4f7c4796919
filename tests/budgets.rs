//! The global limits of `src/server/limits.rs` and `chat.rs`, each crossed on a
//! small scale over real sockets on 127.0.0.1: the per-endpoint message sizes
//! (1009), the per-address connection limit (503), the message deadline (1008),
//! the input budget (1013) and the history budget. The same limits at scale, with
//! the server's memory measured, are in `budgets_soak.rs`.
//!
//! As in `limits.rs`, no assertion is about how long something took: deadlines in
//! the configurations are short, but the tests wait for outcomes (with bounded
//! waits) and check them.

mod common;
use common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How long to wait for the server to reach a state before failing.
const STATE_TIMEOUT: Duration = Duration::from_secs(30);

const INPUT_BUDGET_REFUSALS: &str = "loopchat_limit_refusals_total{limit=\"input_budget\"}";
const MESSAGE_TIMEOUTS: &str = "loopchat_limit_refusals_total{limit=\"message_timeout\"}";
const PER_IP_REFUSALS: &str = "loopchat_limit_refusals_total{limit=\"max_connections_per_ip\"}";
const INPUT_HELD: &str = "loopchat_input_held_bytes";
const HISTORY_HELD: &str = "loopchat_history_bytes";

// ---- Helpers ------------------------------------------------------------------------

/// Frames up to the server's close frame, and that close's code and reason
/// (`None` if the connection ended without one).
fn until_close(raw: &mut Raw) -> (Vec<Frame>, Option<(u16, String)>) {
    let mut before = Vec::new();
    while let Some(frame) = raw.read_frame() {
        if frame.opcode == op::CLOSE {
            let reason = String::from_utf8_lossy(frame.payload.get(2..).unwrap_or(&[]));
            return (before, Some((frame.close_code(), reason.into_owned())));
        }
        before.push(frame);
    }
    (before, None)
}

/// The next frame, which must be a chat text frame of JSON type `kind`.
#[track_caller]
fn expect_chat(raw: &mut Raw, kind: &str) -> String {
    let json = raw.read_text();
    assert_eq!(json_field(&json, "type"), Some(kind), "{json}");
    json
}

/// A chat member of `/chat/{room}?name={name}`, past its welcome and its own join
/// notice.
fn chat_member(addr: SocketAddr, room: &str, name: &str) -> Raw {
    let mut raw = Raw::websocket(addr, &format!("/chat/{room}?name={name}"));
    expect_chat(&mut raw, "welcome");
    expect_chat(&mut raw, "join");
    raw
}

/// Says `text` in the member's (one-member) room and checks that it comes back.
#[track_caller]
fn say(member: &mut Raw, text: &str) {
    member.send_frame(true, op::TEXT, text.as_bytes());
    let json = expect_chat(member, "message");
    assert_eq!(json_field(&json, "text"), Some(text));
}

/// Joins `room` as a newcomer and returns the history it was replayed (the
/// `message` frames between its welcome and its own join notice): their texts,
/// and their size as frames on the wire, which is what the history budget counts.
fn replayed_history(addr: SocketAddr, room: &str) -> (Vec<String>, usize, Raw) {
    let mut raw = Raw::websocket(addr, &format!("/chat/{room}?name=newcomer"));
    expect_chat(&mut raw, "welcome");
    let mut texts = Vec::new();
    let mut bytes = 0;
    loop {
        let json = raw.read_text();
        match json_field(&json, "type") {
            Some("message") => {
                texts.push(json_field(&json, "text").expect("text").to_string());
                bytes += wire_size(json.len());
            }
            Some("join") => return (texts, bytes, raw),
            other => panic!("{room}: unexpected {other:?} in the history: {json}"),
        }
    }
}

/// The size of an unmasked server frame with `payload` bytes.
fn wire_size(payload: usize) -> usize {
    payload
        + match payload {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        }
}

/// The length of a masked client frame's header for a payload of `len` bytes.
fn client_header_len(len: usize) -> usize {
    4 + match len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    }
}

/// Asks for `/metrics` on the keep-alive HTTP connection `raw` and returns the page.
fn metrics_on(raw: &mut Raw) -> String {
    raw.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let (status, head, body) = raw.read_response(false);
    assert_eq!(status, 200, "{head}");
    String::from_utf8(body).expect("UTF-8 metrics")
}

// ---- Message size per endpoint -------------------------------------------------------

/// `--max-message-size` is /echo's limit, `--max-chat-message-size` the chat's:
/// each endpoint takes a message at its own limit and refuses one byte more with
/// 1009, and the chat's smaller limit does not apply to /echo.
#[test]
fn each_endpoint_takes_a_message_at_its_own_limit_and_refuses_one_byte_more_with_1009() {
    let config = config_with(|c| {
        c.max_message_size = 1000;
        c.max_chat_message_size = 500;
    });
    with_server(config, |addr| {
        let mut member = chat_member(addr, "sizes", "sizer");
        say(&mut member, &"c".repeat(500));
        member.send_frame(true, op::TEXT, "c".repeat(501).as_bytes());
        let (before, close) = until_close(&mut member);
        assert!(before.is_empty(), "frames before the close: {before:?}");
        assert_eq!(close.map(|c| c.0), Some(1009));

        let mut echo = Raw::websocket(addr, "/echo");
        echo.expect_echo(&"e".repeat(501)); // over the chat's limit, within /echo's
        echo.expect_echo(&"e".repeat(1000));
        echo.send_frame(true, op::TEXT, "e".repeat(1001).as_bytes());
        let (before, close) = until_close(&mut echo);
        assert!(before.is_empty(), "frames before the close: {before:?}");
        assert_eq!(close.map(|c| c.0), Some(1009));

        assert_eq!(metric(addr, "loopchat_closes_sent_total{code=\"1009\"}"), 2);
    });
}

// ---- Connections per address ---------------------------------------------------------

/// `--max-connections-per-ip 3`: three connections from 127.0.0.1, in three
/// phases (an echo peer, a chat member, a keep-alive HTTP connection), stay open
/// and are served; a fourth gets `503` with `Retry-After`, and the three are
/// unharmed. Once one of them leaves, a new connection is accepted (retried:
/// the slot is freed at the end of a loop iteration). Every refusal is counted.
#[test]
fn past_max_connections_per_ip_a_fourth_connection_gets_503_until_one_leaves() {
    let config = config_with(|c| {
        c.max_connections_per_ip = Some(3);
        // The HTTP connection stays idle between its requests for the whole test.
        c.handshake_timeout = Duration::from_secs(120);
    });
    with_server(config, |addr| {
        let mut echo = Raw::websocket(addr, "/echo");
        let mut member = chat_member(addr, "per-ip", "ann");
        let mut http = Raw::connect(addr);
        // Accepted in order, so the third is admitted before the fourth is judged.
        let page = metrics_on(&mut http);
        assert_eq!(metric_in(&page, PER_IP_REFUSALS), 0);

        let mut fourth = Raw::connect(addr);
        let (status, head, body) = fourth.read_response(false);
        assert_eq!(status, 503, "{head}");
        assert!(header_value(&head, "retry-after").is_some(), "{head}");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("--max-connections-per-ip"), "{body}");
        assert!(fourth.closed_by_server());
        let mut refused = 1;

        // The three are unharmed.
        echo.expect_echo("still here");
        say(&mut member, "still here");
        let page = metrics_on(&mut http);
        assert_eq!(metric_in(&page, PER_IP_REFUSALS), refused);

        // The echo peer leaves properly; a new connection gets its slot.
        echo.send_frame(true, op::CLOSE, &close_payload(1000, b""));
        assert_eq!(echo.read_until_close().1, Some(1000));
        drop(echo);
        let mut newcomer = None;
        let accepted = eventually(STATE_TIMEOUT, || match try_websocket(addr, "/echo") {
            Ok(raw) => {
                newcomer = Some(raw);
                true
            }
            Err(status) => {
                // 0: the 503 was overtaken by a reset (the request was unread).
                assert!(matches!(status, 503 | 0), "status {status}");
                refused += 1;
                false
            }
        });
        assert!(
            accepted,
            "no connection accepted after one of the three left"
        );
        newcomer.unwrap().expect_echo("newcomer");

        let page = metrics_on(&mut http);
        assert_eq!(metric_in(&page, PER_IP_REFUSALS), refused);
        assert_eq!(metric_in(&page, "loopchat_connections_refused_total"), 0);
        say(&mut member, "still here at the end");
    });
}

// ---- Message deadline ----------------------------------------------------------------

/// `--message-timeout 1s --message-min-rate 1KiB`: a message announced at 10,000
/// bytes and trickled at 5 bytes a second is cut off with 1008; a 16 KiB message
/// sent at about 8 KiB/s over two seconds (longer than the timeout alone) earns
/// its time and comes back whole. One timeout is counted.
#[test]
fn a_trickled_message_gets_1008_and_a_steady_one_is_echoed_whole() {
    let config = config_with(|c| {
        c.message_timeout = Duration::from_secs(1);
        c.message_min_rate = 1024;
    });
    with_server(config, |addr| {
        let steady = thread::spawn(move || {
            let mut raw = Raw::websocket(addr, "/echo");
            let payload: Vec<u8> = (0..16 * 1024).map(|i| (i % 251) as u8).collect();
            let frame = client_frame(true, op::BINARY, &payload);
            for chunk in frame.chunks(1024) {
                raw.send(chunk);
                thread::sleep(Duration::from_millis(125));
            }
            let echo = raw.read_frame().expect("the echo, not the end");
            assert_eq!((echo.opcode, echo.fin), (op::BINARY, true));
            assert!(echo.payload == payload, "the echo differs from the message");
            raw.expect_echo("and the connection goes on");
        });

        let mut trickler = Raw::websocket(addr, "/echo");
        let frame = client_frame(true, op::BINARY, &[0x55; 10_000]);
        let header = client_header_len(10_000);
        trickler.send(&frame[..header]);
        let stop = Arc::new(AtomicBool::new(false));
        let mut stream = trickler.stream.try_clone().expect("clone socket");
        let stopped = Arc::clone(&stop);
        // At most 100 bytes (20 s); the close comes long before.
        let dripper = thread::spawn(move || {
            for byte in &frame[header..header + 100] {
                if stopped.load(Ordering::SeqCst) || stream.write_all(&[*byte]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(200));
            }
        });
        let (before, close) = until_close(&mut trickler);
        stop.store(true, Ordering::SeqCst);
        dripper.join().unwrap();
        assert!(before.is_empty(), "frames before the close: {before:?}");
        let (code, reason) = close.expect("a close frame, not the end of the connection");
        assert_eq!(code, 1008, "{reason}");
        assert!(reason.contains("in time"), "{reason}");
        assert!(trickler.closed_by_server());

        steady.join().expect("the steady sender");
        assert_eq!(metric(addr, MESSAGE_TIMEOUTS), 1);
    });
}

// ---- Input budget ----------------------------------------------------------------------

/// `--input-budget 256KiB`: four /echo peers each send the header of a 200 KiB
/// message and 100 KiB of it, which makes each hold at least 100 KiB (in fact the
/// 200 KiB the header announces, reserved on the first payload byte). The largest
/// holders are closed with 1013 until the total is under the budget, which the
/// gauge never shows exceeded. Meanwhile a fresh peer is served, and the peers
/// that hold nothing (an idle echo peer, a chat member) are never the ones closed.
/// Then every holder sends the rest: each one not closed gets its message back
/// whole; the closed ones got 1013 and nothing else. The counter matches the
/// 1013s, and once all is done nothing is held.
#[test]
fn past_the_input_budget_the_largest_holders_get_1013_and_everyone_else_is_served() {
    const BUDGET: u64 = 256 * 1024;
    const HOLDERS: usize = 4;
    const MESSAGE: usize = 200 * 1024;
    const FIRST_PART: usize = 100 * 1024;
    let config = config_with(|c| {
        c.input_budget = BUDGET as usize;
        c.max_message_size = 1 << 20;
        // The closed holders send the rest of their message after their 1013:
        // the server must still be reading (draining) them then, not reset them.
        c.close_timeout = Duration::from_secs(60);
    });
    with_server(config, |addr| {
        let mut idle = Raw::websocket(addr, "/echo");
        idle.expect_echo("holds nothing");
        let mut member = chat_member(addr, "budget", "bystander");

        let frames: Vec<Vec<u8>> = (0..HOLDERS)
            .map(|i| {
                let payload: Vec<u8> = (0..MESSAGE).map(|j| (i * 31 + j % 241) as u8).collect();
                client_frame(true, op::BINARY, &payload)
            })
            .collect();
        let split = client_header_len(MESSAGE) + FIRST_PART;
        let mut holders: Vec<Raw> = (0..HOLDERS)
            .map(|_| Raw::websocket(addr, "/echo"))
            .collect();
        for (holder, frame) in holders.iter_mut().zip(&frames) {
            holder.send(&frame[..split]);
        }

        let mut held_seen = Vec::new();
        let refused_some = eventually(STATE_TIMEOUT, || {
            let page = try_metrics(addr).expect("metrics");
            held_seen.push(metric_in(&page, INPUT_HELD));
            metric_in(&page, INPUT_BUDGET_REFUSALS) >= 1
        });
        assert!(refused_some, "no holder was closed; held: {held_seen:?}");
        let mut fresh = Raw::websocket(addr, "/echo");
        fresh.expect_echo("a fresh peer is served");
        held_seen.push(metric(addr, INPUT_HELD));
        assert!(
            held_seen.iter().all(|&held| held <= BUDGET),
            "held over the budget: {held_seen:?}"
        );

        for (holder, frame) in holders.iter_mut().zip(&frames) {
            // A closed holder's rest is read and discarded by the server.
            let _ = holder.stream.write_all(&frame[split..]);
        }
        let (mut echoed, mut refused) = (0, 0);
        for (i, (holder, frame)) in holders.iter_mut().zip(&frames).enumerate() {
            let first = holder.read_frame().expect("a frame, not the end");
            if first.opcode == op::CLOSE {
                let reason = String::from_utf8_lossy(&first.payload[2..]).into_owned();
                assert_eq!(first.close_code(), 1013, "holder {i}: {reason}");
                assert!(reason.contains("try again later"), "holder {i}: {reason}");
                assert!(
                    holder.closed_by_server(),
                    "holder {i} stays open after 1013"
                );
                refused += 1;
            } else {
                assert_eq!((first.opcode, first.fin), (op::BINARY, true), "holder {i}");
                let payload = &frame[client_header_len(MESSAGE)..];
                let sent: Vec<u8> = (0..MESSAGE)
                    .map(|j| payload[j] ^ [0x5a, 0xc3, 0x0f, 0x96][j % 4])
                    .collect();
                assert!(first.payload == sent, "holder {i}: the echo differs");
                holder.expect_echo("and goes on");
                echoed += 1;
            }
        }
        println!("input budget: {refused} of {HOLDERS} holders closed with 1013, {echoed} echoed; held seen {held_seen:?}");
        assert!(refused >= 1, "no holder got 1013");
        assert!(echoed >= 1, "every holder was closed: the budget fits one");
        assert_eq!(metric(addr, INPUT_BUDGET_REFUSALS), refused);
        assert_eq!(
            metric(addr, "loopchat_closes_sent_total{code=\"1013\"}"),
            refused
        );

        // Those that held nothing were never closed, and now nothing is held.
        idle.expect_echo("still here");
        fresh.expect_echo("still here");
        say(&mut member, "still here");
        let mut held = None;
        assert!(
            eventually(STATE_TIMEOUT, || {
                held = Some(metric(addr, INPUT_HELD));
                held == Some(0)
            }),
            "input still held after every message finished: {held:?}"
        );
    });
}

// ---- History budget ----------------------------------------------------------------------

/// `--history-budget 4KiB` (per room: 50 messages, 64 KiB, far more): three
/// rooms take ten ~300-byte frames each, in turn, about 9 KiB in all. A newcomer
/// to the most recently active room gets its whole history; the least recently
/// active rooms gave theirs up first (each room's history a suffix of what was
/// said there, no longer than a more recently active room's); what is kept adds
/// up to no more than the budget, and the gauge says exactly that.
#[test]
fn past_the_history_budget_the_least_recently_active_rooms_give_up_history_first() {
    const BUDGET: usize = 4096;
    const PER_ROOM: usize = 10;
    let config = config_with(|c| {
        c.history_budget = BUDGET;
        c.history = 50;
        c.history_bytes = 64 * 1024;
    });
    with_server(config, |addr| {
        let rooms = ["hist-a", "hist-b", "hist-c"]; // c is the most recently active
        let mut said: Vec<Vec<String>> = Vec::new();
        let mut speakers = Vec::new();
        for room in rooms {
            let mut speaker = chat_member(addr, room, &format!("s-{room}"));
            let texts: Vec<String> = (0..PER_ROOM)
                .map(|k| format!("{room} {k:02} {}", "x".repeat(200)))
                .collect();
            for text in &texts {
                say(&mut speaker, text);
            }
            said.push(texts);
            speakers.push(speaker); // rooms keep a member: none is idle
        }

        let mut kept = Vec::new();
        let mut total = 0;
        for (room, texts) in rooms.iter().zip(&said) {
            let (history, bytes, _newcomer) = replayed_history(addr, room);
            assert!(
                texts.ends_with(&history),
                "{room}: history is not the newest of what was said: {history:?}"
            );
            kept.push(history.len());
            total += bytes;
        }
        println!("history budget: kept {kept:?} messages of rooms {rooms:?}, {total} bytes");
        assert_eq!(
            kept[2], PER_ROOM,
            "the most recently active room lost history"
        );
        assert!(kept[0] <= kept[1] && kept[1] <= kept[2], "kept: {kept:?}");
        assert!(kept[0] < PER_ROOM, "nothing given up: {kept:?}");
        assert!(total <= BUDGET, "{total} bytes of history kept");
        assert_eq!(metric(addr, HISTORY_HELD) as usize, total);
    });
}
