//! One WebSocket peer's protocol state, sans-IO: what each frame it sends asks of
//! us, the heartbeat, and the closing handshake (RFC 6455 §5.5, §7).
//!
//! The loop feeds a [`Session`] the bytes it read and the time; the session answers
//! with an [`Action`] (a message for the endpoint, a pong to send, the peer's close,
//! a protocol failure) or a [`Tick`] (ping now, the pong or the close is overdue).
//! It never touches a socket: queuing frames and closing TCP are the loop's.
//!
//! The closing handshake is one [`CloseState`], in §7's words:
//!
//! ```text
//!            we send close (start_close)          the peer's close arrives
//!   Open ─────────────────────────────────► CloseSent ─────────────────────► Closed
//!     │                                                                         ▲
//!     └──── the peer's close arrives (we answer it), or its input is invalid ───┘
//! ```
//!
//! In `Open` data flows both ways. In `CloseSent` we send nothing more (§5.5.1) and
//! discard the peer's data, waiting for its close frame until a deadline. In
//! `Closed` the handshake is over (or the connection was failed, §7.1.7): nothing
//! more is read, and the loop closes TCP once our last bytes are out (§7.1.1).

use crate::frame::OpCode;
use crate::message::{CloseCode, Event, MessageKind, ProtocolError, Receiver};
use std::time::{Duration, Instant};

/// Where the closing handshake is (§7.1.2-§7.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseState {
    /// No close frame yet: frames flow both ways.
    Open,
    /// Our close frame is queued; the peer's is due by the session's deadline.
    CloseSent,
    /// Both close frames exchanged, or the connection failed: TCP closes next.
    Closed,
}

