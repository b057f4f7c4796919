//! The Redis wire format: commands out, replies in.
//!
//! Implements the RESP2 subset of the Redis serialization protocol
//! (<https://redis.io/docs/reference/protocol-spec/>) that a client needs. Every
//! element starts with a type byte, and every line ends with CRLF:
//!
//! ```text
//! +OK\r\n                          simple string (no CR or LF inside)
//! -ERR unknown command\r\n         error (the text after '-')
//! :1000\r\n                        integer (signed 64-bit)
//! $5\r\nhello\r\n                  bulk string: length, then that many bytes
//! $-1\r\n                          null bulk string
//! *2\r\n$3\r\nfoo\r\n:7\r\n        array: element count, then the elements
//! *-1\r\n                          null array
//! ```
//!
//! A command is an array of bulk strings ([`encode_command`]). Inline commands
//! and RESP3 (`HELLO 3`) are not used, so they are not decoded: their type bytes
//! are errors.
//!
//! This module is sans-IO: bytes in, values out. Decoding never panics, whatever
//! the input, and is bounded by [`Limits`], checked as soon as a header declares a
//! length, before the bytes it announces arrive. A reply is decoded in two
//! passes: a scan checks it and finds its end without copying anything (skipping
//! a bulk string's body by its declared length), and only once all of it is
//! present is it built. [`ReplyReader`] keeps the scan's progress between reads
//! (whole elements, how far a line was searched, where a bulk string's body
//! ends), so each byte of a reply that arrives in pieces is looked at a bounded
//! number of times, not once per piece.

use std::fmt;
use std::ops::Range;

/// The longest number line, after its type byte: the 20 characters of
/// `-9223372036854775808`. Redis never pads numbers, so a longer line is wrong.
const MAX_NUMBER_LEN: usize = 20;
/// The fewest bytes one element takes on the wire (`+\r\n`), so an array that
/// still owes `n` elements needs at least `3 * n` more bytes.
const MIN_ELEMENT_LEN: usize = 3;
/// The buffer capacity a [`ReplyReader`] keeps once it is empty again; a larger
/// one (left by a large reply) is given back.
const KEEP_CAPACITY: usize = 64 * 1024;

