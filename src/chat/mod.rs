//! The chat itself: rooms, members, notices and history.
//!
//! Sans-IO: the server tells a [`Chat`] who joined, spoke or left, and the chat
//! answers with the frames to send and the members who must get each one.
//! Each frame is a complete WebSocket text frame (RFC 6455 §5.6), encoded once and
//! shared by reference, so a broadcast to a thousand members costs one encoding.
//!
//! What the server sends is JSON with a `type` field: `welcome`, `message`, `join`
//! and `leave` (see the README). Clients send plain text; the server alone writes
//! `id` and `from`, so a client cannot pass its words off as a notice or as someone
//! else's.

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
mod cluster;
mod flood;
mod frames;
mod presence;

#[cfg_attr(not(feature = "redis"), allow(unused_imports))]
pub use cluster::Notice;
pub use flood::{Admit, Pace};
pub use frames::{message_frame, notice_to_member, push_json_string, text_frame};
use frames::{notice_frame, welcome_frame};

use crate::message::{CloseCode, MessageKind, ProtocolError};
use presence::Presence;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write;
use std::rc::Rc;

/// A frame encoded once and queued on many connections.
pub type SharedFrame = Rc<[u8]>;
/// Where frames for a member go: its connection's slab key.
pub type ConnectionKey = usize;

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
pub fn display_name(requested: Option<&str>, id: u64) -> String {
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

/// One person in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Where the member's frames go.
    pub key: ConnectionKey,
    /// The id others see: unique for the life of the server (slab keys are
    /// reused, so they would make a newcomer the author of an old message).
    pub id: u64,
    pub name: Rc<str>,
}

/// The chat's bounds: history per room and over all rooms, and what the welcome
/// tells a page about the server's limits.
#[derive(Debug, Clone, Copy)]
pub struct ChatLimits {
    /// Messages kept per room.
    pub messages: usize,
    /// Bytes of frames kept per room.
    pub bytes: usize,
    /// Rooms without members whose history is kept (the most recently emptied).
    pub idle_rooms: usize,
    /// Bytes of history kept over all rooms: past it, the least recently active
    /// rooms give up their oldest messages first.
    pub total_bytes: usize,
    /// Rooms with more members than this send no member list in the welcome:
    /// the list a newcomer gets stays bounded however large the room.
    pub member_list: usize,
    /// The largest message, in bytes, and the message rate allowed per member
    /// (0: no limit): told to pages in the welcome, so they can refuse an
    /// over-long message before sending it.
    pub max_message_bytes: usize,
    pub max_message_rate: u32,
}

#[derive(Debug, Default)]
struct Room {
    /// Where each member's frames go, for fan-out: kept apart from `people` so
    /// that a broadcast walks a compact list.
    members: Vec<ConnectionKey>,
    /// Each member's id and name, at the same index as in `members`.
    people: Vec<(u64, Rc<str>)>,
    /// Each member's index in `members` and `people`, by connection.
    index: HashMap<ConnectionKey, usize>,
    /// The last messages, oldest first, as the frames that were broadcast.
    history: VecDeque<SharedFrame>,
    history_bytes: usize,
    /// When a message was last kept here, on the chat's activity clock (0: never).
    active_at: u64,
    /// A big room's joins and leaves not yet announced (`presence.rs`).
    presence: Presence,
    /// The room's count over the cluster, when this node is part of one and
    /// linked (`cluster.rs`); else the count is `members.len()`.
    cluster_online: Option<usize>,
}

impl Room {
    fn online(&self) -> usize {
        self.cluster_online.unwrap_or(self.members.len())
    }

    fn add(&mut self, member: &Member) {
        self.index.insert(member.key, self.members.len());
        self.members.push(member.key);
        self.people.push((member.id, Rc::clone(&member.name)));
    }

    /// Where member `key` is in `members` and `people`: O(1), so that a room
    /// of N emptying costs O(N), not O(N²).
    fn position(&self, key: ConnectionKey) -> Option<usize> {
        self.index.get(&key).copied()
    }

    /// Removes member `key` (the last one takes its place).
    fn remove(&mut self, key: ConnectionKey) -> bool {
        let Some(index) = self.index.remove(&key) else {
            return false;
        };
        self.members.swap_remove(index);
        self.people.swap_remove(index);
        if let Some(&moved) = self.members.get(index) {
            self.index.insert(moved, index);
        }
        true
    }
}

