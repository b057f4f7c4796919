//! The event loop: one `mio::Poll`, the listener, every connection in a `Slab`.
//!
//! Read this file first. One iteration of [`Server::run`] does, in order: wait for
//! readiness (no longer than the next timer); read each ready connection until
//! `WouldBlock` and act on what it said; accept new connections; run the timers;
//! flush the connections that have output (up to a slice per iteration); and free
//! the connections that were closed during the iteration. mio is edge-triggered: a
//! socket that is not drained to `WouldBlock` gets no new event, so any work left
//! over (accepts past the per-wake bound, reads past the per-wake budget,
//! connections past the flush slice) is remembered and makes the next poll return
//! at once.
//!
//! The protocol work lives elsewhere: `http` and `handshake` (RFC 6455 §4),
//! `message` and `frame` (§5, §7), `chat` (rooms). This module moves bytes between
//! them and the sockets, and enforces the limits of `Config`.

use crate::chat::{self, Chat, HistoryLimits, Member, SharedFrame};
use crate::config::Config;
use crate::connection::{AfterFlush, Connection, Endpoint, Flushed, Phase, WebSocket};
use crate::frame::{self, OpCode};
use crate::handshake::{self, OriginPolicy};
use crate::http::{self, HttpError, Request, RequestLimits, Response, StaticFiles, Status};
use crate::message::{self, CloseCode, Event, MessageKind, ProtocolError, Receiver};
use crate::metrics::{self, Gauges, Metrics};
use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The listening socket's token. Connection tokens are slab keys, far below these.
const LISTENER: Token = Token(usize::MAX - 1);
/// The token of the waker that [`ServerHandle::stop`] uses.
const WAKER: Token = Token(usize::MAX - 2);
/// The token of the SIGINT/SIGTERM source, when signals are handled.
const SIGNALS: Token = Token(usize::MAX - 3);

/// Connections accepted per wake-up, so an accept flood cannot starve the peers
/// already connected. More are taken on the next iteration.
const ACCEPTS_PER_WAKE: usize = 256;
/// Reads from one socket per wake-up (each up to `READ_BUFFER_SIZE`), so one fast
/// sender cannot starve the others. The rest is read on the next iteration.
const READS_PER_WAKE: usize = 16;
/// Connections flushed per iteration. A broadcast to thousands of members would
/// otherwise keep the loop from reading for as long as its writes take (about 6 ms
/// per 1,000 on a small VM). Between slices the loop polls again: new input is
/// read, and a message that arrived meanwhile joins the frames still queued for
/// the members not yet written, in the same write.
const FLUSHES_PER_ITERATION: usize = 128;
/// One read takes up to this much: enough for everything a loopback socket holds
/// in the common case, so one `read` call empties it.
const READ_BUFFER_SIZE: usize = 256 * 1024;
/// After an `accept` error such as EMFILE, wait this long before accepting again,
/// instead of spinning on a listener that stays ready.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Descriptors kept free for the listener, the poll, logs and static files when
/// the connection limit is derived from RLIMIT_NOFILE.
const RESERVED_FDS: u64 = 64;

/// Stops a running server from another thread.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl ServerHandle {
    /// Asks the server to shut down gracefully: stop accepting, send close 1001 to
    /// every WebSocket peer, flush, and return from `run`.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            error!("could not wake the server loop: {e}");
        }
    }
}

/// A server running on its own thread (for tests, benchmarks and embedding).
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    thread: JoinHandle<io::Result<()>>,
}

impl RunningServer {
    /// Stops the server and waits for its thread.
    pub fn stop(self) -> io::Result<()> {
        self.handle.stop();
        self.thread
            .join()
            .map_err(|_| io::Error::other("server thread panicked"))?
    }
}

/// Binds a server with `config` on a new thread and returns once it listens.
pub fn spawn(config: Config) -> io::Result<RunningServer> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("loopchat".into())
        .spawn(move || {
            let server = match Server::bind(config) {
                Ok(server) => server,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return Ok(());
                }
            };
            let _ = tx.send(Ok((server.local_addr(), server.handle())));
            server.run()
        })?;
    let (addr, handle) = rx
        .recv()
        .map_err(|_| io::Error::other("server thread ended early"))??;
    Ok(RunningServer {
        addr,
        handle,
        thread,
    })
}

/// What a WebSocket event leaves to do once the connection is released.
enum Next {
    /// The input is used up.
    Done,
    SlowReader,
    Broadcast(Rc<str>, SharedFrame),
    Fail(ProtocolError),
    CloseReceived(Option<CloseCode>),
}

/// Work found during an iteration, done at its end.
#[derive(Debug, Default)]
struct Pending {
    /// Connections with output to flush, in order.
    flush: VecDeque<usize>,
    /// Connections whose queue passed `max_output` during a broadcast.
    slow: Vec<usize>,
    /// Connections to free.
    doomed: Vec<usize>,
    /// Connections that still had input when their read budget ran out.
    read_more: Vec<usize>,
}

