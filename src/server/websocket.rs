//! WebSocket input: a connection's frame bytes through its `Session`, and what
//! each resulting action means for the endpoint: an echo reply, a chat broadcast,
//! a pong, the answer to the peer's close, or a failed connection (RFC 6455 §5.5,
//! §7.1.7).

use super::batches::{catch_up, catch_up_connection};
use super::compression::{Deflate, Inflate};
use super::limits::input_held_by;
use super::writes::{close_slow_reader, push_close, push_flush, push_frame, Outbox, Outgoing};
use super::{unix_millis, Server};
use crate::chat::{self, SharedFrame};
use crate::chat::{Admit, Said};
use crate::config::Config;
use crate::connection::{Connection, Endpoint, Phase};
use crate::deflate::Agreement;
use crate::frame::OpCode;
use crate::message::{CloseCode, MessageKind, ProtocolError};
use crate::metrics::Metrics;
use crate::session::Action;
use log::info;
use std::rc::Rc;
use std::time::Instant;

/// What is left to do once the connection is let go: the actions that need
/// the whole server, not only the connection.
enum Next {
    /// The input is used up.
    Done,
    /// A reply found the peer past `--max-output`.
    SlowReader,
    /// A chat message for its room.
    Broadcast(Rc<str>, SharedFrame),
    /// A message to pass on verbatim to a relay room.
    Relay(Rc<str>, SharedFrame),
    /// A chat member's new name.
    Rename(Rc<str>),
    /// The closing handshake is over, or the connection failed: leave the room and
    /// close TCP once our last bytes are out.
    Closed,
}

impl Server {
    /// Feeds frame bytes to the connection's session and acts on each action,
    /// then accounts for the input it holds (`limits.rs`).
    pub(super) fn on_websocket_bytes(&mut self, key: usize, bytes: &mut [u8]) {
        let held_before = self.connections.get(key).map_or(0, input_held_by);
        self.take_websocket_input(key, bytes);
        self.account_input(key, held_before, bytes.len());
    }

    /// Feeds frame bytes to the session; acts on each action.
    fn take_websocket_input(&mut self, key: usize, bytes: &mut [u8]) {
        let mut pos = 0;
        loop {
            let Server {
                connections,
                pending,
                metrics,
                config,
                inflate,
                deflate,
                batches,
                ..
            } = self;
            let Some(conn) = connections.get_mut(key).filter(|c| !c.doomed) else {
                return;
            };
            let mut outbox = Outbox {
                pending,
                metrics,
                config,
                batches,
            };
            let codec = Codec { inflate, deflate };
            match take_actions(conn, key, bytes, &mut pos, &mut outbox, codec) {
                Next::Done => return,
                Next::SlowReader => close_slow_reader(conn, key, &mut outbox),
                Next::Broadcast(room, frame) => self.broadcast(&room, frame), // rooms.rs
                Next::Relay(room, frame) => self.relay(&room, frame),         // rooms.rs
                Next::Rename(name) => self.rename_member(key, name),          // rooms.rs
                Next::Closed => {
                    self.leave_room(key); // rooms.rs
                    return self.close_after_flush(key); // closing.rs
                }
            }
        }
    }
}

/// The loop's permessage-deflate halves, lent to `take_actions`.
struct Codec<'s> {
    inflate: &'s mut Inflate,
    deflate: &'s mut Deflate,
}

/// Takes the session's actions on `bytes[*pos..]` that concern only this
/// connection (echoes, pongs), many per read, with the connection held, and
/// stops at the first that needs the whole server, saying what it is.
fn take_actions(
    conn: &mut Connection,
    key: usize,
    bytes: &mut [u8],
    pos: &mut usize,
    outbox: &mut Outbox,
    codec: Codec,
) -> Next {
    let Phase::WebSocket(ws) = &mut conn.phase else {
        return Next::Done;
    };
    let mut replied = false;
    let next = loop {
        let (consumed, action) = ws.session.next_action(&mut bytes[*pos..]);
        *pos += consumed;
        let taken = match action {
            Action::NeedMore => break Next::Done,
            Action::Absorbed => continue,
            Action::Message(kind, payload) => {
                outbox.metrics.messages_in += 1;
                let mut context = Context::new(codec.deflate, outbox);
                on_message(&mut ws.endpoint, ws.deflate, kind, payload, &mut context)
            }
            Action::CompressedMessage(kind, compressed) => {
                outbox.metrics.messages_in += 1;
                outbox.metrics.compressed_messages_in += 1;
                let limit = max_message_size(&ws.endpoint, outbox.config);
                match codec.inflate.inflate(kind, compressed, limit) {
                    Ok(payload) => {
                        let mut context = Context::new(codec.deflate, outbox);
                        on_message(&mut ws.endpoint, ws.deflate, kind, payload, &mut context)
                    }
                    Err(error) => Taken::Refused(error),
                }
            }
            Action::Reply(opcode, payload) => Taken::Reply(Outgoing::Frame(opcode, payload)),
            Action::PeerClosed {
                code,
                reason,
                answer,
            } => {
                let code_text = code.map_or("no code".to_string(), |c| c.to_string());
                info!("{} [{key}] sent close {code_text} {reason:?}", conn.peer);
                break peer_closed(conn, key, code, answer, outbox);
            }
            Action::Fail { error, send_close } => break fail(conn, key, error, send_close, outbox),
        };
        let notice;
        let reply = match taken {
            Taken::Reply(reply) => reply,
            Taken::Notice(text) => {
                notice = text;
                Outgoing::Frame(OpCode::Text, notice.as_bytes())
            }
            Taken::Nothing => continue,
            Taken::Next(next) => break next,
            Taken::Refused(error) => {
                let send_close = ws.session.fail();
                break fail(conn, key, error, send_close, outbox);
            }
        };
        // After what the member's room was sent so far (`batches.rs`, "Order").
        catch_up(
            &ws.endpoint,
            key,
            &mut conn.socket,
            &mut conn.output,
            outbox,
        );
        let (metrics, config) = (&mut *outbox.metrics, outbox.config);
        if !push_frame(&mut conn.socket, &mut conn.output, reply, metrics, config) {
            break Next::SlowReader;
        }
        replied = true;
    };
    if replied {
        push_flush(conn, key, outbox.pending);
    }
    next
}