/// Every room and its members.
#[derive(Debug)]
pub struct Chat {
    rooms: HashMap<Rc<str>, Room>,
    /// Rooms without members, oldest first; past `idle_rooms` the oldest is
    /// forgotten. Memory is thus bounded by the members plus a constant.
    idle: VecDeque<Rc<str>>,
    limits: ChatLimits,
    /// Bytes of history over all rooms.
    history_total: usize,
    /// Rooms that keep history, least recently active first, by `Room::active_at`.
    by_activity: BTreeMap<u64, Rc<str>>,
    /// The activity clock: one tick per message kept.
    clock: u64,
    /// Big rooms with joins or leaves to announce at the next tick.
    presence_due: Vec<Rc<str>>,
}

impl Chat {
    pub fn new(limits: ChatLimits) -> Self {
        Chat {
            rooms: HashMap::new(),
            idle: VecDeque::new(),
            limits,
            history_total: 0,
            by_activity: BTreeMap::new(),
            clock: 0,
            presence_due: Vec::new(),
        }
    }

    /// How many members `room` has.
    #[cfg(test)]
    pub fn online(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |r| r.members.len())
    }

    /// Bytes of history kept over all rooms.
    pub fn history_bytes(&self) -> usize {
        self.history_total
    }

    /// Number of rooms with members.
    pub fn room_count(&self) -> usize {
        self.rooms.len() - self.idle.len()
    }

    /// Adds `member` to `room`. The newcomer gets a welcome and the recent
    /// history, then every member (the newcomer too, [`Chat::members`]) a join
    /// notice with the new count; the caller queues them in that order.
    pub fn join(&mut self, room_name: &Rc<str>, member: &Member, now_ms: u64) -> Joined<'_> {
        self.idle.retain(|r| r != room_name);
        let room = self.rooms.entry(Rc::clone(room_name)).or_default();
        room.add(member);
        let online = room.members.len();
        let welcome = welcome_frame(room_name, online, Some(&room.people), member, &self.limits);
        // While announcements are pending, later ones wait too, to keep their order.
        let notice = if online > self.limits.member_list || !room.presence.is_empty() {
            if room.presence.is_empty() {
                self.presence_due.push(Rc::clone(room_name));
            }
            room.presence.joined(member.id, &member.name);
            None
        } else {
            Some(notice_frame("join", member, online, now_ms))
        };
        Joined {
            welcome,
            history: &room.history,
            notice,
        }
    }

    /// Who is in `room` (where their frames go), in no particular order.
    pub fn members(&self, room_name: &str) -> &[ConnectionKey] {
        self.rooms.get(room_name).map_or(&[], |room| &room.members)
    }

    /// Keeps a frame made by [`message_frame`] for the room's history and returns
    /// who must get it: every member of `room`, the sender included.
    pub fn publish(&mut self, room_name: &str, frame: &SharedFrame) -> &[ConnectionKey] {
        let keep = self.limits.messages > 0
            && frame.len() <= self.limits.bytes.min(self.limits.total_bytes);
        if keep && self.rooms.contains_key(room_name) {
            self.keep_in_history(room_name, frame);
        }
        self.rooms.get(room_name).map_or(&[], |room| &room.members)
    }

    /// Appends `frame` to the room's history within the room's bounds and the
    /// global one, and marks the room as the most recently active.
    fn keep_in_history(&mut self, room_name: &str, frame: &SharedFrame) {
        let Some((name, _)) = self.rooms.get_key_value(room_name) else {
            return;
        };
        let name = Rc::clone(name);
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        self.by_activity.remove(&room.active_at);
        self.clock += 1;
        room.active_at = self.clock;
        self.by_activity.insert(self.clock, name);
        room.history_bytes += frame.len();
        room.history.push_back(Rc::clone(frame));
        self.history_total += frame.len();
        while room.history.len() > self.limits.messages || room.history_bytes > self.limits.bytes {
            if let Some(old) = room.history.pop_front() {
                room.history_bytes -= old.len();
                self.history_total -= old.len();
            }
        }
        self.enforce_history_budget();
    }

    /// Gives up history, oldest messages of the least recently active rooms
    /// first, until the total is within `total_bytes`.
    fn enforce_history_budget(&mut self) {
        while self.history_total > self.limits.total_bytes {
            let Some((&stamp, name)) = self.by_activity.first_key_value() else {
                return;
            };
            let Some(room) = self.rooms.get_mut(name) else {
                self.by_activity.remove(&stamp);
                continue;
            };
            match room.history.pop_front() {
                Some(old) => {
                    room.history_bytes -= old.len();
                    self.history_total -= old.len();
                }
                None => {
                    room.active_at = 0;
                    self.by_activity.remove(&stamp);
                }
            }
        }
    }

    /// Forgets a room, and its history.
    fn forget_room(&mut self, room_name: &str) {
        if let Some(room) = self.rooms.remove(room_name) {
            self.history_total -= room.history_bytes;
            self.by_activity.remove(&room.active_at);
        }
    }

    /// The next big room's coalesced join/leave notice, for every member of the
    /// room it names ([`Chat::members`]); call once per timer tick until `None`.
    pub fn next_presence(&mut self, now_ms: u64) -> Option<(Rc<str>, SharedFrame)> {
        loop {
            let name = self.presence_due.pop()?;
            let Some(room) = self.rooms.get_mut(&name) else {
                continue;
            };
            if room.presence.is_empty() || room.members.is_empty() {
                room.presence = Presence::default();
                continue;
            }
            let notice = room.presence.take_notice(room.online(), now_ms);
            return Some((name, notice));
        }
    }

    /// Renames member `key` of `room` to `name`: returns the one rename notice
    /// for every member ([`Chat::members`]), or `None` if it is not in the room.
    pub fn rename(
        &mut self,
        room_name: &str,
        member: &Member,
        name: &Rc<str>,
        now_ms: u64,
    ) -> Option<SharedFrame> {
        let room = self.rooms.get_mut(room_name)?;
        let index = room.position(member.key)?;
        room.people[index].1 = Rc::clone(name);
        Some(text_frame(&rename_json(member, name, now_ms)))
    }

    /// Removes `member` from `room`, if it is there; returns the leave notice for
    /// the members left ([`Chat::members`]), if one is due now. An emptied room
    /// keeps its history for whoever comes next, until more than `idle_rooms`
    /// rooms are empty.
    pub fn leave(
        &mut self,
        room_name: &Rc<str>,
        member: &Member,
        now_ms: u64,
    ) -> Option<SharedFrame> {
        let room = self.rooms.get_mut(room_name)?;
        if !room.remove(member.key) {
            return None;
        }
        if room.members.is_empty() {
            self.idle.push_back(Rc::clone(room_name));
            if self.idle.len() > self.limits.idle_rooms {
                if let Some(oldest) = self.idle.pop_front() {
                    self.forget_room(&oldest);
                }
            }
            return None;
        }
        if room.members.len() >= self.limits.member_list || !room.presence.is_empty() {
            // A big room (or one with announcements pending, whose order must
            // hold): announced with the others at the next tick.
            if room.presence.is_empty() {
                self.presence_due.push(Rc::clone(room_name));
            }
            room.presence.left(member.id, &member.name);
            return None;
        }
        Some(notice_frame("leave", member, room.members.len(), now_ms))
    }
}

