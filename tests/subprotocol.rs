//! `--subprotocol` over a real socket (RFC 6455 §4.2.2): the 101 names the
//! client's first offered subprotocol that the server speaks, or none, and the
//! upgrade goes on either way.

mod common;
use common::*;
use loopchat::Config;

fn speaking(names: &[&str]) -> Config {
    Config {
        subprotocols: names.iter().map(|s| s.to_string()).collect(),
        ..config()
    }
}

/// The response head to an upgrade of `/echo` with `extra` header lines (each
/// ending in CRLF), and the connection.
fn upgrade(server: &loopchat::RunningServer, extra: &str) -> (String, Raw) {
    let mut raw = Raw::connect(server.addr);
    let head = raw.request(&upgrade_request("/echo", extra));
    assert!(head.starts_with("HTTP/1.1 101 "), "upgrade refused: {head}");
    (head, raw)
}

fn protocol_lines(head: &str) -> Vec<&str> {
    head.lines()
        .filter(|l| {
            l.to_ascii_lowercase()
                .starts_with("sec-websocket-protocol:")
        })
        .collect()
}

fn echoes(raw: &mut Raw) {
    raw.send_frame(true, op::TEXT, b"still a websocket");
    assert_eq!(raw.read_frame().unwrap().payload, b"still a websocket");
}

#[test]
fn without_the_flag_an_offer_gets_no_subprotocol_and_the_upgrade_goes_on() {
    let server = start(config());
    let (head, mut raw) = upgrade(&server, "Sec-WebSocket-Protocol: chat\r\n");
    assert!(protocol_lines(&head).is_empty(), "{head}");
    echoes(&mut raw);
    server.stop().unwrap();
}

#[test]
fn the_first_offered_subprotocol_the_server_speaks_is_selected() {
    let server = start(speaking(&["chat", "superchat"]));
    // Two fields and a comma-separated list: one offer, in the client's order.
    let offer = "Sec-WebSocket-Protocol: mqtt, superchat\r\nSec-WebSocket-Protocol: chat\r\n";
    let (head, mut raw) = upgrade(&server, offer);
    assert_eq!(
        protocol_lines(&head),
        ["Sec-WebSocket-Protocol: superchat"],
        "{head}"
    );
    echoes(&mut raw);
    server.stop().unwrap();
}

#[test]
fn an_offer_with_nothing_in_common_gets_no_subprotocol_and_the_upgrade_goes_on() {
    let server = start(speaking(&["chat"]));
    let (head, mut raw) = upgrade(&server, "Sec-WebSocket-Protocol: mqtt, Chat\r\n");
    assert!(protocol_lines(&head).is_empty(), "{head}");
    echoes(&mut raw);
    let (head, mut raw) = upgrade(&server, "");
    assert!(protocol_lines(&head).is_empty(), "{head}");
    echoes(&mut raw);
    server.stop().unwrap();
}

#[test]
fn a_client_that_requires_its_subprotocol_connects() {
    // tungstenite, like a browser, fails a connection whose offer gets no answer.
    use tungstenite::client::IntoClientRequest;
    let server = start(speaking(&["chat"]));
    let mut request = format!("ws://{}/echo", server.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "v2.chat, chat".parse().unwrap());
    let (mut ws, response) = tungstenite::connect(request).expect("upgrade with a subprotocol");
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "chat");
    ws.send(tungstenite::Message::text("hi")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("hi"));
    server.stop().unwrap();
}
