//! permessage-deflate in the loop (RFC 7692): the agreement made at the upgrade,
//! and the loop's one compressor and one inflater, shared by every connection.
//!
//! Every agreement says no context takeover in both directions (`deflate.rs`),
//! so a message compresses the same for every member: a broadcast is compressed
//! at most once, into one frame shared by every member that agreed (and whose
//! window fits), while the others get the plain frame. Messages under
//! `--deflate-min-size`, and those that would not shrink, go out plain, which
//! RFC 7692 §6 allows message by message. Without the `deflate` feature nothing
//! is ever agreed, so both halves below only ever take the plain path.

use crate::chat::SharedFrame;
use crate::config::Config;
use crate::deflate::{self, Agreement};
use crate::frame::{self, OpCode};
use crate::http::Request;
use crate::message::{CloseCode, MessageKind, ProtocolError};

/// The agreement for this request and the extension header to answer with, if
/// the server offers permessage-deflate and the client made an acceptable offer.
pub(super) fn negotiate(config: &Config, request: &Request) -> Option<(Agreement, String)> {
    if !config.permessage_deflate || deflate::is_broken_client(request.header("User-Agent")) {
        return None;
    }
    deflate::negotiate(request.headers_named("Sec-WebSocket-Extensions"))
}

/// The receiving half: the loop's inflater.
#[derive(Debug, Default)]
pub(super) struct Inflate {
    #[cfg(feature = "deflate")]
    inflater: deflate::Inflater,
}

impl Inflate {
    /// Messages inflated so far.
    pub fn calls(&self) -> u64 {
        #[cfg(feature = "deflate")]
        let calls = self.inflater.calls;
        #[cfg(not(feature = "deflate"))]
        let calls = 0;
        calls
    }

    /// Inflates a compressed message (§7.2.2) within `limit` bytes; text must be
    /// UTF-8. The result is lent until the next call. A message too big gets
    /// 1009, corrupt data or text that is not UTF-8 gets 1007.
    pub fn inflate(
        &mut self,
        kind: MessageKind,
        compressed: &[u8],
        limit: usize,
    ) -> Result<&[u8], ProtocolError> {
        #[cfg(feature = "deflate")]
        {
            use deflate::InflateError;
            let inflated = self
                .inflater
                .inflate(compressed, limit)
                .map_err(|e| match e {
                    InflateError::TooBig => ProtocolError {
                        code: CloseCode::MESSAGE_TOO_BIG,
                        reason: "message inflates past the size limit",
                    },
                    InflateError::Corrupt => ProtocolError {
                        code: CloseCode::INVALID_PAYLOAD,
                        reason: "compressed message is not valid DEFLATE data",
                    },
                })?;
            if kind == MessageKind::Text && std::str::from_utf8(inflated).is_err() {
                return Err(ProtocolError {
                    code: CloseCode::INVALID_PAYLOAD,
                    reason: "text message is not valid UTF-8",
                });
            }
            Ok(inflated)
        }
        #[cfg(not(feature = "deflate"))]
        {
            let _ = (kind, compressed, limit);
            Err(ProtocolError {
                code: CloseCode::PROTOCOL_ERROR,
                reason: "compressed message without permessage-deflate",
            })
        }
    }
}

/// The sending half: the loop's compressor, and the buffer a unicast reply is
/// compressed into.
#[derive(Debug)]
pub(super) struct Deflate {
    #[cfg(feature = "deflate")]
    compressor: deflate::Compressor,
    #[cfg(feature = "deflate")]
    scratch: Vec<u8>,
    min_size: usize,
}

impl Deflate {
    pub fn new(config: &Config) -> Self {
        Deflate {
            #[cfg(feature = "deflate")]
            compressor: deflate::Compressor::new(config.deflate_level),
            #[cfg(feature = "deflate")]
            scratch: Vec::new(),
            min_size: config.deflate_min_size,
        }
    }

    /// Messages compressed so far (for `/metrics`: at most one per broadcast).
    pub fn calls(&self) -> u64 {
        #[cfg(feature = "deflate")]
        let calls = self.compressor.calls;
        #[cfg(not(feature = "deflate"))]
        let calls = 0;
        calls
    }

    /// Whether `len` bytes are worth compressing for a peer with `agreement`:
    /// it agreed, and the message is not under the threshold.
    fn worth_it(&self, agreement: Option<Agreement>, len: usize) -> bool {
        agreement.is_some() && len >= self.min_size
    }

    /// Whether the broadcast frame (compressed within a 15-bit window) may go to
    /// a peer with `agreement`: its window is 15 bits, or the message is no
    /// longer than its window, since a message compressed from a reset state
    /// refers only inside itself.
    fn shared_frame_fits(agreement: Agreement, len: usize) -> bool {
        agreement.server_window_bits >= 15 || len <= 1 << agreement.server_window_bits
    }

    /// The compressed payload of a reply to one peer (within the peer's own
    /// window), if worth it and smaller; lent until the next call.
    pub fn compress_reply(
        &mut self,
        agreement: Option<Agreement>,
        payload: &[u8],
    ) -> Option<&[u8]> {
        let agreement = agreement.filter(|_| self.worth_it(agreement, payload.len()))?;
        self.compress(payload, agreement.server_window_bits)
    }

    /// `payload` compressed within a window of `bits`, if that is smaller.
    #[cfg(feature = "deflate")]
    fn compress(&mut self, payload: &[u8], bits: u8) -> Option<&[u8]> {
        self.scratch.clear();
        self.compressor.compress(payload, bits, &mut self.scratch);
        (self.scratch.len() < payload.len()).then_some(&self.scratch[..])
    }

    /// Without the `deflate` feature nothing is ever agreed, so this is never
    /// reached with a peer that could take a compressed frame.
    #[cfg(not(feature = "deflate"))]
    fn compress(&mut self, _payload: &[u8], _bits: u8) -> Option<&[u8]> {
        None
    }

    /// For a broadcast: the frame a member with `agreement` gets. The compressed
    /// frame is made the first time a member needs it, then shared; `plain` goes
    /// to the rest.
    pub fn frame_for<'f>(
        &mut self,
        agreement: Option<Agreement>,
        plain: &'f SharedFrame,
        compressed: &'f mut Option<Option<SharedFrame>>,
    ) -> &'f SharedFrame {
        let payload = frame::server_payload(plain);
        let fits = agreement.is_some_and(|a| Self::shared_frame_fits(a, payload.len()));
        if !fits || !self.worth_it(agreement, payload.len()) {
            return plain;
        }
        let made = compressed.get_or_insert_with(|| {
            // The full window: members with a smaller one get it only when the
            // message fits theirs (`shared_frame_fits`).
            let smaller = self.compress(payload, 15)?;
            let mut out = Vec::with_capacity(smaller.len() + frame::MAX_HEADER_LEN);
            let opcode = frame::server_opcode(plain).unwrap_or(OpCode::Text);
            frame::encode_compressed_frame(&mut out, opcode, smaller);
            Some(out.into())
        });
        made.as_ref().unwrap_or(plain)
    }
}
