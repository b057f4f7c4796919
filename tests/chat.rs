//! The chat over real sockets: rooms, the JSON frames (welcome, message, join,
//! leave), names, escaping (no forged notices), history replay, and binary refusal.

mod common;
use common::*;
use std::net::SocketAddr;

// ---- A strict little JSON reader for the server's objects ----------------------------

/// A value in a chat frame: strings, integers, null, and (in the welcome) a list
/// of member objects and an object of limits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Str(String),
    Int(i64),
    Null,
    List(Vec<Value>),
    Object(Vec<(String, Value)>),
}

/// A flat JSON object, fields in the order they were sent.
#[derive(Debug, Clone)]
struct Json {
    source: String,
    fields: Vec<(String, Value)>,
}

impl Json {
    /// Parses `text` as one flat JSON object; panics on anything else (so a frame
    /// that is not valid JSON fails the test).
    fn parse(text: &str) -> Json {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
            text,
        };
        let fields = p.object();
        p.ws();
        assert_eq!(p.i, text.len(), "trailing bytes after the object: {text}");
        let mut names: Vec<&String> = fields.iter().map(|(k, _)| k).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), fields.len(), "duplicate keys in {text}");
        Json {
            source: text.to_string(),
            fields,
        }
    }

    fn get(&self, key: &str) -> &Value {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {key:?} in {}", self.source))
    }

    fn str(&self, key: &str) -> &str {
        match self.get(key) {
            Value::Str(s) => s,
            other => panic!("{key:?} is not a string but {other:?} in {}", self.source),
        }
    }

    fn int(&self, key: &str) -> i64 {
        match self.get(key) {
            Value::Int(n) => *n,
            other => panic!("{key:?} is not a number but {other:?} in {}", self.source),
        }
    }

    fn kind(&self) -> &str {
        self.str("type")
    }

    fn keys(&self) -> Vec<&str> {
        self.fields.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// Asserts that the fields are exactly `keys`, in this order.
    #[track_caller]
    fn assert_keys(&self, keys: &[&str]) {
        assert_eq!(self.keys(), keys, "{}", self.source);
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn fail(&self, what: &str) -> ! {
        panic!(
            "invalid JSON ({what}) at byte {} of {:?}",
            self.i, self.text
        )
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, byte: u8) {
        self.ws();
        if self.s.get(self.i) != Some(&byte) {
            self.fail(&format!("expected {:?}", byte as char));
        }
        self.i += 1;
    }

    fn object(&mut self) -> Vec<(String, Value)> {
        self.eat(b'{');
        let mut fields = Vec::new();
        self.ws();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            return fields;
        }
        loop {
            self.ws();
            let key = self.string();
            self.eat(b':');
            self.ws();
            let value = self.value();
            fields.push((key, value));
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return fields;
                }
                _ => self.fail("expected , or }"),
            }
        }
    }

    fn value(&mut self) -> Value {
        self.ws();
        match self.s.get(self.i) {
            Some(b'"') => Value::Str(self.string()),
            Some(b'-' | b'0'..=b'9') => Value::Int(self.int()),
            Some(b'{') => Value::Object(self.object()),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Value::List(items);
                }
                loop {
                    items.push(self.value());
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Value::List(items);
                        }
                        _ => self.fail("expected , or ]"),
                    }
                }
            }
            _ if self.text[self.i..].starts_with("null") => {
                self.i += 4;
                Value::Null
            }
            _ => self.fail("expected a value"),
        }
    }

    fn int(&mut self) -> i64 {
        let start = self.i;
        if self.s[self.i] == b'-' {
            self.i += 1;
        }
        while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
            self.i += 1;
        }
        self.text[start..self.i]
            .parse()
            .unwrap_or_else(|_| self.fail("bad integer"))
    }

    fn hex4(&mut self) -> u32 {
        let digits = self
            .text
            .get(self.i..self.i + 4)
            .unwrap_or_else(|| self.fail("short \\u escape"));
        self.i += 4;
        u32::from_str_radix(digits, 16).unwrap_or_else(|_| self.fail("bad \\u escape"))
    }

    fn string(&mut self) -> String {
        if self.s.get(self.i) != Some(&b'"') {
            self.fail("expected a string");
        }
        self.i += 1;
        let mut out = String::new();
        loop {
            let Some(&b) = self.s.get(self.i) else {
                self.fail("unterminated string")
            };
            match b {
                b'"' => {
                    self.i += 1;
                    return out;
                }
                b'\\' => {
                    let Some(&e) = self.s.get(self.i + 1) else {
                        self.fail("unterminated escape")
                    };
                    self.i += 2;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let mut code = self.hex4();
                            if (0xd800..0xdc00).contains(&code) {
                                if self.text.get(self.i..self.i + 2) != Some("\\u") {
                                    self.fail("lone high surrogate");
                                }
                                self.i += 2;
                                let low = self.hex4();
                                if !(0xdc00..0xe000).contains(&low) {
                                    self.fail("bad low surrogate");
                                }
                                code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                            }
                            out.push(char::from_u32(code).unwrap_or_else(|| self.fail("bad char")));
                        }
                        _ => self.fail("unknown escape"),
                    }
                }
                0x00..=0x1f => self.fail("raw control character in a string"),
                _ => {
                    // Copy one whole UTF-8 character.
                    let rest = &self.text[self.i..];
                    let c = rest.chars().next().unwrap();
                    out.push(c);
                    self.i += c.len_utf8();
                }
            }
        }
    }
}

