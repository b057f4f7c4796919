//! permessage-deflate (RFC 7692): the negotiation, and the codec the loop shares.
//!
//! The server always answers `server_no_context_takeover; client_no_context_takeover`
//! (§7.1.1.1 and §7.1.1.2 let it, whatever the offer said), so every compressed
//! message is a DEFLATE stream of its own: no connection carries a compressor or
//! an inflater, the loop owns one of each (`codec.rs`), and a broadcast is
//! compressed once for every member that negotiated the extension.
//!
//! This file is the negotiation (§5, §7.1), sans-IO: the client's offers in, the
//! agreement and the response's extension header out. The first acceptable offer
//! wins; an offer with an unknown or repeated parameter, or a value the RFC does
//! not allow, is declined (the upgrade goes on without it), never answered with
//! an error. `client_max_window_bits` never appears in the response: our inflater
//! always takes a 32 KiB window, and a client that did not offer the parameter
//! must not get it back (§7.1.2.2; Firefox's bare offer fails otherwise).

#[cfg(feature = "deflate")]
mod codec;
#[cfg(feature = "deflate")]
pub use codec::{Compressor, InflateError, Inflater};

/// The extension's registered name.
pub const EXTENSION: &str = "permessage-deflate";

/// What was agreed with one client: the LZ77 window our compressor may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// `server_max_window_bits`: 15 unless the client asked for less (8-15).
    pub server_window_bits: u8,
}

/// The first acceptable `permessage-deflate` offer among the values of every
/// `Sec-WebSocket-Extensions` header line, in order, and the extension header to
/// answer it with; `None` when nothing acceptable was offered.
pub fn negotiate<'a>(
    header_values: impl IntoIterator<Item = &'a str>,
) -> Option<(Agreement, String)> {
    header_values
        .into_iter()
        .flat_map(split_elements)
        .find_map(|element| accept_offer(&element))
}

/// One offer, `name; param; param=value`, as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Element {
    name: String,
    params: Vec<(String, Option<String>)>,
}

/// Judges one element: a `permessage-deflate` offer with only known, single,
/// valid parameters is accepted.
fn accept_offer(element: &Element) -> Option<(Agreement, String)> {
    if !element.name.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut server_window_bits = None;
    for (name, value) in &element.params {
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None; // §7: a parameter MUST NOT appear twice
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(value)) => {
                server_window_bits = Some(window_bits(value)?);
            }
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(value)) => {
                window_bits(value)?;
            }
            _ => return None, // unknown, or a value where none belongs, or none where one must
        }
        seen.push(name);
    }
    let mut response =
        format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_window_bits {
        response.push_str(&format!("; server_max_window_bits={bits}"));
    }
    let agreement = Agreement {
        server_window_bits: server_window_bits.unwrap_or(15),
    };
    Some((agreement, response))
}

/// A window size, 8 to 15, written as digits without a leading zero (§7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    let valid =
        !value.is_empty() && !value.starts_with('0') && value.bytes().all(|b| b.is_ascii_digit());
    let bits: u8 = value.parse().ok().filter(|_| valid)?;
    (8..=15).contains(&bits).then_some(bits)
}

/// Splits one header value into its comma-separated elements (RFC 6455 §9.1),
/// each parsed into its name and parameters. An element that does not parse is
/// left out (declined); a quoted value is unquoted.
fn split_elements(value: &str) -> Vec<Element> {
    let mut elements = Vec::new();
    let mut rest = value;
    loop {
        let (element, after) = next_element(rest);
        if let Some(element) = element {
            elements.push(element);
        }
        match after {
            Some(after) => rest = after,
            None => return elements,
        }
    }
}

/// Parses the element at the start of `input`; returns it (if valid) and what
/// follows its comma (if any).
fn next_element(input: &str) -> (Option<Element>, Option<&str>) {
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut valid = true;
    let mut chars = input.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            ',' => {
                parts.push(std::mem::take(&mut current));
                return (element_from(parts, valid), Some(&input[i + 1..]));
            }
            ';' => parts.push(std::mem::take(&mut current)),
            '"' => {
                // A quoted-string: up to the closing quote, with `\` escapes.
                let mut closed = false;
                while let Some((_, q)) = chars.next() {
                    match q {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some((_, escaped)) => current.push(escaped),
                            None => break,
                        },
                        q => current.push(q),
                    }
                }
                valid &= closed;
            }
            c => current.push(c),
        }
    }
    parts.push(current);
    (element_from(parts, valid), None)
}

/// An element from its `;`-separated parts: a token name, then `token[=value]`.
fn element_from(parts: Vec<String>, valid: bool) -> Option<Element> {
    let mut parts = parts.into_iter().map(|p| p.trim().to_string());
    let name = parts.next().filter(|n| is_token(n))?;
    let mut params = Vec::new();
    for part in parts {
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
            None => (part, None),
        };
        if !is_token(&key) || value.as_deref().is_some_and(|v| v.is_empty()) {
            return None;
        }
        params.push((key, value));
    }
    valid.then_some(Element { name, params })
}

