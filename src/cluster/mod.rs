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
pub(crate) mod resp;
mod scripts;

use crate::redis_url::RedisUrl;
use envelope::{Kind, Tag};
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
    /// A room event for every local member, in the room's order.
    Event {
        room: Rc<str>,
        kind: Kind,
        id: u64,
        name: Rc<str>,
        online: usize,
        json: String,
    },
    /// A message from before this node had the room: history for newcomers.
    Seed { room: Rc<str>, json: String },
    /// The link is down: these joins complete locally, these posts are
    /// delivered locally, and the rooms count their members locally.
    Island {
        joins: Vec<(Rc<str>, ConnectionKey)>,
        posts: Vec<(Rc<str>, String)>,
    },
    /// The room has no member on this node any more: forget its cache.
    Forget { room: Rc<str> },
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone)]
pub(crate) struct ClusterMetrics {
    pub link_up: bool,
    pub link_ups: u64,
    pub link_failures: u64,
    pub posts: u64,
    pub events_received: u64,
    pub gaps_detected: u64,
    pub gaps_repaired: u64,
    pub gaps_unrepaired: u64,
    pub island_messages: u64,
    pub bad_replies: u64,
    pub commands: u64,
    pub writes: u64,
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
    in_flight: VecDeque<InFlight>,
    in_flight_bytes: usize,
    island_tags: HashSet<Tag>,
    island_tag_order: VecDeque<Tag>,
    island_leaves: Vec<(Rc<str>, u64)>,
    happenings: VecDeque<Happening>,
    pub metrics: ClusterMetrics,
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
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            island_tags: HashSet::new(),
            island_tag_order: VecDeque::new(),
            island_leaves: Vec::new(),
            happenings: VecDeque::new(),
            metrics: ClusterMetrics::default(),
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

    /// Counts one write to Redis (for `/metrics`: commands per write).
    pub(crate) fn wrote(&mut self) {
        self.metrics.writes += 1;
    }

    /// The next thing the chat must do.
    pub(crate) fn next_happening(&mut self) -> Option<Happening> {
        self.happenings.pop_front()
    }

    /// The server opened both sockets: queue the handshake.
    pub(crate) fn connecting(&mut self, now: Instant) {
        let failures = match self.link {
            Link::Down { failures, .. } => failures,
            _ => 0,
        };
        self.link = Link::Connecting {
            since: now,
            failures,
        };
        self.cmd_in.clear();
        self.sub_in.clear();
        self.cmd_out.clear();
        self.sub_out.clear();
        self.expect.clear();
        let url = self.settings.url.clone();
        if let Some(password) = &url.password {
            for conn in [Conn::Cmd, Conn::Sub] {
                let mut args: Vec<&[u8]> = vec![b"AUTH"];
                if !url.user.is_empty() {
                    args.push(url.user.as_bytes());
                }
                args.push(password.as_bytes());
                self.command(conn, &args);
            }
            self.expect.push_back(Expect::Ok("AUTH"));
        }
        if url.db != 0 {
            self.command(Conn::Cmd, &[b"SELECT", url.db.to_string().as_bytes()]);
            self.expect.push_back(Expect::Ok("SELECT"));
        }
        for source in [
            self.scripts.sync.clone(),
            self.scripts.post.clone(),
            self.scripts.leave.clone(),
        ] {
            self.command(Conn::Cmd, &[b"SCRIPT", b"LOAD", source.as_bytes()]);
            self.expect.push_back(Expect::Ok("SCRIPT LOAD"));
        }
        let mine = if self.node >= RANDOM_NODE_BASE && self.next_member == 0 {
            0 // no id handed out yet: take a counted number
        } else {
            self.node
        };
        self.command(
            Conn::Cmd,
            &[
                b"EVAL",
                scripts::CLAIM_NODE.as_bytes(),
                b"1",
                b"lc:nodes",
                mine.to_string().as_bytes(),
            ],
        );
        self.expect.push_back(Expect::Claim);
        self.cmd_ping = None;
        self.sub_ping = None;
        self.last_ping = now;
    }

