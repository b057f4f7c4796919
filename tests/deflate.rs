//! permessage-deflate (RFC 7692) over real sockets: the negotiation as a client
//! sees it in the 101, compressed messages in (limits, bombs, corrupt data, RSV1
//! where it does not belong), compressed replies and broadcasts out, and the
//! `/metrics` counters.
//!
//! tungstenite cannot do permessage-deflate, so the client here is the raw one of
//! `common`, with `flate2` (a dev-dependency) doing the client's half of §7.2:
//! raw DEFLATE, a sync flush, the trailing `00 00 ff ff` removed on sending and
//! appended back before inflating.
//!
//! Built without the `deflate` feature the server never inflates, so there is
//! nothing here to test.
#![cfg(feature = "deflate")]

mod common;
use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

/// What the server always answers an acceptable offer with (before any
/// `server_max_window_bits`).
const BOTH: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
/// Chromium's offer.
const CHROMIUM: &str = "permessage-deflate; client_max_window_bits";
/// Firefox's offer.
const FIREFOX: &str = "permessage-deflate";
/// The base of Autobahn's 13.x offers.
const AUTOBAHN: &str = "permessage-deflate; client_no_context_takeover; client_max_window_bits";
/// RSV1: "Per-Message Compressed".
const RSV1: u8 = 0x40;
/// What §7.2.1 removes from the end of a compressed message.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The message size limit of the bomb tests on `/echo`.
const LIMIT: usize = 64 * 1024;

// ---- The client's half of §7.2 -------------------------------------------------

/// `message` compressed as §7.2.1 says: raw DEFLATE at `level` from a fresh
/// state, ended by a sync flush whose `00 00 ff ff` is removed.
fn deflate(message: &[u8], level: u32) -> Vec<u8> {
    let mut compress = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(message.len() / 2 + 64);
    loop {
        let consumed = compress.total_in() as usize;
        compress
            .compress_vec(&message[consumed..], &mut out, FlushCompress::Sync)
            .expect("deflate");
        if compress.total_in() as usize == message.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    assert!(
        out.ends_with(&SYNC_TAIL),
        "a sync flush ends with 00 00 ff ff"
    );
    out.truncate(out.len() - SYNC_TAIL.len());
    out
}

/// A payload the server compressed, inflated with a window of `window_bits` (as
/// a client that asked for `server_max_window_bits` would): §7.2.2.
fn inflate(payload: &[u8], window_bits: u8) -> Vec<u8> {
    let mut decompress = Decompress::new_with_window_bits(false, window_bits);
    let mut input = payload.to_vec();
    input.extend_from_slice(&SYNC_TAIL);
    let mut out = Vec::with_capacity(payload.len() * 4 + 64);
    loop {
        let consumed = decompress.total_in() as usize;
        let status = decompress
            .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            .unwrap_or_else(|e| panic!("the server's compressed payload does not inflate: {e}"));
        let done = decompress.total_in() as usize == input.len() && out.len() < out.capacity();
        if done || status == Status::StreamEnd {
            return out;
        }
        out.reserve(out.capacity().max(64));
    }
}

/// Whether `payload` inflates (to a client's flate2), and to how many bytes.
fn inflates(payload: &[u8]) -> Result<usize, flate2::DecompressError> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&SYNC_TAIL);
    let mut out = Vec::with_capacity(1 << 16);
    Decompress::new(false).decompress_vec(&input, &mut out, FlushDecompress::Sync)?;
    Ok(out.len())
}

/// 16 MiB of zeros, compressed at level 9: about 16 KiB on the wire. Made once
/// per test binary (it takes a moment in a debug build).
fn bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let bomb = deflate(&vec![0u8; 16 << 20], 9);
        assert!(bomb.len() < 20 * 1024, "bomb is {} bytes", bomb.len());
        bomb
    })
}

/// English-like text of exactly `len` bytes (ASCII), which compresses as chat
/// does: well, but not to nothing.
fn english(len: usize) -> String {
    const WORDS: &[&str] = &[
        "the", "server", "reads", "every", "message", "once", "and", "sends", "it", "to", "each",
        "member", "of", "room", "who", "is", "still", "there", "when", "a", "new", "frame",
        "arrives", "from", "loop", "quickly", "without", "threads", "or", "locks",
    ];
    let mut s = String::with_capacity(len + 16);
    let mut i = 0usize;
    while s.len() < len {
        // A cheap deterministic shuffle, so the text does not repeat every 30 words.
        let w = WORDS[(i * 7 + i / 5 + i / 31) % WORDS.len()];
        s.push_str(w);
        s.push(if i % 11 == 10 { '.' } else { ' ' });
        i += 1;
    }
    s.truncate(len);
    s
}

/// Bytes that do not compress (a xorshift stream).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ---- Connections ---------------------------------------------------------------

/// A server config with permessage-deflate on, and `change` applied.
fn deflate_config(change: impl FnOnce(&mut loopchat::Config)) -> loopchat::Config {
    config_with(|c| {
        c.permessage_deflate = true;
        change(c);
    })
}

/// Upgrades on `path` with `extra` header lines; panics unless the answer is
/// 101. Returns the connection and every `Sec-WebSocket-Extensions` value of the
/// response, in order.
fn upgrade(addr: SocketAddr, path: &str, extra: &str) -> (Raw, Vec<String>) {
    let mut raw = Raw::connect(addr);
    let head = raw.request(&upgrade_request(path, extra));
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "upgrade with {extra:?} refused: {head}"
    );
    let extensions = head
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("Sec-WebSocket-Extensions")
                .then(|| value.trim().to_string())
        })
        .collect();
    (raw, extensions)
}

