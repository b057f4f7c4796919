//! The envelope of every room event that crosses Redis: what the scripts
//! (`scripts.rs`) publish on a room's channel and keep in its history list,
//! and what every node reads back. Text, one line of fields then the JSON:
//!
//! ```text
//! m 9f3c2a1b 42 4294967297 3 1.17 3:ann{"type":"message",...}
//! │ │        │  │          │ │    │     └ the JSON every client gets, framed once per node
//! │ │        │  │          │ │    └ the member's name, length-prefixed (bytes)
//! │ │        │  │          │ └ the origin's tag: node number . post number
//! │ │        │  │          └ the room's cluster-wide count after the event
//! │ │        │  └ the member's id
//! │ │        └ the room's sequence number: one order on every node
//! │ └ the room's epoch: a new one when Redis lost the room's state
//! └ kind: m message, j join, l leave, r rename
//! ```
//!
//! Sans-IO: [`parse`] reads bytes that came from Redis and refuses anything
//! malformed (a bad Redis reply is logged and dropped, never a panic).

use std::fmt;

/// What happened in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Message,
    Join,
    Leave,
    Rename,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            b'm' => Some(Kind::Message),
            b'j' => Some(Kind::Join),
            b'l' => Some(Kind::Leave),
            b'r' => Some(Kind::Rename),
            _ => None,
        }
    }

    /// The letter the scripts write.
    pub(crate) fn letter(self) -> &'static str {
        match self {
            Kind::Message => "m",
            Kind::Join => "j",
            Kind::Leave => "l",
            Kind::Rename => "r",
        }
    }
}

/// Which node published a post, and its number there: lets a node recognise
/// its own posts (those it already delivered itself while cut off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Tag {
    pub node: u64,
    pub post: u64,
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node, self.post)
    }
}

/// One event, borrowed from the bytes it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    pub kind: Kind,
    pub epoch: &'a str,
    pub seq: u64,
    pub id: u64,
    pub online: u64,
    pub tag: Tag,
    pub name: &'a str,
    pub json: &'a str,
}

/// Why an envelope was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed envelope: {}", self.0)
    }
}

/// Reads one envelope.
pub(crate) fn parse(bytes: &[u8]) -> Result<Envelope<'_>, Malformed> {
    let text = std::str::from_utf8(bytes).map_err(|_| Malformed("not UTF-8"))?;
    let mut rest = text;
    let mut field = |what: &'static str| -> Result<&str, Malformed> {
        let (value, after) = rest.split_once(' ').ok_or(Malformed(what))?;
        rest = after;
        Ok(value)
    };
    let kind = field("no kind")?;
    let kind = match kind.as_bytes() {
        [b] => Kind::from_byte(*b),
        _ => None,
    }
    .ok_or(Malformed("unknown kind"))?;
    let epoch = field("no epoch")?;
    if epoch.is_empty() || epoch.len() > 64 {
        return Err(Malformed("bad epoch"));
    }
    let seq = number(field("no sequence number")?, "bad sequence number")?;
    let id = number(field("no id")?, "bad id")?;
    let online = number(field("no count")?, "bad count")?;
    let (node, post) = field("no tag")?
        .split_once('.')
        .ok_or(Malformed("bad tag"))?;
    let tag = Tag {
        node: number(node, "bad tag")?,
        post: number(post, "bad tag")?,
    };
    let (length, after) = rest.split_once(':').ok_or(Malformed("no name"))?;
    let length = usize::try_from(number(length, "bad name length")?)
        .map_err(|_| Malformed("bad name length"))?;
    if length > after.len() || !after.is_char_boundary(length) {
        return Err(Malformed("bad name length"));
    }
    let (name, json) = after.split_at(length);
    if !json.starts_with('{') {
        return Err(Malformed("no JSON"));
    }
    Ok(Envelope {
        kind,
        epoch,
        seq,
        id,
        online,
        tag,
        name,
        json,
    })
}

/// A decimal `u64` (digits only: no sign, no leading `+`).
fn number(text: &str, what: &'static str) -> Result<u64, Malformed> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Malformed(what));
    }
    text.parse().map_err(|_| Malformed(what))
}

/// The envelopes in one `PUBLISH`: a notice's is the envelope itself; the post
/// script publishes a room's posts of one call together, each preceded by its
/// length in bytes and a space (`17 m e 4 ...{...}21 m e 5 ...{...}`), so that
/// Redis writes one message per call, not one per post. An envelope starts
/// with its kind's letter and a batch with a digit, so each is recognised.
/// A malformed length ends the batch with an error.
pub(crate) fn split_batch(payload: &[u8]) -> impl Iterator<Item = Result<&[u8], Malformed>> {
    let batch = payload.first().is_some_and(u8::is_ascii_digit);
    let mut rest = payload;
    let mut single = (!batch).then_some(payload);
    std::iter::from_fn(move || {
        if let Some(envelope) = single.take() {
            return Some(Ok(envelope));
        }
        if !batch || rest.is_empty() {
            return None;
        }
        let space = rest.iter().take(21).position(|&b| b == b' ');
        let length = space
            .and_then(|at| std::str::from_utf8(&rest[..at]).ok())
            .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<usize>().ok());
        let (Some(at), Some(length)) = (space, length) else {
            rest = &[];
            return Some(Err(Malformed("bad length in a batch")));
        };
        let body = &rest[at + 1..];
        if length > body.len() {
            rest = &[];
            return Some(Err(Malformed("a batch shorter than its length says")));
        }
        let (envelope, after) = body.split_at(length);
        rest = after;
        Some(Ok(envelope))
    })
}

