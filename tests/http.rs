//! HTTP/1.1 over real sockets: the page, static files, errors, limits, keep-alive,
//! pipelining and `/metrics`.

mod common;
use common::*;
use std::fs;
use std::path::PathBuf;

/// Sends `request` on a fresh connection and reads one response.
fn exchange(addr: std::net::SocketAddr, request: &str, head_only: bool) -> (u16, String, Vec<u8>) {
    let mut raw = Raw::connect(addr);
    raw.send(request.as_bytes());
    raw.read_response(head_only)
}

/// Asserts the server ends the connection right after the response: nothing more
/// arrives, then EOF.
fn assert_closed_after_response(raw: &mut Raw) {
    let rest = raw.read_to_eof().expect("server closes the connection");
    assert!(
        rest.is_empty(),
        "unexpected bytes after the response: {rest:?}"
    );
}

fn content_length(head: &str) -> usize {
    header_value(head, "content-length")
        .expect("Content-Length")
        .parse()
        .expect("numeric Content-Length")
}

#[test]
fn get_root_serves_the_page() {
    let server = start(config());
    let mut raw = Raw::connect(server.addr);
    raw.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let (status, head, body) = raw.read_response(false);
    assert_eq!(status, 200, "{head}");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let content_type = header_value(&head, "content-type").unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(content_length(&head), body.len());
    assert!(!body.is_empty());
    assert!(String::from_utf8_lossy(&body)
        .to_ascii_lowercase()
        .contains("<html"));
    assert_closed_after_response(&mut raw);
    drop(raw);
    server.stop().unwrap();
}

#[test]
fn head_root_has_the_headers_and_no_body() {
    let server = start(config());
    let (_, get_head, get_body) = get(server.addr, "/");
    let mut raw = Raw::connect(server.addr);
    raw.send(b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let (status, head, _) = raw.read_response(true);
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        header_value(&head, "content-type"),
        header_value(&get_head, "content-type")
    );
    // RFC 9110 §9.3.2: the same Content-Length a GET would have.
    assert_eq!(content_length(&head), get_body.len());
    // ...and no body at all: the connection ends right after the head.
    assert_closed_after_response(&mut raw);
    drop(raw);
    server.stop().unwrap();
}

#[test]
fn head_on_a_keep_alive_connection_is_followed_directly_by_the_next_response() {
    let server = start(config());
    let mut raw = Raw::connect(server.addr);
    raw.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let (status, head, _) = raw.read_response(true);
    assert_eq!(status, 200, "{head}");
    assert!(content_length(&head) > 0);
    // If HEAD had sent a body, this would not parse as a status line.
    let (status, head, body) = raw.read_response(false);
    assert_eq!(status, 200, "{head}");
    assert!(String::from_utf8(body).unwrap().contains("loopchat_"));
    drop(raw);
    server.stop().unwrap();
}

#[test]
fn unknown_path_is_404() {
    let server = start(config());
    let mut raw = Raw::connect(server.addr);
    raw.send(b"GET /no/such/page.html HTTP/1.1\r\nHost: t\r\n\r\n");
    let (status, head, body) = raw.read_response(false);
    assert_eq!(status, 404, "{head}");
    assert_eq!(content_length(&head), body.len());
    // Errors close the connection.
    assert_closed_after_response(&mut raw);
    drop(raw);
    server.stop().unwrap();
}

/// A static root with a page, a stylesheet and a script, and a secret file next
/// to (outside) the root.
struct StaticSite {
    base: PathBuf,
    root: PathBuf,
}

impl StaticSite {
    fn new(tag: &str) -> StaticSite {
        let base = fresh_temp_dir(tag);
        let root = base.join("public");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("index.html"), b"<html>static index</html>").unwrap();
        fs::write(root.join("style.css"), b"body { color: red }").unwrap();
        fs::write(root.join("sub/app.js"), b"console.log('hi');").unwrap();
        fs::write(base.join("secret.txt"), b"TOP SECRET").unwrap();
        StaticSite { base, root }
    }
}

