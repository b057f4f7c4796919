//! Request heads: parsing with `httparse` under the server's limits (RFC 9112
//! §2-3), and the accessors the server needs (path, query, `Host`, keep-alive).
//! Only the bytes new since the last read are scanned for the end of the head, so
//! a request dripped in byte by byte costs linear time.

use super::{HttpError, Status};

/// A parsed request head. Bodies are not accepted (nothing here needs one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent, e.g. `/chat/lobby?name=ann`.
    pub target: String,
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    /// Header names and values in order; values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header called `name`, in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header (such as `Connection`) lists `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers_named(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The path, without the query string. An absolute-form target
    /// (`http://host/path`, RFC 9112 §3.2.2) is reduced to its path.
    pub fn path(&self) -> &str {
        let target =
            split_absolute_form(&self.target).map_or(self.target.as_str(), |(_, rest)| rest);
        match target.split('?').next() {
            Some("") | None => "/",
            Some(path) => path,
        }
    }

    /// The host (and port) the request is for. RFC 9112 §3.2.2: an absolute-form
    /// target names it, and then `Host` is ignored; otherwise it is `Host`.
    pub fn authority(&self) -> Option<&str> {
        match split_absolute_form(&self.target) {
            Some((authority, _)) => Some(authority),
            None => self.header("Host"),
        }
    }

    /// The percent-decoded value of query parameter `name`, if present.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| percent_decode(value))
        })
    }

    /// Whether the connection stays open after the response (RFC 9112 §9.3).
    pub fn keep_alive(&self) -> bool {
        if self.has_token("Connection", "close") {
            return false;
        }
        self.minor_version >= 1 || self.has_token("Connection", "keep-alive")
    }
}

/// Splits `http://authority/rest` into authority and rest (the scheme compared
/// without regard to case); `None` for an origin-form target such as `/chat`.
fn split_absolute_form(target: &str) -> Option<(&str, &str)> {
    let scheme = ["http://", "https://"].into_iter().find(|scheme| {
        // Compared as bytes: the target may hold multi-byte characters, and
        // slicing a str inside one would panic.
        target
            .as_bytes()
            .get(..scheme.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme.as_bytes()))
    })?;
    let rest = &target[scheme.len()..]; // the prefix is ASCII, so this is a boundary
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Some(rest.split_at(end))
}

/// Decodes `%XX` escapes and `+` (as space); invalid escapes are kept as they are,
/// and the result is decoded lossily as UTF-8.
pub fn percent_decode(input: &str) -> String {
    String::from_utf8_lossy(&decode_escapes(input, true).0).into_owned()
}

/// Decodes `%XX` escapes (and `+` as a space if `plus_is_space`). Returns the
/// bytes and whether every `%` began a valid escape (invalid ones are kept).
pub(crate) fn decode_escapes(input: &str, plus_is_space: bool) -> (Vec<u8>, bool) {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut all_valid = true;
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex_byte(bytes.get(i + 1..i + 3))) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (other, _) => {
                all_valid &= other != b'%';
                out.push(other);
                i += 1;
            }
        }
    }
    (out, all_valid)
}

/// The byte written by two hex digits, if `digits` is exactly that.
fn hex_byte(digits: Option<&[u8]>) -> Option<u8> {
    let digits = digits?;
    if digits.len() != 2 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// Limits on one request head.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Bytes in the request line and headers, up to and including the blank line.
    pub max_header_bytes: usize,
    /// Number of header fields.
    pub max_headers: usize,
}

/// Finds the end of a request head in `buf`: the index just past the blank line.
///
/// `scanned` is how far earlier calls looked; only the bytes after it (and the two
/// before it, where a terminator may have started) are read. It is updated, so
/// each byte of a slowly arriving request is examined a bounded number of times.
pub fn find_head_end(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    let start = scanned.saturating_sub(2);
    for i in start..buf.len() {
        if buf[i] != b'\n' {
            continue;
        }
        // A line feed followed by an empty line: "\n\n" or "\n\r\n".
        match (buf.get(i + 1), buf.get(i + 2)) {
            (Some(b'\n'), _) => return Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
            _ => {}
        }
    }
    *scanned = buf.len();
    None
}

