//! Rooms: the chat's decisions (`chat.rs`: who is in a room, what a join, a
//! message or a leave sends to whom) and the relay's (`relay.rs`: every message
//! to every member, verbatim) turned into frames queued on members'
//! connections. Each frame is encoded once and queued by reference on every
//! recipient (`writes::queue_frame`); members that agreed to permessage-deflate
//! share one compressed copy (`fan_out`).

use super::compression::Deflate;
use super::writes::{deliver, queue_frame, Outbox, Outgoing};
use super::{unix_millis, Server};
use crate::chat::{Chat, Member, SharedFrame};
use crate::connection::{Connection, Endpoint, Phase};
use log::info;
use slab::Slab;
use std::rc::Rc;

impl Server {
    /// The chat, the connections and an outbox, borrowed apart, so that the
    /// chat's list of recipients can be walked while frames are queued.
    fn split_for_delivery(&mut self) -> (&mut Chat, &mut Slab<Connection>, Outbox<'_>) {
        let outbox = Outbox {
            pending: &mut self.pending,
            metrics: &mut self.metrics,
            config: &self.config,
        };
        (&mut self.chat, &mut self.connections, outbox)
    }

    /// Adds a member to its room: a welcome and the room's history to it, then a
    /// join notice to everyone in the room.
    pub(super) fn join_room(&mut self, room: Rc<str>, member: Member, now_ms: u64) {
        let (chat, connections, mut outbox) = self.split_for_delivery();
        let joined = chat.join(&room, &member, now_ms);
        deliver(connections, &mut outbox, member.key, &joined.welcome);
        for old in joined.history {
            deliver(connections, &mut outbox, member.key, old);
        }
        if let Some(notice) = &joined.notice {
            for &key in joined.members {
                deliver(connections, &mut outbox, key, notice);
            }
        }
    }

    /// Sends a chat message's frame to every member of `room`, the sender too,
    /// and keeps it in the room's history.
    pub(super) fn broadcast(&mut self, room: &str, frame: SharedFrame) {
        self.metrics.broadcasts += 1;
        let Server {
            chat,
            connections,
            pending,
            metrics,
            config,
            deflate,
            ..
        } = self;
        let mut outbox = Outbox {
            pending,
            metrics,
            config,
        };
        let members = chat.publish(room, &frame);
        fan_out(connections, &mut outbox, deflate, members, &frame);
    }

    /// Passes a message on verbatim to every member of relay room `room`.
    pub(super) fn relay(&mut self, room: &str, frame: SharedFrame) {
        self.metrics.relays += 1;
        let Server {
            relay,
            connections,
            pending,
            metrics,
            config,
            deflate,
            ..
        } = self;
        let mut outbox = Outbox {
            pending,
            metrics,
            config,
        };
        fan_out(
            connections,
            &mut outbox,
            deflate,
            relay.members(room),
            &frame,
        );
    }

    /// Announces the joins and leaves of big rooms collected since the last
    /// tick, one notice per room (`chat/presence.rs`).
    pub(super) fn announce_presence(&mut self) {
        let now_ms = unix_millis();
        loop {
            let (chat, connections, mut outbox) = self.split_for_delivery();
            let Some((notice, members)) = chat.next_presence(now_ms) else {
                return;
            };
            for &key in members {
                deliver(connections, &mut outbox, key, &notice);
            }
        }
    }

    /// Renames chat member `key`: one rename notice to its room, and the new
    /// name on its connection for the messages it sends from now on.
    pub(super) fn rename_member(&mut self, key: usize, name: Rc<str>) {
        let Some(ws) = self.connections.get_mut(key).and_then(|c| c.websocket()) else {
            return;
        };
        let Endpoint::Chat { room, member, .. } = &mut ws.endpoint else {
            return;
        };
        let (room, old) = (Rc::clone(room), member.clone());
        member.name = Rc::clone(&name);
        self.metrics.renames += 1;
        info!("[{key}] {:?} is now {name:?} in room {room:?}", old.name);
        let (chat, connections, mut outbox) = self.split_for_delivery();
        if let Some(renamed) = chat.rename(&room, &old, &name, unix_millis()) {
            for &key in renamed.members {
                deliver(connections, &mut outbox, key, &renamed.notice);
            }
        }
    }

    /// Takes a chat member out of its room, telling the others. Safe to call more
    /// than once: the chat knows who is still a member. During shutdown nobody
    /// needs to hear about the others leaving.
    pub(super) fn leave_room(&mut self, key: usize) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let Some(ws) = self.connections.get_mut(key).and_then(|c| c.websocket()) else {
            return;
        };
        let (room, member) = match &ws.endpoint {
            Endpoint::Chat { room, member, .. } => (room, member),
            Endpoint::Relay { room } => {
                let room = Rc::clone(room);
                self.relay.leave(&room, key);
                return;
            }
            Endpoint::Echo => return,
        };
        let (room, member) = (Rc::clone(room), member.clone());
        let (chat, connections, mut outbox) = self.split_for_delivery();
        if let Some(left) = chat.leave(&room, &member, unix_millis()) {
            for &key in left.members {
                deliver(connections, &mut outbox, key, &left.notice);
            }
        }
    }
}

/// Queues `frame` on every one of `members`: the plain frame, or to members that
/// agreed to permessage-deflate one compressed frame, made once for all of them
/// (`compression.rs`).
fn fan_out(
    connections: &mut Slab<Connection>,
    outbox: &mut Outbox,
    deflate: &mut Deflate,
    members: &[usize],
    frame: &SharedFrame,
) {
    let mut compressed = None;
    for &key in members {
        let Some(conn) = connections.get_mut(key) else {
            continue;
        };
        let agreement = match &conn.phase {
            Phase::WebSocket(ws) => ws.deflate,
            _ => None,
        };
        let chosen = deflate.frame_for(agreement, frame, &mut compressed);
        queue_frame(conn, key, Outgoing::Shared(chosen), outbox);
    }
}
