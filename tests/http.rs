//! HTTP/1.1 over real sockets: the page, static files, errors, limits, keep-alive,
//! pipelining and `/metrics`.

mod common;
use common::*;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Sends `request` on a fresh connection and reads one response.
fn exchange(addr: SocketAddr, request: &str) -> (u16, String, Vec<u8>) {
    let mut raw = Raw::connect(addr);
    raw.send(request.as_bytes());
    raw.read_response(false)
}

/// Reads the next response on `raw` and asserts its status; its head and body.
#[track_caller]
fn expect_response(raw: &mut Raw, status: u16) -> (String, Vec<u8>) {
    let (got, head, body) = raw.read_response(false);
    assert_eq!(got, status, "{head}");
    (head, body)
}

/// Asserts that the Content-Type in `head` starts with `media_type`.
#[track_caller]
fn assert_content_type(head: &str, media_type: &str) {
    let content_type = header_value(head, "content-type").expect("Content-Type");
    assert!(content_type.starts_with(media_type), "{content_type}");
}

fn content_length(head: &str) -> usize {
    header_value(head, "content-length")
        .expect("Content-Length")
        .parse()
        .expect("numeric Content-Length")
}

#[test]
fn get_root_serves_the_page() {
    with_connection(|raw| {
        raw.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let (head, body) = expect_response(raw, 200);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_content_type(&head, "text/html");
        assert_eq!(content_length(&head), body.len());
        assert!(!body.is_empty());
        assert!(String::from_utf8_lossy(&body)
            .to_ascii_lowercase()
            .contains("<html"));
        raw.expect_eof();
    });
}

#[test]
fn head_root_has_the_headers_and_no_body() {
    with_server(config(), |addr| {
        let (_, get_head, get_body) = get(addr, "/");
        let mut raw = Raw::connect(addr);
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
        raw.expect_eof();
    });
}

#[test]
fn head_on_a_keep_alive_connection_is_followed_directly_by_the_next_response() {
    with_connection(|raw| {
        raw.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        let (status, head, _) = raw.read_response(true);
        assert_eq!(status, 200, "{head}");
        assert!(content_length(&head) > 0);
        // If HEAD had sent a body, this would not parse as a status line.
        let (_, body) = expect_response(raw, 200);
        assert!(String::from_utf8(body).unwrap().contains("loopchat_"));
    });
}

#[test]
fn unknown_path_is_404() {
    with_connection(|raw| {
        raw.send(b"GET /no/such/page.html HTTP/1.1\r\nHost: t\r\n\r\n");
        let (head, body) = expect_response(raw, 404);
        assert_eq!(content_length(&head), body.len());
        // Errors close the connection.
        raw.expect_eof();
    });
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

/// [`with_server`] serving a fresh [`StaticSite`] (named `tag`) as its static root.
fn with_static_site(tag: &str, test: impl FnOnce(SocketAddr, &StaticSite)) {
    let site = StaticSite::new(tag);
    let config = config_with(|c| c.static_dir = Some(site.root.clone()));
    with_server(config, |addr| test(addr, &site));
}

#[test]
fn static_dir_serves_files_with_their_content_type() {
    with_static_site("static-types", |addr, _| {
        let (status, head, body) = get(addr, "/style.css");
        assert_eq!(status, 200, "{head}");
        assert_content_type(&head, "text/css");
        assert_eq!(body, b"body { color: red }");
        assert_eq!(content_length(&head), body.len());

        let (status, head, body) = get(addr, "/sub/app.js");
        assert_eq!(status, 200, "{head}");
        let js = header_value(&head, "content-type").unwrap();
        assert!(
            js.starts_with("text/javascript") || js.starts_with("application/javascript"),
            "{js}"
        );
        assert_eq!(body, b"console.log('hi');");

        let (status, head, body) = get(addr, "/");
        assert_eq!(status, 200, "{head}");
        assert_content_type(&head, "text/html");
        assert_eq!(body, b"<html>static index</html>");
    });
}

#[test]
fn static_dir_missing_file_is_404() {
    with_static_site("static-missing", |addr, _| {
        for path in ["/missing.css", "/sub/missing.js", "/sub/", "/%zz"] {
            let (status, head, _) = get(addr, path);
            assert_eq!(status, 404, "{path}: {head}");
        }
    });
}

#[test]
fn static_dir_refuses_path_traversal() {
    with_static_site("static-traversal", |addr, site| {
        assert!(site.root.join("../secret.txt").is_file());
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
            let (status, head, body) = get(addr, path);
            assert_eq!(status, 404, "{path}: {head}");
            assert!(
                !String::from_utf8_lossy(&body).contains("TOP SECRET"),
                "{path} leaked the file"
            );
        }
    });
}

