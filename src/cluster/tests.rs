//! Unit tests of [`Cluster`], the sans-IO cluster node, through its crate API
//! and with bytes only: RESP2 replies go in (`on_bytes`), the commands it writes
//! come out (`output`, decoded with `resp::ReplyReader`), and what the chat must
//! do comes out as `Happening`s.

use super::envelope::Kind;
use super::resp::{Limits, Reply, ReplyReader};
use super::scripts::sha1_hex;
use super::{Cluster, Conn, Happening, Settings};
use crate::redis_url::RedisUrl;
use proptest::prelude::*;
use std::rc::Rc;
use std::time::{Duration, Instant};

const PING: Duration = Duration::from_secs(1);
/// Node numbers the node claims in these tests.
const NODE: u64 = 1;
/// Member ids of another node (number 2).
const OTHER_1: u64 = (2 << 32) | 1;
const OTHER_2: u64 = (2 << 32) | 2;

fn settings(url: &str) -> Settings {
    Settings {
        url: RedisUrl::parse(url).unwrap(),
        ping_interval: PING,
        presence_ttl: Duration::from_secs(30),
        history: 100,
        member_list: 50,
        max_queue: 1 << 20,
    }
}

fn plain() -> Settings {
    settings("redis://127.0.0.1:6379")
}

fn small_queue(max_queue: usize) -> Settings {
    Settings {
        max_queue,
        ..plain()
    }
}

// ---- RESP both ways ----

