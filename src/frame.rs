//! The WebSocket frame wire format: header decoding and encoding, and masking.
//!
//! Implements RFC 6455 §5.2 (base framing protocol) and §5.3 (client-to-server
//! masking), and RFC 7692 §6's use of RSV1. §5.2's diagram is the map of this
//! file; each field has a named constant below:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! | Masking-key (continued)       |          Payload Data         |
//! +-------------------------------- - - - - - - - - - - - - - - - +
//! :                     Payload Data continued ...                :
//! + - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - +
//! |                     Payload Data continued ...                |
//! +---------------------------------------------------------------+
//! ```
//!
//! This module is sans-IO: bytes in, values out. Decoding never panics, whatever
//! the input, and returns `Ok(None)` ("not enough bytes yet") without consuming
//! anything, so every rule is a unit test on a byte slice.

use std::fmt;

/// Bit 7 of byte 0: this is the final fragment of a message (§5.2 "FIN").
const FIN_BIT: u8 = 0b1000_0000;
/// Bits 6..4 of byte 0: RSV1, RSV2, RSV3, which must be 0 unless an extension
/// defines them (§5.2).
const RSV_BITS: u8 = 0b0111_0000;
/// RSV1, which permessage-deflate defines as "Per-Message Compressed" (RFC 7692
/// §6): allowed only when that extension was negotiated.
const RSV1_BIT: u8 = 0b0100_0000;
/// Bits 3..0 of byte 0: the opcode.
const OPCODE_BITS: u8 = 0b0000_1111;
/// Bit 7 of byte 1: the payload is masked (§5.2 "MASK").
const MASK_BIT: u8 = 0b1000_0000;
/// Bits 6..0 of byte 1: the 7-bit payload length, or one of the two markers below.
const LEN7_BITS: u8 = 0b0111_1111;
/// 7-bit length value meaning "the next 2 bytes hold the length".
const LEN7_MARKER_16: u8 = 126;
/// 7-bit length value meaning "the next 8 bytes hold the length".
const LEN7_MARKER_64: u8 = 127;
/// The most significant bit of the 64-bit length "MUST be 0" (§5.2).
const LEN64_MSB: u64 = 1 << 63;
/// Control frames carry at most 125 bytes of payload (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The longest header: 2 bytes, 8 bytes of extended length, 4 bytes of mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// The frame opcodes of §5.2 and §11.8. Reserved opcodes are not representable:
/// decoding them is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: a continuation fragment of a text or binary message.
    Continuation,
    /// 0x1: the first (or only) frame of a UTF-8 text message.
    Text,
    /// 0x2: the first (or only) frame of a binary message.
    Binary,
    /// 0x8: connection close (§5.5.1).
    Close,
    /// 0x9: ping (§5.5.2).
    Ping,
    /// 0xA: pong (§5.5.3).
    Pong,
}

impl OpCode {
    /// Decodes the 4-bit opcode field; `None` for the reserved values 0x3-0x7 and
    /// 0xB-0xF.
    pub fn from_bits(bits: u8) -> Option<OpCode> {
        match bits {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// The 4-bit value on the wire.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Control frames are those whose opcode has the high bit set (§5.5).
    pub fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }
}

/// A decoded frame header (everything before the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this frame ends its message.
    pub fin: bool,
    pub opcode: OpCode,
    /// The 4-byte masking key. Every client-to-server frame has one (§5.1);
    /// an unmasked frame is an error, so this is never absent.
    pub mask: [u8; 4],
    pub payload_len: u64,
    /// RSV1, "Per-Message Compressed" (RFC 7692 §6); only ever set when the
    /// caller allowed it.
    pub compressed: bool,
}

/// Why a header is not acceptable from a client. Every one of these is a protocol
/// error (close code 1002) for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// RSV1-3 set without a negotiated extension (§5.2).
    ReservedBitsSet,
    /// Opcode 0x3-0x7 or 0xB-0xF (§5.2).
    ReservedOpcode(u8),
    /// A client frame without the MASK bit (§5.1: the server MUST close).
    UnmaskedClientFrame,
    /// A control frame with more than 125 bytes of payload (§5.5).
    ControlFrameTooLong,
    /// A control frame with FIN clear (§5.5: control frames MUST NOT be fragmented).
    FragmentedControlFrame,
    /// A 64-bit length with its most significant bit set (§5.2).
    LengthOutOfRange,
    /// A 16- or 64-bit length that could have been written shorter. §5.2 says
    /// "the minimal number of bytes MUST be used to encode the length".
    NonMinimalLength,
}