/// A reply from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `+OK`: a simple string, without its CRLF.
    Simple(Vec<u8>),
    /// `-ERR ...`: the text after `-`.
    Error(Vec<u8>),
    /// `:42`.
    Integer(i64),
    /// `$5\r\nhello`: a bulk string's bytes.
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`.
    Nil,
    /// `*2\r\n...`: the elements, in order.
    Array(Vec<Reply>),
}

/// Bounds on what one reply may hold, so a bad or hostile Redis cannot make the
/// node allocate without bound.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Bytes in one bulk string, and in one simple string or error line.
    pub max_bulk: usize,
    /// Elements in one array.
    pub max_array: usize,
    /// Arrays inside one another: 1 allows an array of scalars (a pub/sub
    /// message), 2 an array of arrays, 0 no array at all.
    pub max_depth: usize,
    /// Bytes of one whole reply on the wire.
    pub max_reply: usize,
}

/// Why the bytes from Redis cannot be decoded. Either way the link is closed:
/// nothing after a bad reply can be trusted to start where a reply starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Not RESP2: an unknown type byte, a bad number, a missing CRLF.
    Malformed(&'static str),
    /// Valid so far, but past one of the [`Limits`].
    TooLarge(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Malformed(what) => write!(f, "malformed reply from Redis: {what}"),
            DecodeError::TooLarge(what) => write!(f, "reply from Redis too large: {what}"),
        }
    }
}

/// Appends one command as a RESP array of bulk strings:
/// `*N\r\n$len\r\narg\r\n...`.
pub(crate) fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    // Each argument: '$', up to 20 digits, CRLF, the bytes, CRLF.
    let body: usize = args.iter().map(|arg| arg.len() + 25).sum();
    out.reserve(body + 25);
    push_header(out, b'*', args.len());
    for arg in args {
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `kind`, `n` in decimal, and CRLF.
fn push_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// Decodes one reply from the front of `buf`: `Ok(Some((reply, bytes_used)))`,
/// `Ok(None)` when `buf` holds only part of one (need more bytes), or an error
/// (the link must be closed).
#[cfg_attr(not(test), allow(dead_code))] // the stateless form: the tests' reference
pub(crate) fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(Reply, usize)>, DecodeError> {
    let Some(len) = Scan::default().resume(buf, limits)? else {
        return Ok(None);
    };
    let whole = buf.get(..len).ok_or(CHANGED)?;
    Ok(Some((build(whole, limits)?, len)))
}

/// Bytes read from a Redis connection, and the replies in them, in order.
#[derive(Debug)]
pub(crate) struct ReplyReader {
    limits: Limits,
    /// Bytes read and not yet returned as part of a reply, from `start`.
    buf: Vec<u8>,
    /// Where the next reply starts in `buf`. The bytes before it are dropped on
    /// the next [`ReplyReader::extend`], so the buffer never holds more than the
    /// reply in progress and the latest read.
    start: usize,
    /// How far the reply at `start` has been checked.
    scan: Scan,
    /// The error that ended decoding; every later call returns it again.
    failed: Option<DecodeError>,
}

impl ReplyReader {
    pub fn new(limits: Limits) -> Self {
        ReplyReader {
            limits,
            buf: Vec::new(),
            start: 0,
            scan: Scan::default(),
            failed: None,
        }
    }

    /// Appends bytes just read from the socket. Call [`ReplyReader::next_reply`]
    /// until `Ok(None)` after each read: that is where the limits are checked.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            // Only the start of a reply in progress moves: one copy per read, not
            // per reply.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete reply, `Ok(None)` when more bytes are needed.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, DecodeError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        match self.take_reply() {
            Err(error) => {
                self.failed = Some(error.clone());
                Err(error)
            }
            ok => ok,
        }
    }

    fn take_reply(&mut self) -> Result<Option<Reply>, DecodeError> {
        let pending = self.buf.get(self.start..).unwrap_or(&[]);
        let Some(len) = self.scan.resume(pending, &self.limits)? else {
            return Ok(None);
        };
        let reply = build(pending.get(..len).ok_or(CHANGED)?, &self.limits)?;
        self.scan = Scan::default();
        self.start += len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf.shrink_to(KEEP_CAPACITY);
            }
        }
        Ok(Some(reply))
    }

    /// Bytes held (not yet part of a returned reply).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Forgets everything (the connection was replaced).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.scan = Scan::default();
        self.failed = None;
    }
}

/// The error for a reply that the scan accepted and the build did not: cannot
/// happen, as both read the same bytes with the same rules, but is an error
/// rather than a panic.
const CHANGED: DecodeError = DecodeError::Malformed("reply changed between scan and build");

/// One element as its header says: a scalar (with where its bytes are), or the
/// start of an array of `n` elements.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Element {
    Simple(Range<usize>),
    Error(Range<usize>),
    Integer(i64),
    Bulk(Range<usize>),
    Nil,
    Array(usize),
}

/// What [`element`] found at an offset.
#[derive(Debug)]
enum Step {
    /// A whole element (an array's header only), and where the next one starts.
    Done(Element, usize),
    /// Not enough bytes: nothing new can be learned before the buffer holds
    /// `need` bytes. `seen` is how far a line was searched for its end.
    More { need: usize, seen: usize },
}

/// Reads the element that starts at `buf[pos]`. `seen` (0 at first) is where an
/// earlier call stopped searching the element's line for its CRLF; `owed` is how
/// many elements the open arrays still need after this one.
///
/// Every limit is checked at a point fixed by the bytes before it, never by how
/// many bytes came after, so a reply that arrives in pieces fails with the same
/// error as when it arrives whole.
fn element(
    buf: &[u8],
    pos: usize,
    seen: usize,
    owed: usize,
    limits: &Limits,
) -> Result<Step, DecodeError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(Step::More {
            need: pos + 1,
            seen: 0,
        });
    };
    let from = pos + 1;
    let line = match kind {
        b'+' | b'-' => find_line(
            buf,
            from,
            seen,
            limits.max_bulk,
            DecodeError::TooLarge("simple string or error line"),
        )?,
        b':' | b'$' | b'*' => find_line(
            buf,
            from,
            seen,
            MAX_NUMBER_LEN,
            DecodeError::Malformed("number line without CRLF"),
        )?,
        _ => return Err(DecodeError::Malformed("unknown type byte")),
    };
    let (end, next) = match line {
        Line::Found { end, next } => (end, next),
        Line::Partial { seen } => {
            return Ok(Step::More {
                need: buf.len() + 1,
                seen,
            })
        }
    };
    let text = buf.get(from..end).ok_or(CHANGED)?;
    let element = match kind {
        b'+' => Element::Simple(from..end),
        b'-' => Element::Error(from..end),
        b':' => Element::Integer(parse_integer(text)?),
        b'$' => {
            let Some(len) = parse_length(text)? else {
                return Ok(Step::Done(Element::Nil, next));
            };
            if len > limits.max_bulk {
                return Err(DecodeError::TooLarge("bulk string"));
            }
            let body_end = next.saturating_add(len);
            check_size(body_end.saturating_add(2), owed, limits)?;
            // The body is not looked at, only the two bytes after it.
            match (buf.get(body_end), buf.get(body_end.saturating_add(1))) {
                (Some(b'\r'), Some(b'\n')) => {}
                (Some(b'\r'), None) | (None, _) => {
                    return Ok(Step::More {
                        need: body_end.saturating_add(2),
                        seen: 0,
                    })
                }
                _ => return Err(DecodeError::Malformed("bulk string not followed by CRLF")),
            }
            return Ok(Step::Done(Element::Bulk(next..body_end), body_end + 2));
        }
        _ => match parse_length(text)? {
            None => Element::Nil,
            Some(n) if n > limits.max_array => return Err(DecodeError::TooLarge("array")),
            Some(n) => Element::Array(n),
        },
    };
    Ok(Step::Done(element, next))
}

/// Where a line ends, if it does yet.
#[derive(Debug)]
enum Line {
    /// The line's text ends at `end` (its CR); the next element starts at `next`.
    Found { end: usize, next: usize },
    /// No CRLF yet; the search resumes at `seen`.
    Partial { seen: usize },
}

/// Finds the CRLF ending the line whose text starts at `from`, searching from
/// `seen` if an earlier call got that far. A CR or LF inside the line is an
/// error (RESP2 lines hold neither), and so is text longer than `max_len`, as
/// `too_long`, as soon as that many bytes have come without a CR.
fn find_line(
    buf: &[u8],
    from: usize,
    seen: usize,
    max_len: usize,
    too_long: DecodeError,
) -> Result<Line, DecodeError> {
    let search = seen.max(from);
    let rest = buf.get(search..).unwrap_or(&[]);
    match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) => {
            let end = search + i;
            if end - from > max_len {
                return Err(too_long);
            }
            match (buf.get(end), buf.get(end + 1)) {
                (Some(b'\r'), Some(b'\n')) => Ok(Line::Found { end, next: end + 2 }),
                (Some(b'\r'), None) => Ok(Line::Partial { seen: end }),
                (Some(b'\r'), Some(_)) => Err(DecodeError::Malformed("CR not followed by LF")),
                _ => Err(DecodeError::Malformed("LF without CR")),
            }
        }
        None => {
            if buf.len().saturating_sub(from) > max_len {
                return Err(too_long);
            }
            Ok(Line::Partial {
                seen: buf.len().max(from),
            })
        }
    }
}

/// A signed decimal integer: an optional `-`, then at least one digit.
fn parse_integer(text: &[u8]) -> Result<i64, DecodeError> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, text),
    };
    if digits.is_empty() {
        return Err(DecodeError::Malformed("number without digits"));
    }
    let mut value: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(DecodeError::Malformed("not a decimal number"));
        }
        let digit = i64::from(b - b'0');
        // Accumulated on the sign's side, so that i64::MIN fits.
        value = value
            .checked_mul(10)
            .and_then(|v| {
                if negative {
                    v.checked_sub(digit)
                } else {
                    v.checked_add(digit)
                }
            })
            .ok_or(DecodeError::Malformed("number out of range"))?;
    }
    Ok(value)
}

/// A bulk string's or array's length: `None` for -1 (the null reply).
fn parse_length(text: &[u8]) -> Result<Option<usize>, DecodeError> {
    match parse_integer(text)? {
        -1 => Ok(None),
        n => usize::try_from(n)
            .map(Some)
            .map_err(|_| DecodeError::Malformed("negative length")),
    }
}

/// How far a reply at the front of a buffer has been checked. Every element
/// before `pos` is whole and valid, so a call with more bytes resumes there.
#[derive(Debug, Default)]
struct Scan {
    /// Where the next element starts.
    pos: usize,
    /// For each array still open, outermost first, its elements not yet read.
    open: Vec<usize>,
    /// How far the line of the element at `pos` was searched for its CRLF.
    seen: usize,
    /// The buffer length below which there is nothing new to look at (a bulk
    /// string's body still arriving).
    need: usize,
}

impl Scan {
    /// Checks the reply at the front of `buf` from where the last call stopped:
    /// `Ok(Some(len))` once all `len` bytes of it are there, `Ok(None)` before.
    /// `buf` must hold the same bytes as before at the front, perhaps more.
    fn resume(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, DecodeError> {
        loop {
            if buf.len() < self.need {
                return Ok(None);
            }
            // Elements still owed by the open arrays, besides the one at `pos`.
            let owed = self.owed().saturating_sub(1);
            let step = element(buf, self.pos, self.seen, owed, limits)?;
            let (element, next) = match step {
                Step::Done(element, next) => (element, next),
                Step::More { need, seen } => {
                    self.need = need;
                    self.seen = seen;
                    return Ok(None);
                }
            };
            self.pos = next;
            self.seen = 0;
            self.need = 0;
            if let Some(left) = self.open.last_mut() {
                *left = left.saturating_sub(1);
            }
            if let Element::Array(n) = element {
                if self.open.len() >= limits.max_depth {
                    return Err(DecodeError::TooLarge("arrays nested too deep"));
                }
                if n > 0 {
                    self.open.push(n);
                }
            }
            while self.open.last() == Some(&0) {
                self.open.pop();
            }
            check_size(next, self.owed(), limits)?;
            if self.open.is_empty() {
                return Ok(Some(next));
            }
        }
    }

    /// Elements the open arrays still need.
    fn owed(&self) -> usize {
        self.open.iter().fold(0, |sum, &n| sum.saturating_add(n))
    }
}

/// Fails a reply that already needs `at_least` bytes before `owed` more
/// elements, if that is past `max_reply`.
fn check_size(at_least: usize, owed: usize, limits: &Limits) -> Result<(), DecodeError> {
    let total = owed
        .saturating_mul(MIN_ELEMENT_LEN)
        .saturating_add(at_least);
    if total > limits.max_reply {
        return Err(DecodeError::TooLarge("reply"));
    }
    Ok(())
}

/// Builds the reply that `buf` holds exactly, once [`Scan`] has accepted it.
/// Iterative, as the scan is: the nesting is bounded, but not by the stack.
fn build(buf: &[u8], limits: &Limits) -> Result<Reply, DecodeError> {
    let bytes = |range: Range<usize>| buf.get(range).map(<[u8]>::to_vec).ok_or(CHANGED);
    // The arrays being filled, outermost first, each with its length.
    let mut open: Vec<(Vec<Reply>, usize)> = Vec::new();
    let mut pos = 0;
    loop {
        let Step::Done(element, next) = element(buf, pos, 0, 0, limits)? else {
            return Err(CHANGED);
        };
        pos = next;
        let mut reply = match element {
            Element::Simple(range) => Reply::Simple(bytes(range)?),
            Element::Error(range) => Reply::Error(bytes(range)?),
            Element::Integer(n) => Reply::Integer(n),
            Element::Bulk(range) => Reply::Bulk(bytes(range)?),
            Element::Nil => Reply::Nil,
            Element::Array(0) => Reply::Array(Vec::new()),
            Element::Array(n) => {
                open.push((Vec::with_capacity(n), n));
                continue;
            }
        };
        // Put the reply in its array, and every array it completes in its own.
        loop {
            let Some((items, len)) = open.last_mut() else {
                return if pos == buf.len() {
                    Ok(reply)
                } else {
                    Err(CHANGED)
                };
            };
            items.push(reply);
            if items.len() < *len {
                break;
            }
            let Some((items, _)) = open.pop() else {
                return Err(CHANGED);
            };
            reply = Reply::Array(items);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redis_protocol::resp2::types::{OwnedFrame, Resp2Frame};

    const LIMITS: Limits = Limits {
        max_bulk: 1 << 20,
        max_array: 1 << 16,
        max_depth: 8,
        max_reply: 1 << 24,
    };

    fn ok(bytes: &[u8]) -> Reply {
        match decode(bytes, &LIMITS) {
            Ok(Some((reply, used))) => {
                assert_eq!(used, bytes.len(), "{:?}", String::from_utf8_lossy(bytes));
                reply
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn err(bytes: &[u8], limits: &Limits) -> DecodeError {
        match decode(bytes, limits) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn bulk(bytes: &[u8]) -> Reply {
        Reply::Bulk(bytes.to_vec())
    }

    /// The test-only encoder: what Redis would send for `reply`.
    fn encode_reply(out: &mut Vec<u8>, reply: &Reply) {
        match reply {
            Reply::Simple(s) | Reply::Error(s) => {
                out.push(if matches!(reply, Reply::Simple(_)) {
                    b'+'
                } else {
                    b'-'
                });
                out.extend_from_slice(s);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Integer(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Reply::Bulk(b) => {
                push_header(out, b'$', b.len());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::Array(items) => {
                push_header(out, b'*', items.len());
                for item in items {
                    encode_reply(out, item);
                }
            }
        }
    }

    fn encoded(reply: &Reply) -> Vec<u8> {
        let mut out = Vec::new();
        encode_reply(&mut out, reply);
        out
    }

    // ---- Each type ----

    #[test]
    fn simple_strings_and_errors() {
        assert_eq!(ok(b"+OK\r\n"), Reply::Simple(b"OK".to_vec()));
        assert_eq!(ok(b"+\r\n"), Reply::Simple(Vec::new()));
        assert_eq!(
            ok(b"-ERR unknown command 'foo'\r\n"),
            Reply::Error(b"ERR unknown command 'foo'".to_vec())
        );
        assert_eq!(
            ok(b"-NOSCRIPT No matching script\r\n"),
            Reply::Error(b"NOSCRIPT No matching script".to_vec())
        );
    }

    #[test]
    fn integers() {
        assert_eq!(ok(b":0\r\n"), Reply::Integer(0));
        assert_eq!(ok(b":1000\r\n"), Reply::Integer(1000));
        assert_eq!(ok(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(ok(b":9223372036854775807\r\n"), Reply::Integer(i64::MAX));
        assert_eq!(ok(b":-9223372036854775808\r\n"), Reply::Integer(i64::MIN));
    }

    #[test]
    fn bulk_strings() {
        assert_eq!(ok(b"$5\r\nhello\r\n"), bulk(b"hello"));
        assert_eq!(ok(b"$0\r\n\r\n"), bulk(b""));
        // The body is bytes: CR, LF and anything else are taken as they are.
        assert_eq!(ok(b"$4\r\n\r\n\0\xff\r\n"), bulk(b"\r\n\0\xff"));
    }

    #[test]
    fn nulls() {
        assert_eq!(ok(b"$-1\r\n"), Reply::Nil);
        assert_eq!(ok(b"*-1\r\n"), Reply::Nil);
        assert_eq!(
            ok(b"*3\r\n$1\r\na\r\n$-1\r\n*-1\r\n"),
            Reply::Array(vec![bulk(b"a"), Reply::Nil, Reply::Nil])
        );
    }

    #[test]
    fn arrays() {
        assert_eq!(ok(b"*0\r\n"), Reply::Array(Vec::new()));
        assert_eq!(
            ok(b"*2\r\n$3\r\nfoo\r\n:7\r\n"),
            Reply::Array(vec![bulk(b"foo"), Reply::Integer(7)])
        );
    }

    #[test]
    fn nested_arrays() {
        // The shape of an EXEC reply, and of SCAN's: arrays in arrays.
        let bytes = b"*3\r\n*2\r\n:1\r\n*0\r\n+OK\r\n*1\r\n*1\r\n-ERR x\r\n";
        assert_eq!(
            ok(bytes),
            Reply::Array(vec![
                Reply::Array(vec![Reply::Integer(1), Reply::Array(Vec::new())]),
                Reply::Simple(b"OK".to_vec()),
                Reply::Array(vec![Reply::Array(vec![Reply::Error(b"ERR x".to_vec())])]),
            ])
        );
    }

    #[test]
    fn a_pub_sub_message() {
        let bytes = b"*3\r\n$7\r\nmessage\r\n$10\r\nroom:lobby\r\n$10\r\n{\"t\":\"hi\"}\r\n";
        assert_eq!(
            ok(bytes),
            Reply::Array(vec![
                bulk(b"message"),
                bulk(b"room:lobby"),
                bulk(b"{\"t\":\"hi\"}")
            ])
        );
        let subscribed = b"*3\r\n$9\r\nsubscribe\r\n$10\r\nroom:lobby\r\n:1\r\n";
        assert_eq!(
            ok(subscribed),
            Reply::Array(vec![
                bulk(b"subscribe"),
                bulk(b"room:lobby"),
                Reply::Integer(1)
            ])
        );
    }

    #[test]
    fn decode_takes_one_reply_and_says_how_long_it_was() {
        let bytes = b":1\r\n+OK\r\n";
        assert_eq!(decode(bytes, &LIMITS), Ok(Some((Reply::Integer(1), 4))));
        assert_eq!(
            decode(&bytes[4..], &LIMITS),
            Ok(Some((Reply::Simple(b"OK".to_vec()), 5)))
        );
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"PUBLISH", b"room:lobby", b"hi\r\n"]);
        assert_eq!(
            out,
            b"*3\r\n$7\r\nPUBLISH\r\n$10\r\nroom:lobby\r\n$4\r\nhi\r\n\r\n"
        );
        // It appends.
        encode_command(&mut out, &[]);
        assert!(out.ends_with(b"\r\n*0\r\n"));
        let mut out = Vec::new();
        encode_command(&mut out, &[b""]);
        assert_eq!(out, b"*1\r\n$0\r\n\r\n");
        let long = vec![b'x'; 1234];
        out.clear();
        encode_command(&mut out, &[&long]);
        assert!(out.starts_with(b"*1\r\n$1234\r\nxx"));
    }

    // ---- Incomplete input ----

    #[test]
    fn every_proper_prefix_is_incomplete() {
        let bytes = b"*3\r\n$7\r\nmessage\r\n*2\r\n:-12\r\n$-1\r\n+OK\r\n";
        for end in 0..bytes.len() {
            assert_eq!(decode(&bytes[..end], &LIMITS), Ok(None), "prefix {end}");
        }
        assert!(decode(bytes, &LIMITS).unwrap().is_some());
    }

    #[test]
    fn byte_at_a_time() {
        let mut stream = Vec::new();
        let replies = [
            Reply::Simple(b"OK".to_vec()),
            Reply::Array(vec![bulk(b"message"), bulk(b"room"), bulk(b"x\r\ny")]),
            Reply::Integer(-5),
            Reply::Nil,
            Reply::Error(b"ERR no".to_vec()),
            Reply::Array(vec![Reply::Array(Vec::new()), Reply::Nil]),
        ];
        for reply in &replies {
            encode_reply(&mut stream, reply);
        }
        let mut reader = ReplyReader::new(LIMITS);
        let mut got = Vec::new();
        for &byte in &stream {
            reader.extend(&[byte]);
            while let Some(reply) = reader.next_reply().unwrap() {
                got.push(reply);
            }
        }
        assert_eq!(got, replies);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn a_bulk_body_is_skipped_by_its_length_not_scanned() {
        let mut reader = ReplyReader::new(LIMITS);
        reader.extend(b"*2\r\n:1\r\n$100000\r\n");
        assert_eq!(reader.next_reply(), Ok(None));
        // The array header and the integer are done; the bulk's end is known.
        assert_eq!(reader.scan.pos, 8);
        assert_eq!(reader.scan.need, 17 + 100_000 + 2);
        let body = vec![b'\n'; 100_000];
        for chunk in body.chunks(1000) {
            reader.extend(chunk);
            assert_eq!(reader.next_reply(), Ok(None));
            assert_eq!(reader.scan.pos, 8, "no rescan from the start");
        }
        reader.extend(b"\r\n");
        assert_eq!(
            reader.next_reply(),
            Ok(Some(Reply::Array(vec![
                Reply::Integer(1),
                Reply::Bulk(body)
            ])))
        );
    }

    #[test]
    fn a_long_line_is_searched_once() {
        let mut reader = ReplyReader::new(LIMITS);
        reader.extend(b"+");
        for _ in 0..100 {
            reader.extend(b"0123456789");
            assert_eq!(reader.next_reply(), Ok(None));
            assert_eq!(reader.scan.seen, reader.buffered());
        }
        reader.extend(b"\r");
        assert_eq!(reader.next_reply(), Ok(None));
        reader.extend(b"\n");
        assert_eq!(
            reader.next_reply(),
            Ok(Some(Reply::Simple(b"0123456789".repeat(100))))
        );
    }

    // ---- The reader's buffer ----

    #[test]
    fn the_reader_drops_what_it_returned() {
        let mut reader = ReplyReader::new(LIMITS);
        reader.extend(b":1\r\n:2\r\n:3");
        assert_eq!(reader.buffered(), 10);
        assert_eq!(reader.next_reply(), Ok(Some(Reply::Integer(1))));
        assert_eq!(reader.next_reply(), Ok(Some(Reply::Integer(2))));
        assert_eq!(reader.next_reply(), Ok(None));
        assert_eq!(reader.buffered(), 2);
        reader.extend(b"\r\n");
        // Only the reply in progress was kept.
        assert_eq!(reader.buf, b":3\r\n");
        assert_eq!(reader.next_reply(), Ok(Some(Reply::Integer(3))));
        assert_eq!(reader.buffered(), 0);
        assert!(reader.buf.is_empty());
    }

    #[test]
    fn the_reader_gives_back_a_large_buffer() {
        let mut reader = ReplyReader::new(LIMITS);
        let big = Reply::Bulk(vec![7; 4 * KEEP_CAPACITY]);
        reader.extend(&encoded(&big));
        assert_eq!(reader.next_reply(), Ok(Some(big)));
        assert!(reader.buf.capacity() <= KEEP_CAPACITY);
    }

    #[test]
    fn the_reader_keeps_failing_until_cleared() {
        let mut reader = ReplyReader::new(LIMITS);
        reader.extend(b":1\r\n?\r\n");
        assert_eq!(reader.next_reply(), Ok(Some(Reply::Integer(1))));
        let error = DecodeError::Malformed("unknown type byte");
        assert_eq!(reader.next_reply(), Err(error.clone()));
        reader.extend(b"+OK\r\n");
        assert_eq!(reader.next_reply(), Err(error));
        reader.clear();
        assert_eq!(reader.buffered(), 0);
        reader.extend(b"+OK\r\n");
        assert_eq!(reader.next_reply(), Ok(Some(Reply::Simple(b"OK".to_vec()))));
    }

    #[test]
    fn clear_forgets_a_reply_in_progress() {
        let mut reader = ReplyReader::new(LIMITS);
        reader.extend(b"*2\r\n:1\r\n$5\r\nab");
        assert_eq!(reader.next_reply(), Ok(None));
        reader.clear();
        reader.extend(b":9\r\n");
        assert_eq!(reader.next_reply(), Ok(Some(Reply::Integer(9))));
    }

    // ---- Malformed ----

    fn malformed(bytes: &[u8]) -> &'static str {
        match err(bytes, &LIMITS) {
            DecodeError::Malformed(what) => what,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn unknown_type_bytes() {
        // Inline commands, RESP3 types, and noise.
        for bytes in [
            &b"PING\r\n"[..],
            b"_\r\n",
            b"#t\r\n",
            b"%1\r\n",
            b"\r\n",
            b" ",
        ] {
            assert_eq!(malformed(bytes), "unknown type byte");
        }
        assert_eq!(malformed(b"*2\r\n:1\r\n~0\r\n"), "unknown type byte");
    }

    #[test]
    fn bad_numbers() {
        assert_eq!(malformed(b":\r\n"), "number without digits");
        assert_eq!(malformed(b":-\r\n"), "number without digits");
        assert_eq!(malformed(b"$\r\n"), "number without digits");
        assert_eq!(malformed(b":+1\r\n"), "not a decimal number");
        assert_eq!(malformed(b":1 \r\n"), "not a decimal number");
        assert_eq!(malformed(b"*x\r\n"), "not a decimal number");
        assert_eq!(malformed(b":1.5\r\n"), "not a decimal number");
        assert_eq!(
            malformed(b":9223372036854775808\r\n"),
            "number out of range"
        );
        assert_eq!(
            malformed(b":-9223372036854775809\r\n"),
            "number out of range"
        );
        assert_eq!(
            malformed(b"$99999999999999999999\r\n"),
            "number out of range"
        );
    }

    #[test]
    fn a_number_line_without_crlf_fails_without_waiting() {
        let line = [b'1'; MAX_NUMBER_LEN];
        let mut bytes = b":".to_vec();
        bytes.extend_from_slice(&line);
        assert_eq!(decode(&bytes, &LIMITS), Ok(None));
        bytes.push(b'1');
        assert_eq!(malformed(&bytes), "number line without CRLF");
        let mut bytes = b"*".to_vec();
        bytes.extend_from_slice(&[b'0'; 40]);
        assert_eq!(malformed(&bytes), "number line without CRLF");
    }

    #[test]
    fn negative_lengths_other_than_minus_one() {
        for bytes in [
            &b"$-2\r\n"[..],
            b"*-2\r\n",
            b"$-100\r\n",
            b"*-9223372036854775808\r\n",
        ] {
            assert_eq!(malformed(bytes), "negative length");
        }
    }

    #[test]
    fn a_bulk_string_must_end_with_crlf() {
        for bytes in [
            &b"$3\r\nabcd\r\n"[..],
            b"$3\r\nab\r\n",
            b"$3\r\nabc\rx",
            b"$3\r\nabc\n",
        ] {
            assert_eq!(malformed(bytes), "bulk string not followed by CRLF");
        }
        // Known as soon as the first wrong byte comes.
        assert_eq!(malformed(b"$3\r\nabcX"), "bulk string not followed by CRLF");
        assert_eq!(decode(b"$3\r\nabc\r", &LIMITS), Ok(None));
    }

    #[test]
    fn lines_end_with_crlf_and_hold_no_cr_or_lf() {
        assert_eq!(malformed(b"+OK\n"), "LF without CR");
        assert_eq!(malformed(b"+O\rK\r\n"), "CR not followed by LF");
        assert_eq!(malformed(b":12\r3\r\n"), "CR not followed by LF");
        assert_eq!(malformed(b"$3\n"), "LF without CR");
        assert_eq!(malformed(b"-ERR\n\r\n"), "LF without CR");
    }

    // ---- Too large: decided by the header, before the bytes come ----

    const SMALL: Limits = Limits {
        max_bulk: 10,
        max_array: 3,
        max_depth: 2,
        max_reply: 40,
    };

    fn too_large(bytes: &[u8]) -> &'static str {
        match err(bytes, &SMALL) {
            DecodeError::TooLarge(what) => what,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn limits_allow_up_to_the_limit() {
        for bytes in [
            &b"$10\r\n0123456789\r\n"[..],
            b"+0123456789\r\n",
            b"-0123456789\r\n",
            b"*3\r\n:1\r\n:2\r\n:3\r\n",
            b"*1\r\n*1\r\n:1\r\n",
            // 40 bytes.
            b"*3\r\n$6\r\n012345\r\n$6\r\n012345\r\n$5\r\n01234\r\n",
        ] {
            assert!(matches!(decode(bytes, &SMALL), Ok(Some(_))), "{bytes:?}");
        }
    }

    #[test]
    fn a_bulk_string_too_long_for_the_limit() {
        assert_eq!(too_large(b"$11\r\n"), "bulk string");
        assert_eq!(too_large(b"*2\r\n:1\r\n$999999999\r\n"), "bulk string");
    }

    #[test]
    fn a_simple_string_or_error_too_long_for_the_limit() {
        assert_eq!(decode(b"+0123456789", &SMALL), Ok(None));
        assert_eq!(too_large(b"+0123456789A"), "simple string or error line");
        assert_eq!(too_large(b"-0123456789A"), "simple string or error line");
        assert_eq!(
            too_large(b"+0123456789A\r\n"),
            "simple string or error line"
        );
    }

    #[test]
    fn an_array_too_long_for_the_limit() {
        assert_eq!(too_large(b"*4\r\n"), "array");
        assert_eq!(too_large(b"*1\r\n*4\r\n"), "array");
    }

    #[test]
    fn arrays_nested_too_deep() {
        assert_eq!(too_large(b"*1\r\n*1\r\n*1\r\n"), "arrays nested too deep");
        assert_eq!(too_large(b"*1\r\n*1\r\n*0\r\n"), "arrays nested too deep");
        let flat = Limits {
            max_depth: 0,
            ..SMALL
        };
        assert_eq!(
            decode(b"*0\r\n", &flat),
            Err(DecodeError::TooLarge("arrays nested too deep"))
        );
        // A null array is not an array.
        assert_eq!(decode(b"*-1\r\n", &flat), Ok(Some((Reply::Nil, 5))));
    }

    #[test]
    fn a_reply_too_long_for_the_limit() {
        // A bulk string that fits, in a reply that would not.
        assert_eq!(too_large(b"*3\r\n$10\r\n0123456789\r\n$10\r\n"), "reply");
        // The elements an array still owes count, 3 bytes each at least.
        let wide = Limits {
            max_array: 20,
            ..SMALL
        };
        assert_eq!(decode(b"*10\r\n", &wide), Ok(None));
        assert_eq!(
            decode(b"*10\r\n$5\r\n", &wide),
            Err(DecodeError::TooLarge("reply"))
        );
        assert_eq!(
            decode(b"*13\r\n", &wide),
            Err(DecodeError::TooLarge("reply"))
        );
        // A line counts once it ends (its own limit is `max_bulk`).
        let long = Limits {
            max_bulk: 100,
            ..SMALL
        };
        let mut line = b"+".to_vec();
        line.extend_from_slice(&[b'a'; 50]);
        assert_eq!(decode(&line, &long), Ok(None));
        line.extend_from_slice(b"\r\n");
        assert_eq!(decode(&line, &long), Err(DecodeError::TooLarge("reply")));
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            DecodeError::Malformed("LF without CR").to_string(),
            "malformed reply from Redis: LF without CR"
        );
        assert_eq!(
            DecodeError::TooLarge("array").to_string(),
            "reply from Redis too large: array"
        );
    }

    // ---- Properties ----

    /// Bytes for a simple string or error: anything but CR and LF.
    fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
            0..12,
        )
    }

    /// Replies up to 4 arrays deep, with up to 6 elements in each.
    fn reply_tree() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            line_bytes().prop_map(Reply::Simple),
            line_bytes().prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Reply::Bulk),
            Just(Reply::Nil),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Reply::Array)
        })
    }

    /// The same, with text that redis-protocol keeps as a `String` (errors).
    fn frame_tree() -> impl Strategy<Value = OwnedFrame> {
        let leaf = prop_oneof![
            "[^\r\n]{0,12}".prop_map(|s| OwnedFrame::SimpleString(s.into_bytes())),
            "[^\r\n]{0,12}".prop_map(OwnedFrame::Error),
            any::<i64>().prop_map(OwnedFrame::Integer),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(OwnedFrame::BulkString),
            Just(OwnedFrame::Null),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(OwnedFrame::Array)
        })
    }

    fn from_frame(frame: &OwnedFrame) -> Reply {
        match frame {
            OwnedFrame::SimpleString(s) => Reply::Simple(s.clone()),
            OwnedFrame::Error(s) => Reply::Error(s.clone().into_bytes()),
            OwnedFrame::Integer(n) => Reply::Integer(*n),
            OwnedFrame::BulkString(b) => Reply::Bulk(b.clone()),
            OwnedFrame::Null => Reply::Nil,
            OwnedFrame::Array(items) => Reply::Array(items.iter().map(from_frame).collect()),
        }
    }

    fn encode_frame(frame: &OwnedFrame) -> Vec<u8> {
        let mut out = vec![0; frame.encode_len(false)];
        let len = redis_protocol::resp2::encode::encode(&mut out, frame, false).unwrap();
        out.truncate(len);
        out
    }

    /// Bytes made mostly of RESP pieces, so that they reach past the type byte.
    fn resp_soup() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"+".to_vec()),
            Just(b"-".to_vec()),
            Just(b":".to_vec()),
            Just(b"$".to_vec()),
            Just(b"*".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"-1".to_vec()),
            (0u8..16).prop_map(|n| n.to_string().into_bytes()),
            Just(b"OK".to_vec()),
            any::<u8>().prop_map(|b| vec![b]),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    /// Valid replies with a few bytes replaced, inserted or deleted, mostly by
    /// the bytes RESP gives meaning to: errors deep inside a reply.
    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            proptest::sample::select(b"\r\n-+:$*0159".to_vec()),
            any::<u8>(),
        ];
        let edits = proptest::collection::vec((any::<usize>(), 0u8..3, byte), 0..4);
        (proptest::collection::vec(reply_tree(), 1..3), edits).prop_map(|(replies, edits)| {
            let mut bytes = Vec::new();
            for reply in &replies {
                encode_reply(&mut bytes, reply);
            }
            for (at, kind, byte) in edits {
                let at = at % (bytes.len() + 1);
                match kind {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            bytes
        })
    }

    /// Whether every error in `reply` is UTF-8 (redis-protocol keeps errors as
    /// `String`s, and refuses the others).
    fn errors_are_utf8(reply: &Reply) -> bool {
        match reply {
            Reply::Error(text) => std::str::from_utf8(text).is_ok(),
            Reply::Array(items) => items.iter().all(errors_are_utf8),
            _ => true,
        }
    }

    /// Whether `reply` is within `limits`, and how deep its arrays go.
    fn within(reply: &Reply, limits: &Limits, depth: usize) -> bool {
        match reply {
            Reply::Simple(s) | Reply::Error(s) | Reply::Bulk(s) => s.len() <= limits.max_bulk,
            Reply::Integer(_) | Reply::Nil => true,
            Reply::Array(items) => {
                depth < limits.max_depth
                    && items.len() <= limits.max_array
                    && items.iter().all(|item| within(item, limits, depth + 1))
            }
        }
    }

    /// Splits `bytes` at the given points (taken modulo its length), in order.
    fn pieces<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.push(0);
        cuts.push(bytes.len());
        cuts.sort_unstable();
        cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
    }

    /// Feeds `pieces` to a reader, collecting replies until the first error.
    fn read_all(
        pieces: &[&[u8]],
        limits: Limits,
    ) -> (Vec<Reply>, Result<(), DecodeError>, ReplyReader) {
        let mut reader = ReplyReader::new(limits);
        let mut replies = Vec::new();
        for piece in pieces {
            reader.extend(piece);
            loop {
                match reader.next_reply() {
                    Ok(Some(reply)) => replies.push(reply),
                    Ok(None) => break,
                    Err(e) => return (replies, Err(e), reader),
                }
            }
        }
        (replies, Ok(()), reader)
    }

    const TIGHT: Limits = Limits {
        max_bulk: 6,
        max_array: 3,
        max_depth: 2,
        max_reply: 48,
    };

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// (1) Replies in a row, cut anywhere, come back as they were.
        #[test]
        fn replies_in_pieces_round_trip(
            replies in proptest::collection::vec(reply_tree(), 1..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut stream = Vec::new();
            for reply in &replies {
                encode_reply(&mut stream, reply);
            }
            let (got, result, reader) = read_all(&pieces(&stream, &cuts), LIMITS);
            prop_assert_eq!(result, Ok(()));
            prop_assert_eq!(got, replies);
            prop_assert_eq!(reader.buffered(), 0);
        }

        /// (2a) What redis-protocol encodes, this decodes to the same value.
        #[test]
        fn decodes_what_redis_protocol_encodes(frame in frame_tree()) {
            let bytes = encode_frame(&frame);
            prop_assert_eq!(decode(&bytes, &LIMITS), Ok(Some((from_frame(&frame), bytes.len()))));
        }

        /// (2b) What this encodes, redis-protocol decodes to the same bulk strings.
        #[test]
        fn redis_protocol_decodes_our_commands(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
        ) {
            let slices: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let mut out = b"leading".to_vec();
            let start = out.len();
            encode_command(&mut out, &slices);
            let frame = OwnedFrame::Array(args.iter().cloned().map(OwnedFrame::BulkString).collect());
            let theirs = redis_protocol::resp2::decode::decode(&out[start..]).unwrap();
            prop_assert_eq!(theirs, Some((frame, out.len() - start)));
            let ours = Reply::Array(args.iter().cloned().map(Reply::Bulk).collect());
            prop_assert_eq!(decode(&out[start..], &LIMITS), Ok(Some((ours, out.len() - start))));
        }

        /// (2c) Whatever this accepts, redis-protocol reads the same way (it is
        /// the laxer: it takes `+1`, padded numbers and a lone CR in a line).
        #[test]
        fn accepts_nothing_redis_protocol_refuses(bytes in prop_oneof![resp_soup(), mutated()]) {
            if let Ok(Some((reply, used))) = decode(&bytes, &LIMITS) {
                if errors_are_utf8(&reply) {
                    let theirs = redis_protocol::resp2::decode::decode(&bytes).unwrap();
                    prop_assert_eq!(theirs.map(|(f, n)| (from_frame(&f), n)), Some((reply, used)));
                }
            }
        }

        /// (3) Any bytes: no panic, nothing past the limits, and the reader fed
        /// in pieces says what `decode` says of the whole.
        #[test]
        fn any_bytes_stay_within_limits(
            bytes in prop_oneof![
                resp_soup(),
                mutated(),
                proptest::collection::vec(any::<u8>(), 0..64),
            ],
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut expected = Vec::new();
            let mut rest = &bytes[..];
            let outcome = loop {
                match decode(rest, &TIGHT) {
                    Ok(Some((reply, used))) => {
                        prop_assert!(used > 0 && used <= TIGHT.max_reply);
                        prop_assert!(within(&reply, &TIGHT, 0), "{:?}", reply);
                        // It reads back the same when encoded the usual way.
                        prop_assert_eq!(decode(&encoded(&reply), &LIMITS), Ok(Some((reply.clone(), encoded(&reply).len()))));
                        expected.push(reply);
                        rest = &rest[used..];
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            let (got, result, reader) = read_all(&pieces(&bytes, &cuts), TIGHT);
            prop_assert_eq!(got, expected);
            prop_assert_eq!(&result, &outcome);
            if outcome.is_ok() {
                prop_assert_eq!(reader.buffered(), rest.len());
            }
        }

        /// (4) A proper prefix of a reply is incomplete, or, under tight limits,
        /// too large as the whole is: never a reply, never another error.
        #[test]
        fn a_prefix_is_never_a_reply(reply in reply_tree(), cut in any::<usize>()) {
            let bytes = encoded(&reply);
            let prefix = &bytes[..cut % bytes.len()];
            prop_assert_eq!(decode(prefix, &LIMITS), Ok(None));
            match decode(&bytes, &TIGHT) {
                Ok(Some(_)) => prop_assert_eq!(decode(prefix, &TIGHT), Ok(None)),
                Ok(None) => prop_assert!(false, "a whole reply is incomplete"),
                Err(DecodeError::Malformed(what)) => prop_assert!(false, "{}", what),
                Err(whole) => {
                    let part = decode(prefix, &TIGHT);
                    prop_assert!(part == Ok(None) || part == Err(whole.clone()), "{:?} then {:?}", part, whole);
                }
            }
        }
    }
}
