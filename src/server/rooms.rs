//! Rooms: the chat's decisions (`chat.rs`: who is in a room, what a join, a
//! message or a leave sends to whom) and the relay's (`relay.rs`: every message
//! to every member, verbatim) turned into frames for members' connections. Each
//! frame is encoded once. What goes to a whole room (a message, a notice) is
//! appended to the room's pending batch, which the loop's batch step queues on
//! every member once per iteration (`batches.rs`); what goes to one member (a
//! newcomer's welcome and history) is queued on it at once. A join or a leave
//! first queues the room's pending batch on the members of the moment.
//!
//! In a cluster (`--redis`, linked), joins, messages, renames, leaves and relay
//! messages go to Redis first and come back in the room's one order
//! (`cluster.rs`); the `*_locally` functions are what happens then, or at once
//! without a cluster.

use super::batches::RoomKind;
use super::cluster::Post;
use super::writes::{deliver, Outbox};
use super::{unix_millis, Server};
use crate::chat::{rename_json, text_frame, Chat, Joined, Member, SharedFrame};
use crate::connection::{Connection, Endpoint};
use log::info;
use slab::Slab;
use std::rc::Rc;

impl Server {
    /// Adds a member to its room. In a cluster the join goes to Redis first and
    /// the welcome comes when it is back; otherwise [`Self::join_locally`].
    pub(super) fn join_room(&mut self, room: Rc<str>, member: Member, now_ms: u64) {
        if !self.cluster_join(&room, &member) {
            self.join_locally(room, member, now_ms);
        }
    }

    /// A welcome and the room's history to the newcomer, then a join notice to
    /// everyone in the room.
    pub(super) fn join_locally(&mut self, room: Rc<str>, member: Member, now_ms: u64) {
        // What the room was sent before the newcomer came is not for it.
        self.queue_room_batch(RoomKind::Chat, &room); // batches.rs
        let (chat, connections, mut outbox) = self.split_for_delivery();
        let joined = chat.join(&room, &member, now_ms);
        welcome(connections, &mut outbox, member.key, &joined);
        if let Some(notice) = joined.notice {
            outbox.batches.push(RoomKind::Chat, &room, notice);
        }
    }

    /// The chat, the connections and an outbox, borrowed apart, so that what
    /// the chat answers can be queued on the connections.
    pub(super) fn split_for_delivery(&mut self) -> (&mut Chat, &mut Slab<Connection>, Outbox<'_>) {
        let Server {
            chat,
            connections,
            pending,
            metrics,
            config,
            batches,
            ..
        } = self;
        let outbox = Outbox {
            pending,
            metrics,
            config,
            batches,
        };
        (chat, connections, outbox)
    }

    /// Adds connection `key` to relay room `room`.
    pub(super) fn join_relay(&mut self, room: &Rc<str>, key: usize) {
        // What the room was sent before the newcomer came is not for it.
        self.queue_room_batch(RoomKind::Relay, room); // batches.rs
        self.relay.join(room, key);
        self.cluster_join_relay(room); // cluster.rs
    }

    /// A chat message for `room`: in a cluster it goes to Redis and is
    /// delivered when it comes back; otherwise [`Self::broadcast_locally`].
    pub(super) fn broadcast(&mut self, room: &str, frame: SharedFrame) {
        if !self.cluster_post(room, Post::Message, (0, ""), &frame) {
            self.broadcast_locally(room, frame);
        }
    }

    /// Sends a chat message's frame to every member of `room` here, the sender
    /// too, and keeps it in the room's history. The frame joins the room's
    /// batch, queued on the members in the loop's batch step (`batches.rs`).
    pub(super) fn broadcast_locally(&mut self, room: &str, frame: SharedFrame) {
        self.metrics.broadcasts += 1;
        if !self.chat.publish(room, &frame).is_empty() {
            self.batches.push(RoomKind::Chat, room, frame);
        }
    }

    /// Passes a message on verbatim to every member of relay room `room`: in a
    /// cluster through Redis, delivered when it comes back, on every node in one
    /// order; otherwise [`Self::relay_locally`].
    pub(super) fn relay(&mut self, room: &str, frame: SharedFrame) {
        if !self.cluster_relay(room, &frame) {
            self.relay_locally(room, frame);
        }
    }

    /// Passes a message on to every member of relay room `room` here; like a
    /// chat message, it joins the room's batch.
    pub(super) fn relay_locally(&mut self, room: &str, frame: SharedFrame) {
        self.metrics.relays += 1;
        if !self.relay.members(room).is_empty() {
            self.batches.push(RoomKind::Relay, room, frame);
        }
    }

    /// Announces the joins and leaves of big rooms collected since the last
    /// tick, one notice per room (`chat/presence.rs`).
    pub(super) fn announce_presence(&mut self) {
        let now_ms = unix_millis();
        while let Some((room, notice)) = self.chat.next_presence(now_ms) {
            self.batches.push(RoomKind::Chat, &room, notice);
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
        if let Some(renamed) = self.chat.rename(&room, &old, &name, unix_millis()) {
            self.batches.push(RoomKind::Chat, &room, renamed);
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
                // What the room was sent before the member left is still its.
                self.queue_room_batch(RoomKind::Relay, &room); // batches.rs
                self.relay.leave(&room, key);
                self.cluster_leave_relay(&room); // cluster.rs
                return;
            }
            Endpoint::Echo => return,
        };
        let (room, member) = (Rc::clone(room), member.clone());
        // What the room was sent before the member left is still its.
        self.queue_room_batch(RoomKind::Chat, &room); // batches.rs
        if self.cluster_leave(&room, &member) {
            return self.chat.remove(&room, &member); // announced by the cluster
        }
        if let Some(notice) = self.chat.leave(&room, &member, unix_millis()) {
            self.batches.push(RoomKind::Chat, &room, notice);
        }
    }
}

/// A newcomer's welcome, then the room's history, queued on it alone.
pub(super) fn welcome(
    connections: &mut Slab<Connection>,
    outbox: &mut Outbox,
    key: usize,
    joined: &Joined,
) {
    deliver(connections, outbox, key, &joined.welcome);
    for old in joined.history {
        deliver(connections, outbox, key, old);
    }
}