/// An RFC 7230 token: one or more of the visible characters that are not
/// separators.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Safari 15.0-15.3 does not honour `client_no_context_takeover` (it keeps its
/// compressor's context), so it gets no compression at all, as uWebSockets does.
pub fn is_broken_client(user_agent: Option<&str>) -> bool {
    let Some(agent) = user_agent else {
        return false;
    };
    let safari =
        agent.contains("Safari/") && !agent.contains("Chrome/") && !agent.contains("Chromium/");
    safari
        && [
            "Version/15.0",
            "Version/15.1",
            "Version/15.2",
            "Version/15.3",
        ]
        .iter()
        .any(|v| {
            agent
                .find(v)
                .is_some_and(|at| !agent[at + v.len()..].starts_with(|c: char| c.is_ascii_digit()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOTH: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    fn answer(lines: &[&str]) -> Option<String> {
        negotiate(lines.iter().copied()).map(|(_, response)| response)
    }

    fn bits(lines: &[&str]) -> Option<u8> {
        negotiate(lines.iter().copied()).map(|(agreement, _)| agreement.server_window_bits)
    }

    #[test]
    fn browsers_offers_get_both_no_context_takeovers_and_nothing_else() {
        // Chromium
        assert_eq!(
            answer(&["permessage-deflate; client_max_window_bits"]).as_deref(),
            Some(BOTH)
        );
        // Firefox: a bare offer must never get client_max_window_bits back.
        let firefox = answer(&["permessage-deflate"]).unwrap();
        assert_eq!(firefox, BOTH);
        assert!(!firefox.contains("client_max_window_bits"));
        assert_eq!(bits(&["permessage-deflate"]), Some(15));
    }

    #[test]
    fn every_autobahn_offer_is_accepted_as_the_rfc_says() {
        let base = "permessage-deflate; client_no_context_takeover; client_max_window_bits";
        assert_eq!(answer(&[base]).as_deref(), Some(BOTH));
        let nct = format!("{base}; server_no_context_takeover");
        assert_eq!(answer(&[&nct]).as_deref(), Some(BOTH));
        for (offer, n) in [
            (format!("{base}; server_max_window_bits=9"), 9),
            (format!("{base}; server_max_window_bits=15"), 15),
            (
                format!("{base}; server_no_context_takeover; server_max_window_bits=9"),
                9,
            ),
            (
                format!("{base}; server_no_context_takeover; server_max_window_bits=15"),
                15,
            ),
        ] {
            assert_eq!(
                answer(&[&offer]),
                Some(format!("{BOTH}; server_max_window_bits={n}"))
            );
            assert_eq!(bits(&[&offer]), Some(n));
        }
        // 13.7: three offers, the first acceptable one wins.
        let three = format!(
            "{base}; server_no_context_takeover; server_max_window_bits=9, {base}; server_no_context_takeover, {base}"
        );
        assert_eq!(bits(&[&three]), Some(9));
    }

    #[test]
    fn invalid_offers_are_declined_and_the_next_one_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; unknown_parameter",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(answer(&[bad]), None, "{bad}");
            let then_good = format!("{bad}, permessage-deflate");
            assert_eq!(answer(&[&then_good]).as_deref(), Some(BOTH), "{then_good}");
        }
    }

    #[test]
    fn an_unclosed_quote_declines_the_rest_of_its_line() {
        let line = "permessage-deflate; server_max_window_bits=\"1, permessage-deflate";
        assert_eq!(answer(&[line]), None);
        assert_eq!(answer(&[line, "permessage-deflate"]).as_deref(), Some(BOTH));
    }

    #[test]
    fn offers_span_header_lines_and_quoted_values_are_unquoted() {
        let lines = [
            "foo; bar=1",
            "permessage-deflate; server_max_window_bits=\"10\"",
        ];
        assert_eq!(bits(&lines), Some(10));
        assert_eq!(
            bits(&["Permessage-Deflate; Server_Max_Window_Bits=12"]),
            Some(12)
        );
        assert_eq!(bits(&["foo; q=\"a,b\", permessage-deflate"]), Some(15));
    }

    #[test]
    fn broken_safari_versions_get_no_compression() {
        let safari = |v: &str| {
            format!("Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{v} Safari/605.1.15")
        };
        assert!(is_broken_client(Some(&safari("15.2"))));
        assert!(!is_broken_client(Some(&safari("15.4"))));
        assert!(!is_broken_client(Some(&safari("15.10"))));
        assert!(!is_broken_client(Some(&safari("17.0"))));
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36";
        assert!(!is_broken_client(Some(chrome)));
        assert!(!is_broken_client(None));
    }

    proptest! {
        #[test]
        fn negotiation_never_panics_and_answers_only_what_the_rfc_allows(value in "\\PC{0,80}") {
            if let Some((agreement, response)) = negotiate([value.as_str()]) {
                prop_assert!((8..=15).contains(&agreement.server_window_bits));
                prop_assert!(response.starts_with(BOTH));
                prop_assert!(!response.contains("client_max_window_bits"));
            }
        }
    }
}
