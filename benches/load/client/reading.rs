//! The load client's reading side: reads each connection until it would block, checks
//! the server's handshake reply, cuts the bytes into frames (unmasked if need be), and
//! answers pings, notes closes, and joins fragments into whole messages for
//! [`traffic`](super::traffic).

use std::io::{self, Read};
use std::time::Instant;

use super::{Client, ConnState, MAX_FRAME};
use crate::target::Protocol;
use crate::wire::{
    mask_in_place, parse_header, push_masked_frame, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING,
    OP_PONG, OP_TEXT, WS_ACCEPT,
};

impl Client {
    /// Reads connection `index` until it would block, and handles what came.
    pub(super) fn on_readable(&mut self, index: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(n) = self.read_some(index, &mut scratch) {
            self.last_rx = Instant::now();
            let now = self.now_ns();
            let c = &mut self.conns[index];
            if c.state == ConnState::Handshake {
                c.read_buf.extend_from_slice(&scratch[..n]);
                self.try_handshake(index);
                let c = &self.conns[index];
                if c.state == ConnState::Open && !c.read_buf.is_empty() {
                    self.process_buffered(index, now);
                }
            } else if c.read_buf.is_empty() {
                let used = self.process(index, &mut scratch[..n], now);
                if used < n {
                    self.conns[index]
                        .read_buf
                        .extend_from_slice(&scratch[used..n]);
                }
            } else {
                c.read_buf.extend_from_slice(&scratch[..n]);
                self.process_buffered(index, now);
            }
            if n < scratch.len() {
                break; // short read: the socket is drained (epoll reports new data again)
            }
        }
        self.scratch = scratch;
    }

    /// One read from connection `index` into `buf`: the bytes read, or `None` when there
    /// is nothing to read now or any more (end of stream and errors kill it).
    fn read_some(&mut self, index: usize, buf: &mut [u8]) -> Option<usize> {
        loop {
            let c = &mut self.conns[index];
            if c.state == ConnState::Dead {
                return None;
            }
            match c.socket.as_mut()?.read(buf) {
                Ok(0) => self.kill(index, "EOF from server", true),
                Ok(n) => return Some(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => self.kill(index, &format!("read: {e}"), true),
            }
            return None;
        }
    }

    /// Processes the frames in connection `index`'s read buffer, keeping what is left.
    fn process_buffered(&mut self, index: usize, now: u64) {
        let mut buffered = std::mem::take(&mut self.conns[index].read_buf);
        let used = self.process(index, &mut buffered, now);
        buffered.drain(..used);
        self.conns[index].read_buf = buffered;
    }

    /// Checks the server's reply to the upgrade once it is buffered whole; the
    /// connection opens, or is killed.
    fn try_handshake(&mut self, index: usize) {
        let c = &mut self.conns[index];
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&c.read_buf) {
            Ok(httparse::Status::Partial) => {
                if c.read_buf.len() > 16 * 1024 {
                    self.kill(index, "oversized handshake response", true);
                }
            }
            Ok(httparse::Status::Complete(n)) => {
                let accept = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                    .map(|h| h.value.to_vec());
                if resp.code != Some(101) {
                    let code = resp.code;
                    return self.kill(index, &format!("handshake status {code:?}"), true);
                }
                if accept.as_deref() != Some(WS_ACCEPT.as_bytes()) {
                    return self.kill(index, "bad Sec-WebSocket-Accept", true);
                }
                c.read_buf.drain(..n);
                c.state = ConnState::Open;
                self.on_open(index);
            }
            Err(e) => self.kill(index, &format!("handshake parse: {e}"), true),
        }
    }

    /// Parses complete frames from `buf`; returns bytes consumed.
    fn process(&mut self, index: usize, buf: &mut [u8], now: u64) -> usize {
        let mut pos = 0;
        while let Some(header) = parse_header(&buf[pos..]) {
            if header.payload_len > MAX_FRAME {
                self.checks.errors.protocol += 1;
                self.kill(index, "frame over 64 MiB", true);
                return buf.len();
            }
            let end = pos + header.len + header.payload_len as usize;
            if end > buf.len() {
                break;
            }
            let payload = &mut buf[pos + header.len..end];
            if let Some(m) = header.mask {
                if self.target.protocol == Protocol::WebSocket {
                    self.checks
                        .protocol_error("masked frame from server".into());
                }
                mask_in_place(payload, m);
            }
            pos = end;
            self.on_frame(index, header.fin, header.opcode, payload, now);
            if self.conns[index].state == ConnState::Dead {
                return buf.len();
            }
        }
        pos
    }

    /// One frame: answers a ping, notes a close, hands a whole message on.
    fn on_frame(&mut self, index: usize, fin: bool, op: u8, payload: &mut [u8], now: u64) {
        match op {
            OP_PING => {
                let c = &mut self.conns[index];
                push_masked_frame(&mut c.write_buf, OP_PONG, payload, [1, 2, 3, 4]);
                self.queue_flush(index);
            }
            OP_PONG => {}
            OP_CLOSE => {
                let code = if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    0
                };
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned();
                self.kill(index, &format!("server sent close {code} {reason}"), true);
            }
            OP_TEXT | OP_BINARY if fin && self.conns[index].fragments.is_empty() => {
                self.on_message(index, op, payload, now)
            }
            OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                let c = &mut self.conns[index];
                if op != OP_CONTINUATION {
                    c.fragments.clear();
                    c.fragment_opcode = op;
                }
                c.fragments.extend_from_slice(payload);
                if fin {
                    let mut message = std::mem::take(&mut c.fragments);
                    let opcode = c.fragment_opcode;
                    self.on_message(index, opcode, &message, now);
                    message.clear();
                    self.conns[index].fragments = message;
                }
            }
            _ => self.checks.protocol_error(format!("unknown opcode {op}")),
        }
    }
}
