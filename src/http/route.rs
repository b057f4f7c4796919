//! Routing: which endpoint a request path names, decided from the path alone.
//!
//! `/echo`, `/chat[/ROOM]` and `/relay/ROOM` are WebSocket endpoints (RFC 6455 §4.1: the
//! resource name of the opening handshake), `/metrics` is the Prometheus page,
//! and anything else is a static file. Sans-IO and total: every path has a route.

use crate::chat::{is_valid_room, DEFAULT_ROOM};

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/echo`: every message comes back as it came.
    Echo,
    /// `/chat` (the default room) or `/chat/ROOM`.
    Chat { room: &'a str },
    /// `/relay/ROOM`: every message relayed verbatim to the room.
    Relay { room: &'a str },
    /// `/chat/...` or `/relay/...` with something that cannot name a room.
    BadRoom,
    /// `/metrics`.
    Metrics,
    /// Anything else: a static file, if there is one.
    File(&'a str),
}

impl Route<'_> {
    /// Whether the route takes only a WebSocket upgrade (and only `GET`).
    pub fn is_websocket(self) -> bool {
        matches!(
            self,
            Route::Echo | Route::Chat { .. } | Route::Relay { .. } | Route::BadRoom
        )
    }
}

/// The route of a request path (without its query).
pub fn route(path: &str) -> Route<'_> {
    match path {
        "/echo" => Route::Echo,
        "/chat" => Route::Chat { room: DEFAULT_ROOM },
        "/metrics" => Route::Metrics,
        _ => {
            if let Some(room) = path.strip_prefix("/chat/") {
                return if is_valid_room(room) {
                    Route::Chat { room }
                } else {
                    Route::BadRoom
                };
            }
            match path.strip_prefix("/relay/") {
                Some(room) if is_valid_room(room) => Route::Relay { room },
                Some(_) => Route::BadRoom,
                None => Route::File(path),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_endpoint_has_its_route() {
        for (path, want) in [
            ("/echo", Route::Echo),
            ("/chat", Route::Chat { room: "lobby" }),
            ("/chat/dev-2_b", Route::Chat { room: "dev-2_b" }),
            ("/chat/", Route::BadRoom),
            ("/chat/a/b", Route::BadRoom),
            ("/chat/%20", Route::BadRoom),
            ("/metrics", Route::Metrics),
            ("/", Route::File("/")),
            ("/index.html", Route::File("/index.html")),
            ("/echo/", Route::File("/echo/")),
            ("/chatroom", Route::File("/chatroom")),
            ("/relay/bench-1", Route::Relay { room: "bench-1" }),
            ("/relay/", Route::BadRoom),
            ("/relay", Route::File("/relay")),
        ] {
            assert_eq!(route(path), want, "{path}");
        }
    }

    #[test]
    fn only_websocket_routes_say_so() {
        assert!(route("/echo").is_websocket());
        assert!(route("/chat/x").is_websocket());
        assert!(route("/chat/!").is_websocket());
        assert!(!route("/metrics").is_websocket());
        assert!(!route("/").is_websocket());
    }

    proptest! {
        #[test]
        fn a_chat_route_always_names_a_valid_room(path in "/chat(/[a-zA-Z0-9_/ -]{0,40})?") {
            if let Route::Chat { room } = route(&path) {
                prop_assert!(is_valid_room(room));
            }
        }
    }
}