/// Writes an envelope as the scripts do (for tests, and for the history a node
/// keeps of its own posts while cut off).
#[cfg(test)]
pub(crate) fn render(e: &Envelope) -> String {
    format!(
        "{} {} {} {} {} {} {}:{}{}",
        e.kind.letter(),
        e.epoch,
        e.seq,
        e.id,
        e.online,
        e.tag,
        e.name.len(),
        e.name,
        e.json
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_what_the_scripts_write() {
        let bytes = br#"m 9f3c 42 4294967297 3 1.17 3:ann{"type":"message","text":"a b"}"#;
        let e = parse(bytes).unwrap();
        assert_eq!(e.kind, Kind::Message);
        assert_eq!(e.epoch, "9f3c");
        assert_eq!((e.seq, e.id, e.online), (42, 4294967297, 3));
        assert_eq!(e.tag, Tag { node: 1, post: 17 });
        assert_eq!(e.name, "ann");
        assert_eq!(e.json, r#"{"type":"message","text":"a b"}"#);
    }

    #[test]
    fn a_name_may_hold_spaces_colons_and_braces() {
        let e = parse(b"j e 1 7 1 0.0 9:a {b}: c {\"type\":\"join\"}").unwrap();
        assert_eq!(e.name, "a {b}: c ");
        assert_eq!(e.json, "{\"type\":\"join\"}");
    }

    #[test]
    fn refuses_what_is_malformed() {
        for bad in [
            &b""[..],
            b"x e 1 1 1 0.0 0:{}",
            b"m  1 1 1 0.0 0:{}",
            b"m e -1 1 1 0.0 0:{}",
            b"m e 1 1 1 0 0:{}",
            b"m e 1 1 1 0.0 5:ab{}",
            b"m e 1 1 1 0.0 0:",
            b"m e 99999999999999999999 1 1 0.0 0:{}",
            b"m e 1 1 1 0.0 2:\xc3\xa9",
            b"m e 1 1 1 0.0 1:\xc3\xa9{}",
            b"m e 1 1 1 0.0 0:\xff{}",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_batch_splits_into_its_envelopes() {
        let one = "m e 4 1 2 1.1 3:ann{\"a\":1}";
        let two = "m e 5 1 2 1.2 3:ann{\"b\":\"x y\"}";
        let batch = format!("{} {one}{} {two}", one.len(), two.len());
        let parts: Vec<_> = split_batch(batch.as_bytes()).collect();
        assert_eq!(parts, [Ok(one.as_bytes()), Ok(two.as_bytes())]);
        // A single envelope is itself.
        let parts: Vec<_> = split_batch(one.as_bytes()).collect();
        assert_eq!(parts, [Ok(one.as_bytes())]);
        // Malformed lengths end the batch with one error, after what was whole.
        for bad in [
            "5 abcde9 abc",
            "5 abcdex abc",
            "5 abcde99999999999999999999999 x",
        ] {
            let parts: Vec<_> = split_batch(bad.as_bytes()).collect();
            assert_eq!(parts.len(), 2, "{bad}");
            assert_eq!(parts[0], Ok(&b"abcde"[..]));
            assert!(parts[1].is_err());
        }
        assert_eq!(split_batch(b"").count(), 1); // an empty single: parse refuses it
    }

    proptest! {
        #[test]
        fn batches_split_back_into_what_was_joined(
            envelopes in prop::collection::vec("[mjlr] \\PC{0,40}", 1..8),
        ) {
            let batch: String = envelopes.iter().map(|e| format!("{} {e}", e.len())).collect();
            let parts: Vec<_> = split_batch(batch.as_bytes()).collect();
            let expected: Vec<Result<&[u8], Malformed>> =
                envelopes.iter().map(|e| Ok(e.as_bytes())).collect();
            prop_assert_eq!(parts, expected);
        }

        #[test]
        fn arbitrary_batches_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = split_batch(&bytes).count();
        }

        #[test]
        fn render_then_parse_is_the_identity(
            kind in prop::sample::select(vec![Kind::Message, Kind::Join, Kind::Leave, Kind::Rename]),
            epoch in "[0-9a-f]{1,16}",
            seq: u64, id in 0u64..(1 << 53), online: u32, node in 0u64..(1 << 21), post: u64,
            name in "\\PC{0,32}", json in "\\{\\PC{0,64}",
        ) {
            let e = Envelope { kind, epoch: &epoch, seq, id, online: online.into(),
                tag: Tag { node, post }, name: &name, json: &json };
            let text = render(&e);
            prop_assert_eq!(parse(text.as_bytes()), Ok(e));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&bytes);
        }
    }
}
