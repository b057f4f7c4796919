//! The event loop: one `mio::Poll`, the listener, every connection in a `Slab`.
//!
//! Read this file first, then the phase files in the order [`Server::run`] calls
//! them. One iteration: wait for readiness (no longer than the next timer);
//! dispatch each event by token (`reading.rs` reads a ready connection and acts on
//! what it said: `requests.rs` for HTTP and the upgrade, `websocket.rs` for frames,
//! `rooms.rs` for chat and relay rooms, whose messages and notices only join the
//! room's batch); accept new connections (`accept.rs`); run the timers
//! (`timers.rs`); close the slow readers found meanwhile (`closing.rs`); queue each
//! room's batch, the frames it was sent during the iteration, on each of its
//! members once (`batches.rs`); flush the connections that have output, a slice
//! per iteration (`writes.rs`); and free the connections closed during the
//! iteration (`closing.rs`). mio is edge-triggered: a
//! socket that is not drained to `WouldBlock` gets no new event, so any work left
//! over (accepts past the per-wake bound, reads past the per-wake budget,
//! connections past the flush slice) is remembered and makes the next poll return
//! at once.
//!
//! The protocol work lives elsewhere, sans-IO: `http` and `handshake` (RFC 6455
//! §4), `session`, `message` and `frame` (§5, §7), `chat` (rooms). This module
//! moves bytes between them and the sockets, and enforces the limits of `Config`.
//! With `--tls-cert`, every socket is TLS (`tls.rs`: RFC 8446, RFC 5246, `wss://`
//! of RFC 6455 §11.1.2); the steps above are the same, on plaintext.

mod accept;
mod batches;
mod closing;
mod cluster;
mod compression;
mod handle;
mod limits;
mod reading;
mod requests;
mod rooms;
mod timers;
mod tls;
mod websocket;
mod writes;

#[cfg(test)]
mod batch_tests;

pub use handle::{spawn, RunningServer, ServerHandle};

use crate::chat::{Chat, ChatLimits};
use crate::config::Config;
use crate::connection::{Connection, Phase};
use crate::handshake::OriginPolicy;
use crate::http::StaticFiles;
use crate::metrics::{Gauges, Metrics};
use crate::relay::Relay;
use crate::tls::Identity;
use log::info;
use mio::net::TcpListener;
use mio::{event::Event, Events, Interest, Poll, Token, Waker};
use reading::ReadUntil;
use slab::Slab;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use writes::FlushOutcome;

/// The listening socket's token. Connection tokens are slab keys, far below these.
const LISTENER: Token = Token(usize::MAX - 1);
/// The token of the waker that [`ServerHandle::stop`] uses.
const WAKER: Token = Token(usize::MAX - 2);
/// The token of the SIGINT/SIGTERM source, when signals are handled.
const SIGNALS: Token = Token(usize::MAX - 3);

/// Work found during an iteration, done later in it (or early in the next).
#[derive(Debug, Default)]
struct Pending {
    /// Connections with output to flush, in order (`writes.rs` owns it).
    flush: VecDeque<usize>,
    /// Connections found past `--max-output`: their close frame is queued, and
    /// they leave their room in the slow-reader step (`closing.rs`).
    slow: Vec<usize>,
    /// Connections to free at the end of the iteration.
    doomed: Vec<usize>,
    /// Connections that still had input when their read budget ran out.
    read_more: Vec<usize>,
}