/// `Sec-WebSocket-Extensions` header lines, one per offer line.
fn offer_lines(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| format!("Sec-WebSocket-Extensions: {l}\r\n"))
        .collect()
}

/// A connection on `path` that agreed to permessage-deflate with `offer`; the
/// agreed response must be `expected`.
fn deflate_ws(addr: SocketAddr, path: &str, offer: &str, expected: &str) -> Raw {
    let (raw, extensions) = upgrade(addr, path, &offer_lines(&[offer]));
    assert_eq!(extensions, [expected], "offer {offer:?}");
    raw
}

/// A connection to `/echo` with Chromium's offer, agreed.
fn echo_ws(addr: SocketAddr) -> Raw {
    deflate_ws(addr, "/echo", CHROMIUM, BOTH)
}

/// Sends `message` compressed, in one frame with RSV1.
fn send_compressed(raw: &mut Raw, opcode: u8, message: &[u8]) {
    raw.send_frame(true, RSV1 | opcode, &deflate(message, 6));
}

/// The next frame, which must be a whole data frame of `opcode`; whether it
/// came compressed, and its payload inflated if it did.
#[track_caller]
fn read_message(raw: &mut Raw, opcode: u8) -> (bool, Vec<u8>) {
    let (compressed, frame) = raw
        .read_frame_rsv1()
        .expect("a frame, not the end of the connection");
    assert_eq!(frame.opcode, opcode, "{frame:?}");
    assert!(frame.fin, "a whole message in one frame: {frame:?}");
    if compressed {
        (true, inflate(&frame.payload, 15))
    } else {
        (false, frame.payload)
    }
}

// ---- Negotiation ---------------------------------------------------------------

/// Autobahn's 13.x offers (cases 13.1 to 13.7) and the `server_max_window_bits`
/// each must get back.
fn autobahn_offers() -> Vec<(String, String, Option<u8>)> {
    let snct = format!("{AUTOBAHN}; server_no_context_takeover");
    vec![
        ("13.1".into(), AUTOBAHN.to_string(), None),
        ("13.2".into(), snct.clone(), None),
        (
            "13.3".into(),
            format!("{AUTOBAHN}; server_max_window_bits=9"),
            Some(9),
        ),
        (
            "13.4".into(),
            format!("{AUTOBAHN}; server_max_window_bits=15"),
            Some(15),
        ),
        (
            "13.5".into(),
            format!("{snct}; server_max_window_bits=9"),
            Some(9),
        ),
        (
            "13.6".into(),
            format!("{snct}; server_max_window_bits=15"),
            Some(15),
        ),
        (
            "13.7".into(),
            format!("{snct}; server_max_window_bits=9, {snct}, {AUTOBAHN}"),
            Some(9),
        ),
    ]
}

/// Offers that must be declined: the upgrade goes on, without the extension.
const DECLINED: &[&str] = &[
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=08",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=",
    "permessage-deflate; server_max_window_bits=abc",
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; client_max_window_bits=16",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; client_no_context_takeover=true",
    "permessage-deflate; unknown_parameter",
    "permessage-deflate; x-custom=1",
    "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
    "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
    "x-webkit-deflate-frame",
    "deflate-frame; no_context_takeover",
    "permessage-foo",
];

/// After an agreement, a compressed "Hello" is taken and echoed (plain: it is
/// under the minimum size); after none, RSV1 fails the connection with 1002. So
/// the 101 and what the server then does agree.
#[track_caller]
fn check_rsv1_matches(raw: &mut Raw, agreed: bool, case: &str) {
    send_compressed(raw, op::TEXT, b"Hello");
    if agreed {
        let (compressed, echo) = read_message(raw, op::TEXT);
        assert_eq!((compressed, &echo[..]), (false, &b"Hello"[..]), "{case}");
    } else {
        raw.expect_close_then_eof_for(case, 1002);
    }
}

#[test]
fn browsers_offers_get_the_exact_answer() {
    with_server(deflate_config(|_| {}), |addr| {
        for (case, offer) in [("chromium", CHROMIUM), ("firefox", FIREFOX)] {
            let (mut raw, extensions) = upgrade(addr, "/echo", &offer_lines(&[offer]));
            assert_eq!(extensions, [BOTH], "{case}");
            assert!(
                !extensions[0].contains("client_max_window_bits"),
                "{case}: client_max_window_bits is never answered"
            );
            check_rsv1_matches(&mut raw, true, case);
        }
    });
}

#[test]
fn every_autobahn_13_offer_is_agreed_as_the_rfc_says() {
    with_server(deflate_config(|_| {}), |addr| {
        for (case, offer, bits) in autobahn_offers() {
            let (mut raw, extensions) = upgrade(addr, "/echo", &offer_lines(&[&offer]));
            let expected = match bits {
                Some(n) => format!("{BOTH}; server_max_window_bits={n}"),
                None => BOTH.to_string(),
            };
            assert_eq!(extensions, [expected], "case {case}: {offer}");
            check_rsv1_matches(&mut raw, true, &case);
        }
    });
}

#[test]
fn invalid_and_duplicate_parameters_are_declined_not_refused() {
    with_server(deflate_config(|_| {}), |addr| {
        for offer in DECLINED {
            let (mut raw, extensions) = upgrade(addr, "/echo", &offer_lines(&[offer]));
            assert_eq!(extensions, Vec::<String>::new(), "{offer}");
            check_rsv1_matches(&mut raw, false, offer);
            // Followed by an acceptable offer, on the same line, that one wins.
            let then_good = format!("{offer}, {FIREFOX}");
            let (mut raw, extensions) = upgrade(addr, "/echo", &offer_lines(&[&then_good]));
            assert_eq!(extensions, [BOTH], "{then_good}");
            check_rsv1_matches(&mut raw, true, &then_good);
        }
    });
}

