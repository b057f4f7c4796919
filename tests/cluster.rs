//! Rooms across processes through Redis (`--redis`), with real parts: a
//! `redis-server` of the test's own on a free port, loopchat nodes as child
//! processes, chat clients on real sockets, and faults made for real (SIGKILL,
//! SIGSTOP, `CLIENT KILL`, a blackholing proxy). Every wait is for a condition,
//! with a generous deadline; nothing asserts on a duration. Without
//! redis-server these tests are skipped (failed under `CI=true`).

mod common;
use common::json_field;
use common::node::{ChatClient, Node};
use common::proxy::FaultProxy;
use common::redis::RedisServer;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// Generous: a condition that holds is met long before.
const DEADLINE: Duration = Duration::from_secs(15);

/// A node, once its link to Redis is up (until then, a few milliseconds after
/// it listens, it serves alone, and a member joining would be counted locally).
fn node(redis_url: &str, extra: &[&str]) -> Node {
    let node = unlinked_node(redis_url, extra);
    wait("the node's link to Redis", || {
        metric(node.addr(), "loopchat_cluster_link_up") == 1
    });
    node
}

/// Fast liveness, so that faults are found in a test's time (the default is
/// 1 s). Tests where members must expire add `FAST_EXPIRY`.
fn unlinked_node(redis_url: &str, extra: &[&str]) -> Node {
    let mut args = vec![
        "--redis",
        redis_url,
        "--redis-ping",
        "100ms",
        "--max-message-rate",
        "0",
        "--log-level",
        "debug",
    ];
    args.extend_from_slice(extra);
    Node::start(&args)
}

/// A presence TTL short enough to wait out (the default is 30 s).
const FAST_EXPIRY: &[&str] = &["--presence-ttl", "2s"];

fn metric(addr: SocketAddr, name: &str) -> u64 {
    common::metric(addr, name)
}

/// Waits until `condition` holds, or fails the test saying what was awaited.
fn wait(what: &str, condition: impl FnMut() -> bool) {
    assert!(
        common::eventually(DEADLINE, condition),
        "timed out waiting for {what}"
    );
}

fn is_type(json: &str, kind: &str) -> bool {
    json_field(json, "type") == Some(kind)
}

fn online(json: &str) -> Option<u64> {
    json_field(json, "online")?.parse().ok()
}

/// Waits for the message `text` on `client`.
fn expect_message(client: &mut ChatClient, text: &str) {
    let seen = client.wait_for(DEADLINE, |m| {
        is_type(m, "message") && json_field(m, "text") == Some(text)
    });
    assert!(seen.is_some(), "never got {text:?}; saw {:?}", client.seen);
}

#[test]
fn members_on_two_nodes_chat_both_ways_with_one_count() {
    let Some(redis) = RedisServer::start("members_on_two_nodes_chat_both_ways_with_one_count")
    else {
        return;
    };
    let (one, two) = (node(&redis.url(), &[]), node(&redis.url(), &[]));
    let mut ann = ChatClient::join(one.addr(), "r", "ann");
    assert_eq!(online(ann.welcome()), Some(1), "{}", ann.welcome());
    let mut bob = ChatClient::join(two.addr(), "r", "bob");
    assert_eq!(online(bob.welcome()), Some(2), "{}", bob.welcome());
    assert!(
        bob.welcome().contains("\"name\":\"ann\""),
        "{}",
        bob.welcome()
    );
    let joined = ann.wait_for(DEADLINE, |m| is_type(m, "join") && m.contains("bob"));
    assert_eq!(joined.as_deref().and_then(online), Some(2));

    ann.say("hello from one");
    expect_message(&mut bob, "hello from one");
    expect_message(&mut ann, "hello from one"); // the sender's copy, from Redis
    bob.say("hello from two");
    expect_message(&mut ann, "hello from two");

    // Ids are unique over the cluster and safe in JSON numbers.
    let ids: Vec<u64> = [ann.welcome(), bob.welcome()]
        .iter()
        .map(|w| json_field(w, "id").unwrap().parse().unwrap())
        .collect();
    assert_ne!(ids[0], ids[1]);
    assert!(ids.iter().all(|&id| id < 1 << 53), "{ids:?}");

    drop(bob);
    let left = ann.wait_for(DEADLINE, |m| is_type(m, "leave"));
    assert_eq!(left.as_deref().and_then(online), Some(1));
    assert!(metric(one.addr(), "loopchat_cluster_link_up") == 1);
}