/// Parses the next request at the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete, and `Ok(Some((request,
/// head_len)))` once it is whole. `scanned` carries the progress of the search for
/// the end of the head between calls; reset it to 0 after consuming a request.
pub fn parse_request(
    buf: &[u8],
    scanned: &mut usize,
    limits: RequestLimits,
) -> Result<Option<(Request, usize)>, HttpError> {
    let Some(head_end) = find_head_end(buf, scanned) else {
        if buf.len() > limits.max_header_bytes {
            return Err(HttpError::new(
                Status::HeaderFieldsTooLarge,
                "request header block too large",
            ));
        }
        return Ok(None);
    };
    if head_end > limits.max_header_bytes {
        return Err(HttpError::new(
            Status::HeaderFieldsTooLarge,
            "request header block too large",
        ));
    }
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut parsed = httparse::Request::new(&mut headers);
    let head = &buf[..head_end];
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HttpError::new(Status::BadRequest, "malformed request head"))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(
                Status::HeaderFieldsTooLarge,
                "too many header fields",
            ))
        }
        Err(_) => return Err(HttpError::new(Status::BadRequest, "malformed request head")),
    }
    let (Some(method), Some(target), Some(minor_version)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HttpError::new(
            Status::BadRequest,
            "incomplete request line",
        ));
    };
    let request = Request {
        method: method.to_string(),
        target: target.to_string(),
        minor_version,
        headers: parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
    };
    // RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host; none is allowed
    // in HTTP/1.0, but never two.
    let hosts = request.headers_named("Host").count();
    if hosts > 1 || (hosts == 0 && request.minor_version >= 1) {
        return Err(HttpError::new(
            Status::BadRequest,
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    if request
        .header("Host")
        .is_some_and(|host| !is_valid_host(host))
    {
        return Err(HttpError::new(Status::BadRequest, "invalid Host header"));
    }
    if request.header("Transfer-Encoding").is_some()
        || request
            .header("Content-Length")
            .is_some_and(|v| v.trim() != "0")
    {
        let status = if matches!(request.method.as_str(), "GET" | "HEAD") {
            Status::BadRequest
        } else {
            Status::MethodNotAllowed
        };
        return Err(HttpError::new(status, "request bodies are not accepted"));
    }
    Ok(Some((request, head_end)))
}

/// Whether `value` has the characters of a `Host` (RFC 3986 §3.2.2 host, an
/// optional port): unreserved, percent escapes, sub-delims, `:` and IPv6 brackets.
fn is_valid_host(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        max_header_bytes: 8192,
        max_headers: 64,
    };

    fn parse(bytes: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
        parse_request(bytes, &mut 0, LIMITS)
    }

    #[test]
    fn parses_a_simple_get() {
        let input = b"GET /chat/x?name=Ann%20B HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, keep-alive\r\n\r\nrest";
        let (req, len) = parse(input).unwrap().unwrap();
        assert_eq!(len, input.len() - 4);
        assert_eq!(req.method, "GET");
        assert_eq!(req.path(), "/chat/x");
        assert_eq!(req.query_param("name").as_deref(), Some("Ann B"));
        assert_eq!(req.header("host"), Some("a"));
        assert!(req.has_token("connection", "upgrade"));
        assert!(req.keep_alive());
    }

    #[test]
    fn incomplete_heads_wait_and_scan_only_new_bytes() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut scanned = 0;
        for end in 0..input.len() {
            assert_eq!(parse_request(&input[..end], &mut scanned, LIMITS), Ok(None));
            assert_eq!(scanned, end);
        }
        assert!(parse_request(input, &mut scanned, LIMITS)
            .unwrap()
            .is_some());
    }

    #[test]
    fn host_rules_and_absolute_targets() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n").unwrap_err().status,
            Status::BadRequest
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
                .unwrap_err()
                .status,
            Status::BadRequest
        );
        let (r, _) = parse(b"GET http://a:8080/chat/x?name=b HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.path(), "/chat/x");
        let (r, _) = parse(b"GET HTTPS://a HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.path(), "/");
    }

    #[test]
    fn keep_alive_rules() {
        let (r, _) = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.keep_alive());
        let (r, _) = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.keep_alive());
        let (r, _) = parse(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.keep_alive());
    }

    #[test]
    fn errors_have_the_right_status() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
                .unwrap_err()
                .status,
            Status::BadRequest
        );
        assert_eq!(
            parse(b"\x01\x02\r\n\r\n").unwrap_err().status,
            Status::BadRequest
        );
        let many: String = (0..65).map(|i| format!("X-{i}: y\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse(req.as_bytes()).unwrap_err().status,
            Status::HeaderFieldsTooLarge
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        assert_eq!(
            parse(big.as_bytes()).unwrap_err().status,
            Status::HeaderFieldsTooLarge
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
                .unwrap_err()
                .status,
            Status::MethodNotAllowed
        );
    }

    #[test]
    fn non_ascii_targets_do_not_panic() {
        for target in [
            "/abcde\u{e9}",
            "/abcdef\u{e9}x",
            "h\u{e9}ttp://a/",
            "http://\u{e9}/x",
        ] {
            let request = Request {
                method: "GET".into(),
                target: target.into(),
                minor_version: 1,
                headers: vec![("Host".into(), "a".into())],
            };
            let _ = (
                request.path(),
                request.authority(),
                request.query_param("x"),
            );
        }
        let raw = "GET /abcde\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n";
        let (request, _) = parse(raw.as_bytes()).unwrap().unwrap();
        assert_eq!(request.path(), "/abcde\u{e9}");
    }

    #[test]
    fn invalid_hosts_are_refused() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
                .unwrap_err()
                .status,
            Status::BadRequest
        );
        assert!(parse(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n")
            .unwrap()
            .is_some());
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse(&bytes);
            let _ = parse_request(&bytes, &mut 0, RequestLimits { max_header_bytes: 64, max_headers: 2 });
        }

        #[test]
        fn request_accessors_never_panic(target in "\\PC{0,24}") {
            let request = Request {
                method: "GET".into(),
                target,
                minor_version: 1,
                headers: Vec::new(),
            };
            let _ = (request.path(), request.authority(), request.query_param("name"));
        }
    }
}