/// What the loop must do about the bytes just fed in.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// The input is used up; read more.
    NeedMore,
    /// The session took care of a frame itself (a pong, or data that arrived
    /// after our close frame and is discarded): go on.
    Absorbed,
    /// A complete data message for the endpoint.
    Message(MessageKind, &'a [u8]),
    /// A complete data message compressed with permessage-deflate, as it came:
    /// the loop inflates it with its one inflater.
    CompressedMessage(MessageKind, &'a [u8]),
    /// A control frame to send back: the pong for a ping (§5.5.2).
    Reply(OpCode, &'a [u8]),
    /// The peer's close frame (§5.5.1). `answer` is the close code to echo when
    /// the peer started the handshake, `None` when it answered ours. Either way
    /// the handshake is complete.
    PeerClosed {
        code: Option<CloseCode>,
        reason: &'a str,
        answer: Option<CloseCode>,
    },
    /// The peer broke the protocol (§7.1.7): send a close frame with the error's
    /// code if `send_close` (we may have sent ours already), then close TCP.
    Fail {
        error: ProtocolError,
        send_close: bool,
    },
}

/// What the clock asks of the loop for this peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    Idle,
    /// Send a heartbeat ping (§5.5.2).
    Ping,
    /// The last ping went unanswered for a whole interval.
    PongTimeout,
    /// We sent our close frame and the peer's did not come in time.
    CloseTimeout,
    /// A message started arriving and did not finish in time (`MessagePace`).
    MessageTimeout,
}

/// One WebSocket peer's protocol state.
#[derive(Debug)]
pub struct Session {
    receiver: Receiver,
    state: CloseState,
    /// The session's one timer: in `Open` when the next heartbeat ping is due, in
    /// `CloseSent` when the peer's close frame is. (One field for both keeps an
    /// idle connection's state small.)
    deadline: Instant,
    /// Our last ping has not been answered yet.
    awaiting_pong: bool,
    /// While a message is arriving: when it must be complete. Set when its first
    /// bytes arrive, and pushed back by each read in proportion to the bytes it
    /// brought, so a steady sender finishes however large its message, and a
    /// trickle does not.
    message_deadline: Option<Instant>,
}

/// How long a message may take to arrive: `grace` from its first byte, plus one
/// second for every `min_rate` bytes received (0: no extension).
#[derive(Debug, Clone, Copy)]
pub struct MessagePace {
    pub grace: Duration,
    pub min_rate: usize,
}

impl Session {
    /// A session that has just completed the opening handshake at `now`.
    pub fn new(max_message_size: usize, now: Instant, ping_interval: Duration) -> Self {
        Self::with_receiver(Receiver::new(max_message_size), now, ping_interval)
    }

    /// A session whose peer negotiated permessage-deflate (RFC 7692).
    pub fn with_compression(
        max_message_size: usize,
        now: Instant,
        ping_interval: Duration,
    ) -> Self {
        let receiver = Receiver::new(max_message_size).with_compression();
        Self::with_receiver(receiver, now, ping_interval)
    }

    fn with_receiver(receiver: Receiver, now: Instant, ping_interval: Duration) -> Self {
        Session {
            receiver,
            state: CloseState::Open,
            deadline: now + ping_interval,
            awaiting_pong: false,
            message_deadline: None,
        }
    }

    #[cfg(test)]
    pub fn state(&self) -> CloseState {
        self.state
    }

    /// Whether data frames may still be sent to the peer.
    pub fn is_open(&self) -> bool {
        self.state == CloseState::Open
    }

    /// Whether the peer's input ended properly: its close frame arrived, or it
    /// was found invalid. A TCP close before either is abnormal (1006).
    pub fn input_finished(&self) -> bool {
        self.receiver.is_finished()
    }

    /// Bytes of memory held for input still arriving.
    pub fn buffered(&self) -> usize {
        self.receiver.buffered()
    }

    /// Gives up the peer's input and frees its buffers: the connection is being
    /// failed from outside (the server's input budget). Returns whether our close
    /// frame is still due.
    pub fn discard_input(&mut self) -> bool {
        self.receiver.discard();
        self.message_deadline = None;
        self.fail()
    }

    /// Called after each read of `len` bytes, once they were all taken: starts,
    /// extends or clears the deadline of the message in progress. `clock` is
    /// read only when a message starts, not on every read.
    pub fn after_input(&mut self, clock: impl FnOnce() -> Instant, len: usize, pace: MessagePace) {
        if !self.receiver.in_message() {
            self.message_deadline = None;
            return;
        }
        let extension = match pace.min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs_f64(len as f64 / rate as f64),
        };
        self.message_deadline = Some(match self.message_deadline {
            None => clock() + pace.grace + extension,
            Some(deadline) => deadline + extension,
        });
    }

    /// Reads from `input` until one thing is complete or the input is used up.
    /// Returns the bytes consumed and what to do; call again with the rest until
    /// it says [`Action::NeedMore`].
    pub fn next_action<'a>(&'a mut self, input: &'a mut [u8]) -> (usize, Action<'a>) {
        let (consumed, event) = match self.receiver.next_event(input) {
            Ok(result) => result,
            Err(error) => {
                let send_close = self.state == CloseState::Open;
                self.state = CloseState::Closed;
                return (0, Action::Fail { error, send_close });
            }
        };
        let open = self.state == CloseState::Open;
        let action = match event {
            None => Action::NeedMore,
            // After our close frame, send no more data (§5.5.1): data and pings
            // are read and dropped while we wait for the peer's close.
            Some(Event::Message(..) | Event::CompressedMessage(..) | Event::Ping(_)) if !open => {
                Action::Absorbed
            }
            Some(Event::Message(kind, payload)) => Action::Message(kind, payload),
            Some(Event::CompressedMessage(kind, payload)) => {
                Action::CompressedMessage(kind, payload)
            }
            Some(Event::Ping(payload)) => Action::Reply(OpCode::Pong, payload),
            Some(Event::Pong(_)) => {
                self.awaiting_pong = false;
                Action::Absorbed
            }
            Some(Event::Close(code, reason)) => {
                self.state = CloseState::Closed;
                // An empty close is answered with 1000 (§5.5.1, §7.4.1).
                let answer = open.then(|| code.unwrap_or(CloseCode::NORMAL));
                Action::PeerClosed {
                    code,
                    reason,
                    answer,
                }
            }
        };
        (consumed, action)
    }

    /// We start the closing handshake (a slow reader, a shutdown): returns whether
    /// the caller must queue our close frame, which it must at most once.
    pub fn start_close(&mut self, deadline: Instant) -> bool {
        if self.state != CloseState::Open {
            return false;
        }
        self.state = CloseState::CloseSent;
        self.deadline = deadline;
        true
    }

    /// The endpoint refuses what the peer sent (binary on the chat): the
    /// connection fails (§7.1.7). Returns whether our close frame is still due.
    pub fn fail(&mut self) -> bool {
        let was_open = self.state == CloseState::Open;
        self.state = CloseState::Closed;
        was_open
    }

    /// The heartbeat and the close deadline, checked once per timer tick.
    pub fn on_tick(&mut self, now: Instant, ping_interval: Duration) -> Tick {
        match self.state {
            CloseState::Open if self.message_deadline.is_some_and(|d| d <= now) => {
                Tick::MessageTimeout
            }
            _ if self.deadline > now => Tick::Idle,
            CloseState::Open if self.awaiting_pong => Tick::PongTimeout,
            CloseState::Open => {
                self.awaiting_pong = true;
                self.deadline = now + ping_interval;
                Tick::Ping
            }
            CloseState::CloseSent => Tick::CloseTimeout,
            CloseState::Closed => Tick::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;
    const PING_INTERVAL: Duration = Duration::from_secs(30);
    const MASK: [u8; 4] = [1, 2, 3, 4];

    /// A masked client frame with FIN set, as a browser sends it (§5.3).
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        out
    }

    fn close_frame(code: u16, reason: &str) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        client_frame(0x8, &payload)
    }

    /// Every action the session takes from `bytes`, as owned values.
    fn feed(session: &mut Session, mut bytes: Vec<u8>) -> Vec<String> {
        let mut seen = Vec::new();
        let mut pos = 0;
        loop {
            let (consumed, action) = session.next_action(&mut bytes[pos..]);
            pos += consumed;
            if action == Action::NeedMore {
                return seen;
            }
            let stop = matches!(action, Action::Fail { .. });
            seen.push(format!("{action:?}"));
            if stop {
                return seen;
            }
        }
    }

    fn open_session() -> (Session, Instant) {
        let now = Instant::now();
        (Session::new(MAX, now, PING_INTERVAL), now)
    }

    // ---- Open: frames flow both ways --------------------------------------------

    #[test]
    fn open_delivers_messages_and_answers_pings() {
        let (mut session, _) = open_session();
        let mut bytes = client_frame(0x1, b"hi");
        bytes.extend(client_frame(0x9, b"beat"));
        assert_eq!(
            feed(&mut session, bytes),
            [
                "Message(Text, [104, 105])",
                "Reply(Pong, [98, 101, 97, 116])"
            ]
        );
        assert!(session.is_open());
    }

    #[test]
    fn open_answers_the_peers_close_with_its_code() {
        let (mut session, _) = open_session();
        let seen = feed(&mut session, close_frame(1001, "bye"));
        assert_eq!(
            seen,
            [
                r#"PeerClosed { code: Some(CloseCode(1001)), reason: "bye", answer: Some(CloseCode(1001)) }"#
            ]
        );
        assert_eq!(session.state(), CloseState::Closed);
        assert!(session.input_finished());
    }

    #[test]
    fn open_answers_an_empty_close_with_1000() {
        let (mut session, _) = open_session();
        let seen = feed(&mut session, client_frame(0x8, b""));
        assert_eq!(
            seen,
            [r#"PeerClosed { code: None, reason: "", answer: Some(CloseCode(1000)) }"#]
        );
    }

    #[test]
    fn open_fails_on_invalid_input_and_sends_a_close() {
        let (mut session, _) = open_session();
        let seen = feed(&mut session, client_frame(0x3, b"")); // reserved opcode
        assert_eq!(seen.len(), 1);
        assert!(seen[0].contains("PROTOCOL_ERROR") || seen[0].contains("1002"));
        assert!(seen[0].contains("send_close: true"), "{}", seen[0]);
        assert_eq!(session.state(), CloseState::Closed);
        // Nothing more is read after a failure.
        assert!(feed(&mut session, client_frame(0x1, b"late")).is_empty());
    }

    #[test]
    fn open_reads_a_message_split_anywhere() {
        let bytes = client_frame(0x2, b"split me");
        for cut in 0..bytes.len() {
            let (mut session, _) = open_session();
            let mut seen = feed(&mut session, bytes[..cut].to_vec());
            seen.extend(feed(&mut session, bytes[cut..].to_vec()));
            assert_eq!(
                seen,
                ["Message(Binary, [115, 112, 108, 105, 116, 32, 109, 101])"]
            );
        }
    }

    // ---- Open: the heartbeat -------------------------------------------------------

    #[test]
    fn heartbeat_pings_each_interval_and_a_pong_clears_it() {
        let (mut session, start) = open_session();
        assert_eq!(session.on_tick(start, PING_INTERVAL), Tick::Idle);
        let due = start + PING_INTERVAL;
        assert_eq!(session.on_tick(due, PING_INTERVAL), Tick::Ping);
        assert_eq!(session.on_tick(due, PING_INTERVAL), Tick::Idle);
        assert_eq!(feed(&mut session, client_frame(0xA, b"x")), ["Absorbed"]);
        let next = due + PING_INTERVAL;
        assert_eq!(session.on_tick(next, PING_INTERVAL), Tick::Ping);
    }

    #[test]
    fn heartbeat_without_a_pong_times_out() {
        let (mut session, start) = open_session();
        let due = start + PING_INTERVAL;
        assert_eq!(session.on_tick(due, PING_INTERVAL), Tick::Ping);
        let next = due + PING_INTERVAL;
        assert_eq!(session.on_tick(next, PING_INTERVAL), Tick::PongTimeout);
    }

    // ---- Open: the message deadline ----------------------------------------------

    const PACE: MessagePace = MessagePace {
        grace: Duration::from_secs(10),
        min_rate: 1000,
    };

    #[test]
    fn a_trickled_message_times_out_after_the_grace() {
        let (mut session, start) = open_session();
        let frame = client_frame(0x1, &[b'a'; 100]);
        let mut now = start;
        for byte in &frame[..50] {
            feed(&mut session, vec![*byte]);
            session.after_input(|| now, 1, PACE);
            now += Duration::from_secs(1);
            assert_eq!(
                session.on_tick(now - Duration::from_millis(1), PING_INTERVAL)
                    == Tick::MessageTimeout,
                now - start > Duration::from_secs(10)
            );
        }
    }

    #[test]
    fn a_steady_sender_earns_time_in_proportion_to_its_bytes() {
        let start = Instant::now();
        let mut session = Session::new(1 << 30, start, PING_INTERVAL);
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&(1_000_000u64).to_be_bytes());
        frame.extend_from_slice(&MASK);
        assert!(feed(&mut session, frame).is_empty());
        session.after_input(|| start, 14, PACE);
        // 2,000 bytes a second against a minimum of 1,000: never late.
        for second in 1..60 {
            assert!(feed(&mut session, vec![0; 2000]).is_empty());
            let now = start + Duration::from_secs(second);
            session.after_input(|| now, 2000, PACE);
            assert_ne!(
                session.on_tick(now, PING_INTERVAL * 10),
                Tick::MessageTimeout
            );
        }
    }

    #[test]
    fn a_finished_message_clears_its_deadline() {
        let (mut session, start) = open_session();
        let frame = client_frame(0x1, b"hello");
        feed(&mut session, frame[..3].to_vec());
        session.after_input(|| start, 3, PACE);
        feed(&mut session, frame[3..].to_vec());
        session.after_input(|| start, frame.len() - 3, PACE);
        let late = start + Duration::from_secs(20);
        assert_ne!(session.on_tick(late, PING_INTERVAL), Tick::MessageTimeout);
    }

    #[test]
    fn discarding_input_frees_it_and_closes() {
        let (mut session, _) = open_session();
        let mut frame = vec![0x82, 0x80 | 126, 0x03, 0xE8]; // 1,000 bytes announced
        frame.extend_from_slice(&MASK);
        frame.extend(vec![0; 500]);
        assert!(feed(&mut session, frame).is_empty());
        assert!(session.buffered() >= 500);
        assert!(session.discard_input());
        assert_eq!(session.buffered(), 0);
        assert_eq!(session.state(), CloseState::Closed);
    }

    // ---- CloseSent: we started the handshake -----------------------------------------

    #[test]
    fn close_sent_is_entered_once() {
        let (mut session, start) = open_session();
        assert!(session.start_close(start));
        assert!(!session.start_close(start));
        assert!(!session.is_open());
    }

    #[test]
    fn close_sent_discards_data_and_pings_but_takes_the_close() {
        let (mut session, start) = open_session();
        session.start_close(start + Duration::from_secs(5));
        let mut bytes = client_frame(0x1, b"late");
        bytes.extend(client_frame(0x9, b"ping"));
        bytes.extend(close_frame(1000, ""));
        assert_eq!(
            feed(&mut session, bytes),
            [
                "Absorbed",
                "Absorbed",
                r#"PeerClosed { code: Some(CloseCode(1000)), reason: "", answer: None }"#
            ]
        );
        assert_eq!(session.state(), CloseState::Closed);
    }

    #[test]
    fn close_sent_times_out_at_its_deadline_and_sends_no_pings() {
        let (mut session, start) = open_session();
        let deadline = start + Duration::from_secs(5);
        session.start_close(deadline);
        let late = start + PING_INTERVAL;
        assert_eq!(
            session.on_tick(deadline - Duration::from_millis(1), PING_INTERVAL),
            Tick::Idle
        );
        assert_eq!(session.on_tick(late, PING_INTERVAL), Tick::CloseTimeout);
    }

    #[test]
    fn close_sent_fails_without_a_second_close_frame() {
        let (mut session, start) = open_session();
        session.start_close(start);
        let seen = feed(&mut session, client_frame(0x3, b""));
        assert!(seen[0].contains("send_close: false"), "{}", seen[0]);
    }

    #[test]
    fn an_endpoint_failure_closes_once() {
        let (mut session, start) = open_session();
        assert!(session.fail());
        assert_eq!(session.state(), CloseState::Closed);
        assert!(!session.fail());
        assert!(!session.start_close(start));
    }

    // ---- Closed: the handshake is over --------------------------------------------

    #[test]
    fn closed_reads_nothing_and_ticks_idle() {
        let (mut session, start) = open_session();
        feed(&mut session, close_frame(1000, ""));
        assert!(feed(&mut session, client_frame(0x1, b"after")).is_empty());
        assert_eq!(
            session.on_tick(start + PING_INTERVAL * 3, PING_INTERVAL),
            Tick::Idle
        );
        assert!(!session.start_close(start));
    }
}