#[test]
fn senders_on_three_nodes_are_seen_in_one_order_everywhere() {
    let Some(redis) = RedisServer::start("senders_on_three_nodes_are_seen_in_one_order_everywhere")
    else {
        return;
    };
    let nodes: Vec<Node> = (0..3).map(|_| node(&redis.url(), &[])).collect();
    let mut senders: Vec<ChatClient> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| ChatClient::join(n.addr(), "order", &format!("sender{i}")))
        .collect();
    let mut readers: Vec<ChatClient> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| ChatClient::join(n.addr(), "order", &format!("reader{i}")))
        .collect();
    const EACH: usize = 40;
    for round in 0..EACH {
        for (i, sender) in senders.iter_mut().enumerate() {
            sender.say(&format!("s{i}-{round}"));
        }
    }
    let last: Vec<String> = (0..3).map(|i| format!("s{i}-{}", EACH - 1)).collect();
    let mut orders = Vec::new();
    for client in readers.iter_mut().chain(senders.iter_mut()) {
        let mut done = [false; 3];
        let finished = client.wait_for(DEADLINE, |m| {
            for (i, text) in last.iter().enumerate() {
                done[i] |= json_field(m, "text") == Some(text.as_str());
            }
            done.iter().all(|&d| d)
        });
        assert!(
            finished.is_some(),
            "not everything arrived: {:?}",
            client.seen
        );
        let order: Vec<String> = client
            .messages_texts()
            .into_iter()
            .filter(|t| t.starts_with('s'))
            .collect();
        assert_eq!(order.len(), 3 * EACH, "lost or duplicated: {order:?}");
        orders.push(order);
    }
    for order in &orders[1..] {
        assert_eq!(order, &orders[0], "two members saw different orders");
    }
    // Each sender's own messages stay in the order it sent them.
    for i in 0..3 {
        let mine: Vec<&String> = orders[0]
            .iter()
            .filter(|t| t.starts_with(&format!("s{i}-")))
            .collect();
        let sent: Vec<String> = (0..EACH).map(|r| format!("s{i}-{r}")).collect();
        assert_eq!(mine, sent.iter().collect::<Vec<_>>());
    }
}

#[test]
fn history_said_on_one_node_is_replayed_on_another() {
    let Some(redis) = RedisServer::start("history_said_on_one_node_is_replayed_on_another") else {
        return;
    };
    let (one, two) = (node(&redis.url(), &[]), node(&redis.url(), &[]));
    let mut ann = ChatClient::join(one.addr(), "h", "ann");
    for i in 0..5 {
        ann.say(&format!("old {i}"));
    }
    expect_message(&mut ann, "old 4");
    // Node two has never had this room: its newcomer gets the history from Redis,
    // then its own join, then what is said next; nothing twice, nothing missed.
    let mut cat = ChatClient::join(two.addr(), "h", "cat");
    ann.say("new");
    expect_message(&mut cat, "new");
    let texts = cat.messages_texts();
    assert_eq!(texts, ["old 0", "old 1", "old 2", "old 3", "old 4", "new"]);
    let join_at = cat.seen.iter().position(|m| is_type(m, "join")).unwrap();
    let new_at = cat.seen.iter().position(|m| m.contains("\"new\"")).unwrap();
    assert!(join_at < new_at, "{:?}", cat.seen);
    // A second newcomer on node two gets the same history from the node's cache.
    let mut dan = ChatClient::join(two.addr(), "h", "dan");
    dan.wait_for(DEADLINE, |m| is_type(m, "join") && m.contains("dan"));
    assert_eq!(dan.messages_texts(), texts);
}

#[test]
fn a_killed_node_s_members_leave_once_each() {
    let Some(redis) = RedisServer::start("a_killed_node_s_members_leave_once_each") else {
        return;
    };
    let nodes: Vec<Node> = (0..2).map(|_| node(&redis.url(), FAST_EXPIRY)).collect();
    let mut doomed = node(&redis.url(), FAST_EXPIRY);
    let mut watchers: Vec<ChatClient> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| ChatClient::join(n.addr(), "k", &format!("watcher{i}")))
        .collect();
    let _x = ChatClient::join(doomed.addr(), "k", "x");
    let _y = ChatClient::join(doomed.addr(), "k", "y");
    for w in &mut watchers {
        let four = w.wait_for(DEADLINE, |m| online(m) == Some(4));
        assert!(four.is_some(), "{:?}", w.seen);
    }
    doomed.kill9();
    // Within the presence TTL (2 s here) a sweep by either survivor removes
    // them: one leave notice each, whoever sweeps, and the count ends at 2.
    for w in &mut watchers {
        let two = w.wait_for(DEADLINE, |m| is_type(m, "leave") && online(m) == Some(2));
        assert!(two.is_some(), "{:?}", w.seen);
    }
    // Another join proves later events went through; then count the leaves.
    let _z = ChatClient::join(nodes[0].addr(), "k", "z");
    for w in &mut watchers {
        w.wait_for(DEADLINE, |m| is_type(m, "join") && m.contains("\"z\""));
        let leaves: Vec<&String> = w.seen.iter().filter(|m| is_type(m, "leave")).collect();
        assert_eq!(leaves.len(), 2, "one leave each for x and y: {leaves:?}");
        assert!(leaves.iter().any(|m| m.contains("\"x\"")));
        assert!(leaves.iter().any(|m| m.contains("\"y\"")));
    }
}