    /// The link failed: from now on the node serves its members alone, and
    /// tries again after a backoff. The server closes both sockets.
    pub(crate) fn fail(&mut self, reason: &str, now: Instant) {
        let failures = match self.link {
            Link::Down { .. } => return,
            Link::Connecting { failures, .. } => failures + 1,
            Link::Up => 1,
        };
        let was_up = self.metrics.link_up;
        self.metrics.link_up = false;
        self.metrics.link_failures += 1;
        let delay = backoff(failures);
        if was_up {
            warn!(
                "redis link to {} lost: {reason}; serving this node's members alone, retrying in {} ms",
                self.settings.url,
                delay.as_millis()
            );
        } else if failures == 1 || failures % 10 == 0 {
            warn!(
                "redis at {} unreachable: {reason}; serving this node's members alone, retrying in {} ms (attempt {failures})",
                self.settings.url,
                delay.as_millis()
            );
        }
        self.link = Link::Down {
            retry_at: now + delay,
            failures,
        };
        self.cmd_out.clear();
        self.sub_out.clear();
        self.cmd_in.clear();
        self.sub_in.clear();
        self.expect.clear();
        let mut joins = Vec::new();
        for (name, room) in &mut self.rooms {
            room.state = RoomState::Island;
            for (id, member) in room.pending.drain() {
                joins.push((Rc::clone(name), member.1));
                room.local.insert(id, member);
            }
        }
        let mut posts = Vec::new();
        for post in self.in_flight.drain(..) {
            if post.kind == Kind::Message {
                self.metrics.island_messages += 1;
                remember(&mut self.island_tags, &mut self.island_tag_order, post.tag);
                posts.push((post.room, post.json));
            }
        }
        self.in_flight_bytes = 0;
        self.happenings
            .push_back(Happening::Island { joins, posts });
    }

    /// Timers: the liveness pings, the connect deadline, presence refresh.
    pub(crate) fn tick(&mut self, now: Instant) {
        let interval = self.settings.ping_interval;
        let overdue = |sent: Option<Instant>| sent.is_some_and(|t| now >= t + interval * 3);
        match self.link {
            Link::Down { .. } => return,
            Link::Connecting { since, .. } => {
                if now >= since + (interval * 3).max(Duration::from_secs(1)) {
                    self.fail("no answer to the handshake in time", now);
                }
                return;
            }
            Link::Up => {}
        }
        if overdue(self.cmd_ping) || overdue(self.sub_ping) {
            return self.fail("no answer to PING within 3 ping intervals", now);
        }
        if now >= self.last_ping + interval {
            self.last_ping = now;
            if self.cmd_ping.is_none() {
                self.cmd_ping = Some(now);
                self.command(Conn::Cmd, &[b"PING"]);
                self.expect.push_back(Expect::Pong);
            }
            if self.sub_ping.is_none() {
                self.sub_ping = Some(now);
                self.command(Conn::Sub, &[b"PING"]);
            }
        }
        if now >= self.next_refresh {
            self.next_refresh = now + self.settings.presence_ttl / 3;
            let live: Vec<Rc<str>> = self
                .rooms
                .iter()
                .filter(|(_, r)| matches!(r.state, RoomState::Live) && !r.local.is_empty())
                .map(|(name, _)| Rc::clone(name))
                .collect();
            for room in live {
                self.register(&room, Purpose::Refresh, None);
            }
        }
        self.check_queue(now);
    }

    /// Bytes read from `conn`: handled reply by reply.
    pub(crate) fn on_bytes(&mut self, conn: Conn, bytes: &[u8], now: Instant) {
        match conn {
            Conn::Cmd => self.cmd_in.extend(bytes),
            Conn::Sub => self.sub_in.extend(bytes),
        }
        while self.is_connected() {
            let reader = match conn {
                Conn::Cmd => &mut self.cmd_in,
                Conn::Sub => &mut self.sub_in,
            };
            match reader.next_reply() {
                Ok(Some(reply)) => match conn {
                    Conn::Cmd => self.on_cmd_reply(reply, now),
                    Conn::Sub => self.on_sub_reply(reply, now),
                },
                Ok(None) => break,
                Err(e) => {
                    self.metrics.bad_replies += 1;
                    return self.fail(&format!("bad reply from redis: {e}"), now);
                }
            }
        }
        self.check_queue(now);
    }