#[test]
fn other_methods_get_405_with_allow() {
    with_server(config(), |addr| {
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
            let mut raw = Raw::connect(addr);
            raw.send(format!("{method} / HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
            let (status, head, _) = raw.read_response(false);
            assert_eq!(status, 405, "{method}: {head}");
            let allow = header_value(&head, "allow").unwrap_or_else(|| panic!("no Allow: {head}"));
            let allowed: Vec<&str> = allow.split(',').map(str::trim).collect();
            assert!(
                allowed.contains(&"GET") && allowed.contains(&"HEAD"),
                "{allow}"
            );
            raw.expect_eof();
        }
        // A request with a body is refused too (the server reads no bodies).
        let mut raw = Raw::connect(addr);
        raw.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
        let (head, _) = expect_response(&mut raw, 405);
        assert!(header_value(&head, "allow").is_some(), "{head}");
    });
}

#[test]
fn malformed_requests_get_400() {
    with_server(config(), |addr| {
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
            let mut raw = Raw::connect(addr);
            raw.send(request.as_bytes());
            let (status, head, _) = raw.read_response(false);
            assert_eq!(status, 400, "{request:?}: {head}");
            raw.expect_eof();
        }
    });
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
    with_server(config(), |addr| {
        let limit = loopchat::Config::default().max_header_bytes;
        let (status, head, _) = exchange(addr, &request_of_length(limit));
        assert_eq!(status, 200, "exactly {limit} bytes: {head}");

        let mut raw = Raw::connect(addr);
        raw.send(request_of_length(limit + 1).as_bytes());
        expect_response(&mut raw, 431);
        raw.expect_eof();
    });
}

#[test]
fn endless_header_block_gets_431_before_it_ends() {
    with_server(config_with(|c| c.max_header_bytes = 1024), |addr| {
        let mut raw = Raw::connect(addr);
        // No blank line ever: the server must not wait for one.
        raw.send(format!("GET / HTTP/1.1\r\nX-Long: {}", "b".repeat(2000)).as_bytes());
        expect_response(&mut raw, 431);
        raw.expect_eof();
    });
}