/// What `on_message` needs besides the message: the compressor (for an echo
/// reply) and the limits and counters.
struct Context<'a, 'o> {
    deflate: Option<&'a mut Deflate>,
    config: &'o Config,
    metrics: &'o mut Metrics,
}

impl<'a, 'o> Context<'a, 'o> {
    fn new(deflate: &'a mut Deflate, outbox: &'o mut Outbox) -> Self {
        Context {
            deflate: Some(deflate),
            config: outbox.config,
            metrics: outbox.metrics,
        }
    }
}

/// The largest message `endpoint` takes.
fn max_message_size(endpoint: &Endpoint, config: &Config) -> usize {
    match endpoint {
        Endpoint::Echo | Endpoint::Relay { .. } => config.max_message_size,
        Endpoint::Chat { .. } => config.max_chat_message_size,
    }
}

/// The peer's close frame: counted, and answered if the peer started the
/// closing handshake (§5.5.1); TCP closes once our close is out.
fn peer_closed(
    conn: &mut Connection,
    key: usize,
    code: Option<CloseCode>,
    answer: Option<CloseCode>,
    outbox: &mut Outbox,
) -> Next {
    outbox.metrics.close_frame_received(code);
    if let Some(answer) = answer {
        catch_up_connection(conn, key, outbox); // batches.rs, "Order"
        push_close(conn, key, answer, "", outbox);
    }
    Next::Closed
}

/// What a message leads to.
enum Taken<'a> {
    /// A frame back to this connection (the echo).
    Reply(Outgoing<'a>),
    /// Work for the whole server (a broadcast).
    Next(Next),
    /// The endpoint refuses it: the connection fails with this error.
    Refused(ProtocolError),
    /// A notice for this connection only (a JSON text frame).
    Notice(String),
    /// Nothing to send (a blank chat message, a dropped one).
    Nothing,
}

/// A complete message for the endpoint: `/echo` sends it back as it came
/// (compressed again if the peer agreed and it is worth it), `/relay` passes it
/// on to the room, and the chat reads it (`chat::interpret`): a message to
/// broadcast, a `/nick` rename, or a blank to ignore, each past flood control.
fn on_message<'a>(
    endpoint: &mut Endpoint,
    agreement: Option<Agreement>,
    kind: MessageKind,
    payload: &'a [u8],
    context: &mut Context<'a, '_>,
) -> Taken<'a> {
    let Context {
        deflate,
        config,
        metrics,
    } = context;
    match endpoint {
        Endpoint::Echo => {
            // The compressor is lent to the reply, which borrows its output.
            let compressed = deflate
                .take()
                .and_then(|d| d.compress_reply(agreement, payload));
            Taken::Reply(match compressed {
                Some(compressed) => Outgoing::Compressed(kind.opcode(), compressed),
                None => Outgoing::Frame(kind.opcode(), payload),
            })
        }
        Endpoint::Relay { room } => {
            let frame = crate::frame::server_frame(kind.opcode(), payload);
            Taken::Next(Next::Relay(Rc::clone(room), frame.into()))
        }
        Endpoint::Chat { room, member, pace } => {
            let text = match chat::text_message(kind, payload) {
                Ok(text) => text,
                Err(error) => return Taken::Refused(error),
            };
            let said = chat::interpret(text);
            if said == Said::Blank {
                metrics.blank_messages_ignored += 1;
                return Taken::Nothing;
            }
            let rate = config.max_message_rate;
            match pace.admit(Instant::now, rate) {
                Admit::Yes => {}
                Admit::DropWithNotice => {
                    metrics.messages_rate_limited += 1;
                    let text = format!(
                        "slow down: at most {rate} messages a second; this one was dropped"
                    );
                    return Taken::Notice(chat::notice_to_member("rate_limited", &text));
                }
                Admit::Drop => {
                    metrics.messages_rate_limited += 1;
                    return Taken::Nothing;
                }
                Admit::Close => {
                    metrics.flood_closes += 1;
                    return Taken::Refused(ProtocolError {
                        code: CloseCode::POLICY_VIOLATION,
                        reason: "flooding: far past the message rate",
                    });
                }
            }
            match said {
                Said::Message(text) => {
                    let frame = chat::message_frame(room, member, text, unix_millis());
                    Taken::Next(Next::Broadcast(Rc::clone(room), frame))
                }
                Said::Rename(name) => Taken::Next(Next::Rename(name.into())),
                Said::BadName | Said::Blank => Taken::Notice(chat::notice_to_member(
                    "bad_name",
                    "a name needs at least one visible character: /nick NAME",
                )),
            }
        }
    }
}

/// Fails the connection (§7.1.7): our close frame with the error's code, unless
/// we sent one already; TCP closes once it is out, whatever the peer sends.
fn fail(
    conn: &mut Connection,
    key: usize,
    error: ProtocolError,
    send_close: bool,
    outbox: &mut Outbox,
) -> Next {
    info!("{} [{key}] protocol error: {error}", conn.peer);
    if send_close {
        catch_up_connection(conn, key, outbox); // batches.rs, "Order"
        push_close(conn, key, error.code, error.reason, outbox);
    }
    Next::Closed
}
