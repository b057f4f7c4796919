//! Rooms shared by several loopchat processes through Redis (the `redis`
//! feature, `--redis URL`). Sans-IO: a [`Cluster`] takes the replies read from
//! its two Redis connections and the time, and gives back the commands to
//! write (`output`) and what the chat must do (`Happening`s). The sockets are
//! `server/cluster.rs`'s.
//!
//! The design (the README's "Several processes" section argues it):
//!
//! - **Two RESP2 connections** (`resp.rs`): `Sub` carries only `SUBSCRIBE`
//!   acknowledgements and room events; `Cmd` runs one Lua script per chat event
//!   (`scripts.rs`), whose replies come back in the order the commands went out
//!   (the `expect` queue). Everything queued during a loop iteration leaves in
//!   one write.
//! - **One order**: no node delivers an event before it comes back from Redis,
//!   its own members' messages included. Redis serialises the scripts, and each
//!   gives its event the room's next sequence number, so every member on every
//!   node sees one order, and history equals that order.
//! - **One history**: a room's first local member makes the node subscribe, and
//!   after the acknowledgement run the join script, which returns the history up
//!   to its own sequence number; events arriving meanwhile wait (`Syncing`) and
//!   are delivered after it, so none is both replayed and delivered live, and
//!   none is missed. A gap in the numbers is repaired from the history list
//!   (messages) or counted and logged (notices, or past the list).
//! - **One count**: `online` comes from the presence set in Redis, in the
//!   notices the scripts write. Each node refreshes its members' expire-at every
//!   third of `--presence-ttl`; a dead node's members expire and are swept with
//!   one leave notice each, by whichever script removes them.
//! - **Faults**: a missing `PING` answer (three intervals), an error reply, a
//!   malformed reply, a full queue or a socket error drop the link. The node then
//!   serves its members alone ("island": local counts, local history, messages
//!   counted), reconnects with capped, jittered backoff, resubscribes, re-registers
//!   its members and repairs what it can.

pub(crate) mod envelope;
mod link;
mod relay;
pub(crate) mod resp;
mod rooms;
mod scripts;
#[cfg(test)]
mod tests;

use crate::chat::{text_frame, SharedFrame};
use crate::metrics::ClusterFigures;
use crate::redis_url::RedisUrl;
use envelope::{Kind, Tag};
use link::random_u64;
use log::{debug, info, warn};
use resp::{encode_command, Reply, ReplyReader};
use scripts::{sha1_hex, Scripts, ROOM_TTL_SECONDS};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Where a member's frames go: its connection's slab key.
pub(crate) type ConnectionKey = usize;

/// Members per script call when a node (re-)registers a room's members.
const MEMBERS_PER_CALL: usize = 500;
/// Island posts remembered, so that the same post repaired later is not
/// delivered twice.
const ISLAND_TAGS_KEPT: usize = 10_000;
/// Leaves remembered while cut off, sent when the link is back.
const ISLAND_LEAVES_KEPT: usize = 10_000;
/// Node numbers at or above this one were drawn at random (Redis unreachable).
const RANDOM_NODE_BASE: u64 = 1 << 20;

/// What a cluster node needs to know, from `Config`.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub url: RedisUrl,
    pub ping_interval: Duration,
    pub presence_ttl: Duration,
    /// Messages kept in a room's history list in Redis (`--history`).
    pub history: usize,
    /// Rooms with more members send no member list (`--member-list-limit`).
    pub member_list: usize,
    /// Bytes waiting for or from Redis beyond which the link is dropped.
    pub max_queue: usize,
}

/// One of the node's two connections to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conn {
    Cmd,
    Sub,
}

#[derive(Debug)]
enum Link {
    /// Not connected; the next attempt at `retry_at`.
    Down {
        retry_at: Instant,
        failures: u32,
    },
    /// Connecting and handshaking since `since`; up once the node's number is
    /// claimed.
    Connecting {
        since: Instant,
        failures: u32,
    },
    Up,
}

/// Why a script was run, which says what its reply means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The room is new on this node: its history seeds the node's cache.
    Seed,
    /// Events were missed (a gap, or the node was cut off): the history
    /// delivers what it can.
    Repair,
    /// More members for a room that is synchronised already.
    Join,
    /// Presence kept alive.
    Refresh,
}

