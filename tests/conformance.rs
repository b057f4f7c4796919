//! RFC 6455 rules, one test per rule, with raw frames over a real socket against
//! `/echo`. Every failure checks both the close code the server sends and that
//! the server then ends the TCP connection without sending anything more.

mod common;
use common::*;
use std::net::SocketAddr;
use std::time::Duration;

/// Opens `/echo`, sends `bytes`, and expects close `code` and then EOF.
fn expect_failure(addr: SocketAddr, bytes: &[u8], code: u16) {
    let mut raw = Raw::websocket(addr, "/echo");
    raw.send(bytes);
    raw.expect_close_then_eof(code);
}

/// A masked frame with byte 0 set as given (FIN, RSV and opcode bits as is).
fn frame_with_byte0(byte0: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = client_frame(true, 0, payload);
    frame[0] = byte0;
    frame
}

fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

// ---- §5.2: the base framing --------------------------------------------------------

#[test]
fn rsv_bits_without_an_extension_get_1002() {
    with_server(config(), |addr| {
        for rsv in [0x40, 0x20, 0x10, 0x70] {
            expect_failure(addr, &frame_with_byte0(0x80 | rsv | op::TEXT, b"hi"), 1002);
            expect_failure(addr, &frame_with_byte0(0x80 | rsv | op::PING, b"hi"), 1002);
        }
    });
}

#[test]
fn reserved_opcodes_get_1002() {
    with_server(config(), |addr| {
        for opcode in (0x3..=0x7).chain(0xB..=0xF) {
            let mut raw = Raw::websocket(addr, "/echo");
            raw.send(&frame_with_byte0(0x80 | opcode, b"x"));
            raw.expect_close_then_eof_for(&format!("opcode {opcode:#x}"), 1002);
        }
    });
}

#[test]
fn unmasked_client_frames_get_1002() {
    with_server(config(), |addr| {
        // §5.1: "The server MUST close the connection upon receiving a frame that is
        // not masked."
        expect_failure(addr, &[0x81, 0x02, b'h', b'i'], 1002);
        expect_failure(addr, &[0x89, 0x00], 1002);
        expect_failure(addr, &[0x88, 0x02, 0x03, 0xe8], 1002);
    });
}

#[test]
fn lengths_must_be_minimal_and_in_range() {
    with_server(config(), |addr| {
        // 5 bytes written in the 16-bit form.
        let mut frame = vec![0x81, 0x80 | 126, 0x00, 0x05, 1, 2, 3, 4];
        frame.extend_from_slice(b"hello");
        expect_failure(addr, &frame, 1002);
        // 200 bytes written in the 64-bit form.
        let mut frame = vec![0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 200, 1, 2, 3, 4];
        frame.extend_from_slice(&[0; 200]);
        expect_failure(addr, &frame, 1002);
        // The most significant bit of a 64-bit length must be 0.
        let frame = [0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4];
        expect_failure(addr, &frame, 1002);
    });
}

// ---- §5.5: control frames ------------------------------------------------------------

#[test]
fn control_frames_over_125_bytes_get_1002() {
    with_server(config(), |addr| {
        for opcode in [op::PING, op::PONG, op::CLOSE] {
            let mut payload = vec![b'x'; 126];
            if opcode == op::CLOSE {
                payload[..2].copy_from_slice(&1000u16.to_be_bytes());
            }
            expect_failure(addr, &client_frame(true, opcode, &payload), 1002);
        }
        // 125 is still fine.
        let mut raw = Raw::websocket(addr, "/echo");
        raw.send_frame(true, op::PING, &[7; 125]);
        raw.expect_pong(&[7; 125]);
    });
}

#[test]
fn fragmented_control_frames_get_1002() {
    with_server(config(), |addr| {
        for opcode in [op::PING, op::PONG, op::CLOSE] {
            let payload = if opcode == op::CLOSE {
                close_payload(1000, b"")
            } else {
                b"frag".to_vec()
            };
            expect_failure(addr, &client_frame(false, opcode, &payload), 1002);
        }
    });
}

#[test]
fn control_frames_inside_a_fragmented_message_are_handled_at_once() {
    with_echo(|raw| {
        raw.send(&concat(&[
            client_frame(false, op::TEXT, b"a"),
            client_frame(true, op::PING, b"1"),
        ]));
        // The pong comes while the message is still incomplete.
        raw.expect_pong(b"1");
        raw.send(&concat(&[
            client_frame(true, op::PONG, b"unsolicited"),
            client_frame(false, op::CONTINUATION, b"b"),
            client_frame(true, op::PING, b"2"),
        ]));
        raw.expect_pong(b"2");
        raw.send_frame(true, op::CONTINUATION, b"c");
        assert_eq!(raw.read_text(), "abc");
    });
}