    // ---- the chat's side ----

    /// A member asks to join `room`. `true`: it waits for its join notice to
    /// come back from Redis (a `Welcome` follows); `false`: the link is down,
    /// and the server joins it locally.
    pub(crate) fn join(
        &mut self,
        room: &Rc<str>,
        key: ConnectionKey,
        id: u64,
        name: &Rc<str>,
    ) -> bool {
        let up = self.is_up();
        let entry = self.rooms.entry(Rc::clone(room)).or_insert_with(|| {
            Room::new(if up {
                RoomState::Subscribing
            } else {
                RoomState::Island
            })
        });
        let member = (id, key, Rc::clone(name));
        match entry.state {
            RoomState::Island => {
                entry.local.insert(id, member);
                return false;
            }
            RoomState::Subscribing => {
                // The first: subscribe; the join script runs after the ack.
                let first = entry.is_empty();
                entry.pending.insert(id, member);
                if first {
                    self.command(Conn::Sub, &[b"SUBSCRIBE", channel(room).as_bytes()]);
                }
            }
            RoomState::Syncing { .. } | RoomState::Live => {
                entry.pending.insert(id, member.clone());
                self.register(room, Purpose::Join, Some(&[member]));
            }
        }
        true
    }

    /// Posts a message or a rename to `room`. `false`: the link is down, and
    /// the server delivers it locally (a message is then counted).
    pub(crate) fn post(
        &mut self,
        room: &str,
        kind: Kind,
        id: u64,
        name: &str,
        json: String,
    ) -> bool {
        let room = match self.rooms.get_key_value(room) {
            Some((room, r)) if !matches!(r.state, RoomState::Island) => Rc::clone(room),
            _ => Rc::from(room),
        };
        let linked = self
            .rooms
            .get(&room)
            .is_some_and(|r| !matches!(r.state, RoomState::Island));
        if !self.is_up() || !linked {
            if kind == Kind::Message {
                self.metrics.island_messages += 1;
            }
            return false;
        }
        self.next_post += 1;
        let tag = Tag {
            node: self.node,
            post: self.next_post,
        };
        let tag_text = tag.to_string();
        let keep = self.settings.history.to_string();
        let sha = self.shas[1].clone();
        let (keys, epoch) = (keys(&room), self.epoch_candidate.clone());
        self.command(
            Conn::Cmd,
            &[
                b"EVALSHA",
                sha.as_bytes(),
                b"4",
                keys[0].as_bytes(),
                keys[1].as_bytes(),
                keys[2].as_bytes(),
                keys[3].as_bytes(),
                channel(&room).as_bytes(),
                epoch.as_bytes(),
                tag_text.as_bytes(),
                kind.letter().as_bytes(),
                id.to_string().as_bytes(),
                name.as_bytes(),
                json.as_bytes(),
                keep.as_bytes(),
                ROOM_TTL_SECONDS.to_string().as_bytes(),
            ],
        );
        self.expect.push_back(Expect::Post);
        self.metrics.posts += 1;
        self.in_flight_bytes += json.len();
        self.in_flight.push_back(InFlight {
            tag,
            room,
            kind,
            json,
        });
        true
    }

