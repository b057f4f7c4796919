//! Relay rooms (`/relay/ROOM`) over the cluster: every message, verbatim, to
//! every member on every node, in one order. Simpler than a chat room: no
//! history, no count, no notices, so no script and no sequence number. A node
//! subscribes to `lcr:{ROOM}` while it has members there, `PUBLISH`es each
//! message (one byte for its kind, then the payload), and delivers what comes
//! back, its own members' messages included. Messages sent while the
//! subscription is not yet acknowledged wait for it (bounded by
//! `--redis-max-queue`), so a member's first message comes back to it too.
//! Like Redis pub/sub itself, delivery is at most once: what is published
//! while a node is cut off does not reach it (its own members still get each
//! other's messages: island mode).

use super::*;

/// The kind byte in front of a relayed payload.
const TEXT: u8 = b't';
const BINARY: u8 = b'b';

/// A relay room on this node.
#[derive(Debug, Default)]
pub(super) struct RelayRoom {
    /// Members here.
    members: usize,
    /// Subscribed and acknowledged.
    live: bool,
    /// Messages waiting for the acknowledgement (kind byte + payload).
    held: Vec<Vec<u8>>,
}

impl RelayRoom {
    pub(super) fn held_bytes(&self) -> usize {
        self.held.iter().map(Vec::len).sum()
    }
}

/// The channel of relay room `room`.
pub(super) fn relay_channel(room: &str) -> String {
    format!("lcr:{{{room}}}")
}

/// The relay room a channel belongs to.
pub(super) fn relay_room_of(channel: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(channel).ok()?;
    text.strip_prefix("lcr:{")?.strip_suffix('}')
}

impl Cluster {
    /// A member joins relay room `room` on this node.
    pub(crate) fn join_relay(&mut self, room: &str) {
        let up = self.is_up();
        let entry = self.relay_rooms.entry(Rc::from(room)).or_default();
        entry.members += 1;
        if entry.members == 1 && up {
            self.command(Conn::Sub, &[b"SUBSCRIBE", relay_channel(room).as_bytes()]);
        }
    }

    /// A member leaves relay room `room`; the last one unsubscribes.
    pub(crate) fn leave_relay(&mut self, room: &str) {
        let Some(entry) = self.relay_rooms.get_mut(room) else {
            return;
        };
        entry.members = entry.members.saturating_sub(1);
        if entry.members == 0 {
            self.relay_rooms.remove(room);
            if self.is_up() {
                self.command(Conn::Sub, &[b"UNSUBSCRIBE", relay_channel(room).as_bytes()]);
            }
        }
    }

    /// A message for relay room `room`. `true`: it goes through Redis and is
    /// delivered when it comes back; `false`: the link is down, and the server
    /// delivers it to this node's members.
    pub(crate) fn relay(&mut self, room: &str, binary: bool, payload: &[u8]) -> bool {
        if !self.is_up() {
            return false;
        }
        let Some(entry) = self.relay_rooms.get_mut(room) else {
            return false;
        };
        let mut message = Vec::with_capacity(payload.len() + 1);
        message.push(if binary { BINARY } else { TEXT });
        message.extend_from_slice(payload);
        self.metrics.posts += 1;
        if entry.live {
            self.publish_relay(room, &message);
        } else {
            entry.held.push(message);
        }
        true
    }

    fn publish_relay(&mut self, room: &str, message: &[u8]) {
        self.command(
            Conn::Cmd,
            &[b"PUBLISH", relay_channel(room).as_bytes(), message],
        );
        self.expect.push_back(Expect::Post);
    }

    /// The subscription to relay room `room` is acknowledged: what waited goes.
    pub(super) fn on_relay_subscribed(&mut self, room: &str) {
        let Some(entry) = self.relay_rooms.get_mut(room) else {
            return;
        };
        entry.live = true;
        for message in std::mem::take(&mut entry.held) {
            self.publish_relay(room, &message);
        }
    }

    /// A relayed message came back from Redis.
    pub(super) fn on_relay_message(&mut self, room: &str, mut message: Vec<u8>) {
        self.metrics.events_received += 1;
        let Some((name, entry)) = self.relay_rooms.get_key_value(room) else {
            return; // unsubscribed meanwhile
        };
        if !entry.live {
            return;
        }
        let binary = match message.first() {
            Some(&TEXT) => false,
            Some(&BINARY) => true,
            _ => {
                self.metrics.bad_replies += 1;
                warn!("relay room {room:?}: a message without its kind byte; dropped");
                return;
            }
        };
        message.remove(0);
        if !binary && std::str::from_utf8(&message).is_err() {
            self.metrics.bad_replies += 1;
            warn!("relay room {room:?}: a text message that is not UTF-8; dropped");
            return;
        }
        self.happenings.push_back(Happening::Relay {
            room: Rc::clone(name),
            binary,
            payload: message,
        });
    }

    /// The link is down: relay rooms wait for the next subscription, and what
    /// they held (never sent) is delivered to this node's members, as new
    /// messages are meanwhile.
    pub(super) fn relay_rooms_cut_off(&mut self) {
        for (name, entry) in &mut self.relay_rooms {
            entry.live = false;
            for mut message in entry.held.drain(..) {
                let binary = message.first() == Some(&BINARY);
                message.remove(0);
                self.happenings.push_back(Happening::Relay {
                    room: Rc::clone(name),
                    binary,
                    payload: message,
                });
            }
        }
    }

    /// Every relay room with members here, for the `SUBSCRIBE` at link-up.
    pub(super) fn relay_channels(&self) -> impl Iterator<Item = String> + '_ {
        self.relay_rooms.keys().map(|room| relay_channel(room))
    }
}
