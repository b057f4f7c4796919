//! https:// and wss:// over real sockets (RFC 8446, RFC 5246; RFC 6455 §11.1.2).
//!
//! Each test makes its own self-signed certificate (rcgen) at test time, serves
//! it with `--tls-cert`/`--tls-key`, and talks to the server with rustls
//! clients that trust exactly that certificate: the page over https, echoes of
//! 0 B to 1 MiB over wss, chat between wss members, the handshake deadline
//! against clients that never finish a handshake or speak plain HTTP, the
//! output limit against a TLS client that never reads, and the goodbye (1001,
//! then close_notify) of a graceful shutdown. The binary's own TLS behaviour
//! (bad files, SIGHUP) is in `tls_binary.rs`.
#![cfg(feature = "tls")]

mod common;
use common::tls::*;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Reads a wss member's frames until the notice of `kind` ("join", "leave")
/// about `name`.
fn expect_notice(ws: &mut Wss, kind: &str, name: &str) {
    loop {
        if let Message::Text(json) = ws.read().expect("a frame") {
            if json_field(&json, "type") == Some(kind) && json_field(&json, "name") == Some(name) {
                return;
            }
        }
    }
}

#[test]
fn the_page_and_metrics_over_https_in_tls_1_3_and_1_2_with_alpn_http_1_1() {
    let cert = TestCert::new("tls-page", "page.test");
    with_server(cert.config(), |addr| {
        for versions in [Versions::Both, Versions::Tls12Only] {
            let client = client_config_with_alpn(&[&cert.der], versions, &[b"h2", b"http/1.1"]);
            let socket = tls_connect(addr, &client);
            let expected = match versions {
                Versions::Both => rustls::ProtocolVersion::TLSv1_3,
                Versions::Tls12Only => rustls::ProtocolVersion::TLSv1_2,
            };
            assert_eq!(socket.conn.protocol_version(), Some(expected));
            assert_eq!(socket.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
            assert_eq!(presented(&socket), cert.der);

            let (status, head, body) = https_get(addr, "/", &client);
            assert_eq!(status, 200, "{versions:?}: {head}");
            let page = String::from_utf8_lossy(&body);
            assert!(page.contains("<html"), "{versions:?}: not the page");
            // The page picks wss:// by itself when it came over https.
            assert!(page.contains("wss:"), "the page knows wss://");
            let (status, _, body) = https_get(addr, "/metrics", &client);
            assert_eq!(status, 200);
            assert!(String::from_utf8_lossy(&body).contains("loopchat_connections_open"));
        }
        // A client that offers only a protocol the server does not speak is
        // refused in the handshake (RFC 7301 §3.2), not served something else.
        let h2_only = client_config_with_alpn(&[&cert.der], Versions::Both, &[b"h2"]);
        assert!(try_tls_connect(addr, &h2_only).is_err());
    });
}

#[test]
fn keep_alive_and_pipelined_requests_over_https() {
    let cert = TestCert::new("tls-keepalive", "keepalive.test");
    with_server(cert.config(), |addr| {
        let client = client_config(&[&cert.der], Versions::Both);
        let mut socket = tls_connect(addr, &client);
        let one = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let last = "HEAD / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        socket
            .write_all(format!("{one}{one}{last}").as_bytes())
            .unwrap();
        let mut all = Vec::new();
        socket.read_to_end(&mut all).expect("ended by close_notify");
        let text = String::from_utf8_lossy(&all);
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    });
}

#[test]
fn wss_echoes_every_size_from_0_bytes_to_1_mib() {
    let cert = TestCert::new("tls-echo", "echo.test");
    with_server(cert.config(), |addr| {
        let client = client_config(&[&cert.der], Versions::Both);
        let mut ws = wss(addr, "/echo", &client);
        for size in [
            0,
            1,
            125,
            126,
            16 * 1024 - 1,
            16 * 1024 + 1,
            65_535,
            65_536,
            300_000,
            1 << 20,
        ] {
            let binary: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            ws.send(Message::binary(binary.clone())).unwrap();
            match ws.read().unwrap() {
                Message::Binary(echo) => assert!(echo[..] == binary[..], "{size} B binary"),
                other => panic!("{size} B: {other:?}"),
            }
            let text = "é".repeat(size / 2) + &"a".repeat(size % 2);
            ws.send(Message::text(text.clone())).unwrap();
            match ws.read().unwrap() {
                Message::Text(echo) => assert!(echo.as_str() == text, "{size} B text"),
                other => panic!("{size} B: {other:?}"),
            }
        }
        // Past the limit the server says 1009, over TLS as over TCP.
        ws.send(Message::binary(vec![0u8; (1 << 20) + 1])).unwrap();
        match ws.read() {
            Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1009),
            other => panic!("{other:?}"),
        }
    });
}

