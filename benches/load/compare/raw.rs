//! The raw TCP comparison servers, on the same kind of mio loop as loopchat: an echo
//! server with no framing at all (the physical limit for echo), and a fan-out server
//! that relays every client frame unchanged to every connection (the physical limit
//! for broadcast).

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::wire::parse_header;

const LISTENER: Token = Token(usize::MAX);
/// Bytes read at a time.
const READ_CHUNK: usize = 64 * 1024;

/// A poll with a listener on 127.0.0.1:`port`, for the two raw servers.
fn listen(port: u16) -> (Poll, TcpListener) {
    let poll = Poll::new().expect("poll");
    let mut listener = TcpListener::bind(([127, 0, 0, 1], port).into()).expect("bind");
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .expect("register");
    (poll, listener)
}

/// Waits for events; a signal's interruption is not an error.
fn wait(poll: &mut Poll, events: &mut Events) {
    while let Err(e) = poll.poll(events, None) {
        if e.kind() != io::ErrorKind::Interrupted {
            panic!("poll: {e}");
        }
    }
}

/// Accepts every waiting connection into `conns`, registered for reading and
/// writing, as `make` builds it.
fn accept_all<C>(
    listener: &mut TcpListener,
    poll: &Poll,
    conns: &mut slab::Slab<C>,
    make: impl Fn(TcpStream) -> C,
) {
    loop {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nodelay(true);
                let e = conns.vacant_entry();
                let interest = Interest::READABLE | Interest::WRITABLE;
                if poll
                    .registry()
                    .register(&mut s, Token(e.key()), interest)
                    .is_ok()
                {
                    e.insert(make(s));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break, // e.g. EMFILE: try again on the next event
        }
    }
}

/// Writes as much of `b` as the socket takes; returns how much that was.
fn write_some(sock: &mut TcpStream, b: &[u8]) -> io::Result<usize> {
    let mut off = 0;
    while off < b.len() {
        match sock.write(&b[off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(off)
}

/// Reads `sock` until it would block, handing each chunk read to `take` (with the
/// socket, to answer on); false if the connection is finished (end of stream or an
/// error, or `take` said so).
fn read_all(
    sock: &mut TcpStream,
    buf: &mut [u8],
    mut take: impl FnMut(&mut TcpStream, &[u8]) -> bool,
) -> bool {
    loop {
        match sock.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                if !take(sock, &buf[..n]) {
                    return false;
                }
                if n < buf.len() {
                    return true; // short read: drained
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw TCP echo (no framing)
// ---------------------------------------------------------------------------------------

struct EchoConn {
    sock: TcpStream,
    out: Vec<u8>, // what the socket did not take yet
}

/// Echoes every byte back on its connection, until killed.
pub fn serve_echo(port: u16) {
    let (mut poll, mut listener) = listen(port);
    let mut conns: slab::Slab<EchoConn> = slab::Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        wait(&mut poll, &mut events);
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept_all(&mut listener, &poll, &mut conns, |sock| EchoConn {
                    sock,
                    out: Vec::new(),
                });
                continue;
            }
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            let mut close = ev.is_error();
            if !close && ev.is_writable() && !c.out.is_empty() {
                close = write_some(&mut c.sock, &c.out)
                    .map(|w| {
                        c.out.drain(..w);
                    })
                    .is_err();
            }
            if !close && (ev.is_readable() || ev.is_read_closed()) {
                let out = &mut c.out;
                close = !read_all(&mut c.sock, &mut buf, |sock, chunk| {
                    if !out.is_empty() {
                        out.extend_from_slice(chunk);
                        return true;
                    }
                    match write_some(sock, chunk) {
                        Ok(w) => {
                            out.extend_from_slice(&chunk[w..]);
                            true
                        }
                        Err(_) => false,
                    }
                });
            }
            if close {
                let mut c = conns.remove(key);
                let _ = poll.registry().deregister(&mut c.sock);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw TCP fan-out (framing only to find boundaries)
// ---------------------------------------------------------------------------------------
//
// The physical limit for broadcast: every connection is in one group, and each client
// frame read from any connection is relayed, byte for byte (still masked), to every
// connection, sender included. The server looks at frame headers only to cut the
// stream at frame boundaries (so frames from two senders never interleave); it does not
// unmask, validate UTF-8, wrap the text in JSON or keep history. Like loopchat, it
// gathers everything read in one loop iteration into one shared batch and writes it to
// each connection once at the end of the iteration.

struct FanoutConn {
    sock: TcpStream,
    partial: Vec<u8>, // the start of a frame not yet read whole
    out: Vec<u8>,     // what the socket did not take yet
    dirty: bool,
}

/// A reader this far behind is dropped.
const MAX_OUT: usize = 64 << 20;

/// Bytes of complete frames at the start of `b` (masked client frames).
fn whole_frames_len(b: &[u8]) -> usize {
    let mut pos = 0;
    while let Some(header) = parse_header(&b[pos..]) {
        let end = pos + header.len + header.payload_len as usize;
        if end > b.len() {
            break;
        }
        pos = end;
    }
    pos
}

/// Relays every whole frame read to every connection, until killed.
pub fn serve_fanout(port: u16) {
    let (mut poll, mut listener) = listen(port);
    let mut conns: slab::Slab<FanoutConn> = slab::Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut batch: Vec<u8> = Vec::new();
    let mut closed: Vec<usize> = Vec::new();
    loop {
        wait(&mut poll, &mut events);
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept_all(&mut listener, &poll, &mut conns, |sock| FanoutConn {
                    sock,
                    partial: Vec::new(),
                    out: Vec::new(),
                    dirty: false,
                });
                continue;
            }
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            if ev.is_error() {
                closed.push(key);
                continue;
            }
            if ev.is_writable() && !c.out.is_empty() {
                c.dirty = true;
            }
            if ev.is_readable() || ev.is_read_closed() {
                let partial = &mut c.partial;
                let open = read_all(&mut c.sock, &mut buf, |_, chunk| {
                    partial.extend_from_slice(chunk);
                    let whole = whole_frames_len(partial);
                    batch.extend_from_slice(&partial[..whole]);
                    partial.drain(..whole);
                    true
                });
                if !open {
                    closed.push(key);
                }
            }
        }
        write_batch(&mut conns, &batch, &mut closed);
        batch.clear();
        for key in closed.drain(..) {
            if let Some(mut c) = conns.try_remove(key) {
                let _ = poll.registry().deregister(&mut c.sock);
            }
        }
    }
}

/// One write per connection for everything read in this iteration (and for what a
/// writable socket did not take before); the connections to close go to `closed`.
fn write_batch(conns: &mut slab::Slab<FanoutConn>, batch: &[u8], closed: &mut Vec<usize>) {
    for (key, c) in conns.iter_mut() {
        if batch.is_empty() && !c.dirty {
            continue;
        }
        c.dirty = false;
        let failed = if c.out.is_empty() {
            write_some(&mut c.sock, batch).map(|w| c.out.extend_from_slice(&batch[w..]))
        } else {
            c.out.extend_from_slice(batch);
            write_some(&mut c.sock, &c.out).map(|w| {
                c.out.drain(..w);
            })
        }
        .is_err();
        if failed || c.out.len() > MAX_OUT {
            closed.push(key);
        }
    }
}