    /// Member `id` leaves `room`. `true`: its leave notice will come back from
    /// Redis; `false`: the link is down, and the server announces it locally.
    /// A room left without members is unsubscribed and forgotten.
    pub(crate) fn leave(&mut self, room: &Rc<str>, id: u64) -> bool {
        let Some(entry) = self.rooms.get_mut(room) else {
            return false;
        };
        entry.local.remove(&id);
        entry.pending.remove(&id);
        let emptied = entry.is_empty();
        let island = matches!(entry.state, RoomState::Island) || !self.is_up();
        if emptied {
            // Its posts in flight concern nobody here any more.
            self.rooms.remove(room);
            let before = self.in_flight.len();
            self.in_flight.retain(|post| &post.room != room);
            if self.in_flight.len() != before {
                self.in_flight_bytes = self.in_flight.iter().map(|p| p.json.len()).sum();
            }
        }
        if island {
            if self.island_leaves.len() < ISLAND_LEAVES_KEPT {
                self.island_leaves.push((Rc::clone(room), id));
            }
            return false;
        }
        self.send_leave(room, id);
        if emptied {
            self.command(Conn::Sub, &[b"UNSUBSCRIBE", channel(room).as_bytes()]);
            self.happenings.push_back(Happening::Forget {
                room: Rc::clone(room),
            });
        }
        true
    }

    // ---- replies ----

    fn on_cmd_reply(&mut self, reply: Reply, now: Instant) {
        let Some(expect) = self.expect.pop_front() else {
            self.metrics.bad_replies += 1;
            return self.fail("a reply from redis nobody asked for", now);
        };
        if let Reply::Error(text) = &reply {
            self.metrics.bad_replies += 1;
            let text = String::from_utf8_lossy(text).into_owned();
            let what = match &expect {
                Expect::Ok(command) => command,
                Expect::Claim => "the node-number script",
                Expect::Sync(..) => "the sync script",
                Expect::Post => "the post script",
                Expect::Leave => "the leave script",
                Expect::Pong => "PING",
            };
            return self.fail(&format!("redis refused {what}: {text}"), now);
        }
        match expect {
            Expect::Ok(_) | Expect::Post | Expect::Leave => {}
            Expect::Pong => self.cmd_ping = None,
            Expect::Claim => match reply {
                Reply::Integer(n) if n > 0 && (n as u64) < 2 * RANDOM_NODE_BASE => {
                    if self.next_member == 0 || self.node < RANDOM_NODE_BASE {
                        self.node = n as u64;
                    }
                    self.link_up(now);
                }
                other => {
                    self.metrics.bad_replies += 1;
                    self.fail(&format!("unexpected node number {other:?}"), now)
                }
            },
            Expect::Sync(room, purpose) => self.on_synced(&room, purpose, reply, now),
        }
    }

    fn on_sub_reply(&mut self, reply: Reply, now: Instant) {
        let Reply::Array(items) = reply else {
            match reply {
                Reply::Simple(s) if s == b"PONG" => self.sub_ping = None,
                Reply::Simple(_) => {} // +OK to AUTH
                other => {
                    self.metrics.bad_replies += 1;
                    self.fail(
                        &format!("unexpected reply on the subscriber: {other:?}"),
                        now,
                    );
                }
            }
            return;
        };
        let mut items = items.into_iter();
        let (Some(Reply::Bulk(kind)), second) = (items.next(), items.next()) else {
            self.metrics.bad_replies += 1;
            return self.fail("malformed pub/sub reply", now);
        };
        match (kind.as_slice(), second, items.next()) {
            (b"message", Some(Reply::Bulk(channel)), Some(Reply::Bulk(payload))) => {
                self.on_room_event(&channel, payload, now)
            }
            (b"subscribe", Some(Reply::Bulk(channel)), _) => self.on_subscribed(&channel),
            (b"unsubscribe", _, _) => {}
            (b"pong", _, _) => self.sub_ping = None,
            _ => {
                self.metrics.bad_replies += 1;
                self.fail("unexpected pub/sub reply", now);
            }
        }
    }

