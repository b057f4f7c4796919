//! The link to Redis: connecting (AUTH, SELECT, the scripts, the node's
//! number), the replies of both connections in order, liveness (`PING` with a
//! deadline), the bound on what waits for Redis, and failing into island mode
//! with a jittered, capped backoff. Sans-IO, part of [`Cluster`].

use super::relay::relay_room_of;
use super::rooms::channel;
use super::*;

impl Cluster {
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
        self.queued_posts.clear(); // in `posts` above, delivered here
        self.happenings
            .push_back(Happening::Island { joins, posts });
        self.relay_rooms_cut_off();
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

    pub(super) fn on_cmd_reply(&mut self, reply: Reply, now: Instant) {
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

    pub(super) fn on_sub_reply(&mut self, reply: Reply, now: Instant) {
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
                match relay_room_of(&channel) {
                    Some(room) => self.on_relay_message(room, payload),
                    None => self.on_room_event(&channel, payload, now),
                }
            }
            (b"subscribe", Some(Reply::Bulk(channel)), _) => match relay_room_of(&channel) {
                Some(room) => self.on_relay_subscribed(room),
                None => self.on_subscribed(&channel),
            },
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
    pub(super) fn link_up(&mut self, _now: Instant) {
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
        args.extend(self.relay_channels().map(String::into_bytes));
        for (name, room) in &mut self.rooms {
            room.state = RoomState::Subscribing;
            args.push(channel(name).into_bytes());
        }
        if args.len() > 1 {
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            self.command(Conn::Sub, &args);
        }
    }

    /// Queues a command; the posts queued before it go first, so that the
    /// commands keep the order they were asked in.
    pub(super) fn command(&mut self, conn: Conn, args: &[&[u8]]) {
        if conn == Conn::Cmd {
            self.flush_posts();
        }
        self.send(conn, args);
    }

    pub(super) fn send(&mut self, conn: Conn, args: &[&[u8]]) {
        self.metrics.commands += 1;
        encode_command(self.output(conn), args);
    }

    /// Drops the link when what waits for or from Redis passes `--redis-max-queue`.
    pub(super) fn check_queue(&mut self, now: Instant) {
        let buffered: usize = self
            .rooms
            .values()
            .map(|r| match &r.state {
                RoomState::Syncing { buffered } => buffered.iter().map(Vec::len).sum(),
                _ => 0,
            })
            .sum::<usize>()
            + self
                .relay_rooms
                .values()
                .map(|r| r.held_bytes())
                .sum::<usize>();
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

pub(super) fn remember(set: &mut HashSet<Tag>, order: &mut VecDeque<Tag>, tag: Tag) {
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
pub(super) fn backoff(failures: u32) -> Duration {
    let base = 100u64
        .saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(5_000);
    let jitter = random_u64() % (base / 2 + 1);
    Duration::from_millis(base - base / 4 + jitter)
}
/// A random number from the standard library's per-process hash keys.
pub(super) fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}