/// Chat between wss members, one on TLS 1.3 and one on TLS 1.2. (One process
/// serves either TLS or plain TCP on `--addr`, so a ws and a wss member never
/// share a room; see the README.)
#[test]
fn wss_members_on_tls_1_3_and_1_2_chat_in_one_room() {
    let cert = TestCert::new("tls-chat", "chat.test");
    with_server(cert.config(), |addr| {
        let tls13 = client_config(&[&cert.der], Versions::Both);
        let tls12 = client_config(&[&cert.der], Versions::Tls12Only);
        let mut ann = wss(addr, "/chat/tls?name=ann", &tls13);
        let mut bob = wss(addr, "/chat/tls?name=bob", &tls12);
        expect_notice(&mut ann, "join", "bob");
        ann.send(Message::text("hello from 1.3")).unwrap();
        assert_eq!(next_chat_text(&mut bob), "hello from 1.3");
        assert_eq!(next_chat_text(&mut ann), "hello from 1.3");
        let long = "x".repeat(40_000);
        bob.send(Message::text(long.clone())).unwrap();
        assert_eq!(next_chat_text(&mut ann), long);
        assert_eq!(next_chat_text(&mut bob), long);
        bob.close(None).unwrap();
        expect_notice(&mut ann, "leave", "bob");
    });
}

/// `--handshake-timeout` runs from accept over the TLS handshake and the
/// request. A client that sends nothing, one that stops inside its
/// ClientHello, and one that finishes the handshake and sends no request are
/// closed at the deadline; one that speaks plain HTTP is closed at once (a TLS
/// error) with an alert, not an HTTP response. Meanwhile a wss client echoes,
/// and a newcomer gets through, at full speed.
#[test]
fn handshake_deadline_closes_silent_partial_and_plain_http_clients_without_stalling_others() {
    const DEADLINE: Duration = Duration::from_millis(800);
    let cert = TestCert::new("tls-slowloris", "slowloris.test");
    let config = cert.config_with(|c| c.handshake_timeout = DEADLINE);
    with_server(config, |addr| {
        let client = client_config(&[&cert.der], Versions::Both);
        let mut working = wss(addr, "/echo", &client);
        let start = Instant::now();
        let mut silent = Raw::connect(addr);
        let mut partial = Raw::connect(addr);
        // A TLS handshake record header that promises 512 bytes, then nothing.
        partial.send(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
        let mut idle_after_handshake = tls_connect(addr, &client);
        let mut plain = Raw::connect(addr);
        plain.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");

        let answer = plain.read_to_eof().expect("plain HTTP is closed");
        assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
        assert_eq!(
            answer.first(),
            Some(&0x15),
            "a TLS alert record: {answer:?}"
        );
        assert!(
            start.elapsed() < DEADLINE,
            "closed at once, not at the deadline"
        );

        // The others are served as usual while the three wait for their deadline.
        for i in 0..20 {
            let text = format!("still here {i}");
            working.send(Message::text(text.clone())).unwrap();
            assert_eq!(working.read().unwrap(), Message::text(text));
        }
        let (status, _, _) = https_get(addr, "/", &client);
        assert_eq!(status, 200);
        assert!(start.elapsed() < DEADLINE, "the others were not held up");

        for (who, raw) in [("silent", &mut silent), ("partial", &mut partial)] {
            assert!(raw.closed_by_server(), "{who} is closed");
            let waited = start.elapsed();
            assert!(
                waited >= DEADLINE,
                "{who} closed before the deadline: {waited:?}"
            );
        }
        let mut buf = [0u8; 16];
        match idle_after_handshake.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::TimedOut => {}
            other => panic!("the handshake reset the deadline: {other:?}"),
        }
        assert!(start.elapsed() >= DEADLINE);
        assert!(start.elapsed() < DEADLINE * 5, "{:?}", start.elapsed());
        let timeouts = https_metric(addr, &client, "loopchat_handshake_timeouts_total");
        assert_eq!(timeouts, 3, "silent, partial and idle-after-handshake");
        working.send(Message::text("after")).unwrap();
        assert_eq!(working.read().unwrap(), Message::text("after"));
    });
}