/// What Redis would send for `reply`.
fn encode(out: &mut Vec<u8>, reply: &Reply) {
    match reply {
        Reply::Simple(s) => {
            out.push(b'+');
            out.extend_from_slice(s);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Error(s) => {
            out.push(b'-');
            out.extend_from_slice(s);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Integer(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Reply::Bulk(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
        Reply::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for item in items {
                encode(out, item);
            }
        }
    }
}

fn resp(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out, reply);
    out
}

fn bulk(bytes: impl AsRef<[u8]>) -> Reply {
    Reply::Bulk(bytes.as_ref().to_vec())
}

fn simple(text: &str) -> Vec<u8> {
    resp(&Reply::Simple(text.as_bytes().to_vec()))
}

fn integer(n: i64) -> Vec<u8> {
    resp(&Reply::Integer(n))
}

/// The commands in `bytes`, each as its arguments; panics unless every one is
/// a whole array of bulk strings.
fn decode_commands(bytes: &[u8]) -> Vec<Vec<String>> {
    let mut reader = ReplyReader::new(Limits {
        max_bulk: 1 << 24,
        max_array: 1 << 20,
        max_depth: 1,
        max_reply: 1 << 26,
    });
    reader.extend(bytes);
    let mut commands = Vec::new();
    while let Some(reply) = reader.next_reply().expect("the node writes RESP") {
        let Reply::Array(args) = reply else {
            panic!("a command is an array: {reply:?}");
        };
        assert!(!args.is_empty(), "an empty command");
        commands.push(
            args.into_iter()
                .map(|arg| match arg {
                    Reply::Bulk(b) => String::from_utf8(b).expect("UTF-8 arguments"),
                    other => panic!("a command's argument is a bulk string: {other:?}"),
                })
                .collect(),
        );
    }
    assert_eq!(reader.buffered(), 0, "a command cut short");
    commands
}

fn channel(room: &str) -> String {
    format!("lc:{{{room}}}")
}

fn keys(room: &str) -> Vec<String> {
    ["meta", "hist", "pz", "pn"]
        .iter()
        .map(|k| format!("lc:{{{room}}}:{k}"))
        .collect()
}

/// A room event on the subscriber connection.
fn message(room: &str, payload: &str) -> Vec<u8> {
    resp(&Reply::Array(vec![
        bulk("message"),
        bulk(channel(room)),
        bulk(payload),
    ]))
}

fn subscribed(room: &str, count: i64) -> Vec<u8> {
    resp(&Reply::Array(vec![
        bulk("subscribe"),
        bulk(channel(room)),
        Reply::Integer(count),
    ]))
}

fn unsubscribed(room: &str, count: i64) -> Vec<u8> {
    resp(&Reply::Array(vec![
        bulk("unsubscribe"),
        bulk(channel(room)),
        Reply::Integer(count),
    ]))
}

/// The sync script's reply `{epoch, seq_before, history, people}`.
fn synced(
    epoch: &str,
    seq_before: i64,
    history: &[String],
    people: Option<&[(u64, &str)]>,
) -> Vec<u8> {
    let people = match people {
        Some(people) => Reply::Array(
            people
                .iter()
                .flat_map(|(id, name)| [bulk(id.to_string()), bulk(name)])
                .collect(),
        ),
        None => Reply::Nil,
    };
    resp(&Reply::Array(vec![
        bulk(epoch),
        Reply::Integer(seq_before),
        Reply::Array(history.iter().map(bulk).collect()),
        people,
    ]))
}

/// The post script's reply `{epoch, seq, receivers}`.
fn posted(epoch: &str, seq: i64) -> Vec<u8> {
    resp(&Reply::Array(vec![
        bulk(epoch),
        Reply::Integer(seq),
        Reply::Integer(1),
    ]))
}

// ---- envelopes ----

/// The JSON the tests' envelopes carry: names the kind and sequence number.
fn json(kind: char, seq: u64) -> String {
    format!(r#"{{"k":"{kind}","seq":{seq}}}"#)
}

/// An envelope as the scripts write it, with [`json`] as its JSON.
fn ev(kind: char, epoch: &str, seq: u64, id: u64, online: u64, tag: &str, name: &str) -> String {
    format!(
        "{kind} {epoch} {seq} {id} {online} {tag} {}:{name}{}",
        name.len(),
        json(kind, seq)
    )
}

/// A message envelope with its own JSON (a post of this node's coming back).
fn ev_post(
    epoch: &str,
    seq: u64,
    id: u64,
    online: u64,
    tag: &str,
    name: &str,
    json: &str,
) -> String {
    format!(
        "m {epoch} {seq} {id} {online} {tag} {}:{name}{json}",
        name.len()
    )
}

// ---- happenings as text ----

fn describe(h: &Happening) -> String {
    match h {
        Happening::Welcome {
            room,
            key,
            online,
            people,
        } => {
            let people = match people {
                Some(people) => people
                    .iter()
                    .map(|(id, name)| format!("{id}:{name}"))
                    .collect::<Vec<_>>()
                    .join(","),
                None => "-".to_string(),
            };
            format!("welcome {room} key {key} online {online} people {people}")
        }
        Happening::Event {
            room,
            kind,
            id,
            name,
            online,
            frame,
        } => format!(
            "event {room} {kind:?} {id} {name} online {online} {}",
            text_of(frame)
        ),
        Happening::Seed { room, frame } => format!("seed {room} {}", text_of(frame)),
        Happening::Island { joins, posts } => format!("island joins {joins:?} posts {posts:?}"),
        Happening::Forget { room } => format!("forget {room}"),
        Happening::Relay {
            room,
            binary,
            payload,
        } => format!("relay {room} binary {binary} {payload:?}"),
    }
}

/// The text of a frame the node made (what its clients get).
fn text_of(frame: &[u8]) -> &str {
    std::str::from_utf8(crate::frame::server_payload(frame)).expect("a text frame")
}

fn welcome(room: &str, key: usize, online: usize, people: &[(u64, &str)]) -> String {
    let people: Vec<String> = people.iter().map(|(id, n)| format!("{id}:{n}")).collect();
    format!(
        "welcome {room} key {key} online {online} people {}",
        people.join(",")
    )
}

fn event(room: &str, kind: Kind, id: u64, name: &str, online: u64, json: &str) -> String {
    format!("event {room} {kind:?} {id} {name} online {online} {json}")
}

fn island(joins: &[(&str, usize)], posts: &[(&str, &str)]) -> String {
    let joins: Vec<(Rc<str>, usize)> = joins.iter().map(|(r, k)| (Rc::from(*r), *k)).collect();
    let posts: Vec<(Rc<str>, String)> = posts
        .iter()
        .map(|(r, j)| (Rc::from(*r), j.to_string()))
        .collect();
    format!("island joins {joins:?} posts {posts:?}")
}

// ---- the node under test ----

struct Node {
    c: Cluster,
    now: Instant,
    /// SHA1 of the sync, post and leave scripts, from the `SCRIPT LOAD`s.
    shas: Vec<String>,
    /// The node number it claimed.
    node: u64,
}

impl Node {
    fn new(settings: Settings) -> Node {
        let now = Instant::now();
        Node {
            c: Cluster::new(settings, now),
            now,
            shas: Vec::new(),
            node: 0,
        }
    }

    /// A node whose link is up, with node number [`NODE`].
    fn up(settings: Settings) -> Node {
        let mut n = Node::new(settings);
        n.link(NODE as i64);
        n
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// The commands written to `conn` since last asked.
    /// (As the loop's Redis step does, posts queued meanwhile are sent first.)
    fn cmds(&mut self, conn: Conn) -> Vec<Vec<String>> {
        if conn == Conn::Cmd {
            self.c.flush_posts();
        }
        let bytes = std::mem::take(self.c.output(conn));
        decode_commands(&bytes)
    }

    fn feed(&mut self, conn: Conn, bytes: &[u8]) {
        self.c.on_bytes(conn, bytes, self.now);
    }

    fn tick(&mut self) {
        self.c.tick(self.now);
    }

    fn happenings(&mut self) -> Vec<Happening> {
        std::iter::from_fn(|| self.c.next_happening()).collect()
    }

    fn said(&mut self) -> Vec<String> {
        self.happenings().iter().map(describe).collect()
    }

    /// Connects and answers the handshake, claiming number `node`; returns the
    /// handshake's commands on `Cmd` and `Sub`.
    fn link(&mut self, node: i64) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
        assert!(self.c.should_connect(self.now));
        self.c.connecting(self.now);
        assert!(self.c.is_connected() && !self.c.is_up());
        let cmd = self.cmds(Conn::Cmd);
        let sub = self.cmds(Conn::Sub);
        self.shas = cmd
            .iter()
            .filter(|c| c[0] == "SCRIPT")
            .map(|c| sha1_hex(&c[2]))
            .collect();
        assert_eq!(self.shas.len(), 3, "{cmd:?}");
        if sub.iter().any(|c| c[0] == "AUTH") {
            self.feed(Conn::Sub, &simple("OK"));
        }
        let mut replies = Vec::new();
        for c in &cmd {
            match c[0].as_str() {
                "AUTH" | "SELECT" => replies.extend(simple("OK")),
                "SCRIPT" => replies.extend(resp(&bulk(sha1_hex(&c[2])))),
                "EVAL" => replies.extend(integer(node)),
                other => panic!("unexpected handshake command {other}"),
            }
        }
        self.feed(Conn::Cmd, &replies);
        assert!(self.c.is_up());
        self.node = node as u64;
        (cmd, sub)
    }

    /// The tag of the sync and leave scripts: this node, post 0.
    fn tag0(&self) -> String {
        format!("{}.0", self.node)
    }

    /// Checks a sync script call: history wanted `after`, these members.
    fn assert_sync(&self, c: &[String], room: &str, after: &str, members: &[(u64, &str)]) {
        assert_eq!(c[0], "EVALSHA", "{c:?}");
        assert_eq!(c[1], self.shas[0], "the sync script");
        assert_eq!(c[2], "4");
        assert_eq!(c[3..7], keys(room)[..]);
        assert_eq!(c[7], channel(room));
        assert_eq!(c[9], self.tag0());
        assert_eq!(c[10], "30000", "presence TTL in ms");
        assert_eq!(c[11], after, "history wanted after");
        assert_eq!(c[12], "50", "member-list limit");
        let pairs: Vec<(String, String)> = members
            .iter()
            .map(|(id, name)| (id.to_string(), name.to_string()))
            .collect();
        let sent: Vec<(String, String)> = c[13..c.len() - 1]
            .chunks(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect();
        assert_eq!(sent, pairs);
        assert_eq!(c[c.len() - 1], "86400", "the keys' TTL");
    }

    fn assert_leave(&self, c: &[String], room: &str, id: u64) {
        assert_eq!(c.len(), 12, "{c:?}");
        assert_eq!(c[0], "EVALSHA");
        assert_eq!(c[1], self.shas[2], "the leave script");
        assert_eq!(c[2], "4");
        assert_eq!(c[3..7], keys(room)[..]);
        assert_eq!(c[7], channel(room));
        assert_eq!(c[9], self.tag0());
        assert_eq!(c[10], id.to_string());
        assert_eq!(c[11], "86400");
    }

    /// The first member of a cold room, all the way: `SUBSCRIBE`, the ack, the
    /// seed script (replied at `seq_before`, no history), its own join notice at
    /// `seq_before + 1`. Returns its id.
    fn join_cold(&mut self, room: &str, key: usize, name: &str, seq_before: u64) -> u64 {
        let id = self.c.member_id();
        assert!(self.c.join(&Rc::from(room), key, id, &Rc::from(name)));
        assert_eq!(
            self.cmds(Conn::Sub),
            [["SUBSCRIBE", channel(room).as_str()]]
        );
        self.feed(Conn::Sub, &subscribed(room, 1));
        let cmd = self.cmds(Conn::Cmd);
        assert_eq!(cmd.len(), 1);
        self.assert_sync(&cmd[0], room, "0", &[(id, name)]);
        self.feed(
            Conn::Cmd,
            &synced("e1", seq_before as i64, &[], Some(&[(id, name)])),
        );
        let seq = seq_before + 1;
        let tag = self.tag0();
        self.feed(
            Conn::Sub,
            &message(room, &ev('j', "e1", seq, id, 1, &tag, name)),
        );
        assert_eq!(
            self.said(),
            [
                welcome(room, key, 1, &[(id, name)]),
                event(room, Kind::Join, id, name, 1, &json('j', seq))
            ]
        );
        id
    }

    /// Another member of a live room, all the way: the join script, its reply,
    /// its join notice at `seq` with `online`. Returns its id.
    fn join_live(&mut self, room: &str, key: usize, name: &str, seq: u64, online: u64) -> u64 {
        let id = self.c.member_id();
        assert!(self.c.join(&Rc::from(room), key, id, &Rc::from(name)));
        assert!(self.cmds(Conn::Sub).is_empty());
        let cmd = self.cmds(Conn::Cmd);
        assert_eq!(cmd.len(), 1);
        self.assert_sync(&cmd[0], room, "-1", &[(id, name)]);
        self.feed(Conn::Cmd, &synced("e1", seq as i64 - 1, &[], None));
        let tag = self.tag0();
        self.feed(
            Conn::Sub,
            &message(room, &ev('j', "e1", seq, id, online, &tag, name)),
        );
        let said = self.said();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].starts_with(&format!("welcome {room} key {key} online {online}")));
        id
    }

    /// A message from another node.
    fn other_message(&mut self, room: &str, seq: u64) {
        self.feed(
            Conn::Sub,
            &message(room, &ev('m', "e1", seq, OTHER_1, 2, "2.1", "zed")),
        );
    }
}

fn other_msg_event(room: &str, seq: u64) -> String {
    event(room, Kind::Message, OTHER_1, "zed", 2, &json('m', seq))
}

fn other_msg(seq: u64) -> String {
    ev('m', "e1", seq, OTHER_1, 2, "2.1", "zed")
}

// ---- 1. link-up ----

#[test]
fn link_up_loads_the_three_scripts_then_claims_a_node_number() {
    let mut n = Node::new(plain());
    assert!(!n.c.is_connected() && !n.c.is_up());
    assert!(n.c.should_connect(n.now), "a new node connects at once");
    n.c.connecting(n.now);
    assert!(n.c.is_connected() && !n.c.is_up());
    let cmd = n.cmds(Conn::Cmd);
    assert!(n.cmds(Conn::Sub).is_empty(), "no AUTH without a password");
    let names: Vec<String> = cmd.iter().map(|c| c[..2].join(" ")).collect();
    assert_eq!(
        names,
        [
            "SCRIPT LOAD",
            "SCRIPT LOAD",
            "SCRIPT LOAD",
            format!("EVAL {}", cmd[3][1]).as_str()
        ]
    );
    assert!(cmd[..3].iter().all(|c| c.len() == 3));
    let sources: std::collections::HashSet<&String> = cmd[..3].iter().map(|c| &c[2]).collect();
    assert_eq!(sources.len(), 3, "three different scripts");
    assert_eq!(
        cmd[3][2..],
        ["1", "lc:nodes", "0"],
        "no number yet: ask for one"
    );
    // The scripts load: not up until the node has its number.
    for c in &cmd[..3] {
        n.feed(Conn::Cmd, &simple(&sha1_hex(&c[2])));
        assert!(!n.c.is_up() && n.c.is_connected());
    }
    n.feed(Conn::Cmd, &integer(1));
    assert!(n.c.is_up() && n.c.is_connected());
    assert!(n.c.metrics.link_up);
    assert_eq!(n.c.metrics.link_ups, 1);
    assert!(n.cmds(Conn::Cmd).is_empty() && n.cmds(Conn::Sub).is_empty());
    assert!(n.said().is_empty());
}

#[test]
fn link_up_authenticates_both_connections_and_selects_the_database() {
    let mut n = Node::new(settings("redis://bob:s3cret@127.0.0.1:6379/3"));
    let (cmd, sub) = n.link(1);
    let names: Vec<&str> = cmd.iter().map(|c| c[0].as_str()).collect();
    assert_eq!(
        names,
        ["AUTH", "SELECT", "SCRIPT", "SCRIPT", "SCRIPT", "EVAL"]
    );
    assert_eq!(cmd[0], ["AUTH", "bob", "s3cret"]);
    assert_eq!(cmd[1], ["SELECT", "3"]);
    assert_eq!(sub, [["AUTH", "bob", "s3cret"]]);
    assert!(n.said().is_empty());

    // A password without a user: `AUTH PASSWORD`; database 0: no SELECT.
    let mut n = Node::new(settings("redis://:pw@127.0.0.1"));
    let (cmd, sub) = n.link(1);
    let names: Vec<&str> = cmd.iter().map(|c| c[0].as_str()).collect();
    assert_eq!(names, ["AUTH", "SCRIPT", "SCRIPT", "SCRIPT", "EVAL"]);
    assert_eq!(cmd[0], ["AUTH", "pw"]);
    assert_eq!(sub, [["AUTH", "pw"]]);

    // A database without a password: SELECT only, nothing on the subscriber.
    let mut n = Node::new(settings("redis://127.0.0.1/2"));
    let (cmd, sub) = n.link(1);
    assert_eq!(cmd[0], ["SELECT", "2"]);
    assert!(sub.is_empty());
}

#[test]
fn member_ids_are_the_node_number_over_a_count_below_2_pow_53() {
    let mut n = Node::new(plain());
    n.link(5);
    assert_eq!(n.c.member_id(), (5 << 32) | 1);
    assert_eq!(n.c.member_id(), (5 << 32) | 2);

    // The largest number the node accepts still makes ids below 2^53.
    let largest = (1i64 << 21) - 1;
    let mut n = Node::new(plain());
    n.link(largest);
    let id = n.c.member_id();
    assert_eq!(id >> 32, largest as u64);
    assert!(id < 1 << 53);
    assert!((((largest as u64) << 32) | u64::from(u32::MAX)) < (1 << 53));
}

#[test]
fn a_node_number_out_of_range_fails_the_link() {
    for bad in [
        integer(0),
        integer(-3),
        integer(1 << 21),
        resp(&bulk("1")),
        simple("OK"),
    ] {
        let mut n = Node::new(plain());
        n.c.connecting(n.now);
        let cmd = n.cmds(Conn::Cmd);
        for c in &cmd[..3] {
            n.feed(Conn::Cmd, &resp(&bulk(sha1_hex(&c[2]))));
        }
        n.feed(Conn::Cmd, &bad);
        assert!(!n.c.is_connected(), "{:?}", String::from_utf8_lossy(&bad));
        assert_eq!(n.said(), [island(&[], &[])]);
        assert_eq!(n.c.metrics.bad_replies, 1);
    }
}

#[test]
fn ids_handed_out_before_the_link_keep_their_node_number() {
    let mut n = Node::new(plain());
    let first = n.c.member_id();
    let node = first >> 32;
    assert!(
        ((1 << 20)..(1 << 21)).contains(&node),
        "a drawn number: {node}"
    );
    assert!(first < 1 << 53);
    n.c.connecting(n.now);
    let cmd = n.cmds(Conn::Cmd);
    assert_eq!(cmd[3][2..], ["1", "lc:nodes", node.to_string().as_str()]);
    for c in &cmd[..3] {
        n.feed(Conn::Cmd, &resp(&bulk(sha1_hex(&c[2]))));
    }
    n.feed(Conn::Cmd, &integer(node as i64));
    assert!(n.c.is_up());
    assert_eq!(n.c.member_id(), (node << 32) | 2);
}

// ---- 2. the first join in a room ----

#[test]
fn first_join_subscribes_seeds_then_welcomes_on_its_own_join_notice() {
    let mut n = Node::up(plain());
    let room: Rc<str> = "r".into();
    let ann = n.c.member_id();
    assert!(n.c.join(&room, 7, ann, &"ann".into()));
    assert_eq!(n.cmds(Conn::Sub), [["SUBSCRIBE", "lc:{r}"]]);
    assert!(n.cmds(Conn::Cmd).is_empty(), "no script before the ack");
    // A second member before the ack: no second SUBSCRIBE; both in one script.
    let bob = n.c.member_id();
    assert!(n.c.join(&room, 8, bob, &"bob".into()));
    assert!(n.cmds(Conn::Sub).is_empty() && n.cmds(Conn::Cmd).is_empty());
    // An event before the ack is not ours yet (cannot be, but is ignored).
    n.other_message("r", 1);
    assert!(n.said().is_empty());

    n.feed(Conn::Sub, &subscribed("r", 1));
    let cmd = n.cmds(Conn::Cmd);
    assert_eq!(cmd.len(), 1);
    n.assert_sync(&cmd[0], "r", "0", &[(ann, "ann"), (bob, "bob")]);

    // The script's own join notices come back before its reply: they wait.
    n.feed(
        Conn::Sub,
        &message("r", &ev('j', "e1", 4, ann, 2, "1.0", "ann")),
    );
    n.feed(
        Conn::Sub,
        &message("r", &ev('j', "e1", 5, bob, 3, "1.0", "bob")),
    );
    assert!(n.said().is_empty(), "buffered while the script is out");

    let history = [other_msg(1), other_msg(3)];
    n.feed(
        Conn::Cmd,
        &synced(
            "e1",
            3,
            &history,
            Some(&[(OTHER_1, "zed"), (ann, "ann"), (bob, "bob")]),
        ),
    );
    assert_eq!(
        n.said(),
        [
            format!("seed r {}", json('m', 1)),
            format!("seed r {}", json('m', 3)),
            welcome("r", 7, 2, &[(ann, "ann"), (bob, "bob"), (OTHER_1, "zed")]),
            event("r", Kind::Join, ann, "ann", 2, &json('j', 4)),
            welcome("r", 8, 3, &[(ann, "ann"), (bob, "bob"), (OTHER_1, "zed")]),
            event("r", Kind::Join, bob, "bob", 3, &json('j', 5)),
        ]
    );
    // Live: the next event is delivered at once.
    n.other_message("r", 6);
    assert_eq!(n.said(), [other_msg_event("r", 6)]);
}

#[test]
fn a_join_notice_after_the_seed_reply_is_delivered_live() {
    let mut n = Node::up(plain());
    let ann = n.c.member_id();
    assert!(n.c.join(&"r".into(), 1, ann, &"ann".into()));
    n.cmds(Conn::Sub);
    n.feed(Conn::Sub, &subscribed("r", 1));
    n.cmds(Conn::Cmd);
    // No list: the room is too big to list.
    n.feed(Conn::Cmd, &synced("e1", 0, &[], None));
    assert!(n.said().is_empty());
    n.feed(
        Conn::Sub,
        &message("r", &ev('j', "e1", 1, ann, 1, "1.0", "ann")),
    );
    assert_eq!(
        n.said(),
        [
            "welcome r key 1 online 1 people -".to_string(),
            event("r", Kind::Join, ann, "ann", 1, &json('j', 1)),
        ]
    );
}

// ---- 3. a second join in a live room ----

#[test]
fn a_second_join_in_a_live_room_runs_the_sync_script_at_once() {
    let mut n = Node::up(plain());
    let ann = n.join_cold("r", 1, "ann", 0);
    let bob = n.c.member_id();
    assert!(n.c.join(&"r".into(), 2, bob, &"bob".into()));
    assert!(n.cmds(Conn::Sub).is_empty(), "subscribed already");
    let cmd = n.cmds(Conn::Cmd);
    assert_eq!(cmd.len(), 1);
    n.assert_sync(&cmd[0], "r", "-1", &[(bob, "bob")]);
    // Its reply completes nothing: the join notice does.
    n.feed(
        Conn::Cmd,
        &synced("e1", 1, &[], Some(&[(ann, "ann"), (bob, "bob")])),
    );
    assert!(n.said().is_empty());
    n.feed(
        Conn::Sub,
        &message("r", &ev('j', "e1", 2, bob, 2, "1.0", "bob")),
    );
    assert_eq!(
        n.said(),
        [
            welcome("r", 2, 2, &[(ann, "ann"), (bob, "bob")]),
            event("r", Kind::Join, bob, "bob", 2, &json('j', 2)),
        ]
    );
    // Another node's member joins: an event, no welcome.
    n.feed(
        Conn::Sub,
        &message("r", &ev('j', "e1", 3, OTHER_1, 3, "2.0", "zed")),
    );
    assert_eq!(
        n.said(),
        [event("r", Kind::Join, OTHER_1, "zed", 3, &json('j', 3))]
    );
}

// ---- 4. one order ----

#[test]
fn events_in_order_are_delivered_and_duplicates_dropped() {
    let mut n = Node::up(plain());
    n.join_cold("r", 1, "ann", 0); // last seq 1
    n.other_message("r", 2);
    assert_eq!(n.said(), [other_msg_event("r", 2)]);
    n.other_message("r", 2);
    n.other_message("r", 1);
    assert!(n.said().is_empty(), "seen already");
    n.other_message("r", 3);
    assert_eq!(n.said(), [other_msg_event("r", 3)]);
    assert_eq!(n.c.metrics.gaps_detected, 0);
    assert!(n.cmds(Conn::Cmd).is_empty());
}

#[test]
fn a_gap_is_repaired_from_the_history() {
    let mut n = Node::up(plain());
    n.join_cold("r", 1, "ann", 0);
    n.other_message("r", 2);
    n.other_message("r", 3);
    n.said();
    // 4 and 5 never came: 6 shows the gap.
    n.other_message("r", 6);
    assert!(n.said().is_empty());
    assert_eq!(n.c.metrics.gaps_detected, 1);
    let cmd = n.cmds(Conn::Cmd);
    assert_eq!(cmd.len(), 1);
    n.assert_sync(&cmd[0], "r", "3", &[]);
    // What comes meanwhile waits.
    n.other_message("r", 7);
    assert!(n.said().is_empty());
    n.feed(
        Conn::Cmd,
        &synced("e1", 6, &[other_msg(4), other_msg(5), other_msg(6)], None),
    );
    assert_eq!(
        n.said(),
        [
            other_msg_event("r", 4),
            other_msg_event("r", 5),
            other_msg_event("r", 6),
            other_msg_event("r", 7),
        ]
    );
    assert_eq!(n.c.metrics.gaps_repaired, 1);
    assert_eq!(n.c.metrics.gaps_unrepaired, 0);
    n.other_message("r", 6);
    assert!(n.said().is_empty());
    n.other_message("r", 8);
    assert_eq!(n.said(), [other_msg_event("r", 8)]);
}

#[test]
fn a_gap_of_notices_is_counted_unrepaired() {
    let mut n = Node::up(plain());
    n.join_cold("r", 1, "ann", 0);
    n.other_message("r", 2);
    n.said();
    n.other_message("r", 5);
    let cmd = n.cmds(Conn::Cmd);
    n.assert_sync(&cmd[0], "r", "2", &[]);
    // 4 was a notice: not in the history.
    n.feed(
        Conn::Cmd,
        &synced("e1", 5, &[other_msg(3), other_msg(5)], None),
    );
    assert_eq!(n.said(), [other_msg_event("r", 3), other_msg_event("r", 5)]);
    assert_eq!(n.c.metrics.gaps_detected, 1);
    assert_eq!(n.c.metrics.gaps_repaired, 0);
    assert_eq!(n.c.metrics.gaps_unrepaired, 1);
    n.other_message("r", 6);
    assert_eq!(n.said(), [other_msg_event("r", 6)]);
}

/// The repair script's `seq_before` covers the event that showed the gap, and
/// the events that arrived while the script was out; those that are notices
/// are not in the history list, and must be delivered from the buffer.
#[test]
fn a_notice_that_shows_a_gap_is_still_delivered_after_the_repair() {
    let mut n = Node::up(plain());
    let ann = n.join_cold("r", 1, "ann", 0); // last seq 1
    let bob = n.c.member_id();
    assert!(n.c.join(&"r".into(), 2, bob, &"bob".into()));
    n.cmds(Conn::Cmd);
    n.feed(Conn::Cmd, &synced("e1", 2, &[], None));
    // Message 2 is missed; bob's join notice (3) shows the gap.
    n.feed(
        Conn::Sub,
        &message("r", &ev('j', "e1", 3, bob, 2, "1.0", "bob")),
    );
    assert!(n.said().is_empty());
    let cmd = n.cmds(Conn::Cmd);
    n.assert_sync(&cmd[0], "r", "1", &[]);
    n.feed(
        Conn::Cmd,
        &synced(
            "e1",
            3,
            &[other_msg(2)],
            Some(&[(ann, "ann"), (bob, "bob")]),
        ),
    );
    assert_eq!(
        n.said(),
        [
            other_msg_event("r", 2),
            welcome("r", 2, 2, &[(ann, "ann"), (bob, "bob")]),
            event("r", Kind::Join, bob, "bob", 2, &json('j', 3)),
        ]
    );
}

// ---- 5. a new epoch ----

#[test]
fn a_new_epoch_in_a_live_event_is_counted_and_followed() {
    let mut n = Node::up(plain());
    n.join_cold("r", 1, "ann", 0);
    n.other_message("r", 2);
    n.other_message("r", 3);
    n.said();
    // Redis lost the room: its numbers start again under a new epoch.
    let first = ev('m', "e2", 1, OTHER_1, 2, "2.1", "zed");
    n.feed(Conn::Sub, &message("r", &first));
    assert_eq!(
        n.said(),
        [event("r", Kind::Message, OTHER_1, "zed", 2, &json('m', 1))]
    );
    assert_eq!(n.c.metrics.gaps_unrepaired, 1);
    assert_eq!(n.c.metrics.gaps_detected, 0);
    assert!(n.cmds(Conn::Cmd).is_empty(), "nothing to repair from");
    n.feed(Conn::Sub, &message("r", &first));
    assert!(n.said().is_empty(), "a duplicate in the new epoch");
    n.feed(
        Conn::Sub,
        &message("r", &ev('m', "e2", 2, OTHER_1, 2, "2.1", "zed")),
    );
    assert_eq!(
        n.said(),
        [event("r", Kind::Message, OTHER_1, "zed", 2, &json('m', 2))]
    );
    assert_eq!(n.c.metrics.gaps_unrepaired, 1);
}

#[test]
fn a_new_epoch_after_a_relink_seeds_instead_of_repairing() {
    let mut n = Node::up(plain());
    let ann = n.join_cold("r", 1, "ann", 0);
    n.other_message("r", 2);
    n.said();
    n.feed(Conn::Cmd, b"-ERR LOADING\r\n");
    assert_eq!(n.said(), [island(&[], &[])]);
    n.advance(Duration::from_millis(125));
    n.link(NODE as i64);
    assert_eq!(n.cmds(Conn::Sub), [["SUBSCRIBE", "lc:{r}"]]);
    n.feed(Conn::Sub, &subscribed("r", 1));
    let cmd = n.cmds(Conn::Cmd);
    n.assert_sync(&cmd[0], "r", "2", &[(ann, "ann")]);
    // Redis lost the room meanwhile: what it has is history, not news.
    n.feed(
        Conn::Cmd,
        &synced("e9", 1, &[ev('m', "e9", 1, OTHER_1, 1, "2.1", "zed")], None),
    );
    assert_eq!(n.said(), [format!("seed r {}", json('m', 1))]);
    assert_eq!(n.c.metrics.gaps_unrepaired, 1);
    assert_eq!(n.c.metrics.gaps_repaired, 0);
    // ann's join notice in the new epoch follows at once.
    n.feed(
        Conn::Sub,
        &message("r", &ev('j', "e9", 2, ann, 2, "1.0", "ann")),
    );
    assert_eq!(
        n.said(),
        [event("r", Kind::Join, ann, "ann", 2, &json('j', 2))]
    );
    assert_eq!(n.c.metrics.gaps_unrepaired, 1);
}

// ---- 6. posts ----

#[test]
fn a_post_goes_out_as_a_script_and_is_delivered_once_when_it_comes_back() {
    let mut n = Node::up(plain());
    let ann = n.join_cold("r", 1, "ann", 0);
    let text = r#"{"type":"message","text":"hi there"}"#;
    assert!(n.c.post("r", Kind::Message, ann, "ann", text.to_string()));
    assert!(n.cmds(Conn::Sub).is_empty());
    let cmd = n.cmds(Conn::Cmd);
    assert_eq!(cmd.len(), 1);
    let c = &cmd[0];
    assert_eq!(c.len(), 18, "{c:?}");
    assert_eq!(c[..3], ["EVALSHA", n.shas[1].as_str(), "4"]);
    assert_eq!(c[3..7], keys("r")[..]);
    assert_eq!(c[7], "lc:{r}");
    assert_eq!(
        c[9..],
        [
            "1",
            "1",
            "1",
            "100",
            "m",
            ann.to_string().as_str(),
            "ann",
            text,
            "86400"
        ]
    );
    assert_eq!(n.c.metrics.posts, 1);
    assert!(n.said().is_empty(), "not before it comes back");
    n.feed(Conn::Cmd, &posted("e1", 2));
    assert!(n.said().is_empty());
    let back = ev_post("e1", 2, ann, 1, "1.1", "ann", text);
    n.feed(Conn::Sub, &message("r", &back));
    assert_eq!(n.said(), [event("r", Kind::Message, ann, "ann", 1, text)]);
    n.feed(Conn::Sub, &message("r", &back));
    assert!(n.said().is_empty(), "delivered once");

    // The next post has the next tag; a rename says `r`.
    assert!(n.c.post("r", Kind::Rename, ann, "anna", "{}".to_string()));
    let cmd = n.cmds(Conn::Cmd);
    assert_eq!(cmd[0][9..12], ["1", "2", "1"], "node, first post, count");
    assert_eq!(cmd[0][13..16], ["r", ann.to_string().as_str(), "anna"]);
    assert_eq!(n.c.metrics.posts, 2);
    assert!(n.c.is_up());
}

#[test]
fn a_post_while_down_is_refused_and_counted() {
    let mut n = Node::new(plain());
    let id = n.c.member_id();
    assert!(
        !n.c.join(&"r".into(), 1, id, &"ann".into()),
        "down: joins locally"
    );
    assert!(!n.c.post("r", Kind::Message, id, "ann", "{}".to_string()));
    assert_eq!(n.c.metrics.island_messages, 1);
    assert!(!n.c.post("r", Kind::Rename, id, "anna", "{}".to_string()));
    assert_eq!(n.c.metrics.island_messages, 1, "only messages count");
    assert_eq!(n.c.metrics.posts, 0);
    assert!(n.cmds(Conn::Cmd).is_empty() && n.cmds(Conn::Sub).is_empty());

    // While connecting, too.
    n.c.connecting(n.now);
    n.cmds(Conn::Cmd);
    assert!(!n.c.post("r", Kind::Message, id, "ann", "{}".to_string()));
    assert_eq!(n.c.metrics.island_messages, 2);
    assert!(n.cmds(Conn::Cmd).is_empty());
}

// ---- 7. link failures ----

/// A linked node with a live room `r` (ann, key 1), bob (key 2) waiting for
/// his join notice, and a post of ann's in flight. Returns the post's JSON.
fn busy(settings: Settings) -> (Node, String) {
    let mut n = Node::up(settings);
    let ann = n.join_cold("r", 1, "ann", 0);
    let bob = n.c.member_id();
    assert!(n.c.join(&"r".into(), 2, bob, &"bob".into()));
    let text = r#"{"type":"message","text":"in flight"}"#.to_string();
    assert!(n.c.post("r", Kind::Message, ann, "ann", text.clone()));
    n.cmds(Conn::Cmd);
    assert!(n.said().is_empty());
    (n, text)
}

/// Checks the node failed once, with bob's join and ann's post handed back.
fn assert_failed_once(n: &mut Node, text: &str) {
    assert!(!n.c.is_connected() && !n.c.is_up());
    assert_eq!(n.said(), [island(&[("r", 2)], &[("r", text)])]);
    assert_eq!(n.c.metrics.link_failures, 1);
    assert!(!n.c.metrics.link_up);
    assert_eq!(n.c.metrics.island_messages, 1);
    assert!(n.cmds(Conn::Cmd).is_empty() && n.cmds(Conn::Sub).is_empty());
    // Nothing more from a dead link.
    n.feed(Conn::Sub, &message("r", &other_msg(2)));
    n.feed(Conn::Cmd, &simple("OK"));
    n.tick();
    assert!(n.said().is_empty());
    assert_eq!(n.c.metrics.link_failures, 1);
}

#[test]
fn an_error_reply_fails_the_link() {
    let (mut n, text) = busy(plain());
    n.feed(Conn::Cmd, b"-NOSCRIPT No matching script\r\n");
    assert_eq!(n.c.metrics.bad_replies, 1);
    assert_failed_once(&mut n, &text);
}

#[test]
fn an_error_reply_on_the_subscriber_fails_the_link() {
    let (mut n, text) = busy(plain());
    n.feed(Conn::Sub, b"-ERR only (P|S)SUBSCRIBE allowed\r\n");
    assert_failed_once(&mut n, &text);
}

#[test]
fn a_malformed_reply_fails_the_link() {
    for (conn, bytes) in [
        (Conn::Cmd, &b"%1\r\n"[..]),
        (Conn::Cmd, b"$abc\r\n"),
        (Conn::Sub, b"*1\r\n:x\r\n"),
        (Conn::Sub, b"hello\r\n"),
        (Conn::Sub, b"*2\r\n:1\r\n:2\r\n"),
        (Conn::Cmd, b":1\r\n"), // after the replies owed: one nobody asked for
    ] {
        let (mut n, text) = busy(plain());
        if bytes == b":1\r\n" {
            // Replies to the join script and the post, then one too many.
            n.feed(conn, &synced("e1", 1, &[], None));
            n.feed(conn, &posted("e1", 3));
        }
        n.feed(conn, bytes);
        assert!(n.c.metrics.bad_replies >= 1);
        assert_failed_once(&mut n, &text);
    }
}

#[test]
fn a_malformed_sync_reply_fails_the_link() {
    let (mut n, text) = busy(plain());
    // The join script's reply is not read; a seed's is. Make a repair's bad.
    n.feed(Conn::Cmd, &synced("e1", 1, &[], None));
    n.other_message("r", 5);
    n.feed(Conn::Cmd, &posted("e1", 2));
    let cmd = n.cmds(Conn::Cmd);
    n.assert_sync(&cmd[0], "r", "1", &[]);
    n.feed(Conn::Cmd, &resp(&Reply::Array(vec![bulk("e1"), bulk("x")])));
    assert_failed_once(&mut n, &text);
}

#[test]
fn no_pong_within_three_ping_intervals_fails_the_link() {
    let (mut n, text) = busy(plain());
    let start = n.now;
    n.now = start + PING - Duration::from_millis(1);
    n.tick();
    assert!(n.cmds(Conn::Cmd).is_empty(), "not yet");
    n.now = start + PING;
    n.tick();
    assert_eq!(n.cmds(Conn::Cmd), [["PING"]]);
    assert_eq!(n.cmds(Conn::Sub), [["PING"]]);
    for at in [2 * PING, 3 * PING, 4 * PING - Duration::from_millis(1)] {
        n.now = start + at;
        n.tick();
        assert!(n.c.is_up(), "{at:?}");
        assert!(n.cmds(Conn::Cmd).is_empty() && n.cmds(Conn::Sub).is_empty());
    }
    n.now = start + 4 * PING;
    n.tick();
    assert_failed_once(&mut n, &text);
}

#[test]
fn answered_pings_keep_the_link_up() {
    let mut n = Node::up(plain());
    let start = n.now;
    for i in 1..=12 {
        n.now = start + PING * i;
        n.tick();
        assert_eq!(n.cmds(Conn::Cmd), [["PING"]]);
        assert_eq!(n.cmds(Conn::Sub), [["PING"]]);
        n.feed(Conn::Cmd, &simple("PONG"));
        if i % 2 == 0 {
            n.feed(Conn::Sub, &simple("PONG"));
        } else {
            // A subscribed connection answers PING with a pub/sub reply.
            n.feed(
                Conn::Sub,
                &resp(&Reply::Array(vec![bulk("pong"), bulk("")])),
            );
        }
        assert!(n.c.is_up());
    }
    assert!(n.said().is_empty());
    assert_eq!(n.c.metrics.link_failures, 0);
}

#[test]
fn an_unanswered_subscriber_ping_fails_the_link_alone() {
    let mut n = Node::up(plain());
    let start = n.now;
    for i in 1..=4 {
        n.now = start + PING * i;
        n.tick();
        if n.cmds(Conn::Cmd) == [["PING"]] {
            n.feed(Conn::Cmd, &simple("PONG"));
        }
        n.cmds(Conn::Sub);
        assert_eq!(n.c.is_up(), i < 4, "{i}");
    }
    assert_eq!(n.said(), [island(&[], &[])]);
}

#[test]
fn an_unanswered_handshake_fails_after_three_intervals() {
    let mut n = Node::new(plain());
    n.c.connecting(n.now);
    n.cmds(Conn::Cmd);
    n.advance(3 * PING - Duration::from_millis(1));
    n.tick();
    assert!(n.c.is_connected());
    n.advance(Duration::from_millis(1));
    n.tick();
    assert!(!n.c.is_connected());
    assert_eq!(n.said(), [island(&[], &[])]);
}

#[test]
fn a_queue_past_max_queue_fails_the_link() {
    let max_queue = 4096;
    let mut n = Node::up(small_queue(max_queue));
    let ann = n.join_cold("r", 1, "ann", 0);
    let bob = n.c.member_id();
    assert!(n.c.join(&"r".into(), 2, bob, &"bob".into()));
    n.cmds(Conn::Cmd);
    let mut posts: Vec<String> = Vec::new();
    let mut waiting = 0;
    loop {
        let text = format!(r#"{{"n":{},"pad":"{}"}}"#, posts.len(), "x".repeat(180));
        waiting += text.len();
        assert!(n.c.post("r", Kind::Message, ann, "ann", text.clone()));
        posts.push(text);
        // What was written is gone; the posts still wait for their events.
        n.cmds(Conn::Cmd);
        n.tick();
        if waiting <= max_queue {
            assert!(n.c.is_up(), "{waiting} bytes wait");
            assert!(n.said().is_empty());
        } else {
            break;
        }
    }
    assert!(!n.c.is_connected(), "{waiting} bytes wait");
    let posts: Vec<(&str, &str)> = posts.iter().map(|p| ("r", p.as_str())).collect();
    assert_eq!(n.said(), [island(&[("r", 2)], &posts)]);
    assert_eq!(n.c.metrics.island_messages, posts.len() as u64);
    assert_eq!(n.c.metrics.link_failures, 1);
}

#[test]
fn a_reply_growing_past_max_queue_fails_the_link() {
    let mut n = Node::up(small_queue(4096));
    n.join_cold("r", 1, "ann", 0);
    // Half a big message, never finished.
    let mut bytes = message("r", &"y".repeat(8000));
    bytes.truncate(5000);
    n.feed(Conn::Sub, &bytes);
    assert!(!n.c.is_connected());
    assert_eq!(n.said(), [island(&[], &[])]);
}

#[test]
fn the_first_retry_waits_100_ms_give_or_take_a_quarter() {
    for _ in 0..20 {
        let (mut n, _) = busy(plain());
        n.feed(Conn::Cmd, b"-ERR boom\r\n");
        let failed = n.now;
        assert!(!n.c.should_connect(failed));
        assert!(!n.c.should_connect(failed + Duration::from_micros(74_999)));
        assert!(n.c.should_connect(failed + Duration::from_millis(125)));
        let retry = n.c.next_deadline() - failed;
        assert!(
            (Duration::from_millis(75)..=Duration::from_millis(125)).contains(&retry),
            "{retry:?}"
        );
        // A failed attempt doubles it.
        n.now = n.c.next_deadline();
        assert!(n.c.should_connect(n.now));
        n.c.connecting(n.now);
        n.cmds(Conn::Cmd);
        n.feed(Conn::Cmd, b"-ERR still no\r\n");
        assert!(!n.c.is_connected());
        let retry = n.c.next_deadline() - n.now;
        assert!(
            (Duration::from_millis(150)..=Duration::from_millis(250)).contains(&retry),
            "{retry:?}"
        );
        assert_eq!(n.c.metrics.link_failures, 2);
    }
}

// ---- 8. relinking after island ----

#[test]
fn relink_resubscribes_in_one_subscribe_sends_island_leaves_and_repairs() {
    let mut n = Node::up(plain());
    // r: ann alone, at 1. s: cat then bob, at 2. u: dan alone, at 1.
    let ann = n.join_cold("r", 1, "ann", 0);
    let cat = n.join_cold("s", 3, "cat", 0);
    let bob = n.join_live("s", 2, "bob", 2, 2);
    let dan = n.join_cold("u", 4, "dan", 0);
    let text = r#"{"type":"message","text":"said alone"}"#;
    assert!(n.c.post("r", Kind::Message, ann, "ann", text.to_string()));
    n.cmds(Conn::Cmd);
    // The post's reply is an error: cut off, the post is delivered locally.
    n.feed(Conn::Cmd, b"-ERR boom\r\n");
    assert_eq!(n.said(), [island(&[], &[("r", text)])]);
    assert_eq!(n.c.metrics.island_messages, 1);

    // While cut off: bob leaves s, dan leaves u (emptying it), erin joins t.
    assert!(!n.c.leave(&"s".into(), bob));
    assert!(!n.c.leave(&"u".into(), dan));
    let erin = n.c.member_id();
    assert!(!n.c.join(&"t".into(), 5, erin, &"erin".into()));
    assert!(!n.c.post("r", Kind::Message, ann, "ann", "{}".to_string()));
    assert!(n.cmds(Conn::Cmd).is_empty() && n.cmds(Conn::Sub).is_empty());
    assert_eq!(n.said(), ["forget u"], "the emptied room's cache goes");

    n.advance(Duration::from_millis(125));
    n.link(NODE as i64);
    // The leave from the room emptied meanwhile goes at once; bob's waits for
    // s's sync, so that its notice comes after the repair's range.
    let cmd = n.cmds(Conn::Cmd);
    assert_eq!(cmd.len(), 1, "{cmd:?}");
    n.assert_leave(&cmd[0], "u", dan);
    // Every room with members here, in one SUBSCRIBE.
    let sub = n.cmds(Conn::Sub);
    assert_eq!(sub.len(), 1, "{sub:?}");
    assert_eq!(sub[0][0], "SUBSCRIBE");
    let mut channels = sub[0][1..].to_vec();
    channels.sort();
    assert_eq!(channels, ["lc:{r}", "lc:{s}", "lc:{t}"]);
    n.feed(Conn::Cmd, &integer(2)); // dan's leave

    // The acks: a repair for the rooms it had, a seed for the new one.
    n.feed(Conn::Sub, &subscribed("r", 1));
    n.feed(Conn::Sub, &subscribed("s", 2));
    n.feed(Conn::Sub, &subscribed("t", 3));
    let cmd = n.cmds(Conn::Cmd);
    assert_eq!(cmd.len(), 4);
    n.assert_sync(&cmd[0], "r", "1", &[(ann, "ann")]);
    n.assert_sync(&cmd[1], "s", "2", &[(cat, "cat")]);
    n.assert_leave(&cmd[2], "s", bob);
    n.assert_sync(&cmd[3], "t", "0", &[(erin, "erin")]);

    // r: its own island post (2) did reach Redis; 3 is another node's.
    let own = ev_post("e1", 2, ann, 1, "1.1", "ann", text);
    n.feed(
        Conn::Cmd,
        &synced("e1", 3, &[own.clone(), other_msg(3)], None),
    );
    assert_eq!(n.said(), [other_msg_event("r", 3)], "the island post once");
    assert_eq!(n.c.metrics.gaps_repaired, 1);
    n.feed(Conn::Sub, &message("r", &own));
    assert!(n.said().is_empty());
    // s: nothing happened meanwhile: no gap (bob's leave comes next, live).
    n.feed(Conn::Cmd, &synced("e1", 2, &[], Some(&[(cat, "cat")])));
    assert!(n.said().is_empty());
    assert_eq!(n.c.metrics.gaps_unrepaired, 0);
    n.feed(Conn::Cmd, &integer(3)); // bob's leave
                                    // t: history only.
    n.feed(
        Conn::Cmd,
        &synced(
            "e1",
            2,
            &[other_msg(1), other_msg(2)],
            Some(&[(erin, "erin")]),
        ),
    );
    assert_eq!(
        n.said(),
        [
            format!("seed t {}", json('m', 1)),
            format!("seed t {}", json('m', 2)),
        ]
    );
    // Live again everywhere.
    n.other_message("r", 4);
    n.other_message("s", 3);
    assert_eq!(n.said(), [other_msg_event("r", 4), other_msg_event("s", 3)]);
    // Post numbers go on: the island post's tag is not used again.
    assert!(n.c.post("r", Kind::Message, ann, "ann", "{}".to_string()));
    assert_eq!(n.cmds(Conn::Cmd)[0][9..11], ["1", "2"]);
    assert_eq!(n.c.metrics.link_ups, 2);
}

#[test]
fn joins_waiting_when_the_link_fails_complete_locally_and_rejoin_with_the_rest() {
    let (mut n, text) = busy(plain());
    n.feed(Conn::Cmd, b"-ERR boom\r\n");
    assert_eq!(n.said(), [island(&[("r", 2)], &[("r", &text)])]);
    n.advance(Duration::from_millis(125));
    n.link(NODE as i64);
    assert!(n.cmds(Conn::Cmd).is_empty());
    assert_eq!(n.cmds(Conn::Sub), [["SUBSCRIBE", "lc:{r}"]]);
    n.feed(Conn::Sub, &subscribed("r", 1));
    let cmd = n.cmds(Conn::Cmd);
    assert_eq!(cmd.len(), 1);
    assert_eq!(cmd[0][11], "1", "history after the last delivered");
    assert_eq!(cmd[0].len(), 18, "both members re-registered: {cmd:?}");
}

// ---- 9. leaving ----

#[test]
fn the_last_member_leaving_unsubscribes_and_forgets_the_room() {
    let mut n = Node::up(plain());
    let room: Rc<str> = "r".into();
    let ann = n.join_cold("r", 1, "ann", 0);
    let bob = n.join_live("r", 2, "bob", 2, 2);

    assert!(n.c.leave(&room, ann));
    let cmd = n.cmds(Conn::Cmd);
    assert_eq!(cmd.len(), 1);
    n.assert_leave(&cmd[0], "r", ann);
    assert!(n.cmds(Conn::Sub).is_empty(), "bob is still here");
    assert!(n.said().is_empty());
    n.feed(Conn::Cmd, &integer(3));
    n.feed(
        Conn::Sub,
        &message("r", &ev('l', "e1", 3, ann, 1, "1.0", "ann")),
    );
    assert_eq!(
        n.said(),
        [event("r", Kind::Leave, ann, "ann", 1, &json('l', 3))]
    );

    assert!(n.c.leave(&room, bob));
    let cmd = n.cmds(Conn::Cmd);
    assert_eq!(cmd.len(), 1);
    n.assert_leave(&cmd[0], "r", bob);
    assert_eq!(n.cmds(Conn::Sub), [["UNSUBSCRIBE", "lc:{r}"]]);
    assert_eq!(n.said(), ["forget r"]);
    // What still comes for it is not ours any more.
    n.feed(Conn::Cmd, &integer(4));
    n.feed(
        Conn::Sub,
        &message("r", &ev('l', "e1", 4, bob, 0, "1.0", "bob")),
    );
    n.feed(Conn::Sub, &unsubscribed("r", 0));
    assert!(n.said().is_empty());
    assert!(n.c.is_up());
    // Leaving a room it does not have.
    assert!(!n.c.leave(&room, bob));
    assert!(n.cmds(Conn::Cmd).is_empty());
    // Coming back subscribes again.
    n.join_cold("r", 1, "ann", 4);
}

#[test]
fn leaving_before_the_subscribe_ack_forgets_the_room() {
    let mut n = Node::up(plain());
    let room: Rc<str> = "r".into();
    let ann = n.c.member_id();
    assert!(n.c.join(&room, 1, ann, &"ann".into()));
    n.cmds(Conn::Sub);
    assert!(n.c.leave(&room, ann));
    let cmd = n.cmds(Conn::Cmd);
    n.assert_leave(&cmd[0], "r", ann);
    assert_eq!(n.cmds(Conn::Sub), [["UNSUBSCRIBE", "lc:{r}"]]);
    assert_eq!(n.said(), ["forget r"]);
    n.feed(Conn::Sub, &subscribed("r", 1));
    n.feed(Conn::Sub, &unsubscribed("r", 0));
    assert!(n.cmds(Conn::Cmd).is_empty(), "no seed for a room it left");
    assert!(n.said().is_empty());
    assert!(n.c.is_up());
}

#[test]
fn leave_while_down_is_refused() {
    let mut n = Node::new(plain());
    let room: Rc<str> = "r".into();
    let ann = n.c.member_id();
    assert!(!n.c.join(&room, 1, ann, &"ann".into()));
    assert!(!n.c.leave(&room, ann));
    assert!(n.cmds(Conn::Cmd).is_empty() && n.cmds(Conn::Sub).is_empty());
    assert_eq!(n.said(), ["forget r"], "the emptied room's cache goes");

    // After a failure, too.
    let (mut n, _) = busy(plain());
    n.feed(Conn::Cmd, b"-ERR boom\r\n");
    n.said();
    assert!(!n.c.leave(&room, 4294967297));
    assert!(n.cmds(Conn::Cmd).is_empty() && n.cmds(Conn::Sub).is_empty());
}

// ---- in-flight posts whose room is gone ----

/// A member posts and leaves at once, the room's last here: the post's event
/// comes back after the room is forgotten. The post must not stay "in
/// flight": it counts against --redis-max-queue until the link drops.
#[test]
fn posts_in_a_room_left_meanwhile_do_not_fill_the_queue() {
    let mut n = Node::up(small_queue(4096));
    let room: Rc<str> = "r".into();
    let mut seq = 0;
    for round in 0..40 {
        let why = format!("round {round}: the link dropped with the posts of {round} forgotten rooms still in flight");
        let ann = n.c.member_id();
        assert!(n.c.join(&room, 1, ann, &"ann".into()), "{why}");
        n.cmds(Conn::Sub);
        n.feed(Conn::Sub, &subscribed("r", 1));
        n.cmds(Conn::Cmd);
        n.feed(Conn::Cmd, &synced("e1", seq as i64, &[], None));
        seq += 1;
        n.feed(
            Conn::Sub,
            &message("r", &ev('j', "e1", seq, ann, 1, "1.0", "ann")),
        );
        assert!(n.c.is_up(), "{why}");
        assert_eq!(n.said().len(), 2, "{why}");
        let text = format!(r#"{{"n":{round:03},"pad":"{}"}}"#, "x".repeat(180));
        assert!(n.c.post("r", Kind::Message, ann, "ann", text.clone()));
        assert!(n.c.leave(&room, ann));
        n.cmds(Conn::Cmd);
        assert_eq!(n.cmds(Conn::Sub), [["UNSUBSCRIBE", "lc:{r}"]]);
        // Redis ran the post, then the leave, then the UNSUBSCRIBE.
        n.feed(Conn::Cmd, &posted("e1", seq as i64 + 1));
        n.feed(Conn::Cmd, &integer(seq as i64 + 2));
        let own = ev_post(
            "e1",
            seq + 1,
            ann,
            1,
            &format!("1.{}", round + 1),
            "ann",
            &text,
        );
        n.feed(Conn::Sub, &message("r", &own));
        n.feed(
            Conn::Sub,
            &message("r", &ev('l', "e1", seq + 2, ann, 0, "1.0", "ann")),
        );
        n.feed(Conn::Sub, &unsubscribed("r", 0));
        seq += 2;
        n.tick();
        assert!(n.c.is_up(), "{why}");
        assert_eq!(n.said(), ["forget r"], "{why}");
    }
}

/// The same, seen from the island: a post that came back must not be handed
/// back again (and counted) when the link fails later.
#[test]
fn a_post_that_came_back_after_its_room_was_left_is_not_an_island_post() {
    let mut n = Node::up(plain());
    let room: Rc<str> = "r".into();
    let ann = n.join_cold("r", 1, "ann", 0);
    let text = r#"{"type":"message","text":"bye"}"#;
    assert!(n.c.post("r", Kind::Message, ann, "ann", text.to_string()));
    assert!(n.c.leave(&room, ann));
    n.cmds(Conn::Cmd);
    n.cmds(Conn::Sub);
    n.feed(Conn::Cmd, &posted("e1", 2));
    n.feed(Conn::Cmd, &integer(3));
    n.feed(
        Conn::Sub,
        &message("r", &ev_post("e1", 2, ann, 1, "1.1", "ann", text)),
    );
    assert_eq!(n.said(), ["forget r"]);
    n.feed(Conn::Sub, b"?\r\n");
    assert!(!n.c.is_connected());
    assert_eq!(n.said(), [island(&[], &[])]);
    assert_eq!(n.c.metrics.island_messages, 0);
}

// ---- 10. bad input never panics ----

const ANN: u64 = (1 << 32) | 1;
const BOB: u64 = (1 << 32) | 2;

/// A linked node with work in every state: a live room `r` (ann), bob waiting
/// in `r`, a post in flight, and a room `s` waiting for its subscribe ack.
fn workbench() -> Node {
    let mut n = Node::up(plain());
    let ann = n.join_cold("r", 1, "ann", 2);
    assert_eq!(ann, ANN);
    let bob = n.c.member_id();
    assert!(n.c.join(&"r".into(), 2, bob, &"bob".into()));
    assert!(n.c.post("r", Kind::Message, ann, "ann", "{}".to_string()));
    let cat = n.c.member_id();
    assert!(n.c.join(&"s".into(), 3, cat, &"cat".into()));
    n.cmds(Conn::Cmd);
    n.cmds(Conn::Sub);
    n
}

/// What must hold after any input: up, or down with one island per failure;
/// what it writes is bounded and well formed.
fn check(n: &mut Node, islands: &mut u64) {
    assert!(n.c.is_up() || !n.c.is_connected());
    for conn in [Conn::Cmd, Conn::Sub] {
        let out = std::mem::take(n.c.output(conn));
        assert!(out.len() <= 64 << 10, "{} bytes to write", out.len());
        decode_commands(&out);
    }
    for h in n.happenings() {
        if matches!(h, Happening::Island { .. }) {
            *islands += 1;
        }
    }
    assert_eq!(*islands, n.c.metrics.link_failures);
    if !n.c.is_connected() {
        // Failed cleanly: nothing written, and it may link again.
        n.advance(Duration::from_millis(125));
        n.link(NODE as i64);
        n.cmds(Conn::Cmd);
        n.cmds(Conn::Sub);
    }
}

fn arb_envelope() -> impl Strategy<Value = String> {
    let good = (
        prop::sample::select(vec!['m', 'm', 'm', 'j', 'l', 'r']),
        prop::sample::select(vec!["e1", "e1", "e1", "e2"]),
        0u64..12,
        prop::sample::select(vec![ANN, BOB, OTHER_2]),
        0u64..4,
        prop::sample::select(vec!["1.0", "1.1", "1.2", "2.7"]),
        "[a-z]{0,3}",
        prop::sample::select(vec!["{}", "{\"a\":1}"]),
    );
    let odd = (
        prop::sample::select(vec!['m', 'x']),
        prop::sample::select(vec!["e1", ""]),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        prop::sample::select(vec!["1.1", "1", "x.y"]),
        "\\PC{0,3}",
        prop::sample::select(vec!["{}", "", "x"]),
    );
    prop_oneof![9 => good, 1 => odd].prop_map(|(k, e, s, id, online, tag, name, json)| {
        format!(
            "{k} {e} {s} {id} {online} {tag} {}:{name}{json}",
            name.len()
        )
    })
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "message",
            "subscribe",
            "unsubscribe",
            "pong",
            "lc:{r}",
            "lc:{s}",
            "lc:{q}",
            "lc:{",
            "e1",
            "4294967297",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        arb_envelope().prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..12),
    ]
}

fn arb_reply() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        prop::sample::select(vec!["OK", "PONG", "QUEUED", ""])
            .prop_map(|s| Reply::Simple(s.as_bytes().to_vec())),
        "[A-Za-z ]{0,10}".prop_map(|s| Reply::Error(s.into_bytes())),
        prop_oneof![-2i64..12, any::<i64>()].prop_map(Reply::Integer),
        Just(Reply::Nil),
        arb_bytes().prop_map(Reply::Bulk),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop::collection::vec(inner, 0..5).prop_map(Reply::Array)
    })
}

