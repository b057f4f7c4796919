//! The loop's compressor and inflater (RFC 7692 §7.2), over `flate2` with the
//! zlib-rs backend (pure Rust, and it honours window sizes below 15 bits, which
//! `server_max_window_bits` may ask for).
//!
//! Compressing a message (§7.2.1): raw DEFLATE from a reset state, ended with a
//! sync flush, whose last four octets `00 00 ff ff` are then removed. Inflating
//! (§7.2.2): the four octets appended back, then raw inflate from a reset state,
//! stopped as soon as the output passes the size limit, so a "zip bomb" costs at
//! most the limit plus one step of memory, never what it would inflate to.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// What §7.2.1 removes from the end of every compressed message.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Output room added per step while inflating.
const INFLATE_STEP: usize = 16 * 1024;
/// An output buffer larger than this is freed after use, as the read buffers are.
const KEEP_CAPACITY: usize = 64 * 1024;

/// One compressor per window size (9 to 15 bits), made when first needed.
pub struct Compressor {
    level: u32,
    by_window: [Option<Compress>; 7],
    /// Messages compressed (for `/metrics`: one per broadcast, at most).
    pub calls: u64,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Compressor {{ level: {}, calls: {} }}",
            self.level, self.calls
        )
    }
}

impl Compressor {
    /// A compressor at `level` (1 fastest to 9 smallest).
    pub fn new(level: u32) -> Self {
        Compressor {
            level,
            by_window: Default::default(),
            calls: 0,
        }
    }

    /// Appends the compressed form of `message` to `out`, within a window of
    /// `window_bits` (8 is compressed with 9, whose distances stay under 256
    /// bytes, as zlib does).
    pub fn compress(&mut self, message: &[u8], window_bits: u8, out: &mut Vec<u8>) {
        self.calls += 1;
        let bits = window_bits.clamp(9, 15);
        let level = Compression::new(self.level);
        let compress = self.by_window[usize::from(bits - 9)]
            .get_or_insert_with(|| Compress::new_with_window_bits(level, false, bits));
        compress.reset();
        let start = out.len();
        // Room for the worst case (stored blocks) plus the sync marker, so one
        // call normally does it; the loop covers the rest.
        out.reserve(message.len() + message.len() / 1000 + 64);
        let mut consumed = 0;
        loop {
            let before = compress.total_in();
            let status = compress.compress_vec(&message[consumed..], out, FlushCompress::Sync);
            consumed += (compress.total_in() - before) as usize;
            let done = consumed == message.len() && out.len() < out.capacity();
            match status {
                Ok(Status::Ok | Status::BufError) if !done => out.reserve(out.capacity().max(64)),
                _ => break,
            }
        }
        if out[start..].ends_with(&SYNC_TAIL) {
            out.truncate(out.len() - SYNC_TAIL.len());
        }
    }
}

/// Why a compressed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the size limit (close 1009).
    TooBig,
    /// It is not valid DEFLATE data (close 1007).
    Corrupt,
}

/// The loop's one inflater and its output buffer.
pub struct Inflater {
    decompress: Decompress,
    output: Vec<u8>,
    /// Messages inflated.
    pub calls: u64,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Inflater {{ calls: {} }}", self.calls)
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater {
            decompress: Decompress::new(false),
            output: Vec::new(),
            calls: 0,
        }
    }
}

/// How feeding one piece of input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fed {
    /// All of it was taken; the stream goes on.
    All,
    /// A final block ended the stream (§7.2.3.4: allowed; the rest is ignored).
    StreamEnd,
}

impl Inflater {
    /// Inflates one message (its payload as it came, without the sync tail),
    /// refusing it as soon as it passes `limit` bytes. The result is lent until
    /// the next call.
    pub fn inflate(&mut self, compressed: &[u8], limit: usize) -> Result<&[u8], InflateError> {
        self.calls += 1;
        self.decompress.reset(false);
        if self.output.capacity() > KEEP_CAPACITY {
            self.output = Vec::new();
        }
        self.output.clear();
        for input in [compressed, &SYNC_TAIL[..]] {
            if self.feed(input, limit)? == Fed::StreamEnd {
                break;
            }
        }
        Ok(&self.output)
    }