impl Pending {
    /// Adds connection `key` to the flush list, once.
    fn queue_flush(&mut self, conn: &mut Connection, key: usize) {
        if !conn.flush_queued && !conn.doomed {
            conn.flush_queued = true;
            self.flush.push_back(key);
        }
    }

    /// Marks connection `key` as past its output limit: it gets nothing more, and
    /// `drop_slow_readers` closes it.
    fn mark_slow(&mut self, conn: &mut Connection, key: usize) {
        conn.slow = true;
        self.slow.push(key);
    }
}

/// The chat server: all state, owned by the loop.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    config: Config,
    max_connections: usize,
    static_files: StaticFiles,
    origins: OriginPolicy,
    connections: Slab<Connection>,
    chat: Chat,
    metrics: Metrics,
    pending: Pending,
    /// One read buffer for all connections: idle connections hold none.
    read_buffer: Vec<u8>,
    /// The listener may have connections we have not accepted yet.
    accept_ready: bool,
    accept_paused_until: Option<Instant>,
    /// Set while `drop_slow_readers` runs, so that it never nests.
    dropping_slow_readers: bool,
    /// The id the next chat member gets (never reused, unlike slab keys).
    next_member_id: u64,
    /// Refusals since the last log line about them (logged once per tick).
    refused_unlogged: u64,
    tick: Duration,
    next_tick: Instant,
    /// Set once shutdown begins: when the loop must end at the latest.
    shutdown_deadline: Option<Instant>,
}

