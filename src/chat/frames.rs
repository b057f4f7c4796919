//! The chat's frames: the JSON of every notice and message (RFC 8259), each
//! encoded once into a WebSocket text frame (RFC 6455 §5.6) that all of its
//! recipients share. The server alone writes `type`, `id` and `from`; a
//! client's text only ever appears escaped inside `"text"`.

use super::{ChatLimits, Member, SharedFrame};
use crate::frame::{self, OpCode};
use std::fmt::Write;
use std::rc::Rc;

/// The welcome: who the newcomer is, the room, its count, who is in it (when
/// the room is small enough to list), and the limits a page should know.
pub(super) fn welcome_frame(
    room_name: &str,
    online: usize,
    people: Option<&[(u64, Rc<str>)]>,
    member: &Member,
    limits: &ChatLimits,
) -> SharedFrame {
    let mut json = String::from("{\"type\":\"welcome\",\"id\":");
    let _ = write!(json, "{},\"name\":", member.id);
    push_json_string(&mut json, &member.name);
    json.push_str(",\"room\":");
    push_json_string(&mut json, room_name);
    let _ = write!(json, ",\"online\":{online},\"members\":");
    if let Some(people) = people.filter(|p| p.len() <= limits.member_list) {
        json.push('[');
        for (i, (id, name)) in people.iter().enumerate() {
            let comma = if i > 0 { "," } else { "" };
            let _ = write!(json, "{comma}{{\"id\":{id},\"name\":");
            push_json_string(&mut json, name);
            json.push('}');
        }
        json.push(']');
    } else {
        json.push_str("null");
    }
    let _ = write!(
        json,
        ",\"limits\":{{\"max_message_bytes\":{},\"max_message_rate\":{}}}}}",
        limits.max_message_bytes, limits.max_message_rate
    );
    text_frame(&json)
}

/// A notice for one member only: `{"type":"notice","code":...,"text":...}`.
pub fn notice_to_member(code: &str, text: &str) -> String {
    let mut json = String::from("{\"type\":\"notice\",\"code\":");
    push_json_string(&mut json, code);
    json.push_str(",\"text\":");
    push_json_string(&mut json, text);
    json.push('}');
    json
}

/// The frame for `text` said by `member` in `room`.
pub fn message_frame(room: &str, member: &Member, text: &str, now_ms: u64) -> SharedFrame {
    let mut json = String::with_capacity(text.len() + member.name.len() + 96);
    let _ = write!(
        json,
        "{{\"type\":\"message\",\"id\":{},\"from\":",
        member.id
    );
    push_json_string(&mut json, &member.name);
    json.push_str(",\"text\":");
    push_json_string(&mut json, text);
    let _ = write!(json, ",\"ts\":{now_ms},\"room\":");
    push_json_string(&mut json, room);
    json.push('}');
    text_frame(&json)
}

pub(super) fn notice_frame(kind: &str, member: &Member, online: usize, now_ms: u64) -> SharedFrame {
    let mut json = String::with_capacity(96 + member.name.len());
    let _ = write!(json, "{{\"type\":\"{kind}\",\"id\":{},\"name\":", member.id);
    push_json_string(&mut json, &member.name);
    let _ = write!(json, ",\"online\":{online},\"ts\":{now_ms}}}");
    text_frame(&json)
}

/// Encodes a text frame once, into a buffer shared by all its recipients.
pub fn text_frame(text: &str) -> SharedFrame {
    frame::server_frame(OpCode::Text, text.as_bytes()).into()
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
