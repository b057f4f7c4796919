//! The binary with `--tls-cert`/`--tls-key`, as a child process on a free port
//! of 127.0.0.1: files that cannot be served stop it at start (status 2, before
//! it binds, with a message naming the flag and the file), the log says which
//! certificate is in use, SIGHUP swaps the certificate for new connections
//! while open ones chat on (and a broken new pair is logged and the old one
//! kept), and SIGTERM still says 1001 over TLS and exits 0. Every wait is
//! bounded; a child that outlives its test is killed by its PID.
#![cfg(feature = "tls")]

mod common;
use common::tls::*;
use common::*;
use std::time::Duration;
use tungstenite::Message;

const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// `ann` says `text`; both hear it.
fn chat(from: &mut Wss, to: &mut Wss, text: &str) {
    from.send(Message::text(text)).unwrap();
    assert_eq!(next_chat_text(to), text);
    assert_eq!(next_chat_text(from), text);
}

/// Waits until the child's log contains `needle` the `count`-th time.
fn wait_for_log(child: &mut KillOnDrop, needle: &str, count: usize) {
    let mut log = String::new();
    let seen = eventually(LOG_TIMEOUT, || {
        log = child.stderr_text();
        log.matches(needle).count() >= count
    });
    assert!(seen, "no {needle:?} (x{count}) in the log:\n{log}");
}

#[test]
fn files_that_cannot_be_served_exit_2_before_binding_naming_the_flag_and_file() {
    let good = TestCert::new("tls-bad-files", "good.test");
    let other = TestCert::make(&good.dir, "other.test");
    let dir = &good.dir;
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).unwrap();
    let missing = dir.join("missing.pem");
    let (cert, key) = (
        good.cert.display().to_string(),
        good.key.display().to_string(),
    );
    let (garbage, other_key, missing, dir_name) = (
        garbage.display().to_string(),
        other_key.display().to_string(),
        missing.display().to_string(),
        dir.display().to_string(),
    );
    // The port is taken: a server that bound before checking would exit 1 for it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--tls-cert", &missing, "--tls-key", &key],
            format!("--tls-cert {missing}: cannot read it"),
        ),
        (
            vec!["--tls-cert", &dir_name, "--tls-key", &key],
            format!("--tls-cert {dir_name}: cannot read it"),
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &missing],
            format!("--tls-key {missing}: cannot read it"),
        ),
        (
            vec!["--tls-cert", &garbage, "--tls-key", &key],
            format!("--tls-cert {garbage}: holds no certificate"),
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &cert],
            format!("--tls-key {cert}: holds no private key"),
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &other_key],
            format!("--tls-key {other_key} is not the key of the certificate in --tls-cert {cert}"),
        ),
        (
            vec!["--tls-cert", &cert],
            "--tls-cert and --tls-key go together".to_string(),
        ),
    ];
    for (tls_args, message) in cases {
        let mut args = vec!["--addr", &addr];
        args.extend(tls_args);
        let (status, stdout, stderr) = run_binary(&args, EXIT_TIMEOUT);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("loopchat: "), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&message),
            "{args:?}: want {message:?} in {stderr:?}"
        );
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
    drop(taken);
}

#[test]
fn sighup_gives_new_connections_the_new_certificate_and_keeps_the_old_on_a_bad_one() {
    let first = TestCert::new("tls-sighup", "first.test");
    let second = TestCert::make(&first.dir, "second.test");
    let client = client_config(&[&first.der, &second.der], Versions::Both);
    let mut args = first.args();
    args.extend(["--log-level".to_string(), "info".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut child, addr) = spawn_binary(&args);
    wait_for_log(&mut child, "with certificate CN=first.test, expires ", 1);

    let socket = tls_connect(addr, &client);
    assert_eq!(presented(&socket), first.der);
    let mut ann = wss_over(socket, addr, "/chat/hup?name=ann");

    // A new pair in the same files, then SIGHUP.
    second.write_to(&first.cert, &first.key);
    send_signal(child.pid(), "HUP");
    wait_for_log(
        &mut child,
        "SIGHUP: new connections get certificate CN=second.test",
        1,
    );
    let socket = tls_connect(addr, &client);
    assert_eq!(presented(&socket), second.der, "a new connection");
    let mut bob = wss_over(socket, addr, "/chat/hup?name=bob");
    chat(&mut ann, &mut bob, "ann started before the reload");
    chat(&mut bob, &mut ann, "bob after it");

    // A broken key: logged, and the second certificate stays.
    std::fs::write(
        &first.key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    send_signal(child.pid(), "HUP");
    wait_for_log(
        &mut child,
        "SIGHUP: certificate not reloaded, still serving CN=second.test",
        1,
    );
    // A key of another certificate: the same.
    let third = TestCert::make(&first.dir, "third.test");
    std::fs::write(&first.key, &third.key_pem).unwrap();
    send_signal(child.pid(), "HUP");
    wait_for_log(
        &mut child,
        "SIGHUP: certificate not reloaded, still serving CN=second.test",
        2,
    );
    let log = child.stderr_text();
    assert!(log.contains("is not the key of the certificate"), "{log}");
    let socket = tls_connect(addr, &client);
    assert_eq!(presented(&socket), second.der, "the old pair is kept");
    let mut cat = wss_over(socket, addr, "/chat/hup?name=cat");
    // The newcomer gets the room's history first.
    assert_eq!(next_chat_text(&mut cat), "ann started before the reload");
    assert_eq!(next_chat_text(&mut cat), "bob after it");
    chat(&mut cat, &mut ann, "after two bad reloads");
    assert_eq!(next_chat_text(&mut bob), "after two bad reloads");

    // SIGTERM: 1001 to everyone over TLS, and exit 0.
    send_signal(child.pid(), "TERM");
    for (who, ws) in [("ann", &mut ann), ("bob", &mut bob), ("cat", &mut cat)] {
        let code = loop {
            match ws.read() {
                Ok(Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(e) => panic!("{who}: {e}"),
            }
        };
        assert_eq!(code, Some(1001), "{who}");
    }
    drop((ann, bob, cat));
    let status = child.wait_timeout(EXIT_TIMEOUT).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", child.stderr_text());
}

#[test]
fn the_listening_line_says_https() {
    let cert = TestCert::new("tls-listening", "listening.test");
    let mut args = vec!["--addr".to_string(), "127.0.0.1:0".to_string()];
    args.extend(cert.args());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_loopchat"))
        .args(&args)
        .args(["--log-level", "off"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn loopchat");
    let mut child = KillOnDrop { child, log: None };
    let mut stdout = std::io::BufReader::new(child.child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert!(
        line.starts_with("loopchat listening on https://127.0.0.1:"),
        "{line:?}"
    );
    send_signal(child.pid(), "TERM");
    let status = child.wait_timeout(EXIT_TIMEOUT).expect("exits");
    assert_eq!(status.code(), Some(0));
}