    /// The node's number is claimed: the link is up. Subscribe every room with
    /// members here, and send the leaves that happened while cut off.
    fn link_up(&mut self, _now: Instant) {
        let reconnect = self.metrics.link_ups > 0 || self.metrics.link_failures > 0;
        self.link = Link::Up;
        self.metrics.link_up = true;
        self.metrics.link_ups += 1;
        info!(
            "redis link to {} up (node {}){}",
            self.settings.url,
            self.node,
            if reconnect {
                ": resubscribing and re-registering this node's members"
            } else {
                ""
            }
        );
        // Leaves from rooms still here wait for their room's sync (so that
        // their notices come after the repair, not inside its range).
        let leaves = std::mem::take(&mut self.island_leaves);
        for (room, id) in leaves {
            if self.rooms.contains_key(&room) {
                self.island_leaves.push((room, id));
            } else {
                self.send_leave(&room, id);
            }
        }
        let mut args: Vec<Vec<u8>> = vec![b"SUBSCRIBE".to_vec()];
        for (name, room) in &mut self.rooms {
            room.state = RoomState::Subscribing;
            args.push(channel(name).into_bytes());
        }
        if args.len() > 1 {
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            self.command(Conn::Sub, &args);
        }
    }

    /// `SUBSCRIBE` acknowledged: run the script that registers the room's
    /// members here and brings its history.
    fn on_subscribed(&mut self, channel: &[u8]) {
        let Some(room) = room_of(channel) else {
            return;
        };
        let Some((name, entry)) = self.rooms.get_key_value(room) else {
            return;
        };
        if !matches!(entry.state, RoomState::Subscribing) {
            return;
        }
        let name = Rc::clone(name);
        let purpose = if entry.last_seq == 0 {
            Purpose::Seed
        } else {
            Purpose::Repair
        };
        if let Some(entry) = self.rooms.get_mut(&name) {
            entry.state = RoomState::Syncing {
                buffered: Vec::new(),
            };
        }
        self.register(&name, purpose, None);
        let (theirs, others) = std::mem::take(&mut self.island_leaves)
            .into_iter()
            .partition(|(room, _)| *room == name);
        self.island_leaves = others;
        for (room, id) in theirs {
            self.send_leave(&room, id);
        }
    }

