//! The RFC 6455 §4 opening handshake over real sockets: the 101 response, every
//! reason to refuse an upgrade, the Origin check (§10.2), and frame bytes that
//! arrive in the same write as the request.

mod common;
use common::*;
use std::net::SocketAddr;

/// The §1.3 example key and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The header lines of a valid upgrade request, as (name, value).
fn good_headers() -> Vec<(&'static str, String)> {
    vec![
        ("Host", "127.0.0.1".to_string()),
        ("Upgrade", "websocket".to_string()),
        ("Connection", "Upgrade".to_string()),
        ("Sec-WebSocket-Key", KEY.to_string()),
        ("Sec-WebSocket-Version", "13".to_string()),
    ]
}

fn build(request_line: &str, headers: &[(&str, String)]) -> String {
    let mut out = format!("{request_line}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out
}

/// A GET of `path` over HTTP/1.1 with `headers`: an upgrade request when they
/// are the good ones.
fn upgrade(path: &str, headers: &[(&str, String)]) -> String {
    build(&format!("GET {path} HTTP/1.1"), headers)
}

/// The good headers with `name` removed.
fn without(name: &str) -> Vec<(&'static str, String)> {
    good_headers()
        .into_iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
        .collect()
}

/// The good headers with `name`'s value replaced.
fn with_value(name: &str, value: &str) -> Vec<(&'static str, String)> {
    good_headers()
        .into_iter()
        .map(|(n, v)| {
            if n.eq_ignore_ascii_case(name) {
                (n, value.to_string())
            } else {
                (n, v)
            }
        })
        .collect()
}

/// The good headers plus one more.
fn plus(name: &'static str, value: &str) -> Vec<(&'static str, String)> {
    let mut headers = good_headers();
    headers.push((name, value.to_string()));
    headers
}

/// Sends a request on a fresh connection and reads the response head: its
/// status, the head, and the connection (any body still unread).
fn attempt(addr: SocketAddr, request: &str) -> (u16, String, Raw) {
    let mut raw = Raw::connect(addr);
    raw.send(request.as_bytes());
    let (status, head, _) = raw.read_response(true);
    (status, head, raw)
}

/// Asserts the request gets `status` (not an upgrade) and the connection closes.
fn assert_refused(addr: SocketAddr, request: &str, status: u16) -> String {
    let (got, head, mut raw) = attempt(addr, request);
    assert_eq!(got, status, "request:\n{request}\nresponse:\n{head}");
    assert!(header_value(&head, "sec-websocket-accept").is_none());
    let length: usize = if request.starts_with("HEAD ") {
        0 // RFC 9110 §9.3.2: no body, whatever Content-Length says
    } else {
        header_value(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let rest = raw.read_to_eof().expect("refusal closes the connection");
    assert_eq!(rest.len(), length, "body after the head: {rest:?}");
    head
}

/// Asserts the request is upgraded with the right accept key.
fn assert_upgraded(addr: SocketAddr, request: &str) -> Raw {
    let (status, head, raw) = attempt(addr, request);
    assert_eq!(status, 101, "request:\n{request}\nresponse:\n{head}");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(
        header_value(&head, "sec-websocket-accept").as_deref(),
        Some(ACCEPT)
    );
    assert!(header_value(&head, "upgrade")
        .unwrap()
        .eq_ignore_ascii_case("websocket"));
    assert!(header_value(&head, "connection")
        .unwrap()
        .eq_ignore_ascii_case("upgrade"));
    // No extension or subprotocol was asked for, so none is selected.
    assert!(header_value(&head, "sec-websocket-extensions").is_none());
    assert!(header_value(&head, "sec-websocket-protocol").is_none());
    raw
}

#[test]
fn valid_upgrades_get_101_with_the_rfc_accept_key() {
    with_server(config(), |addr| {
        for path in ["/echo", "/chat", "/chat/room", "/chat/Room_2-b?name=ann"] {
            let mut raw = assert_upgraded(addr, &upgrade(path, &good_headers()));
            if path.starts_with("/chat") {
                // The chat greets the newcomer first.
                assert!(raw.read_text().contains("\"type\":\"welcome\""));
            } else {
                raw.expect_echo("ping?");
            }
        }
        // The common helper's request is the same §1.3 example.
        Raw::websocket(addr, "/echo");
    });
}

#[test]
fn tungstenite_client_handshakes() {
    with_server(config(), |addr| {
        for path in ["/echo", "/chat", "/chat/room"] {
            let mut ws = client(addr, path);
            ws.close(None).unwrap();
            // Read until the server's close answer completes the handshake.
            loop {
                match ws.read() {
                    Ok(_) => {}
                    Err(tungstenite::Error::ConnectionClosed) => break,
                    Err(e) => panic!("{path}: {e}"),
                }
            }
        }
    });
}

#[test]
fn non_get_upgrade_is_405() {
    with_server(config(), |addr| {
        for method in ["POST", "PUT", "HEAD"] {
            let head = assert_refused(
                addr,
                &build(&format!("{method} /echo HTTP/1.1"), &good_headers()),
                405,
            );
            assert!(header_value(&head, "allow").is_some(), "{head}");
        }
    });
}

#[test]
fn http_1_0_upgrade_is_400() {
    with_server(config(), |addr| {
        assert_refused(addr, &build("GET /echo HTTP/1.0", &good_headers()), 400);
    });
}

#[test]
fn missing_host_is_400() {
    with_server(config(), |addr| {
        assert_refused(addr, &upgrade("/echo", &without("Host")), 400);
    });
}

#[test]
fn missing_upgrade_is_426() {
    with_server(config(), |addr| {
        let head = assert_refused(addr, &upgrade("/echo", &without("Upgrade")), 426);
        assert_eq!(
            header_value(&head, "sec-websocket-version").as_deref(),
            Some("13")
        );
        // A plain page request to a WebSocket endpoint.
        let (status, head, _) = get(addr, "/chat");
        assert_eq!(status, 426, "{head}");
    });
}

#[test]
fn upgrade_to_something_else_is_400() {
    with_server(config(), |addr| {
        for value in ["h2c", "websocket2", "web socket"] {
            assert_refused(addr, &upgrade("/echo", &with_value("Upgrade", value)), 400);
        }
    });
}

#[test]
fn connection_without_upgrade_is_400() {
    with_server(config(), |addr| {
        for value in ["keep-alive", "close", "upgraded"] {
            assert_refused(
                addr,
                &upgrade("/echo", &with_value("Connection", value)),
                400,
            );
        }
        assert_refused(addr, &upgrade("/echo", &without("Connection")), 400);
    });
}

#[test]
fn missing_key_is_400() {
    with_server(config(), |addr| {
        assert_refused(addr, &upgrade("/echo", &without("Sec-WebSocket-Key")), 400);
    });
}

#[test]
fn key_that_is_not_16_bytes_is_400() {
    with_server(config(), |addr| {
        for key in [
            "c2hvcnQ=",                     // "short": 5 bytes
            "AAAAAAAAAAAAAAAAAAAAAAAAAA==", // 19 bytes
            "AAAAAAAAAAAAAAAAAAAAAA",       // 16 bytes, but padding missing
            "!!!!notbase64!!!!!!!!!==",
            "",
        ] {
            assert_refused(
                addr,
                &upgrade("/echo", &with_value("Sec-WebSocket-Key", key)),
                400,
            );
        }
    });
}

#[test]
fn duplicate_key_is_400() {
    with_server(config(), |addr| {
        assert_refused(
            addr,
            &upgrade(
                "/echo",
                &plus("Sec-WebSocket-Key", "AQIDBAUGBwgJCgsMDQ4PEA=="),
            ),
            400,
        );
        // Even the same key twice.
        assert_refused(
            addr,
            &upgrade("/echo", &plus("Sec-WebSocket-Key", KEY)),
            400,
        );
    });
}

#[test]
fn other_version_is_426_naming_13() {
    with_server(config(), |addr| {
        for version in ["8", "12", "14", "abc"] {
            let head = assert_refused(
                addr,
                &upgrade("/echo", &with_value("Sec-WebSocket-Version", version)),
                426,
            );
            // §4.4: the server says which version it speaks.
            assert_eq!(
                header_value(&head, "sec-websocket-version").as_deref(),
                Some("13"),
                "{head}"
            );
        }
    });
}

#[test]
fn missing_version_is_426() {
    with_server(config(), |addr| {
        let head = assert_refused(
            addr,
            &upgrade("/echo", &without("Sec-WebSocket-Version")),
            426,
        );
        assert_eq!(
            header_value(&head, "sec-websocket-version").as_deref(),
            Some("13")
        );
    });
}

#[test]
fn origin_from_another_site_is_403() {
    with_server(config(), |addr| {
        let port = addr.port();
        for origin in [
            "http://evil.example".to_string(),
            "https://evil.example".to_string(),
            format!("http://evil.example:{port}"),
            "http://127.0.0.1:1".to_string(),
            "null".to_string(),
        ] {
            assert_refused(
                addr,
                &upgrade(
                    "/chat",
                    &with_value("Host", &addr.to_string())
                        .into_iter()
                        .chain([("Origin", origin.clone())])
                        .collect::<Vec<_>>(),
                ),
                403,
            );
        }
    });
}

#[test]
fn origin_matching_host_is_101() {
    with_server(config(), |addr| {
        let host = addr.to_string();
        let mut headers = with_value("Host", &host);
        headers.push(("Origin", format!("http://{host}")));
        assert_upgraded(addr, &upgrade("/echo", &headers));
        // Host without a port means port 80, as does an http origin without one.
        assert_upgraded(addr, &upgrade("/echo", &plus("Origin", "http://127.0.0.1")));
        // Scheme and host compare case-insensitively.
        let mut headers = with_value("Host", &host);
        headers.push(("Origin", format!("HTTP://{host}")));
        assert_upgraded(addr, &upgrade("/echo", &headers));
    });
}

#[test]
fn no_origin_is_101() {
    with_server(config(), |addr| {
        assert_upgraded(addr, &upgrade("/chat", &good_headers()));
    });
}

#[test]
fn allowed_origins_widen_the_policy() {
    let config = config_with(|c| c.allowed_origins = vec!["https://chat.example.com".to_string()]);
    with_server(config, |addr| {
        assert_upgraded(
            addr,
            &upgrade("/chat", &plus("Origin", "https://chat.example.com")),
        );
        assert_refused(
            addr,
            &upgrade("/chat", &plus("Origin", "https://other.example.com")),
            403,
        );
    });

    let config = config_with(|c| c.allowed_origins = vec!["*".to_string()]);
    with_server(config, |addr| {
        assert_upgraded(
            addr,
            &upgrade("/chat", &plus("Origin", "http://anything.example")),
        );
    });
}

#[test]
fn invalid_room_is_404() {
    with_server(config(), |addr| {
        for path in [
            "/chat/a.b",
            "/chat/a/b",
            "/chat/a%20b",
            &format!("/chat/{}", "r".repeat(33)),
        ] {
            assert_refused(addr, &upgrade(path, &good_headers()), 404);
        }
        // 32 characters is the longest valid name.
        assert_upgraded(
            addr,
            &upgrade(&format!("/chat/{}", "r".repeat(32)), &good_headers()),
        );
    });
}

#[test]
fn header_names_and_tokens_are_case_insensitive() {
    with_server(config(), |addr| {
        let request = "GET /echo HTTP/1.1\r\n\
                   host: 127.0.0.1\r\n\
                   upgrade: WebSocket\r\n\
                   connection: keep-alive, Upgrade\r\n\
                   sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   SEC-WEBSOCKET-VERSION: 13\r\n\r\n";
        let mut raw = assert_upgraded(addr, request);
        raw.expect_echo("still works");

        let request = "GET /echo HTTP/1.1\r\n\
                   HOST: 127.0.0.1\r\n\
                   UPGRADE: WEBSOCKET\r\n\
                   CONNECTION: UPGRADE\r\n\
                   Sec-Websocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   sec-websocket-version: 13\r\n\r\n";
        assert_upgraded(addr, request);
    });
}

#[test]
fn frame_bytes_in_the_same_write_are_the_first_frame() {
    with_connection(|raw| {
        let mut bytes = upgrade_request("/echo", "").into_bytes();
        bytes.extend(client_frame(true, op::TEXT, b"early bird"));
        bytes.extend(client_frame(true, op::PING, b"p"));
        raw.send(&bytes);
        let head = raw.read_head();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(raw.read_text(), "early bird");
        raw.expect_pong(b"p");
    });
}

#[test]
fn frame_bytes_in_the_same_write_on_the_chat() {
    with_connection(|raw| {
        let mut bytes = upgrade_request("/chat/early?name=eve", "").into_bytes();
        bytes.extend(client_frame(true, op::TEXT, b"first words"));
        raw.send(&bytes);
        let head = raw.read_head();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(raw.read_text().contains("\"type\":\"welcome\""));
        assert!(raw.read_text().contains("\"type\":\"join\""));
        let message = raw.read_text();
        assert!(
            message.contains("\"type\":\"message\"")
                && message.contains("\"text\":\"first words\""),
            "{message}"
        );
    });
}

#[test]
fn upgrade_after_a_keep_alive_request_on_the_same_connection() {
    with_connection(|raw| {
        let mut bytes = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
        bytes.extend(upgrade_request("/echo", "").into_bytes());
        raw.send(&bytes);
        let (status, head, _) = raw.read_response(false);
        assert_eq!(status, 200, "{head}");
        let head = raw.read_head();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        raw.send_frame(true, op::BINARY, &[1, 2, 3]);
        let frame = raw.read_frame().unwrap();
        assert_eq!((frame.opcode, frame.payload), (op::BINARY, vec![1, 2, 3]));
    });
}

#[test]
fn refusals_are_counted_in_metrics() {
    with_server(config(), |addr| {
        assert_refused(
            addr,
            &upgrade("/echo", &with_value("Sec-WebSocket-Version", "8")),
            426,
        );
        assert_refused(
            addr,
            &upgrade("/echo", &plus("Origin", "http://evil.example")),
            403,
        );
        assert_eq!(
            metric(addr, "loopchat_http_errors_total{status=\"426\"}"),
            1
        );
        assert_eq!(
            metric(addr, "loopchat_http_errors_total{status=\"403\"}"),
            1
        );
        assert_eq!(metric(addr, "loopchat_upgrades_total"), 0);
    });
}
