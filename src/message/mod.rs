//! From frames to messages: fragmentation, UTF-8, control frames and close codes.
//!
//! Implements RFC 6455 §5.4 (fragmentation), §5.5 (control frames), §5.6 and §8.1
//! (text is UTF-8, failed with 1007 otherwise) and §7.4 (status codes); the
//! frame-level rules (masking, reserved bits) are `frame`'s. [`Receiver`] is sans-IO: it is fed bytes as
//! they come off the socket, in pieces of any size, and hands back one [`Event`] at a
//! time. It consumes payload bytes as they arrive (it never waits for a whole frame),
//! so invalid UTF-8 is caught on the read that carries it, and a frame's header is
//! enough to refuse a message that would pass the size limit, before any allocation.

mod close;

pub use close::{encode_close, CloseCode, ProtocolError};

use crate::frame::{self, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use close::parse_close_payload;

/// The two kinds of data message (§5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    Binary,
}

impl MessageKind {
    /// The opcode of a one-frame message of this kind.
    pub fn opcode(self) -> OpCode {
        match self {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }
}

/// One thing the peer said, borrowed from the receiver until the next call.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete message. For [`MessageKind::Text`] the payload is valid UTF-8.
    Message(MessageKind, &'a [u8]),
    /// A complete message compressed with permessage-deflate (RFC 7692 §6), as it
    /// came: still to be inflated (and, for text, checked for UTF-8) by the caller.
    CompressedMessage(MessageKind, &'a [u8]),
    /// A ping; answer with a pong carrying the same payload (§5.5.2).
    Ping(&'a [u8]),
    /// A pong (§5.5.3).
    Pong(&'a [u8]),
    /// A valid close frame (§5.5.1). `code` is `None` for an empty payload; the
    /// reason is valid UTF-8. After this event the receiver accepts no more input.
    Close(Option<CloseCode>, &'a str),
}

/// What `read` found complete.
#[derive(Debug, Clone, Copy)]
enum Complete {
    /// A control frame or a whole message in the receiver's buffers.
    Buffered(OpCode),
    /// A one-frame message still masked in the input, from `start` to the end
    /// of what was consumed.
    InPlace { start: usize, mask: [u8; 4] },
}

/// Where the receiver is within the current frame.
#[derive(Debug, Clone, Copy)]
enum FrameState {
    /// Collecting header bytes (into `Receiver::header`).
    Header,
    /// Copying payload bytes; `remaining` are still to come, `offset` have been seen.
    Payload {
        header: FrameHeader,
        remaining: u64,
        offset: usize,
    },
}

/// The streaming message assembler for one connection's incoming bytes.
#[derive(Debug)]
pub struct Receiver {
    max_message_size: usize,
    state: FrameState,
    /// Bytes of a header that has not arrived whole yet.
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    /// The data message being assembled (across fragments), unmasked.
    message: Vec<u8>,
    /// The kind of the data message in progress, if one has started.
    message_kind: Option<MessageKind>,
    /// How much of `message` is known to be valid UTF-8 so far (text only). Only
    /// the bytes after this point are checked when more arrive, so validation is
    /// linear however the message is split.
    utf8_valid_up_to: usize,
    /// The payload of the control frame being read (at most 125 bytes).
    control: Vec<u8>,
    /// Set after an event that borrows `message` or `control`: cleared on the next call.
    delivered: Option<OpCode>,
    /// A close frame was received or an error returned: accept nothing more.
    finished: bool,
    /// permessage-deflate was negotiated: RSV1 may mark a message compressed.
    compression: bool,
    /// The message in progress is compressed (RSV1 on its first frame).
    message_compressed: bool,
}

/// The most a frame header makes the receiver reserve before its payload arrives.
const RESERVE_AHEAD: u64 = 256 * 1024;

/// A message buffer larger than this is freed once its message is delivered, so
/// that an idle connection holds (nearly) nothing for input: 20,000 idle
/// connections that each once received a fragmented message hold at most 80 MiB,
/// and that memory counts against the server's input budget. (Most messages hold
/// no buffer at all: a frame that arrives whole is unmasked where it lies.)
const KEEP_BUFFER_CAPACITY: usize = 4 * 1024;

impl Receiver {
    pub fn new(max_message_size: usize) -> Self {
        Receiver {
            max_message_size,
            state: FrameState::Header,
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            message: Vec::new(),
            message_kind: None,
            utf8_valid_up_to: 0,
            control: Vec::new(),
            delivered: None,
            finished: false,
            compression: false,
            message_compressed: false,
        }
    }

    /// A receiver for a connection that negotiated permessage-deflate: RSV1 on
    /// the first frame of a data message marks it compressed (RFC 7692 §6.1).
    pub fn with_compression(mut self) -> Self {
        self.compression = true;
        self
    }

    /// Whether a close frame was received or the input was found invalid.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Bytes of memory held for input: the message being assembled and the
    /// control frame being read (for the server's global input budget).
    pub fn buffered(&self) -> usize {
        self.message.capacity() + self.control.capacity()
    }

    /// Whether a frame or a message has started and not finished: the peer owes
    /// us more bytes of it.
    pub fn in_message(&self) -> bool {
        !self.finished
            && (self.header_len > 0
                || self.message_kind.is_some()
                || matches!(self.state, FrameState::Payload { .. }))
    }

    /// Gives up the input: frees every buffer and accepts nothing more (the
    /// connection is being failed).
    pub fn discard(&mut self) {
        self.finished = true;
        self.message = Vec::new();
        self.control = Vec::new();
        self.message_kind = None;
        self.message_compressed = false;
        self.header_len = 0;
        self.state = FrameState::Header;
        self.delivered = None;
    }

    /// Reads from `input` until one event is complete or `input` is used up.
    ///
    /// Returns how many bytes of `input` were consumed and the event, if any. Call
    /// again with `&mut input[consumed..]` until it returns `(n, None)` with `n`
    /// equal to the input's length. After an error or a close event, nothing more
    /// is read. `input` is mutable so that a message whose one frame lies whole in
    /// it is unmasked where it lies and lent out from there, without a copy (the
    /// common case: small messages); the bytes it consumed are left unmasked.
    pub fn next_event<'a>(
        &'a mut self,
        input: &'a mut [u8],
    ) -> Result<(usize, Option<Event<'a>>), ProtocolError> {
        self.release_delivered();
        if self.finished {
            return Ok((0, None));
        }
        let result = self.read(input);
        if result.is_err() {
            self.finished = true;
        }
        let (consumed, complete) = result?;
        let Some(complete) = complete else {
            return Ok((consumed, None));
        };
        let event = match complete {
            Complete::InPlace { start, mask } => {
                self.delivered = Some(OpCode::Text); // resets the message state
                let kind = self.message_kind.unwrap_or(MessageKind::Binary);
                let payload = &mut input[start..consumed];
                frame::apply_mask(payload, mask, 0);
                if std::mem::take(&mut self.message_compressed) {
                    return Ok((consumed, Some(Event::CompressedMessage(kind, payload))));
                }
                if kind == MessageKind::Text && !is_utf8(payload) {
                    self.finished = true;
                    return Err(ProtocolError::new(
                        CloseCode::INVALID_PAYLOAD,
                        "text message is not valid UTF-8",
                    ));
                }
                Event::Message(kind, payload)
            }
            Complete::Buffered(opcode) => {
                self.delivered = Some(opcode);
                match opcode {
                    OpCode::Ping => Event::Ping(&self.control),
                    OpCode::Pong => Event::Pong(&self.control),
                    OpCode::Close => {
                        self.finished = true;
                        let (code, reason) = parse_close_payload(&self.control)?;
                        Event::Close(code, reason)
                    }
                    _ => {
                        let kind = self.message_kind.unwrap_or(MessageKind::Binary);
                        if std::mem::take(&mut self.message_compressed) {
                            Event::CompressedMessage(kind, &self.message)
                        } else {
                            Event::Message(kind, &self.message)
                        }
                    }
                }
            }
        };
        Ok((consumed, Some(event)))
    }

    /// Forgets the buffer lent out by the last event.
    fn release_delivered(&mut self) {
        match self.delivered.take() {
            // A control payload is freed, not kept: every peer answers a ping
            // now and then, and an idle connection should hold nothing.
            Some(OpCode::Ping | OpCode::Pong | OpCode::Close) => self.control = Vec::new(),
            Some(_) => {
                self.message_kind = None;
                self.utf8_valid_up_to = 0;
                if self.message.capacity() > KEEP_BUFFER_CAPACITY {
                    self.message = Vec::new();
                } else {
                    self.message.clear();
                }
            }
            None => {}
        }
    }

    /// The state machine: returns bytes consumed and the opcode of a frame that
    /// completed an event (a control frame, or the final fragment of a message).
    fn read(&mut self, input: &[u8]) -> Result<(usize, Option<Complete>), ProtocolError> {
        let mut pos = 0;
        loop {
            match self.state {
                FrameState::Header => {
                    // Usually the whole header is in `input` and is decoded where it
                    // lies; only a header split across reads is gathered first.
                    let (header, used) = if self.header_len == 0 {
                        match frame::decode_header_with(&input[pos..], self.compression)? {
                            Some(found) => found,
                            None => {
                                let rest = &input[pos..];
                                let n = rest.len().min(MAX_HEADER_LEN);
                                self.header[..n].copy_from_slice(&rest[..n]);
                                self.header_len = n;
                                return Ok((input.len(), None));
                            }
                        }
                    } else {
                        let take = (MAX_HEADER_LEN - self.header_len).min(input.len() - pos);
                        self.header[self.header_len..self.header_len + take]
                            .copy_from_slice(&input[pos..pos + take]);
                        let available = self.header_len + take;
                        match frame::decode_header_with(
                            &self.header[..available],
                            self.compression,
                        )? {
                            None => {
                                self.header_len = available;
                                return Ok((input.len(), None));
                            }
                            // Only the new bytes that belong to this header count.
                            Some((header, len)) => {
                                (header, len - std::mem::take(&mut self.header_len))
                            }
                        }
                    };
                    pos += used;
                    self.start_frame(header)?;
                    // A one-frame data message that lies whole in `input` is lent
                    // out from there (see `next_event`): no copy.
                    let whole_here = header.payload_len <= (input.len() - pos) as u64;
                    if whole_here
                        && header.fin
                        && matches!(header.opcode, OpCode::Text | OpCode::Binary)
                    {
                        let end = pos + header.payload_len as usize;
                        let (start, mask) = (pos, header.mask);
                        return Ok((end, Some(Complete::InPlace { start, mask })));
                    }
                    self.state = FrameState::Payload {
                        header,
                        remaining: header.payload_len,
                        offset: 0,
                    };
                }
                FrameState::Payload {
                    header,
                    remaining,
                    offset,
                } => {
                    let take = remaining.min((input.len() - pos) as u64) as usize;
                    let chunk = &input[pos..pos + take];
                    pos += take;
                    self.take_payload(&header, chunk, offset)?;
                    let remaining = remaining - take as u64;
                    if remaining > 0 {
                        self.state = FrameState::Payload {
                            header,
                            remaining,
                            offset: offset + take,
                        };
                        return Ok((pos, None));
                    }
                    self.state = FrameState::Header;
                    if let Some(opcode) = self.finish_frame(&header)? {
                        return Ok((pos, Some(Complete::Buffered(opcode))));
                    }
                }
            }
            if pos == input.len() && matches!(self.state, FrameState::Header) {
                return Ok((pos, None));
            }
        }
    }

    /// Checks a new frame against the message in progress (§5.4) and the size limit.
    fn start_frame(&mut self, header: FrameHeader) -> Result<(), ProtocolError> {
        if header.compressed {
            // RFC 7692 §6.1: only the first frame of a data message may say so.
            if !matches!(header.opcode, OpCode::Text | OpCode::Binary) {
                return Err(ProtocolError::new(
                    CloseCode::PROTOCOL_ERROR,
                    "RSV1 on a control or continuation frame",
                ));
            }
            self.message_compressed = true;
        }
        match header.opcode {
            OpCode::Continuation if self.message_kind.is_none() => Err(ProtocolError::new(
                CloseCode::PROTOCOL_ERROR,
                "continuation frame without a message to continue",
            )),
            OpCode::Text | OpCode::Binary if self.message_kind.is_some() => {
                Err(ProtocolError::new(
                    CloseCode::PROTOCOL_ERROR,
                    "new data frame inside a fragmented message",
                ))
            }
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {
                if header.opcode == OpCode::Text {
                    self.message_kind = Some(MessageKind::Text);
                } else if header.opcode == OpCode::Binary {
                    self.message_kind = Some(MessageKind::Binary);
                }
                // Decided from the header, before a byte of payload is stored. A
                // compressed message is held to the limit once inflated; its wire
                // bytes may be larger than that when the data does not compress:
                // fast compressors (zlib-ng, zlib-rs at level 1) grow it by up to
                // 12.5% rather than fall back to stored blocks, so an
                // incompressible message at the limit still passes.
                let total = (self.message.len() as u64).saturating_add(header.payload_len);
                let mut limit = self.max_message_size as u64;
                if self.message_compressed {
                    limit += limit / 8 + 64;
                }
                if total > limit {
                    return Err(ProtocolError::new(
                        CloseCode::MESSAGE_TOO_BIG,
                        "message exceeds the size limit",
                    ));
                }
                Ok(())
            }
            OpCode::Close | OpCode::Ping | OpCode::Pong => {
                self.control.reserve(MAX_CONTROL_PAYLOAD);
                Ok(())
            }
        }
    }

    /// Stores and unmasks a piece of payload, validating text as it comes.
    fn take_payload(
        &mut self,
        header: &FrameHeader,
        chunk: &[u8],
        offset: usize,
    ) -> Result<(), ProtocolError> {
        let target = if header.opcode.is_control() {
            &mut self.control
        } else {
            if offset == 0 {
                // Reserve what this frame announces, but no more than a read's
                // worth: a header alone must not make the server commit memory.
                let announced = header.payload_len.min(RESERVE_AHEAD) as usize;
                self.message.reserve(announced.max(chunk.len()));
            }
            &mut self.message
        };
        let start = target.len();
        target.extend_from_slice(chunk);
        frame::apply_mask(&mut target[start..], header.mask, offset);
        let text = self.message_kind == Some(MessageKind::Text) && !self.message_compressed;
        if !header.opcode.is_control() && text {
            self.check_utf8(false)?;
        }
        Ok(())
    }

    /// Called when a frame's last payload byte has arrived.
    fn finish_frame(&mut self, header: &FrameHeader) -> Result<Option<OpCode>, ProtocolError> {
        if header.opcode.is_control() {
            return Ok(Some(header.opcode));
        }
        if !header.fin {
            return Ok(None);
        }
        if self.message_kind == Some(MessageKind::Text) && !self.message_compressed {
            self.check_utf8(true)?;
        }
        Ok(Some(header.opcode))
    }

    /// Validates the text received since the last check. A sequence cut off at the
    /// end is fine mid-message (its next byte may be on its way) but not at the end.
    fn check_utf8(&mut self, message_complete: bool) -> Result<(), ProtocolError> {
        let unchecked = &self.message[self.utf8_valid_up_to..];
        if unchecked.is_ascii() {
            self.utf8_valid_up_to = self.message.len();
            return Ok(());
        }
        match std::str::from_utf8(unchecked) {
            Ok(_) => {
                self.utf8_valid_up_to = self.message.len();
                Ok(())
            }
            Err(error) => {
                if error.error_len().is_none() && !message_complete {
                    self.utf8_valid_up_to += error.valid_up_to();
                    Ok(())
                } else {
                    Err(ProtocolError::new(
                        CloseCode::INVALID_PAYLOAD,
                        "text message is not valid UTF-8",
                    ))
                }
            }
        }
    }
}

/// Whether `bytes` is UTF-8. Chat and load-test traffic is mostly ASCII, which
/// `is_ascii` checks a word at a time even for short messages; std's validator
/// takes the rest.
fn is_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

    /// A masked client frame, as a browser would send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let first_byte = if fin { 0x80 } else { 0 } | opcode;
        frame::encode_client_frame(&mut out, first_byte, MASK, payload);
        out
    }

    /// What the receiver makes of `input`, fed `piece` bytes at a time.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, String),
        Compressed(MessageKind, Vec<u8>),
        Error(u16),
    }

    fn feed(rx: &mut Receiver, input: &[u8], piece: usize) -> Vec<Seen> {
        let mut seen = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            let mut chunk = chunk.to_vec();
            let mut pos = 0;
            loop {
                match rx.next_event(&mut chunk[pos..]) {
                    Ok((n, Some(event))) => {
                        pos += n;
                        seen.push(match event {
                            Event::Message(MessageKind::Text, p) => {
                                Seen::Text(String::from_utf8(p.to_vec()).unwrap())
                            }
                            Event::Message(MessageKind::Binary, p) => Seen::Binary(p.to_vec()),
                            Event::CompressedMessage(kind, p) => Seen::Compressed(kind, p.to_vec()),
                            Event::Ping(p) => Seen::Ping(p.to_vec()),
                            Event::Pong(p) => Seen::Pong(p.to_vec()),
                            Event::Close(code, reason) => {
                                Seen::Close(code.map(|c| c.0), reason.to_string())
                            }
                        });
                    }
                    Ok((n, None)) => {
                        pos += n;
                        if pos >= chunk.len() || rx.is_finished() {
                            break;
                        }
                    }
                    Err(e) => {
                        seen.push(Seen::Error(e.code.0));
                        return seen;
                    }
                }
            }
            if rx.is_finished() {
                break;
            }
        }
        seen
    }