/// One fault to Redis, then the chat must work across nodes again; while the
/// link is down each node serves its own members.
fn survive(test: &str, fault: impl FnOnce(&mut RedisServer), heal: impl FnOnce(&mut RedisServer)) {
    let Some(mut redis) = RedisServer::start(test) else {
        return;
    };
    let (one, two) = (node(&redis.url(), &[]), node(&redis.url(), &[]));
    let mut ann = ChatClient::join(one.addr(), "f", "ann");
    let mut bob = ChatClient::join(two.addr(), "f", "bob");
    ann.wait_for(DEADLINE, |m| online(m) == Some(2));
    fault(&mut redis);
    wait("node one to notice", || {
        metric(one.addr(), "loopchat_cluster_link_up") == 0
    });
    ann.say("alone");
    expect_message(&mut ann, "alone"); // island: delivered locally, at once
    assert!(metric(one.addr(), "loopchat_cluster_island_messages_total") >= 1);
    heal(&mut redis);
    for n in [&one, &two] {
        wait("the link to come back", || {
            metric(n.addr(), "loopchat_cluster_link_up") == 1
        });
    }
    // Both nodes resubscribe and re-register: messages cross again, both ways.
    wait("cross-node chat to work again", || {
        ann.say("again");
        bob.wait_for(Duration::from_millis(500), |m| m.contains("\"again\""))
            .is_some()
    });
    bob.say("back");
    expect_message(&mut ann, "back");
    assert!(metric(one.addr(), "loopchat_cluster_reconnects_total") >= 1);
    assert!(one.log().contains("redis link to"), "{}", one.log());
}

#[test]
fn chat_works_again_after_redis_is_killed_and_restarted() {
    survive(
        "chat_works_again_after_redis_is_killed_and_restarted",
        |redis| redis.kill9(),
        |redis| redis.restart(),
    );
}

#[test]
fn chat_works_again_after_redis_is_stopped_and_continued() {
    survive(
        "chat_works_again_after_redis_is_stopped_and_continued",
        |redis| redis.pause(),
        |redis| redis.resume(),
    );
}

#[test]
fn chat_works_again_after_the_subscriber_is_cut() {
    let Some(redis) = RedisServer::start("chat_works_again_after_the_subscriber_is_cut") else {
        return;
    };
    let (one, two) = (node(&redis.url(), &[]), node(&redis.url(), &[]));
    let mut ann = ChatClient::join(one.addr(), "c", "ann");
    let mut bob = ChatClient::join(two.addr(), "c", "bob");
    ann.wait_for(DEADLINE, |m| online(m) == Some(2));
    // What Redis does to a subscriber past client-output-buffer-limit pubsub.
    redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    for n in [&one, &two] {
        wait("a reconnect", || {
            metric(n.addr(), "loopchat_cluster_reconnects_total") >= 1
                && metric(n.addr(), "loopchat_cluster_link_up") == 1
        });
    }
    wait("cross-node chat to work again", || {
        bob.say("again");
        ann.wait_for(Duration::from_millis(500), |m| m.contains("\"again\""))
            .is_some()
    });
}

#[test]
fn a_node_started_without_redis_serves_alone_then_joins() {
    let Some(mut redis) =
        RedisServer::start("a_node_started_without_redis_serves_alone_then_joins")
    else {
        return;
    };
    redis.kill9(); // its port is now free: nothing answers there
    let lonely = unlinked_node(&redis.url(), &[]);
    let mut ann = ChatClient::join(lonely.addr(), "a", "ann");
    let mut amy = ChatClient::join(lonely.addr(), "a", "amy");
    ann.say("local");
    expect_message(&mut amy, "local");
    assert!(lonely.log().contains("unreachable"), "{}", lonely.log());
    redis.restart();
    wait("the link to come up", || {
        metric(lonely.addr(), "loopchat_cluster_link_up") == 1
    });
    let other = node(&redis.url(), &[]);
    let mut bob = ChatClient::join(other.addr(), "a", "bob");
    // Node one's members were registered when the link came up: bob counts them.
    assert_eq!(online(bob.welcome()), Some(3), "{}", bob.welcome());
    bob.say("hi both");
    expect_message(&mut ann, "hi both");
    expect_message(&mut amy, "hi both");
}

