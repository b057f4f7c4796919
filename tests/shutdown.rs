//! Clean shutdown, and the binary's command line.
//!
//! `RunningServer::stop()` takes the path SIGINT and SIGTERM take in the binary:
//! stop accepting, say goodbye to every WebSocket peer with close 1001 (RFC 6455
//! §7.4.1, "going away"), flush, return. The binary is run as a child process on
//! a free port of 127.0.0.1 and stopped with real signals; it must exit 0. A bad
//! command line exits 2 with a message; `--help` exits 0 and lists every flag.
//! Every wait is bounded; a child that outlives its test is killed by its PID.

mod common;
use common::*;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

/// How long a process may take to exit before the test fails (and kills it).
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

// ---- RunningServer::stop ------------------------------------------------------------

#[test]
fn stop_says_1001_to_every_websocket_peer_and_returns_ok() {
    let server = start(config());
    let addr = server.addr;
    let mut echo = Raw::websocket(addr, "/echo");
    let mut member = Raw::websocket(addr, "/chat/bye?name=member");
    let mut other = client(addr, "/chat/bye?name=other");
    let mut idle_http = Raw::connect(addr);

    let stopper = thread::spawn(move || server.stop());

    echo.expect_close(1001);
    echo.send_frame(true, op::CLOSE, &close_payload(1001, b""));
    assert!(echo.closed_by_server());

    // The chat member gets its welcome and the join notices, then the goodbye:
    // nobody is told about the others leaving during a shutdown.
    let (before, code) = member.read_until_close();
    assert_eq!(code, Some(1001));
    let kinds: Vec<&str> = before
        .iter()
        .map(|f| json_field(f.text(), "type").unwrap_or("?"))
        .collect();
    assert!(!kinds.contains(&"leave"), "{kinds:?}");
    member.send_frame(true, op::CLOSE, &close_payload(1001, b""));
    assert!(member.closed_by_server());

    // tungstenite sees the close, answers it by itself, and then the end.
    let code = loop {
        match other.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("tungstenite: {e}"),
        }
    };
    assert_eq!(code, Some(1001));
    assert!(matches!(
        other.read(),
        Err(tungstenite::Error::ConnectionClosed)
    ));

    assert!(
        idle_http.closed_by_server(),
        "an idle HTTP connection stays"
    );
    stopper
        .join()
        .expect("server thread")
        .expect("stop returns Ok");
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener still accepts after stop"
    );
}

/// Peers that never answer the close cannot hold the server: `stop` returns once
/// `shutdown_timeout` (300 ms in tests) passes, and the peers see the close and
/// then the end of the connection.
#[test]
fn stop_returns_ok_even_if_peers_never_answer() {
    let server = start(config());
    let addr = server.addr;
    let mut mute_echo = Raw::websocket(addr, "/echo");
    let mut mute_member = Raw::websocket(addr, "/chat?name=mute");
    // One that half-sent a frame when the server stopped.
    let mut half = Raw::websocket(addr, "/echo");
    half.send(&client_frame(true, op::TEXT, b"never finished")[..5]);
    assert_eq!(metric(addr, "loopchat_upgrades_total"), 3);

    server.stop().expect("stop returns Ok");

    for (who, raw) in [
        ("echo", &mut mute_echo),
        ("member", &mut mute_member),
        ("half", &mut half),
    ] {
        assert_eq!(raw.read_until_close().1, Some(1001), "{who}");
        assert!(raw.closed_by_server(), "{who}");
    }
}

// ---- The binary and signals -----------------------------------------------------------

