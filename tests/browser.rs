//! Runs the chat page end to end in a real browser: `tests/browser/chat.test.mjs`
//! drives Debian's chromium with playwright-core against the `loopchat` binary
//! (which the script starts, kills and restarts itself).
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM=...`), Node >= 20 and
//! `tests/browser/node_modules`; `bash tests/browser/setup.sh` installs them.
//! Without them the test is skipped, except under `CI=true`, where it fails.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Why the browser test cannot run here, or `None` if it can.
fn missing_prerequisite(dir: &Path, chromium: &Path) -> Option<String> {
    if !chromium.is_file() {
        return Some(format!("no browser at {}", chromium.display()));
    }
    let version = match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        _ => return Some("`node` is not on PATH".into()),
    };
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        return Some(format!(
            "node {version} is too old (playwright-core needs >= 20)"
        ));
    }
    if !dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        return Some("tests/browser/node_modules/playwright-core is not installed".into());
    }
    None
}

/// Reads a child's pipe on a thread so neither pipe can fill up and block it.
fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Asks node to stop (its SIGTERM handler kills the server and chromium), then forces it.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn chat_page_in_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/browser");
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));

    if let Some(reason) = missing_prerequisite(&dir, &chromium) {
        let fix = "run `bash tests/browser/setup.sh`";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("browser test cannot run under CI=true: {reason}; {fix}");
        }
        eprintln!("skipping browser test: {reason}; {fix}");
        return;
    }

    let mut child = Command::new("node")
        .arg(dir.join("chat.test.mjs"))
        .current_dir(&root)
        .env("LOOPCHAT_BIN", env!("CARGO_BIN_EXE_loopchat"))
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start node");
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for node") {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            stop(&mut child);
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };

    let (out, err) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    println!("{out}");
    eprintln!("{err}");
    match status {
        None => panic!("browser test killed after {} s", TIMEOUT.as_secs()),
        Some(status) => assert!(
            status.success(),
            "browser test failed ({status}); output above"
        ),
    }
}