#[test]
fn a_node_cut_off_goes_alone_its_members_expire_and_come_back() {
    let Some(redis) =
        RedisServer::start("a_node_cut_off_goes_alone_its_members_expire_and_come_back")
    else {
        return;
    };
    let proxy = FaultProxy::start(redis.addr());
    let one = node(&redis.url(), FAST_EXPIRY);
    let cut = node(&proxy.url(), FAST_EXPIRY);
    let mut ann = ChatClient::join(one.addr(), "p", "ann");
    let mut bob = ChatClient::join(cut.addr(), "p", "bob");
    ann.wait_for(DEADLINE, |m| online(m) == Some(2));
    proxy.blackhole();
    wait("the cut node to notice", || {
        metric(cut.addr(), "loopchat_cluster_link_up") == 0
    });
    // Past the TTL node one sweeps bob out: one leave.
    let left = ann.wait_for(DEADLINE, |m| is_type(m, "leave") && m.contains("bob"));
    assert_eq!(left.as_deref().and_then(online), Some(1));
    ann.say("while you were away");
    proxy.forward();
    wait("the link to come back", || {
        metric(cut.addr(), "loopchat_cluster_link_up") == 1
    });
    // Re-registered: bob joins again, and the message said meanwhile reaches
    // him from the history (a repaired gap).
    let rejoined = ann.wait_for(DEADLINE, |m| is_type(m, "join") && m.contains("bob"));
    assert_eq!(rejoined.as_deref().and_then(online), Some(2));
    expect_message(&mut bob, "while you were away");
    bob.say("back");
    expect_message(&mut ann, "back");
}

#[test]
fn past_redis_max_queue_the_node_goes_alone() {
    let Some(redis) = RedisServer::start("past_redis_max_queue_the_node_goes_alone") else {
        return;
    };
    // A slow liveness check, so that the queue, not the ping, finds the stall.
    let one = Node::start(&[
        "--redis",
        &redis.url(),
        "--redis-max-queue",
        "64KiB",
        "--redis-ping",
        "5s",
        "--max-message-rate",
        "0",
    ]);
    wait("the link", || {
        metric(one.addr(), "loopchat_cluster_link_up") == 1
    });
    let mut ann = ChatClient::join(one.addr(), "q", "ann");
    redis.pause();
    let text = "x".repeat(16 * 1024);
    for _ in 0..8 {
        ann.say(&text);
    }
    assert!(
        one.wait_for_log(DEADLINE, "past --redis-max-queue"),
        "{}",
        one.log()
    );
    // What was in flight is delivered locally, none of it lost.
    let mut got = 0;
    while got < 8 {
        let message = ann.wait_for(DEADLINE, |m| is_type(m, "message"));
        assert!(message.is_some(), "only {got} of 8: {:?}", ann.seen.len());
        got += 1;
    }
    redis.resume();
}

#[test]
fn bad_replies_from_redis_are_logged_and_the_node_serves_alone() {
    // A "Redis" that answers anything with garbage.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Detached: it ends with the test process (a node may connect any number
    // of times before the test is done).
    std::thread::spawn(move || {
        use std::io::Write;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let _ = stream.write_all(b"*2\r\n$3\r\nabc\r\n:zz\r\n");
        }
    });
    let one = Node::start(&[
        "--redis",
        &format!("redis://{addr}"),
        "--redis-ping",
        "100ms",
    ]);
    assert!(
        one.wait_for_log(DEADLINE, "bad reply from redis"),
        "{}",
        one.log()
    );
    let mut ann = ChatClient::join(one.addr(), "b", "ann");
    let mut amy = ChatClient::join(one.addr(), "b", "amy");
    ann.say("still here");
    expect_message(&mut amy, "still here");
    assert!(metric(one.addr(), "loopchat_cluster_bad_replies_total") >= 1);
    assert_eq!(metric(one.addr(), "loopchat_cluster_link_up"), 0);
}

