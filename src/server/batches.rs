//! Room batches: the frames sent to a room during one loop iteration, queued on
//! each member once. A batch is whole frames one after another, which is a
//! valid stream because frames of different messages are never interleaved
//! (RFC 6455 §5.4); compressed frames keep RSV1 on each (RFC 7692 §6).
//!
//! A chat message (`Server::broadcast`), a relayed message (`Server::relay`) and
//! every notice to a room (join, leave, rename, presence) only append their frame
//! to the room's pending [`Batch`] (`rooms.rs`). In the loop's
//! [`Server::queue_room_batches`] step, before the flush, each room's batch goes
//! onto each member's queue once: the frame itself when the room got one frame
//! this iteration (no copy, as before), otherwise all of them in one shared
//! buffer (`Outgoing::Batch`). That buffer is built once per kind of member:
//! plain, or, for members that agreed to permessage-deflate, each frame's
//! compressed form (made at most once per frame, as a lone broadcast's is) where
//! it is worth it. A member's cost is then one queue push per iteration, not per
//! message, and its flush one plain `write` when the batch is all it has queued
//! and fits the socket.
//!
//! # Order
//!
//! A member gets everything in the order it was produced, as when each frame was
//! queued on every member at once:
//!
//! 1. **Room output** (messages, and the join, leave, rename and presence
//!    notices) goes through the room's batch, in the order it was appended.
//! 2. **Membership changes flush first.** A join (chat or relay) and a leave
//!    queue the room's pending batch on the members of the moment before the
//!    change (`Server::queue_room_batch`). So a batch's recipients are the same
//!    from its first frame to the step: a newcomer gets nothing broadcast before
//!    its welcome (a chat newcomer gets those messages in the history, as
//!    before), and a member who left gets nothing broadcast after it left.
//! 3. **A member's own output queued by the server** (a heartbeat ping, the close
//!    frame for a message deadline or the input budget, the 1001 of a shutdown)
//!    flushes its room's batch first, just as a membership change does: it
//!    comes after what the room was sent before it. These are rare (a ping per
//!    member per `--ping-interval`), and the room's batch goes out whole.
//! 4. **A member's own output queued while its input is read** (a pong, a
//!    `rate_limited` or `bad_name` notice, the close frame answering the peer's
//!    or failing the connection) is queued with the connection held, amid the
//!    member's messages to its room. It catches the member up first
//!    ([`catch_up`]): the frames its room was sent so far in this iteration are
//!    queued on it one by one (plain), and the step then gives it only the
//!    frames that came after. Its reply thus lands where it would have landed.
//!    (A close frame is caught up before it even though the session has left
//!    `Open`: those frames were sent to the room before the peer's close was
//!    read, and were once queued before the answer too.)
//! 5. **A slow reader's close** needs none of this: its unsent backlog is
//!    dropped with it, and the batch step finds it taking no more frames.
//!
//! The rest needs none of it: a newcomer's welcome and history are queued just
//! after its room's batch went out (2), before anything else is sent to the
//! room; HTTP responses and echo replies go to connections in no room.
//!
//! # Memory and limits
//!
//! A batch holds references to the frames (which, before, every member's queue
//! held), and the step makes one buffer per kind of member, shared by all of
//! them: the bytes that were queued before, once. `--max-output` counts a
//! batch's bytes on each member as it counted its frames: the queue is checked
//! before the batch (as before its first frame) and after it, less its last
//! frame (as before that frame), each time after writing early if it is over,
//! so a queue still holds at most the limit plus one message. A peer found past
//! it has its unsent backlog dropped, the batch included unless it has started
//! to go out (then the rest of the batch, whole frames, goes before the close).

use super::compression::Deflate;
use super::writes::{push_frame, queue_frame, BatchFrames, Outbox, Outgoing};
use super::Server;
use crate::chat::SharedFrame;
use crate::connection::{Connection, Endpoint, Phase, Socket};
use crate::deflate::Agreement;
use crate::frame;
use crate::output::OutputQueue;
use std::collections::HashMap;
use std::rc::Rc;

/// Which kind of room: chat rooms and relay rooms are separate namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RoomKind {
    Chat,
    Relay,
}

impl RoomKind {
    /// The room a connection's endpoint is a member of, if any.
    pub fn of(endpoint: &Endpoint) -> Option<(RoomKind, &Rc<str>)> {
        match endpoint {
            Endpoint::Chat { room, .. } => Some((RoomKind::Chat, room)),
            Endpoint::Relay { room } => Some((RoomKind::Relay, room)),
            Endpoint::Echo => None,
        }
    }
}

/// One frame sent to a room, and its compressed form once the step made it.
#[derive(Debug)]
struct Sent {
    plain: SharedFrame,
    /// `Deflate::frame_for`'s cache: `None` until a deflate member needed it,
    /// then the compressed frame or `None` if it was not worth it.
    compressed: Option<Option<SharedFrame>>,
}

