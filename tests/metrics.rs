//! `GET /metrics` read the way Prometheus reads it: the whole page, fetched from
//! a running server over a real socket, goes through the reference parser of the
//! text format (Python's `prometheus_client`), and the test checks what it found:
//! every family typed and declared once, close codes only as they came in close
//! frames, abnormal closes in their own counter, and the standard `process_*`
//! figures present and plausible.
//!
//! Needs `python3` with `prometheus_client` (`pip install prometheus-client`;
//! `.ci/run` installs it). Without it the test fails under `CI=true` and elsewhere
//! prints `SKIPPED metrics_page_parses_as_prometheus_text: ...`.

mod common;
mod skip;

use common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TEST: &str = "metrics_page_parses_as_prometheus_text";
const FIX: &str = "run `python3 -m pip install prometheus-client` to enable it";

/// Reads the exposition text on stdin with prometheus_client and prints what it
/// understood, one tab-separated line per family and per sample:
/// `family NAME TYPE` and `sample NAME LABELS VALUE` (labels as k=v, sorted, `,`).
const PARSER: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    print("family\t%s\t%s" % (family.name, family.type))
    for s in family.samples:
        labels = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
        print("sample\t%s\t%s\t%r" % (s.name, labels, s.value))
"#;

/// What the parser made of the page.
#[derive(Debug, Default)]
struct Parsed {
    /// Family names, in page order, with their type.
    families: Vec<(String, String)>,
    /// `name` or `name{k=v,...}` to value.
    samples: BTreeMap<String, f64>,
}

impl Parsed {
    fn value(&self, key: &str) -> Option<f64> {
        self.samples.get(key).copied()
    }
}

/// Why the parser cannot run here, or `None` if it can.
fn parser_missing() -> Option<String> {
    match Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .output()
    {
        Err(e) => Some(format!("python3 cannot be run ({e})")),
        Ok(out) if !out.status.success() => Some(format!(
            "python3 has no prometheus_client ({})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("import failed")
        )),
        Ok(_) => None,
    }
}

/// Runs the page through prometheus_client; panics with its error if it refuses.
fn parse(page: &str) -> Parsed {
    let mut child = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(page.as_bytes())
        .expect("write the page to python3");
    let out = child.wait_with_output().expect("python3 output");
    assert!(
        out.status.success(),
        "prometheus_client refused the page: {}\n--- page ---\n{page}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut parsed = Parsed::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match line.split('\t').collect::<Vec<_>>().as_slice() {
            ["family", name, kind] => parsed.families.push((name.to_string(), kind.to_string())),
            ["sample", name, labels, value] => {
                let key = if labels.is_empty() {
                    name.to_string()
                } else {
                    format!("{name}{{{labels}}}")
                };
                let value = value
                    .parse()
                    .unwrap_or_else(|_| panic!("not a number: {line}"));
                assert!(
                    parsed.samples.insert(key, value).is_none(),
                    "sample twice: {line}"
                );
            }
            _ => panic!("unexpected parser output: {line}"),
        }
    }
    parsed
}

