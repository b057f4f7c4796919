//! A connection's write queue: frames waiting for the socket, written many per
//! system call.
//!
//! Broadcast frames are queued by reference (encoded once for every member, RFC
//! 6455 §5.6 text frames shared as `Rc<[u8]>`); a connection's own bytes (echoes,
//! pongs, HTTP responses) are appended to its last owned segment. [`OutputQueue::flush`]
//! writes until the queue is empty or the socket would block, gathering small
//! segments into one `write` and larger ones into one `writev`.

use crate::chat::SharedFrame;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

/// Bytes waiting to be written, in order.
#[derive(Debug, Clone)]
enum Segment {
    /// A frame shared with other connections (a broadcast).
    Shared(SharedFrame),
    /// Bytes for this connection only (echoes, pongs, HTTP responses).
    Owned(Vec<u8>),
}

impl Segment {
    fn bytes(&self) -> &[u8] {
        match self {
            Segment::Shared(frame) => frame,
            Segment::Owned(bytes) => bytes,
        }
    }
}

/// Slots of segment queue an empty queue keeps; a larger one is freed.
const KEEP_SEGMENTS: usize = 8;
/// Most segments handed to one `write_vectored` call (Linux allows 1024).
const MAX_IOVECS: usize = 32;
/// An owned buffer larger than this is freed instead of kept for reuse, so an idle
/// connection holds little memory.
const KEEP_SPARE_CAPACITY: usize = 16 * 1024;
/// Segments that add up to at most this many bytes are copied into one buffer and
/// written with one `write` instead of a `writev`: the kernel's per-iovec work
/// costs more than the copy (`cargo bench --bench writev`: 2-20% less CPU per
/// call from 2 × 150 B to 32 × 1,100 B; 7% more at 8 × 8 KiB, past this limit).
const GATHER_LIMIT: usize = 32 * 1024;

thread_local! {
    /// The buffer small segments are gathered in: one per thread (the server is one
    /// loop on one thread), reused by every connection.
    static GATHER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(GATHER_LIMIT));
}

/// A connection's write queue. Broadcast frames are queued by reference; owned
/// bytes are appended to the last owned segment, so small replies coalesce.
/// `flush` writes many segments per system call.
#[derive(Debug, Default)]
pub struct OutputQueue {
    segments: VecDeque<Segment>,
    /// Bytes of the front segment already written.
    front_written: usize,
    /// Bytes queued and not yet written.
    queued: usize,
    /// An emptied owned buffer kept for the next owned segment.
    spare: Vec<u8>,
}

/// How a flush ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued was written.
    All,
    /// The socket is full; a writable event will say when to go on.
    WouldBlock,
}