#[test]
fn header_count_at_the_limit_passes_and_past_it_gets_431() {
    with_server(config_with(|c| c.max_headers = 4), |addr| {
        let with = |n: usize| {
            let fields: String = (1..n).map(|i| format!("X-{i}: v\r\n")).collect();
            format!("GET / HTTP/1.1\r\nHost: t\r\n{fields}\r\n")
        };
        let (status, head, _) = exchange(addr, &with(4));
        assert_eq!(status, 200, "4 fields: {head}");
        let mut raw = Raw::connect(addr);
        raw.send(with(5).as_bytes());
        let (status, head, _) = raw.read_response(false);
        assert_eq!(status, 431, "5 fields: {head}");
        raw.expect_eof();
    });

    // The default limit, 64.
    with_server(config(), |addr| {
        let fields: String = (0..65).map(|i| format!("X-{i}: v\r\n")).collect();
        let (status, head, _) = exchange(addr, &format!("GET / HTTP/1.1\r\n{fields}\r\n"));
        assert_eq!(status, 431, "65 fields: {head}");
    });
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    with_connection(|raw| {
        raw.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        let (head, first) = expect_response(raw, 200);
        assert_eq!(
            header_value(&head, "connection").as_deref(),
            Some("keep-alive")
        );
        raw.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        let (_, second) = expect_response(raw, 200);
        assert_eq!(first, second);
        // A third request asks to close: answered, then the server closes.
        raw.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        expect_response(raw, 200);
        raw.expect_eof();
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    with_connection(|raw| {
        raw.send(
            b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n\
              HEAD / HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /nope HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        let (head, body) = expect_response(raw, 200);
        assert_content_type(&head, "text/plain");
        assert!(String::from_utf8(body).unwrap().contains("loopchat_"));
        let (status, head, _) = raw.read_response(true);
        assert_eq!(status, 200, "{head}");
        assert_content_type(&head, "text/html");
        expect_response(raw, 404);
        raw.expect_eof();
    });
}

#[test]
fn pipelined_requests_split_anywhere_are_answered_in_order() {
    with_connection(|raw| {
        let both = b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
        // The first write ends in the middle of the second request's line.
        let (a, b) = both.split_at(40);
        raw.send(a);
        let (head, _) = expect_response(raw, 200);
        assert_content_type(&head, "text/html");
        raw.send(b);
        let (head, _) = expect_response(raw, 200);
        assert_content_type(&head, "text/plain");
    });
}

#[test]
fn request_dripped_byte_by_byte_is_served() {
    with_connection(|raw| {
        // Two requests, the second with bare LF line ends, one byte per write.
        let requests = b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /metrics HTTP/1.1\nHost: t\n\n";
        for byte in requests {
            raw.send(&[*byte]);
        }
        let (_, body) = expect_response(raw, 200);
        assert!(!body.is_empty());
        let (_, body) = expect_response(raw, 200);
        assert!(String::from_utf8(body).unwrap().contains("loopchat_"));
    });
}

#[test]
fn connection_close_is_honoured() {
    with_connection(|raw| {
        // A second request follows in the same write: it must not be served.
        raw.send(
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n\
              GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        let (head, _) = expect_response(raw, 200);
        assert_eq!(header_value(&head, "connection").as_deref(), Some("close"));
        raw.expect_eof();
    });
}

#[test]
fn http_1_0_closes_by_default_and_keeps_alive_on_request() {
    with_server(config(), |addr| {
        let mut raw = Raw::connect(addr);
        raw.send(b"GET / HTTP/1.0\r\n\r\n");
        let (head, body) = expect_response(&mut raw, 200);
        assert!(!body.is_empty());
        assert_eq!(header_value(&head, "connection").as_deref(), Some("close"));
        raw.expect_eof();

        let mut raw = Raw::connect(addr);
        raw.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let (head, _) = expect_response(&mut raw, 200);
        assert_eq!(
            header_value(&head, "connection").as_deref(),
            Some("keep-alive")
        );
        raw.send(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(raw.read_response(false).0, 200);
        raw.expect_eof();
    });
}

#[test]
fn metrics_is_prometheus_text() {
    with_server(config(), |addr| {
        // One upgrade, one 404, so that their counters have moved.
        let mut ws = Raw::websocket(addr, "/echo");
        assert_eq!(get(addr, "/missing").0, 404);

        let (status, head, body) = get(addr, "/metrics");
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
        // Every sample line is `name{labels} value`.
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (name, value) = line.rsplit_once(' ').expect("name value");
            // The server's own figures are integers; the standard process_* ones
            // (CPU seconds, start time) may not be.
            if name.starts_with("process_") {
                assert!(value.parse::<f64>().is_ok(), "{line}");
            } else {
                assert!(name.starts_with("loopchat_"), "{line}");
                assert!(value.parse::<u64>().is_ok(), "{line}");
            }
        }
        assert_eq!(metric(addr, "loopchat_upgrades_total"), 1);
        assert_eq!(
            metric(addr, "loopchat_http_errors_total{status=\"404\"}"),
            1
        );
        assert_eq!(
            metric(addr, "loopchat_connections_open{phase=\"websocket\"}"),
            1
        );
        ws.send_frame(true, op::CLOSE, &close_payload(1000, b""));
        assert_eq!(ws.read_until_close().1, Some(1000));
        assert!(ws.closed_by_server());
        assert!(eventually(READ_TIMEOUT, || metric(
            addr,
            "loopchat_connections_open{phase=\"websocket\"}"
        ) == 0));
    });
}

#[test]
fn http_1_1_request_without_exactly_one_host_is_400() {
    with_server(config(), |addr| {
        for request in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            let (status, head, _) = exchange(addr, request);
            assert_eq!(status, 400, "{request:?}: {head}");
        }
    });
}

#[test]
fn client_keeping_tcp_open_after_a_closing_response_is_dropped_after_close_timeout() {
    let config = config_with(|c| c.close_timeout = std::time::Duration::from_millis(300));
    with_server(config, |addr| {
        let mut raw = Raw::connect(addr);
        raw.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(raw.read_response(false).0, 200);
        // The server's FIN arrives; we keep our side open.
        raw.expect_eof();
        // Only the metrics request itself may remain open.
        let gone = eventually(READ_TIMEOUT, || {
            metric(addr, "loopchat_connections_open{phase=\"closing\"}") == 0
                && metric(addr, "loopchat_connections_open{phase=\"http\"}") == 1
        });
        assert!(
            gone,
            "the connection is still open long after --close-timeout"
        );
    });
}