/// What the subscriber gets: mostly pub/sub shaped.
fn arb_pubsub() -> impl Strategy<Value = Reply> {
    (
        prop_oneof![
            8 => Just("message"),
            2 => Just("subscribe"),
            1 => Just("unsubscribe"),
            1 => Just("pong"),
            1 => Just("pmessage"),
        ],
        prop_oneof![
            4 => Just("lc:{r}"),
            2 => Just("lc:{s}"),
            1 => Just("lc:{q}"),
            1 => Just("x"),
        ],
        prop_oneof![
            8 => arb_envelope().prop_map(bulk),
            1 => (-1i64..3).prop_map(Reply::Integer),
            1 => arb_reply(),
        ],
    )
        .prop_map(|(kind, channel, third)| Reply::Array(vec![bulk(kind), bulk(channel), third]))
}

/// What the command connection gets: mostly sync-script shaped.
fn arb_synced() -> impl Strategy<Value = Reply> {
    (
        prop::sample::select(vec!["e1", "e2"]),
        prop_oneof![-1i64..14, any::<i64>()],
        prop::collection::vec(arb_envelope().prop_map(bulk), 0..5),
        prop_oneof![
            Just(Reply::Nil),
            prop::collection::vec(
                prop_oneof![
                    prop::sample::select(vec!["4294967297", "8589934593", "ann", "x"])
                        .prop_map(bulk),
                    Just(Reply::Integer(1)),
                ],
                0..6
            )
            .prop_map(Reply::Array),
        ],
    )
        .prop_map(|(epoch, seq, history, people)| {
            Reply::Array(vec![
                bulk(epoch),
                Reply::Integer(seq),
                Reply::Array(history),
                people,
            ])
        })
}