// ---- Chat clients -------------------------------------------------------------------

/// Reads the next frame as a chat JSON object.
fn next(raw: &mut Raw) -> Json {
    Json::parse(&raw.read_text())
}

/// Reads the next frame and checks its type.
fn expect(raw: &mut Raw, kind: &str) -> Json {
    let json = next(raw);
    assert_eq!(json.kind(), kind, "{}", json.source);
    json
}

/// Joins `path`, reads the welcome and any history up to the newcomer's own join
/// notice. Returns the client, its welcome and the history.
fn join(addr: SocketAddr, path: &str) -> (Raw, Json, Vec<Json>) {
    let mut raw = Raw::websocket(addr, path);
    let welcome = expect(&mut raw, "welcome");
    let mut history = Vec::new();
    loop {
        let json = next(&mut raw);
        match json.kind() {
            "message" => history.push(json),
            "join" => {
                assert_eq!(json.int("id"), welcome.int("id"), "{}", json.source);
                assert_eq!(json.int("online"), welcome.int("online"));
                return (raw, welcome, history);
            }
            // In a big room the newcomer's join comes in the next presence notice.
            "presence" if lists(&json, "joined", welcome.int("id")) => {
                return (raw, welcome, history);
            }
            "presence" => {}
            other => panic!("unexpected {other} before the join notice: {}", json.source),
        }
    }
}

/// Whether the `key` list of a presence notice names member `id`.
fn lists(json: &Json, key: &str, id: i64) -> bool {
    let Value::List(people) = json.get(key) else {
        panic!("{key} is not a list in {}", json.source);
    };
    people.iter().any(|person| {
        matches!(person, Value::Object(fields) if fields.contains(&("id".to_string(), Value::Int(id))))
    })
}

/// Reads a join notice for `who` (a welcome) with `online` members.
fn expect_join(raw: &mut Raw, who: &Json, online: i64) {
    let json = expect(raw, "join");
    assert_eq!(json.int("id"), who.int("id"), "{}", json.source);
    assert_eq!(json.str("name"), who.str("name"));
    assert_eq!(json.int("online"), online, "{}", json.source);
}

/// Reads a message and checks its author and text.
fn expect_message(raw: &mut Raw, from: &Json, text: &str) -> Json {
    let json = expect(raw, "message");
    assert_eq!(json.int("id"), from.int("id"), "{}", json.source);
    assert_eq!(json.str("from"), from.str("name"), "{}", json.source);
    assert_eq!(json.str("text"), text, "{}", json.source);
    json
}

/// A plausible time stamp in milliseconds since 1970 (after 2020).
fn assert_ts(json: &Json) {
    assert!(json.int("ts") > 1_577_836_800_000, "{}", json.source);
}

// ---- Tests --------------------------------------------------------------------------