    fn run(input: &[u8]) -> Vec<Seen> {
        let whole = feed(&mut Receiver::new(1 << 20), input, input.len());
        // Feeding byte by byte must see exactly the same thing.
        let bytewise = feed(&mut Receiver::new(1 << 20), input, 1);
        assert_eq!(whole, bytewise);
        whole
    }

    // ---- permessage-deflate (RFC 7692 §6) ----

    /// What a receiver that negotiated permessage-deflate makes of `input`,
    /// whole and byte by byte.
    fn run_compressed(input: &[u8], max: usize) -> Vec<Seen> {
        let whole = feed(
            &mut Receiver::new(max).with_compression(),
            input,
            input.len(),
        );
        let bytewise = feed(&mut Receiver::new(max).with_compression(), input, 1);
        assert_eq!(whole, bytewise);
        whole
    }

    #[test]
    fn rsv1_on_a_first_frame_marks_the_message_compressed() {
        // RFC 7692 §7.2.3.1: "Hello" compressed, in one frame with RSV1.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let input = client_frame(true, 0x40 | 1, &hello);
        assert_eq!(
            run_compressed(&input, 100),
            [Seen::Compressed(MessageKind::Text, hello.to_vec())]
        );
        // In two fragments: RSV1 on the first only, UTF-8 not checked on the wire.
        let mut input = client_frame(false, 0x40 | 1, &hello[..3]);
        input.extend(client_frame(true, 0, &hello[3..]));
        assert_eq!(
            run_compressed(&input, 100),
            [Seen::Compressed(MessageKind::Text, hello.to_vec())]
        );
        // A plain message on the same connection stays plain.
        let input = client_frame(true, 2, b"plain");
        assert_eq!(
            run_compressed(&input, 100),
            [Seen::Binary(b"plain".to_vec())]
        );
    }