#[derive(Debug, Clone)]
enum Step {
    Sub(Reply),
    Cmd(Reply),
    /// Milliseconds later, then `tick`.
    Tick(u64),
    /// Bytes, not necessarily RESP, on `Sub` (true) or `Cmd`.
    Raw(bool, Vec<u8>),
    Post,
    Join,
    Leave,
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => arb_pubsub().prop_map(Step::Sub),
        3 => arb_synced().prop_map(Step::Cmd),
        1 => arb_reply().prop_map(Step::Sub),
        2 => arb_reply().prop_map(Step::Cmd),
        1 => (0u64..5000).prop_map(Step::Tick),
        1 => (any::<bool>(), prop::collection::vec(any::<u8>(), 0..24)).prop_map(|(s, b)| Step::Raw(s, b)),
        1 => Just(Step::Post),
        1 => Just(Step::Join),
        1 => Just(Step::Leave),
    ]
}

/// What a fake Redis does to the node in [`delivery_is_exactly_once_in_order`].
#[derive(Debug, Clone)]
enum Act {
    /// Another node's message: lost on the way, or sent twice.
    Publish { lost: bool, twice: bool },
    /// An old message again, long after.
    Stale(usize),
    /// A message of this node's members.
    Post,
    /// Redis reads what the node wrote, runs it, owes the replies; the events
    /// of posts are lost if `lost`.
    Run { lost: bool },
    /// Up to this many events arrive on the subscriber.
    Sub(usize),
    /// Up to this many replies arrive on the command connection.
    Reply(usize),
}