impl Server {
    /// Binds the listener and prepares the loop. Raises the open-files soft limit
    /// to the hard limit, and derives the connection limit from it unless
    /// `config.max_connections` is set.
    pub fn bind(config: Config) -> io::Result<Server> {
        let fd_limit = raise_fd_limit();
        let max_connections = config.max_connections.unwrap_or_else(|| {
            fd_limit
                .map(|limit| limit.saturating_sub(RESERVED_FDS).max(1) as usize)
                .unwrap_or(1024)
        });
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.addr)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let tick = [
            config.ping_interval,
            config.handshake_timeout,
            config.close_timeout,
        ]
        .into_iter()
        .min()
        .unwrap_or(Duration::from_secs(1))
        .div_f64(4.0)
        .clamp(Duration::from_millis(5), Duration::from_secs(1));
        info!(
            "listening on http://{local_addr} (open-files limit {}, up to {max_connections} connections)",
            fd_limit.map_or("unknown".to_string(), |l| l.to_string())
        );
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            signals: None,
            static_files: match &config.static_dir {
                Some(dir) => StaticFiles::dir(dir.clone()),
                None => StaticFiles::embedded(),
            },
            origins: OriginPolicy {
                allowed: config.allowed_origins.clone(),
            },
            chat: Chat::new(HistoryLimits {
                messages: config.history,
                bytes: config.history_bytes,
                idle_rooms: config.idle_rooms,
            }),
            next_member_id: 1,
            dropping_slow_readers: false,
            config,
            max_connections,
            connections: Slab::new(),
            metrics: Metrics::default(),
            pending: Pending::default(),
            read_buffer: vec![0; READ_BUFFER_SIZE],
            accept_ready: false,
            accept_paused_until: None,
            refused_unlogged: 0,
            tick,
            next_tick: Instant::now() + tick,
            shutdown_deadline: None,
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops the server from another thread.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            waker: Arc::clone(&self.waker),
            stop: Arc::clone(&self.stop),
        }
    }

    /// Makes SIGINT and SIGTERM start a graceful shutdown. For the binary; tests
    /// use [`ServerHandle::stop`].
    pub fn handle_signals(&mut self) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Runs the loop until a shutdown completes.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_ready = true,
                    WAKER => {
                        if self.stop.load(Ordering::SeqCst) {
                            self.begin_shutdown("stop requested");
                        }
                    }
                    SIGNALS => self.read_signals(),
                    Token(key) => {
                        let peer_closing = event.is_read_closed() || event.is_error();
                        if event.is_readable() || peer_closing {
                            self.read_connection(key, peer_closing);
                        }
                        if event.is_writable() && self.has_output(key) {
                            self.queue_flush(key);
                        }
                    }
                }
            }
            self.accept_connections();
            self.read_leftovers();
            if Instant::now() >= self.next_tick {
                self.run_timers();
            }
            self.flush_pending_writes();
            self.close_deferred();
            if self.shutdown_complete() {
                info!("shut down");
                return Ok(());
            }
        }
    }

    /// How long the next poll may sleep: not past the next tick, and not at all
    /// when work is left over from this iteration.
    fn poll_timeout(&self) -> Duration {
        let now = Instant::now();
        let accept_now = self.accept_ready
            && self.listener.is_some()
            && self.accept_paused_until.is_none_or(|t| t <= now);
        if accept_now || !self.pending.read_more.is_empty() || !self.pending.flush.is_empty() {
            return Duration::ZERO;
        }
        let mut wake = self.next_tick;
        if let Some(resume) = self.accept_paused_until.filter(|_| self.accept_ready) {
            wake = wake.min(resume);
        }
        wake.saturating_duration_since(now)
    }

    // ---- Accepting ------------------------------------------------------------

    /// Accepts waiting connections, at most `ACCEPTS_PER_WAKE` of them.
    fn accept_connections(&mut self) {
        if !self.accept_ready {
            return;
        }
        let now = Instant::now();
        if self.accept_paused_until.is_some_and(|t| t > now) {
            return;
        }
        self.accept_paused_until = None;
        for _ in 0..ACCEPTS_PER_WAKE {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((socket, peer)) => self.admit(socket, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return;
                }
                Err(e) if is_transient_accept_error(&e) => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the listener stays ready but
                    // every accept would fail. Back off instead of spinning.
                    self.metrics.accept_errors += 1;
                    warn!(
                        "accept failed: {e}; pausing accepts for {} ms",
                        ACCEPT_BACKOFF.as_millis()
                    );
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
        // The bound was reached: `accept_ready` stays set, so the next poll returns
        // at once and the rest are accepted then.
    }

    /// Registers a new connection, or refuses it with 503 past the limit.
    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr) {
        self.metrics.connections_accepted += 1;
        if self.connections.len() >= self.max_connections {
            self.metrics.connections_refused += 1;
            self.refused_unlogged += 1;
            metrics::count(&mut self.metrics.http_errors, 503);
            let response =
                Response::error(Status::ServiceUnavailable).with_header("Retry-After", "5");
            let mut bytes = Vec::new();
            response.encode_head(&mut bytes, false, SystemTime::now());
            bytes.extend_from_slice(&response.body);
            // A fresh socket's send buffer is empty, so this write completes. The
            // socket is then closed at once (past the limit, we keep no descriptor
            // for it): if the request has already arrived unread, the close sends
            // a reset, which on a real network may overtake the 503; either way
            // the peer learns "not now".
            if let Ok(n) = socket.write(&bytes) {
                self.metrics.bytes_out += n as u64;
            }
            let _ = socket.shutdown(Shutdown::Write);
            return;
        }
        let _ = socket.set_nodelay(true);
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut socket,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("{peer}: cannot register socket: {e}");
            return;
        }
        let deadline = Instant::now() + self.config.handshake_timeout;
        entry.insert(Connection::new(socket, peer, deadline));
        info!("{peer} [{key}] connected");
    }

    // ---- Reading --------------------------------------------------------------

    /// Reads from connection `key` until it is drained, its budget is spent, or
    /// it ends, and acts on each piece as it arrives. `peer_closing` says the
    /// event reported the peer's FIN (or an error), which must be read to the end.
    fn read_connection(&mut self, key: usize, peer_closing: bool) {
        // The shared buffer is moved out while in use so that the handlers below
        // may borrow the rest of the server.
        let mut buffer = std::mem::take(&mut self.read_buffer);
        let mut budget_spent = true;
        for _ in 0..READS_PER_WAKE {
            let Some(conn) = self
                .connections
                .get_mut(key)
                .filter(|c| !c.doomed && !c.peer_closed && !c.read_paused)
            else {
                budget_spent = false;
                break;
            };
            match conn.socket.read(&mut buffer[..]) {
                Ok(0) => {
                    self.on_peer_closed(key);
                    budget_spent = false;
                    break;
                }
                Ok(n) => {
                    self.metrics.bytes_in += n as u64;
                    self.on_bytes(key, &mut buffer[..n]);
                    // A read shorter than the buffer took all the socket held. With
                    // epoll and kqueue (mio's backends) any byte arriving after it
                    // raises a new edge, so the read that would only say WouldBlock
                    // is skipped (tokio makes the same choice). A FIN that came with
                    // the data raises no new edge, hence `peer_closing`.
                    if n < buffer.len() && !peer_closing {
                        budget_spent = false;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    budget_spent = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.drop_connection(key, &format!("read error: {e}"));
                    budget_spent = false;
                    break;
                }
            }
        }
        self.read_buffer = buffer;
        // Not drained to WouldBlock: no new event will come for what is left, so
        // the next iteration reads again (after the others had their turn).
        if budget_spent {
            self.pending.read_more.push(key);
        }
    }

    /// Reads again from connections that ran out of read budget last time.
    fn read_leftovers(&mut self) {
        let keys = std::mem::take(&mut self.pending.read_more);
        for key in keys {
            self.read_connection(key, true);
        }
    }

    /// Dispatches freshly read bytes by phase.
    fn on_bytes(&mut self, key: usize, bytes: &mut [u8]) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        match conn.phase {
            Phase::Http => {
                conn.input.extend_from_slice(bytes);
                self.serve_http(key);
            }
            Phase::WebSocket(_) => self.on_websocket_bytes(key, bytes),
            Phase::Draining => {} // discarded: we are only waiting for the FIN
        }
    }

    /// The peer closed its side (read returned 0).
    fn on_peer_closed(&mut self, key: usize) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        let abnormal = matches!(&conn.phase, Phase::WebSocket(ws) if !ws.receiver.is_finished());
        if abnormal {
            metrics::count(&mut self.metrics.closes_received, CloseCode::ABNORMAL.0);
        }
        let reason = if abnormal {
            "closed without a close frame (1006)"
        } else {
            "closed"
        };
        if conn.output.is_empty() || matches!(conn.phase, Phase::Draining) {
            self.drop_connection(key, reason);
            return;
        }
        // A peer may half-close right after its last request or close frame: what
        // we owe it (the response, our close frame) still goes out, then we close.
        conn.peer_closed = true;
        conn.after_flush = AfterFlush::Shutdown;
        conn.deadline = Some(Instant::now() + self.config.close_timeout);
        self.leave_room(key);
        self.queue_flush(key);
    }

    // ---- HTTP -------------------------------------------------------------------

    /// Serves every complete request in the connection's input, in order.
    fn serve_http(&mut self, key: usize) {
        let limits = RequestLimits {
            max_header_bytes: self.config.max_header_bytes,
            max_headers: self.config.max_headers,
        };
        loop {
            let Some(conn) = self.connections.get_mut(key) else {
                return;
            };
            if !matches!(conn.phase, Phase::Http) || conn.after_flush != AfterFlush::KeepOpen {
                return;
            }
            // A client that pipelines requests faster than it reads responses
            // waits: parsing (and reading) resume once the output drains.
            if conn.output.queued() > self.config.max_output {
                conn.read_paused = true;
                return;
            }
            let parsed = http::parse_request(&conn.input, &mut conn.scanned, limits);
            match parsed {
                Ok(None) => return,
                Ok(Some((request, head_len))) => {
                    conn.input.drain(..head_len);
                    conn.scanned = 0;
                    self.metrics.http_requests += 1;
                    self.handle_request(key, request);
                }
                Err(error) => {
                    self.reject(key, error, None);
                    return;
                }
            }
        }
    }

    /// Routes one request: an upgrade, the metrics page, or a static file.
    fn handle_request(&mut self, key: usize, request: Request) {
        let path = request.path().to_string();
        let endpoint = if !is_websocket_path(&path) {
            None
        } else if path == "/echo" {
            Some(Ok(Endpoint::Echo))
        } else {
            let room = path.strip_prefix("/chat/").unwrap_or(chat::DEFAULT_ROOM);
            Some(if chat::is_valid_room(room) {
                let id = self.next_member_id;
                let name = chat::display_name(request.query_param("name").as_deref(), id);
                Ok(Endpoint::Chat {
                    room: room.into(),
                    member: Member {
                        key,
                        id,
                        name: name.into(),
                    },
                })
            } else {
                Err(HttpError::new(Status::NotFound, "invalid room name"))
            })
        };
        match endpoint {
            Some(Ok(endpoint)) => match handshake::accept_upgrade(&request, &self.origins) {
                Ok(response) => self.upgrade(key, endpoint, &request, response),
                Err(error) => self.reject(key, error, Some(&request)),
            },
            Some(Err(error)) => self.reject(key, error, Some(&request)),
            None => self.serve_page(key, &request, &path),
        }
    }

    /// Answers a plain HTTP request: `/metrics` or a static file.
    fn serve_page(&mut self, key: usize, request: &Request, path: &str) {
        let head_only = match request.method.as_str() {
            "GET" => false,
            "HEAD" => true,
            _ => {
                let error = HttpError::new(Status::MethodNotAllowed, "only GET and HEAD");
                return self.reject(key, error, Some(request));
            }
        };
        let response = if path == "/metrics" {
            let body = self.metrics.render(self.gauges());
            Response::new(
                Status::Ok,
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes().into(),
            )
        } else {
            match self.static_files.lookup(path) {
                Some((body, content_type)) => Response::new(Status::Ok, content_type, body)
                    .with_header("Cache-Control", "no-cache"),
                None => {
                    let error = HttpError::new(Status::NotFound, "no such file");
                    return self.reject(key, error, Some(request));
                }
            }
        };
        let keep_alive = request.keep_alive();
        debug!(
            "{} [{key}] {} {} -> 200",
            self.peer(key),
            request.method,
            request.target
        );
        self.respond(key, &response, head_only, keep_alive);
    }

    /// Sends an error response and closes after it.
    fn reject(&mut self, key: usize, error: HttpError, request: Option<&Request>) {
        metrics::count(&mut self.metrics.http_errors, error.status.code());
        let mut response = Response::error(error.status);
        if error.status == Status::UpgradeRequired {
            response = response
                .with_header("Sec-WebSocket-Version", handshake::WEBSOCKET_VERSION)
                .with_header("Upgrade", "websocket");
        }
        if error.status == Status::MethodNotAllowed {
            // A WebSocket endpoint takes GET only; pages take HEAD too.
            let websocket = request.is_some_and(|r| is_websocket_path(r.path()));
            response = response.with_header("Allow", if websocket { "GET" } else { "GET, HEAD" });
        }
        let what = request.map_or(String::new(), |r| format!(" {} {}", r.method, r.target));
        info!("{} [{key}]{what} -> {error}", self.peer(key));
        let head_only = request.is_some_and(|r| r.method == "HEAD");
        self.respond(key, &response, head_only, false);
    }

    /// Queues a response: its head, then its body by reference. Without
    /// keep-alive the connection closes after it.
    fn respond(&mut self, key: usize, response: &Response, head_only: bool, keep_alive: bool) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        conn.requests_served += 1;
        conn.output
            .push_owned(|out| response.encode_head(out, keep_alive, SystemTime::now()));
        if !head_only && !response.body.is_empty() {
            conn.output.push_shared(&response.body);
        }
        if !keep_alive {
            conn.after_flush = AfterFlush::Shutdown;
            conn.input = Vec::new();
        }
        self.queue_flush(key);
    }

    /// Switches a connection to WebSocket after a valid handshake (§4.2.2).
    fn upgrade(&mut self, key: usize, endpoint: Endpoint, request: &Request, response: Vec<u8>) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        conn.output
            .push_owned(|out| out.extend_from_slice(&response));
        conn.deadline = None;
        conn.phase = Phase::WebSocket(WebSocket {
            endpoint: endpoint.clone(),
            receiver: Receiver::new(self.config.max_message_size),
            close_sent: false,
            awaiting_pong: false,
            next_ping: Instant::now() + self.config.ping_interval,
            in_room: matches!(endpoint, Endpoint::Chat { .. }),
        });
        // Bytes that came right behind the request are the first frame bytes.
        let mut leftover = std::mem::take(&mut conn.input);
        self.metrics.upgrades += 1;
        let peer = conn.peer;
        self.queue_flush(key);
        match &endpoint {
            Endpoint::Echo => info!("{peer} [{key}] upgraded: {}", request.target),
            Endpoint::Chat { room, member } => {
                self.next_member_id += 1;
                info!(
                    "{peer} [{key}] upgraded: {} as {:?} (id {}) in room {room:?}",
                    request.target, member.name, member.id
                );
                let (room, member) = (Rc::clone(room), member.clone());
                self.with_chat(|chat, deliver| chat.join(&room, &member, unix_millis(), deliver));
            }
        }
        if !leftover.is_empty() {
            self.on_websocket_bytes(key, &mut leftover);
        }
    }

    // ---- WebSocket ---------------------------------------------------------------

    /// Feeds frame bytes to the connection's receiver and acts on each event.
    fn on_websocket_bytes(&mut self, key: usize, bytes: &mut [u8]) {
        let mut pos = 0;
        loop {
            let Some(conn) = self.connections.get_mut(key).filter(|c| !c.doomed) else {
                return;
            };
            let accepts_frames = conn.accepts_frames();
            let Phase::WebSocket(ws) = &mut conn.phase else {
                return;
            };
            let limit = self.config.max_output;
            let metrics = &mut self.metrics;
            let mut replied = false;
            // Events that concern only this connection (echoes, pings, pongs) are
            // handled here, many per read; the others need the whole server and end
            // the inner loop, saying what is left to do.
            let next = loop {
                let (consumed, event) = match ws.receiver.next_event(&mut bytes[pos..]) {
                    Ok(result) => result,
                    Err(error) => break Next::Fail(error),
                };
                pos += consumed;
                let Some(event) = event else {
                    break Next::Done;
                };
                let (opcode, payload) = match event {
                    // After our close frame, send no more data (§5.5.1): messages
                    // and pings are dropped.
                    Event::Message(..) | Event::Ping(_) if !accepts_frames => continue,
                    Event::Message(kind, payload) => {
                        metrics.messages_in += 1;
                        match &ws.endpoint {
                            Endpoint::Echo => (kind.opcode(), payload),
                            Endpoint::Chat { room, member } => {
                                break match std::str::from_utf8(payload) {
                                    Ok(text) if kind == MessageKind::Text => Next::Broadcast(
                                        Rc::clone(room),
                                        chat::message_frame(room, member, text, unix_millis()),
                                    ),
                                    _ => Next::Fail(ProtocolError {
                                        code: CloseCode::UNSUPPORTED_DATA,
                                        reason: "the chat takes text messages only",
                                    }),
                                };
                            }
                        }
                    }
                    Event::Ping(payload) => (OpCode::Pong, payload),
                    Event::Pong(_) => {
                        ws.awaiting_pong = false;
                        continue;
                    }
                    Event::Close(code, reason) => {
                        match code {
                            Some(code) => {
                                info!("{} [{key}] sent close {code} {reason:?}", conn.peer)
                            }
                            None => info!("{} [{key}] sent close without a code", conn.peer),
                        }
                        break Next::CloseReceived(code);
                    }
                };
                if !conn
                    .output
                    .make_room(&mut conn.socket, limit, &mut metrics.bytes_out)
                {
                    break Next::SlowReader;
                }
                conn.output
                    .push_owned(|out| frame::encode_frame(out, opcode, payload));
                metrics.frames_out += 1;
                replied = true;
            };
            if replied {
                self.pending.queue_flush(conn, key);
            }
            match next {
                Next::Done => return,
                Next::SlowReader => self.disconnect_slow_reader(key),
                Next::Broadcast(room, frame) => self.broadcast(&room, frame),
                Next::Fail(error) => return self.fail_websocket(key, error),
                Next::CloseReceived(code) => return self.on_close_frame(key, code),
            }
        }
    }

    /// The peer's close frame (§5.5.1): either the answer to ours, which completes
    /// the closing handshake, or its own, which we answer with the same code.
    fn on_close_frame(&mut self, key: usize, code: Option<CloseCode>) {
        let received = code.unwrap_or(CloseCode::NO_STATUS);
        metrics::count(&mut self.metrics.closes_received, received.0);
        let close_sent = match self.connections.get_mut(key).and_then(|c| c.websocket()) {
            Some(ws) => ws.close_sent,
            None => return,
        };
        if !close_sent {
            // An empty close is answered with 1000.
            self.send_close(key, code.unwrap_or(CloseCode::NORMAL), "");
        }
        self.leave_room(key);
        self.close_after_flush(key);
    }

    /// Closes TCP once the queued output (our close frame) is out.
    fn close_after_flush(&mut self, key: usize) {
        if let Some(conn) = self.connections.get_mut(key) {
            conn.after_flush = AfterFlush::Shutdown;
            self.queue_flush(key);
        }
    }

    /// Fails the connection (§7.1.7): close frame with the error's code, then
    /// close TCP once it is out, whatever the peer sends.
    fn fail_websocket(&mut self, key: usize, error: ProtocolError) {
        info!("{} [{key}] protocol error: {error}", self.peer(key));
        self.send_close(key, error.code, error.reason);
        self.leave_room(key);
        self.close_after_flush(key);
    }

    /// Queues our close frame (once) and starts the close deadline.
    fn send_close(&mut self, key: usize, code: CloseCode, reason: &str) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        let Phase::WebSocket(ws) = &mut conn.phase else {
            return;
        };
        if ws.close_sent {
            return;
        }
        ws.close_sent = true;
        conn.output
            .push_owned(|out| message::encode_close(out, code, reason));
        conn.deadline = Some(Instant::now() + self.config.close_timeout);
        metrics::count(&mut self.metrics.closes_sent, code.0);
        self.metrics.frames_out += 1;
        self.queue_flush(key);
    }

    /// A reply for `key` found its queue past the output limit.
    fn disconnect_slow_reader(&mut self, key: usize) {
        if let Some(conn) = self.connections.get_mut(key) {
            self.pending.mark_slow(conn, key);
            self.drop_slow_readers();
        }
    }

    /// Sends a chat frame to every member of `room`.
    fn broadcast(&mut self, room: &str, frame: SharedFrame) {
        self.metrics.broadcasts += 1;
        self.with_chat(|chat, deliver| chat.publish(room, frame, deliver));
    }

    /// Runs a chat operation with a `deliver` that queues each frame on its
    /// member's connection, then disconnects the members found too slow.
    fn with_chat(
        &mut self,
        operation: impl FnOnce(&mut Chat, &mut dyn FnMut(usize, &SharedFrame)),
    ) {
        let Self {
            chat,
            connections,
            pending,
            metrics,
            config,
            ..
        } = self;
        operation(chat, &mut |to, frame| {
            deliver(connections, pending, metrics, config.max_output, to, frame)
        });
        self.drop_slow_readers();
    }

    /// Disconnects the peers found too slow during the last delivery: their unsent
    /// backlog is dropped, a close 1008 is queued, and they leave their room.
    /// Leave notices may find more slow readers; they are taken in the next round
    /// of the loop here, never by a nested call, and each peer is marked slow once
    /// (so nothing is delivered to it, or tried on its socket, after that).
    fn drop_slow_readers(&mut self) {
        if self.dropping_slow_readers {
            return; // an outer call is already working through the list
        }
        self.dropping_slow_readers = true;
        while !self.pending.slow.is_empty() {
            let found = std::mem::take(&mut self.pending.slow);
            // Close them all first, so the notices below skip every one of them.
            for &key in &found {
                let Some(conn) = self.connections.get_mut(key) else {
                    continue;
                };
                if conn.doomed || conn.websocket().is_none_or(|ws| ws.close_sent) {
                    continue;
                }
                self.metrics.slow_readers_dropped += 1;
                warn!(
                    "{} [{key}] slow reader: {} bytes queued (limit {}); disconnecting",
                    conn.peer,
                    conn.output.queued(),
                    self.config.max_output
                );
                conn.output.discard_unstarted();
                self.send_close(key, CloseCode::POLICY_VIOLATION, "slow reader");
            }
            for key in found {
                self.leave_room(key);
            }
        }
        self.dropping_slow_readers = false;
    }

    /// Takes a chat member out of its room (once), telling the others.
    fn leave_room(&mut self, key: usize) {
        let Some(ws) = self.connections.get_mut(key).and_then(|c| c.websocket()) else {
            return;
        };
        let Endpoint::Chat { room, member } = &ws.endpoint else {
            return;
        };
        if !ws.in_room {
            return;
        }
        ws.in_room = false;
        let (room, member) = (Rc::clone(room), member.clone());
        self.with_chat(|chat, deliver| chat.leave(&room, &member, unix_millis(), deliver));
    }

    // ---- Timers -------------------------------------------------------------------

    /// Deadlines and heartbeats, checked once per tick.
    fn run_timers(&mut self) {
        let now = Instant::now();
        self.next_tick = now + self.tick;
        if self.refused_unlogged > 0 {
            warn!(
                "refused {} connections: at the limit of {}",
                self.refused_unlogged, self.max_connections
            );
            self.refused_unlogged = 0;
        }
        let mut expired = Vec::new();
        let mut ping = Vec::new();
        for (key, conn) in self.connections.iter() {
            if conn.doomed {
                continue;
            }
            if conn.deadline.is_some_and(|d| d <= now) {
                expired.push(key);
            } else if let Phase::WebSocket(ws) = &conn.phase {
                if !ws.close_sent && ws.next_ping <= now {
                    ping.push(key);
                }
            }
        }
        for key in expired {
            let reason = match self.connections.get(key) {
                Some(conn) if matches!(conn.phase, Phase::Http) => {
                    if conn.requests_served > 0 && conn.input.is_empty() {
                        "idle keep-alive connection closed"
                    } else {
                        self.metrics.handshake_timeouts += 1;
                        "no complete request in time"
                    }
                }
                Some(conn) if matches!(conn.phase, Phase::WebSocket(_)) => {
                    "no close frame from the peer in time"
                }
                _ => "did not close in time",
            };
            self.drop_connection(key, reason);
        }
        for key in ping {
            self.heartbeat(key, now);
        }
    }

    /// Pings a peer, or drops it if the last ping went unanswered.
    fn heartbeat(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        let Phase::WebSocket(ws) = &mut conn.phase else {
            return;
        };
        if ws.awaiting_pong {
            self.metrics.pong_timeouts += 1;
            self.drop_connection(key, "no pong to the last ping");
            return;
        }
        ws.awaiting_pong = true;
        ws.next_ping = now + self.config.ping_interval;
        let (socket, limit) = (&mut conn.socket, self.config.max_output);
        if !conn
            .output
            .make_room(socket, limit, &mut self.metrics.bytes_out)
        {
            return self.disconnect_slow_reader(key);
        }
        conn.output
            .push_owned(|out| frame::encode_frame(out, OpCode::Ping, b"loopchat"));
        self.metrics.pings_sent += 1;
        self.metrics.frames_out += 1;
        self.queue_flush(key);
    }

    // ---- Writing and closing ------------------------------------------------------

    /// Remembers that `key` has output to flush at the end of this iteration.
    fn queue_flush(&mut self, key: usize) {
        if let Some(conn) = self.connections.get_mut(key) {
            self.pending.queue_flush(conn, key);
        }
    }

    /// Writes each connection's queue, many frames per call ("write before
    /// sleeping": a connection waits for a writable event only when its socket is
    /// full). At most `FLUSHES_PER_ITERATION` connections are flushed, in the order
    /// they were queued; the rest wait for the next iteration, which polls without
    /// sleeping. So behind a broadcast to N members, a reply waits up to N / 128
    /// iterations, and a member's queue collects the broadcasts made meanwhile.
    fn flush_pending_writes(&mut self) {
        for _ in 0..FLUSHES_PER_ITERATION {
            let Some(key) = self.pending.flush.pop_front() else {
                break;
            };
            // A key left here by a connection freed since may now name a new
            // connection. Flushing that one early is harmless: writing sooner than
            // asked is always allowed, and its own entry still comes later.
            let Some(conn) = self.connections.get_mut(key) else {
                continue;
            };
            conn.flush_queued = false;
            if conn.doomed {
                continue;
            }
            match conn.output.flush(&mut conn.socket) {
                Ok((written, flushed)) => {
                    self.metrics.bytes_out += written as u64;
                    if written > 0 && matches!(conn.phase, Phase::Http) {
                        // An HTTP connection's clock runs from its last progress:
                        // a response being read is not cut off, a stalled one is.
                        conn.deadline = Some(Instant::now() + self.config.handshake_timeout);
                    }
                    if flushed == Flushed::All && conn.after_flush == AfterFlush::Shutdown {
                        self.start_draining(key);
                    } else if conn.read_paused && conn.output.queued() <= self.config.max_output {
                        // Serve the requests already read, then read on (next
                        // iteration: the socket was not drained when we paused).
                        conn.read_paused = false;
                        self.serve_http(key);
                        self.pending.read_more.push(key);
                    }
                }
                Err(e) => self.drop_connection(key, &format!("write error: {e}")),
            }
        }
    }

    /// Our last bytes are out: shut our side of TCP and wait for the peer's FIN.
    fn start_draining(&mut self, key: usize) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        if matches!(conn.phase, Phase::Draining) {
            return; // already shut: a writable event after the FIN changes nothing
        }
        if conn.peer_closed {
            return self.drop_connection(key, "closed");
        }
        if let Err(e) = conn.socket.shutdown(Shutdown::Write) {
            debug!("{} [{key}] shutdown: {e}", conn.peer);
            self.drop_connection(key, "closed");
            return;
        }
        conn.phase = Phase::Draining;
        conn.input = Vec::new();
        conn.deadline = Some(Instant::now() + self.config.close_timeout);
    }

    /// Marks a connection for removal at the end of the iteration.
    fn drop_connection(&mut self, key: usize, reason: &str) {
        self.leave_room(key);
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        if conn.doomed {
            return;
        }
        conn.doomed = true;
        info!("{} [{key}] disconnected: {reason}", conn.peer);
        self.pending.doomed.push(key);
    }

    /// Frees the connections marked during this iteration. Until now their slots
    /// stayed occupied, so no slot was reused while events for it were pending.
    fn close_deferred(&mut self) {
        for key in std::mem::take(&mut self.pending.doomed) {
            if self.connections.get(key).is_some_and(|c| c.doomed) {
                let mut conn = self.connections.remove(key);
                let _ = self.poll.registry().deregister(&mut conn.socket);
            }
        }
    }

    // ---- Shutdown -------------------------------------------------------------------

    fn read_signals(&mut self) {
        let received: Vec<i32> = match &mut self.signals {
            Some(signals) => signals.pending().collect(),
            None => return,
        };
        if let Some(signal) = received.first() {
            let name = if *signal == signal_hook::consts::SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            self.begin_shutdown(name);
        }
    }

    /// Stops accepting, says goodbye (1001) to every WebSocket peer, and closes
    /// the rest. The loop ends when all are gone or the deadline passes.
    fn begin_shutdown(&mut self, why: &str) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!(
            "shutting down ({why}): closing {} connections",
            self.connections.len()
        );
        self.shutdown_deadline = Some(Instant::now() + self.config.shutdown_timeout);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        for key in keys {
            let Some(conn) = self.connections.get_mut(key) else {
                continue;
            };
            match &mut conn.phase {
                Phase::WebSocket(ws) => {
                    // Nobody needs to hear about the others leaving.
                    ws.in_room = false;
                    self.send_close(key, CloseCode::GOING_AWAY, "server shutting down");
                }
                Phase::Http if conn.output.is_empty() => self.drop_connection(key, "shutdown"),
                Phase::Http => {
                    // Finish the response under way; serve no further request.
                    conn.input = Vec::new();
                    self.close_after_flush(key);
                }
                Phase::Draining => {}
            }
        }
    }

    fn shutdown_complete(&self) -> bool {
        match self.shutdown_deadline {
            None => false,
            Some(deadline) => self.connections.is_empty() || Instant::now() >= deadline,
        }
    }

    // ---- Small helpers ---------------------------------------------------------------

    fn has_output(&self, key: usize) -> bool {
        self.connections
            .get(key)
            .is_some_and(|c| !c.output.is_empty())
    }

    fn peer(&self, key: usize) -> String {
        self.connections
            .get(key)
            .map_or_else(|| "?".to_string(), |c| c.peer.to_string())
    }

    fn gauges(&self) -> Gauges {
        let mut gauges = Gauges {
            max_connections: self.max_connections,
            rooms: self.chat.room_count(),
            ..Gauges::default()
        };
        for (_, conn) in self.connections.iter() {
            match &conn.phase {
                Phase::Http => gauges.http += 1,
                Phase::WebSocket(ws) if !ws.close_sent => gauges.websocket += 1,
                _ => gauges.closing += 1,
            }
        }
        gauges
    }
}