#[test]
fn a_burst_of_members_stays_through_a_redis_restart() {
    let Some(mut redis) = RedisServer::start("a_burst_of_members_stays_through_a_redis_restart")
    else {
        return;
    };
    let (one, two) = (node(&redis.url(), &[]), node(&redis.url(), &[]));
    const EACH: usize = 100;
    let mut clients: Vec<ChatClient> = (0..2 * EACH)
        .map(|i| {
            let addr = if i % 2 == 0 { one.addr() } else { two.addr() };
            ChatClient::join(addr, "burst", &format!("m{i}"))
        })
        .collect();
    redis.kill9();
    redis.restart();
    for n in [&one, &two] {
        wait("the link to come back", || {
            metric(n.addr(), "loopchat_cluster_link_up") == 1
        });
    }
    // Every member was re-registered: a newcomer counts them all.
    wait("all 200 re-registered", || {
        let newcomer = ChatClient::join(one.addr(), "burst", "newcomer");
        online(newcomer.welcome()) == Some(2 * EACH as u64 + 1)
    });
    clients[1].say("to everyone");
    let mut counts: HashMap<bool, usize> = HashMap::new();
    for client in &mut clients {
        expect_message(client, "to everyone");
        *counts.entry(client.is_closed()).or_default() += 1;
    }
    assert_eq!(counts.get(&false), Some(&(2 * EACH)), "nobody dropped");
}

#[test]
fn relay_rooms_span_the_nodes_in_one_order_byte_for_byte() {
    let Some(redis) = RedisServer::start("relay_rooms_span_the_nodes_in_one_order_byte_for_byte")
    else {
        return;
    };
    use common::{op, Raw};
    let (one, two) = (node(&redis.url(), &[]), node(&redis.url(), &[]));
    let mut members: Vec<Raw> = [one.addr(), one.addr(), two.addr(), two.addr()]
        .into_iter()
        .map(|addr| Raw::websocket(addr, "/relay/pub"))
        .collect();
    // A member's first message comes back to it and reaches the other node,
    // once that node's subscription is acknowledged (a message sent before
    // then waits for it, so the test waits until a probe crosses).
    wait("both nodes subscribed", || {
        members[0].send_frame(true, op::TEXT, b"probe");
        members[2].send_frame(true, op::TEXT, b"probe");
        let mut crossed = true;
        for member in &mut members {
            let (a, b) = (member.read_frame(), member.read_frame());
            crossed &= a.is_some() && b.is_some();
        }
        crossed
    });
    const EACH: u8 = 30;
    for i in 0..EACH {
        members[0].send_frame(true, op::TEXT, format!("one-{i}").as_bytes());
        members[3].send_frame(true, op::BINARY, &[0xff, i, 0]);
    }
    let mut orders = Vec::new();
    for member in &mut members {
        let mut order = Vec::new();
        while order.len() < 2 * EACH as usize {
            let frame = member
                .read_frame()
                .expect("every message reaches every member");
            if frame.payload != b"probe" {
                order.push((frame.opcode, frame.payload));
            }
        }
        orders.push(order);
    }
    for order in &orders[1..] {
        assert_eq!(order, &orders[0], "two members saw different orders");
    }
    let texts: Vec<&Vec<u8>> = orders[0]
        .iter()
        .filter(|(opcode, _)| *opcode == op::TEXT)
        .map(|(_, p)| p)
        .collect();
    let sent: Vec<Vec<u8>> = (0..EACH).map(|i| format!("one-{i}").into_bytes()).collect();
    assert_eq!(texts, sent.iter().collect::<Vec<_>>());
    assert!(orders[0]
        .iter()
        .any(|(opcode, p)| *opcode == op::BINARY && p == &[0xff, 7, 0]));
}

#[test]
fn a_node_shut_down_gracefully_announces_its_members_leaving_at_once() {
    let Some(redis) =
        RedisServer::start("a_node_shut_down_gracefully_announces_its_members_leaving_at_once")
    else {
        return;
    };
    let one = node(&redis.url(), &[]);
    let mut two = node(&redis.url(), &[]);
    let mut ann = ChatClient::join(one.addr(), "g", "ann");
    let _bob = ChatClient::join(two.addr(), "g", "bob");
    ann.wait_for(DEADLINE, |m| online(m) == Some(2));
    // SIGTERM: the presence TTL is the default 30 s, longer than the deadline,
    // so the leave can only come from the shutdown itself.
    let pid = rustix::process::Pid::from_raw(two.pid() as i32).expect("a PID");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let left = ann.wait_for(DEADLINE, |m| is_type(m, "leave") && m.contains("bob"));
    assert_eq!(left.as_deref().and_then(online), Some(1), "{:?}", ann.seen);
    two.kill9(); // reaps it (it has exited by now)
}