impl FrameError {
    /// A short description, also used as the reason in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            FrameError::ReservedBitsSet => "reserved bits set",
            FrameError::ReservedOpcode(_) => "reserved opcode",
            FrameError::UnmaskedClientFrame => "client frame not masked",
            FrameError::ControlFrameTooLong => "control frame longer than 125 bytes",
            FrameError::FragmentedControlFrame => "fragmented control frame",
            FrameError::LengthOutOfRange => "payload length has its top bit set",
            FrameError::NonMinimalLength => "payload length not minimally encoded",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            other => f.write_str(other.reason()),
        }
    }
}

/// Decodes one client frame header from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a header, and
/// `Ok(Some((header, header_len)))` when it holds all of it; the payload starts at
/// `buf[header_len..]`. Errors are decided as early as the bytes allow: reserved
/// bits and opcodes fail on the first byte.
pub fn decode_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, FrameError> {
    decode_header_with(buf, false)
}

/// [`decode_header`], with RSV1 allowed when `rsv1_allowed` (permessage-deflate
/// was negotiated). Which frames may carry it is the message layer's rule.
pub fn decode_header_with(
    buf: &[u8],
    rsv1_allowed: bool,
) -> Result<Option<(FrameHeader, usize)>, FrameError> {
    let Some(&byte0) = buf.first() else {
        return Ok(None);
    };
    let allowed = if rsv1_allowed { RSV1_BIT } else { 0 };
    if byte0 & RSV_BITS & !allowed != 0 {
        return Err(FrameError::ReservedBitsSet);
    }
    let opcode_bits = byte0 & OPCODE_BITS;
    let opcode = OpCode::from_bits(opcode_bits).ok_or(FrameError::ReservedOpcode(opcode_bits))?;
    let fin = byte0 & FIN_BIT != 0;
    if opcode.is_control() && !fin {
        return Err(FrameError::FragmentedControlFrame);
    }

    let Some(&byte1) = buf.get(1) else {
        return Ok(None);
    };
    if byte1 & MASK_BIT == 0 {
        return Err(FrameError::UnmaskedClientFrame);
    }
    let len7 = byte1 & LEN7_BITS;
    if opcode.is_control() && usize::from(len7) > MAX_CONTROL_PAYLOAD {
        return Err(FrameError::ControlFrameTooLong);
    }

    let (payload_len, len_end) = match len7 {
        LEN7_MARKER_16 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            let len = u64::from(u16::from_be_bytes([bytes[0], bytes[1]]));
            if len < u64::from(LEN7_MARKER_16) {
                return Err(FrameError::NonMinimalLength);
            }
            (len, 4)
        }
        LEN7_MARKER_64 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            let len = u64::from_be_bytes(be);
            if len & LEN64_MSB != 0 {
                return Err(FrameError::LengthOutOfRange);
            }
            if len <= u64::from(u16::MAX) {
                return Err(FrameError::NonMinimalLength);
            }
            (len, 10)
        }
        short => (u64::from(short), 2),
    };

    let Some(key) = buf.get(len_end..len_end + 4) else {
        return Ok(None);
    };
    let mask = [key[0], key[1], key[2], key[3]];
    let header = FrameHeader {
        fin,
        opcode,
        mask,
        payload_len,
        compressed: byte0 & RSV1_BIT != 0,
    };
    Ok(Some((header, len_end + 4)))
}

/// Appends the header of an unmasked server frame (§5.2) to `out`, using the
/// shortest length encoding.
#[inline]
pub fn encode_header(out: &mut Vec<u8>, fin: bool, opcode: OpCode, payload_len: usize) {
    out.push(if fin { FIN_BIT } else { 0 } | opcode.bits());
    push_length(out, 0, payload_len);
}

/// Appends the second header byte (with `mask_bit`) and any extended length.
#[inline]
fn push_length(out: &mut Vec<u8>, mask_bit: u8, payload_len: usize) {
    match payload_len {
        0..=125 => out.push(mask_bit | payload_len as u8),
        126..=0xFFFF => {
            out.push(mask_bit | LEN7_MARKER_16);
            out.extend_from_slice(&(payload_len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | LEN7_MARKER_64);
            out.extend_from_slice(&(payload_len as u64).to_be_bytes());
        }
    }
}

/// Appends a masked frame as a client sends it (§5.3). `first_byte` holds the
/// FIN, RSV and opcode bits exactly as they go on the wire, so that tests and
/// load generators can also build the frames a server must refuse.
pub fn encode_client_frame(out: &mut Vec<u8>, first_byte: u8, mask: [u8; 4], payload: &[u8]) {
    out.reserve(payload.len() + MAX_HEADER_LEN);
    out.push(first_byte);
    push_length(out, MASK_BIT, payload.len());
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

/// Appends a whole unmasked, unfragmented server frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    out.reserve(payload.len() + MAX_HEADER_LEN);
    encode_header(out, true, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// A whole unmasked, unfragmented server frame, in a buffer of its own.
pub fn server_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, opcode, payload);
    out
}

/// Appends a whole server frame whose payload is compressed (RSV1 set, RFC 7692
/// §6: on the first and here only frame of a data message).
pub fn encode_compressed_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    out.reserve(payload.len() + MAX_HEADER_LEN);
    out.push(FIN_BIT | RSV1_BIT | opcode.bits());
    push_length(out, 0, payload.len());
    out.extend_from_slice(payload);
}