/// The chat server: all state, owned by the loop.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    /// The certificate new connections get, when the server speaks TLS.
    tls: Option<tls::Tls>,
    config: Config,
    max_connections: usize,
    static_files: StaticFiles,
    origins: OriginPolicy,
    connections: Slab<Connection>,
    chat: Chat,
    relay: Relay,
    metrics: Metrics,
    pending: Pending,
    /// What each room was sent during this iteration, queued on its members in
    /// the batch step (`batches.rs`).
    batches: batches::RoomBatches,
    /// One read buffer for all connections: idle connections hold none.
    read_buffer: Vec<u8>,
    /// The listener may have connections we have not accepted yet.
    accept_ready: bool,
    accept_paused_until: Option<Instant>,
    /// permessage-deflate: the loop's one inflater and one compressor.
    inflate: compression::Inflate,
    deflate: compression::Deflate,
    /// Bytes held for unfinished messages over all connections (`limits.rs`).
    input_held: usize,
    /// Open connections by address, when `--max-connections-per-ip` is set.
    connections_per_ip: HashMap<IpAddr, usize>,
    /// The id the next chat member gets (never reused, unlike slab keys).
    next_member_id: u64,
    /// Refusals since the last log line about them (logged once per tick).
    refused_unlogged: u64,
    tick: Duration,
    next_tick: Instant,
    /// Set once shutdown begins: when the loop must end at the latest.
    shutdown_deadline: Option<Instant>,
    /// The link to the cluster's Redis (`--redis`, `cluster.rs`).
    #[cfg(feature = "redis")]
    redis: Option<cluster::RedisLink>,
}

impl Server {
    /// Binds the listener and prepares the loop. Raises the open-files soft limit
    /// to the hard limit, and derives the connection limit from it unless
    /// `config.max_connections` is set. With `--tls-cert`, loads the certificate
    /// and key first (a problem with them is `InvalidInput`).
    pub fn bind(config: Config) -> io::Result<Server> {
        let identity = Identity::from_config(&config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Server::bind_with(config, identity)
    }

    /// [`Server::bind`] with the certificate already loaded (by `main`, which
    /// checks it before anything else), or `None` for plain TCP.
    pub fn bind_with(config: Config, identity: Option<Identity>) -> io::Result<Server> {
        let fd_limit = accept::raise_fd_limit();
        let max_connections = accept::connection_limit(&config, fd_limit);
        let poll = Poll::new()?;
        let mut listener = accept::listen(&config)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let tick = timers::tick_interval(&config);
        let tls = tls::Tls::new(&config, identity);
        #[cfg(feature = "redis")]
        let redis = cluster::RedisLink::from_config(&config)?;
        info!(
            "listening on {}://{local_addr} (open-files limit {}, up to {max_connections} connections)",
            if tls.is_some() { "https" } else { "http" },
            fd_limit.map_or("unknown".to_string(), |l| l.to_string())
        );
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            signals: None,
            tls,
            static_files: match &config.static_dir {
                Some(dir) => StaticFiles::dir(dir.clone()),
                None => StaticFiles::embedded(),
            },
            origins: OriginPolicy {
                allowed: config.allowed_origins.clone(),
            },
            relay: Relay::default(),
            chat: Chat::new(ChatLimits {
                messages: config.history,
                bytes: config.history_bytes,
                idle_rooms: config.idle_rooms,
                total_bytes: config.history_budget,
                member_list: config.member_list_limit,
                max_message_bytes: config.max_chat_message_size,
                max_message_rate: config.max_message_rate,
            }),
            next_member_id: 1,
            inflate: compression::Inflate::default(),
            deflate: compression::Deflate::new(&config),
            input_held: 0,
            connections_per_ip: HashMap::new(),
            config,
            max_connections,
            connections: Slab::new(),
            metrics: Metrics::default(),
            pending: Pending::default(),
            batches: batches::RoomBatches::default(),
            read_buffer: vec![0; reading::READ_BUFFER_SIZE],
            accept_ready: false,
            accept_paused_until: None,
            refused_unlogged: 0,
            tick,
            next_tick: Instant::now() + tick,
            shutdown_deadline: None,
            #[cfg(feature = "redis")]
            redis,
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs the loop until a shutdown completes.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if self.iterate(&mut events, timeout)? {
                info!("shut down");
                return Ok(());
            }
        }
    }