#[test]
fn offers_over_several_header_lines_are_one_list() {
    with_server(deflate_config(|_| {}), |addr| {
        let bits = |n: u8| format!("{BOTH}; server_max_window_bits={n}");
        let cases: &[(&[&str], Option<String>)] = &[
            (
                &[
                    "foo; bar=1",
                    "permessage-deflate; server_max_window_bits=10",
                ],
                Some(bits(10)),
            ),
            (
                &[
                    "permessage-deflate; bogus",
                    "permessage-deflate; server_max_window_bits=12",
                ],
                Some(bits(12)),
            ),
            // The first acceptable offer wins, whichever line it is on.
            (
                &["permessage-deflate; server_max_window_bits=11", FIREFOX],
                Some(bits(11)),
            ),
            (
                &["x-webkit-deflate-frame", "", CHROMIUM],
                Some(BOTH.to_string()),
            ),
            // A quoted value is unquoted; a comma inside quotes splits nothing.
            (
                &[
                    "foo; q=\"a,b\"",
                    "permessage-deflate; server_max_window_bits=\"13\"",
                ],
                Some(bits(13)),
            ),
            (
                &[
                    "permessage-deflate; unknown",
                    "permessage-deflate; server_max_window_bits=99",
                ],
                None,
            ),
            // An unclosed quote declines the rest of its line, not the next line.
            (
                &["permessage-deflate; server_max_window_bits=\"9, permessage-deflate"],
                None,
            ),
            (
                &[
                    "permessage-deflate; server_max_window_bits=\"9, permessage-deflate",
                    "permessage-deflate; server_max_window_bits=14",
                ],
                Some(bits(14)),
            ),
        ];
        for (lines, expected) in cases {
            let (mut raw, extensions) = upgrade(addr, "/echo", &offer_lines(lines));
            let expected: Vec<String> = expected.iter().cloned().collect();
            assert_eq!(extensions, expected, "{lines:?}");
            check_rsv1_matches(&mut raw, !expected.is_empty(), &format!("{lines:?}"));
        }
    });
}

#[test]
fn safari_15_0_to_15_3_gets_no_compression() {
    let safari = |v: &str| {
        format!(
            "User-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 \
             (KHTML, like Gecko) Version/{v} Safari/605.1.15\r\n"
        )
    };
    with_server(deflate_config(|_| {}), |addr| {
        for (version, agreed) in [
            ("15.0", false),
            ("15.3", false),
            ("15.4", true),
            ("16.1", true),
        ] {
            let extra = safari(version) + &offer_lines(&[CHROMIUM]);
            let (mut raw, extensions) = upgrade(addr, "/echo", &extra);
            let expected: Vec<String> = agreed.then(|| BOTH.to_string()).into_iter().collect();
            assert_eq!(extensions, expected, "Safari {version}");
            check_rsv1_matches(&mut raw, agreed, version);
        }
    });
}

#[test]
fn with_the_flag_off_no_offer_is_ever_answered() {
    with_server(config(), |addr| {
        let mut offers: Vec<String> = vec![CHROMIUM.into(), FIREFOX.into()];
        offers.extend(autobahn_offers().into_iter().map(|(_, offer, _)| offer));
        offers.extend(DECLINED.iter().map(|s| s.to_string()));
        for offer in &offers {
            for path in ["/echo", "/chat/off"] {
                let (mut raw, extensions) = upgrade(addr, path, &offer_lines(&[offer]));
                assert_eq!(extensions, Vec::<String>::new(), "{path}: {offer}");
                if path == "/echo" {
                    check_rsv1_matches(&mut raw, false, offer);
                }
            }
        }
        assert_eq!(metric(addr, "loopchat_deflate_connections"), 0);
        assert_eq!(metric(addr, "loopchat_inflate_calls_total"), 0);
    });
}

#[test]
fn rsv1_without_an_offer_is_a_protocol_error() {
    with_server(deflate_config(|_| {}), |addr| {
        let (mut raw, extensions) = upgrade(addr, "/echo", "");
        assert!(extensions.is_empty());
        check_rsv1_matches(&mut raw, false, "no offer");
        let (mut raw, _) = upgrade(addr, "/chat/plain", "");
        // The welcome and the join notice first.
        assert!(raw.read_text().contains("\"welcome\""));
        assert!(raw.read_text().contains("\"join\""));
        raw.send_frame(true, RSV1 | op::TEXT, &deflate(b"Hello", 6));
        raw.expect_close_then_eof(1002);
    });
}

// ---- Receiving: limits and bombs ---------------------------------------------

#[test]
fn a_message_inflating_to_exactly_the_limit_is_echoed_one_byte_more_is_1009() {
    with_server(deflate_config(|c| c.max_message_size = LIMIT), |addr| {
        for (kind, message) in [
            ("zeros", vec![0u8; LIMIT]),
            ("text", english(LIMIT).into_bytes()),
        ] {
            let mut raw = echo_ws(addr);
            send_compressed(&mut raw, op::BINARY, &message);
            let (compressed, echo) = read_message(&mut raw, op::BINARY);
            assert!(
                compressed,
                "{kind}: a 64 KiB compressible echo goes out compressed"
            );
            assert_eq!(echo.len(), LIMIT, "{kind}");
            assert!(echo == message, "{kind}: the echo differs");

            let mut over = message.clone();
            over.push(b'x');
            let mut raw = echo_ws(addr);
            send_compressed(&mut raw, op::BINARY, &over);
            raw.expect_close_then_eof_for(kind, 1009);
        }
        // Incompressible at the limit: a little larger on the wire than the limit
        // once compressed (stored blocks), and still taken; echoed plain. (Level
        // 1 is `a_fast_level_incompressible_message_at_the_limit_is_echoed`.)
        for level in [0, 2, 6, 9] {
            let random = noise(LIMIT);
            let wire = deflate(&random, level);
            assert!(wire.len() > LIMIT, "level {level}: {} bytes", wire.len());
            let mut raw = echo_ws(addr);
            raw.send_frame(true, RSV1 | op::BINARY, &wire);
            assert_eq!(
                read_message(&mut raw, op::BINARY),
                (false, random),
                "level {level}"
            );
        }
        // A plain message at the limit is fine on a deflate connection too.
        let mut raw = echo_ws(addr);
        raw.send_frame(true, op::BINARY, &noise(LIMIT));
        assert_eq!(read_message(&mut raw, op::BINARY).1, noise(LIMIT));
    });
}