    /// Feeds all of `input`, growing the output a step at a time, never past
    /// `limit` plus one byte.
    fn feed(&mut self, input: &[u8], limit: usize) -> Result<Fed, InflateError> {
        let mut consumed = 0;
        loop {
            if self.output.len() == self.output.capacity() {
                // One byte past the limit is enough to know it is too big.
                let room = INFLATE_STEP.min(limit + 1 - self.output.len());
                self.output.reserve_exact(room);
            }
            let (in_before, out_before) = (self.decompress.total_in(), self.output.len());
            let status = self
                .decompress
                .decompress_vec(&input[consumed..], &mut self.output, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            consumed += (self.decompress.total_in() - in_before) as usize;
            if self.output.len() > limit {
                return Err(InflateError::TooBig);
            }
            let room_left = self.output.len() < self.output.capacity();
            let progressed =
                self.decompress.total_in() > in_before || self.output.len() > out_before;
            match status {
                Status::StreamEnd => return Ok(Fed::StreamEnd),
                // The inflater stopped with room to spare: it wants more input.
                _ if room_left && consumed == input.len() => return Ok(Fed::All),
                _ if room_left && !progressed => return Err(InflateError::Corrupt),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn compressed(message: &[u8], bits: u8) -> Vec<u8> {
        let mut out = Vec::new();
        Compressor::new(1).compress(message, bits, &mut out);
        out
    }

    #[test]
    fn rfc_7692_examples_inflate() {
        let mut inflater = Inflater::default();
        // §7.2.3.1: "Hello", one compressed block.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflater.inflate(&hello, 100), Ok(&b"Hello"[..]));
        // §7.2.3.4: the same with BFINAL set.
        let last = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(inflater.inflate(&last, 100), Ok(&b"Hello"[..]));
        // §7.2.3.5: two blocks.
        let two = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(inflater.inflate(&two, 100), Ok(&b"Hello"[..]));
        // §7.2.3.6: an empty message is the single octet 00.
        assert_eq!(inflater.inflate(&[0x00], 100), Ok(&b""[..]));
    }

    #[test]
    fn compressing_hello_gives_the_rfc_bytes_and_no_tail() {
        let out = compressed(b"Hello", 15);
        assert!(!out.ends_with(&SYNC_TAIL));
        assert_eq!(Inflater::default().inflate(&out, 5), Ok(&b"Hello"[..]));
    }

    #[test]
    fn a_bomb_stops_one_byte_past_the_limit() {
        let zeros = vec![0u8; 16 << 20];
        let mut bomb = Vec::new();
        Compressor::new(9).compress(&zeros, 15, &mut bomb);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let mut inflater = Inflater::default();
        assert_eq!(
            inflater.inflate(&bomb, 64 * 1024),
            Err(InflateError::TooBig)
        );
        assert!(inflater.output.capacity() <= 64 * 1024 + 1);
        let exact = compressed(&zeros[..64 * 1024], 15);
        assert_eq!(
            inflater.inflate(&exact, 64 * 1024).map(<[u8]>::len),
            Ok(64 * 1024)
        );
        let over = compressed(&zeros[..64 * 1024 + 1], 15);
        assert_eq!(
            inflater.inflate(&over, 64 * 1024),
            Err(InflateError::TooBig)
        );
    }

    #[test]
    fn garbage_is_corrupt() {
        let mut inflater = Inflater::default();
        assert_eq!(
            inflater.inflate(&[0xff; 32], 1 << 20),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn small_windows_round_trip() {
        let text: Vec<u8> = (0..20_000)
            .map(|i| b"abcdefghij"[(i * 7 + i / 300) % 10])
            .collect();
        for bits in 8..=15 {
            let out = compressed(&text, bits);
            assert_eq!(
                Inflater::default().inflate(&out, 1 << 20),
                Ok(&text[..]),
                "{bits}"
            );
        }
    }

    proptest! {
        #[test]
        fn compress_then_inflate_is_the_identity(message in proptest::collection::vec(any::<u8>(), 0..3000), bits in 8u8..=15) {
            let out = compressed(&message, bits);
            let mut inflater = Inflater::default();
            prop_assert_eq!(inflater.inflate(&out, 4096), Ok(&message[..]));
        }

        #[test]
        fn inflating_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Inflater::default().inflate(&bytes, 10_000);
        }
    }
}