/// What a room was sent during this iteration and not yet queued on its members.
#[derive(Debug, Default)]
pub(super) struct Batch {
    frames: Vec<Sent>,
    /// Members that already have the first `n` frames queued, one by one,
    /// because output of their own was due (`catch_up`): key to `n`.
    caught_up: HashMap<usize, usize>,
}

/// Every room with a pending batch.
#[derive(Debug, Default)]
pub(super) struct RoomBatches {
    chat: HashMap<Rc<str>, Batch>,
    relay: HashMap<Rc<str>, Batch>,
}

impl RoomBatches {
    pub fn is_empty(&self) -> bool {
        self.chat.is_empty() && self.relay.is_empty()
    }

    fn rooms(&mut self, kind: RoomKind) -> &mut HashMap<Rc<str>, Batch> {
        match kind {
            RoomKind::Chat => &mut self.chat,
            RoomKind::Relay => &mut self.relay,
        }
    }

    /// Appends `frame` to `room`'s batch (opening it with the room's first frame
    /// of the iteration).
    pub fn push(&mut self, kind: RoomKind, room: &str, frame: SharedFrame) {
        let rooms = self.rooms(kind);
        let sent = Sent {
            plain: frame,
            compressed: None,
        };
        match rooms.get_mut(room) {
            Some(batch) => batch.frames.push(sent),
            None => {
                let batch = Batch {
                    frames: vec![sent],
                    caught_up: HashMap::new(),
                };
                rooms.insert(Rc::from(room), batch);
            }
        }
    }

    /// Takes `room`'s pending batch, if it has one.
    fn take(&mut self, kind: RoomKind, room: &str) -> Option<Batch> {
        let rooms = self.rooms(kind);
        if rooms.is_empty() {
            return None; // the usual case: no hashing
        }
        rooms.remove(room)
    }

    /// Takes every pending batch.
    fn take_all(&mut self) -> Vec<(RoomKind, Rc<str>, Batch)> {
        let chat = std::mem::take(&mut self.chat).into_iter();
        let relay = std::mem::take(&mut self.relay).into_iter();
        (chat.map(|(room, batch)| (RoomKind::Chat, room, batch)))
            .chain(relay.map(|(room, batch)| (RoomKind::Relay, room, batch)))
            .collect()
    }
}

impl Server {
    /// The loop step: queues every room's pending batch on its members, once
    /// each. Members found past `--max-output` meanwhile leave their rooms here
    /// too (`close_slow_readers`), and the leave notices that makes go out in
    /// the next round of this step, so that no batch is left when the loop
    /// flushes.
    pub(super) fn queue_room_batches(&mut self) {
        while !self.batches.is_empty() {
            for (kind, room, batch) in self.batches.take_all() {
                self.queue_batch(kind, &room, batch);
            }
            self.close_slow_readers(); // closing.rs
        }
    }

    /// Queues `room`'s pending batch now, before its members change or one of
    /// them gets output of its own (see the module's "Order").
    pub(super) fn queue_room_batch(&mut self, kind: RoomKind, room: &str) {
        if let Some(batch) = self.batches.take(kind, room) {
            self.queue_batch(kind, room, batch);
        }
    }

    /// [`Self::queue_room_batch`] for the room connection `key` is a member of.
    pub(super) fn queue_room_batch_of(&mut self, key: usize) {
        if self.batches.is_empty() {
            return;
        }
        let Some(Phase::WebSocket(ws)) = self.connections.get(key).map(|c| &c.phase) else {
            return;
        };
        if let Some((kind, room)) = RoomKind::of(&ws.endpoint) {
            let room = Rc::clone(room);
            self.queue_room_batch(kind, &room);
        }
    }