impl Drop for StaticSite {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

#[test]
fn static_dir_serves_files_with_their_content_type() {
    let site = StaticSite::new("static-types");
    let server = start(loopchat::Config {
        static_dir: Some(site.root.clone()),
        ..config()
    });
    let (status, head, body) = get(server.addr, "/style.css");
    assert_eq!(status, 200, "{head}");
    assert!(header_value(&head, "content-type")
        .unwrap()
        .starts_with("text/css"));
    assert_eq!(body, b"body { color: red }");
    assert_eq!(content_length(&head), body.len());

    let (status, head, body) = get(server.addr, "/sub/app.js");
    assert_eq!(status, 200, "{head}");
    let js = header_value(&head, "content-type").unwrap();
    assert!(
        js.starts_with("text/javascript") || js.starts_with("application/javascript"),
        "{js}"
    );
    assert_eq!(body, b"console.log('hi');");

    let (status, head, body) = get(server.addr, "/");
    assert_eq!(status, 200, "{head}");
    assert!(header_value(&head, "content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(body, b"<html>static index</html>");
    server.stop().unwrap();
}

#[test]
fn static_dir_missing_file_is_404() {
    let site = StaticSite::new("static-missing");
    let server = start(loopchat::Config {
        static_dir: Some(site.root.clone()),
        ..config()
    });
    for path in ["/missing.css", "/sub/missing.js", "/sub/", "/%zz"] {
        let (status, head, _) = get(server.addr, path);
        assert_eq!(status, 404, "{path}: {head}");
    }
    server.stop().unwrap();
}

#[test]
fn static_dir_refuses_path_traversal() {
    let site = StaticSite::new("static-traversal");
    assert!(site.root.join("../secret.txt").is_file());
    let server = start(loopchat::Config {
        static_dir: Some(site.root.clone()),
        ..config()
    });
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/sub/../../secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/..%5csecret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
    ] {
        let (status, head, body) = get(server.addr, path);
        assert_eq!(status, 404, "{path}: {head}");
        assert!(
            !String::from_utf8_lossy(&body).contains("TOP SECRET"),
            "{path} leaked the file"
        );
    }
    server.stop().unwrap();
}

#[test]
fn other_methods_get_405_with_allow() {
    let server = start(config());
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let mut raw = Raw::connect(server.addr);
        raw.send(format!("{method} / HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let (status, head, _) = raw.read_response(false);
        assert_eq!(status, 405, "{method}: {head}");
        let allow = header_value(&head, "allow").unwrap_or_else(|| panic!("no Allow: {head}"));
        let allowed: Vec<&str> = allow.split(',').map(str::trim).collect();
        assert!(
            allowed.contains(&"GET") && allowed.contains(&"HEAD"),
            "{allow}"
        );
        assert_closed_after_response(&mut raw);
    }
    // A request with a body is refused too (the server reads no bodies).
    let mut raw = Raw::connect(server.addr);
    raw.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    let (status, head, _) = raw.read_response(false);
    assert_eq!(status, 405, "{head}");
    assert!(header_value(&head, "allow").is_some(), "{head}");
    drop(raw);
    server.stop().unwrap();
}

#[test]
fn malformed_requests_get_400() {
    let server = start(config());
    for request in [
        "GARBAGE\r\n\r\n",
        "GET /\r\n\r\n",
        "GET / HTTP/9\r\n\r\n",
        "GET  / HTTP/1.1 extra\r\nHost: t\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        "GET / HTTP/1.1\r\nHost t\r\n\r\n",
        "GET / HTTP/1.1\r\n: no-name\r\n\r\n",
        "\x01\x02\x03\r\n\r\n",
    ] {
        let mut raw = Raw::connect(server.addr);
        raw.send(request.as_bytes());
        let (status, head, _) = raw.read_response(false);
        assert_eq!(status, 400, "{request:?}: {head}");
        assert_closed_after_response(&mut raw);
    }
    server.stop().unwrap();
}

/// A GET whose head is exactly `total` bytes long (padding in one header).
fn request_of_length(total: usize) -> String {
    let start = "GET / HTTP/1.1\r\nHost: t\r\nX-Pad: ";
    let end = "\r\n\r\n";
    let pad = total - start.len() - end.len();
    let request = format!("{start}{}{end}", "a".repeat(pad));
    assert_eq!(request.len(), total);
    request
}

#[test]
fn header_block_at_the_limit_passes_and_past_it_gets_431() {
    let server = start(config());
    let limit = loopchat::Config::default().max_header_bytes;
    let (status, head, _) = exchange(server.addr, &request_of_length(limit), false);
    assert_eq!(status, 200, "exactly {limit} bytes: {head}");

    let mut raw = Raw::connect(server.addr);
    raw.send(request_of_length(limit + 1).as_bytes());
    let (status, head, _) = raw.read_response(false);
    assert_eq!(status, 431, "{head}");
    assert_closed_after_response(&mut raw);
    drop(raw);
    server.stop().unwrap();
}

#[test]
fn endless_header_block_gets_431_before_it_ends() {
    let server = start(loopchat::Config {
        max_header_bytes: 1024,
        ..config()
    });
    let mut raw = Raw::connect(server.addr);
    // No blank line ever: the server must not wait for one.
    raw.send(format!("GET / HTTP/1.1\r\nX-Long: {}", "b".repeat(2000)).as_bytes());
    let (status, head, _) = raw.read_response(false);
    assert_eq!(status, 431, "{head}");
    assert_closed_after_response(&mut raw);
    drop(raw);
    server.stop().unwrap();
}

#[test]
fn header_count_at_the_limit_passes_and_past_it_gets_431() {
    let server = start(loopchat::Config {
        max_headers: 4,
        ..config()
    });
    let with = |n: usize| {
        let fields: String = (1..n).map(|i| format!("X-{i}: v\r\n")).collect();
        format!("GET / HTTP/1.1\r\nHost: t\r\n{fields}\r\n")
    };
    let (status, head, _) = exchange(server.addr, &with(4), false);
    assert_eq!(status, 200, "4 fields: {head}");
    let mut raw = Raw::connect(server.addr);
    raw.send(with(5).as_bytes());
    let (status, head, _) = raw.read_response(false);
    assert_eq!(status, 431, "5 fields: {head}");
    assert_closed_after_response(&mut raw);
    server.stop().unwrap();

    // The default limit, 64.
    let server = start(config());
    let fields: String = (0..65).map(|i| format!("X-{i}: v\r\n")).collect();
    let (status, head, _) = exchange(
        server.addr,
        &format!("GET / HTTP/1.1\r\n{fields}\r\n"),
        false,
    );
    assert_eq!(status, 431, "65 fields: {head}");
    drop(raw);
    server.stop().unwrap();
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let server = start(config());
    let mut raw = Raw::connect(server.addr);
    raw.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let (status, head, first) = raw.read_response(false);
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        header_value(&head, "connection").as_deref(),
        Some("keep-alive")
    );
    raw.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let (status, head, second) = raw.read_response(false);
    assert_eq!(status, 200, "{head}");
    assert_eq!(first, second);
    // A third request asks to close: answered, then the server closes.
    raw.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let (status, head, _) = raw.read_response(false);
    assert_eq!(status, 200, "{head}");
    assert_closed_after_response(&mut raw);
    drop(raw);
    server.stop().unwrap();
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = start(config());
    let mut raw = Raw::connect(server.addr);
    raw.send(
        b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD / HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /nope HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let (status, head, body) = raw.read_response(false);
    assert_eq!(status, 200, "{head}");
    assert!(header_value(&head, "content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert!(String::from_utf8(body).unwrap().contains("loopchat_"));
    let (status, head, _) = raw.read_response(true);
    assert_eq!(status, 200, "{head}");
    assert!(header_value(&head, "content-type")
        .unwrap()
        .starts_with("text/html"));
    let (status, head, _) = raw.read_response(false);
    assert_eq!(status, 404, "{head}");
    assert_closed_after_response(&mut raw);
    drop(raw);
    server.stop().unwrap();
}

#[test]
fn pipelined_requests_split_anywhere_are_answered_in_order() {
    let server = start(config());
    let mut raw = Raw::connect(server.addr);
    let both = b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
    // The first write ends in the middle of the second request's line.
    let (a, b) = both.split_at(40);
    raw.send(a);
    let (status, head, _) = raw.read_response(false);
    assert_eq!(status, 200, "{head}");
    assert!(header_value(&head, "content-type")
        .unwrap()
        .starts_with("text/html"));
    raw.send(b);
    let (status, head, _) = raw.read_response(false);
    assert_eq!(status, 200, "{head}");
    assert!(header_value(&head, "content-type")
        .unwrap()
        .starts_with("text/plain"));
    drop(raw);
    server.stop().unwrap();
}

#[test]
fn request_dripped_byte_by_byte_is_served() {
    let server = start(config());
    let mut raw = Raw::connect(server.addr);
    // Two requests, the second with bare LF line ends, one byte per write.
    let requests = b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /metrics HTTP/1.1\nHost: t\n\n";
    for byte in requests {
        raw.send(&[*byte]);
    }
    let (status, head, body) = raw.read_response(false);
    assert_eq!(status, 200, "{head}");
    assert!(!body.is_empty());
    let (status, head, body) = raw.read_response(false);
    assert_eq!(status, 200, "{head}");
    assert!(String::from_utf8(body).unwrap().contains("loopchat_"));
    drop(raw);
    server.stop().unwrap();
}

#[test]
fn connection_close_is_honoured() {
    let server = start(config());
    let mut raw = Raw::connect(server.addr);
    // A second request follows in the same write: it must not be served.
    raw.send(
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n\
          GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let (status, head, _) = raw.read_response(false);
    assert_eq!(status, 200, "{head}");
    assert_eq!(header_value(&head, "connection").as_deref(), Some("close"));
    assert_closed_after_response(&mut raw);
    drop(raw);
    server.stop().unwrap();
}

#[test]
fn http_1_0_closes_by_default_and_keeps_alive_on_request() {
    let server = start(config());
    let mut raw = Raw::connect(server.addr);
    raw.send(b"GET / HTTP/1.0\r\n\r\n");
    let (status, head, body) = raw.read_response(false);
    assert_eq!(status, 200, "{head}");
    assert!(!body.is_empty());
    assert_eq!(header_value(&head, "connection").as_deref(), Some("close"));
    assert_closed_after_response(&mut raw);

    let mut raw = Raw::connect(server.addr);
    raw.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let (status, head, _) = raw.read_response(false);
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        header_value(&head, "connection").as_deref(),
        Some("keep-alive")
    );
    raw.send(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(raw.read_response(false).0, 200);
    assert_closed_after_response(&mut raw);
    drop(raw);
    server.stop().unwrap();
}

#[test]
fn metrics_is_prometheus_text() {
    let server = start(config());
    // One upgrade, one 404, so that their counters have moved.
    let mut ws = Raw::websocket(server.addr, "/echo");
    assert_eq!(get(server.addr, "/missing").0, 404);

    let (status, head, body) = get(server.addr, "/metrics");
    assert_eq!(status, 200, "{head}");
    let content_type = header_value(&head, "content-type").unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(content_type.contains("version=0.0.4"), "{content_type}");
    assert_eq!(content_length(&head), body.len());
    let text = String::from_utf8(body).unwrap();
    for name in [
        "loopchat_upgrades_total",
        "loopchat_connections_accepted_total",
        "loopchat_http_requests_total",
        "loopchat_messages_in_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} counter")),
            "no TYPE line for {name} in:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP line for {name}"
        );
    }
    assert!(text.contains("# TYPE loopchat_connections_open gauge"));
    // Every sample line is `name{labels} value`: the server's own figures are
    // integers; the standard process_* ones (CPU seconds, start time) may not be.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').expect("name value");
        if name.starts_with("process_") {
            assert!(value.parse::<f64>().is_ok(), "{line}");
        } else {
            assert!(name.starts_with("loopchat_"), "{line}");
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }
    assert_eq!(metric(server.addr, "loopchat_upgrades_total"), 1);
    assert_eq!(
        metric(server.addr, "loopchat_http_errors_total{status=\"404\"}"),
        1
    );
    assert_eq!(
        metric(
            server.addr,
            "loopchat_connections_open{phase=\"websocket\"}"
        ),
        1
    );
    ws.send_frame(true, op::CLOSE, &close_payload(1000, b""));
    assert_eq!(ws.read_until_close().1, Some(1000));
    assert!(ws.closed_by_server());
    assert!(eventually(READ_TIMEOUT, || metric(
        server.addr,
        "loopchat_connections_open{phase=\"websocket\"}"
    ) == 0));
    drop(ws);
    server.stop().unwrap();
}

#[test]
fn http_1_1_request_without_exactly_one_host_is_400() {
    let server = start(config());
    for request in [
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        let mut raw = Raw::connect(server.addr);
        raw.send(request.as_bytes());
        let (status, head, _) = raw.read_response(false);
        assert_eq!(status, 400, "{request:?}: {head}");
    }
    server.stop().unwrap();
}

#[test]
fn client_keeping_tcp_open_after_a_closing_response_is_dropped_after_close_timeout() {
    let server = start(loopchat::Config {
        close_timeout: std::time::Duration::from_millis(300),
        ..config()
    });
    let mut raw = Raw::connect(server.addr);
    raw.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(raw.read_response(false).0, 200);
    // The server's FIN arrives; we keep our side open.
    assert_closed_after_response(&mut raw);
    // Only the metrics request itself may remain open.
    let gone = eventually(READ_TIMEOUT, || {
        metric(server.addr, "loopchat_connections_open{phase=\"closing\"}") == 0
            && metric(server.addr, "loopchat_connections_open{phase=\"http\"}") == 1
    });
    assert!(
        gone,
        "the connection is still open long after --close-timeout"
    );
    drop(raw);
    server.stop().unwrap();
}