fn arb_act() -> impl Strategy<Value = Act> {
    prop_oneof![
        5 => (prop::bool::weighted(0.2), prop::bool::weighted(0.1))
            .prop_map(|(lost, twice)| Act::Publish { lost, twice }),
        1 => (0usize..20).prop_map(Act::Stale),
        2 => Just(Act::Post),
        2 => prop::bool::weighted(0.2).prop_map(|lost| Act::Run { lost }),
        3 => (1usize..4).prop_map(Act::Sub),
        2 => (1usize..3).prop_map(Act::Reply),
    ]
}

/// Room `r` in a fake Redis: its sequence number, what was published (by
/// sequence number), and what is on its way to the node.
struct FakeRedis {
    seq: u64,
    published: Vec<(u64, String)>,
    /// The sequence number of every message's JSON.
    seq_of: std::collections::HashMap<String, u64>,
    to_sub: std::collections::VecDeque<Vec<u8>>,
    to_cmd: std::collections::VecDeque<Vec<u8>>,
}

impl FakeRedis {
    fn publish(&mut self, envelope: String, json: String, lost: bool, twice: bool) {
        self.published.push((self.seq, envelope.clone()));
        self.seq_of.insert(json, self.seq);
        let bytes = message("r", &envelope);
        if !lost {
            self.to_sub.push_back(bytes.clone());
        }
        if twice {
            self.to_sub.push_back(bytes);
        }
    }

