//! The tokio-tungstenite comparison server, on a current-thread runtime: what a Rust
//! user would pick.
//!
//! /echo echoes text as text and binary as binary; /chat/<room> broadcasts, to every
//! member (sender included), the same JSON `message` object loopchat sends, serialised
//! once per message and shared (Utf8Bytes is reference counted) through a tokio
//! broadcast channel. Each connection is one task that feeds everything already
//! available and flushes once (not a write per message), as a careful user would write
//! it. A member that lags more than the channel capacity is closed with 1008, like
//! loopchat's --max-output. The bench gives it a 4 KiB read buffer (`--tokio-read-buffer`,
//! `default` for tungstenite's own 128 KiB, zero-filled before every read). It has no
//! relay endpoint: its /chat wraps each message in JSON, as loopchat's does.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::broadcast;
use tungstenite::{Message, Utf8Bytes};

type WebSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Messages a room's channel holds for its slowest member.
const ROOM_CAPACITY: usize = 4096;

struct ServerState {
    rooms: Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>,
    next_id: AtomicU64,
}

/// Serves on 127.0.0.1:`port` until killed; `read_buffer`: tungstenite's
/// read_buffer_size (else its default).
pub fn serve(port: u16, read_buffer: Option<usize>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let state = Arc::new(ServerState {
            rooms: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        loop {
            match listener.accept().await {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    tokio::spawn(connection(sock, state.clone(), read_buffer));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await, // EMFILE etc.
            }
        }
    });
}

fn now_ms_epoch() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn json_escape(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[allow(clippy::result_large_err)] // the callback's signature is tungstenite's
async fn connection(
    sock: tokio::net::TcpStream,
    state: Arc<ServerState>,
    read_buffer: Option<usize>,
) {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let mut path = String::new();
    let cb = |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let config =
        read_buffer.map(|n| tungstenite::protocol::WebSocketConfig::default().read_buffer_size(n));
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(sock, cb, config).await else {
        return;
    };
    if path == "/echo" {
        echo(ws).await;
    } else if path == "/chat" || path.starts_with("/chat/") {
        let room = path.strip_prefix("/chat/").unwrap_or("lobby").to_string();
        chat(ws, room, state).await;
    }
}

async fn echo(mut ws: WebSocket) {
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                if ws.feed(msg).await.is_err() {
                    return;
                }
                // echo whatever else is already decoded/buffered, then flush once
                loop {
                    match ws.next().now_or_never() {
                        Some(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => {
                            if ws.feed(m).await.is_err() {
                                return;
                            }
                        }
                        Some(Some(Ok(Message::Close(_)))) | Some(None) | Some(Some(Err(_))) => {
                            let _ = ws.flush().await;
                            return;
                        }
                        Some(Some(Ok(_))) => {}
                        None => break,
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
            Message::Close(_) => break,
            _ => {} // pings are answered by tungstenite
        }
    }
}

async fn chat(mut ws: WebSocket, room: String, state: Arc<ServerState>) {
    use broadcast::error::RecvError;
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let tx = {
        let mut rooms = state.rooms.lock().unwrap();
        rooms
            .entry(room.clone())
            .or_insert_with(|| broadcast::channel(ROOM_CAPACITY).0)
            .clone()
    };
    let mut rx = tx.subscribe();
    let online = tx.receiver_count();
    let welcome = format!("{{\"type\":\"welcome\",\"id\":{id},\"name\":\"guest-{id}\",\"room\":\"{room}\",\"online\":{online}}}");
    if ws.send(Message::text(welcome)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let _ = tx.send(chat_message(id, &room, t.as_str()).into());
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            r = rx.recv() => match r {
                Ok(m) => {
                    if !forward(&mut ws, &mut rx, m).await {
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    close_too_slow(&mut ws).await;
                    break;
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
    drop(rx);
    leave(&state, &room, &tx);
}

/// The JSON `message` member `id` of `room` sends for `text`, as loopchat has it.
fn chat_message(id: u64, room: &str, text: &str) -> String {
    let mut j = String::with_capacity(text.len() + 96);
    let _ = write!(
        j,
        "{{\"type\":\"message\",\"id\":{id},\"from\":\"guest-{id}\",\"text\":\""
    );
    json_escape(&mut j, text);
    let _ = write!(j, "\",\"ts\":{},\"room\":\"{room}\"}}", now_ms_epoch());
    j
}

/// Sends `first` and every broadcast already waiting, then flushes once; false if the
/// connection is done (closed with 1008 if it lagged or could not be written).
async fn forward(
    ws: &mut WebSocket,
    rx: &mut broadcast::Receiver<Utf8Bytes>,
    first: Utf8Bytes,
) -> bool {
    use broadcast::error::TryRecvError;
    if ws.feed(Message::Text(first)).await.is_err() {
        return false;
    }
    let mut lagged = false;
    loop {
        match rx.try_recv() {
            Ok(m) => {
                if ws.feed(Message::Text(m)).await.is_err() {
                    lagged = true;
                    break;
                }
            }
            Err(TryRecvError::Lagged(_)) => {
                lagged = true;
                break;
            }
            Err(_) => break,
        }
    }
    if lagged || ws.flush().await.is_err() {
        close_too_slow(ws).await;
        return false;
    }
    true
}

async fn close_too_slow(ws: &mut WebSocket) {
    use tungstenite::protocol::frame::coding::CloseCode;
    use tungstenite::protocol::CloseFrame;
    let frame = CloseFrame {
        code: CloseCode::Policy,
        reason: "too slow".into(),
    };
    let _ = ws.close(Some(frame)).await;
}

/// Drops `room` once its last member (`tx`'s last receiver) has gone.
fn leave(state: &ServerState, room: &str, tx: &broadcast::Sender<Utf8Bytes>) {
    if tx.receiver_count() == 0 {
        let mut rooms = state.rooms.lock().unwrap();
        if rooms
            .get(room)
            .map(|t| t.receiver_count() == 0)
            .unwrap_or(false)
        {
            rooms.remove(room);
        }
    }
}