#[test]
fn close_inside_a_fragmented_message_is_answered() {
    with_echo(|raw| {
        raw.send(&concat(&[
            client_frame(false, op::TEXT, b"never finished"),
            client_frame(true, op::CLOSE, &close_payload(1000, b"")),
        ]));
        raw.expect_close_then_eof(1000);
    });
}

// ---- §5.4: fragmentation -------------------------------------------------------------

#[test]
fn continuation_without_a_started_message_gets_1002() {
    with_server(config(), |addr| {
        expect_failure(addr, &client_frame(true, op::CONTINUATION, b"orphan"), 1002);
        expect_failure(
            addr,
            &client_frame(false, op::CONTINUATION, b"orphan"),
            1002,
        );
        // After a complete message there is nothing to continue either.
        let mut raw = Raw::websocket(addr, "/echo");
        raw.send(&concat(&[
            client_frame(true, op::TEXT, b"done"),
            client_frame(true, op::CONTINUATION, b"more"),
        ]));
        assert_eq!(raw.read_text(), "done");
        raw.expect_close_then_eof(1002);
    });
}

#[test]
fn new_data_frame_inside_a_fragmented_message_gets_1002() {
    with_server(config(), |addr| {
        for (first, second) in [
            (op::TEXT, op::TEXT),
            (op::TEXT, op::BINARY),
            (op::BINARY, op::TEXT),
            (op::BINARY, op::BINARY),
        ] {
            expect_failure(
                addr,
                &concat(&[
                    client_frame(false, first, b"start"),
                    client_frame(true, second, b"intruder"),
                ]),
                1002,
            );
        }
    });
}

#[test]
fn sixty_five_thousand_one_byte_fragments_are_reassembled() {
    with_echo(|raw| {
        let count = 65_536;
        let expected: Vec<u8> = (0..count).map(|i| (i % 256) as u8).collect();
        let mut bytes = Vec::with_capacity(count * 7);
        for (i, byte) in expected.iter().enumerate() {
            let opcode = if i == 0 { op::BINARY } else { op::CONTINUATION };
            bytes.extend(client_frame(i == count - 1, opcode, &[*byte]));
        }
        raw.send(&bytes);
        let echo = raw.read_frame().unwrap();
        assert_eq!((echo.opcode, echo.fin), (op::BINARY, true));
        assert_eq!(echo.payload.len(), count);
        assert!(echo.payload == expected);
    });
}

#[test]
fn text_split_into_one_byte_fragments_mid_character_is_valid() {
    with_echo(|raw| {
        // Two-, three- and four-byte characters, every one cut between fragments.
        let text = "é€😀".repeat(5_000);
        let bytes_in = text.as_bytes();
        let mut bytes = Vec::with_capacity(bytes_in.len() * 7);
        for (i, byte) in bytes_in.iter().enumerate() {
            let opcode = if i == 0 { op::TEXT } else { op::CONTINUATION };
            bytes.extend(client_frame(i == bytes_in.len() - 1, opcode, &[*byte]));
        }
        raw.send(&bytes);
        assert!(raw.read_text() == text);
    });
}

// ---- §5.6 and §8.1: UTF-8 -------------------------------------------------------------

#[test]
fn invalid_utf8_text_gets_1007() {
    with_server(config(), |addr| {
        for bad in [
            &b"\xff"[..],
            b"\x80",                 // lone continuation byte
            b"\xc0\xaf",             // overlong '/'
            b"\xe0\x80\xaf",         // overlong, three bytes
            b"\xed\xa0\x80",         // UTF-16 surrogate
            b"\xf4\x90\x80\x80",     // above U+10FFFF
            b"\xf8\x88\x80\x80\x80", // five-byte form
            b"a\xc3",                // cut off at the end of the message
            b"ok \xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
        ] {
            expect_failure(addr, &client_frame(true, op::TEXT, bad), 1007);
        }
        // Cut off at the end of a fragmented message.
        expect_failure(
            addr,
            &concat(&[
                client_frame(false, op::TEXT, b"abc"),
                client_frame(true, op::CONTINUATION, b"\xe2\x82"),
            ]),
            1007,
        );
    });
}