    #[test]
    fn rsv1_on_a_continuation_or_control_frame_is_a_protocol_error() {
        let mut input = client_frame(false, 1, b"a");
        input.extend(client_frame(true, 0x40, b"b"));
        assert_eq!(run_compressed(&input, 100), [Seen::Error(1002)]);
        for control in [0x8, 0x9, 0xA] {
            let input = client_frame(true, 0x40 | control, b"");
            assert_eq!(
                run_compressed(&input, 100),
                [Seen::Error(1002)],
                "{control:#x}"
            );
        }
    }

    #[test]
    fn rsv1_without_the_extension_is_a_protocol_error() {
        let input = client_frame(true, 0x40 | 1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(run(&input), [Seen::Error(1002)]);
    }

    #[test]
    fn compressed_wire_bytes_get_deflates_overhead_over_the_limit() {
        // The limit is for the inflated message; an incompressible one at the
        // limit is a little larger on the wire, and must still arrive.
        let at_limit = client_frame(true, 0x40 | 2, &[0; 1024 + 128 + 64]);
        assert!(matches!(
            run_compressed(&at_limit, 1024)[..],
            [Seen::Compressed(..)]
        ));
        let over = client_frame(true, 0x40 | 2, &[0; 1024 + 128 + 65]);
        assert_eq!(run_compressed(&over, 1024), [Seen::Error(1009)]);
    }

    // ---- Data messages (§5.6) ----

    #[test]
    fn single_frame_text_and_binary() {
        let mut input = client_frame(true, 1, b"Hello");
        input.extend(client_frame(true, 2, &[0, 1, 2]));
        input.extend(client_frame(true, 1, b""));
        assert_eq!(
            run(&input),
            vec![
                Seen::Text("Hello".into()),
                Seen::Binary(vec![0, 1, 2]),
                Seen::Text(String::new())
            ]
        );
    }

    #[test]
    fn lengths_at_the_encoding_boundaries() {
        for len in [0, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let seen = feed(
                &mut Receiver::new(1 << 20),
                &client_frame(true, 2, &payload),
                4096,
            );
            assert_eq!(seen, vec![Seen::Binary(payload)], "length {len}");
        }
    }

    // ---- Fragmentation (§5.4) ----

    #[test]
    fn fragments_are_reassembled() {
        let mut input = client_frame(false, 1, b"Hel");
        input.extend(client_frame(false, 0, b""));
        input.extend(client_frame(true, 0, b"lo"));
        assert_eq!(run(&input), vec![Seen::Text("Hello".into())]);
    }

    #[test]
    fn control_frames_inside_a_fragmented_message_are_handled_at_once() {
        let mut input = client_frame(false, 1, b"Hel");
        input.extend(client_frame(true, 9, b"ping!"));
        input.extend(client_frame(true, 0, b"lo"));
        assert_eq!(
            run(&input),
            vec![Seen::Ping(b"ping!".to_vec()), Seen::Text("Hello".into())]
        );
    }

    #[test]
    fn continuation_without_a_message_is_a_protocol_error() {
        assert_eq!(run(&client_frame(true, 0, b"x")), vec![Seen::Error(1002)]);
    }

    #[test]
    fn new_message_inside_a_fragmented_one_is_a_protocol_error() {
        let mut input = client_frame(false, 1, b"a");
        input.extend(client_frame(true, 2, b"b"));
        assert_eq!(run(&input), vec![Seen::Error(1002)]);
    }

    #[test]
    fn many_fragments_reassemble() {
        let mut input = Vec::new();
        input.extend(client_frame(false, 2, b"x"));
        for _ in 0..65_534 {
            input.extend(client_frame(false, 0, b"x"));
        }
        input.extend(client_frame(true, 0, b"x"));
        let seen = feed(&mut Receiver::new(1 << 20), &input, 65536);
        assert_eq!(seen, vec![Seen::Binary(vec![b'x'; 65_536])]);
    }

    // ---- UTF-8 (§5.6, §8.1) ----

    #[test]
    fn utf8_split_across_fragments_is_fine() {
        let euro = "€".as_bytes(); // e2 82 ac
        let mut input = client_frame(false, 1, &euro[..1]);
        input.extend(client_frame(true, 0, &euro[1..]));
        assert_eq!(run(&input), vec![Seen::Text("€".into())]);
    }

    #[test]
    fn invalid_utf8_fails_on_the_fragment_that_carries_it() {
        // 6.4.1-style: the middle fragment has the bad byte; the last never matters.
        let mut rx = Receiver::new(1024);
        let first = client_frame(false, 1, "κόσμε".as_bytes());
        assert_eq!(feed(&mut rx, &first, first.len()), vec![]);
        let bad = client_frame(false, 0, &[0xf4, 0x90, 0x80, 0x80]);
        assert_eq!(feed(&mut rx, &bad, bad.len()), vec![Seen::Error(1007)]);
    }

    #[test]
    fn invalid_utf8_fails_mid_frame_before_the_frame_ends() {
        // 6.4.3-style: one frame, arriving in pieces; the bad byte is in piece two.
        let mut payload = "κόσμε".as_bytes().to_vec();
        payload.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80]);
        payload.extend_from_slice(b"edited");
        let input = client_frame(true, 1, &payload);
        let bad_at = input.len() - 8; // header + "κόσμε" + 0xf4 0x90: decided here
        let mut rx = Receiver::new(1024);
        assert_eq!(feed(&mut rx, &input[..bad_at - 3], 1000), vec![]);
        assert_eq!(
            feed(&mut rx, &input[bad_at - 3..bad_at], 1000),
            vec![Seen::Error(1007)]
        );
    }

    #[test]
    fn truncated_utf8_at_message_end_is_invalid() {
        assert_eq!(
            run(&client_frame(true, 1, &[0xe2, 0x82])),
            vec![Seen::Error(1007)]
        );
    }

    #[test]
    fn a_valid_message_before_a_bad_one_is_still_delivered() {
        let mut input = client_frame(true, 1, b"ok");
        input.extend(client_frame(true, 1, &[0xff]));
        assert_eq!(
            run(&input),
            vec![Seen::Text("ok".into()), Seen::Error(1007)]
        );
    }

    // ---- Size limit ----

    #[test]
    fn oversized_message_is_refused_from_the_header() {
        let mut rx = Receiver::new(100);
        // Only the header is sent: the verdict needs no payload.
        let input = client_frame(true, 2, &[0; 101]);
        assert_eq!(feed(&mut rx, &input[..8], 8), vec![Seen::Error(1009)]);
        assert_eq!(rx.buffered(), 0);
    }

    #[test]
    fn oversized_fragmented_message_is_refused() {
        let mut rx = Receiver::new(100);
        let mut input = client_frame(false, 2, &[0; 60]);
        input.extend(client_frame(true, 0, &[0; 60]));
        assert_eq!(feed(&mut rx, &input, 1000), vec![Seen::Error(1009)]);
    }

    // ---- Control frames (§5.5) ----

    #[test]
    fn ping_pong_and_close() {
        let mut input = client_frame(true, 9, b"p");
        input.extend(client_frame(true, 10, b"q"));
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye");
        input.extend(client_frame(true, 8, &close));
        input.extend(client_frame(true, 1, b"after close: ignored"));
        assert_eq!(
            run(&input),
            vec![
                Seen::Ping(b"p".to_vec()),
                Seen::Pong(b"q".to_vec()),
                Seen::Close(Some(1000), "bye".into())
            ]
        );
    }

    #[test]
    fn empty_close_has_no_code() {
        assert_eq!(
            run(&client_frame(true, 8, b"")),
            vec![Seen::Close(None, String::new())]
        );
    }

    #[test]
    fn close_payload_rules() {
        assert_eq!(run(&client_frame(true, 8, &[3])), vec![Seen::Error(1002)]);
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let frame = client_frame(true, 8, &code.to_be_bytes());
            assert_eq!(run(&frame), vec![Seen::Error(1002)], "code {code}");
        }
        for code in [1000u16, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
            let frame = client_frame(true, 8, &code.to_be_bytes());
            assert_eq!(run(&frame), vec![Seen::Close(Some(code), String::new())]);
        }
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.extend_from_slice(&[0xce, 0xba, 0xff]);
        assert_eq!(
            run(&client_frame(true, 8, &bad_reason)),
            vec![Seen::Error(1007)]
        );
    }

    #[test]
    fn frame_errors_are_protocol_errors() {
        assert_eq!(run(&[0xc1, 0x80, 0, 0, 0, 0]), vec![Seen::Error(1002)]);
        assert_eq!(run(&[0x83, 0x80, 0, 0, 0, 0]), vec![Seen::Error(1002)]);
        assert_eq!(run(&[0x81, 0x00]), vec![Seen::Error(1002)]);
    }

    #[test]
    fn encode_close_truncates_reason_on_a_char_boundary() {
        let mut out = Vec::new();
        let long = "é".repeat(100);
        encode_close(&mut out, CloseCode::NORMAL, &long);
        assert_eq!(out[0], 0x88);
        let len = out[1] as usize;
        assert!(len <= 125);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
        assert_eq!(out.len(), 2 + len);
    }

    proptest::proptest! {
        #[test]
        fn receiver_never_panics(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            piece in 1usize..64,
        ) {
            let _ = feed(&mut Receiver::new(256), &bytes, piece);
        }

        #[test]
        fn valid_frames_survive_any_split(
            texts in proptest::collection::vec(".{0,40}", 1..5),
            piece in 1usize..50,
        ) {
            let mut input = Vec::new();
            for t in &texts {
                input.extend(client_frame(true, 1, t.as_bytes()));
            }
            let seen = feed(&mut Receiver::new(1 << 20), &input, piece);
            let expected: Vec<Seen> = texts.iter().map(|t| Seen::Text(t.clone())).collect();
            proptest::prop_assert_eq!(seen, expected);
        }
    }
}