/// Sends `signal` to the binary while an echo client and a chat member are
/// connected: both get close 1001, and the process exits with status 0.
fn signal_says_1001_and_exits_0(signal: &str) {
    let (mut child, addr) = spawn_binary(&["--log-level", "info"]);
    let mut echo = Raw::websocket(addr, "/echo");
    echo.send_frame(true, op::TEXT, b"before the signal");
    assert_eq!(echo.read_frame().unwrap().payload, b"before the signal");
    let mut member = Raw::websocket(addr, "/chat?name=member");

    send_signal(child.pid(), signal);

    for (who, raw) in [("echo", &mut echo), ("member", &mut member)] {
        let (_, code) = raw.read_until_close();
        assert_eq!(code, Some(1001), "{who}: {}", child.stderr_text());
        raw.send_frame(true, op::CLOSE, &close_payload(1001, b""));
        assert!(raw.closed_by_server(), "{who}");
    }
    let status = child
        .wait_timeout(EXIT_TIMEOUT)
        .unwrap_or_else(|| panic!("no exit after SIG{signal}: {}", child.stderr_text()));
    let log = child.stderr_text();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains(&format!("SIG{signal}")), "{log}");
}

#[test]
fn sigterm_says_1001_to_peers_and_exits_0() {
    signal_says_1001_and_exits_0("TERM");
}

#[test]
fn sigint_says_1001_to_peers_and_exits_0() {
    signal_says_1001_and_exits_0("INT");
}

#[test]
fn sigterm_with_nobody_connected_exits_0() {
    let (mut child, addr) = spawn_binary(&["--log-level", "warn"]);
    assert_eq!(get(addr, "/").0, 200);
    send_signal(child.pid(), "TERM");
    let status = child.wait_timeout(EXIT_TIMEOUT).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", child.stderr_text());
}

/// The flags reach the server: one connection at most, messages of 100 bytes.
#[test]
fn the_binary_applies_its_flags() {
    let (mut child, addr) = spawn_binary(&[
        "--max-connections",
        "1",
        "--max-message-size",
        "100",
        "--log-level",
        "warn",
    ]);
    // The probe connections of `spawn_binary` may still hold the one slot.
    let mut ws = None;
    assert!(eventually(Duration::from_secs(20), || {
        ws = try_websocket(addr, "/echo").ok();
        ws.is_some()
    }));
    let mut ws = ws.unwrap();
    let mut second = Raw::connect(addr);
    assert_eq!(second.read_response(false).0, 503);
    ws.send_frame(true, op::TEXT, &[b'a'; 100]);
    assert_eq!(ws.read_frame().unwrap().payload, vec![b'a'; 100]);
    ws.send_frame(true, op::TEXT, &[b'a'; 101]);
    assert_eq!(ws.read_until_close().1, Some(1009));
    drop((ws, second));
    send_signal(child.pid(), "TERM");
    let status = child.wait_timeout(EXIT_TIMEOUT).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", child.stderr_text());
}

// ---- The command line ---------------------------------------------------------------------

/// The flags that `Config` documents, one per field: the `--flag` named at the
/// start of each field's doc comment in `src/config.rs`.
fn documented_flags() -> Vec<String> {
    let source = include_str!("../src/config.rs");
    let start =
        source.find("pub struct Config {").expect("struct Config") + "pub struct Config {".len();
    let body = &source[start..start + source[start..].find("\n}").expect("end of Config")];
    let mut flags = Vec::new();
    let mut fields = Vec::new();
    let mut doc_start = true;
    for line in body.lines().map(str::trim) {
        if let Some(doc) = line.strip_prefix("///") {
            if doc_start {
                let flag = doc
                    .trim()
                    .strip_prefix('`')
                    .and_then(|d| d.split('`').next());
                if let Some(flag) = flag.filter(|f| f.starts_with("--")) {
                    flags.push(flag.to_string());
                }
            }
            doc_start = false;
        } else if let Some(field) = line.strip_prefix("pub ") {
            fields.push(field.split(':').next().unwrap_or("").to_string());
            doc_start = true;
        }
    }
    assert_eq!(
        flags.len(),
        fields.len(),
        "every Config field names its flag first in its doc comment: fields {fields:?}, \
         flags {flags:?}"
    );
    flags
}

