//! The chat itself: rooms, members, notices and history.
//!
//! Sans-IO: the server tells a [`Chat`] who joined, spoke or left, and the chat
//! answers by calling `deliver(member, frame)` for each frame each member must get.
//! Each frame is a complete WebSocket text frame (RFC 6455 §5.6), encoded once and
//! shared by reference, so a broadcast to a thousand members costs one encoding.
//!
//! What the server sends is JSON with a `type` field: `welcome`, `message`, `join`
//! and `leave` (see the README). Clients send plain text; the server alone writes
//! `id` and `from`, so a client cannot pass its words off as a notice or as someone
//! else's.

use crate::frame::{self, OpCode};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::rc::Rc;

/// A frame encoded once and queued on many connections.
pub type SharedFrame = Rc<[u8]>;
/// A connection's identity in the chat (its slab key).
pub type MemberId = usize;

/// The room of `/chat` without a room name.
pub const DEFAULT_ROOM: &str = "lobby";
/// The longest room name and nickname, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// Whether `name` may name a room: 1-32 of `A-Z a-z 0-9 _ -`.
pub fn is_valid_room(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A display name from what the client asked for: control characters removed,
/// whitespace trimmed, at most 32 characters; `guest-<id>` if nothing is left.
pub fn display_name(requested: Option<&str>, id: MemberId) -> String {
    let cleaned: String = requested
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let trimmed: String = cleaned.trim().chars().take(MAX_NAME_CHARS).collect();
    let trimmed = trimmed.trim();
    if trimmed.is_empty() {
        format!("guest-{id}")
    } else {
        trimmed.to_string()
    }
}

#[derive(Debug, Default)]
struct Room {
    members: Vec<MemberId>,
    /// The last messages, oldest first, as the frames that were broadcast.
    history: VecDeque<SharedFrame>,
}

/// Every room and its members.
#[derive(Debug)]
pub struct Chat {
    rooms: HashMap<String, Room>,
    history_len: usize,
}

impl Chat {
    /// A chat that replays up to `history_len` messages to each newcomer.
    pub fn new(history_len: usize) -> Self {
        Chat {
            rooms: HashMap::new(),
            history_len,
        }
    }

    /// How many members `room` has.
    pub fn online(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |r| r.members.len())
    }

    /// Number of rooms with members (or history).
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Adds `id` to `room`: it gets a welcome and the recent history, then every
    /// member (the newcomer too) gets a join notice with the new count.
    pub fn join(
        &mut self,
        room_name: &str,
        id: MemberId,
        name: &str,
        now_ms: u64,
        deliver: &mut dyn FnMut(MemberId, &SharedFrame),
    ) {
        let room = self.rooms.entry(room_name.to_string()).or_default();
        room.members.push(id);
        let online = room.members.len();

        let mut welcome = String::from("{\"type\":\"welcome\",\"id\":");
        let _ = write!(welcome, "{id},\"name\":");
        push_json_string(&mut welcome, name);
        welcome.push_str(",\"room\":");
        push_json_string(&mut welcome, room_name);
        let _ = write!(welcome, ",\"online\":{online}}}");
        deliver(id, &text_frame(&welcome));
        for old in &room.history {
            deliver(id, old);
        }
        let notice = notice_frame("join", id, name, online, now_ms);
        for &member in &room.members {
            deliver(member, &notice);
        }
    }

    /// Broadcasts a frame made by [`message_frame`] to every member of `room`, the
    /// sender included, and keeps it for the room's history.
    pub fn publish(
        &mut self,
        room_name: &str,
        frame: SharedFrame,
        deliver: &mut dyn FnMut(MemberId, &SharedFrame),
    ) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        for &member in &room.members {
            deliver(member, &frame);
        }
        if self.history_len > 0 {
            if room.history.len() == self.history_len {
                room.history.pop_front();
            }
            room.history.push_back(frame);
        }
    }

    /// Removes `id` from `room`; the members left get a leave notice. A room with
    /// no members is forgotten, history and all, so empty rooms cost nothing.
    pub fn leave(
        &mut self,
        room_name: &str,
        id: MemberId,
        name: &str,
        now_ms: u64,
        deliver: &mut dyn FnMut(MemberId, &SharedFrame),
    ) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        let Some(index) = room.members.iter().position(|&m| m == id) else {
            return;
        };
        room.members.swap_remove(index);
        if room.members.is_empty() {
            self.rooms.remove(room_name);
            return;
        }
        let notice = notice_frame("leave", id, name, room.members.len(), now_ms);
        for &member in &room.members {
            deliver(member, &notice);
        }
    }
}

/// The frame for `text` said by member `id` called `name` in `room`.
pub fn message_frame(room: &str, id: MemberId, name: &str, text: &str, now_ms: u64) -> SharedFrame {
    let mut json = String::with_capacity(text.len() + name.len() + 96);
    let _ = write!(json, "{{\"type\":\"message\",\"id\":{id},\"from\":");
    push_json_string(&mut json, name);
    json.push_str(",\"text\":");
    push_json_string(&mut json, text);
    let _ = write!(json, ",\"ts\":{now_ms},\"room\":");
    push_json_string(&mut json, room);
    json.push('}');
    text_frame(&json)
}

