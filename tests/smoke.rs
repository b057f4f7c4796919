mod common;
use common::*;

#[test]
fn smoke_echo_and_page() {
    with_server(config(), |addr| {
        let (status, _, body) = get(addr, "/");
        assert_eq!(status, 200);
        assert!(!body.is_empty());
        let mut ws = client(addr, "/echo");
        ws.send(tungstenite::Message::text("hi")).unwrap();
        assert_eq!(ws.read().unwrap(), tungstenite::Message::text("hi"));
        let mut raw = Raw::websocket(addr, "/echo");
        raw.send_frame(true, op::TEXT, b"yo");
        assert_eq!(raw.read_frame().unwrap().payload, b"yo");
        raw.send_frame(true, op::CLOSE, &1000u16.to_be_bytes());
        assert_eq!(raw.read_until_close().1, Some(1000));
        assert!(raw.closed_by_server());
    });
}
