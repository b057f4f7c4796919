//! Regressions found by review: inputs and sequences that once crashed, stalled,
//! cut off or mis-closed a connection. Each test is the story of one of them.

mod common;

use common::*;
use std::io::Read;
use std::time::Duration;

// ---- Request targets ------------------------------------------------------------------

#[test]
fn a_target_with_a_multibyte_character_near_the_scheme_length_is_served() {
    // "/abcde\u{e9}": a slice at byte 7 would cut the "é" in half.
    with_server(config(), |addr| {
        for target in ["/abcde\u{e9}", "/abcdef\u{e9}", "/\u{e9}\u{e9}\u{e9}\u{e9}"] {
            let mut raw = Raw::connect(addr);
            let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            raw.send(request.as_bytes());
            assert_eq!(raw.read_response(false).0, 404, "{target}");
        }
        assert_eq!(get(addr, "/").0, 200, "the server is still up");
    });
}

#[test]
fn an_absolute_form_target_is_routed_by_its_path_and_checked_by_its_authority() {
    with_server(config(), |addr| {
        let mut raw = Raw::connect(addr);
        let head = raw.request(&upgrade_request(
            "http://good.example/echo",
            "Origin: http://good.example\r\n",
        ));
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // RFC 9112 §3.2.2: the target's authority, not Host, is what Origin must match.
        let mut raw = Raw::connect(addr);
        let head = raw.request(&upgrade_request(
            "http://good.example/echo",
            "Origin: http://127.0.0.1\r\n",
        ));
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    });
}

// ---- Slow readers in numbers ------------------------------------------------------------

#[test]
fn many_slow_readers_at_once_are_all_dropped_and_the_others_served() {
    with_server(
        config_with(|c| {
            c.max_output = 16 * 1024;
            c.max_message_rate = 0; // a load, not a person
        }),
        |addr| {
            // Forty members who never read, then one who reads and sends.
            let _sleepers: Vec<Raw> = (0..40)
                .map(|_| Raw::websocket(addr, "/chat/crowd"))
                .collect();
            let mut member = client(addr, "/chat/crowd");
            let big = "z".repeat(60 * 1024);
            for _ in 0..200 {
                member
                    .send(tungstenite::Message::text(big.clone()))
                    .expect("the reader stays connected");
                // It keeps up with every message (and the notices between them).
                loop {
                    let message = member.read().expect("the reader stays connected");
                    if message
                        .into_text()
                        .unwrap()
                        .contains("\"type\":\"message\"")
                    {
                        break;
                    }
                }
                if metric(addr, "loopchat_slow_readers_dropped_total") >= 40 {
                    break;
                }
            }
            assert_eq!(metric(addr, "loopchat_slow_readers_dropped_total"), 40);
        },
    );
}

// ---- HTTP deadlines -----------------------------------------------------------------------

#[test]
fn a_response_that_is_being_read_is_not_cut_off_by_the_request_deadline() {
    let dir = fresh_temp_dir("big-file");
    let body: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("big.bin"), &body).unwrap();
    let config = config_with(|c| {
        c.static_dir = Some(dir.clone());
        // Long enough that a busy machine does not starve a progressing
        // reader, short enough that the slow read below outlasts it.
        c.handshake_timeout = Duration::from_millis(500);
    });
    with_server(config, |addr| {
        let mut raw = Raw::connect(addr);
        raw.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let head = raw.read_head();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        // Read slowly: small reads with pauses, for longer than the deadline in all.
        let mut received = raw.buffered().to_vec();
        let mut chunk = [0u8; 256 * 1024];
        while received.len() < body.len() {
            std::thread::sleep(Duration::from_millis(40));
            match raw.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("read failed after {} bytes: {e}", received.len()),
            }
        }
        assert_eq!(received.len(), body.len(), "the body was cut off");
        assert!(received == body);
    });
    let _ = std::fs::remove_dir_all(dir);
}

// ---- Shutdown ---------------------------------------------------------------------------------

#[test]
fn shutdown_serves_no_further_request_on_a_busy_keep_alive_connection() {
    let config = config_with(|c| c.shutdown_timeout = Duration::from_secs(5));
    with_stoppable_server(config, |addr, server| {
        let mut busy = Raw::connect(addr);
        // Enough pipelined requests that responses are still queued at shutdown.
        let request = "GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(400);
        busy.send(request.as_bytes());
        std::thread::sleep(Duration::from_millis(100));
        server.stop();
        busy.send(upgrade_request("/chat", "").as_bytes());
        // Whatever arrives, it is never a 101: the connection ends instead.
        let mut everything = Vec::new();
        let _ = busy.stream.read_to_end(&mut everything);
        let text = String::from_utf8_lossy(&everything);
        assert!(
            !text.contains("101 Switching Protocols"),
            "upgraded during shutdown"
        );
    });
}

#[test]
fn a_protocol_error_after_our_close_still_ends_the_connection_at_once() {
    let config = config_with(|c| {
        c.close_timeout = Duration::from_secs(60);
        c.shutdown_timeout = Duration::from_secs(60);
    });
    with_stoppable_server(config, |addr, server| {
        let mut raw = Raw::websocket(addr, "/echo");
        server.stop();
        let (_, code) = raw.read_until_close();
        assert_eq!(code, Some(1001));
        // Instead of a close frame, a frame with a reserved opcode.
        raw.send(&client_frame(true, 0x3, b""));
        // The server closes TCP now, not after the 60 s close timeout.
        assert!(
            raw.closed_by_server(),
            "the server waited for the close timeout"
        );
    });
}