#[test]
fn frame_shapes_welcome_join_message_leave() {
    with_server(config(), |addr| {
        let (mut ann, ann_w, history) = join(addr, "/chat/shapes?name=ann");
        assert!(history.is_empty());
        ann_w.assert_keys(&["type", "id", "name", "room", "online", "members", "limits"]);
        assert_eq!(ann_w.str("name"), "ann");
        assert_eq!(ann_w.str("room"), "shapes");
        assert_eq!(ann_w.int("online"), 1);

        let mut bob = Raw::websocket(addr, "/chat/shapes?name=bob");
        let bob_w = expect(&mut bob, "welcome");
        assert_eq!(bob_w.int("online"), 2);
        assert_eq!(bob_w.str("room"), "shapes");
        assert_ne!(bob_w.int("id"), ann_w.int("id"));
        let bob_join = expect(&mut bob, "join");
        bob_join.assert_keys(&["type", "id", "name", "online", "ts"]);
        assert_eq!(bob_join.int("id"), bob_w.int("id"));
        assert_eq!(bob_join.str("name"), "bob");
        assert_eq!(bob_join.int("online"), 2);
        assert_ts(&bob_join);
        // The member already there hears of the newcomer too.
        expect_join(&mut ann, &bob_w, 2);

        ann.send_frame(true, op::TEXT, b"hello");
        for raw in [&mut ann, &mut bob] {
            let message = expect_message(raw, &ann_w, "hello");
            message.assert_keys(&["type", "id", "from", "text", "ts", "room"]);
            assert_eq!(message.str("room"), "shapes");
            assert_ts(&message);
        }

        bob.send_frame(true, op::CLOSE, &close_payload(1000, b""));
        bob.expect_close_then_eof(1000);
        let leave = expect(&mut ann, "leave");
        leave.assert_keys(&["type", "id", "name", "online", "ts"]);
        assert_eq!(leave.int("id"), bob_w.int("id"));
        assert_eq!(leave.str("name"), "bob");
        assert_eq!(leave.int("online"), 1);
        assert_ts(&leave);
    });
}

#[test]
fn broadcast_reaches_the_senders_room_only() {
    with_server(config(), |addr| {
        let (mut a1, a1_w, _) = join(addr, "/chat/a?name=a1");
        let (mut a2, a2_w, _) = join(addr, "/chat/a?name=a2");
        expect_join(&mut a1, &a2_w, 2);
        let (mut b1, b1_w, _) = join(addr, "/chat/b?name=b1");
        let (mut a3, a3_w, _) = join(addr, "/chat/a?name=a3");
        expect_join(&mut a1, &a3_w, 3);
        expect_join(&mut a2, &a3_w, 3);
        let (mut b2, b2_w, _) = join(addr, "/chat/b?name=b2");
        expect_join(&mut b1, &b2_w, 2);
        assert_eq!(a3_w.int("online"), 3);
        assert_eq!(b2_w.int("online"), 2);

        a1.send_frame(true, op::TEXT, b"hello a");
        for raw in [&mut a1, &mut a2, &mut a3] {
            expect_message(raw, &a1_w, "hello a");
        }
        // Room b heard nothing: the next thing each of its members gets is b's own
        // message (the server handles one event at a time, so "hello a" would have
        // been queued first).
        b1.send_frame(true, op::TEXT, b"hello b");
        for raw in [&mut b1, &mut b2] {
            expect_message(raw, &b1_w, "hello b");
        }
        // ...and room a did not hear b.
        a2.send_frame(true, op::TEXT, b"again a");
        for raw in [&mut a1, &mut a2, &mut a3] {
            expect_message(raw, &a2_w, "again a");
        }
        assert_eq!(metric(addr, "loopchat_rooms"), 2);
    });
}

#[test]
fn leave_notices_count_down() {
    with_server(config(), |addr| {
        let (mut ann, _, _) = join(addr, "/chat/count?name=ann");
        let (bob, bob_w, _) = join(addr, "/chat/count?name=bob");
        expect_join(&mut ann, &bob_w, 2);
        let (mut cy, cy_w, _) = join(addr, "/chat/count?name=cy");
        expect_join(&mut ann, &cy_w, 3);
        // bob's join reached bob already; cy's join reaches bob too, unread (bob leaves).

        // bob just drops TCP (no close frame); cy closes properly.
        drop(bob);
        let leave = expect(&mut ann, "leave");
        assert_eq!(
            (leave.int("id"), leave.str("name"), leave.int("online")),
            (bob_w.int("id"), "bob", 2)
        );
        cy.send_frame(true, op::CLOSE, &close_payload(1001, b"going"));
        let (frames, code) = cy.read_until_close();
        // cy may have had bob's leave queued before its close answer.
        assert!(
            frames
                .iter()
                .all(|f| Json::parse(f.text()).kind() == "leave"),
            "{frames:?}"
        );
        assert_eq!(code, Some(1001));
        let leave = expect(&mut ann, "leave");
        assert_eq!(
            (leave.int("id"), leave.str("name"), leave.int("online")),
            (cy_w.int("id"), "cy", 1)
        );
    });
}

