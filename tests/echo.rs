//! The `/echo` endpoint: messages of every length class, fragments, ping/pong and
//! the closing handshake.

mod common;
use common::*;
use tungstenite::Message;

/// The default message size limit: exactly 1 MiB.
const MIB: usize = 1 << 20;

const SIZES: [usize; 6] = [0, 125, 126, 65535, 65536, MIB];

fn text_of(len: usize) -> String {
    // ASCII with some variety, so a shifted or corrupted echo shows.
    (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

fn bytes_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn echoes_text_of_every_length_class() {
    with_server(config(), |addr| {
        let mut ws = client(addr, "/echo");
        assert_eq!(server_max_message_size(), MIB);
        for len in SIZES {
            let text = text_of(len);
            ws.send(Message::text(text.clone())).unwrap();
            match ws.read().unwrap() {
                Message::Text(echo) => {
                    assert_eq!(echo.len(), len, "length of the echo of {len} bytes");
                    assert!(echo.as_str() == text, "echo of {len} bytes differs");
                }
                other => panic!("{len}: expected text, got {}", kind(&other)),
            }
        }
        ws.close(None).unwrap();
    });
}

#[test]
fn echoes_binary_of_every_length_class() {
    with_server(config(), |addr| {
        let mut ws = client(addr, "/echo");
        for len in SIZES {
            let bytes = bytes_of(len);
            ws.send(Message::binary(bytes.clone())).unwrap();
            match ws.read().unwrap() {
                Message::Binary(echo) => {
                    assert_eq!(echo.len(), len, "length of the echo of {len} bytes");
                    assert!(echo[..] == bytes[..], "echo of {len} bytes differs");
                }
                other => panic!("{len}: expected binary, got {}", kind(&other)),
            }
        }
        ws.close(None).unwrap();
    });
}

#[test]
fn echoes_exactly_max_message_size_over_raw_frames() {
    with_echo(|raw| {
        let payload = bytes_of(MIB);
        raw.send_frame(true, op::BINARY, &payload);
        let frame = raw.read_frame().expect("the echo, not the end");
        assert_eq!(
            frame.opcode,
            op::BINARY,
            "got {:?} instead",
            close_of(&frame)
        );
        assert_eq!(frame.payload.len(), MIB);
        assert!(frame.payload == payload);
        // The connection is still fine afterwards.
        raw.expect_echo("after");
    });
}

#[test]
fn one_byte_over_max_message_size_gets_1009() {
    with_echo(|raw| {
        raw.send_frame(true, op::BINARY, &bytes_of(MIB + 1));
        raw.expect_close_then_eof(1009);
    });

    // The same for a text message, and for fragments that only add up to too much.
    with_server(config(), |addr| {
        let mut raw = Raw::websocket(addr, "/echo");
        raw.send_frame(true, op::TEXT, text_of(MIB + 1).as_bytes());
        raw.expect_close_then_eof(1009);
        let mut raw = Raw::websocket(addr, "/echo");
        raw.send_frame(false, op::BINARY, &bytes_of(MIB / 2));
        raw.send_frame(true, op::CONTINUATION, &bytes_of(MIB / 2 + 1));
        raw.expect_close_then_eof(1009);
    });
}

#[test]
fn fragmented_text_with_an_interleaved_ping() {
    with_echo(|raw| {
        let mut bytes = client_frame(false, op::TEXT, "Hel".as_bytes());
        bytes.extend(client_frame(true, op::PING, b"in between"));
        // "é" split across the fragment boundary.
        bytes.extend(client_frame(false, op::CONTINUATION, b"lo, caf\xc3"));
        bytes.extend(client_frame(true, op::CONTINUATION, b"\xa9!"));
        raw.send(&bytes);
        raw.expect_pong(b"in between");
        assert_eq!(raw.read_text(), "Hello, café!");
    });
}

#[test]
fn fragmented_binary_is_echoed_whole() {
    with_echo(|raw| {
        raw.send_frame(false, op::BINARY, &[1, 2]);
        raw.send_frame(false, op::CONTINUATION, &[]);
        raw.send_frame(true, op::CONTINUATION, &[3]);
        let echo = raw.read_frame().unwrap();
        assert_eq!((echo.opcode, echo.fin), (op::BINARY, true));
        assert_eq!(echo.payload, vec![1, 2, 3]);
    });
}

#[test]
fn ping_gets_a_pong_with_the_same_payload() {
    with_echo(|raw| {
        for payload in [Vec::new(), b"hello".to_vec(), bytes_of(125)] {
            raw.send_frame(true, op::PING, &payload);
            let pong = raw.read_frame().unwrap();
            assert_eq!(pong.opcode, op::PONG);
            assert!(pong.fin);
            assert_eq!(pong.payload, payload);
        }
    });
}

#[test]
fn unsolicited_pong_is_ignored() {
    with_echo(|raw| {
        raw.send_frame(true, op::PONG, b"nobody asked");
        raw.expect_echo("next");
    });
}

#[test]
fn messages_in_one_write_are_echoed_in_order() {
    with_echo(|raw| {
        let mut bytes = Vec::new();
        for i in 0..50 {
            bytes.extend(client_frame(
                true,
                op::TEXT,
                format!("message {i}").as_bytes(),
            ));
        }
        raw.send(&bytes);
        for i in 0..50 {
            assert_eq!(raw.read_text(), format!("message {i}"));
        }
    });
}

#[test]
fn frames_split_into_single_bytes_are_reassembled() {
    with_echo(|raw| {
        let mut bytes = client_frame(true, op::TEXT, "dripped ✓".as_bytes());
        bytes.extend(client_frame(true, op::BINARY, &bytes_of(300)));
        for byte in bytes {
            raw.send(&[byte]);
        }
        assert_eq!(raw.read_text(), "dripped ✓");
        let frame = raw.read_frame().unwrap();
        assert_eq!((frame.opcode, frame.payload), (op::BINARY, bytes_of(300)));
    });
}

#[test]
fn close_handshake_from_the_client() {
    with_echo(|raw| {
        raw.send_frame(true, op::CLOSE, &close_payload(1000, b"bye"));
        // §5.5.1: the answer carries the same status code; then the server, which
        // closes TCP first (§7.1.1), ends the connection.
        raw.expect_close_then_eof(1000);
    });
}

#[test]
fn close_handshake_with_tungstenite() {
    with_server(config(), |addr| {
        let mut ws = client(addr, "/echo");
        ws.send(Message::text("before")).unwrap();
        ws.close(Some(tungstenite::protocol::CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "done".into(),
        }))
        .unwrap();
        let mut seen = Vec::new();
        loop {
            match ws.read() {
                Ok(message) => seen.push(message),
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!("closing: {e}"),
            }
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0], Message::text("before"));
        match &seen[1] {
            Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1000),
            other => panic!("expected a close, got {other:?}"),
        }
    });
}

