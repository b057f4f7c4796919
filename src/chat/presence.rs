//! Presence in big rooms: join and leave notices coalesced per room per timer
//! tick, so that filling a room of N members costs O(N), not O(N²).
//!
//! A small room announces each join and leave to every member at once (`join`,
//! `leave`). In a room with more members than the member-list limit, that would
//! send every member a notice per arrival: 19,000 people joining one room would
//! cost 361 million notices. There, arrivals and departures are collected and
//! announced once per tick in one `presence` notice carrying the new count and
//! who came and went (the first `LISTED` of each, then how many more):
//!
//! ```json
//! {"type":"presence","online":2412,"joined":[{"id":9,"name":"ann"}],"left":[],
//!  "more_joined":0,"more_left":0,"ts":1732240000000}
//! ```

use super::{push_json_string, text_frame, SharedFrame};
use std::fmt::Write;
use std::rc::Rc;

/// Names listed per notice; the rest are counted.
pub const LISTED: usize = 20;

/// Arrivals and departures not yet announced.
#[derive(Debug, Default)]
pub struct Presence {
    joined: Vec<(u64, Rc<str>)>,
    left: Vec<(u64, Rc<str>)>,
    more_joined: usize,
    more_left: usize,
}

impl Presence {
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty() && self.more_joined + self.more_left == 0
    }

    pub fn joined(&mut self, id: u64, name: &Rc<str>) {
        if self.joined.len() < LISTED {
            self.joined.push((id, Rc::clone(name)));
        } else {
            self.more_joined += 1;
        }
    }

    pub fn left(&mut self, id: u64, name: &Rc<str>) {
        if self.left.len() < LISTED {
            self.left.push((id, Rc::clone(name)));
        } else {
            self.more_left += 1;
        }
    }

    /// The notice for everything collected, which is then forgotten.
    pub fn take_notice(&mut self, online: usize, now_ms: u64) -> SharedFrame {
        let mut json = format!("{{\"type\":\"presence\",\"online\":{online},\"joined\":");
        push_people(&mut json, &self.joined);
        json.push_str(",\"left\":");
        push_people(&mut json, &self.left);
        let _ = write!(
            json,
            ",\"more_joined\":{},\"more_left\":{},\"ts\":{now_ms}}}",
            self.more_joined, self.more_left
        );
        *self = Presence::default();
        text_frame(&json)
    }
}

fn push_people(json: &mut String, people: &[(u64, Rc<str>)]) {
    json.push('[');
    for (i, (id, name)) in people.iter().enumerate() {
        let comma = if i > 0 { "," } else { "" };
        let _ = write!(json, "{comma}{{\"id\":{id},\"name\":");
        push_json_string(json, name);
        json.push('}');
    }
    json.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_lists_the_first_ones_and_counts_the_rest() {
        let mut presence = Presence::default();
        assert!(presence.is_empty());
        for id in 0..25 {
            presence.joined(id, &"a\"b".into());
        }
        presence.left(3, &"c".into());
        let frame = presence.take_notice(122, 7);
        let text = std::str::from_utf8(&frame[4..]).unwrap(); // 16-bit length header
        assert!(
            text.starts_with(
                r#"{"type":"presence","online":122,"joined":[{"id":0,"name":"a\"b"},"#
            ),
            "{text}"
        );
        assert!(
            text.ends_with(r#""left":[{"id":3,"name":"c"}],"more_joined":5,"more_left":0,"ts":7}"#),
            "{text}"
        );
        assert_eq!(text.matches("\"id\"").count(), 21);
        assert!(presence.is_empty());
    }
}