#[test]
fn chosen_and_default_names() {
    with_server(config(), |addr| {
        let (mut ann, ann_w, _) = join(addr, "/chat/names?name=ann");
        assert_eq!(ann_w.str("name"), "ann");
        ann.send_frame(true, op::TEXT, b"hi");
        let message = expect_message(&mut ann, &ann_w, "hi");
        assert_eq!(message.str("from"), "ann");

        // Percent-encoded, trimmed, and at most 32 characters.
        let (_spaced, spaced_w, _) = join(addr, "/chat/names?name=%20Ann%20B%20");
        assert_eq!(spaced_w.str("name"), "Ann B");
        let long = "n".repeat(40);
        let (_long_client, long_w, _) = join(addr, &format!("/chat/names?name={long}"));
        assert_eq!(long_w.str("name"), "n".repeat(32));
        // Without a name (or with an empty one): guest-<id>.
        let (_guest, guest_w, _) = join(addr, "/chat/names");
        assert_eq!(guest_w.str("name"), format!("guest-{}", guest_w.int("id")));
        let (_empty, empty_w, _) = join(addr, "/chat/names?name=");
        assert_eq!(empty_w.str("name"), format!("guest-{}", empty_w.int("id")));
    });
}

#[test]
fn a_name_needing_escapes_stays_inside_its_string() {
    with_server(config(), |addr| {
        // name = `"eve","type":"welcome` (percent-encoded in the query).
        let (mut eve, eve_w, _) = join(addr, "/chat/esc?name=%22eve%22%2C%22type%22%3A%22welcome");
        assert_eq!(eve_w.str("name"), "\"eve\",\"type\":\"welcome");
        assert_eq!(eve_w.kind(), "welcome");
        eve.send_frame(true, op::TEXT, b"x");
        let message = expect_message(&mut eve, &eve_w, "x");
        assert_eq!(message.kind(), "message");
    });
}

