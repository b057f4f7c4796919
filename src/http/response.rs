//! Responses: a status, headers and a shared body, and the head's encoding
//! (RFC 9112 §4, RFC 9110 §5.6.7 dates).

use super::Status;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A response body, shared: a file is read once and queued by reference on
/// every connection that asks for it.
pub type Body = Rc<[u8]>;

/// A response ready to encode.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: Status,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: Status, content_type: &str, body: Body) -> Self {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body,
        }
    }

    /// An error response whose short plain-text body says why, and what would
    /// help: `403 Forbidden: Origin not allowed ...`.
    pub fn refusal(status: Status, why: &str) -> Self {
        let body = format!("{} {}: {why}\n", status.code(), status.reason());
        Response::new(status, "text/plain; charset=utf-8", body.as_bytes().into())
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Appends the status line and header fields (RFC 9112 §4-§6) to `out`. The
    /// body goes separately, so a shared one is never copied; a `HEAD` response
    /// has the same head and no body (RFC 9110 §9.3.2).
    pub fn encode_head(&self, out: &mut Vec<u8>, keep_alive: bool, now: SystemTime) {
        use std::io::Write;
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nDate: {}\r\nServer: loopchat\r\nContent-Length: {}\r\n",
            self.status.code(),
            self.status.reason(),
            http_date(now),
            self.body.len()
        );
        let mut upgrade = false;
        for (name, value) in &self.headers {
            upgrade |= name.eq_ignore_ascii_case("Upgrade");
            let _ = write!(out, "{name}: {value}\r\n");
        }
        // RFC 9110 §7.8: a sender of Upgrade also sends Connection: upgrade.
        let connection = match (upgrade, keep_alive) {
            (true, true) => "Upgrade, keep-alive",
            (true, false) => "Upgrade, close",
            (false, true) => "keep-alive",
            (false, false) => "close",
        };
        let _ = write!(out, "Connection: {connection}\r\n\r\n");
    }
}

/// An IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (hour, minute, second) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {hour:02}:{minute:02}:{second:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        let resp = Response::new(Status::Ok, "text/plain", b"hi"[..].into());
        let mut out = Vec::new();
        let when = UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        resp.encode_head(&mut out, true, when);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"));
        assert!(text.contains("Content-Length: 2\r\n"));
        assert!(text.ends_with("Connection: keep-alive\r\n\r\n"));
        let upgrade = Response::refusal(
            Status::UpgradeRequired,
            "this endpoint speaks WebSocket only",
        )
        .with_header("Upgrade", "websocket");
        let mut head = Vec::new();
        upgrade.encode_head(&mut head, false, when);
        assert!(String::from_utf8(head)
            .unwrap()
            .ends_with("Upgrade: websocket\r\nConnection: Upgrade, close\r\n\r\n"));
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }
}
