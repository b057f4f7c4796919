//! What a test does when something it needs from outside the crate (a browser,
//! a Python package) is missing: under `CI=true` it fails; elsewhere it says
//! `SKIPPED` where a person sees it, and passes.
//!
//! libtest captures `eprintln!` and shows it only for failing tests, so the line is
//! written to the process's stderr handle directly, which the capture does not
//! touch.

use std::io::Write;

/// Whether this run is CI's (`CI=true`), where a skipped test is a failure.
pub fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Fails the test under CI; otherwise prints `SKIPPED test: reason; fix` past the
/// output capture. The caller returns right after.
#[track_caller]
pub fn skip(test: &str, reason: &str, fix: &str) {
    if under_ci() {
        panic!("{test} cannot run under CI=true: {reason}; {fix}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}; {fix}");
}

/// Prints a progress line past the output capture (e.g. "installing ...").
#[allow(dead_code)] // not every test file that includes this module uses it
pub fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
