//! The cluster link in the loop (`--redis`): the two sockets to Redis (RESP2,
//! the Redis serialization protocol, over TCP), read on
//! readiness like any connection, written once per iteration with everything
//! the iteration queued (the batching that keeps Redis's CPU per message low),
//! and what the cluster (`crate::cluster`, sans-IO) says the chat must do,
//! done in the loop's `exchange_with_redis` step.
//!
//! Without the `redis` feature, every room is local: the hooks the room code
//! calls (`cluster_join`, `cluster_post`, `cluster_leave`) answer "not
//! handled" and nothing else here exists.

use super::Server;
#[cfg(not(feature = "redis"))]
use crate::chat::{Member, SharedFrame};
#[cfg(not(feature = "redis"))]
use std::rc::Rc;

/// What a chat event is, for the hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Post {
    Message,
    Rename,
}

#[cfg(feature = "redis")]
pub(super) use linked::{RedisLink, REDIS_CMD, REDIS_SUB};

#[cfg(not(feature = "redis"))]
impl Server {
    pub(super) fn cluster_join(&mut self, _room: &Rc<str>, _member: &Member) -> bool {
        false
    }
    pub(super) fn cluster_post(
        &mut self,
        _: &str,
        _: Post,
        _: (u64, &str),
        _: &SharedFrame,
    ) -> bool {
        false
    }
    pub(super) fn cluster_relay(&mut self, _room: &str, _frame: &SharedFrame) -> bool {
        false
    }
    pub(super) fn cluster_join_relay(&mut self, _room: &str) {}
    pub(super) fn cluster_leave_relay(&mut self, _room: &str) {}
    pub(super) fn exchange_with_redis(&mut self) {}
    pub(super) fn cluster_shutdown(&mut self) {}
    pub(super) fn redis_deadline(&self) -> Option<std::time::Instant> {
        None
    }
    pub(super) fn cluster_figures(&self) -> Option<crate::metrics::ClusterFigures> {
        None
    }
    pub(super) fn cluster_leave(&mut self, _room: &Rc<str>, _member: &Member) -> bool {
        false
    }
    pub(super) fn new_member_id(&mut self) -> u64 {
        let id = self.next_member_id;
        self.next_member_id += 1;
        id
    }
}

#[cfg(feature = "redis")]
mod linked {
    use super::{Post, Server};
    use crate::chat::{text_frame, Member, Notice, SharedFrame};
    use crate::cluster::envelope::Kind;
    use crate::cluster::{Cluster, Conn, Happening, Settings};
    use crate::config::Config;
    use crate::connection::Endpoint;
    use crate::frame::{server_frame, server_opcode, server_payload, OpCode};
    use crate::metrics::ClusterFigures;
    use crate::server::batches::RoomKind;
    use crate::server::rooms::welcome;
    use log::info;
    use mio::net::TcpStream;
    use mio::{Interest, Token};
    use std::io::{self, Read, Write};
    use std::net::{SocketAddr, ToSocketAddrs};
    use std::rc::Rc;
    use std::time::Instant;

    /// The token of the connection for commands and scripts.
    pub(in crate::server) const REDIS_CMD: Token = Token(usize::MAX - 4);
    /// The token of the subscriber connection.
    pub(in crate::server) const REDIS_SUB: Token = Token(usize::MAX - 5);

    /// One socket to Redis.
    struct Socket {
        stream: TcpStream,
        connected: bool,
        /// The last write stopped at `WouldBlock`: wait for writability.
        blocked: bool,
    }

    /// The cluster and its sockets.
    pub(in crate::server) struct RedisLink {
        pub(in crate::server) cluster: Cluster,
        addr: SocketAddr,
        cmd: Option<Socket>,
        sub: Option<Socket>,
    }