#[test]
fn boundary_code_points_are_valid_utf8() {
    with_echo(|raw| {
        for good in [
            "\u{0}",
            "\u{7f}",
            "\u{80}",
            "\u{7ff}",
            "\u{800}",
            "\u{d7ff}",
            "\u{e000}",
            "\u{fffd}",
            "\u{ffff}",
            "\u{10000}",
            "\u{10ffff}",
        ] {
            raw.send_frame(true, op::TEXT, good.as_bytes());
            assert_eq!(raw.read_text(), good);
        }
    });
}

#[test]
fn invalid_utf8_in_a_later_fragment_fails_before_the_final_fragment() {
    with_echo(|raw| {
        raw.send_frame(false, op::TEXT, "hello ".as_bytes());
        raw.send_frame(false, op::CONTINUATION, "wörld ".as_bytes());
        raw.send_frame(false, op::CONTINUATION, b"bad \xff here");
        // The final fragment is never sent: the verdict must not wait for it.
        raw.expect_close_then_eof(1007);
    });
}

#[test]
fn invalid_utf8_fails_before_the_rest_of_the_frame_arrives() {
    with_server(config(), |addr| {
        for (bad, at) in [
            (&b"ab\xffcdefghijklmnopqrstuvwxyz"[..], 3),
            (&b"ab\xed\xa0cdefghijklmnopqrstuvwxyz"[..], 4), // surrogate, known at its 2nd byte
            (&b"ab\xf4\x90cdefghijklmnopqrstuvwxyz"[..], 4), // above U+10FFFF, same
        ] {
            let mut raw = Raw::websocket(addr, "/echo");
            let frame = client_frame(true, op::TEXT, bad);
            // Header (2 bytes + 4 of mask), then the payload up to the bad byte.
            raw.send(&frame[..6 + at]);
            raw.expect_close_then_eof(1007);
        }
    });
}

#[test]
fn a_valid_message_before_a_bad_frame_is_echoed_first() {
    with_echo(|raw| {
        raw.send(&concat(&[
            client_frame(true, op::TEXT, b"fine"),
            client_frame(true, op::BINARY, b"\xff is fine in binary"),
            client_frame(true, op::TEXT, b"not \xff fine"),
            client_frame(true, op::TEXT, b"never echoed"),
        ]));
        let (before, code) = raw.read_until_close();
        let echoed: Vec<(u8, &[u8])> = before
            .iter()
            .map(|f| (f.opcode, f.payload.as_slice()))
            .collect();
        assert_eq!(
            echoed,
            [
                (op::TEXT, &b"fine"[..]),
                (op::BINARY, &b"\xff is fine in binary"[..])
            ]
        );
        assert_eq!(code, Some(1007));
        raw.expect_eof();
    });
}

// ---- §5.5.1 and §7.4: closing ------------------------------------------------------------

#[test]
fn valid_close_codes_are_echoed() {
    with_server(config(), |addr| {
        for code in (1000..=1003)
            .chain(1007..=1014)
            .chain([3000, 3999, 4000, 4999])
        {
            let mut raw = Raw::websocket(addr, "/echo");
            raw.send_frame(true, op::CLOSE, &close_payload(code, b"reason"));
            raw.expect_close_then_eof_for(&format!("close code {code} is valid"), code);
        }
    });
}

#[test]
fn invalid_close_codes_get_1002() {
    with_server(config(), |addr| {
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let mut raw = Raw::websocket(addr, "/echo");
            raw.send_frame(true, op::CLOSE, &close_payload(code, b""));
            raw.expect_close_then_eof_for(&format!("close code {code} is invalid"), 1002);
        }
    });
}

#[test]
fn one_byte_close_payload_gets_1002() {
    with_server(config(), |addr| {
        expect_failure(addr, &client_frame(true, op::CLOSE, &[0x03]), 1002);
    });
}

#[test]
fn close_reason_with_invalid_utf8_gets_1007() {
    with_server(config(), |addr| {
        expect_failure(
            addr,
            &client_frame(true, op::CLOSE, &close_payload(1000, b"\xce\xba\xff")),
            1007,
        );
        // A reason cut in the middle of a character is just as invalid.
        expect_failure(
            addr,
            &client_frame(true, op::CLOSE, &close_payload(1000, b"caf\xc3")),
            1007,
        );
    });
}