    /// One iteration of the loop, each step named; returns whether the shutdown
    /// is complete.
    fn iterate(&mut self, events: &mut Events, timeout: Duration) -> io::Result<bool> {
        if let Err(e) = self.poll.poll(events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        for event in events.iter() {
            self.on_ready(event);
        }
        self.accept_connections(); // accept.rs
        self.read_leftovers(); // reading.rs
        if Instant::now() >= self.next_tick {
            self.run_timers(); // timers.rs
        }
        self.exchange_with_redis(); // cluster.rs
        self.close_slow_readers(); // closing.rs
        self.queue_room_batches(); // batches.rs
        for outcome in self.flush_pending_writes() {
            self.on_flushed(outcome); // writes.rs
        }
        self.close_deferred(); // closing.rs
        Ok(self.shutdown_complete())
    }

    /// Dispatches one readiness event by its token.
    fn on_ready(&mut self, event: &Event) {
        match event.token() {
            LISTENER => self.accept_ready = true,
            WAKER if self.stop.load(Ordering::SeqCst) => self.begin_shutdown("stop requested"),
            WAKER => {}
            SIGNALS => self.read_signals(),
            #[cfg(feature = "redis")]
            cluster::REDIS_CMD => self.on_redis_ready(crate::cluster::Conn::Cmd, event),
            #[cfg(feature = "redis")]
            cluster::REDIS_SUB => self.on_redis_ready(crate::cluster::Conn::Sub, event),
            Token(key) => {
                // The peer's FIN (or an error) raises no further edge: read to the end.
                if event.is_read_closed() || event.is_error() {
                    self.read_connection(key, ReadUntil::WouldBlock);
                } else if event.is_readable() {
                    self.read_connection(key, ReadUntil::ShortRead);
                }
                if event.is_writable() && self.has_output(key) {
                    self.queue_flush(key);
                }
            }
        }
    }

    /// Acts on what a flush led to, in the phase it concerns.
    fn on_flushed(&mut self, outcome: FlushOutcome) {
        match outcome {
            FlushOutcome::LastBytesOut(key) => self.start_draining(key), // closing.rs
            FlushOutcome::ResumeReading(key) => self.resume_reading(key), // requests.rs
            FlushOutcome::Failed(key, e) => self.drop_connection(key, &format!("write error: {e}")),
        }
    }

    /// How long the next poll may sleep: not past the next tick, and not at all
    /// when work is left over from this iteration.
    fn poll_timeout(&self) -> Duration {
        let now = Instant::now();
        let accept_now = self.accept_ready
            && self.listener.is_some()
            && self.accept_paused_until.is_none_or(|t| t <= now);
        let Pending {
            flush,
            slow,
            read_more,
            ..
        } = &self.pending;
        // A batch left (a leave notice after a failed write) goes out next time.
        let batches = !self.batches.is_empty();
        if accept_now || !read_more.is_empty() || !flush.is_empty() || !slow.is_empty() || batches {
            return Duration::ZERO;
        }
        let mut wake = self.next_tick;
        if let Some(deadline) = self.redis_deadline() {
            wake = wake.min(deadline);
        }
        if let Some(resume) = self.accept_paused_until.filter(|_| self.accept_ready) {
            wake = wake.min(resume);
        }
        wake.saturating_duration_since(now)
    }

    fn has_output(&self, key: usize) -> bool {
        self.connections.get(key).is_some_and(|c| c.has_output())
    }

    /// The peer's address, for log lines.
    fn peer(&self, key: usize) -> String {
        self.connections
            .get(key)
            .map_or_else(|| "?".to_string(), |c| c.peer.to_string())
    }

    /// The values `/metrics` measures at the moment it is asked for.
    fn gauges(&self) -> Gauges {
        let mut gauges = Gauges {
            max_connections: self.max_connections,
            rooms: self.chat.room_count(),
            relay_rooms: self.relay.room_count(),
            input_held_bytes: self.input_held,
            compress_calls: self.deflate.calls(),
            inflate_calls: self.inflate.calls(),
            history_bytes: self.chat.history_bytes(),
            cluster: self.cluster_figures(),
            ..Gauges::default()
        };
        for (_, conn) in self.connections.iter() {
            match &conn.phase {
                Phase::Http => gauges.http += 1,
                Phase::WebSocket(ws) if ws.session.is_open() => {
                    gauges.websocket += 1;
                    gauges.deflate += usize::from(ws.deflate.is_some());
                }
                _ => gauges.closing += 1,
            }
        }
        gauges
    }
}

/// Milliseconds since the Unix epoch, for the chat's timestamps.
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
