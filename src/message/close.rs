//! Closing codes and close frames: the status codes of RFC 6455 §7.4 (and the
//! IANA registry), the error that fails a connection (§7.1.7) with its code, and
//! a close frame's payload, parsed (§5.5.1) and encoded.

use crate::frame::{self, FrameError, OpCode, MAX_CONTROL_PAYLOAD};
use std::fmt;

/// A close status code (§7.4). The names are the RFC's and IANA's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is going down.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a type of data the endpoint cannot accept (binary on `/chat`).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: "no status code was present"; never sent on the wire.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: closed without a close frame; never sent on the wire.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a text message (or close reason) that is not UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: the message (or behaviour) violates the server's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1013: the server is overloaded for now ("Try Again Later", IANA registry).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// Whether a peer may send this code in a close frame (§7.4.1, §7.4.2 and the
    /// IANA registry): 1000-1003 and 1007-1014 are defined, 3000-4999 are for
    /// libraries and applications. 1004-1006 and 1015 are reserved and must never be
    /// sent; everything else below 3000 is unassigned, and 5000+ is out of range.
    pub fn is_allowed(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A reason to fail the connection (§7.1.7): the close code to send and a
/// human-readable explanation for the log (and the close frame's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: CloseCode,
    pub reason: &'static str,
}

impl ProtocolError {
    pub(super) fn new(code: CloseCode, reason: &'static str) -> Self {
        ProtocolError { code, reason }
    }
}

impl From<FrameError> for ProtocolError {
    fn from(error: FrameError) -> Self {
        ProtocolError::new(CloseCode::PROTOCOL_ERROR, error.reason())
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

/// Splits a close frame's payload into code and reason (§5.5.1, §7.4).
pub(super) fn parse_close_payload(
    payload: &[u8],
) -> Result<(Option<CloseCode>, &str), ProtocolError> {
    match payload {
        [] => Ok((None, "")),
        [_] => Err(ProtocolError::new(
            CloseCode::PROTOCOL_ERROR,
            "close frame with a one-byte payload",
        )),
        [high, low, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*high, *low]));
            if !code.is_allowed() {
                return Err(ProtocolError::new(
                    CloseCode::PROTOCOL_ERROR,
                    "close frame with an invalid status code",
                ));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| {
                ProtocolError::new(CloseCode::INVALID_PAYLOAD, "close reason is not UTF-8")
            })?;
            Ok((Some(code), reason))
        }
    }
}

/// Appends a close frame with `code` and `reason` to `out`. The reason is cut to fit
/// the 125-byte control frame limit on a character boundary.
pub fn encode_close(out: &mut Vec<u8>, code: CloseCode, reason: &str) {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.0.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    frame::encode_frame(out, OpCode::Close, &payload[..2 + end]);
}
