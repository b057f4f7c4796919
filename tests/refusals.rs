//! Refusals say why on the wire, in a short plain-text body: a foreign Origin
//! (403) names the flag that allows it, a bad room name (404) says which names
//! are valid, and a full server (503) says it is at its limit.

mod common;
use common::*;

#[test]
fn a_foreign_origin_is_told_which_flag_allows_it() {
    with_server(config(), |addr| {
        let mut raw = Raw::connect(addr);
        let request = upgrade_request("/chat", "Origin: https://evil.example\r\n");
        raw.send(request.as_bytes());
        let (status, _, body) = raw.read_response(false);
        assert_eq!(status, 403);
        let body = String::from_utf8(body).unwrap();
        assert!(
            body.starts_with("403 Forbidden: Origin not allowed"),
            "{body}"
        );
        assert!(body.contains("--allowed-origin"), "{body}");
    });
}

#[test]
fn a_bad_room_name_is_told_what_a_room_name_is() {
    with_server(config(), |addr| {
        let mut raw = Raw::connect(addr);
        raw.send(upgrade_request("/chat/no%20spaces", "").as_bytes());
        let (status, _, body) = raw.read_response(false);
        assert_eq!(status, 404);
        let body = String::from_utf8(body).unwrap();
        assert!(body.contains("A-Z a-z 0-9 _ -"), "{body}");
    });
}

#[test]
fn a_full_server_says_it_is_at_its_limit() {
    with_server(config_with(|c| c.max_connections = Some(1)), |addr| {
        let _first = Raw::websocket(addr, "/echo");
        let mut second = Raw::connect(addr);
        let text = String::from_utf8(second.read_to_eof().unwrap_or_default()).unwrap();
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("--max-connections"), "{text}");
    });
}