#[test]
fn close_is_answered_once_and_nothing_is_sent_after_it() {
    with_server(config(), |addr| {
        let mut raw = Raw::websocket(addr, "/echo");
        raw.send(&concat(&[
            client_frame(true, op::PING, b"before"),
            client_frame(true, op::CLOSE, &close_payload(1000, b"first")),
            client_frame(true, op::TEXT, b"after the close"),
            client_frame(true, op::PING, b"after"),
            client_frame(true, op::CLOSE, &close_payload(1000, b"second")),
        ]));
        raw.expect_pong(b"before");
        raw.expect_close_then_eof(1000);
        drop(raw);

        // The same when the frames after the close come in a later write.
        let mut raw = Raw::websocket(addr, "/echo");
        raw.send_frame(true, op::CLOSE, &close_payload(1000, b""));
        raw.expect_close(1000);
        // Ignore a failed write: the server may already have closed.
        let _ = std::io::Write::write_all(
            &mut raw.stream,
            &concat(&[
                client_frame(true, op::TEXT, b"late"),
                client_frame(true, op::CLOSE, &close_payload(1000, b"")),
            ]),
        );
        raw.expect_eof();
    });
}

// ---- §10.4: limits -----------------------------------------------------------------------

#[test]
fn oversized_message_is_refused_from_its_header() {
    with_server(config_with(|c| c.max_message_size = 1000), |addr| {
        // A header announcing 2000 bytes; no payload is ever sent.
        let frame = client_frame(true, op::TEXT, &[b'a'; 2000]);
        assert_eq!(frame[1], 0x80 | 126);
        expect_failure(addr, &frame[..8], 1009);
        // A 64-bit length far beyond memory: refused, not allocated.
        let header = [0x82, 0x80 | 127, 0, 0, 0x10, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        expect_failure(addr, &header, 1009);
        // Fragments that only add up to too much: refused at the second header.
        let mut raw = Raw::websocket(addr, "/echo");
        raw.send_frame(false, op::BINARY, &[0; 600]);
        let second = client_frame(true, op::CONTINUATION, &[0; 600]);
        raw.send(&second[..8]);
        raw.expect_close_then_eof(1009);
        // Exactly the limit is fine.
        let mut raw = Raw::websocket(addr, "/echo");
        raw.send_frame(true, op::BINARY, &[9; 1000]);
        let echo = raw.read_frame().unwrap();
        assert_eq!((echo.opcode, echo.payload.len()), (op::BINARY, 1000));
    });
}

// ---- §7.1.1 and §7.1.7: who closes TCP, and when -------------------------------------------

#[test]
fn peer_that_never_answers_the_servers_close_is_dropped_after_close_timeout() {
    // The shutdown would wait a minute; only the close timeout can end this
    // connection within the read timeout.
    let config = config_with(|c| {
        c.close_timeout = Duration::from_millis(300);
        c.shutdown_timeout = Duration::from_secs(60);
    });
    with_stoppable_server(config, |addr, server| {
        let mut raw = Raw::websocket(addr, "/echo");
        raw.expect_echo("up");
        server.stop();
        raw.expect_close(1001);
        // We never answer the close; the server drops us all the same.
        raw.expect_eof();
    });
}

#[test]
fn server_closes_tcp_first_after_the_closing_handshake() {
    with_echo(|raw| {
        raw.send_frame(true, op::CLOSE, &close_payload(1000, b""));
        assert_eq!(raw.read_until_close().1, Some(1000));
        // §7.1.1: the server closes first; the client sees EOF while its own side
        // is still open.
        raw.expect_eof();
    });
}

/// Waits until the server holds no WebSocket or closing connection.
fn all_closed(addr: SocketAddr) -> bool {
    eventually(READ_TIMEOUT, || {
        metric(addr, "loopchat_connections_open{phase=\"websocket\"}") == 0
            && metric(addr, "loopchat_connections_open{phase=\"closing\"}") == 0
    })
}

#[test]
fn peer_that_keeps_tcp_open_after_the_closing_handshake_is_dropped_after_close_timeout() {
    let config = config_with(|c| c.close_timeout = Duration::from_millis(300));
    with_server(config, |addr| {
        let mut raw = Raw::websocket(addr, "/echo");
        raw.send_frame(true, op::CLOSE, &close_payload(1000, b""));
        raw.expect_close_then_eof(1000);
        // We got the server's FIN but keep our side open (no FIN, no reset).
        assert!(
            all_closed(addr),
            "the connection is still open long after --close-timeout"
        );
    });
}

#[test]
fn peer_that_keeps_tcp_open_after_a_protocol_error_is_dropped_after_close_timeout() {
    let config = config_with(|c| c.close_timeout = Duration::from_millis(300));
    with_server(config, |addr| {
        let mut raw = Raw::websocket(addr, "/echo");
        raw.send(&[0x81, 0x00]); // unmasked
        raw.expect_close_then_eof(1002);
        assert!(
            all_closed(addr),
            "the connection is still open long after --close-timeout"
        );
    });
}