impl OutputQueue {
    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Segments queued (a test's view of how many pushes a queue took).
    #[cfg(test)]
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Queues a shared frame.
    pub fn push_shared(&mut self, frame: &SharedFrame) {
        self.queued += frame.len();
        self.segments.push_back(Segment::Shared(Rc::clone(frame)));
    }

    /// Queues bytes written by `encode` into an owned buffer.
    pub fn push_owned(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        if !matches!(self.segments.back(), Some(Segment::Owned(_))) {
            self.segments
                .push_back(Segment::Owned(std::mem::take(&mut self.spare)));
        }
        if let Some(Segment::Owned(buf)) = self.segments.back_mut() {
            let before = buf.len();
            encode(buf);
            self.queued += buf.len() - before;
        }
    }

    /// Whether one more message may be queued under `limit` bytes. A queue over
    /// the limit is first written to `socket` (output otherwise waits for the end
    /// of the loop iteration), so only what the peer's socket refuses counts
    /// against it: a burst does not condemn a peer that reads. Bytes written are
    /// added to `bytes_out`.
    pub fn make_room(
        &mut self,
        socket: &mut impl Write,
        limit: usize,
        bytes_out: &mut u64,
    ) -> bool {
        if self.queued <= limit {
            return true;
        }
        if let Ok((written, _)) = self.flush(socket) {
            *bytes_out += written as u64;
        }
        self.queued <= limit
    }

    /// Drops every segment that has not started to go out, so that a slow reader's
    /// backlog is freed at once. A partly written segment stays: cutting a frame
    /// in half would corrupt the stream.
    pub fn discard_unstarted(&mut self) {
        let keep = usize::from(self.front_written > 0);
        while self.segments.len() > keep {
            if let Some(segment) = self.segments.pop_back() {
                self.queued -= segment.bytes().len();
            }
        }
    }

    /// Writes as much as the socket takes, many segments per call, then flushes
    /// the socket (a TLS socket's own records). Returns the bytes written and how
    /// it ended.
    pub fn flush(&mut self, socket: &mut impl Write) -> io::Result<(usize, Flushed)> {
        let mut written_total = 0;
        while let Some(front) = self.segments.front() {
            let result = if self.segments.len() == 1 {
                // One segment (the usual case for echoes and replies): a plain write.
                socket.write(&front.bytes()[self.front_written..])
            } else if self.unwritten().map(<[u8]>::len).sum::<usize>() <= GATHER_LIMIT {
                // Several frames (chat messages): one contiguous write costs the
                // kernel less than walking an iovec per frame.
                GATHER.with_borrow_mut(|gather| {
                    gather.clear();
                    self.unwritten()
                        .for_each(|bytes| gather.extend_from_slice(bytes));
                    socket.write(gather)
                })
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                for (slice, bytes) in slices.iter_mut().zip(self.unwritten()) {
                    *slice = IoSlice::new(bytes);
                    count += 1;
                }
                socket.write_vectored(&slices[..count])
            };
            let written = match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((written_total, Flushed::WouldBlock))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            written_total += written;
            self.advance(written);
        }
        // What the socket itself still holds for the peer (TLS records) goes
        // out too, or the flush waits for the socket like any other write.
        loop {
            return match socket.flush() {
                Ok(()) => Ok((written_total, Flushed::All)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    Ok((written_total, Flushed::WouldBlock))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// What one flush call may write: the unwritten bytes of the first
    /// `MAX_IOVECS` segments, the front one from where it was cut off.
    fn unwritten(&self) -> impl Iterator<Item = &[u8]> {
        (self.segments.iter().take(MAX_IOVECS).enumerate())
            .map(|(i, segment)| &segment.bytes()[if i == 0 { self.front_written } else { 0 }..])
    }

    /// Marks `n` bytes as written, retiring finished segments.
    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.segments.front() else {
                break;
            };
            let left = front.bytes().len() - self.front_written;
            if n < left {
                self.front_written += n;
                return;
            }
            n -= left;
            self.front_written = 0;
            if let Some(Segment::Owned(mut buf)) = self.segments.pop_front() {
                if buf.capacity() <= KEEP_SPARE_CAPACITY && buf.capacity() > self.spare.capacity() {
                    buf.clear();
                    self.spare = buf;
                }
            }
        }
        if self.segments.is_empty() {
            self.front_written = 0;
            // A burst (say, a thousand join notices) grew the queue; an idle
            // connection gives that memory back.
            if self.segments.capacity() > KEEP_SEGMENTS {
                self.segments = VecDeque::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `limit` bytes per call, then would block.
    struct Trickle {
        taken: Vec<u8>,
        per_call: usize,
        calls_left: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let mut n = 0;
            for b in bufs {
                let take = (self.per_call - n).min(b.len());
                self.taken.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn segments_go_out_in_order_across_short_writes() {
        let mut q = OutputQueue::default();
        let shared: SharedFrame = b"BROADCAST".to_vec().into();
        q.push_owned(|b| b.extend_from_slice(b"one"));
        q.push_owned(|b| b.extend_from_slice(b"two")); // coalesces
        q.push_shared(&shared);
        q.push_owned(|b| b.extend_from_slice(b"three"));
        assert_eq!(q.queued(), 20);
        let mut sock = Trickle {
            taken: Vec::new(),
            per_call: 4,
            calls_left: 2,
        };
        assert_eq!(q.flush(&mut sock).unwrap(), (8, Flushed::WouldBlock));
        assert_eq!(q.queued(), 12);
        sock.calls_left = 100;
        assert_eq!(q.flush(&mut sock).unwrap(), (12, Flushed::All));
        assert_eq!(sock.taken, b"onetwoBROADCASTthree");
        assert!(q.is_empty());
    }

    #[test]
    fn discarding_keeps_a_partly_written_frame_whole() {
        let mut q = OutputQueue::default();
        let frame: SharedFrame = b"0123456789".to_vec().into();
        q.push_shared(&frame);
        q.push_shared(&frame);
        let mut sock = Trickle {
            taken: Vec::new(),
            per_call: 3,
            calls_left: 1,
        };
        q.flush(&mut sock).unwrap();
        q.discard_unstarted();
        assert_eq!(q.queued(), 7);
        sock.calls_left = 100;
        q.flush(&mut sock).unwrap();
        assert_eq!(sock.taken, b"0123456789");
    }

    /// A socket that takes everything and records how each call was made.
    #[derive(Default)]
    struct CallLog {
        taken: Vec<u8>,
        /// The number of slices of each call (1 for a plain `write`).
        calls: Vec<usize>,
    }

    impl Write for CallLog {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls.push(1);
            self.taken.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls.push(bufs.len());
            bufs.iter().for_each(|b| self.taken.extend_from_slice(b));
            Ok(bufs.iter().map(|b| b.len()).sum())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn small_frames_are_gathered_into_one_write_and_large_ones_go_by_writev() {
        let small: Vec<SharedFrame> = (0..40u8).map(|i| vec![i; 50].into()).collect();
        let mut q = OutputQueue::default();
        small.iter().for_each(|frame| q.push_shared(frame));
        let mut sock = CallLog::default();
        assert_eq!(q.flush(&mut sock).unwrap(), (2000, Flushed::All));
        // 40 frames: MAX_IOVECS (32) of them gathered in one write, then 8 more.
        assert_eq!(sock.calls, [1, 1]);
        assert_eq!(sock.taken, small.concat());

        let large: SharedFrame = vec![7u8; GATHER_LIMIT].into();
        q.push_shared(&large);
        q.push_shared(&small[0]);
        let mut sock = CallLog::default();
        q.flush(&mut sock).unwrap();
        assert_eq!(sock.calls, [2]);
        assert_eq!(sock.taken, [&large[..], &small[0][..]].concat());
    }

    #[test]
    fn a_gathered_write_cut_short_resumes_mid_frame() {
        let frames: Vec<SharedFrame> = (0..5u8).map(|i| vec![b'a' + i; 7].into()).collect();
        let mut q = OutputQueue::default();
        frames.iter().for_each(|frame| q.push_shared(frame));
        let mut sock = Trickle {
            taken: Vec::new(),
            per_call: 10,
            calls_left: 2,
        };
        assert_eq!(q.flush(&mut sock).unwrap(), (20, Flushed::WouldBlock));
        assert_eq!(q.queued(), 15);
        sock.calls_left = 100;
        assert_eq!(q.flush(&mut sock).unwrap(), (15, Flushed::All));
        assert_eq!(sock.taken, frames.concat());
    }
}
