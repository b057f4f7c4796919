//! The `loopchat` binary as a newcomer meets it: `--version`, the messages for a
//! bad command line (exit 2, one line naming the flag, the help hint once), the
//! listening address on stdout at every log level, and the hint when the port is
//! taken. Each test runs the built binary and ends every process it starts.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a run that should exit at once may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A child process that is killed (by its own handle, so its PID) and reaped
/// when dropped, so that a failing test leaves no server behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn loopchat(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loopchat"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// Runs `command` to its end: exit status, stdout and stderr. Panics (after
/// killing it) if it is still running after [`TIMEOUT`].
fn run(mut command: Command) -> (ExitStatus, String, String) {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loopchat");
    let mut child = Running(child);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for loopchat") {
            break status;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "loopchat {command:?} did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // What these runs print fits in a pipe's buffer, so it is all there.
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let Some(pipe) = child.0.stdout.as_mut() {
        pipe.read_to_string(&mut stdout).expect("read stdout");
    }
    if let Some(pipe) = child.0.stderr.as_mut() {
        pipe.read_to_string(&mut stderr).expect("read stderr");
    }
    (status, stdout, stderr)
}

fn run_args(args: &[&str]) -> (ExitStatus, String, String) {
    run(loopchat(args))
}

/// Asserts a run was refused as a bad command line: exit 2, nothing on stdout,
/// `message` on the first line of stderr and the help hint once after it.
fn assert_usage_error((status, stdout, stderr): (ExitStatus, String, String), message: &str) {
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stdout, "");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            &format!("loopchat: {message}")[..],
            "Try 'loopchat --help' for the list of options."
        ]
    );
}

/// Starts loopchat with `args` and returns it with the first line it printed
/// on stdout (within [`TIMEOUT`]).
fn start_and_read_first_line(args: &[&str]) -> (Running, String) {
    let child = loopchat(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn loopchat");
    let mut child = Running(child);
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("loopchat {args:?} printed no line"));
    (child, line)
}

/// The address in a `loopchat listening on http://ADDR/` line.
fn listening_addr(line: &str) -> SocketAddr {
    line.strip_prefix("loopchat listening on http://")
        .and_then(|rest| rest.strip_suffix("/\n"))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
}

#[test]
fn version_prints_the_name_and_the_package_version() {
    for flag in ["--version", "-V"] {
        let (status, stdout, stderr) = run_args(&[flag]);
        assert!(status.success(), "{flag}: {stderr}");
        assert_eq!(stdout, format!("loopchat {}\n", env!("CARGO_PKG_VERSION")));
        assert_eq!(stderr, "");
    }
}

#[test]
fn help_lists_the_new_flags_and_spellings() {
    let (status, stdout, _) = run_args(&["--help"]);
    assert!(status.success());
    for needle in [
        "--subprotocol NAME",
        "-V, --version",
        ":PORT for all interfaces",
        "k/KB/KiB",
        "1024-based",
        "ms, s, m (minutes) or h",
    ] {
        assert!(stdout.contains(needle), "--help lacks {needle:?}");
    }
}

#[test]
fn a_bad_unit_names_the_flag_and_lists_the_units() {
    assert_usage_error(
        run_args(&["--max-message-size", "10 bananas"]),
        "--max-message-size: \"10 bananas\" is not a size (use a whole number with an optional \
         unit: B, k/KB/KiB, m/MB/MiB, g/GB/GiB, all 1024-based)",
    );
    assert_usage_error(
        run_args(&["--ping-interval=soon"]),
        "--ping-interval: \"soon\" is not a duration (use a number with an optional unit: ms, \
         s, m or h; a bare number is seconds)",
    );
}

#[test]
fn a_flag_missing_its_value_is_named_and_does_not_swallow_the_next_flag() {
    assert_usage_error(
        run_args(&["--allowed-origin", "--log-level", "info"]),
        "--allowed-origin needs a value",
    );
    assert_usage_error(
        run_args(&["--log-level", "info", "--allowed-origin"]),
        "--allowed-origin needs a value",
    );
}

#[test]
fn rust_log_garbage_is_refused_like_a_bad_log_level() {
    let mut command = loopchat(&["--addr", "127.0.0.1:0"]);
    command.env("RUST_LOG", "garbage");
    assert_usage_error(
        run(command),
        "RUST_LOG: \"garbage\" is not a log level (use off, error, warn, info, debug or trace, \
         or loopchat=LEVEL)",
    );
}

#[test]
fn a_positional_argument_is_unexpected() {
    assert_usage_error(
        run_args(&["x"]),
        "unexpected argument \"x\" (loopchat takes options only)",
    );
}