/// `Receiver::start_frame` (src/message.rs) lets a compressed message's wire
/// bytes pass the limit by `limit / 1024 + 64`, "DEFLATE's worst-case overhead
/// (stored blocks)". But stored blocks are only zlib's choice: zlib-ng's and
/// zlib-rs's level 1 (deflate_quick, also this server's own default level) codes
/// every block with the fixed Huffman tables, up to 9 bits a literal, so an
/// incompressible message grows by about 5.5 % (12.5 % at worst). 64 KiB of
/// random bytes at flate2/zlib-rs level 1 are 69,122 bytes on the wire, and the
/// server closes with 1009 "message exceeds the size limit" a message that
/// inflates to exactly its limit; any incompressible message above ~95 % of the
/// limit from such a client is refused.
#[test]
fn a_fast_level_incompressible_message_at_the_limit_is_echoed() {
    with_server(deflate_config(|c| c.max_message_size = LIMIT), |addr| {
        let random = noise(LIMIT);
        let wire = deflate(&random, 1);
        assert_eq!(wire.len(), 69_122, "flate2 with zlib-rs, level 1");
        let mut raw = echo_ws(addr);
        raw.send_frame(true, RSV1 | op::BINARY, &wire);
        assert_eq!(read_message(&mut raw, op::BINARY), (false, random));
    });
}

#[test]
fn a_16_mib_bomb_is_refused_with_1009_on_echo_and_chat() {
    let config = deflate_config(|c| {
        c.max_message_size = LIMIT;
        c.max_chat_message_size = LIMIT;
    });
    with_server(config, |addr| {
        let mut raw = echo_ws(addr);
        raw.send_frame(true, RSV1 | op::BINARY, bomb());
        raw.expect_close_then_eof(1009);

        let mut raw = deflate_ws(addr, "/chat/bombs", FIREFOX, BOTH);
        assert!(raw.read_text().contains("\"welcome\""));
        assert!(raw.read_text().contains("\"join\""));
        raw.send_frame(true, RSV1 | op::TEXT, bomb());
        raw.expect_close_then_eof(1009);
        assert_eq!(metric(addr, "loopchat_compressed_messages_in_total"), 2);
        assert_eq!(metric(addr, "loopchat_inflate_calls_total"), 2);
    });
}

#[test]
fn a_bomb_over_many_continuation_frames_is_1009() {
    with_server(deflate_config(|c| c.max_message_size = LIMIT), |addr| {
        let bomb = bomb();
        let pieces: Vec<&[u8]> = bomb.chunks(64).collect();
        assert!(pieces.len() > 200, "{} pieces", pieces.len());
        let mut wire = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let fin = i + 1 == pieces.len();
            let opcode = if i == 0 {
                RSV1 | op::BINARY
            } else {
                op::CONTINUATION
            };
            wire.extend(client_frame(fin, opcode, piece));
        }
        let mut raw = echo_ws(addr);
        raw.send(&wire);
        raw.expect_close_then_eof(1009);

        // The same way of sending, with a message that fits, is echoed.
        let message = english(3000);
        let compressed = deflate(message.as_bytes(), 6);
        let mut raw = echo_ws(addr);
        let pieces: Vec<&[u8]> = compressed.chunks(100).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let fin = i + 1 == pieces.len();
            let opcode = if i == 0 {
                RSV1 | op::TEXT
            } else {
                op::CONTINUATION
            };
            raw.send_frame(fin, opcode, piece);
            if i == 1 {
                // A control frame between the fragments: answered at once, and it
                // (RSV1 clear) does not disturb the compressed message.
                raw.send_frame(true, op::PING, b"mid");
            }
        }
        raw.expect_pong(b"mid");
        let (_, echo) = read_message(&mut raw, op::TEXT);
        assert!(
            echo == message.as_bytes(),
            "fragmented compressed echo differs"
        );
    });
}

