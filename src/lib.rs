//! loopchat: a WebSocket chat server on one `mio` poll loop (RFC 6455).
//!
//! Start reading at [`server`], the event loop; it names every other module where
//! it hands work to it. The protocol modules are sans-IO (bytes in, values out):
//!
//! | module | job |
//! |---|---|
//! | [`config`] | every tunable and limit, with its default and flag |
//! | [`server`] | the event loop: poll, listener, slab of connections, timers, shutdown |
//! | [`connection`] | one peer: socket, input, write queue, phase |
//! | [`http`] | HTTP/1.1 requests, responses, static files |
//! | [`handshake`] | RFC 6455 §4: the upgrade and `Sec-WebSocket-Accept` |
//! | [`frame`] | RFC 6455 §5.2-5.3: frame headers and masking |
//! | [`message`] | RFC 6455 §5.4-5.6, §7: fragments, UTF-8, control frames, close codes |
//! | [`chat`] | rooms, members, notices, history |
//! | [`tls`] | RFC 8446/5246 for `https`/`wss`: the certificate, each connection's TLS |
//! | [`metrics`] | counters for `GET /metrics` |

mod chat;
pub mod config;
mod connection;
mod deflate;
pub mod frame;
pub mod handshake;
mod http;
pub mod message;
mod metrics;
mod output;
mod relay;
mod server;
mod session;
pub mod tls;

pub use config::Config;
pub use server::{spawn, RunningServer, Server, ServerHandle};