    /// Runs the sync script for `room` with `members` (or all of the room's
    /// members on this node), in calls of at most `MEMBERS_PER_CALL`; only the
    /// first asks for history (`Seed`, `Repair`).
    fn register(&mut self, room: &Rc<str>, purpose: Purpose, members: Option<&[Local]>) {
        let Some(entry) = self.rooms.get(room) else {
            return;
        };
        let mut everyone: Vec<Local>;
        let members = match members {
            Some(members) => members,
            None => {
                everyone = entry
                    .local
                    .values()
                    .chain(entry.pending.values())
                    .cloned()
                    .collect();
                everyone.sort_unstable_by_key(|m| m.0); // ids grow with arrivals here
                &everyone
            }
        };
        let history_after = match purpose {
            Purpose::Seed => "0".to_string(),
            Purpose::Repair => entry.last_seq.to_string(),
            Purpose::Join | Purpose::Refresh => "-1".to_string(),
        };
        let mut chunks: Vec<&[Local]> = members.chunks(MEMBERS_PER_CALL).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let (sha, keys, channel) = (self.shas[0].clone(), keys(room), channel(room));
        let ttl_ms = self.settings.presence_ttl.as_millis().to_string();
        let list_limit = self.settings.member_list.to_string();
        let tag = Tag {
            node: self.node,
            post: 0,
        }
        .to_string();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let ids: Vec<String> = chunk.iter().map(|m| m.0.to_string()).collect();
            let mut args: Vec<&[u8]> = vec![b"EVALSHA", sha.as_bytes(), b"4"];
            args.extend(keys.iter().map(|k| k.as_bytes()));
            args.extend([
                channel.as_bytes(),
                self.epoch_candidate.as_bytes(),
                tag.as_bytes(),
                ttl_ms.as_bytes(),
                if i == 0 {
                    history_after.as_bytes()
                } else {
                    b"-1"
                },
                list_limit.as_bytes(),
            ]);
            for (member, id) in chunk.iter().zip(&ids) {
                args.push(id.as_bytes());
                args.push(member.2.as_bytes());
            }
            let room_ttl = ROOM_TTL_SECONDS.to_string();
            args.push(room_ttl.as_bytes());
            let args: Vec<Vec<u8>> = args.into_iter().map(<[u8]>::to_vec).collect();
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            self.command(Conn::Cmd, &args);
            let purpose = if i == 0 { purpose } else { Purpose::Refresh };
            self.expect
                .push_back(Expect::Sync(Rc::clone(room), purpose));
        }
    }

    fn send_leave(&mut self, room: &Rc<str>, id: u64) {
        let (sha, keys, epoch) = (
            self.shas[2].clone(),
            keys(room),
            self.epoch_candidate.clone(),
        );
        let tag = Tag {
            node: self.node,
            post: 0,
        }
        .to_string();
        self.command(
            Conn::Cmd,
            &[
                b"EVALSHA",
                sha.as_bytes(),
                b"4",
                keys[0].as_bytes(),
                keys[1].as_bytes(),
                keys[2].as_bytes(),
                keys[3].as_bytes(),
                channel(room).as_bytes(),
                epoch.as_bytes(),
                tag.as_bytes(),
                id.to_string().as_bytes(),
                ROOM_TTL_SECONDS.to_string().as_bytes(),
            ],
        );
        self.expect.push_back(Expect::Leave);
    }

    /// The sync script's reply `{epoch, seq_before, history, people}`.
    fn on_synced(&mut self, room: &Rc<str>, purpose: Purpose, reply: Reply, now: Instant) {
        if !matches!(purpose, Purpose::Seed | Purpose::Repair) {
            return;
        }
        let Some(Synced {
            epoch,
            seq_before,
            history,
            people,
        }) = Synced::read(reply)
        else {
            self.metrics.bad_replies += 1;
            return self.fail("malformed reply to the sync script", now);
        };
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        let RoomState::Syncing { buffered } = std::mem::replace(&mut entry.state, RoomState::Live)
        else {
            return;
        };
        let mut purpose = purpose;
        if !entry.epoch.is_empty() && entry.epoch != epoch && entry.last_seq > 0 {
            self.metrics.gaps_unrepaired += 1;
            warn!("room {room:?}: redis lost its history (new epoch); the history before is gone");
            entry.last_seq = 0;
            purpose = Purpose::Seed; // what the new epoch has is history, not news
        }
        debug!(
            "room {room:?}: {purpose:?} synced at {seq_before} (had {}), {} history entries, {} waiting",
            entry.last_seq,
            history.len(),
            buffered.len()
        );
        entry.epoch = epoch;
        entry.people = people;
        let had = entry.last_seq;
        // The history's messages and the events that waited, in one order.
        let mut events: Vec<(u64, Vec<u8>, bool)> = Vec::new();
        for (bytes, from_history) in history
            .into_iter()
            .map(|b| (b, true))
            .chain(buffered.into_iter().map(|b| (b, false)))
        {
            match envelope::parse(&bytes) {
                Ok(e) if from_history && e.kind != Kind::Message => {}
                Ok(e) => events.push((e.seq, bytes, from_history)),
                Err(_) => self.metrics.bad_replies += 1,
            }
        }
        events.sort_by_key(|(seq, _, from_history)| (*seq, !*from_history));
        events.dedup_by_key(|(seq, _, _)| *seq);
        let mut recovered = 0;
        let mut later = Vec::new();
        for (seq, bytes, from_history) in events {
            if seq <= had {
                continue;
            }
            if seq > seq_before {
                later.push(bytes);
            } else if purpose == Purpose::Seed {
                // The room's past: messages for newcomers; its notices are in
                // the member list the reply brought.
                if let (true, Ok(e)) = (from_history, envelope::parse(&bytes)) {
                    self.happenings.push_back(Happening::Seed {
                        room: Rc::clone(room),
                        json: e.json.to_string(),
                    });
                }
            } else if let Ok(e) = envelope::parse(&bytes) {
                recovered += 1;
                if let Some(entry) = self.rooms.get_mut(room) {
                    entry.last_seq = seq;
                }
                self.deliver(room, &e);
            }
        }
        let missed = seq_before.saturating_sub(had);
        if purpose == Purpose::Repair && missed > 0 {
            if recovered == missed {
                self.metrics.gaps_repaired += 1;
                info!("room {room:?}: {missed} missed events repaired from the history");
            } else {
                self.metrics.gaps_unrepaired += 1;
                warn!(
                    "room {room:?}: {} of {missed} missed events could not be repaired (notices, or past the history)",
                    missed - recovered
                );
            }
        }
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.last_seq = entry.last_seq.max(seq_before);
        }
        for payload in later {
            self.on_live_event(room, &payload, now);
        }
    }

    /// An event published on a room's channel.
    fn on_room_event(&mut self, channel: &[u8], payload: Vec<u8>, now: Instant) {
        self.metrics.events_received += 1;
        let Some((name, entry)) = room_of(channel).and_then(|r| self.rooms.get_key_value(r)) else {
            return; // not a room of ours (unsubscribed meanwhile)
        };
        if matches!(entry.state, RoomState::Syncing { .. } | RoomState::Live) {
            let name = Rc::clone(name);
            self.on_live_event(&name, &payload, now);
        } // else: before our subscription counts, or cut off
    }

    /// An event for a synchronised room: delivered in order, a duplicate
    /// dropped, a gap repaired.
    fn on_live_event(&mut self, room: &Rc<str>, payload: &[u8], now: Instant) {
        let e = match envelope::parse(payload) {
            Ok(e) => e,
            Err(error) => {
                self.metrics.bad_replies += 1;
                warn!("room {room:?}: {error}; dropped");
                return;
            }
        };
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        if let RoomState::Syncing { buffered } = &mut entry.state {
            buffered.push(payload.to_vec());
            return;
        }
        if entry.epoch != e.epoch {
            if entry.last_seq > 0 {
                self.metrics.gaps_unrepaired += 1;
                warn!(
                    "room {room:?}: redis lost its state (new epoch); continuing from the new one"
                );
            }
            entry.epoch = e.epoch.to_string();
            entry.last_seq = e.seq.saturating_sub(1);
        }
        if e.seq <= entry.last_seq {
            debug!(
                "room {room:?}: event {} dropped (had {})",
                e.seq, entry.last_seq
            );
            return; // delivered already
        }
        if e.seq > entry.last_seq + 1 {
            self.metrics.gaps_detected += 1;
            debug!(
                "room {room:?}: gap before {} (had {})",
                e.seq, entry.last_seq
            );
            entry.state = RoomState::Syncing {
                buffered: vec![payload.to_vec()],
            };
            let _ = now;
            self.register(room, Purpose::Repair, Some(&[]));
            return;
        }
        entry.last_seq = e.seq;
        self.deliver(room, &e);
    }

    /// Hands one event to the chat, completing the join it announces if the
    /// member is waiting here.
    fn deliver(&mut self, room: &Rc<str>, e: &envelope::Envelope) {
        if e.tag.node == self.node && e.tag.post > 0 {
            if let Some(i) = self.in_flight.iter().position(|p| p.tag == e.tag) {
                if let Some(post) = self.in_flight.remove(i) {
                    self.in_flight_bytes -= post.json.len();
                }
            }
            if self.island_tags.contains(&e.tag) {
                return; // delivered here while cut off
            }
        }
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        let name: Rc<str> = e.name.into();
        let online = usize::try_from(e.online).unwrap_or(usize::MAX);
        let list_limit = self.settings.member_list;
        match e.kind {
            Kind::Join => {
                if let Some(people) = &mut entry.people {
                    people.insert(e.id, Rc::clone(&name));
                }
                if let Some(member) = entry.pending.remove(&e.id) {
                    let key = member.1;
                    entry.local.insert(e.id, member);
                    let people = entry
                        .people
                        .as_ref()
                        .filter(|_| online <= list_limit)
                        .map(|p| p.iter().map(|(id, name)| (*id, Rc::clone(name))).collect());
                    self.happenings.push_back(Happening::Welcome {
                        room: Rc::clone(room),
                        key,
                        online,
                        people,
                    });
                }
            }
            Kind::Leave => {
                if let Some(people) = &mut entry.people {
                    people.remove(&e.id);
                }
            }
            Kind::Rename => {
                if let Some(name_now) = entry.people.as_mut().and_then(|p| p.get_mut(&e.id)) {
                    *name_now = Rc::clone(&name);
                }
            }
            Kind::Message => {}
        }
        // A room that grew past listing forgets its list; one that shrank
        // back keeps `None` until the node re-seeds it.
        if online > list_limit.saturating_mul(2) {
            entry.people = None;
        }
        self.happenings.push_back(Happening::Event {
            room: Rc::clone(room),
            kind: e.kind,
            id: e.id,
            name,
            online,
            json: e.json.to_string(),
        });
    }

    // ---- plumbing ----

    fn command(&mut self, conn: Conn, args: &[&[u8]]) {
        self.metrics.commands += 1;
        encode_command(self.output(conn), args);
    }

    /// Drops the link when what waits for or from Redis passes `--redis-max-queue`.
    fn check_queue(&mut self, now: Instant) {
        let buffered: usize = self
            .rooms
            .values()
            .map(|r| match &r.state {
                RoomState::Syncing { buffered } => buffered.iter().map(Vec::len).sum(),
                _ => 0,
            })
            .sum();
        let total = self.cmd_out.len()
            + self.sub_out.len()
            + self.cmd_in.buffered()
            + self.sub_in.buffered()
            + self.in_flight_bytes
            + buffered;
        if self.is_connected() && total > self.settings.max_queue {
            self.fail(
                &format!(
                    "{total} bytes wait for redis, past --redis-max-queue {}",
                    self.settings.max_queue
                ),
                now,
            );
        }
    }
}