/// A valid sample value for each flag (a new flag needs one here); `None` for a
/// switch, which takes no value.
fn sample_value(flag: &str) -> Option<String> {
    let value: String = match flag {
        "--permessage-deflate" | "--reuse-port" => return None,
        // Nothing listens on port 1: the node serves alone and keeps retrying.
        "--redis" => "redis://127.0.0.1:1".into(),
        "--presence-ttl" => "5s".into(),
        "--redis-ping" => "250ms".into(),
        "--redis-max-queue" => "1MiB".into(),
        "--max-chat-message-size" => "512".into(),
        "--input-budget" => "8MiB".into(),
        "--message-timeout" => "30s".into(),
        "--message-min-rate" => "0".into(),
        "--history-budget" => "1MiB".into(),
        "--max-connections-per-ip" => "100".into(),
        "--deflate-min-size" => "64".into(),
        "--deflate-level" => "6".into(),
        "--max-message-rate" => "0".into(),
        "--member-list-limit" => "50".into(),
        "--addr" => "127.0.0.1:0".into(),
        "--static-dir" => concat!(env!("CARGO_MANIFEST_DIR"), "/static").into(),
        "--log-level" => "warn".into(),
        "--ping-interval" => "1s".into(),
        "--max-message-size" => "1KiB".into(),
        "--max-output" => "64K".into(),
        "--max-header-bytes" => "4K".into(),
        "--max-headers" => "16".into(),
        "--handshake-timeout" => "250ms".into(),
        "--close-timeout" => "1".into(),
        "--max-connections" => "10".into(),
        "--history" => "5".into(),
        "--history-bytes" => "16K".into(),
        "--idle-rooms" => "3".into(),
        "--allowed-origin" => "https://chat.example".into(),
        "--subprotocol" => "chat".into(),
        "--shutdown-timeout" => "0.5".into(),
        // Only --help follows: the files are read after the whole line is parsed.
        "--tls-cert" => "fullchain.pem".into(),
        "--tls-key" => "privkey.pem".into(),
        other => panic!("no sample value for {other}: add one to this test"),
    };
    Some(value)
}

#[test]
fn help_exits_0_and_lists_every_flag() {
    let flags = documented_flags();
    for help in ["--help", "-h"] {
        let (status, stdout, stderr) = run_binary(&[help], EXIT_TIMEOUT);
        assert_eq!(status.code(), Some(0), "{help}: {stderr}");
        for flag in &flags {
            assert!(
                stdout.contains(flag.as_str()),
                "{help} does not list {flag}:\n{stdout}"
            );
        }
        assert!(stdout.contains("-h, --help"), "{stdout}");
    }
}

/// Every documented flag parses with a valid value: the whole set followed by
/// `--help` (which ends parsing) exits 0.
#[test]
fn every_flag_is_accepted() {
    let mut args = Vec::new();
    for flag in documented_flags() {
        args.push(flag.clone());
        args.extend(sample_value(&flag));
    }
    args.push("--help".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _, stderr) = run_binary(&args, EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{args:?}: {stderr}");
}

#[test]
fn an_invalid_command_line_exits_2_with_a_message() {
    // `--addr 127.0.0.1:0` first: if a bad flag were ignored, the server would
    // start harmlessly (and the bounded wait would fail the test).
    let cases: [(&[&str], &str); 6] = [
        (&["--addr", "127.0.0.1:0", "--frobnicate"], "--frobnicate"),
        (
            &["--addr", "127.0.0.1:0", "--max-connections", "0"],
            "--max-connections",
        ),
        (
            &["--addr", "127.0.0.1:0", "--max-output", "lots"],
            "--max-output",
        ),
        (
            &["--addr", "127.0.0.1:0", "--ping-interval", "-1"],
            "--ping-interval",
        ),
        (&["--addr", "127.0.0.1:0", "--max-headers"], "--max-headers"),
        (&["--addr", "nowhere"], "--addr"),
    ];
    for (args, named) in cases {
        let (status, stdout, stderr) = run_binary(args, EXIT_TIMEOUT);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("loopchat: "), "{args:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?} should name {named}: {stderr}"
        );
        assert!(
            stderr.contains("--help"),
            "{args:?} should point to --help: {stderr}"
        );
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}