#[test]
fn the_help_hint_is_printed_once() {
    // assert_usage_error checks for exactly the message and one hint line;
    // these are the messages that used to carry a hint of their own.
    assert_usage_error(
        run_args(&["--frobnicate"]),
        "unknown option \"--frobnicate\"",
    );
    let (_, _, stderr) = run_args(&["--max-headers", "many"]);
    assert_eq!(stderr.matches("--help").count(), 1, "{stderr}");
}

#[test]
fn a_subprotocol_that_is_not_a_token_is_refused() {
    assert_usage_error(
        run_args(&["--subprotocol", "chat v2"]),
        "--subprotocol: \"chat v2\" is not a token (letters, digits and !#$%&'*+-.^_`|~ only; \
         RFC 7230 §3.2.6)",
    );
}

#[test]
fn the_listening_address_is_printed_at_every_log_level() {
    for level in ["warn", "error", "off"] {
        let (server, line) =
            start_and_read_first_line(&["--addr", "127.0.0.1:0", "--log-level", level]);
        let addr = listening_addr(&line);
        assert_eq!(addr.ip().to_string(), "127.0.0.1", "{line:?}");
        assert_ne!(
            addr.port(),
            0,
            "the bound port, not the asked-for 0: {line:?}"
        );
        TcpStream::connect(addr).expect("it listens where it says");
        drop(server);
    }
}

#[test]
fn an_addr_may_be_a_bare_port_or_a_host_name() {
    let (_server, line) = start_and_read_first_line(&["--addr", ":0", "--log-level", "off"]);
    let addr = listening_addr(&line);
    assert!(addr.ip().is_unspecified(), "{line:?}");
    TcpStream::connect(("127.0.0.1", addr.port())).expect("listens on loopback too");

    let (_server, line) =
        start_and_read_first_line(&["--addr", "localhost:0", "--log-level", "off"]);
    let addr = listening_addr(&line);
    assert!(addr.ip().is_loopback(), "{line:?}");
    TcpStream::connect(addr).expect("it listens where it says");
}

#[test]
fn an_address_in_use_hints_at_addr() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port to take");
    let addr = taken.local_addr().expect("its address");
    // At --log-level off too: the reason it cannot start is not a log line.
    let (status, stdout, stderr) = run_args(&["--addr", &addr.to_string(), "--log-level", "off"]);
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stdout, "");
    let line = stderr.trim_end();
    assert!(
        line.starts_with(&format!("loopchat: cannot listen on {addr}: ")),
        "{line}"
    );
    assert!(
        line.ends_with(
            "(another program, or another loopchat, is using this port; choose another with --addr)"
        ),
        "{line}"
    );
    drop(taken);
}

#[test]
fn with_reuse_port_two_processes_listen_on_one_address_and_share_its_connections() {
    // Each logs its connections to a file of its own.
    let logs: Vec<std::path::PathBuf> = (0..2)
        .map(|i| {
            std::env::temp_dir().join(format!("loopchat-reuse-{}-{i}.log", std::process::id()))
        })
        .collect();
    let start = |addr: &str, log: &std::path::Path| {
        let stderr = std::fs::File::create(log).expect("log file");
        let mut child = Running(
            loopchat(&["--addr", addr, "--reuse-port", "--log-level", "info"])
                .stdout(Stdio::piped())
                .stderr(stderr)
                .spawn()
                .expect("spawn loopchat"),
        );
        let mut line = String::new();
        let stdout = child.0.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the listening line");
        (child, listening_addr(&line))
    };
    // The first takes a free port; the second binds the same one (without the
    // flag it would exit 1: `an_address_in_use_hints_at_addr`).
    let (first, addr) = start("127.0.0.1:0", &logs[0]);
    let (second, same) = start(&addr.to_string(), &logs[1]);
    assert_eq!(same, addr);
    // The kernel spreads connections over both: each serves, and both get some
    // of 64 (the chance that one gets none is 2^-63).
    for _ in 0..64 {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        std::io::Write::write_all(
            &mut stream,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut page = String::new();
        stream.read_to_string(&mut page).expect("a response");
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    }
    drop((first, second));
    let served: Vec<usize> = logs
        .iter()
        .map(|log| {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let _ = std::fs::remove_file(log);
            text.lines().filter(|l| l.ends_with("] connected")).count()
        })
        .collect();
    assert_eq!(served.iter().sum::<usize>(), 64, "{served:?}");
    assert!(served.iter().all(|&n| n > 0), "served {served:?}");
}