    /// Runs every command the node wrote, as the scripts would.
    fn run(&mut self, n: &mut Node, lost: bool) {
        for c in n.cmds(Conn::Cmd) {
            assert_eq!(c[0], "EVALSHA", "{c:?}");
            if c[1] == n.shas[0] {
                let after: i64 = c[11].parse().unwrap();
                assert!(after >= 0, "only repairs here: {c:?}");
                let history: Vec<String> = self
                    .published
                    .iter()
                    .filter(|(seq, _)| *seq as i64 > after)
                    .map(|(_, e)| e.clone())
                    .collect();
                self.to_cmd
                    .push_back(synced("e1", self.seq as i64, &history, None));
            } else {
                assert_eq!(c[1], n.shas[1], "the post script: {c:?}");
                let first: u64 = c[10].parse().unwrap();
                let count: usize = c[11].parse().unwrap();
                for i in 0..count {
                    let at = 13 + 4 * i;
                    self.seq += 1;
                    let id: u64 = c[at + 1].parse().unwrap();
                    let tag = format!("{}.{}", c[9], first + i as u64);
                    let envelope = ev_post("e1", self.seq, id, 1, &tag, &c[at + 2], &c[at + 3]);
                    self.publish(envelope, c[at + 3].clone(), lost, false);
                }
                self.to_cmd.push_back(posted("e1", self.seq as i64));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Events lost, doubled, late, and replies late, in any mix: every message
    /// is delivered, once, in the room's order (lost ones repaired from the
    /// history), the node's own posts included.
    #[test]
    fn delivery_is_exactly_once_in_order(acts in prop::collection::vec(arb_act(), 1..60)) {
        let mut n = Node::up(plain());
        let ann = n.join_cold("r", 1, "ann", 0);
        let mut redis = FakeRedis {
            seq: 1,
            published: Vec::new(),
            seq_of: Default::default(),
            to_sub: Default::default(),
            to_cmd: Default::default(),
        };
        let mut delivered: Vec<u64> = Vec::new();
        let mut posts = 0;
        let take = |n: &mut Node, delivered: &mut Vec<u64>, redis: &FakeRedis| {
            for h in n.happenings() {
                match h {
                    Happening::Event { kind: Kind::Message, frame, .. } => {
                        delivered.push(redis.seq_of[text_of(&frame)]);
                    }
                    other => panic!("{}", describe(&other)),
                }
            }
        };
        for act in acts {
            match act {
                Act::Publish { lost, twice } => {
                    redis.seq += 1;
                    let envelope = ev('m', "e1", redis.seq, OTHER_1, 2, "2.1", "zed");
                    redis.publish(envelope, json('m', redis.seq), lost, twice);
                }
                Act::Stale(back) => {
                    if !redis.published.is_empty() {
                        let i = redis.published.len() - 1 - back % redis.published.len();
                        let bytes = message("r", &redis.published[i].1);
                        redis.to_sub.push_back(bytes);
                    }
                }
                Act::Post => {
                    posts += 1;
                    let text = format!(r#"{{"post":{posts}}}"#);
                    prop_assert!(n.c.post("r", Kind::Message, ann, "ann", text));
                }
                Act::Run { lost } => redis.run(&mut n, lost),
                Act::Sub(k) => {
                    for _ in 0..k {
                        if let Some(bytes) = redis.to_sub.pop_front() {
                            n.feed(Conn::Sub, &bytes);
                        }
                    }
                }
                Act::Reply(k) => {
                    for _ in 0..k {
                        if let Some(bytes) = redis.to_cmd.pop_front() {
                            n.feed(Conn::Cmd, &bytes);
                        }
                    }
                }
            }
            prop_assert!(n.c.is_up());
            take(&mut n, &mut delivered, &redis);
        }
        // One last message shows any loss at the end; then everything arrives.
        redis.seq += 1;
        let envelope = ev('m', "e1", redis.seq, OTHER_1, 2, "2.1", "zed");
        redis.publish(envelope, json('m', redis.seq), false, false);
        loop {
            redis.run(&mut n, false);
            if redis.to_sub.is_empty() && redis.to_cmd.is_empty() {
                break;
            }
            while let Some(bytes) = redis.to_sub.pop_front() {
                n.feed(Conn::Sub, &bytes);
            }
            while let Some(bytes) = redis.to_cmd.pop_front() {
                n.feed(Conn::Cmd, &bytes);
            }
        }
        prop_assert!(n.c.is_up());
        take(&mut n, &mut delivered, &redis);
        let all: Vec<u64> = (2..=redis.seq).collect();
        prop_assert_eq!(delivered, all);
        prop_assert_eq!(n.c.metrics.gaps_unrepaired, 0);
        prop_assert_eq!(n.c.metrics.gaps_repaired, n.c.metrics.gaps_detected);
    }

    /// Replies shaped like Redis's, right or wrong, in any order.
    #[test]
    fn arbitrary_replies_leave_it_up_or_cleanly_failed(steps in prop::collection::vec(arb_step(), 1..24)) {
        let mut n = workbench();
        let mut islands = 0;
        let (r, s): (Rc<str>, Rc<str>) = ("r".into(), "s".into());
        for step in steps {
            match step {
                Step::Sub(reply) => n.feed(Conn::Sub, &resp(&reply)),
                Step::Cmd(reply) => n.feed(Conn::Cmd, &resp(&reply)),
                Step::Tick(ms) => {
                    n.advance(Duration::from_millis(ms));
                    n.tick();
                }
                Step::Raw(sub, bytes) => {
                    n.feed(if sub { Conn::Sub } else { Conn::Cmd }, &bytes)
                }
                Step::Post => {
                    let _ = n.c.post("r", Kind::Message, ANN, "ann", "{\"p\":1}".to_string());
                }
                Step::Join => {
                    let id = n.c.member_id();
                    let _ = n.c.join(&s, 9, id, &"dee".into());
                }
                Step::Leave => {
                    let _ = n.c.leave(&r, BOB);
                }
            }
            check(&mut n, &mut islands);
        }
    }

    /// A stream of replies, one byte changed, cut anywhere.
    #[test]
    fn arbitrary_bytes_leave_it_up_or_cleanly_failed(
        replies in prop::collection::vec((any::<bool>(), prop_oneof![arb_pubsub(), arb_synced(), arb_reply()]), 1..12),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut n = workbench();
        let mut islands = 0;
        let mut streams = [Vec::new(), Vec::new()];
        for (sub, reply) in &replies {
            encode(&mut streams[usize::from(*sub)], reply);
        }
        for (i, mut stream) in streams.into_iter().enumerate() {
            let conn = if i == 1 { Conn::Sub } else { Conn::Cmd };
            if !stream.is_empty() {
                let at = flip.index(stream.len());
                stream[at] = byte;
            }
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            for piece in points.windows(2) {
                n.feed(conn, &stream[piece[0]..piece[1]]);
                check(&mut n, &mut islands);
            }
        }
    }

    /// Anything at all, on either connection.
    #[test]
    fn random_bytes_leave_it_up_or_cleanly_failed(
        chunks in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..64)), 1..8),
    ) {
        let mut n = workbench();
        let mut islands = 0;
        for (sub, bytes) in chunks {
            n.feed(if sub { Conn::Sub } else { Conn::Cmd }, &bytes);
            check(&mut n, &mut islands);
        }
    }
}

// ---- relay rooms ----

fn relay_reply(kind: &str, room: &str, third: Reply) -> Vec<u8> {
    resp(&Reply::Array(vec![
        bulk(kind),
        bulk(format!("lcr:{{{room}}}")),
        third,
    ]))
}

#[test]
fn a_relay_message_waits_for_the_subscription_then_comes_back_verbatim() {
    let mut n = Node::up(plain());
    n.c.join_relay("p");
    assert_eq!(n.cmds(Conn::Sub), [["SUBSCRIBE", "lcr:{p}"]]);
    // Sent before the ack: held, so that it cannot miss this node's own members.
    assert!(n.c.relay("p", false, b"hi"));
    assert!(n.cmds(Conn::Cmd).is_empty());
    n.feed(Conn::Sub, &relay_reply("subscribe", "p", Reply::Integer(1)));
    assert_eq!(n.cmds(Conn::Cmd), [["PUBLISH", "lcr:{p}", "thi"]]);
    n.feed(Conn::Cmd, &integer(1));
    n.feed(Conn::Sub, &relay_reply("message", "p", bulk(b"b\x00\xff")));
    n.feed(Conn::Sub, &relay_reply("message", "p", bulk(b"thello")));
    assert_eq!(
        n.said(),
        [
            "relay p binary true [0, 255]".to_string(),
            "relay p binary false [104, 101, 108, 108, 111]".to_string(),
        ]
    );
    // A payload without its kind byte, or text that is not UTF-8: dropped, counted.
    n.feed(Conn::Sub, &relay_reply("message", "p", bulk(b"")));
    n.feed(Conn::Sub, &relay_reply("message", "p", bulk(b"t\xff")));
    assert!(n.said().is_empty());
    assert_eq!(n.c.metrics.bad_replies, 2);
    assert!(n.c.is_up());
    // The last member leaving unsubscribes.
    n.c.leave_relay("p");
    assert_eq!(n.cmds(Conn::Sub), [["UNSUBSCRIBE", "lcr:{p}"]]);
}

#[test]
fn relay_messages_held_when_the_link_fails_are_delivered_here() {
    let mut n = Node::up(plain());
    n.c.join_relay("p");
    n.cmds(Conn::Sub);
    assert!(n.c.relay("p", false, b"held"));
    n.feed(Conn::Cmd, b"-ERR boom\r\n");
    let said = n.said();
    assert_eq!(said.len(), 2, "{said:?}");
    assert_eq!(said[1], "relay p binary false [104, 101, 108, 100]");
    // Down: the server relays locally.
    assert!(!n.c.relay("p", false, b"local"));
}

// ---- posts of one iteration: one script call per room ----

#[test]
fn a_room_s_posts_of_one_iteration_go_in_one_script_call() {
    let mut n = Node::up(plain());
    let ann = n.join_cold("r", 1, "ann", 0);
    let bob = n.join_cold("s", 2, "bob", 0);
    for i in 0..3 {
        assert!(n
            .c
            .post("r", Kind::Message, ann, "ann", format!("{{\"r\":{i}}}")));
    }
    assert!(n
        .c
        .post("s", Kind::Message, bob, "bob", "{\"s\":0}".to_string()));
    assert!(n
        .c
        .post("r", Kind::Rename, ann, "anna", "{\"r\":3}".to_string()));
    let cmd = n.cmds(Conn::Cmd);
    // r's run of three, s's one, then r's rename: the order asked in holds.
    let runs: Vec<(&str, &str, &str)> = cmd
        .iter()
        .map(|c| (c[7].as_str(), c[10].as_str(), c[11].as_str()))
        .collect();
    assert_eq!(
        runs,
        [
            ("lc:{r}", "1", "3"),
            ("lc:{s}", "4", "1"),
            ("lc:{r}", "5", "1")
        ]
    );
    assert_eq!(
        cmd[0][13..],
        [
            "m",
            &ann.to_string(),
            "ann",
            "{\"r\":0}",
            "m",
            &ann.to_string(),
            "ann",
            "{\"r\":1}",
            "m",
            &ann.to_string(),
            "ann",
            "{\"r\":2}",
            "86400"
        ]
    );
    // A join (another command) flushes what was queued before it.
    assert!(n
        .c
        .post("r", Kind::Message, ann, "ann", "{\"r\":4}".to_string()));
    let cat = n.c.member_id();
    assert!(n.c.join(&"r".into(), 3, cat, &"cat".into()));
    let cmd = n.cmds(Conn::Cmd);
    assert_eq!(cmd.len(), 2);
    assert_eq!(
        (cmd[0][1].as_str(), cmd[1][1].as_str()),
        (n.shas[1].as_str(), n.shas[0].as_str())
    );
}

#[test]
fn a_batch_published_by_one_post_call_is_delivered_event_by_event() {
    let mut n = Node::up(plain());
    n.join_cold("r", 1, "ann", 0);
    let (a, b, c) = (other_msg(2), other_msg(3), other_msg(4));
    let batch = format!("{} {a}{} {b}{} {c}", a.len(), b.len(), c.len());
    n.feed(Conn::Sub, &message("r", &batch));
    assert_eq!(
        n.said(),
        [
            other_msg_event("r", 2),
            other_msg_event("r", 3),
            other_msg_event("r", 4)
        ]
    );
    // A batch cut short: what was whole is delivered, the rest counted bad.
    let (d, e) = (other_msg(5), other_msg(6));
    let cut = format!("{} {d}{} {}", d.len(), e.len() + 9, e);
    n.feed(Conn::Sub, &message("r", &cut));
    assert_eq!(n.said(), [other_msg_event("r", 5)]);
    assert_eq!(n.c.metrics.bad_replies, 1);
    assert!(n.c.is_up());
}