#[test]
fn a_bomb_costs_the_server_less_than_1_mib() {
    // The binary in a child process, so its memory is its own.
    let (server, addr) = spawn_binary(&["--permessage-deflate", "--max-message-size", "64KiB"]);
    let pid = server.pid();
    // Warm up: the inflater, the compressor (an echo goes back compressed) and
    // the buffers of an ordinary compressed exchange exist before the baseline.
    for _ in 0..3 {
        let mut raw = echo_ws(addr);
        let message = english(4096);
        send_compressed(&mut raw, op::TEXT, message.as_bytes());
        let (compressed, echo) = read_message(&mut raw, op::TEXT);
        assert!(compressed && echo == message.as_bytes());
        raw.send_frame(true, op::CLOSE, &close_payload(1000, b""));
        raw.expect_close_then_eof(1000);
    }
    wait_until_empty(addr, Duration::from_secs(5)).unwrap();
    let (rss_before, peak_before) = (
        proc_status_kib(Some(pid), "VmRSS"),
        proc_status_kib(Some(pid), "VmHWM"),
    );

    // Three bombs, one after the other, and one spread over fragments.
    for _ in 0..3 {
        let mut raw = echo_ws(addr);
        raw.send_frame(true, RSV1 | op::BINARY, bomb());
        raw.expect_close_then_eof(1009);
    }
    let mut raw = echo_ws(addr);
    let pieces: Vec<&[u8]> = bomb().chunks(1000).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let opcode = if i == 0 {
            RSV1 | op::BINARY
        } else {
            op::CONTINUATION
        };
        raw.send_frame(i + 1 == pieces.len(), opcode, piece);
    }
    raw.expect_close_then_eof(1009);
    drop(raw); // the server waits for our end of TCP before it forgets the connection
    wait_until_empty(addr, Duration::from_secs(5)).unwrap();

    let (rss_after, peak_after) = (
        proc_status_kib(Some(pid), "VmRSS"),
        proc_status_kib(Some(pid), "VmHWM"),
    );
    eprintln!(
        "server memory around 4 bombs of 16 MiB each: VmRSS {rss_before} -> {rss_after} KiB, \
         VmHWM {peak_before} -> {peak_after} KiB"
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 1024,
        "VmRSS grew from {rss_before} to {rss_after} KiB"
    );
    // The peak too: nothing was inflated whole and freed again.
    assert!(
        peak_after.saturating_sub(peak_before) < 1024,
        "VmHWM grew from {peak_before} to {peak_after} KiB"
    );
    assert_eq!(metric(addr, "loopchat_closes_sent_total{code=\"1009\"}"), 4);
}

// ---- Receiving: what is refused ------------------------------------------------

#[test]
fn corrupt_deflate_data_is_1007() {
    with_server(deflate_config(|_| {}), |addr| {
        let cases: &[(&str, &[u8])] = &[
            ("0xff x 32", &[0xff; 32]),
            ("reserved block type 11", &[0x07, 0x00, 0x00]),
            (
                "stored block with LEN != ~NLEN",
                &[0x00, 0x05, 0x00, 0x00, 0x00],
            ),
            (
                "distance too far back",
                // A fixed-Huffman block whose first code is a match (length 3,
                // distance 1): there is nothing before it to refer to.
                &[0x02, 0x02, 0x00],
            ),
        ];
        for (case, payload) in cases {
            assert!(inflates(payload).is_err(), "{case}: flate2 takes it");
            for opcode in [op::TEXT, op::BINARY] {
                let mut raw = echo_ws(addr);
                raw.send_frame(true, RSV1 | opcode, payload);
                raw.expect_close_then_eof_for(case, 1007);
            }
        }
    });
}

#[test]
fn compressed_text_that_is_not_utf8_is_1007_binary_is_fine() {
    with_server(deflate_config(|_| {}), |addr| {
        let bad = [b'a', 0xff, 0xfe, b'b'];
        let mut raw = echo_ws(addr);
        send_compressed(&mut raw, op::BINARY, &bad);
        assert_eq!(read_message(&mut raw, op::BINARY), (false, bad.to_vec()));
        send_compressed(&mut raw, op::TEXT, &bad);
        raw.expect_close_then_eof(1007);
        // Split inside a character on the wire is not an error: only the
        // inflated message is text.
        let mut raw = echo_ws(addr);
        let euro = deflate("€uro".as_bytes(), 0);
        raw.send_frame(false, RSV1 | op::TEXT, &euro[..euro.len() - 2]);
        raw.send_frame(true, op::CONTINUATION, &euro[euro.len() - 2..]);
        assert_eq!(
            read_message(&mut raw, op::TEXT),
            (false, "€uro".as_bytes().to_vec())
        );
    });
}

#[test]
fn rsv1_on_a_continuation_or_a_control_frame_is_1002() {
    with_server(deflate_config(|_| {}), |addr| {
        let mut raw = echo_ws(addr);
        raw.send_frame(false, op::TEXT, b"plain ");
        raw.send_frame(
            true,
            RSV1 | op::CONTINUATION,
            &deflate(b"then compressed", 6),
        );
        raw.expect_close_then_eof_for("continuation", 1002);

        let mut raw = echo_ws(addr);
        let start = deflate(b"compressed", 6);
        raw.send_frame(false, RSV1 | op::TEXT, &start);
        raw.send_frame(true, RSV1 | op::CONTINUATION, &[0x00]);
        raw.expect_close_then_eof_for("RSV1 on first and continuation", 1002);

        for (case, opcode) in [("ping", op::PING), ("pong", op::PONG), ("close", op::CLOSE)] {
            let mut raw = echo_ws(addr);
            raw.send_frame(true, RSV1 | opcode, b"");
            raw.expect_close_then_eof_for(case, 1002);
        }
        // RSV2 and RSV3 stay reserved with the extension.
        for rsv in [0x20, 0x10] {
            let mut raw = echo_ws(addr);
            raw.send_frame(true, rsv | op::TEXT, b"x");
            raw.expect_close_then_eof_for(&format!("{rsv:#x}"), 1002);
        }
    });
}

// ---- Sending: echo -------------------------------------------------------------