/// The rename notice's JSON: `member` (under its old name) is now `name`.
pub fn rename_json(member: &Member, name: &str, now_ms: u64) -> String {
    let mut json = format!("{{\"type\":\"rename\",\"id\":{},\"from\":", member.id);
    push_json_string(&mut json, &member.name);
    json.push_str(",\"name\":");
    push_json_string(&mut json, name);
    let _ = write!(json, ",\"ts\":{now_ms}}}");
    json
}

/// What a member's text asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Said<'a> {
    /// A message for the room.
    Message(&'a str),
    /// `/nick NAME`: a new display name, already cleaned (`display_name`).
    Rename(String),
    /// `/nick` with nothing usable after it.
    BadName,
    /// Empty or whitespace only: ignored, never broadcast.
    Blank,
}

/// Reads a member's text: a message, a `/nick NAME` command (as in IRC, so that
/// any tool that sends plain text can rename too), or a blank to ignore.
pub fn interpret(text: &str) -> Said<'_> {
    if text.trim().is_empty() {
        return Said::Blank;
    }
    let Some(rest) = text.strip_prefix("/nick") else {
        return Said::Message(text);
    };
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return Said::Message(text); // "/nickname" is a message
    }
    let requested = rest.trim();
    if requested
        .chars()
        .all(|c| c.is_control() || c.is_whitespace())
    {
        return Said::BadName;
    }
    Said::Rename(display_name(Some(requested), 0))
}

