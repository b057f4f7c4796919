//! HTTP/1.1 for the chat page: request parsing, responses and static files.
//!
//! Implements the small part of RFC 9112 (HTTP/1.1 message syntax) and RFC 9110
//! (semantics) that a page server needs: `GET` and `HEAD`, keep-alive, pipelining,
//! and the error statuses. Parsing is `httparse`'s; this module adds the limits
//! (header block size, header count) and scans only the bytes that are new since the
//! last read for the end of the header block, so a request dripped in byte by byte
//! costs linear time, not quadratic. Sans-IO: bytes in, values and bytes out.

mod request;
mod response;
mod route;
mod static_files;

pub(crate) use request::decode_escapes;
pub use request::{parse_request, Request, RequestLimits};
pub use response::Response;
pub use route::{route, Route};
pub use static_files::StaticFiles;

use std::fmt;

/// The response statuses this server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    UpgradeRequired,
    HeaderFieldsTooLarge,
    ServiceUnavailable,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::UpgradeRequired => 426,
            Status::HeaderFieldsTooLarge => 431,
            Status::ServiceUnavailable => 503,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::UpgradeRequired => "Upgrade Required",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// A request that cannot be served, with the status that says why. Every HTTP
/// error closes the connection after its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpError {
    pub status: Status,
    pub reason: &'static str,
}

impl HttpError {
    pub fn new(status: Status, reason: &'static str) -> Self {
        HttpError { status, reason }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({})",
            self.status.code(),
            self.status.reason(),
            self.reason
        )
    }
}