#[test]
fn echo_compresses_what_is_worth_it() {
    with_server(deflate_config(|_| {}), |addr| {
        let mut raw = echo_ws(addr);
        // 1 KiB of compressible text, sent compressed: back compressed.
        let text = english(1024);
        send_compressed(&mut raw, op::TEXT, text.as_bytes());
        let (compressed, frame) = raw.read_frame_rsv1().unwrap();
        assert!(compressed, "a 1 KiB compressible echo has RSV1");
        assert!(
            frame.payload.len() < 1024 / 2,
            "{} bytes",
            frame.payload.len()
        );
        assert!(
            !frame.payload.ends_with(&SYNC_TAIL),
            "§7.2.1: the tail is removed"
        );
        assert!(inflate(&frame.payload, 15) == text.as_bytes());
        // The same, sent plain: the reply is judged on its own, so compressed too.
        raw.send_frame(true, op::TEXT, text.as_bytes());
        assert_eq!(
            read_message(&mut raw, op::TEXT),
            (true, text.clone().into_bytes())
        );
        // 10 bytes, sent compressed or plain: back plain.
        send_compressed(&mut raw, op::TEXT, b"0123456789");
        assert_eq!(
            read_message(&mut raw, op::TEXT),
            (false, b"0123456789".to_vec())
        );
        raw.send_frame(true, op::TEXT, b"ten bytes!");
        assert_eq!(
            read_message(&mut raw, op::TEXT),
            (false, b"ten bytes!".to_vec())
        );
        // The default minimum, 256 bytes: 255 go plain, 256 compressed.
        for (len, compressed) in [(255, false), (256, true)] {
            let text = english(len);
            raw.send_frame(true, op::TEXT, text.as_bytes());
            assert_eq!(
                read_message(&mut raw, op::TEXT),
                (compressed, text.into_bytes()),
                "{len} bytes"
            );
        }
        // Incompressible: compressing would not shrink it, so plain.
        let random = noise(4096);
        send_compressed(&mut raw, op::BINARY, &random);
        assert_eq!(read_message(&mut raw, op::BINARY), (false, random));
        // Binary compressible: compressed.
        let zeros = vec![0u8; 2048];
        raw.send_frame(true, op::BINARY, &zeros);
        assert_eq!(read_message(&mut raw, op::BINARY), (true, zeros));
        // An empty compressed message (§7.2.3.6: the single octet 00).
        raw.send_frame(true, RSV1 | op::TEXT, &[0x00]);
        assert_eq!(read_message(&mut raw, op::TEXT), (false, Vec::new()));
    });
}