    /// Queues `batch` on every member of `room`: the one buffer of its kind, or
    /// the frames after those a member was caught up with, one by one.
    fn queue_batch(&mut self, kind: RoomKind, room: &str, mut batch: Batch) {
        let Server {
            chat,
            relay,
            connections,
            pending,
            metrics,
            config,
            deflate,
            batches,
            ..
        } = self;
        let members = match kind {
            RoomKind::Chat => chat.members(room),
            RoomKind::Relay => relay.members(room),
        };
        let mut outbox = Outbox {
            pending,
            metrics,
            config,
            batches,
        };
        let mut kinds = Variants::default();
        for &key in members {
            let Some(conn) = connections.get_mut(key) else {
                continue;
            };
            let agreement = match &conn.phase {
                Phase::WebSocket(ws) => ws.deflate,
                _ => None,
            };
            match batch.caught_up.get(&key) {
                None => {
                    let variant = kinds.get(agreement, &mut batch.frames, deflate);
                    queue_frame(conn, key, variant.outgoing(), &mut outbox);
                }
                Some(&from) => {
                    for sent in batch.frames.iter_mut().skip(from) {
                        let chosen =
                            deflate.frame_for(agreement, &sent.plain, &mut sent.compressed);
                        if !queue_frame(conn, key, Outgoing::Shared(chosen), &mut outbox) {
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Before output of a member's own that is queued while its input is read (a
/// pong, a notice to it alone, a close frame): the frames its room was sent so
/// far in this iteration are queued on it first, one by one, so that its output
/// comes after them (see the module's "Order"). They go plain, which RFC 7692
/// allows message by message: this is rare, and the compressed forms are only
/// made in the step. Takes the connection's parts, as `push_frame` does; the
/// caller puts the connection on the flush list.
pub(super) fn catch_up(
    endpoint: &Endpoint,
    key: usize,
    socket: &mut Socket,
    output: &mut OutputQueue,
    outbox: &mut Outbox,
) {
    let Some((kind, room)) = RoomKind::of(endpoint) else {
        return;
    };
    let Outbox {
        metrics,
        config,
        batches,
        ..
    } = outbox;
    let rooms = batches.rooms(kind);
    if rooms.is_empty() {
        return;
    }
    let Some(batch) = rooms.get_mut(&**room) else {
        return;
    };
    let from = batch.caught_up.get(&key).copied().unwrap_or(0);
    for sent in &batch.frames[from..] {
        if !push_frame(
            socket,
            output,
            Outgoing::Shared(&sent.plain),
            metrics,
            config,
        ) {
            break; // past --max-output: the caller's own push finds it so too
        }
    }
    batch.caught_up.insert(key, batch.frames.len());
}

/// [`catch_up`] for a connection held whole.
pub(super) fn catch_up_connection(conn: &mut Connection, key: usize, outbox: &mut Outbox) {
    if let Phase::WebSocket(ws) = &conn.phase {
        catch_up(
            &ws.endpoint,
            key,
            &mut conn.socket,
            &mut conn.output,
            outbox,
        );
    }
}

/// What members of one kind get of a batch: the plain frames, or for members
/// that agreed to permessage-deflate with a given window, each frame compressed
/// where `Deflate::frame_for` says so.
#[derive(Debug)]
struct Variant {
    /// `None` for plain; the server window bits of the agreement otherwise.
    class: Option<u8>,
    /// The one frame, or all of them in one buffer.
    bytes: SharedFrame,
    frames: u64,
    compressed: u64,
    /// The length of the last frame in `bytes`.
    last: usize,
}

impl Variant {
    fn outgoing(&self) -> Outgoing<'_> {
        if self.frames == 1 {
            return Outgoing::Shared(&self.bytes);
        }
        Outgoing::Batch(BatchFrames {
            bytes: &self.bytes,
            frames: self.frames,
            compressed: self.compressed,
            last: self.last,
        })
    }
}

/// The variants of one batch made so far (one or two, as a rule).
#[derive(Debug, Default)]
struct Variants(Vec<Variant>);

impl Variants {
    /// The variant a member with `agreement` gets, made the first time.
    fn get(
        &mut self,
        agreement: Option<Agreement>,
        frames: &mut [Sent],
        deflate: &mut Deflate,
    ) -> &Variant {
        let class = agreement.map(|a| a.server_window_bits);
        let index = match self.0.iter().position(|v| v.class == class) {
            Some(index) => index,
            None => {
                let variant = self.make(class, agreement, frames, deflate);
                self.0.push(variant);
                self.0.len() - 1
            }
        };
        &self.0[index]
    }

    fn make(
        &mut self,
        class: Option<u8>,
        agreement: Option<Agreement>,
        frames: &mut [Sent],
        deflate: &mut Deflate,
    ) -> Variant {
        let (mut total, mut compressed, mut last) = (0, 0, 0);
        let mut single = None;
        for sent in frames.iter_mut() {
            let chosen = deflate.frame_for(agreement, &sent.plain, &mut sent.compressed);
            total += chosen.len();
            last = chosen.len();
            compressed += u64::from(frame::is_compressed(chosen));
            single = Some(Rc::clone(chosen));
        }
        let count = frames.len() as u64;
        let bytes = match single {
            // One frame: the frame itself, shared as before.
            Some(frame) if count == 1 => frame,
            // Nothing compressed: the same bytes as the plain variant.
            _ if compressed == 0 && class.is_some() => {
                let plain = self.get(None, frames, deflate);
                Rc::clone(&plain.bytes)
            }
            _ => {
                let mut bytes = Vec::with_capacity(total);
                for sent in frames.iter_mut() {
                    bytes.extend_from_slice(deflate.frame_for(
                        agreement,
                        &sent.plain,
                        &mut sent.compressed,
                    ));
                }
                bytes.into()
            }
        };
        Variant {
            class,
            bytes,
            frames: count,
            compressed,
            last,
        }
    }
}