/// A reply the `Cmd` connection owes, in the order the commands went out.
#[derive(Debug)]
enum Expect {
    /// AUTH, SELECT, SCRIPT LOAD: anything but an error.
    Ok(&'static str),
    Claim,
    Sync(Rc<str>, Purpose),
    Post,
    Leave,
    Pong,
}

#[derive(Debug)]
enum RoomState {
    /// Cut off: the node serves the room alone.
    Island,
    /// `SUBSCRIBE` sent; events before its acknowledgement are not ours.
    Subscribing,
    /// The seed or repair script is out: events wait for its reply.
    Syncing {
        buffered: Vec<Vec<u8>>,
    },
    Live,
}

/// A local member: its id, connection and name.
type Local = (u64, ConnectionKey, Rc<str>);

#[derive(Debug)]
struct Room {
    state: RoomState,
    epoch: String,
    /// The last sequence number delivered here (0: none yet).
    last_seq: u64,
    /// Members on this node, joined.
    local: HashMap<u64, Local>,
    /// Members on this node waiting for their own join notice.
    pending: HashMap<u64, Local>,
    /// Everyone in the room over the cluster, while the room is small enough
    /// to list (`None`: not known or too many).
    people: Option<BTreeMap<u64, Rc<str>>>,
}

impl Room {
    fn new(state: RoomState) -> Room {
        Room {
            state,
            epoch: String::new(),
            last_seq: 0,
            local: HashMap::new(),
            pending: HashMap::new(),
            people: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.local.is_empty() && self.pending.is_empty()
    }
}

/// What the chat must do, in order.
#[derive(Debug)]
pub(crate) enum Happening {
    /// A pending member's join came back: welcome it with the cluster's count
    /// and list, then the room's history. Its join notice follows as an `Event`.
    Welcome {
        room: Rc<str>,
        key: ConnectionKey,
        online: usize,
        people: Option<Vec<(u64, Rc<str>)>>,
    },
    /// A room event for every local member, in the room's order: its JSON
    /// framed once here, for all of them.
    Event {
        room: Rc<str>,
        kind: Kind,
        id: u64,
        name: Rc<str>,
        online: usize,
        frame: SharedFrame,
    },
    /// A message from before this node had the room: history for newcomers.
    Seed { room: Rc<str>, frame: SharedFrame },
    /// The link is down: these joins complete locally, these posts are
    /// delivered locally, and the rooms count their members locally.
    Island {
        joins: Vec<(Rc<str>, ConnectionKey)>,
        posts: Vec<(Rc<str>, String)>,
    },
    /// The room has no member on this node any more: forget its cache.
    Forget { room: Rc<str> },
    /// A message for every member of relay room `room` here, verbatim.
    Relay {
        room: Rc<str>,
        binary: bool,
        payload: Vec<u8>,
    },
}

/// Posts per script call at most.
const POSTS_PER_CALL: usize = 128;

/// A room's posts queued during this loop iteration, sent as one script call:
/// their kind, member id, name and JSON.
#[derive(Debug)]
struct PostBatch {
    room: Rc<str>,
    /// The post number of the first (the rest follow in order).
    first: u64,
    posts: Vec<(Kind, u64, Rc<str>, String)>,
}

/// A post sent to Redis and not yet back.
#[derive(Debug)]
struct InFlight {
    tag: Tag,
    room: Rc<str>,
    kind: Kind,
    json: String,
}

/// A node of the cluster: the link, the rooms this node has members in, and
/// the queues between them.
pub(crate) struct Cluster {
    settings: Settings,
    link: Link,
    scripts: Scripts,
    shas: [String; 3],
    epoch_candidate: String,
    node: u64,
    next_member: u32,
    next_post: u64,
    cmd_out: Vec<u8>,
    sub_out: Vec<u8>,
    cmd_in: ReplyReader,
    sub_in: ReplyReader,
    expect: VecDeque<Expect>,
    /// When the `PING` now unanswered went out, per connection.
    cmd_ping: Option<Instant>,
    sub_ping: Option<Instant>,
    last_ping: Instant,
    next_refresh: Instant,
    rooms: HashMap<Rc<str>, Room>,
    relay_rooms: HashMap<Rc<str>, relay::RelayRoom>,
    in_flight: VecDeque<InFlight>,
    /// Posts of this iteration not yet sent (`flush_posts`).
    queued_posts: Vec<PostBatch>,
    in_flight_bytes: usize,
    island_tags: HashSet<Tag>,
    island_tag_order: VecDeque<Tag>,
    island_leaves: Vec<(Rc<str>, u64)>,
    happenings: VecDeque<Happening>,
    /// The link's state and counters, as `/metrics` shows them.
    pub metrics: ClusterFigures,
}

impl Cluster {
    pub(crate) fn new(settings: Settings, now: Instant) -> Cluster {
        let scripts = Scripts::new();
        let shas = [
            sha1_hex(&scripts.sync),
            sha1_hex(&scripts.post),
            sha1_hex(&scripts.leave),
        ];
        let limits = resp::Limits {
            max_bulk: 8 << 20,
            max_array: 1 << 20,
            max_depth: 4,
            max_reply: settings.max_queue.max(16 << 20),
        };
        let node = RANDOM_NODE_BASE + random_u64() % RANDOM_NODE_BASE;
        Cluster {
            link: Link::Down {
                retry_at: now,
                failures: 0,
            },
            scripts,
            shas,
            epoch_candidate: format!("{:x}", random_u64()),
            node,
            next_member: 0,
            next_post: 0,
            cmd_out: Vec::new(),
            sub_out: Vec::new(),
            cmd_in: ReplyReader::new(limits),
            sub_in: ReplyReader::new(limits),
            expect: VecDeque::new(),
            cmd_ping: None,
            sub_ping: None,
            last_ping: now,
            next_refresh: now + settings.presence_ttl / 3,
            rooms: HashMap::new(),
            relay_rooms: HashMap::new(),
            in_flight: VecDeque::new(),
            queued_posts: Vec::new(),
            in_flight_bytes: 0,
            island_tags: HashSet::new(),
            island_tag_order: VecDeque::new(),
            island_leaves: Vec::new(),
            happenings: VecDeque::new(),
            metrics: ClusterFigures::default(),
            settings,
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        matches!(self.link, Link::Up)
    }

    /// Whether the node has (or is making) its connections to Redis.
    pub(crate) fn is_connected(&self) -> bool {
        !matches!(self.link, Link::Down { .. })
    }

    /// Whether it is time to connect (the server then opens both sockets and
    /// calls [`Cluster::connecting`]).
    pub(crate) fn should_connect(&self, now: Instant) -> bool {
        matches!(self.link, Link::Down { retry_at, .. } if retry_at <= now)
    }

    /// When the loop must wake up for the link's sake at the latest.
    pub(crate) fn next_deadline(&self) -> Instant {
        match self.link {
            Link::Down { retry_at, .. } => retry_at,
            _ => self.last_ping + self.settings.ping_interval,
        }
    }

    /// A new member id, unique over the cluster and below 2^53: the node's
    /// number above 32 bits of count.
    pub(crate) fn member_id(&mut self) -> u64 {
        self.next_member = self.next_member.wrapping_add(1);
        (self.node << 32) | u64::from(self.next_member)
    }

    /// The bytes waiting to be written to `conn`; the server drains what it wrote.
    pub(crate) fn output(&mut self, conn: Conn) -> &mut Vec<u8> {
        match conn {
            Conn::Cmd => &mut self.cmd_out,
            Conn::Sub => &mut self.sub_out,
        }
    }

    /// Whether bytes wait to be written to `conn`, or posts to be sent.
    pub(crate) fn has_output(&self, conn: Conn) -> bool {
        match conn {
            Conn::Cmd => !self.cmd_out.is_empty() || !self.queued_posts.is_empty(),
            Conn::Sub => !self.sub_out.is_empty(),
        }
    }

    /// Whether the chat has something to do that the cluster said.
    pub(crate) fn has_happenings(&self) -> bool {
        !self.happenings.is_empty()
    }

    /// Counts one write to Redis (for `/metrics`: commands per write).
    pub(crate) fn wrote(&mut self) {
        self.metrics.writes += 1;
    }

    /// The next thing the chat must do.
    pub(crate) fn next_happening(&mut self) -> Option<Happening> {
        self.happenings.pop_front()
    }
}
