//! loopchat: a WebSocket chat server on one `mio` poll loop (RFC 6455).
//!
//! Start reading at `server`, the event loop; it names every other module where
//! it hands work to it. The protocol modules are sans-IO (bytes in, values out):
//!
//! | module | job |
//! |---|---|
//! | [`config`] | every tunable and limit, with its default and flag |
//! | `server` | the event loop, one file per phase: accept, read, requests, WebSocket input, rooms, timers, limits, writes, closing |
//! | `connection` | one peer: socket (TCP or TLS), phase, buffers, deadline |
//! | `output` | a connection's write queue: shared and owned segments, gathered writes |
//! | `http` | HTTP/1.1 requests, responses, routing, static files |
//! | [`handshake`] | RFC 6455 §4: the upgrade, `Sec-WebSocket-Accept`, Origin, subprotocols |
//! | `session` | RFC 6455 §5.5, §7: one peer's protocol state and closing handshake |
//! | [`message`] | RFC 6455 §5.4-5.6, §7: fragments, UTF-8, control frames, close codes |
//! | [`frame`] | RFC 6455 §5.2-5.3: frame headers and masking |
//! | `chat` | rooms, members, notices, history, presence, flood control |
//! | `relay` | relay rooms: messages passed on verbatim |
//! | `cluster` | rooms across processes through Redis (RESP2 codec, link, scripts) |
//! | `deflate` | RFC 7692: permessage-deflate negotiation and the loop's codec |
//! | `tls` | RFC 8446/5246 for `https`/`wss`: the certificate, each connection's TLS |
//! | `cluster` | rooms across processes through Redis: RESP2, the link, the Lua scripts, the envelope |
//! | [`redis_url`] | `--redis redis://...` |
//! | `metrics` | counters for `GET /metrics`, and the process figures |

mod chat;
#[cfg(feature = "redis")]
mod cluster;
pub mod config;
mod connection;
mod deflate;
pub mod frame;
pub mod handshake;
mod http;
pub mod message;
mod metrics;
mod output;
pub mod redis_url;
mod relay;
mod server;
mod session;
pub mod tls;

pub use config::Config;
pub use server::{spawn, RunningServer, Server, ServerHandle};