/// Queues a broadcast frame on one member, unless it no longer takes frames. A
/// member whose backlog is already past the limit is put on the slow list instead
/// (so a queue holds at most the limit plus one message).
fn deliver(
    connections: &mut Slab<Connection>,
    pending: &mut Pending,
    metrics: &mut Metrics,
    max_output: usize,
    key: usize,
    frame: &SharedFrame,
) {
    let Some(conn) = connections.get_mut(key) else {
        return;
    };
    if !conn.accepts_frames() {
        return;
    }
    if !conn
        .output
        .make_room(&mut conn.socket, max_output, &mut metrics.bytes_out)
    {
        pending.mark_slow(conn, key);
        return;
    }
    conn.output.push_shared(frame);
    metrics.frames_out += 1;
    pending.queue_flush(conn, key);
}

/// Whether `path` is one of the WebSocket endpoints.
fn is_websocket_path(path: &str) -> bool {
    path == "/echo" || path == "/chat" || path.starts_with("/chat/")
}

/// Errors from `accept` that concern one connection only: try the next.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Raises the open-files soft limit to the hard limit; returns the soft limit now
/// in force (`None` if it cannot be read or is unlimited).
fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            warn!("could not raise the open-files limit: {e}");
        }
    }
    getrlimit(Resource::Nofile).current
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