#[test]
fn rfc_7692_examples_are_understood() {
    with_server(deflate_config(|_| {}), |addr| {
        let mut raw = echo_ws(addr);
        let cases: &[(&str, &[u8])] = &[
            (
                "7.2.3.1 one compressed block",
                &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            ),
            (
                "7.2.3.3 one stored block",
                &[
                    0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
                ],
            ),
            (
                "7.2.3.4 BFINAL set",
                &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
            ),
            (
                "7.2.3.5 two blocks",
                &[
                    0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
                ],
            ),
        ];
        for (case, payload) in cases {
            raw.send_frame(true, RSV1 | op::TEXT, payload);
            assert_eq!(
                read_message(&mut raw, op::TEXT),
                (false, b"Hello".to_vec()),
                "{case}"
            );
        }
        // 7.2.3.1 split over two frames (§7.2.3.1's fragmented form).
        raw.send_frame(false, RSV1 | op::TEXT, &[0xf2, 0x48, 0xcd]);
        raw.send_frame(true, op::CONTINUATION, &[0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(read_message(&mut raw, op::TEXT), (false, b"Hello".to_vec()));
        assert_eq!(metric(addr, "loopchat_compressed_messages_in_total"), 5);
    });
}

#[test]
fn deflate_min_size_and_level_are_honoured() {
    let config = deflate_config(|c| {
        c.deflate_min_size = 1000;
        c.deflate_level = 9;
    });
    with_server(config, |addr| {
        let mut raw = echo_ws(addr);
        for (len, compressed) in [(999, false), (1000, true)] {
            let text = english(len);
            raw.send_frame(true, op::TEXT, text.as_bytes());
            assert_eq!(
                read_message(&mut raw, op::TEXT),
                (compressed, text.into_bytes())
            );
        }
        // Level 9: about what a client's level 9 makes, and clearly less than
        // level 1 (zlib-rs's level 1 uses the fixed Huffman codes only).
        let text = english(5000);
        raw.send_frame(true, op::TEXT, text.as_bytes());
        let (rsv1, frame) = raw.read_frame_rsv1().unwrap();
        assert!(rsv1);
        assert!(inflate(&frame.payload, 15) == text.as_bytes());
        let (l1, l9) = (
            deflate(text.as_bytes(), 1).len(),
            deflate(text.as_bytes(), 9).len(),
        );
        let got = frame.payload.len();
        assert!(
            got <= l9 + 16 && got < l1,
            "level 9 gave {got} bytes; L1 {l1}, L9 {l9}"
        );
    });
    with_server(deflate_config(|c| c.deflate_min_size = 0), |addr| {
        // With no minimum, even a short message goes compressed when that is smaller.
        let mut raw = echo_ws(addr);
        let text = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        raw.send_frame(true, op::TEXT, text.as_bytes());
        assert_eq!(
            read_message(&mut raw, op::TEXT),
            (true, text.as_bytes().to_vec())
        );
        // ...but not when it would grow.
        raw.send_frame(true, op::TEXT, b"ab");
        assert_eq!(read_message(&mut raw, op::TEXT), (false, b"ab".to_vec()));
    });
}

#[test]
fn a_plain_message_on_a_deflate_connection_is_echoed_plain() {
    with_server(deflate_config(|_| {}), |addr| {
        let mut raw = echo_ws(addr);
        for text in ["hello", "a plain message on a deflate connection", ""] {
            raw.send_frame(true, op::TEXT, text.as_bytes());
            assert_eq!(
                read_message(&mut raw, op::TEXT),
                (false, text.as_bytes().to_vec())
            );
        }
        // Plain fragments, then a ping in between: all plain.
        raw.send_frame(false, op::TEXT, b"frag");
        raw.send_frame(true, op::PING, b"p");
        raw.send_frame(true, op::CONTINUATION, b"ments");
        raw.expect_pong(b"p");
        assert_eq!(
            read_message(&mut raw, op::TEXT),
            (false, b"fragments".to_vec())
        );
        assert_eq!(metric(addr, "loopchat_compressed_messages_in_total"), 0);
        assert_eq!(metric(addr, "loopchat_inflate_calls_total"), 0);
        assert_eq!(metric(addr, "loopchat_compressed_frames_out_total"), 0);
        assert_eq!(metric(addr, "loopchat_deflate_connections"), 1);
    });
}

/// A connection to `/echo` that agreed to `server_max_window_bits=bits`.
fn echo_ws_with_window(addr: SocketAddr, bits: u8) -> Raw {
    let offer = format!("{FIREFOX}; server_max_window_bits={bits}");
    let expected = format!("{BOTH}; server_max_window_bits={bits}");
    deflate_ws(addr, "/echo", &offer, &expected)
}

/// Text with repeats 700 bytes apart, so that a compressor with a window
/// larger than the client allowed would be caught using it.
fn long_range_text(len: usize) -> String {
    english(700).repeat(len / 700 + 1)[..len].to_string()
}

#[test]
fn echo_honours_server_max_window_bits() {
    with_server(deflate_config(|_| {}), |addr| {
        for bits in 9u8..=15 {
            let mut raw = echo_ws_with_window(addr, bits);
            // As long as the window: compressed, and a client with only that
            // window inflates it.
            let fits = long_range_text(1 << bits);
            raw.send_frame(true, op::TEXT, fits.as_bytes());
            let (compressed, frame) = raw.read_frame_rsv1().unwrap();
            assert!(compressed, "bits {bits}: {} bytes", fits.len());
            assert!(
                inflate(&frame.payload, bits) == fits.as_bytes(),
                "bits {bits}"
            );
            // Longer than the window: plain, or compressed within the window.
            let long = long_range_text(8400);
            raw.send_frame(true, op::TEXT, long.as_bytes());
            let (compressed, frame) = raw.read_frame_rsv1().unwrap();
            let echo = if compressed {
                inflate(&frame.payload, bits)
            } else {
                frame.payload
            };
            assert!(echo == long.as_bytes(), "bits {bits}");
        }
    });
}

/// `Deflate::compress_reply` (src/server/compression.rs) applies `worth_it`'s
/// window-fit rule, which exists so that a broadcast's one window-15 frame can
/// be shared, to the echo's unicast reply too, although that reply is
/// compressed with the peer's own window (`Compressor::compress(.., bits, ..)`).
/// So a peer that asked for `server_max_window_bits` below 15 never gets a
/// compressed echo longer than 2^bits bytes, and the compressors for windows 9
/// to 14 only ever see messages that a window of 15 would compress the same.
#[test]
fn echo_compresses_long_replies_within_a_small_window() {
    with_server(deflate_config(|_| {}), |addr| {
        for bits in 9u8..=14 {
            let mut raw = echo_ws_with_window(addr, bits);
            let long = long_range_text(8400);
            raw.send_frame(true, op::TEXT, long.as_bytes());
            let (compressed, frame) = raw.read_frame_rsv1().unwrap();
            assert!(
                compressed,
                "bits {bits}: 8400 compressible bytes came back plain"
            );
            assert!(
                inflate(&frame.payload, bits) == long.as_bytes(),
                "bits {bits}"
            );
        }
    });
}

#[test]
fn echo_metrics_count_compressed_messages_in_and_frames_out() {
    with_server(deflate_config(|_| {}), |addr| {
        let mut a = echo_ws(addr);
        let mut b = echo_ws(addr);
        let _plain = Raw::websocket(addr, "/echo");
        assert!(eventually(Duration::from_secs(5), || metric(
            addr,
            "loopchat_deflate_connections"
        ) == 2));
        let text = english(1024);
        send_compressed(&mut a, op::TEXT, text.as_bytes()); // in: compressed, out: compressed
        read_message(&mut a, op::TEXT);
        send_compressed(&mut b, op::TEXT, b"small"); // in: compressed, out: plain
        read_message(&mut b, op::TEXT);
        b.send_frame(true, op::TEXT, text.as_bytes()); // in: plain, out: compressed
        read_message(&mut b, op::TEXT);
        let page = try_metrics(addr).unwrap();
        assert_eq!(metric_in(&page, "loopchat_compressed_messages_in_total"), 2);
        assert_eq!(metric_in(&page, "loopchat_inflate_calls_total"), 2);
        assert_eq!(metric_in(&page, "loopchat_compressed_frames_out_total"), 2);
        assert_eq!(metric_in(&page, "loopchat_compress_calls_total"), 2);
        drop(a);
        assert!(eventually(Duration::from_secs(5), || metric(
            addr,
            "loopchat_deflate_connections"
        ) == 1));
    });
}

// ---- Sending: chat broadcasts ------------------------------------------------

/// Reads frames until the join notice of `name`; all must be plain.
#[track_caller]
fn read_until_join_of(raw: &mut Raw, name: &str) {
    loop {
        let (compressed, frame) = raw.read_frame_rsv1().expect("a frame");
        assert!(!compressed, "notices go out plain: {frame:?}");
        let text = frame.text();
        if json_field(text, "type") == Some("join") && json_field(text, "name") == Some(name) {
            return;
        }
    }
}

#[test]
fn a_broadcast_is_compressed_once_for_every_deflate_member() {
    with_server(deflate_config(|_| {}), |addr| {
        let room = "/chat/mixed";
        let mut members: Vec<(&str, bool, Raw)> = Vec::new();
        for (name, deflates) in [
            ("d1", true),
            ("p1", false),
            ("d2", true),
            ("p2", false),
            ("d3", true),
        ] {
            let path = format!("{room}?name={name}");
            let raw = if deflates {
                let offer = if name == "d2" { FIREFOX } else { CHROMIUM };
                deflate_ws(addr, &path, offer, BOTH)
            } else {
                Raw::websocket(addr, &path)
            };
            members.push((name, deflates, raw));
        }
        for (_, _, raw) in &mut members {
            read_until_join_of(raw, "d3");
        }
        assert_eq!(metric(addr, "loopchat_deflate_connections"), 3);

        // Three broadcasts over 256 bytes: one sent plain by a plain member, one
        // compressed by a deflate member, one plain by a deflate member.
        let sends = [
            (1, false, english(400)),
            (0, true, english(1500)),
            (4, false, english(300)),
        ];
        for (sender, compressed, text) in sends {
            let calls = metric(addr, "loopchat_compress_calls_total");
            let out = metric(addr, "loopchat_compressed_frames_out_total");
            let raw = &mut members[sender].2;
            if compressed {
                send_compressed(raw, op::TEXT, text.as_bytes());
            } else {
                raw.send_frame(true, op::TEXT, text.as_bytes());
            }
            let mut plain_json = None;
            let mut compressed_payloads = Vec::new();
            let mut inflated = Vec::new();
            for (name, deflates, raw) in &mut members {
                let (rsv1, frame) = raw.read_frame_rsv1().expect("the broadcast");
                assert_eq!(frame.opcode, op::TEXT);
                assert_eq!(rsv1, *deflates, "{name}: RSV1");
                if rsv1 {
                    compressed_payloads.push(frame.payload.clone());
                    inflated.push(String::from_utf8(inflate(&frame.payload, 15)).unwrap());
                } else if let Some(json) = &plain_json {
                    assert_eq!(&frame.text(), json, "{name}");
                } else {
                    plain_json = Some(frame.text().to_string());
                }
            }
            let json = plain_json.unwrap();
            assert_eq!(json_field(&json, "type"), Some("message"));
            assert_eq!(json_field(&json, "text"), Some(text.as_str()));
            assert_eq!(json_field(&json, "from"), Some(members[sender].0));
            assert!(json.len() >= 256);
            for one in &inflated {
                assert_eq!(
                    one, &json,
                    "deflate members inflate to what plain members get"
                );
            }
            // One frame, shared: the same bytes to all three.
            assert!(compressed_payloads.windows(2).all(|w| w[0] == w[1]));
            assert!(compressed_payloads[0].len() < json.len());
            assert_eq!(
                metric(addr, "loopchat_compress_calls_total"),
                calls + 1,
                "one compression for one broadcast"
            );
            assert_eq!(
                metric(addr, "loopchat_compressed_frames_out_total"),
                out + 3
            );
        }

        // Under the minimum size: nobody gets it compressed, nothing compressed.
        let calls = metric(addr, "loopchat_compress_calls_total");
        members[0].2.send_frame(true, op::TEXT, b"short");
        for (name, _, raw) in &mut members {
            let (rsv1, frame) = raw.read_frame_rsv1().unwrap();
            assert!(!rsv1, "{name}");
            assert_eq!(json_field(frame.text(), "text"), Some("short"));
        }
        assert_eq!(metric(addr, "loopchat_compress_calls_total"), calls);
    });
}

#[test]
fn a_broadcast_goes_plain_to_a_member_whose_window_it_does_not_fit() {
    with_server(deflate_config(|_| {}), |addr| {
        let mut w15 = deflate_ws(addr, "/chat/windows?name=w15", CHROMIUM, BOTH);
        let offer9 = format!("{CHROMIUM}; server_max_window_bits=9");
        let expected9 = format!("{BOTH}; server_max_window_bits=9");
        let mut w9 = deflate_ws(addr, "/chat/windows?name=w9", &offer9, &expected9);
        read_until_join_of(&mut w15, "w9");
        read_until_join_of(&mut w9, "w9");

        // A message of at most 512 bytes (2^9) fits a 9-bit window: both get the
        // one compressed frame, and the 9-bit client inflates it.
        let calls = metric(addr, "loopchat_compress_calls_total");
        w15.send_frame(true, op::TEXT, english(380).as_bytes());
        let (rsv1, a) = w15.read_frame_rsv1().unwrap();
        let (rsv1_9, b) = w9.read_frame_rsv1().unwrap();
        assert!(rsv1 && rsv1_9);
        assert_eq!(a.payload, b.payload);
        let json = String::from_utf8(inflate(&b.payload, 9)).unwrap();
        assert!(json.len() <= 512, "{}", json.len());
        assert_eq!(json_field(&json, "text"), Some(english(380).as_str()));
        assert_eq!(metric(addr, "loopchat_compress_calls_total"), calls + 1);

        // A longer one: compressed for the 15-bit member, plain for the 9-bit one.
        let text = english(2000);
        w9.send_frame(true, op::TEXT, text.as_bytes());
        let (rsv1, a) = w15.read_frame_rsv1().unwrap();
        let (rsv1_9, b) = w9.read_frame_rsv1().unwrap();
        assert!(rsv1 && !rsv1_9);
        assert_eq!(inflate(&a.payload, 15), b.payload);
        assert_eq!(metric(addr, "loopchat_compress_calls_total"), calls + 2);
    });
}