/// The sync script's reply.
struct Synced {
    epoch: String,
    seq_before: u64,
    history: Vec<Vec<u8>>,
    people: Option<BTreeMap<u64, Rc<str>>>,
}

impl Synced {
    fn read(reply: Reply) -> Option<Synced> {
        let Reply::Array(items) = reply else {
            return None;
        };
        let mut items = items.into_iter();
        let epoch = match items.next()? {
            Reply::Bulk(e) => String::from_utf8(e).ok()?,
            _ => return None,
        };
        let seq_before = match items.next()? {
            Reply::Integer(n) => u64::try_from(n).ok()?,
            _ => return None,
        };
        let history = match items.next()? {
            Reply::Array(entries) => entries
                .into_iter()
                .map(|e| match e {
                    Reply::Bulk(bytes) => Some(bytes),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?,
            _ => return None,
        };
        let people = match items.next() {
            Some(Reply::Array(flat)) => {
                let mut people = BTreeMap::new();
                let mut flat = flat.into_iter();
                while let (Some(Reply::Bulk(id)), Some(Reply::Bulk(name))) =
                    (flat.next(), flat.next())
                {
                    let id = std::str::from_utf8(&id).ok()?.parse().ok()?;
                    people.insert(id, String::from_utf8(name).ok()?.into());
                }
                Some(people)
            }
            _ => None,
        };
        Some(Synced {
            epoch,
            seq_before,
            history,
            people,
        })
    }
}

/// The channel of `room`.
fn channel(room: &str) -> String {
    format!("lc:{{{room}}}")
}

/// The room a channel belongs to.
fn room_of(channel: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(channel).ok()?;
    text.strip_prefix("lc:{")?.strip_suffix('}')
}

/// The keys of `room`, as the scripts take them.
fn keys(room: &str) -> [String; 4] {
    ["meta", "hist", "pz", "pn"].map(|k| format!("lc:{{{room}}}:{k}"))
}

fn remember(set: &mut HashSet<Tag>, order: &mut VecDeque<Tag>, tag: Tag) {
    if set.insert(tag) {
        order.push_back(tag);
    }
    while order.len() > ISLAND_TAGS_KEPT {
        if let Some(old) = order.pop_front() {
            set.remove(&old);
        }
    }
}

/// 100 ms doubling to 5 s, each ±25 %.
fn backoff(failures: u32) -> Duration {
    let base = 100u64
        .saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(5_000);
    let jitter = random_u64() % (base / 2 + 1);
    Duration::from_millis(base - base / 4 + jitter)
}

/// A random number from the standard library's per-process hash keys.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests;