fn notice_frame(kind: &str, id: MemberId, name: &str, online: usize, now_ms: u64) -> SharedFrame {
    let mut json = String::with_capacity(96 + name.len());
    let _ = write!(json, "{{\"type\":\"{kind}\",\"id\":{id},\"name\":");
    push_json_string(&mut json, name);
    let _ = write!(json, ",\"online\":{online},\"ts\":{now_ms}}}");
    text_frame(&json)
}

/// Encodes a text frame once, into a buffer shared by all its recipients.
pub fn text_frame(text: &str) -> SharedFrame {
    let mut out = Vec::with_capacity(text.len() + frame::MAX_HEADER_LEN);
    frame::encode_frame(&mut out, OpCode::Text, text.as_bytes());
    out.into()
}

/// Appends `s` as a JSON string literal (RFC 8259 §7).
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(frame: &[u8]) -> String {
        // Server frames in these tests are short or 16-bit length.
        let start = if frame[1] == 126 { 4 } else { 2 };
        String::from_utf8(frame[start..].to_vec()).unwrap()
    }

    struct Log(Vec<(MemberId, String)>);
    impl Log {
        fn sink(&mut self) -> impl FnMut(MemberId, &SharedFrame) + '_ {
            |member, frame| self.0.push((member, payload(frame)))
        }
        fn to(&self, member: MemberId) -> Vec<&str> {
            self.0
                .iter()
                .filter(|(m, _)| *m == member)
                .map(|(_, s)| s.as_str())
                .collect()
        }
    }

    #[test]
    fn join_say_leave_in_one_room() {
        let mut chat = Chat::new(50);
        let mut log = Log(Vec::new());
        chat.join("lobby", 1, "ann", 10, &mut log.sink());
        chat.join("lobby", 2, "bob", 11, &mut log.sink());
        chat.publish(
            "lobby",
            message_frame("lobby", 1, "ann", "hi \"bob\"", 12),
            &mut log.sink(),
        );
        chat.leave("lobby", 2, "bob", 13, &mut log.sink());
        assert_eq!(
            log.to(2),
            vec![
                r#"{"type":"welcome","id":2,"name":"bob","room":"lobby","online":2}"#,
                r#"{"type":"join","id":2,"name":"bob","online":2,"ts":11}"#,
                r#"{"type":"message","id":1,"from":"ann","text":"hi \"bob\"","ts":12,"room":"lobby"}"#,
            ]
        );
        assert_eq!(log.to(1).len(), 5); // welcome, 2 joins, message, leave
        assert_eq!(
            log.to(1)[4],
            r#"{"type":"leave","id":2,"name":"bob","online":1,"ts":13}"#
        );
        assert_eq!(chat.online("lobby"), 1);
    }

    #[test]
    fn rooms_are_separate() {
        let mut chat = Chat::new(50);
        let mut log = Log(Vec::new());
        chat.join("a", 1, "ann", 0, &mut log.sink());
        chat.join("b", 2, "bob", 0, &mut log.sink());
        chat.publish(
            "a",
            message_frame("a", 1, "ann", "only a", 0),
            &mut log.sink(),
        );
        assert!(log.to(2).iter().all(|s| !s.contains("only a")));
        assert_eq!((chat.online("a"), chat.online("b")), (1, 1));
    }

    #[test]
    fn newcomers_get_bounded_history_after_the_welcome() {
        let mut chat = Chat::new(2);
        let mut log = Log(Vec::new());
        chat.join("r", 1, "ann", 0, &mut log.sink());
        for text in ["one", "two", "three"] {
            chat.publish("r", message_frame("r", 1, "ann", text, 0), &mut log.sink());
        }
        log.0.clear();
        chat.join("r", 2, "bob", 0, &mut log.sink());
        let seen = log.to(2);
        assert!(seen[0].contains("welcome"));
        assert!(seen[1].contains("\"two\"") && seen[2].contains("\"three\""));
        assert!(seen[3].contains("join"));
    }

    #[test]
    fn empty_rooms_are_forgotten() {
        let mut chat = Chat::new(5);
        let mut log = Log(Vec::new());
        chat.join("r", 1, "ann", 0, &mut log.sink());
        chat.publish("r", message_frame("r", 1, "ann", "x", 0), &mut log.sink());
        chat.leave("r", 1, "ann", 0, &mut log.sink());
        assert_eq!(chat.room_count(), 0);
    }

    #[test]
    fn names_and_rooms() {
        assert_eq!(display_name(Some("  ann\u{7}  "), 3), "ann");
        assert_eq!(display_name(Some(""), 3), "guest-3");
        assert_eq!(display_name(None, 4), "guest-4");
        assert_eq!(display_name(Some(&"x".repeat(100)), 1).len(), 32);
        assert!(is_valid_room("lobby-2_b"));
        assert!(!is_valid_room(""));
        assert!(!is_valid_room("a/b"));
        assert!(!is_valid_room(&"a".repeat(33)));
    }

    #[test]
    fn json_escaping() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\u{1}<img>");
        assert_eq!(out, r#""a\"b\\c\nd\u0001<img>""#);
    }
}
