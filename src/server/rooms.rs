//! Rooms: the chat's decisions (`chat.rs`: who is in a room, what a join, a
//! message or a leave sends to whom) and the relay's (`relay.rs`: every message
//! to every member, verbatim) turned into frames queued on members'
//! connections. Each frame is encoded once and queued by reference on every
//! recipient (`writes::queue_frame`); members that agreed to permessage-deflate
//! share one compressed copy (`fan_out`).

use super::cluster::Post;
use super::compression::Deflate;
use super::writes::{deliver, queue_frame, Outbox, Outgoing};
use super::{unix_millis, Server};
use crate::chat::{rename_json, text_frame, Chat, Member, SharedFrame};
use crate::connection::{Connection, Endpoint, Phase};
use crate::relay::Relay;
use log::info;
use slab::Slab;
use std::rc::Rc;

impl Server {
    /// The chat, the connections and an outbox, borrowed apart, so that the
    /// chat's list of recipients can be walked while frames are queued.
    pub(super) fn split_for_delivery(&mut self) -> (&mut Chat, &mut Slab<Connection>, Outbox<'_>) {
        let (chat, connections, outbox, _, _) = self.split_for_fan_out();
        (chat, connections, outbox)
    }

    /// [`Self::split_for_delivery`], with the relay rooms and the compressor.
    fn split_for_fan_out(
        &mut self,
    ) -> (
        &mut Chat,
        &mut Slab<Connection>,
        Outbox<'_>,
        &mut Relay,
        &mut Deflate,
    ) {
        let outbox = Outbox {
            pending: &mut self.pending,
            metrics: &mut self.metrics,
            config: &self.config,
        };
        let (chat, relay, deflate) = (&mut self.chat, &mut self.relay, &mut self.deflate);
        (chat, &mut self.connections, outbox, relay, deflate)
    }

    /// Adds a member to its room. In a cluster (`--redis`, linked) the join
    /// goes to Redis first and the welcome comes when it is back
    /// (`cluster.rs`); otherwise [`Self::join_locally`].
    pub(super) fn join_room(&mut self, room: Rc<str>, member: Member, now_ms: u64) {
        if !self.cluster_join(&room, &member) {
            self.join_locally(room, member, now_ms);
        }
    }

    /// A welcome and the room's history to the newcomer, then a join notice to
    /// everyone in the room.
    pub(super) fn join_locally(&mut self, room: Rc<str>, member: Member, now_ms: u64) {
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

    /// A chat message for `room`: in a cluster (linked) it goes to Redis and is
    /// delivered when it comes back, in the room's one order (`cluster.rs`);
    /// otherwise [`Self::broadcast_locally`].
    pub(super) fn broadcast(&mut self, room: &str, frame: SharedFrame) {
        if !self.cluster_post(room, Post::Message, (0, ""), &frame) {
            self.broadcast_locally(room, frame);
        }
    }

    /// Sends a chat message's frame to every member of `room` here, the sender
    /// too, and keeps it in the room's history.
    pub(super) fn broadcast_locally(&mut self, room: &str, frame: SharedFrame) {
        self.metrics.broadcasts += 1;
        let (chat, connections, mut outbox, _, deflate) = self.split_for_fan_out();
        let members = chat.publish(room, &frame);
        fan_out(connections, &mut outbox, deflate, members, &frame);
    }

    /// Passes a message on verbatim to every member of relay room `room`.
    /// In a cluster (linked) it goes through Redis and is delivered when it
    /// comes back, on every node in one order (`cluster.rs`).
    pub(super) fn relay(&mut self, room: &str, frame: SharedFrame) {
        if !self.cluster_relay(room, &frame) {
            self.relay_locally(room, frame);
        }
    }

    /// Passes a message on to every member of relay room `room` here.
    pub(super) fn relay_locally(&mut self, room: &str, frame: SharedFrame) {
        self.metrics.relays += 1;
        let (_, connections, mut outbox, relay, deflate) = self.split_for_fan_out();
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
        let notice = text_frame(&rename_json(&old, &name, unix_millis()));
        if self.cluster_post(&room, Post::Rename, (old.id, &name), &notice) {
            return;
        }
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
                self.cluster_leave_relay(&room);
                return;
            }
            Endpoint::Echo => return,
        };
        let (room, member) = (Rc::clone(room), member.clone());
        if self.cluster_leave(&room, &member) {
            return self.chat.remove(&room, &member); // announced by the cluster
        }
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
