//! The opening handshake: deciding whether an HTTP request may become a WebSocket.
//!
//! Implements RFC 6455 §4.2.1 (reading the client's handshake), §4.2.2 (the 101
//! response, `Sec-WebSocket-Accept`, and the choice of a subprotocol from the
//! client's `Sec-WebSocket-Protocol` offer) and §10.2 (the `Origin` check against
//! cross-site WebSocket hijacking). Sans-IO: a parsed [`Request`] in, either the
//! response bytes or an [`HttpError`] with the status to send.

use crate::http::{HttpError, Request, Status};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha1::{Digest, Sha1};

/// The GUID of §1.3, appended to the client's key before hashing.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The only protocol version this server speaks (§4.1, §11.6).
pub(crate) const WEBSOCKET_VERSION: &str = "13";
/// A `Sec-WebSocket-Key` is 16 random bytes, base64-encoded (§4.1).
const KEY_BYTES: usize = 16;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (§4.2.2 step 5.4):
/// base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// Which browser origins may open a WebSocket here (§10.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OriginPolicy {
    /// Extra origins allowed besides the server's own, as `scheme://host[:port]`,
    /// compared case-insensitively; `*` allows every origin.
    pub allowed: Vec<String>,
}

impl OriginPolicy {
    /// Whether a request with this `Origin` and `Host` may upgrade. A request
    /// without `Origin` does not come from a browser page (load tools, native
    /// clients) and is allowed: the check protects browsers' users, whose cookies
    /// a hostile page could otherwise ride on.
    pub fn allows(&self, origin: Option<&str>, host: &str) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let origin = origin.trim();
        if self
            .allowed
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
        {
            return true;
        }
        same_origin_as_host(origin, host)
    }
}

/// Whether `origin` (`scheme://authority`) names the same host and port as `host`.
fn same_origin_as_host(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // e.g. "null" from a sandboxed page or a file
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let with_port = |a: &str| -> String {
        let a = a.to_ascii_lowercase();
        // An authority has a port if a ':' follows the last ']' (IPv6 literal).
        let after_brackets = a.rsplit(']').next().unwrap_or("");
        if after_brackets.contains(':') {
            a
        } else {
            format!("{a}:{default_port}")
        }
    };
    with_port(authority) == with_port(host.trim())
}

/// Whether `s` is a token (RFC 7230 §3.2.6): one or more letters, digits and
/// ``!#$%&'*+-.^_`|~``. A subprotocol name is one (RFC 6455 §4.1, §11.3.4).
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The subprotocol to answer with (§4.2.2, /subprotocol/): the first name of the
/// client's offer, in the client's order, that is in `supported`; `None` if
/// there is none. `offers` are the values of every `Sec-WebSocket-Protocol`
/// field in order: each is a comma-separated list (§11.3.4), and several fields
/// make one list (RFC 7230 §3.2.2). Empty elements and elements that are not
/// tokens are skipped. Names are compared exactly, as a browser compares the
/// answer with what it offered. The name returned is `supported`'s own.
pub fn select_subprotocol<'s, 'o>(
    offers: impl IntoIterator<Item = &'o str>,
    supported: &'s [String],
) -> Option<&'s str> {
    if supported.is_empty() {
        return None;
    }
    offers
        .into_iter()
        .flat_map(|field| field.split(','))
        .map(|name| name.trim_matches([' ', '\t']))
        .filter(|name| is_token(name))
        .find_map(|name| supported.iter().find(|s| *s == name))
        .map(String::as_str)
}

/// Checks a request that asks for an upgrade, per §4.2.1, in the order the RFC
/// lists the fields. Returns the `101 Switching Protocols` response to send; it
/// names the subprotocol [`select_subprotocol`] picks from the client's offer
/// and `subprotocols` (the server's, `Config::subprotocols`), if any, and the
/// `extensions` agreed (RFC 7692), if any. An offer with nothing in common is not
/// refused: the response then names none, and the client decides whether to go
/// on (§4.1).
pub(crate) fn accept_upgrade(
    request: &Request,
    origins: &OriginPolicy,
    subprotocols: &[String],
    extensions: Option<&str>,
) -> Result<Vec<u8>, HttpError> {
    let key = check_upgrade(request)?;
    check_origin(request, origins)?;
    Ok(switching_protocols(request, key, subprotocols, extensions))
}

