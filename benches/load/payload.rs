//! The payload every load message carries, so that the client can tell its own
//! messages from anything else and notice any that are lost, reordered or corrupted:
//!
//! ```text
//! bytes  0..4   round nonce        (hex)
//!        4..9   sender conn id     (hex, < 2^20)
//!        9..16  sequence number    (hex, < 2^28)
//!       16..27  send time, ns since client start (hex, < 2^44 ~ 4.9 h)
//!       27..31  FNV checksum of bytes 0..27 (hex)
//!       31..    filler: 'a' + (i + seq) % 26 ... (checked byte for byte)
//! ```

/// Bytes before the filler: nonce, conn id, sequence number, send time, checksum.
pub const PAYLOAD_HEADER_LEN: usize = 31;
/// The smallest payload: the header and one byte of filler.
pub const MIN_PAYLOAD_LEN: usize = 32;
/// The sequence number's 7 hex digits hold its low 28 bits.
pub const SEQ_MASK: u32 = 0x0fff_ffff;
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// What a payload says about itself, once checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stamp {
    /// The id of the connection that sent it.
    pub conn: u32,
    /// The sender's sequence number (its low 28 bits).
    pub seq: u32,
    /// When it was sent, in ns since the client's start.
    pub sent_ns: u64,
}

/// The result of checking one received payload.
#[derive(PartialEq, Eq, Debug)]
pub enum Decoded {
    /// One of this round's payloads, intact.
    Ours(Stamp),
    /// Not this round's (another nonce, or too short to carry one).
    Foreign,
    /// This round's, but damaged: what is wrong.
    Corrupt(&'static str),
}

/// The payloads of one round: its nonce and their size (every one the same).
pub struct PayloadFormat {
    pub nonce: u16,
    pub size: usize,
    /// 'a'..'z' repeated, long enough to cut any payload's filler from.
    filler: Vec<u8>,
}

impl PayloadFormat {
    pub fn new(nonce: u16, size: usize) -> PayloadFormat {
        PayloadFormat {
            nonce,
            size,
            filler: (0..size + 26).map(|j| b'a' + (j % 26) as u8).collect(),
        }
    }

    /// Fills `p` (`size` bytes) with the payload for message `seq` of connection `conn`.
    pub fn write(&self, p: &mut [u8], conn: u32, seq: u32, sent_ns: u64) {
        put_hex(&mut p[0..4], self.nonce as u64);
        put_hex(&mut p[4..9], conn as u64);
        put_hex(&mut p[9..16], seq as u64);
        put_hex(&mut p[16..27], sent_ns);
        let c = fnv16(&p[..27]);
        put_hex(&mut p[27..31], c);
        let off = ((PAYLOAD_HEADER_LEN as u32 + seq) % 26) as usize;
        let n = p.len() - PAYLOAD_HEADER_LEN;
        p[PAYLOAD_HEADER_LEN..].copy_from_slice(&self.filler[off..off + n]);
    }

    /// Checks a received payload, byte for byte.
    pub fn decode(&self, p: &[u8]) -> Decoded {
        if p.len() < PAYLOAD_HEADER_LEN || get_hex(&p[0..4]) != Some(self.nonce as u64) {
            return Decoded::Foreign;
        }
        if p.len() != self.size {
            return Decoded::Corrupt("wrong length");
        }
        let (Some(conn), Some(seq), Some(sent_ns), Some(checksum)) = (
            get_hex(&p[4..9]),
            get_hex(&p[9..16]),
            get_hex(&p[16..27]),
            get_hex(&p[27..31]),
        ) else {
            return Decoded::Corrupt("bad header digits");
        };
        if fnv16(&p[..27]) != checksum {
            return Decoded::Corrupt("checksum mismatch");
        }
        let off = ((PAYLOAD_HEADER_LEN as u64 + seq) % 26) as usize;
        if p[PAYLOAD_HEADER_LEN..] != self.filler[off..off + self.size - PAYLOAD_HEADER_LEN] {
            return Decoded::Corrupt("filler mismatch");
        }
        Decoded::Ours(Stamp {
            conn: conn as u32,
            seq: seq as u32,
            sent_ns,
        })
    }
}

/// Writes `v` as lower-case hex, right-aligned in `out` (high digits dropped).
fn put_hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = HEX_DIGITS[(v & 15) as usize];
        v >>= 4;
    }
}

/// Reads lower-case hex; `None` on any other byte.
fn get_hex(s: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

/// 32-bit FNV-1a, folded to 16 bits.
fn fnv16(b: &[u8]) -> u64 {
    let mut h: u32 = 0x811c9dc5;
    for &x in b {
        h ^= x as u32;
        h = h.wrapping_mul(0x01000193);
    }
    ((h ^ (h >> 16)) & 0xffff) as u64
}

/// The format's unit tests, run (in microseconds) when the bench is started without
/// arguments, as `cargo test --benches` does; panics on a failure.
pub fn self_test() {
    let format = PayloadFormat::new(0xbeef, 64);
    let mut p = vec![0u8; 64];
    for seq in [0, 1, 25, 26, 12_345, SEQ_MASK] {
        format.write(&mut p, 0x1_2345, seq, 0xabc_dead_beef);
        let stamp = Stamp {
            conn: 0x1_2345,
            seq,
            sent_ns: 0xabc_dead_beef,
        };
        assert_eq!(
            format.decode(&p),
            Decoded::Ours(stamp),
            "round trip, seq {seq}"
        );
    }
    format.write(&mut p, 7, 3, 99);
    assert_eq!(PayloadFormat::new(0xbeee, 64).decode(&p), Decoded::Foreign);
    assert_eq!(format.decode(&p[..20]), Decoded::Foreign);
    assert_eq!(format.decode(&p[..63]), Decoded::Corrupt("wrong length"));
    let damaged = |at: usize, byte: u8| {
        let mut q = p.clone();
        q[at] = byte;
        format.decode(&q)
    };
    assert_eq!(damaged(10, b'x'), Decoded::Corrupt("bad header digits"));
    assert_eq!(damaged(10, b'f'), Decoded::Corrupt("checksum mismatch"));
    assert_eq!(damaged(40, b'!'), Decoded::Corrupt("filler mismatch"));
}
