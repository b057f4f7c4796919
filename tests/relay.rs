//! `/relay/ROOM`: every message goes verbatim to every member of the room, the
//! sender included; no envelope, no notices, no history; rooms are separate.

mod common;
use common::*;

/// Waits until `n` relay members are in place (joins take effect in the loop).
fn wait_for_rooms(addr: std::net::SocketAddr, rooms: u64) {
    assert!(eventually(READ_TIMEOUT, || metric(
        addr,
        "loopchat_relay_rooms"
    ) == rooms));
}

#[test]
fn every_member_gets_each_message_verbatim_the_sender_too() {
    with_server(config(), |addr| {
        let mut members: Vec<Raw> = (0..3).map(|_| Raw::websocket(addr, "/relay/r1")).collect();
        let mut elsewhere = Raw::websocket(addr, "/relay/r2");
        wait_for_rooms(addr, 2);
        assert!(eventually(READ_TIMEOUT, || metric(
            addr,
            "loopchat_upgrades_total"
        ) == 4));
        members[0].send_frame(true, op::TEXT, b"{\"any\":\"protocol\"}");
        for member in &mut members {
            let text = member.read_frame().unwrap();
            assert_eq!(text.opcode, op::TEXT);
            assert_eq!(text.payload, b"{\"any\":\"protocol\"}");
        }
        members[1].send_frame(true, op::BINARY, &[0, 1, 2, 255]);
        for member in &mut members {
            let binary = member.read_frame().unwrap();
            assert_eq!(
                (binary.opcode, binary.payload),
                (op::BINARY, vec![0, 1, 2, 255])
            );
        }
        // The other room heard nothing: its first frame is its own message.
        elsewhere.send_frame(true, op::TEXT, b"mine");
        assert_eq!(elsewhere.read_frame().unwrap().payload, b"mine");
        assert_eq!(metric(addr, "loopchat_relays_total"), 3);
    });
}

#[test]
fn a_member_that_left_gets_nothing_more_and_empty_rooms_go() {
    with_server(config(), |addr| {
        let mut stay = Raw::websocket(addr, "/relay/r");
        let mut go = Raw::websocket(addr, "/relay/r");
        wait_for_rooms(addr, 1);
        go.send_frame(true, op::CLOSE, &close_payload(1000, b""));
        go.expect_close(1000);
        assert!(eventually(READ_TIMEOUT, || metric(
            addr,
            "loopchat_connections_open{phase=\"websocket\"}"
        ) == 1));
        stay.send_frame(true, op::TEXT, b"alone");
        assert_eq!(stay.read_frame().unwrap().payload, b"alone");
        stay.send_frame(true, op::CLOSE, &close_payload(1000, b""));
        stay.expect_close(1000);
        wait_for_rooms(addr, 0);
    });
}

#[test]
fn relay_room_names_follow_the_chat_rules() {
    with_server(config(), |addr| {
        let mut raw = Raw::connect(addr);
        raw.send(upgrade_request("/relay/", "").as_bytes());
        assert_eq!(raw.read_response(false).0, 404);
    });
}

#[test]
fn a_relay_message_over_the_limit_gets_1009() {
    with_server(config_with(|c| c.max_message_size = 100), |addr| {
        let mut member = Raw::websocket(addr, "/relay/r");
        member.send_frame(true, op::BINARY, &[0; 101]);
        member.expect_close(1009);
    });
}

#[test]
fn a_burst_in_one_write_reaches_every_member_whole_in_order_and_counted_per_delivery() {
    // The burst arrives in one read, so its messages are sent to the room in one
    // loop iteration: one batch, queued once on each member (`batches.rs`).
    const MEMBERS: usize = 4;
    const BURST: usize = 60;
    with_server(config(), |addr| {
        let mut members: Vec<Raw> = (0..MEMBERS)
            .map(|_| Raw::websocket(addr, "/relay/burst"))
            .collect();
        wait_for_rooms(addr, 1);
        let frames_before = metric(addr, "loopchat_frames_out_total");
        let sent: Vec<(u8, Vec<u8>)> = (0..BURST)
            .map(|i| match i % 3 {
                0 => (op::BINARY, vec![i as u8; i * 11]),
                _ => (op::TEXT, format!("text {i}").into_bytes()),
            })
            .collect();
        let burst: Vec<u8> = (sent.iter())
            .flat_map(|(opcode, payload)| client_frame(true, *opcode, payload))
            .collect();
        members[1].send(&burst);
        for member in &mut members {
            for (opcode, payload) in &sent {
                let frame = member.read_frame().expect("every message");
                assert_eq!((frame.opcode, &frame.payload), (*opcode, payload));
            }
        }
        assert_eq!(metric(addr, "loopchat_relays_total"), BURST as u64);
        // Deliveries: each message once per member, batched or not.
        assert_eq!(
            metric(addr, "loopchat_frames_out_total") - frames_before,
            (BURST * MEMBERS) as u64
        );
    });
}