/// §4.2.1 items 1-6, in the RFC's order: returns the client's key.
fn check_upgrade(request: &Request) -> Result<&str, HttpError> {
    // 1. An HTTP/1.1 or higher GET request.
    if request.method != "GET" {
        return Err(HttpError::new(
            Status::MethodNotAllowed,
            "WebSocket upgrade must use GET",
        ));
    }
    if request.minor_version < 1 {
        return Err(HttpError::new(
            Status::BadRequest,
            "WebSocket upgrade needs HTTP/1.1",
        ));
    }
    // 2. A Host header field (or the authority of an absolute-form target,
    // which RFC 9112 §3.2.2 says takes its place).
    if request.authority().is_none() {
        return Err(HttpError::new(Status::BadRequest, "missing Host header"));
    }
    // 3. An Upgrade header field whose value includes "websocket". A plain page
    // request to a WebSocket endpoint is told that it must upgrade.
    if request.header("Upgrade").is_none() {
        return Err(HttpError::new(
            Status::UpgradeRequired,
            "this endpoint speaks WebSocket only",
        ));
    }
    if !request.has_token("Upgrade", "websocket") {
        return Err(HttpError::new(
            Status::BadRequest,
            "Upgrade is not websocket",
        ));
    }
    // 4. A Connection header field that includes the token "Upgrade".
    if !request.has_token("Connection", "upgrade") {
        return Err(HttpError::new(
            Status::BadRequest,
            "Connection does not include upgrade",
        ));
    }
    // 5. A Sec-WebSocket-Key that decodes to 16 bytes; exactly one.
    let mut keys = request.headers_named("Sec-WebSocket-Key");
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return Err(HttpError::new(
            Status::BadRequest,
            "missing or repeated Sec-WebSocket-Key",
        ));
    };
    let key = key.trim();
    match BASE64.decode(key) {
        Ok(bytes) if bytes.len() == KEY_BYTES => {}
        _ => {
            return Err(HttpError::new(
                Status::BadRequest,
                "Sec-WebSocket-Key is not 16 bytes in base64",
            ))
        }
    }
    // 6. Sec-WebSocket-Version: 13; otherwise 426 naming the version we speak (§4.4).
    let mut versions = request.headers_named("Sec-WebSocket-Version");
    let version_ok = matches!(
        (versions.next(), versions.next()),
        (Some(v), None) if v.trim() == WEBSOCKET_VERSION
    );
    if !version_ok {
        return Err(HttpError::new(
            Status::UpgradeRequired,
            "unsupported Sec-WebSocket-Version",
        ));
    }
    Ok(key)
}

/// §10.2: refuse pages from other sites. Two Origin headers are no origin at all.
fn check_origin(request: &Request, origins: &OriginPolicy) -> Result<(), HttpError> {
    let host = request.authority().unwrap_or_default();
    if request.headers_named("Origin").count() > 1 {
        return Err(HttpError::new(Status::BadRequest, "repeated Origin header"));
    }
    if !origins.allows(request.header("Origin"), host) {
        return Err(HttpError::new(Status::Forbidden, "Origin not allowed"));
    }
    Ok(())
}

/// The `101 Switching Protocols` response (§4.2.2).
fn switching_protocols(
    request: &Request,
    key: &str,
    subprotocols: &[String],
    extensions: Option<&str>,
) -> Vec<u8> {
    // §4.2.2: the subprotocol, if one of the offer is ours; the header is sent
    // only then. The extensions agreed (RFC 7692) go in one header line.
    let offers = request.headers_named("Sec-WebSocket-Protocol");
    let protocol = match select_subprotocol(offers, subprotocols) {
        Some(name) => format!("Sec-WebSocket-Protocol: {name}\r\n"),
        None => String::new(),
    };
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\
         {protocol}",
        accept_key(key)
    );
    if let Some(extensions) = extensions {
        response.push_str(&format!("Sec-WebSocket-Extensions: {extensions}\r\n"));
    }
    response.push_str("\r\n");
    response.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_request, RequestLimits};

    const LIMITS: RequestLimits = RequestLimits {
        max_header_bytes: 8192,
        max_headers: 64,
    };

    fn request(head: &str) -> Request {
        let text = format!("{head}\r\n\r\n")
            .replace('\n', "\r\n")
            .replace("\r\r", "\r");
        parse_request(text.as_bytes(), &mut 0, LIMITS)
            .unwrap()
            .unwrap()
            .0
    }

    const GOOD: &str = "GET /chat HTTP/1.1
