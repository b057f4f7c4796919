//! Each room of a node: subscribing, the sync script (join, re-registration,
//! refresh, repair), live events in sequence order, gaps, and the events handed
//! to the chat. Sans-IO, part of [`Cluster`].

use super::*;

impl Cluster {
    /// The node shuts down: its members leave every room now, each with its
    /// leave notice, rather than when their presence expires.
    pub(crate) fn leave_everything(&mut self) {
        let rooms = std::mem::take(&mut self.rooms);
        if !self.is_up() {
            return;
        }
        for (name, room) in rooms {
            let mut ids: Vec<u64> = room
                .local
                .keys()
                .chain(room.pending.keys())
                .copied()
                .collect();
            ids.sort_unstable();
            for id in ids {
                self.send_leave(&name, id);
            }
        }
    }

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
            Some((room, r)) if self.is_up() && !matches!(r.state, RoomState::Island) => {
                Rc::clone(room)
            }
            _ => {
                if kind == Kind::Message {
                    self.metrics.island_messages += 1;
                }
                return false;
            }
        };
        self.next_post += 1;
        let tag = Tag {
            node: self.node,
            post: self.next_post,
        };
        self.metrics.posts += 1;
        self.in_flight_bytes += json.len();
        self.in_flight.push_back(InFlight {
            tag,
            room: Rc::clone(&room),
            kind,
            json: json.clone(),
        });
        // Sent with the room's other posts of this iteration (`flush_posts`).
        let post = (kind, id, Rc::from(name), json);
        match self.queued_posts.last_mut() {
            Some(batch) if batch.room == room && batch.posts.len() < POSTS_PER_CALL => {
                batch.posts.push(post);
            }
            _ => self.queued_posts.push(PostBatch {
                room,
                first: tag.post,
                posts: vec![post],
            }),
        }
        true
    }

    /// Sends the posts queued so far, one script call per room's run of posts
    /// (their JSON is in `in_flight`, in the same order). Called before any
    /// other command, so that the commands keep the order they were asked in,
    /// and at the end of the loop's Redis step.
    pub(crate) fn flush_posts(&mut self) {
        let batches = std::mem::take(&mut self.queued_posts);
        if batches.is_empty() {
            return;
        }
        let (sha, epoch) = (self.shas[1].clone(), self.epoch_candidate.clone());
        let (node, keep) = (self.node.to_string(), self.settings.history.to_string());
        let room_ttl = ROOM_TTL_SECONDS.to_string();
        for batch in batches {
            let (keys, channel) = (keys(&batch.room), channel(&batch.room));
            let (first, count) = (batch.first.to_string(), batch.posts.len().to_string());
            let ids: Vec<String> = batch.posts.iter().map(|p| p.1.to_string()).collect();
            let mut args: Vec<&[u8]> = vec![b"EVALSHA", sha.as_bytes(), b"4"];
            args.extend(keys.iter().map(|k| k.as_bytes()));
            args.extend([
                channel.as_bytes(),
                epoch.as_bytes(),
                node.as_bytes(),
                first.as_bytes(),
                count.as_bytes(),
                keep.as_bytes(),
            ]);
            for ((kind, _, name, json), id) in batch.posts.iter().zip(&ids) {
                args.extend([
                    kind.letter().as_bytes(),
                    id.as_bytes(),
                    name.as_bytes(),
                    json.as_bytes(),
                ]);
            }
            args.push(room_ttl.as_bytes());
            self.send(Conn::Cmd, &args);
            self.expect.push_back(Expect::Post);
        }
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
        if emptied {
            // The node's cache of the room would go stale (and, kept, would
            // be replayed again with Redis's history by the next seed).
            self.happenings.push_back(Happening::Forget {
                room: Rc::clone(room),
            });
        }
        if island {
            if self.island_leaves.len() < ISLAND_LEAVES_KEPT {
                self.island_leaves.push((Rc::clone(room), id));
            }
            return false;
        }
        // (`command` sends the member's posts still queued first.)
        self.send_leave(room, id);
        if emptied {
            self.command(Conn::Sub, &[b"UNSUBSCRIBE", channel(room).as_bytes()]);
        }
        true
    }

    /// `SUBSCRIBE` acknowledged: run the script that registers the room's
    /// members here and brings its history.
    pub(super) fn on_subscribed(&mut self, channel: &[u8]) {
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
    pub(super) fn register(&mut self, room: &Rc<str>, purpose: Purpose, members: Option<&[Local]>) {
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

    pub(super) fn send_leave(&mut self, room: &Rc<str>, id: u64) {
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
    pub(super) fn on_synced(
        &mut self,
        room: &Rc<str>,
        purpose: Purpose,
        reply: Reply,
        now: Instant,
    ) {
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
                        frame: text_frame(e.json),
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
    /// A `PUBLISH` carries one envelope (a notice) or a post script's batch
    /// of them (`envelope::split_batch`).
    pub(super) fn on_room_event(&mut self, channel: &[u8], payload: Vec<u8>, now: Instant) {
        let Some((name, entry)) = room_of(channel).and_then(|r| self.rooms.get_key_value(r)) else {
            return; // not a room of ours (unsubscribed meanwhile)
        };
        if !matches!(entry.state, RoomState::Syncing { .. } | RoomState::Live) {
            return; // before our subscription counts, or cut off
        }
        let name = Rc::clone(name);
        for event in envelope::split_batch(&payload) {
            match event {
                Ok(event) => {
                    self.metrics.events_received += 1;
                    self.on_live_event(&name, event, now);
                }
                Err(error) => {
                    self.metrics.bad_replies += 1;
                    warn!("room {name:?}: {error}; the rest of the batch dropped");
                }
            }
        }
    }

    /// An event for a synchronised room: delivered in order, a duplicate
    /// dropped, a gap repaired.
    pub(super) fn on_live_event(&mut self, room: &Rc<str>, payload: &[u8], now: Instant) {
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
    pub(super) fn deliver(&mut self, room: &Rc<str>, e: &envelope::Envelope) {
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
            frame: text_frame(e.json),
        });
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
pub(super) fn channel(room: &str) -> String {
    format!("lc:{{{room}}}")
}
/// The room a channel belongs to.
pub(super) fn room_of(channel: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(channel).ok()?;
    text.strip_prefix("lc:{")?.strip_suffix('}')
}
/// The keys of `room`, as the scripts take them.
pub(super) fn keys(room: &str) -> [String; 4] {
    ["meta", "hist", "pz", "pn"].map(|k| format!("lc:{{{room}}}:{k}"))
}
