//! The load client's own WebSocket wire format: frame opcodes, masking, building masked
//! client frames, parsing frame headers, the handshake's fixed key and accept value, and
//! the two JSON field lookups the chat check needs (a string, a whole number). The raw fan-out server uses the
//! header parser too, to cut its stream at frame boundaries.
//!
//! Written apart from `loopchat::frame` on purpose: the client checks the server's
//! frames, and a check that shared the server's code would share its bugs.

pub const OP_CONTINUATION: u8 = 0;
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

/// The client's Sec-WebSocket-Key, and the accept value a server must answer it with.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; // RFC 6455 section 1.3

/// XORs `b` with the 4-byte mask `m` (masking and unmasking are the same).
pub fn mask_in_place(b: &mut [u8], m: [u8; 4]) {
    let m64 = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = b.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().unwrap()) ^ m64;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (j, x) in chunks.into_remainder().iter_mut().enumerate() {
        *x ^= m[j & 3];
    }
}

/// Appends one final frame with opcode `op`, masked with `mask`, as a client sends it.
pub fn push_masked_frame(out: &mut Vec<u8>, op: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | op);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    mask_in_place(&mut out[start..], mask);
}

/// A frame's header, once it is buffered whole.
#[derive(Clone, Copy, Debug)]
pub struct FrameHeader {
    /// Bytes of header (2 to 14) before the payload.
    pub len: usize,
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// Parses the frame header at the start of `b`; `None` until all of it is there.
pub fn parse_header(b: &[u8]) -> Option<FrameHeader> {
    if b.len() < 2 {
        return None;
    }
    let fin = b[0] & 0x80 != 0;
    let opcode = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let (mut len, payload_len) = match b[1] & 0x7f {
        126 => {
            if b.len() < 4 {
                return None;
            }
            (4, u16::from_be_bytes([b[2], b[3]]) as u64)
        }
        127 => {
            if b.len() < 10 {
                return None;
            }
            (10, u64::from_be_bytes(b[2..10].try_into().unwrap()))
        }
        n => (2, n as u64),
    };
    let mask = if masked {
        if b.len() < len + 4 {
            return None;
        }
        let m = [b[len], b[len + 1], b[len + 2], b[len + 3]];
        len += 4;
        Some(m)
    } else {
        None
    };
    Some(FrameHeader {
        len,
        fin,
        opcode,
        mask,
        payload_len,
    })
}

/// A minimal, tolerant JSON string-field lookup: `"key" : "value"` -> the raw value
/// bytes (escapes left in). With `expect_len` > 0, a value of exactly that length is
/// taken without scanning it.
pub fn json_str_field<'a>(h: &'a [u8], key: &[u8], expect_len: usize) -> Option<&'a [u8]> {
    json_field(h, key, |i| {
        (h[i] == b'"').then(|| json_string_at(h, i + 1, expect_len))
    })
}

/// A minimal JSON whole-number field lookup: `"key" : 123` -> 123; `None` if the key
/// is not there with a number (a string value named so is skipped, as above).
pub fn json_uint_field(h: &[u8], key: &[u8]) -> Option<u64> {
    json_field(h, key, |i| {
        let digits = h[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        (digits > 0)
            .then(|| std::str::from_utf8(&h[i..i + digits]).ok()?.parse().ok())
            .flatten()
    })
}

/// Finds each `"key" :` in `h` in turn and gives `value` the index of the value's
/// first byte; the first `Some` it returns is the answer.
fn json_field<T>(h: &[u8], key: &[u8], value: impl Fn(usize) -> Option<T>) -> Option<T> {
    let mut from = 0;
    while from + key.len() + 2 <= h.len() {
        let rel = h[from..]
            .windows(key.len() + 2)
            .position(|w| w[0] == b'"' && w[w.len() - 1] == b'"' && &w[1..w.len() - 1] == key)?;
        let mut i = from + rel + key.len() + 2;
        while i < h.len() && h[i] == b' ' {
            i += 1;
        }
        if i < h.len() && h[i] == b':' {
            i += 1;
            while i < h.len() && h[i] == b' ' {
                i += 1;
            }
            if i < h.len() {
                if let Some(found) = value(i) {
                    return Some(found);
                }
            }
        }
        from = from + rel + 1;
    }
    None
}

/// The JSON string whose first byte is at `s`, up to its closing quote.
fn json_string_at(h: &[u8], s: usize, expect_len: usize) -> &[u8] {
    if expect_len > 0 && s + expect_len < h.len() && h[s + expect_len] == b'"' {
        return &h[s..s + expect_len];
    }
    let mut e = s;
    while e < h.len() && h[e] != b'"' {
        if h[e] == b'\\' {
            e += 1;
        }
        e += 1;
    }
    &h[s..e.min(h.len())]
}

/// The JSON lookups' checks, run with the payload format's (see `payload::self_test`).
pub fn self_test() {
    let presence = br#"{"type":"presence","online":1000,"joined":[{"id":9,"name":"online"}]}"#;
    assert_eq!(
        json_str_field(presence, b"type", 0),
        Some(b"presence".as_slice())
    );
    assert_eq!(json_uint_field(presence, b"online"), Some(1000));
    assert_eq!(json_uint_field(br#"{"online" : 7}"#, b"online"), Some(7));
    assert_eq!(json_uint_field(br#"{"online":"x","n":1}"#, b"online"), None);
    assert_eq!(json_uint_field(br#"{"type":"welcome"}"#, b"online"), None);
}