Host: server.example.com
Upgrade: websocket
Connection: Upgrade
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
Origin: http://server.example.com
Sec-WebSocket-Version: 13";

    /// The status a request is refused with, by the parser or the handshake.
    fn status(head: &str) -> Status {
        let text = format!("{head}\r\n\r\n")
            .replace('\n', "\r\n")
            .replace("\r\r", "\r");
        match parse_request(text.as_bytes(), &mut 0, LIMITS) {
            Err(error) => error.status,
            Ok(parsed) => {
                let (request, _) = parsed.expect("a complete request");
                accept_upgrade(&request, &OriginPolicy::default(), &[], None)
                    .unwrap_err()
                    .status
            }
        }
    }

    // ---- §1.3 and §4.2.2: the accept key ----

    #[test]
    fn rfc_1_3_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn a_good_request_gets_101() {
        let response = accept_upgrade(&request(GOOD), &OriginPolicy::default(), &[], None).unwrap();
        let text = String::from_utf8(response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn header_names_and_tokens_are_case_insensitive() {
        let head = GOOD
            .replace("Upgrade: websocket", "upgrade: WebSocket")
            .replace("Connection: Upgrade", "CONNECTION: keep-alive, UPGRADE");
        assert!(accept_upgrade(&request(&head), &OriginPolicy::default(), &[], None).is_ok());
    }

    // ---- §4.2.1: each required field ----

    #[test]
    fn rejections() {
        assert_eq!(
            status(&GOOD.replace("GET", "POST")),
            Status::MethodNotAllowed
        );
        assert_eq!(
            status(&GOOD.replace("HTTP/1.1", "HTTP/1.0")),
            Status::BadRequest
        );
        assert_eq!(
            status(&GOOD.replace("Host: server.example.com\n", "")),
            Status::BadRequest
        );
        assert_eq!(
            status(&GOOD.replace("Upgrade: websocket\n", "")),
            Status::UpgradeRequired
        );
        assert_eq!(
            status(&GOOD.replace("Upgrade: websocket", "Upgrade: h2c")),
            Status::BadRequest
        );
        assert_eq!(
            status(&GOOD.replace("Connection: Upgrade", "Connection: keep-alive")),
            Status::BadRequest
        );
        assert_eq!(
            status(&GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n", "")),
            Status::BadRequest
        );
        assert_eq!(
            status(&GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")),
            Status::BadRequest
        );
        assert_eq!(
            status(&GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!notbase64!!")),
            Status::BadRequest
        );
        let twice = GOOD.replace(
            "Origin:",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nOrigin:",
        );
        assert_eq!(status(&twice), Status::BadRequest);
        assert_eq!(
            status(&GOOD.replace("Version: 13", "Version: 8")),
            Status::UpgradeRequired
        );
        assert_eq!(
            status(&GOOD.replace("Sec-WebSocket-Version: 13", "X: y")),
            Status::UpgradeRequired
        );
        // §4.2.1 asks for the value 13; §11.3.5: the field appears once.
        assert_eq!(
            status(&GOOD.replace("Version: 13", "Version: 8, 13")),
            Status::UpgradeRequired
        );
    }

    // ---- §10.2: Origin ----

    #[test]
    fn origin_policy() {
        let policy = OriginPolicy::default();
        assert!(policy.allows(None, "a:8080"));
        assert!(policy.allows(Some("http://a:8080"), "a:8080"));
        assert!(policy.allows(Some("HTTP://A:8080"), "a:8080"));
        assert!(policy.allows(Some("http://a"), "a:80"));
        assert!(policy.allows(Some("https://a"), "a"));
        assert!(policy.allows(Some("http://[::1]:8080"), "[::1]:8080"));
        assert!(!policy.allows(Some("http://evil.example"), "a:8080"));
        assert!(!policy.allows(Some("http://a:9999"), "a:8080"));
        assert!(!policy.allows(Some("null"), "a:8080"));
        let wider = OriginPolicy {
            allowed: vec!["https://chat.example.com".into()],
        };
        assert!(wider.allows(Some("https://chat.example.com"), "internal:8080"));
        assert!(!wider.allows(Some("https://other.example.com"), "internal:8080"));
        let any = OriginPolicy {
            allowed: vec!["*".into()],
        };
        assert!(any.allows(Some("null"), "a"));
        assert_eq!(
            status(&GOOD.replace("http://server.example.com", "http://evil.example")),
            Status::Forbidden
        );
    }

    // ---- §4.2.2: the subprotocol ----

    fn select<'s>(offers: &[&str], supported: &'s [String]) -> Option<&'s str> {
        select_subprotocol(offers.iter().copied(), supported)
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tokens_are_rfc_7230_tchars() {
        assert!(is_token("chat"));
        assert!(is_token("v2.chat+json"));
        assert!(is_token("!#$%&'*+-.^_`|~09azAZ"));
        for not in [
            "",
            "a b",
            "a,b",
            "\"a\"",
            "a/b",
            "a;b",
            "a=b",
            "caf\u{e9}",
            "a\tb",
        ] {
            assert!(!is_token(not), "{not:?}");
        }
    }

    #[test]
    fn the_subprotocol_is_the_clients_first_offer_that_the_server_speaks() {
        let server = names(&["superchat", "chat"]);
        assert_eq!(select(&["chat, superchat"], &server), Some("chat"));
        assert_eq!(select(&["superchat, chat"], &server), Some("superchat"));
        assert_eq!(select(&["mqtt, chat"], &server), Some("chat"));
    }

    #[test]
    fn several_protocol_fields_make_one_list_in_order() {
        let server = names(&["c", "b"]);
        assert_eq!(select(&["a", "b, c"], &server), Some("b"));
        assert_eq!(select(&["a, c", "b"], &server), Some("c"));
    }

    #[test]
    fn nothing_in_common_or_nothing_spoken_selects_no_subprotocol() {
        assert_eq!(select(&["a, b"], &names(&["c"])), None);
        assert_eq!(select(&["a, b"], &[]), None);
        assert_eq!(select(&[], &names(&["a"])), None);
    }

    #[test]
    fn subprotocol_names_are_compared_exactly() {
        assert_eq!(select(&["Chat, CHAT"], &names(&["chat"])), None);
    }

    #[test]
    fn empty_and_malformed_offer_elements_are_skipped() {
        let server = names(&["chat", "a b"]);
        assert_eq!(select(&[" , ,\tchat\t,"], &server), Some("chat"));
        assert_eq!(select(&["\"chat\", chat"], &server), Some("chat"));
        // Not a token, so never selected even if the server's list has it.
        assert_eq!(select(&["a b"], &server), None);
    }

    fn upgrade_offering(offers: &[&str], server: &[&str]) -> String {
        let fields: String = offers
            .iter()
            .map(|o| format!("\nSec-WebSocket-Protocol: {o}"))
            .collect();
        let request = request(&format!("{GOOD}{fields}"));
        let response =
            accept_upgrade(&request, &OriginPolicy::default(), &names(server), None).unwrap();
        String::from_utf8(response).unwrap()
    }

    #[test]
    fn the_101_names_the_selected_subprotocol_once() {
        let text = upgrade_offering(&["mqtt, chat", "superchat"], &["superchat", "chat"]);
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(
            text.contains("\r\nSec-WebSocket-Protocol: chat\r\n"),
            "{text}"
        );
        assert_eq!(text.matches("Sec-WebSocket-Protocol").count(), 1);
        assert!(text.ends_with("\r\n\r\n"));
        assert!(!text.ends_with("\r\n\r\n\r\n"));
    }

    #[test]
    fn without_a_match_the_101_names_no_subprotocol_and_the_upgrade_goes_on() {
        for text in [
            upgrade_offering(&["mqtt"], &["chat"]),
            upgrade_offering(&["chat"], &[]),
            upgrade_offering(&[], &["chat"]),
        ] {
            assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
            assert!(!text.contains("Sec-WebSocket-Protocol"), "{text}");
            assert!(text.ends_with("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"));
        }
        let offer = request(&format!("{GOOD}\nSec-WebSocket-Protocol: chat"));
        let text = accept_upgrade(&offer, &OriginPolicy::default(), &[], None).unwrap();
        assert!(!String::from_utf8(text)
            .unwrap()
            .contains("Sec-WebSocket-Protocol"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(method in "[A-Z]{1,6}", key in ".{0,30}", version in ".{0,4}", origin in ".{0,30}", protocol in ".{0,30}") {
            let head = format!(
                "{method} / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\nOrigin: {origin}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
            );
            if let Ok(Some((req, _))) = parse_request(head.as_bytes(), &mut 0, LIMITS) {
                let _ = accept_upgrade(&req, &OriginPolicy::default(), &[], None);
                let server = names(&["chat", "a"]);
                let _ = accept_upgrade(&req, &OriginPolicy::default(), &server, None);
            }
        }

        #[test]
        fn the_selected_subprotocol_is_the_first_offered_one_the_server_speaks(
            offered in proptest::collection::vec("[a-c]{1,2}", 0..6),
            supported in proptest::collection::vec("[a-c]{1,2}", 0..4),
            new_field in proptest::collection::vec(proptest::bool::ANY, 6),
            space in proptest::collection::vec("[ \t]{0,2}", 12),
            blanks in 0..3usize,
        ) {
            // The same offer spread over fields at random, with optional
            // whitespace and empty elements.
            let mut fields: Vec<String> = Vec::new();
            for (i, name) in offered.iter().enumerate() {
                let element = format!("{}{name}{}", space[2 * i], space[2 * i + 1]);
                match fields.last_mut() {
                    Some(field) if !new_field[i] => {
                        field.push(',');
                        field.push_str(&element);
                    }
                    _ => fields.push(element),
                }
            }
            fields.extend(std::iter::repeat_n(" , ".to_string(), blanks));
            let expected = offered.iter().find(|o| supported.contains(o)).map(String::as_str);
            let selected = select_subprotocol(fields.iter().map(String::as_str), &supported);
            proptest::prop_assert_eq!(selected, expected);
        }
    }
}