#[test]
fn clients_cannot_forge_notices_or_authors() {
    with_server(config(), |addr| {
        let (mut ann, _, _) = join(addr, "/chat/forge?name=ann");
        let (mut bob, bob_w, _) = join(addr, "/chat/forge?name=bob");
        expect_join(&mut ann, &bob_w, 2);
        let forgeries = [
            r#"{"type":"join","id":0,"name":"admin","online":99,"ts":0}"#.to_string(),
            r#"{"type":"message","id":1,"from":"ann","text":"I owe bob $100"}"#.to_string(),
            r#"hi","from":"ann","x":""#.to_string(),
            "quote \" backslash \\ slash / newline \n tab \t cr \r".to_string(),
            "control \u{1} \u{1f} del \u{7f} and \u{2028}\u{2029}".to_string(),
            "unicode: café 日本 🎉 </script><script>alert(1)</script>".to_string(),
            "\\u0022 not an escape".to_string(),
        ];
        for text in &forgeries {
            bob.send_frame(true, op::TEXT, text.as_bytes());
            for raw in [&mut ann, &mut bob] {
                let message = expect_message(raw, &bob_w, text);
                assert_eq!(message.kind(), "message");
                assert_eq!(message.str("from"), "bob");
                assert_eq!(message.keys().len(), 6, "{}", message.source);
                assert!(
                    message.source.starts_with(r#"{"type":"message","#),
                    "{}",
                    message.source
                );
            }
        }
        // On the wire, the forged notice is an escaped string inside "text".
        bob.send_frame(true, op::TEXT, forgeries[0].as_bytes());
        let wire = ann.read_text();
        assert!(
            wire.contains(r#","text":"{\"type\":\"join\",\"id\":0,"#),
            "{wire}"
        );
    });
}

#[test]
fn the_welcome_lists_the_members_and_the_limits() {
    with_server(config_with(|c| c.member_list_limit = 2), |addr| {
        let (_ann, ann_w, _) = join(addr, "/chat/list?name=ann");
        let (_bob, bob_w, _) = join(addr, "/chat/list?name=bob");
        let members = match bob_w.get("members") {
            Value::List(members) => members.clone(),
            other => panic!("members is {other:?} in {}", bob_w.source),
        };
        let member = |id: i64, name: &str| {
            Value::Object(vec![
                ("id".into(), Value::Int(id)),
                ("name".into(), Value::Str(name.into())),
            ])
        };
        let ann_id = ann_w.int("id");
        let bob_id = bob_w.int("id");
        assert_eq!(members, [member(ann_id, "ann"), member(bob_id, "bob")]);
        let limits = match bob_w.get("limits") {
            Value::Object(fields) => fields.clone(),
            other => panic!("limits is {other:?}"),
        };
        let max_bytes = config().max_chat_message_size as i64;
        assert_eq!(
            limits,
            [
                ("max_message_bytes".to_string(), Value::Int(max_bytes)),
                ("max_message_rate".to_string(), Value::Int(10)),
            ]
        );
        // Past --member-list-limit the welcome lists nobody: the list is bounded.
        let (_cy, cy_w, _) = join(addr, "/chat/list?name=cy");
        assert_eq!(cy_w.get("members"), &Value::Null);
        assert_eq!(cy_w.int("online"), 3);
    });
}

#[test]
fn a_rename_is_one_notice_to_the_room() {
    with_server(config(), |addr| {
        let (mut ann, ann_w, _) = join(addr, "/chat/nick?name=ann");
        let (mut bob, bob_w, _) = join(addr, "/chat/nick?name=bob");
        expect_join(&mut ann, &bob_w, 2);
        ann.send_frame(true, op::TEXT, b"/nick annie");
        for raw in [&mut ann, &mut bob] {
            let rename = expect(raw, "rename");
            rename.assert_keys(&["type", "id", "from", "name", "ts"]);
            assert_eq!(rename.int("id"), ann_w.int("id"));
            assert_eq!((rename.str("from"), rename.str("name")), ("ann", "annie"));
        }
        // Messages from now on carry the new name.
        ann.send_frame(true, op::TEXT, b"hi");
        let message = expect(&mut bob, "message");
        assert_eq!(message.str("from"), "annie");
        // A name with nothing visible is refused to the sender alone.
        ann.send_frame(true, op::TEXT, b"/nick   ");
        let mine = expect(&mut ann, "message"); // ann's own "hi" comes first
        assert_eq!(mine.str("text"), "hi");
        let notice = expect(&mut ann, "notice");
        assert_eq!(notice.str("code"), "bad_name");
        assert_eq!(metric(addr, "loopchat_renames_total"), 1);
    });
}

#[test]
fn blank_messages_are_ignored_and_counted() {
    with_server(config(), |addr| {
        let (mut ann, _, _) = join(addr, "/chat/blank?name=ann");
        for blank in ["", " ", "\n", " \t \r\n"] {
            ann.send_frame(true, op::TEXT, blank.as_bytes());
        }
        ann.send_frame(true, op::TEXT, b"visible");
        // The first thing back is the visible message: no blank was broadcast.
        assert_eq!(expect(&mut ann, "message").str("text"), "visible");
        assert_eq!(metric(addr, "loopchat_blank_messages_ignored_total"), 4);
    });
}

#[test]
fn flood_control_drops_past_the_rate_with_one_notice_and_closes_a_flood() {
    with_server(config_with(|c| c.max_message_rate = 2), |addr| {
        let (mut ann, _, _) = join(addr, "/chat/flood?name=ann");
        // A burst of twice the rate passes; the fifth message is dropped with a
        // notice, the sixth silently.
        for i in 0..6 {
            ann.send_frame(true, op::TEXT, format!("m{i}").as_bytes());
        }
        for i in 0..4 {
            assert_eq!(expect(&mut ann, "message").str("text"), format!("m{i}"));
        }
        let notice = expect(&mut ann, "notice");
        assert_eq!(notice.str("code"), "rate_limited");
        // A sender that keeps on (20 seconds' worth at the rate) is closed.
        for _ in 0..60 {
            ann.send_frame(true, op::TEXT, b"flood");
        }
        let (_, code) = ann.read_until_close();
        assert_eq!(code, Some(1008));
        // 39 dropped, and the 40th closed the connection (fewer if the clock
        // refilled a token or two while the test ran).
        let dropped = metric(addr, "loopchat_messages_rate_limited_total");
        assert!((30..=39).contains(&dropped), "{dropped}");
        assert_eq!(
            metric(
                addr,
                "loopchat_limit_refusals_total{limit=\"message_rate\"}"
            ),
            1
        );
    });
}

#[test]
fn newcomers_get_the_history_after_the_welcome() {
    with_server(config(), |addr| {
        let (mut ann, ann_w, _) = join(addr, "/chat/hist?name=ann");
        for text in ["one", "two", "three"] {
            ann.send_frame(true, op::TEXT, text.as_bytes());
            expect_message(&mut ann, &ann_w, text);
        }
        let mut bob = Raw::websocket(addr, "/chat/hist?name=bob");
        let bob_w = expect(&mut bob, "welcome");
        for text in ["one", "two", "three"] {
            let old = expect_message(&mut bob, &ann_w, text);
            assert_eq!(old.str("room"), "hist");
        }
        expect_join(&mut bob, &bob_w, 2);
        // Other rooms' history is not replayed.
        let (_cy, _, history) = join(addr, "/chat/other");
        assert!(history.is_empty());
    });
}

#[test]
fn history_is_bounded_by_config() {
    with_server(config_with(|c| c.history = 2), |addr| {
        let (mut ann, ann_w, _) = join(addr, "/chat/bounded?name=ann");
        for text in ["one", "two", "three"] {
            ann.send_frame(true, op::TEXT, text.as_bytes());
            expect_message(&mut ann, &ann_w, text);
        }
        let (_bob, _, history) = join(addr, "/chat/bounded?name=bob");
        let texts: Vec<&str> = history.iter().map(|m| m.str("text")).collect();
        assert_eq!(texts, ["two", "three"]);
    });

    with_server(config_with(|c| c.history = 0), |addr| {
        let (mut ann, ann_w, _) = join(addr, "/chat/none?name=ann");
        ann.send_frame(true, op::TEXT, b"forgotten");
        expect_message(&mut ann, &ann_w, "forgotten");
        let (_bob, _, history) = join(addr, "/chat/none?name=bob");
        assert!(history.is_empty(), "{history:?}");
    });
}

#[test]
fn binary_on_the_chat_gets_1003() {
    with_server(config(), |addr| {
        let (mut ann, _, _) = join(addr, "/chat/bin?name=ann");
        let (mut bob, bob_w, _) = join(addr, "/chat/bin?name=bob");
        expect_join(&mut ann, &bob_w, 2);
        bob.send_frame(true, op::BINARY, b"\x00\x01binary");
        bob.expect_close_then_eof(1003);
        // bob is out of the room, and nobody got his bytes.
        let leave = expect(&mut ann, "leave");
        assert_eq!((leave.int("id"), leave.int("online")), (bob_w.int("id"), 1));
        // Fragmented binary too.
        let (mut cy, _, _) = join(addr, "/chat/bin?name=cy");
        cy.send_frame(false, op::BINARY, b"a");
        cy.send_frame(true, op::CONTINUATION, b"b");
        cy.expect_close_then_eof(1003);
    });
}

#[test]
fn plain_chat_path_is_the_lobby() {
    with_server(config(), |addr| {
        let (mut ann, ann_w, _) = join(addr, "/chat?name=ann");
        assert_eq!(ann_w.str("room"), "lobby");
        let (_bob, bob_w, _) = join(addr, "/chat/lobby?name=bob");
        assert_eq!(bob_w.str("room"), "lobby");
        // Same room either way.
        assert_eq!(bob_w.int("online"), 2);
        expect_join(&mut ann, &bob_w, 2);
        ann.send_frame(true, op::TEXT, b"in the lobby");
        assert_eq!(
            expect_message(&mut ann, &ann_w, "in the lobby").str("room"),
            "lobby"
        );
    });
}

#[test]
fn fragmented_text_and_pings_on_the_chat() {
    with_server(config(), |addr| {
        let (mut ann, ann_w, _) = join(addr, "/chat/frag?name=ann");
        ann.send_frame(false, op::TEXT, "frag".as_bytes());
        ann.send_frame(true, op::PING, b"p");
        ann.send_frame(true, op::CONTINUATION, "mented é".as_bytes());
        ann.expect_pong(b"p");
        expect_message(&mut ann, &ann_w, "fragmented é");
    });
}

#[test]
fn broadcasts_to_more_members_than_one_flush_slice_arrive_whole_and_in_order() {
    // The loop writes at most 128 connections per iteration and reads new input in
    // between, so with 300 members the senders' later messages are queued while
    // the earlier ones are still going out.
    const MEMBERS: usize = 300;
    const SENDERS: usize = 3;
    const PER_SENDER: usize = 10;
    // Every join announced at once (not coalesced): this test is about the flush.
    with_server(config_with(|c| c.member_list_limit = MEMBERS), |addr| {
        let mut members: Vec<(Raw, Json)> = (0..MEMBERS)
            .map(|i| {
                let (raw, welcome, _) = join(addr, &format!("/chat/big?name=m{i}"));
                (raw, welcome)
            })
            .collect();
        for n in 0..PER_SENDER {
            for (raw, _) in members.iter_mut().take(SENDERS) {
                raw.send_frame(true, op::TEXT, format!("message {n}").as_bytes());
            }
        }
        let sender_ids: Vec<i64> = members[..SENDERS]
            .iter()
            .map(|(_, w)| w.int("id"))
            .collect();
        for (raw, welcome) in &mut members {
            let mut next_from = [0usize; SENDERS];
            while next_from.iter().sum::<usize>() < SENDERS * PER_SENDER {
                let json = next(raw);
                match json.kind() {
                    "join" => continue, // members who joined after this one
                    "message" => {}
                    other => panic!("unexpected {other}: {}", json.source),
                }
                let sender = (sender_ids.iter().position(|&id| id == json.int("id")))
                    .unwrap_or_else(|| panic!("message from a non-sender: {}", json.source));
                let expected = format!("message {}", next_from[sender]);
                assert_eq!(json.str("text"), expected, "member {}", welcome.int("id"));
                next_from[sender] += 1;
            }
        }
    });
}

#[test]
fn a_burst_in_one_write_reaches_every_member_in_order_and_is_counted_per_delivery() {
    // The burst arrives in one read, so its messages are broadcast in one loop
    // iteration: one batch, queued once on each member (`batches.rs`).
    const BURST: usize = 40;
    with_server(config_with(|c| c.max_message_rate = 0), |addr| {
        let (mut ann, ann_w, _) = join(addr, "/chat/burst?name=ann");
        let (mut bob, bob_w, _) = join(addr, "/chat/burst?name=bob");
        let (mut cy, _, _) = join(addr, "/chat/burst?name=cy");
        expect_join(&mut ann, &bob_w, 2);
        for raw in [&mut ann, &mut bob] {
            expect(raw, "join");
        }
        let frames_before = metric(addr, "loopchat_frames_out_total");
        let texts: Vec<String> = (0..BURST).map(|i| format!("burst {i}")).collect();
        let burst: Vec<u8> = (texts.iter())
            .flat_map(|text| client_frame(true, op::TEXT, text.as_bytes()))
            .collect();
        ann.send(&burst);
        for raw in [&mut ann, &mut bob, &mut cy] {
            for text in &texts {
                expect_message(raw, &ann_w, text);
            }
        }
        assert_eq!(metric(addr, "loopchat_broadcasts_total"), BURST as u64);
        // Deliveries: each message once per member, batched or not.
        assert_eq!(
            metric(addr, "loopchat_frames_out_total") - frames_before,
            (BURST * 3) as u64
        );
    });
}

#[test]
fn a_big_room_announces_joins_together_and_every_count_settles() {
    // Past --member-list-limit members, joins and leaves are announced once per
    // timer tick in one `presence` notice, so filling a room costs O(N).
    with_server(config_with(|c| c.member_list_limit = 2), |addr| {
        let (mut ann, _, _) = join(addr, "/chat/big?name=ann");
        let (_bob, _, _) = join(addr, "/chat/big?name=bob");
        expect(&mut ann, "join"); // bob's, announced at once: the room is small
        let _late: Vec<Raw> = (0..4)
            .map(|i| Raw::websocket(addr, &format!("/chat/big?name=late{i}")))
            .collect();
        // The four late joins arrive as presence notices (one or more ticks).
        let mut joined = 0;
        let mut online = 0;
        while joined < 4 {
            let presence = expect(&mut ann, "presence");
            presence.assert_keys(&[
                "type",
                "online",
                "joined",
                "left",
                "more_joined",
                "more_left",
                "ts",
            ]);
            match presence.get("joined") {
                Value::List(people) => joined += people.len(),
                other => panic!("joined is {other:?}"),
            }
            online = presence.int("online");
        }
        assert_eq!((joined, online), (4, 6));
    });
}
