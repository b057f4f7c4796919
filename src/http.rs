//! HTTP/1.1 for the chat page: request parsing, responses and static files.
//!
//! Implements the small part of RFC 9112 (HTTP/1.1 message syntax) and RFC 9110
//! (semantics) that a page server needs: `GET` and `HEAD`, keep-alive, pipelining,
//! and the error statuses. Parsing is `httparse`'s; this module adds the limits
//! (header block size, header count) and scans only the bytes that are new since the
//! last read for the end of the header block, so a request dripped in byte by byte
//! costs linear time, not quadratic. Sans-IO: bytes in, values and bytes out.

use std::borrow::Cow;
use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The page, built into the binary so that it runs from anywhere.
const EMBEDDED_INDEX: &[u8] = include_bytes!("../static/index.html");

/// The response statuses this server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    SwitchingProtocols,
    Ok,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    UpgradeRequired,
    HeaderFieldsTooLarge,
    InternalServerError,
    ServiceUnavailable,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::SwitchingProtocols => 101,
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::UpgradeRequired => 426,
            Status::HeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::ServiceUnavailable => 503,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::SwitchingProtocols => "Switching Protocols",
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::UpgradeRequired => "Upgrade Required",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
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
        let mut target = self.target.as_str();
        for scheme in ["http://", "https://"] {
            if target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme) {
                let rest = &target[scheme.len()..];
                target = rest.find('/').map_or("/", |i| &rest[i..]);
            }
        }
        target.split('?').next().unwrap_or("")
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

/// Decodes `%XX` escapes and `+` (as space); invalid escapes are kept as they are,
/// and the result is decoded lossily as UTF-8.
pub fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex_byte(bytes.get(i + 1..i + 3))) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (other, _) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

/// A response ready to encode.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: Status,
    pub headers: Vec<(&'static str, String)>,
    pub body: Cow<'static, [u8]>,
}

impl Response {
    pub fn new(status: Status, content_type: &str, body: Cow<'static, [u8]>) -> Self {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body,
        }
    }

    /// A short plain-text error page.
    pub fn error(status: Status) -> Self {
        let body = format!("{} {}\n", status.code(), status.reason());
        Response::new(
            status,
            "text/plain; charset=utf-8",
            Cow::Owned(body.into_bytes()),
        )
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Appends the encoded response to `out`. `head_only` is for `HEAD` requests:
    /// the same headers, no body (RFC 9110 §9.3.2).
    pub fn encode(&self, out: &mut Vec<u8>, head_only: bool, keep_alive: bool) {
        use std::io::Write;
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nServer: loopchat\r\nContent-Length: {}\r\n",
            self.status.code(),
            self.status.reason(),
            self.body.len()
        );
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.extend_from_slice(if keep_alive {
            b"Connection: keep-alive\r\n\r\n"
        } else {
            b"Connection: close\r\n\r\n"
        });
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// Where pages come from: the page built into the binary, or a folder on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticFiles {
    Embedded,
    Dir(PathBuf),
}

impl StaticFiles {
    /// The file for a request path, with its content type; `None` if there is none.
    ///
    /// A directory path serves its `index.html`. A path with `..`, a backslash or a
    /// NUL never resolves; on disk, the resolved file (symlinks followed) must still
    /// lie inside the root.
    pub fn lookup(&self, path: &str) -> Option<(Cow<'static, [u8]>, &'static str)> {
        let decoded = percent_decode_path(path)?;
        let relative = decoded.trim_start_matches('/');
        let relative = if relative.is_empty() || relative.ends_with('/') {
            format!("{relative}index.html")
        } else {
            relative.to_string()
        };
        if relative.contains('\\') || relative.contains('\0') {
            return None;
        }
        let candidate = Path::new(&relative);
        if !candidate
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return None;
        }
        match self {
            StaticFiles::Embedded => (relative == "index.html")
                .then(|| (Cow::Borrowed(EMBEDDED_INDEX), content_type(&relative))),
            StaticFiles::Dir(root) => {
                let root = root.canonicalize().ok()?;
                let full = root.join(candidate).canonicalize().ok()?;
                if !full.starts_with(&root) || !full.is_file() {
                    return None;
                }
                let body = fs::read(&full).ok()?;
                Some((Cow::Owned(body), content_type(&relative)))
            }
        }
    }
}

/// Percent-decodes a path (no `+` rule); `None` if it is not UTF-8.
fn percent_decode_path(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(hex_byte(bytes.get(i + 1..i + 3))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `Content-Type` for a file name, by extension.
pub fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match extension.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
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
    fn responses_encode_with_length_and_connection() {
        let resp = Response::new(Status::Ok, "text/plain", Cow::Borrowed(b"hi"));
        let mut out = Vec::new();
        resp.encode(&mut out, false, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 2\r\n"));
        assert!(text.ends_with("Connection: keep-alive\r\n\r\nhi"));
        let mut head = Vec::new();
        resp.encode(&mut head, true, false);
        assert!(String::from_utf8(head).unwrap().ends_with("close\r\n\r\n"));
    }

    #[test]
    fn embedded_files_and_traversal() {
        let files = StaticFiles::Embedded;
        assert!(files.lookup("/").is_some());
        assert!(files.lookup("/index.html").is_some());
        assert!(files.lookup("/nope.css").is_none());
        for evil in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/a/../../x",
            "/..%5c..%5cx",
        ] {
            assert!(files.lookup(evil).is_none(), "{evil}");
        }
    }

    #[test]
    fn directory_files_stay_inside_the_root() {
        let root = std::env::temp_dir().join(format!("loopchat-http-{}", std::process::id()));
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("sub/a.css"), b"body{}").unwrap();
        let files = StaticFiles::Dir(root.join("sub"));
        let (body, ty) = files.lookup("/a.css").unwrap();
        assert_eq!((&*body, ty), (&b"body{}"[..], "text/css; charset=utf-8"));
        fs::write(root.join("secret"), b"x").unwrap();
        assert!(files.lookup("/../secret").is_none());
        assert!(files.lookup("/%2e%2e/secret").is_none());
        let _ = fs::remove_dir_all(&root);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse(&bytes);
            let _ = parse_request(&bytes, &mut 0, RequestLimits { max_header_bytes: 64, max_headers: 2 });
        }

        #[test]
        fn lookup_never_escapes(path in "[/a-z.%25\\\\]{0,30}") {
            let _ = StaticFiles::Embedded.lookup(&path);
        }
    }
}