/// Whether a server frame made by this module is compressed (RSV1).
pub fn is_compressed(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & RSV1_BIT != 0)
}

/// The opcode of a server frame made by this module.
pub fn server_opcode(frame: &[u8]) -> Option<OpCode> {
    frame
        .first()
        .and_then(|b| OpCode::from_bits(b & OPCODE_BITS))
}

/// Where the payload of a whole server frame made by this module starts.
pub fn server_payload(frame: &[u8]) -> &[u8] {
    let start = match frame.get(1).map(|b| b & LEN7_BITS) {
        Some(LEN7_MARKER_16) => 4,
        Some(LEN7_MARKER_64) => 10,
        _ => 2,
    };
    frame.get(start..).unwrap_or(&[])
}

/// XORs `buf` with the masking key (§5.3). `offset` is the position of `buf[0]`
/// within the frame's payload, so a payload that arrives in pieces is unmasked
/// piece by piece with the same result as all at once.
///
/// Works eight bytes at a time (the tail byte by byte); the compiler turns the
/// loop into vector instructions.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    // Rotate the key so that key[0] applies to buf[0].
    let shift = offset % 4;
    let key = [
        mask[shift],
        mask[(shift + 1) % 4],
        mask[(shift + 2) % 4],
        mask[(shift + 3) % 4],
    ];
    let key64 = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let masked = u64::from_ne_bytes(word) ^ key64;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so key[0] still lines up with it.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(fin: bool, opcode: OpCode, mask: [u8; 4], len: u64) -> FrameHeader {
        FrameHeader {
            fin,
            opcode,
            mask,
            payload_len: len,
            compressed: false,
        }
    }

    // ---- RFC 6455 §5.7 examples ----

    #[test]
    fn rfc_5_7_masked_hello() {
        // "A single-frame masked text message" containing "Hello".
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = decode_header(&bytes).unwrap().unwrap();
        assert_eq!(h, header(true, OpCode::Text, [0x37, 0xfa, 0x21, 0x3d], 5));
        assert_eq!(n, 6);
        let mut payload = bytes[n..].to_vec();
        apply_mask(&mut payload, h.mask, 0);
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn rfc_5_7_masked_hello_encodes_as_a_client_would() {
        let mut out = Vec::new();
        encode_client_frame(&mut out, 0x81, [0x37, 0xfa, 0x21, 0x3d], b"Hello");
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn rfc_5_7_unmasked_hello_encodes() {
        // "A single-frame unmasked text message": what the server sends.
        let mut out = Vec::new();
        encode_frame(&mut out, OpCode::Text, b"Hello");
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    }

    #[test]
    fn rfc_5_7_fragmented_unmasked_hello_headers() {
        // "A fragmented unmasked text message": "Hel" then "lo".
        let mut first = Vec::new();
        encode_header(&mut first, false, OpCode::Text, 3);
        assert_eq!(first, [0x01, 0x03]);
        let mut last = Vec::new();
        encode_header(&mut last, true, OpCode::Continuation, 2);
        assert_eq!(last, [0x80, 0x02]);
    }

    #[test]
    fn rfc_5_7_unmasked_ping_and_masked_pong() {
        let mut ping = Vec::new();
        encode_frame(&mut ping, OpCode::Ping, b"Hello");
        assert_eq!(ping, [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        // "Masked Pong response" containing "Hello".
        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = decode_header(&pong).unwrap().unwrap();
        assert_eq!(h.opcode, OpCode::Pong);
        let mut payload = pong[n..].to_vec();
        apply_mask(&mut payload, h.mask, 0);
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn rfc_5_7_length_encodings() {
        // "256 bytes binary message in a single unmasked frame": 0x82 0x7E 0x0100.
        let mut out = Vec::new();
        encode_header(&mut out, true, OpCode::Binary, 256);
        assert_eq!(out, [0x82, 0x7e, 0x01, 0x00]);
        // "64KiB binary message in a single unmasked frame".
        out.clear();
        encode_header(&mut out, true, OpCode::Binary, 65536);
        assert_eq!(out, [0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]);
    }

    // ---- RSV1 and permessage-deflate (RFC 7692 §6) ----

    #[test]
    fn rsv1_is_an_error_unless_allowed_and_rsv2_rsv3_always_are() {
        let frame = [0xC1, 0x81, 1, 2, 3, 4, 0]; // FIN, RSV1, text, masked, 1 byte
        assert_eq!(decode_header(&frame), Err(FrameError::ReservedBitsSet));
        let (h, n) = decode_header_with(&frame, true).unwrap().unwrap();
        assert!(h.compressed);
        assert_eq!(n, 6);
        for rsv in [0x20, 0x10, 0x60] {
            let frame = [0x81 | rsv, 0x80, 1, 2, 3, 4];
            assert_eq!(
                decode_header_with(&frame, true),
                Err(FrameError::ReservedBitsSet)
            );
        }
    }

    #[test]
    fn compressed_frames_carry_rsv1_and_payloads_are_found() {
        let mut out = Vec::new();
        encode_compressed_frame(&mut out, OpCode::Text, &[0xf2, 0x48]);
        assert_eq!(out, [0xC1, 0x02, 0xf2, 0x48]);
        assert_eq!(server_payload(&out), [0xf2, 0x48]);
        for len in [0, 125, 126, 65535, 65536] {
            out.clear();
            encode_frame(&mut out, OpCode::Binary, &vec![7; len]);
            assert_eq!(server_payload(&out).len(), len);
        }
    }

    // ---- Incremental decoding ----

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let mut bytes = vec![0x82, 0xff];
        bytes.extend_from_slice(&70000u64.to_be_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        for end in 0..bytes.len() {
            assert_eq!(decode_header(&bytes[..end]), Ok(None), "prefix {end}");
        }
        let (h, n) = decode_header(&bytes).unwrap().unwrap();
        assert_eq!(h, header(true, OpCode::Binary, [1, 2, 3, 4], 70000));
        assert_eq!(n, 14);
    }

    #[test]
    fn sixteen_bit_length() {
        let bytes = [0x81, 0xfe, 0x00, 0x7e, 9, 9, 9, 9];
        let (h, n) = decode_header(&bytes).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (126, 8));
    }

    // ---- Rejections (§5.2, §5.5) ----

    #[test]
    fn reserved_bits_are_rejected_on_the_first_byte() {
        for rsv in [0x40, 0x20, 0x10] {
            assert_eq!(
                decode_header(&[0x81 | rsv]),
                Err(FrameError::ReservedBitsSet)
            );
        }
    }

    #[test]
    fn reserved_opcodes_are_rejected() {
        for op in [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                decode_header(&[0x80 | op]),
                Err(FrameError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn unmasked_client_frames_are_rejected() {
        assert_eq!(
            decode_header(&[0x81, 0x05]),
            Err(FrameError::UnmaskedClientFrame)
        );
    }

    #[test]
    fn control_frame_rules() {
        assert_eq!(
            decode_header(&[0x09]),
            Err(FrameError::FragmentedControlFrame)
        );
        assert_eq!(
            decode_header(&[0x89, 0x80 | 126]),
            Err(FrameError::ControlFrameTooLong)
        );
        assert!(decode_header(&[0x89, 0x80 | 125, 0, 0, 0, 0])
            .unwrap()
            .is_some());
    }

    #[test]
    fn length_rules() {
        let mut bytes = vec![0x82, 0xff];
        bytes.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(decode_header(&bytes), Err(FrameError::LengthOutOfRange));
        assert_eq!(
            decode_header(&[0x82, 0xfe, 0x00, 0x05]),
            Err(FrameError::NonMinimalLength)
        );
        let mut bytes = vec![0x82, 0xff];
        bytes.extend_from_slice(&65535u64.to_be_bytes());
        assert_eq!(decode_header(&bytes), Err(FrameError::NonMinimalLength));
    }

    // ---- Masking (§5.3) ----

    #[test]
    fn masking_in_pieces_equals_masking_at_once() {
        let mask = [0xa1, 0xb2, 0xc3, 0xd4];
        let original: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, mask, 0);
        for (i, b) in whole.iter().enumerate() {
            assert_eq!(*b, original[i] ^ mask[i % 4]);
        }
        for split in [1, 3, 5, 8, 13, 999] {
            let mut pieces = original.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, split);
            assert_eq!(pieces, whole, "split at {split}");
        }
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..32)) {
            let _ = decode_header(&bytes);
        }

        #[test]
        fn encode_then_decode_round_trips(len in 0usize..200_000, fin: bool, mask: [u8; 4]) {
            let mut out = Vec::new();
            encode_header(&mut out, fin, OpCode::Binary, len);
            // A server header has no mask; add one as a client would.
            out[1] |= 0x80;
            out.extend_from_slice(&mask);
            let (h, n) = decode_header(&out).unwrap().unwrap();
            proptest::prop_assert_eq!(h, header(fin, OpCode::Binary, mask, len as u64));
            proptest::prop_assert_eq!(n, out.len());
        }
    }
}
