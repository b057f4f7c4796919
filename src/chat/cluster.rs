//! The chat as one node of a cluster (`--redis`, `crate::cluster`): members
//! join, and notices arrive, when Redis has put them in the room's order, with
//! the room's count over the whole cluster. The node's `Chat` still holds its
//! own members, their fan-out lists and the history cache newcomers get; the
//! count and the member list come from the cluster.

use super::frames::welcome_frame;
use super::{Chat, ConnectionKey, Joined, Member, SharedFrame};
use std::rc::Rc;

/// What a cluster notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Join,
    Leave,
    Rename,
}

impl Chat {
    /// Adds a local member whose join came back from the cluster: a welcome
    /// with the cluster's count and member list (`None`: too many to list, or
    /// not known), and the history this node keeps. No notice: it arrives as
    /// an event, in the room's order.
    pub fn admit(
        &mut self,
        room_name: &Rc<str>,
        member: &Member,
        online: usize,
        people: Option<&[(u64, Rc<str>)]>,
    ) -> Joined<'_> {
        self.idle.retain(|r| r != room_name);
        let room = self.rooms.entry(Rc::clone(room_name)).or_default();
        room.add(member);
        room.cluster_online = Some(online);
        let welcome = welcome_frame(room_name, online, people, member, &self.limits);
        Joined {
            welcome,
            history: &room.history,
            notice: None,
        }
    }

    /// Takes a local member out without a notice (the cluster announces it).
    pub fn remove(&mut self, room_name: &str, member: &Member) {
        let Some(room) = self.rooms.get_mut(room_name) else {
            return;
        };
        room.remove(member.key);
    }

    /// A join, leave or rename notice from the cluster, with the room's new
    /// count: who must get `frame` now, or nothing when the room is big and the
    /// change waits for the next `presence` notice (`presence.rs`).
    pub fn cluster_notice(
        &mut self,
        room_name: &Rc<str>,
        notice: Notice,
        (id, name): (u64, &Rc<str>),
        online: usize,
    ) -> Option<&[ConnectionKey]> {
        let big = self.limits.member_list;
        let room = self.rooms.get_mut(room_name)?;
        room.cluster_online = Some(online);
        if notice == Notice::Rename {
            if let Some(person) = room.people.iter_mut().find(|p| p.0 == id) {
                person.1 = Rc::clone(name);
            }
        } else if online > big || !room.presence.is_empty() {
            if room.presence.is_empty() {
                self.presence_due.push(Rc::clone(room_name));
            }
            match notice {
                Notice::Join => room.presence.joined(id, name),
                _ => room.presence.left(id, name),
            }
            return None;
        }
        let room = self.rooms.get(room_name)?;
        Some(&room.members)
    }

    /// A message said before this node had the room: kept for newcomers.
    pub fn seed(&mut self, room_name: &Rc<str>, frame: &SharedFrame) {
        self.rooms.entry(Rc::clone(room_name)).or_default();
        self.publish(room_name, frame);
    }

    /// Forgets a room this node has no member in any more: its history lives
    /// in Redis, and a cache not kept up to date would be wrong.
    pub fn forget(&mut self, room_name: &str) {
        let empty = self
            .rooms
            .get(room_name)
            .is_some_and(|r| r.members.is_empty());
        if empty {
            self.idle.retain(|r| &**r != room_name);
            self.forget_room(room_name);
        }
    }

    /// The link to the cluster is down: rooms count their local members.
    pub fn count_locally(&mut self) {
        for room in self.rooms.values_mut() {
            room.cluster_online = None;
        }
    }
}