    impl RedisLink {
        /// The link `config` asks for, if any; the host is resolved here, once.
        pub(in crate::server) fn from_config(config: &Config) -> io::Result<Option<RedisLink>> {
            let Some(url) = &config.redis else {
                return Ok(None);
            };
            let addr = (url.host.as_str(), url.port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("--redis: cannot resolve {:?}", url.host),
                    )
                })?;
            let settings = Settings {
                url: url.clone(),
                ping_interval: config.redis_ping,
                presence_ttl: config.presence_ttl,
                history: config.history,
                member_list: config.member_list_limit,
                max_queue: config.redis_max_queue,
            };
            info!("cluster node of redis at {url} ({addr})");
            Ok(Some(RedisLink {
                cluster: Cluster::new(settings, Instant::now()),
                addr,
                cmd: None,
                sub: None,
            }))
        }

        fn socket(&mut self, conn: Conn) -> &mut Option<Socket> {
            match conn {
                Conn::Cmd => &mut self.cmd,
                Conn::Sub => &mut self.sub,
            }
        }
    }

    impl Server {
        /// The loop's Redis step: connect when due, run the link's timers, do
        /// what the replies read this iteration mean for the chat, and write
        /// everything queued for Redis (one write per connection).
        pub(in crate::server) fn exchange_with_redis(&mut self) {
            let Some(link) = &mut self.redis else {
                return;
            };
            let now = Instant::now();
            link.cluster.tick(now);
            if link.cluster.should_connect(now) {
                self.connect_to_redis(now);
            }
            self.do_happenings();
            if let Some(link) = &mut self.redis {
                link.cluster.flush_posts(); // a room's posts of this iteration: one script call
            }
            for conn in [Conn::Cmd, Conn::Sub] {
                self.write_to_redis(conn);
            }
            self.drop_redis_sockets_if_down();
            // A failure while writing leaves the chat work to do now.
            self.do_happenings();
        }

        /// When the loop must wake for the link, if it has one.
        /// When the loop must wake for the link: at once if the steps after
        /// this iteration's Redis step queued commands (a slow reader's leave)
        /// that a socket can take, or left the chat something to do.
        pub(in crate::server) fn redis_deadline(&self) -> Option<Instant> {
            let link = self.redis.as_ref()?;
            let ready = |socket: &Option<Socket>, conn| {
                socket.as_ref().is_some_and(|s| s.connected && !s.blocked)
                    && link.cluster.has_output(conn)
            };
            if link.cluster.has_happenings()
                || ready(&link.cmd, Conn::Cmd)
                || ready(&link.sub, Conn::Sub)
            {
                return Some(Instant::now());
            }
            Some(link.cluster.next_deadline())
        }

        /// A Redis socket is ready.
        pub(in crate::server) fn on_redis_ready(&mut self, conn: Conn, event: &mio::event::Event) {
            if event.is_writable() {
                self.finish_connect(conn);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                self.read_from_redis(conn);
            }
            self.drop_redis_sockets_if_down();
        }

        fn connect_to_redis(&mut self, now: Instant) {
            let Some(link) = &mut self.redis else {
                return;
            };
            let addr = link.addr;
            let registry = self.poll.registry();
            let open = |token| -> io::Result<Socket> {
                let mut stream = TcpStream::connect(addr)?;
                stream.set_nodelay(true)?;
                registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
                Ok(Socket {
                    stream,
                    connected: false,
                    blocked: false,
                })
            };
            match (open(REDIS_CMD), open(REDIS_SUB)) {
                (Ok(cmd), Ok(sub)) => {
                    link.cmd = Some(cmd);
                    link.sub = Some(sub);
                    link.cluster.connecting(now);
                }
                (Err(e), _) | (_, Err(e)) => {
                    link.cluster.connecting(now);
                    link.cluster.fail(&format!("connect: {e}"), now);
                }
            }
        }

        /// A socket became writable: the first time, the connect finished (or
        /// failed).
        fn finish_connect(&mut self, conn: Conn) {
            let Some(link) = &mut self.redis else {
                return;
            };
            let Some(socket) = link.socket(conn) else {
                return;
            };
            socket.blocked = false;
            if !socket.connected {
                match socket.stream.take_error() {
                    Ok(None) if socket.stream.peer_addr().is_ok() => socket.connected = true,
                    Ok(None) => return, // not yet
                    Ok(Some(e)) | Err(e) => {
                        return link.cluster.fail(&format!("connect: {e}"), Instant::now());
                    }
                }
            }
            self.write_to_redis(conn);
        }

        fn read_from_redis(&mut self, conn: Conn) {
            let mut buffer = std::mem::take(&mut self.read_buffer);
            if let Some(link) = &mut self.redis {
                while let Some(socket) = link.socket(conn) {
                    let now = Instant::now();
                    match socket.stream.read(&mut buffer) {
                        Ok(0) => {
                            link.cluster.fail("redis closed the connection", now);
                            break;
                        }
                        Ok(n) => {
                            socket.connected = true;
                            link.cluster.on_bytes(conn, &buffer[..n], now);
                            if !link.cluster.is_connected() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            link.cluster.fail(&format!("read: {e}"), now);
                            break;
                        }
                    }
                }
            }
            self.read_buffer = buffer;
        }

        fn write_to_redis(&mut self, conn: Conn) {
            let Some(link) = &mut self.redis else {
                return;
            };
            let RedisLink {
                cluster, cmd, sub, ..
            } = link;
            let socket = match conn {
                Conn::Cmd => cmd,
                Conn::Sub => sub,
            };
            let Some(socket) = socket.as_mut().filter(|s| s.connected) else {
                return;
            };
            let out = cluster.output(conn);
            let mut written = 0;
            let mut failure = None;
            while written < out.len() {
                match socket.stream.write(&out[written..]) {
                    Ok(0) => {
                        failure = Some("write: zero bytes".to_string());
                        break;
                    }
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        socket.blocked = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        failure = Some(format!("write: {e}"));
                        break;
                    }
                }
            }
            out.drain(..written);
            if written > 0 {
                cluster.wrote();
            }
            if let Some(reason) = failure {
                cluster.fail(&reason, Instant::now());
            }
        }

        /// Closes both sockets once the cluster has declared the link down.
        fn drop_redis_sockets_if_down(&mut self) {
            let Some(link) = &mut self.redis else {
                return;
            };
            if link.cluster.is_connected() {
                return;
            }
            for conn in [Conn::Cmd, Conn::Sub] {
                if let Some(mut socket) = link.socket(conn).take() {
                    let _ = self.poll.registry().deregister(&mut socket.stream);
                }
            }
        }

        /// Does what the cluster says, in order.
        fn do_happenings(&mut self) {
            loop {
                let Some(link) = &mut self.redis else {
                    return;
                };
                let Some(happening) = link.cluster.next_happening() else {
                    return;
                };
                match happening {
                    Happening::Welcome {
                        room,
                        key,
                        online,
                        people,
                    } => self.welcome_from_cluster(&room, key, online, people.as_deref()),
                    Happening::Event {
                        room,
                        kind,
                        id,
                        name,
                        online,
                        frame,
                    } => self.event_from_cluster(&room, kind, (id, &name), online, frame),
                    Happening::Seed { room, frame } => self.chat.seed(&room, &frame),
                    Happening::Island { joins, posts } => {
                        self.chat.count_locally();
                        for (room, key) in joins {
                            if let Some(member) = self.chat_member(key) {
                                self.join_locally(room, member, super::super::unix_millis());
                            }
                        }
                        for (room, json) in posts {
                            self.broadcast_locally(&room, text_frame(&json));
                        }
                    }
                    Happening::Forget { room } => self.chat.forget(&room),
                    Happening::Relay {
                        room,
                        binary,
                        payload,
                    } => {
                        let opcode = if binary { OpCode::Binary } else { OpCode::Text };
                        let frame = server_frame(opcode, &payload);
                        self.relay_locally(&room, frame.into());
                    }
                }
            }
        }

        /// The member of chat connection `key`, if it still is one.
        fn chat_member(&mut self, key: usize) -> Option<Member> {
            let ws = self.connections.get_mut(key)?.websocket()?;
            match &ws.endpoint {
                Endpoint::Chat { member, .. } => Some(member.clone()),
                _ => None,
            }
        }

        fn welcome_from_cluster(
            &mut self,
            room: &Rc<str>,
            key: usize,
            online: usize,
            people: Option<&[(u64, Rc<str>)]>,
        ) {
            let Some(member) = self.chat_member(key) else {
                return;
            };
            // What the room was sent before the newcomer came is not for it.
            self.queue_room_batch(RoomKind::Chat, room); // batches.rs
            let (chat, connections, mut outbox) = self.split_for_delivery();
            let joined = chat.admit(room, &member, online, people);
            welcome(connections, &mut outbox, key, &joined);
        }

        fn event_from_cluster(
            &mut self,
            room: &Rc<str>,
            kind: Kind,
            who: (u64, &Rc<str>),
            online: usize,
            frame: SharedFrame,
        ) {
            let notice = match kind {
                Kind::Message => return self.broadcast_locally(room, frame),
                Kind::Join => Notice::Join,
                Kind::Leave => Notice::Leave,
                Kind::Rename => Notice::Rename,
            };
            let to_anyone = self
                .chat
                .cluster_notice(room, notice, who, online)
                .is_some_and(|members| !members.is_empty());
            if to_anyone {
                self.batches.push(RoomKind::Chat, room, frame);
            }
        }

        /// A member asks to join: `true` if the cluster takes it (the welcome
        /// comes when its join is back from Redis).
        pub(in crate::server) fn cluster_join(&mut self, room: &Rc<str>, member: &Member) -> bool {
            match &mut self.redis {
                Some(link) => link.cluster.join(room, member.key, member.id, &member.name),
                None => false,
            }
        }

        /// A message or rename: `true` if it went to Redis (it is delivered
        /// when it comes back, to every node in one order).
        pub(in crate::server) fn cluster_post(
            &mut self,
            room: &str,
            post: Post,
            (id, name): (u64, &str),
            frame: &SharedFrame,
        ) -> bool {
            let Some(link) = &mut self.redis else {
                return false;
            };
            let Ok(json) = std::str::from_utf8(server_payload(frame)) else {
                return false;
            };
            let kind = match post {
                Post::Message => Kind::Message,
                Post::Rename => Kind::Rename,
            };
            link.cluster.post(room, kind, id, name, json.to_string())
        }

        /// A relay message: `true` if it went to Redis (delivered when it
        /// comes back, on every node in one order).
        pub(in crate::server) fn cluster_relay(&mut self, room: &str, frame: &SharedFrame) -> bool {
            let Some(link) = &mut self.redis else {
                return false;
            };
            let binary = server_opcode(frame) == Some(OpCode::Binary);
            link.cluster.relay(room, binary, server_payload(frame))
        }

        pub(in crate::server) fn cluster_join_relay(&mut self, room: &str) {
            if let Some(link) = &mut self.redis {
                link.cluster.join_relay(room);
            }
        }

        pub(in crate::server) fn cluster_leave_relay(&mut self, room: &str) {
            if let Some(link) = &mut self.redis {
                link.cluster.leave_relay(room);
            }
        }

        /// Shutting down: every member here leaves its room (their leave
        /// scripts go out with the loop's next Redis step).
        pub(in crate::server) fn cluster_shutdown(&mut self) {
            if let Some(link) = &mut self.redis {
                link.cluster.leave_everything();
            }
        }

        /// A member leaves: `true` if the cluster announces it.
        pub(in crate::server) fn cluster_leave(&mut self, room: &Rc<str>, member: &Member) -> bool {
            match &mut self.redis {
                Some(link) => link.cluster.leave(room, member.id),
                None => false,
            }
        }

        /// A member id unique over the cluster, or over this process alone.
        pub(in crate::server) fn new_member_id(&mut self) -> u64 {
            match &mut self.redis {
                Some(link) => link.cluster.member_id(),
                None => {
                    let id = self.next_member_id;
                    self.next_member_id += 1;
                    id
                }
            }
        }

        /// The link's figures for `/metrics`.
        pub(in crate::server) fn cluster_figures(&self) -> Option<ClusterFigures> {
            self.redis.as_ref().map(|link| link.cluster.metrics)
        }
    }
}
