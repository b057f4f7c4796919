//! Runs the chat page end to end in a real browser: `tests/browser/chat.test.mjs`
//! drives Debian's chromium with playwright-core against the `loopchat` binary
//! (which the script starts, kills and restarts itself). A second server, with
//! `--permessage-deflate`, then shows the extension negotiated in the page
//! (`ws.extensions`) and 2 KiB chat messages compressed both ways (`/metrics`);
//! the first, without the flag, shows `ws.extensions` empty.
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM=...`), Node >= 20 with npm, and
//! `tests/browser/node_modules`. When only `node_modules` is missing, the test
//! runs `npm ci` in `tests/browser` itself; `bash tests/browser/setup.sh` installs
//! the rest. If something is still missing, the test fails under `CI=true` and
//! elsewhere prints `SKIPPED chat_page_in_chromium: ...` past the output capture.

mod skip;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on `npm ci`; without a registry it fails (or hangs on retries) instead.
const NPM_TIMEOUT: Duration = Duration::from_secs(180);

/// Why the browser test cannot run here, or `None` if it can. Installs
/// `node_modules` with `npm ci` when that is the only thing missing.
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
    if !playwright_installed(dir) {
        if let Err(why) = npm_ci(dir) {
            return Some(format!(
                "tests/browser/node_modules/playwright-core is not installed, and {why}"
            ));
        }
        if !playwright_installed(dir) {
            return Some("`npm ci` in tests/browser did not install playwright-core".into());
        }
    }
    None
}

fn playwright_installed(dir: &Path) -> bool {
    dir.join("node_modules/playwright-core/package.json")
        .is_file()
}

/// Runs `npm ci` in `dir` (from package-lock.json), bounded by `NPM_TIMEOUT`.
fn npm_ci(dir: &Path) -> Result<(), String> {
    match Command::new("npm").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => return Err("`npm` is not on PATH to install it".into()),
    }
    skip::note("chat_page_in_chromium: installing playwright-core (`npm ci` in tests/browser)");
    let mut child = Command::new("npm")
        // One retry, not npm's two with backoff: offline, that fails in ~10 s, not ~70.
        .args(["ci", "--no-audit", "--no-fund", "--fetch-retries=1"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`npm ci` could not start: {e}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_bounded(&mut child, NPM_TIMEOUT);
    let output = stdout.join().unwrap_or_default() + &stderr.join().unwrap_or_default();
    // npm's own words, without the pointer to its log file.
    let why: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("npm error") || l.starts_with("npm ERR!"))
        .filter(|l| !l.contains("complete log"))
        .take(2)
        .collect();
    let last = why.join(" / ");
    match status {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!(
            "`npm ci` in tests/browser failed ({status}): {last}"
        )),
        None => Err(format!(
            "`npm ci` in tests/browser did not finish in {} s",
            NPM_TIMEOUT.as_secs()
        )),
    }
}

/// Waits for `child` at most `limit`; kills it and returns `None` past that.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if started.elapsed() < limit => thread::sleep(Duration::from_millis(100)),
            _ => {
                stop(child);
                return None;
            }
        }
    }
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
    #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
    let mut node = Command::new("node");
    // A second pass over https and wss, with a certificate made here (rcgen).
    #[cfg(feature = "tls")]
    let _tls_files = tls_pass_certificate(&mut node);
    run_browser_script("chat_page_in_chromium", "chat.test.mjs", TIMEOUT, node);
}

/// Bound on `page.test.mjs`, which starts two servers and runs its tests one
/// after the other (about 40 s here).
const PAGE_TIMEOUT: Duration = Duration::from_secs(180);

/// The page's features one by one (`tests/browser/page.test.mjs`): the name
/// asked before connecting, renames, the member list, links, line breaks,
/// dates, the new-messages cue, the unread title, the byte limit, the phone
/// layout. The script starts its own servers with the flags it needs.
#[test]
fn page_features_in_chromium() {
    let node = Command::new("node");
    run_browser_script(
        "page_features_in_chromium",
        "page.test.mjs",
        PAGE_TIMEOUT,
        node,
    );
}

/// Runs `tests/browser/<script>` with `node` (a `node` command the caller may
/// have given more environment) against this build's server binary, within
/// `timeout`; skips it, or fails it under `CI=true`, when a prerequisite is
/// missing.
fn run_browser_script(test: &str, script: &str, timeout: Duration, mut node: Command) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/browser");
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));

    if let Some(reason) = missing_prerequisite(&dir, &chromium) {
        skip::skip(
            test,
            &reason,
            "run `bash tests/browser/setup.sh` to enable it",
        );
        return;
    }

    let mut child = node
        .arg(dir.join(script))
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
    let status = wait_bounded(&mut child, timeout);
    println!("{}", stdout.join().unwrap_or_default());
    eprintln!("{}", stderr.join().unwrap_or_default());
    match status {
        None => panic!("{script} killed after {} s", timeout.as_secs()),
        Some(status) => assert!(status.success(), "{script} failed ({status}); output above"),
    }
}

/// Writes a self-signed certificate for 127.0.0.1 to a temp dir and tells the
/// script where (`LOOPCHAT_TLS_CERT`, `LOOPCHAT_TLS_KEY`), so that it runs its
/// https pass. The dir goes when the returned guard is dropped.
#[cfg(feature = "tls")]
fn tls_pass_certificate(command: &mut Command) -> TempDir {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("rcgen");
    let dir = std::env::temp_dir().join(format!("loopchat-browser-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    command
        .env("LOOPCHAT_TLS_CERT", &cert)
        .env("LOOPCHAT_TLS_KEY", &key);
    TempDir(dir)
}

/// A directory removed on drop.
#[cfg(feature = "tls")]
struct TempDir(PathBuf);

#[cfg(feature = "tls")]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
