//! HTTP requests and the upgrade: every complete request in a connection's input
//! is routed (`http::route`) and answered in order (keep-alive and pipelining),
//! with the page, `/metrics`, an error status, or the RFC 6455 §4.2.2 handshake
//! that turns the connection into a WebSocket.

use super::{compression, unix_millis, Server};
use crate::chat::{self, Member, Pace};
use crate::connection::{AfterFlush, Endpoint, Phase, WebSocket};
use crate::deflate::Agreement;
use crate::handshake;
use crate::http::{self, route, HttpError, Request, RequestLimits, Response, Route, Status};
use crate::metrics;
use crate::session::Session;
use log::{debug, info};
use std::rc::Rc;
use std::time::{Instant, SystemTime};

impl Server {
    /// Serves every complete request in the connection's input, in order.
    pub(super) fn serve_http(&mut self, key: usize) {
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

    /// A connection paused for pipelining past `--max-output` has drained below
    /// it: serve the requests already read, then read on (next iteration: the
    /// socket was not drained when reading paused).
    pub(super) fn resume_reading(&mut self, key: usize) {
        if let Some(conn) = self.connections.get_mut(key) {
            conn.read_paused = false;
            self.serve_http(key);
            self.pending.read_more.push(key);
        }
    }

    /// Routes one request: an upgrade, the metrics page, or a static file.
    fn handle_request(&mut self, key: usize, request: Request) {
        let endpoint = match route(request.path()) {
            Route::Echo => Endpoint::Echo,
            Route::Chat { room } => {
                let id = self.new_member_id(); // cluster.rs: unique over the cluster
                let name = chat::display_name(request.query_param("name").as_deref(), id);
                let member = Member {
                    key,
                    id,
                    name: name.into(),
                };
                Endpoint::Chat {
                    room: room.into(),
                    member,
                    pace: Pace::new(Instant::now(), self.config.max_message_rate),
                }
            }
            Route::Relay { room } => Endpoint::Relay { room: room.into() },
            Route::BadRoom => {
                let error = HttpError::new(
                    Status::NotFound,
                    "invalid room name (a room name is 1 to 32 of A-Z a-z 0-9 _ -)",
                );
                return self.reject(key, error, Some(&request));
            }
            Route::Metrics | Route::File(_) => return self.serve_page(key, &request),
        };
        let (deflate, extensions) = compression::negotiate(&self.config, &request).unzip();
        match handshake::accept_upgrade(
            &request,
            &self.origins,
            &self.config.subprotocols,
            extensions.as_deref(),
        ) {
            Ok(response) => self.upgrade(key, endpoint, deflate, &request, response),
            Err(error) => self.reject(key, error, Some(&request)),
        }
    }

    /// Answers a plain HTTP request: `/metrics` or a static file.
    fn serve_page(&mut self, key: usize, request: &Request) {
        let head_only = match request.method.as_str() {
            "GET" => false,
            "HEAD" => true,
            _ => {
                let error = HttpError::new(Status::MethodNotAllowed, "only GET and HEAD");
                return self.reject(key, error, Some(request));
            }
        };
        let response = match route(request.path()) {
            Route::Metrics => {
                let body = self.metrics.render(self.gauges());
                Response::new(
                    Status::Ok,
                    "text/plain; version=0.0.4; charset=utf-8",
                    body.as_bytes().into(),
                )
            }
            _ => match self.static_files.lookup(request.path()) {
                Some((body, content_type)) => Response::new(Status::Ok, content_type, body)
                    .with_header("Cache-Control", "no-cache"),
                None => {
                    let error = HttpError::new(Status::NotFound, "no such file");
                    return self.reject(key, error, Some(request));
                }
            },
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
        let mut response = Response::refusal(error.status, &refusal_reason(&error));
        if error.status == Status::UpgradeRequired {
            response = response
                .with_header("Sec-WebSocket-Version", handshake::WEBSOCKET_VERSION)
                .with_header("Upgrade", "websocket");
        }
        if error.status == Status::MethodNotAllowed {
            // A WebSocket endpoint takes GET only; pages take HEAD too.
            let websocket = request.is_some_and(|r| route(r.path()).is_websocket());
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
    fn upgrade(
        &mut self,
        key: usize,
        endpoint: Endpoint,
        deflate: Option<Agreement>,
        request: &Request,
        response: Vec<u8>,
    ) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        conn.output
            .push_owned(|out| out.extend_from_slice(&response));
        conn.deadline = None;
        let now = Instant::now();
        let max_message_size = match endpoint {
            Endpoint::Echo | Endpoint::Relay { .. } => self.config.max_message_size,
            Endpoint::Chat { .. } => self.config.max_chat_message_size,
        };
        let ping_interval = self.config.ping_interval;
        let session = match deflate {
            Some(_) => Session::with_compression(max_message_size, now, ping_interval),
            None => Session::new(max_message_size, now, ping_interval),
        };
        conn.phase = Phase::WebSocket(WebSocket {
            endpoint: endpoint.clone(),
            session,
            deflate,
        });
        // Bytes that came right behind the request are the first frame bytes.
        let mut leftover = std::mem::take(&mut conn.input);
        self.metrics.upgrades += 1;
        let peer = conn.peer;
        self.queue_flush(key);
        match &endpoint {
            Endpoint::Echo => info!("{peer} [{key}] upgraded: {}", request.target),
            Endpoint::Relay { room } => {
                info!("{peer} [{key}] upgraded: {}", request.target);
                self.join_relay(room, key); // rooms.rs
            }
            Endpoint::Chat { room, member, .. } => {
                info!(
                    "{peer} [{key}] upgraded: {} as {:?} (id {}) in room {room:?}",
                    request.target, member.name, member.id
                );
                self.join_room(Rc::clone(room), member.clone(), unix_millis()); // rooms.rs
            }
        }
        if !leftover.is_empty() {
            self.on_websocket_bytes(key, &mut leftover);
        }
    }
}

/// What a refusal's body says: the reason, and for a refused Origin which flag
/// would allow it.
fn refusal_reason(error: &HttpError) -> String {
    match error.status {
        Status::Forbidden => format!(
            "{}; a server that should take WebSocket connections from pages of \
             another site is started with --allowed-origin ORIGIN",
            error.reason
        ),
        _ => error.reason.to_string(),
    }
}