/// A wss member that never reads is dropped once what waits for it, queued
/// plaintext and rustls's ciphertext together, passes `--max-output`; the
/// member that talks gets every message in order and the leave notice.
#[test]
fn a_tls_member_that_never_reads_is_dropped_at_max_output() {
    const SIZE: usize = 1024;
    const MAX_MESSAGES: usize = 20_000;
    let cert = TestCert::new("tls-slow", "slow.test");
    let config = cert.config_with(|c| {
        c.max_output = 64 * 1024;
        c.close_timeout = Duration::from_secs(1);
        c.max_message_rate = 0; // a load, not a person: no flood control
    });
    with_server(config, |addr| {
        let client = client_config(&[&cert.der], Versions::Both);
        let slow = wss(addr, "/chat/slow?name=slowpoke", &client);
        let mut talker = wss(addr, "/chat/slow?name=talker", &client);
        let mut dropped_after = None;
        for i in 0..MAX_MESSAGES {
            let text = format!("{i:06}{}", "m".repeat(SIZE - 6));
            talker.send(Message::text(text.clone())).unwrap();
            // Every message comes back in order; a leave notice may come first.
            loop {
                let frame = talker.read().expect("a frame");
                let Message::Text(json) = frame else { continue };
                match json_field(&json, "type") {
                    Some("message") => {
                        assert_eq!(json_field(&json, "text"), Some(text.as_str()));
                        break;
                    }
                    Some("leave") => {
                        assert_eq!(json_field(&json, "name"), Some("slowpoke"));
                        dropped_after = Some(i);
                    }
                    _ => {}
                }
            }
            if dropped_after.is_some() {
                break;
            }
        }
        let sent = dropped_after.expect("the silent member was dropped");
        println!("a TLS member that never reads was dropped after {sent} messages of {SIZE} B");
        assert_eq!(
            https_metric(addr, &client, "loopchat_slow_readers_dropped_total"),
            1
        );
        drop(slow);
    });
}

/// A graceful shutdown says 1001 over TLS, and after the closing handshake
/// ends TLS with close_notify: the client reads a clean end, not a truncation.
#[test]
fn shutdown_says_1001_over_tls_then_close_notify() {
    let cert = TestCert::new("tls-shutdown", "shutdown.test");
    with_stoppable_server(cert.config(), |addr, handle| {
        let client = client_config(&[&cert.der], Versions::Both);
        let mut member = wss(addr, "/chat?name=member", &client);
        // By hand over TLS, to see the TLS end itself.
        let mut raw = tls_connect(addr, &client);
        raw.write_all(upgrade("/echo").as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = raw.read(&mut buf).expect("the 101");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 101"));

        handle.stop();

        let code = loop {
            match member.read() {
                Ok(Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(code, Some(1001));
        // The raw client: the close frame (0x88, code 1001), we answer, then the end.
        let mut frames = got[got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..].to_vec();
        while parse_server_frame(&frames).is_none() {
            let n = raw.read(&mut buf).expect("a close frame");
            assert!(n > 0, "ended before the close frame");
            frames.extend_from_slice(&buf[..n]);
        }
        let (frame, _) = parse_server_frame(&frames).unwrap();
        assert_eq!(frame.close_code(), 1001);
        raw.write_all(&client_frame(true, op::CLOSE, &close_payload(1001, b"")))
            .unwrap();
        let mut rest = Vec::new();
        raw.read_to_end(&mut rest)
            .expect("a clean TLS end (close_notify), not a truncation");
        assert!(rest.is_empty(), "{rest:?}");
    });
}

/// A TLS client that reaches a plain server fails, and does not hang it.
#[test]
fn tls_to_a_plain_server_fails() {
    let cert = TestCert::new("tls-mismatch", "mismatch.test");
    with_server(config(), |addr| {
        let client = client_config(&[&cert.der], Versions::Both);
        assert!(try_tls_connect(addr, &client).is_err());
        assert_eq!(get(addr, "/").0, 200);
    });
}
