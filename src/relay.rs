//! Relay rooms: `/relay/ROOM` passes every message on verbatim to every member
//! of the room, the sender included, as it came (text as text, binary as
//! binary): no envelope, no notices, no history. It is what fan-out load tools
//! expect (their own payload back, byte for byte), and what an application that
//! brings its own protocol wants. Sans-IO: who is in which room; the loop
//! frames each message once (RFC 6455 §5.6) and queues it on every member,
//! with the others the room got in the same loop iteration (`server/batches.rs`).

use std::collections::HashMap;
use std::rc::Rc;

/// Where frames for a member go: its connection's slab key.
pub type ConnectionKey = usize;

/// Every relay room and its members; a room exists while it has members.
#[derive(Debug, Default)]
pub struct Relay {
    rooms: HashMap<Rc<str>, Vec<ConnectionKey>>,
}

impl Relay {
    /// Adds `key` to `room`.
    pub fn join(&mut self, room: &Rc<str>, key: ConnectionKey) {
        self.rooms.entry(Rc::clone(room)).or_default().push(key);
    }

    /// Takes `key` out of `room`, if it is there; an emptied room is forgotten.
    pub fn leave(&mut self, room: &str, key: ConnectionKey) {
        let Some(members) = self.rooms.get_mut(room) else {
            return;
        };
        if let Some(index) = members.iter().position(|&k| k == key) {
            members.swap_remove(index);
        }
        if members.is_empty() {
            self.rooms.remove(room);
        }
    }

    /// Who gets a message sent to `room`: every member, the sender included.
    pub fn members(&self, room: &str) -> &[ConnectionKey] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }

    /// Rooms with members.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_come_and_go_and_empty_rooms_are_forgotten() {
        let mut relay = Relay::default();
        let (a, b): (Rc<str>, Rc<str>) = ("a".into(), "b".into());
        relay.join(&a, 1);
        relay.join(&a, 2);
        relay.join(&b, 3);
        assert_eq!(relay.members("a"), [1, 2]);
        assert_eq!(relay.room_count(), 2);
        relay.leave("a", 1);
        relay.leave("a", 1); // twice is harmless
        assert_eq!(relay.members("a"), [2]);
        relay.leave("b", 3);
        assert_eq!(relay.members("b"), [] as [usize; 0]);
        assert_eq!(relay.room_count(), 1);
    }
}
