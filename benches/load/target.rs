//! Where the load client connects: address, Host header, path and protocol, and the
//! parsing of `--url`.

use std::net::{SocketAddr, ToSocketAddrs};

/// What the client speaks to a server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Protocol {
    /// The HTTP upgrade, then WebSocket frames.
    WebSocket,
    /// The same frames with no handshake: the raw echo and fan-out servers.
    RawTcp,
}

/// A server to load.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
    pub protocol: Protocol,
}

/// Parses `ws://host[:port][/path]` or `tcp://host[:port][/path]`.
pub fn parse_url(u: &str) -> Result<Target, String> {
    // tcp://host:port speaks the raw echo protocol (same bytes, no handshake), and
    // tcp://host:port/chat the raw fan-out one
    let (rest, protocol) = match (u.strip_prefix("ws://"), u.strip_prefix("tcp://")) {
        (Some(r), _) => (r, Protocol::WebSocket),
        (_, Some(r)) => (r, Protocol::RawTcp),
        _ => return Err("only ws:// (or tcp:// for a raw echo server) URLs are supported".into()),
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hp = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let addr = hp
        .to_socket_addrs()
        .map_err(|e| format!("resolve {hp}: {e}"))?
        .next()
        .ok_or(format!("resolve {hp}: no address"))?;
    Ok(Target {
        addr,
        host: hostport.to_string(),
        path: path.to_string(),
        protocol,
    })
}

/// The path of a `--url` ("" if it does not parse).
pub fn url_path(u: &str) -> String {
    parse_url(u).map(|t| t.path).unwrap_or_default()
}