#[test]
fn empty_close_is_answered_with_1000() {
    with_echo(|raw| {
        raw.send_frame(true, op::CLOSE, &[]);
        raw.expect_close_then_eof(1000);
    });
}

#[test]
fn nothing_is_sent_after_the_servers_close() {
    with_server(config(), |addr| {
        // After a close from the client: the text and ping behind it get no answer.
        let mut raw = Raw::websocket(addr, "/echo");
        let mut bytes = client_frame(true, op::TEXT, b"echoed");
        bytes.extend(client_frame(true, op::CLOSE, &close_payload(1000, b"")));
        bytes.extend(client_frame(true, op::TEXT, b"too late"));
        bytes.extend(client_frame(true, op::PING, b"too late"));
        raw.send(&bytes);
        assert_eq!(raw.read_text(), "echoed");
        raw.expect_close_then_eof(1000);

        // After a protocol error: the server's close is its last frame.
        let mut raw = Raw::websocket(addr, "/echo");
        let mut bytes = client_frame(true, op::TEXT, b"echoed");
        let mut bad = client_frame(true, op::TEXT, b"rsv");
        bad[0] |= 0x40;
        bytes.extend(bad);
        bytes.extend(client_frame(true, op::TEXT, b"too late"));
        bytes.extend(client_frame(true, op::PING, b"too late"));
        raw.send(&bytes);
        assert_eq!(raw.read_text(), "echoed");
        raw.expect_close_then_eof(1002);
    });
}

#[test]
fn server_shutdown_sends_1001() {
    // Time enough to answer the close before the server gives up on us.
    let config = config_with(|c| c.shutdown_timeout = READ_TIMEOUT);
    with_stoppable_server(config, |addr, server| {
        let mut raw = Raw::websocket(addr, "/echo");
        raw.expect_echo("up");
        server.stop();
        raw.expect_close(1001);
        raw.send_frame(true, op::CLOSE, &close_payload(1001, b""));
        assert!(raw.closed_by_server());
    });
}

fn server_max_message_size() -> usize {
    config().max_message_size
}

/// What a message is, without printing a megabyte of payload.
fn kind(message: &Message) -> String {
    match message {
        Message::Text(t) => format!("text of {} bytes", t.len()),
        Message::Binary(b) => format!("binary of {} bytes", b.len()),
        other => format!("{other:?}"),
    }
}

fn close_of(frame: &Frame) -> String {
    if frame.opcode == op::CLOSE {
        format!("close {} {:?}", frame.close_code(), frame.text())
    } else {
        format!("opcode {}", frame.opcode)
    }
}