#[test]
fn metrics_page_parses_as_prometheus_text() {
    if let Some(reason) = parser_missing() {
        skip::skip(TEST, &reason, FIX);
        return;
    }
    let server = start(config());

    // Three ways for a WebSocket to end: a close frame with a code, an empty close
    // frame, and TCP closed with no close frame at all.
    let mut with_code = Raw::websocket(server.addr, "/echo");
    with_code.send_frame(true, op::CLOSE, &close_payload(1001, b"bye"));
    assert_eq!(with_code.read_until_close().1, Some(1001));
    let mut without_code = Raw::websocket(server.addr, "/echo");
    without_code.send_frame(true, op::CLOSE, b"");
    assert_eq!(without_code.read_until_close().1, Some(1000));
    let abrupt = Raw::websocket(server.addr, "/echo");
    drop((with_code, without_code, abrupt));
    assert!(
        eventually(READ_TIMEOUT, || {
            try_metrics(server.addr).is_some_and(|page| {
                metric_in(&page, "loopchat_connections_open{phase=\"websocket\"}") == 0
                    && metric_in(&page, "loopchat_connections_open{phase=\"closing\"}") == 0
            })
        }),
        "the three WebSockets did not end"
    );

    let page = try_metrics(server.addr).expect("GET /metrics answers 200");
    let parsed = parse(&page);
    server.stop().expect("server stops");

    // Every family has a type and appears once.
    let mut seen = std::collections::BTreeSet::new();
    for (name, kind) in &parsed.families {
        assert_ne!(kind, "unknown", "{name} has no TYPE line");
        assert!(seen.insert(name), "{name} declared twice");
    }

    // Close codes: only those that came in close frames; 1006 has its own counter.
    let v = |key: &str| parsed.value(key);
    assert_eq!(v("loopchat_closes_received_total{code=1001}"), Some(1.0));
    assert_eq!(v("loopchat_closes_received_total{code=none}"), Some(1.0));
    assert_eq!(v("loopchat_connections_closed_abnormally_total"), Some(1.0));
    for code in [1005, 1006] {
        let key = format!("loopchat_closes_received_total{{code={code}}}");
        assert_eq!(v(&key), None, "{code} never travels in a close frame");
    }
    assert_eq!(v("loopchat_upgrades_total"), Some(3.0));

    // The build and the process.
    let version = format!(
        "loopchat_build_info{{version={}}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(v(&version), Some(1.0), "{version}");
    let figure = |name: &str| v(name).unwrap_or_else(|| panic!("{name} missing from:\n{page}"));
    let rss = figure("process_resident_memory_bytes");
    let vsize = figure("process_virtual_memory_bytes");
    assert!(rss > 0.0 && vsize >= rss, "rss {rss}, virtual {vsize}");
    let open = figure("process_open_fds");
    let max = figure("process_max_fds");
    assert!(open > 0.0 && max >= open, "open fds {open}, max {max}");
    let cpu = figure("process_cpu_seconds_total");
    assert!(cpu >= 0.0, "cpu {cpu}");
    let start = figure("process_start_time_seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    assert!(
        start <= now + 5.0 && start > now - 3600.0,
        "process_start_time_seconds {start}, now {now}"
    );
    let families: Vec<&str> = parsed.families.iter().map(|(n, _)| n.as_str()).collect();
    for family in [
        "process_cpu_seconds",
        "process_open_fds",
        "loopchat_build_info",
    ] {
        assert!(families.contains(&family), "{family} not in {families:?}");
    }
}

/// A cluster node's page (`--redis`) parses too, with the link's families:
/// here the Redis is unreachable (nothing listens on the port), so the node
/// serves alone and says so.
#[cfg(feature = "redis")]
#[test]
fn a_cluster_node_s_metrics_parse_and_show_the_link() {
    if let Some(reason) = parser_missing() {
        skip::skip(TEST, &reason, FIX);
        return;
    }
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", unused.local_addr().unwrap());
    drop(unused);
    let server = start(config_with(|c| {
        c.redis = Some(loopchat::redis_url::RedisUrl::parse(&url).unwrap());
    }));
    assert!(eventually(READ_TIMEOUT, || {
        metric(server.addr, "loopchat_cluster_link_failures_total") >= 1
    }));
    let page = try_metrics(server.addr).expect("GET /metrics answers 200");
    server.stop().expect("server stops");
    let parsed = parse(&page);
    let families: Vec<&str> = parsed.families.iter().map(|(n, _)| n.as_str()).collect();
    for family in [
        "loopchat_cluster_link_up",
        "loopchat_cluster_reconnects",
        "loopchat_cluster_posts",
        "loopchat_cluster_gaps_unrepaired",
        "loopchat_cluster_island_messages",
        "loopchat_cluster_commands",
        "loopchat_cluster_writes",
    ] {
        assert!(families.contains(&family), "{family} not in {families:?}");
    }
    assert_eq!(parsed.value("loopchat_cluster_link_up"), Some(0.0));
}