/// What a join sends: `welcome` and `history` to the newcomer, then `notice` to
/// every member ([`Chat::members`]).
#[derive(Debug)]
pub struct Joined<'a> {
    pub welcome: SharedFrame,
    pub history: &'a VecDeque<SharedFrame>,
    /// `None` in a big room, where joins are announced together (`presence.rs`).
    pub notice: Option<SharedFrame>,
}

/// The text of a chat message, which must be a text message (§5.6): the chat
/// takes text only, and refuses binary with 1003.
pub fn text_message(kind: MessageKind, payload: &[u8]) -> Result<&str, ProtocolError> {
    let refuse = ProtocolError {
        code: CloseCode::UNSUPPORTED_DATA,
        reason: "the chat takes text messages only",
    };
    match kind {
        MessageKind::Text => std::str::from_utf8(payload).map_err(|_| refuse),
        MessageKind::Binary => Err(refuse),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(frame: &[u8]) -> String {
        // Server frames in these tests are short or 16-bit length.
        let start = if frame[1] == 126 { 4 } else { 2 };
        String::from_utf8(frame[start..].to_vec()).unwrap()
    }

    /// Records every delivery as (connection key, text), in the order the server
    /// queues them.
    struct Log(Vec<(ConnectionKey, String)>);
    impl Log {
        fn push(&mut self, key: ConnectionKey, frame: &SharedFrame) {
            self.0.push((key, payload(frame)));
        }
        fn join(&mut self, chat: &mut Chat, room: &Rc<str>, member: &Member, now_ms: u64) {
            let joined = chat.join(room, member, now_ms);
            self.push(member.key, &joined.welcome);
            for old in joined.history {
                self.push(member.key, old);
            }
            if let Some(notice) = joined.notice {
                for &key in chat.members(room) {
                    self.push(key, &notice);
                }
            }
        }
        fn publish(&mut self, chat: &mut Chat, room: &str, frame: SharedFrame) {
            for &key in chat.publish(room, &frame) {
                self.push(key, &frame);
            }
        }
        fn leave(&mut self, chat: &mut Chat, room: &Rc<str>, member: &Member, now_ms: u64) {
            if let Some(notice) = chat.leave(room, member, now_ms) {
                for &key in chat.members(room) {
                    self.push(key, &notice);
                }
            }
        }
        fn to(&self, key: ConnectionKey) -> Vec<&str> {
            self.0
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, s)| s.as_str())
                .collect()
        }
    }

    const LIMITS: ChatLimits = ChatLimits {
        messages: 50,
        bytes: 64 * 1024,
        idle_rooms: 2,
        total_bytes: 1 << 20,
        member_list: 3,
        max_message_bytes: 1000,
        max_message_rate: 10,
    };

    #[test]
    fn members_leave_in_any_order_and_the_rest_stay_findable() {
        let mut chat = Chat::new(LIMITS);
        let room: Rc<str> = "big".into();
        let people: Vec<Member> = (0..50).map(|k| member(k, k as u64 + 1, "m")).collect();
        for m in &people {
            chat.join(&room, m, 0);
        }
        // Leave from the front, the back and the middle: each swap_remove moves
        // the last member, whose index must follow.
        for k in [0, 49, 25, 1, 48, 24, 26] {
            assert!(chat.rooms[&room].position(k).is_some());
            chat.leave(&room, &people[k], 0);
            assert!(chat.rooms[&room].position(k).is_none());
        }
        let left = &chat.rooms[&room];
        assert_eq!(left.members.len(), 43);
        for (i, &key) in left.members.iter().enumerate() {
            assert_eq!(left.position(key), Some(i));
            assert_eq!(left.people[i].0, key as u64 + 1);
        }
        assert!(chat.rename(&room, &people[30], &"new".into(), 0).is_some());
        assert_eq!(&*left_name(&chat, &room, 30), "new");
    }

    fn left_name(chat: &Chat, room: &Rc<str>, key: ConnectionKey) -> Rc<str> {
        let room = &chat.rooms[room];
        Rc::clone(&room.people[room.position(key).unwrap()].1)
    }

    fn member(key: ConnectionKey, id: u64, name: &str) -> Member {
        Member {
            key,
            id,
            name: name.into(),
        }
    }

    fn room(name: &str) -> Rc<str> {
        name.into()
    }

    #[test]
    fn join_say_leave_in_one_room() {
        let mut chat = Chat::new(LIMITS);
        let mut log = Log(Vec::new());
        let (ann, bob) = (member(1, 101, "ann"), member(2, 102, "bob"));
        let lobby = room("lobby");
        log.join(&mut chat, &lobby, &ann, 10);
        log.join(&mut chat, &lobby, &bob, 11);
        let frame = message_frame("lobby", &ann, "hi \"bob\"", 12);
        log.publish(&mut chat, "lobby", frame);
        log.leave(&mut chat, &lobby, &bob, 13);
        assert_eq!(
            log.to(2),
            vec![
                r#"{"type":"welcome","id":102,"name":"bob","room":"lobby","online":2,"members":[{"id":101,"name":"ann"},{"id":102,"name":"bob"}],"limits":{"max_message_bytes":1000,"max_message_rate":10}}"#,
                r#"{"type":"join","id":102,"name":"bob","online":2,"ts":11}"#,
                r#"{"type":"message","id":101,"from":"ann","text":"hi \"bob\"","ts":12,"room":"lobby"}"#,
            ]
        );
        assert_eq!(log.to(1).len(), 5); // welcome, 2 joins, message, leave
        assert_eq!(
            log.to(1)[4],
            r#"{"type":"leave","id":102,"name":"bob","online":1,"ts":13}"#
        );
        assert_eq!(chat.online("lobby"), 1);
    }

    #[test]
    fn rooms_are_separate() {
        let mut chat = Chat::new(LIMITS);
        let mut log = Log(Vec::new());
        let ann = member(1, 1, "ann");
        log.join(&mut chat, &room("a"), &ann, 0);
        log.join(&mut chat, &room("b"), &member(2, 2, "bob"), 0);
        log.publish(&mut chat, "a", message_frame("a", &ann, "only a", 0));
        assert!(log.to(2).iter().all(|s| !s.contains("only a")));
        assert_eq!((chat.online("a"), chat.online("b")), (1, 1));
    }

    #[test]
    fn newcomers_get_bounded_history_after_the_welcome() {
        let mut chat = Chat::new(ChatLimits {
            messages: 2,
            ..LIMITS
        });
        let mut log = Log(Vec::new());
        let ann = member(1, 1, "ann");
        let r = room("r");
        log.join(&mut chat, &r, &ann, 0);
        for text in ["one", "two", "three"] {
            log.publish(&mut chat, "r", message_frame("r", &ann, text, 0));
        }
        log.0.clear();
        log.join(&mut chat, &r, &member(2, 2, "bob"), 0);
        let seen = log.to(2);
        assert!(seen[0].contains("welcome"));
        assert!(seen[1].contains("\"two\"") && seen[2].contains("\"three\""));
        assert!(seen[3].contains("join"));
    }

    #[test]
    fn history_is_bounded_in_bytes() {
        let mut chat = Chat::new(ChatLimits {
            bytes: 300,
            ..LIMITS
        });
        let mut log = Log(Vec::new());
        let ann = member(1, 1, "ann");
        let r = room("r");
        log.join(&mut chat, &r, &ann, 0);
        for i in 0..10 {
            let text = format!("{i}{}", "x".repeat(60));
            log.publish(&mut chat, "r", message_frame("r", &ann, &text, 0));
        }
        // A message larger than the whole budget is broadcast but not kept.
        let huge = "y".repeat(400);
        log.publish(&mut chat, "r", message_frame("r", &ann, &huge, 0));
        log.0.clear();
        log.join(&mut chat, &r, &member(2, 2, "bob"), 0);
        let replayed = log.to(2).len() - 2; // minus welcome and join
        assert!((1..10).contains(&replayed), "{replayed} replayed");
        assert!(log.to(2).iter().all(|s| !s.contains("yyy")));
        assert!(log.to(2)[replayed].contains("9xxx"));
    }

    #[test]
    fn emptied_rooms_keep_history_up_to_a_bound() {
        let mut chat = Chat::new(LIMITS); // two idle rooms kept
        let mut log = Log(Vec::new());
        let ann = member(1, 1, "ann");
        for name in ["a", "b", "c"] {
            let r = room(name);
            log.join(&mut chat, &r, &ann, 0);
            log.publish(&mut chat, name, message_frame(name, &ann, name, 0));
            log.leave(&mut chat, &r, &ann, 0);
        }
        assert_eq!(chat.room_count(), 0);
        log.0.clear();
        // "a" was emptied first and forgotten; "c" still has its message.
        log.join(&mut chat, &room("a"), &member(2, 2, "bob"), 0);
        log.join(&mut chat, &room("c"), &member(3, 3, "cy"), 0);
        assert_eq!(log.to(2).len(), 2);
        assert_eq!(log.to(3).len(), 3);
        assert_eq!(chat.room_count(), 2);
    }

    #[test]
    fn the_history_budget_gives_up_the_least_recently_active_rooms_first() {
        let ann = member(1, 1, "ann");
        let one = message_frame("r0", &ann, "x", 0).len();
        let mut chat = Chat::new(ChatLimits {
            total_bytes: 10 * one,
            ..LIMITS
        });
        let mut log = Log(Vec::new());
        let rooms: Vec<Rc<str>> = (0..3).map(|i| room(&format!("r{i}"))).collect();
        for (i, r) in rooms.iter().enumerate() {
            log.join(&mut chat, r, &member(i, i as u64, "m"), 0);
        }
        let say = |chat: &mut Chat, log: &mut Log, r: &Rc<str>| {
            log.publish(chat, r, message_frame(r, &ann, "x", 0));
        };
        // 4 messages in each room, in turn: 12 for a budget of 10, so the least
        // recently active room, r0, gives up its 2 oldest.
        for r in &rooms {
            for _ in 0..4 {
                say(&mut chat, &mut log, r);
            }
        }
        let kept = |chat: &Chat, r: &str| chat.rooms[r].history.len();
        assert_eq!([0, 1, 2].map(|i| kept(&chat, &format!("r{i}"))), [2, 4, 4]);
        // r0 speaks again: now r1 is the least recently active, and pays.
        say(&mut chat, &mut log, &rooms[0]);
        assert_eq!([0, 1, 2].map(|i| kept(&chat, &format!("r{i}"))), [3, 3, 4]);
        assert_eq!(chat.history_bytes(), 10 * one);
        let total: usize = chat.rooms.values().map(|r| r.history_bytes).sum();
        assert_eq!(total, chat.history_bytes());
    }

    #[test]
    fn a_forgotten_room_gives_its_history_back_to_the_budget() {
        let mut chat = Chat::new(LIMITS); // two idle rooms kept
        let mut log = Log(Vec::new());
        let ann = member(1, 1, "ann");
        for name in ["a", "b", "c"] {
            let r = room(name);
            log.join(&mut chat, &r, &ann, 0);
            log.publish(&mut chat, name, message_frame(name, &ann, name, 0));
            log.leave(&mut chat, &r, &ann, 0);
        }
        let frame_len = message_frame("a", &ann, "a", 0).len();
        assert_eq!(chat.history_bytes(), 2 * frame_len);
    }

    #[test]
    fn the_welcome_lists_members_while_the_room_is_small_and_says_the_limits() {
        let mut chat = Chat::new(LIMITS); // lists up to 3
        let mut log = Log(Vec::new());
        let r = room("r");
        for (i, name) in ["ann", "bob", "cy", "dee"].into_iter().enumerate() {
            log.join(&mut chat, &r, &member(i, i as u64 + 1, name), 0);
        }
        assert_eq!(
            log.to(2)[0],
            r#"{"type":"welcome","id":3,"name":"cy","room":"r","online":3,"members":[{"id":1,"name":"ann"},{"id":2,"name":"bob"},{"id":3,"name":"cy"}],"limits":{"max_message_bytes":1000,"max_message_rate":10}}"#
        );
        assert!(
            log.to(3)[0].contains(r#""online":4,"members":null,"#),
            "{}",
            log.to(3)[0]
        );
    }

    #[test]
    fn a_rename_is_one_notice_and_the_list_follows_it() {
        let mut chat = Chat::new(LIMITS);
        let mut log = Log(Vec::new());
        let r = room("r");
        let ann = member(1, 1, "ann");
        log.join(&mut chat, &r, &ann, 0);
        log.join(&mut chat, &r, &member(2, 2, "bob"), 0);
        log.0.clear();
        let renamed = chat.rename("r", &ann, &"annie".into(), 5).unwrap();
        let keys = chat.members("r").to_vec();
        let notice = payload(&renamed);
        assert_eq!(keys, [1, 2]);
        assert_eq!(
            notice,
            r#"{"type":"rename","id":1,"from":"ann","name":"annie","ts":5}"#
        );
        log.join(&mut chat, &r, &member(3, 3, "cy"), 0);
        assert!(
            log.to(3)[0].contains(r#"{"id":1,"name":"annie"}"#),
            "{}",
            log.to(3)[0]
        );
    }

    #[test]
    fn text_is_a_message_a_rename_or_a_blank() {
        assert_eq!(interpret("hello"), Said::Message("hello"));
        assert_eq!(interpret("/nick annie"), Said::Rename("annie".into()));
        assert_eq!(
            interpret("/nick   ann  b \u{7}"),
            Said::Rename("ann  b".into())
        );
        assert_eq!(interpret("/nickname"), Said::Message("/nickname"));
        assert_eq!(interpret("/nick"), Said::BadName);
        assert_eq!(interpret("/nick  \u{1}"), Said::BadName);
        for blank in ["", " ", "\n", " \t\r\n "] {
            assert_eq!(interpret(blank), Said::Blank, "{blank:?}");
        }
    }

    #[test]
    fn a_big_room_announces_joins_and_leaves_together_once_per_tick() {
        let mut chat = Chat::new(LIMITS); // big past 3 members
        let mut log = Log(Vec::new());
        let r = room("big");
        let people: Vec<Member> = (0..6).map(|i| member(i, i as u64 + 1, "m")).collect();
        for person in &people {
            log.join(&mut chat, &r, person, 0);
        }
        // The first three joins were announced one by one; the next three wait.
        let joins = log
            .0
            .iter()
            .filter(|(_, t)| t.contains(r#""type":"join""#))
            .count();
        assert_eq!(joins, 1 + 2 + 3);
        log.leave(&mut chat, &r, &people[0], 0);
        assert!(log.0.iter().all(|(_, t)| !t.contains("leave")));
        let (name, notice) = chat.next_presence(9).unwrap();
        let text = payload(&notice);
        assert_eq!((&*name, chat.members(&name).len()), ("big", 5));
        assert_eq!(
            text,
            r#"{"type":"presence","online":5,"joined":[{"id":4,"name":"m"},{"id":5,"name":"m"},{"id":6,"name":"m"}],"left":[{"id":1,"name":"m"}],"more_joined":0,"more_left":0,"ts":9}"#
        );
        assert!(chat.next_presence(10).is_none());
        // Leaving a room that was big is announced together; once the room is
        // back within the limit, a leave is announced at once again.
        log.0.clear();
        log.leave(&mut chat, &r, &people[1], 0);
        log.leave(&mut chat, &r, &people[2], 0);
        assert!(log.0.is_empty());
        let (_, notice) = chat.next_presence(11).unwrap();
        assert!(payload(&notice).contains(r#""online":3,"joined":[],"left":[{"id":2,"#));
        log.leave(&mut chat, &r, &people[3], 0);
        assert_eq!(log.0.iter().filter(|(_, t)| t.contains("leave")).count(), 2);
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
    fn leaving_twice_sends_one_notice() {
        let mut chat = Chat::new(LIMITS);
        let mut log = Log(Vec::new());
        let (ann, bob) = (member(1, 1, "ann"), member(2, 2, "bob"));
        let r = room("r");
        log.join(&mut chat, &r, &ann, 0);
        log.join(&mut chat, &r, &bob, 0);
        log.0.clear();
        log.leave(&mut chat, &r, &bob, 0);
        log.leave(&mut chat, &r, &bob, 0);
        assert_eq!(log.0.len(), 1);
        assert_eq!(chat.online("r"), 1);
    }

    #[test]
    fn the_chat_takes_text_only() {
        assert_eq!(text_message(MessageKind::Text, b"hi"), Ok("hi"));
        let refused = text_message(MessageKind::Binary, b"hi").unwrap_err();
        assert_eq!(refused.code, CloseCode::UNSUPPORTED_DATA);
    }

    #[test]
    fn json_escaping() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\u{1}<img>");
        assert_eq!(out, r#""a\"b\\c\nd\u0001<img>""#);
    }
}
