//! What the log says about a certificate: whom it names and when it expires.
//!
//! An X.509 certificate (RFC 5280 §4.1) is DER (ITU-T X.690): nested
//! tag-length-value triples. Two of its fields are all the log needs, so this
//! module walks just far enough to read them, without an X.509 library: the
//! subject's common name (or, without one, the first DNS name of the
//! subjectAltName extension, §4.2.1.6, which is what browsers check) and
//! `notAfter` (§4.1.2.5). Anything it does not understand yields `None`: a
//! certificate that rustls accepts is never refused for its description.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// The two facts the log reports about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `CN=name`, else `DNS:name` from subjectAltName, else `None`.
    pub subject: Option<String>,
    /// The end of the validity period, in seconds since the Unix epoch.
    pub not_after: Option<i64>,
}

impl Summary {
    /// Whether the certificate has expired at `now` (seconds since the epoch).
    pub fn expired_at(&self, now: i64) -> bool {
        self.not_after.is_some_and(|t| t < now)
    }

    /// Whether the certificate has expired now.
    pub fn expired(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.expired_at(now)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            Some(subject) => write!(f, "{subject}")?,
            None => write!(f, "(no subject name)")?,
        }
        match self.not_after {
            Some(t) => write!(f, ", expires {}", format_utc(t)),
            None => write!(f, ", expiry unknown"),
        }
    }
}

/// Reads the subject name and `notAfter` of a DER certificate.
pub fn summarize(der: &[u8]) -> Summary {
    let fields = tbs_fields(der);
    Summary {
        subject: fields.and_then(|f| {
            common_name(f.subject)
                .map(|cn| format!("CN={cn}"))
                .or_else(|| first_dns_name(f.extensions?).map(|dns| format!("DNS:{dns}")))
        }),
        not_after: fields.and_then(|f| f.not_after),
    }
}

// DER tags (X.690 §8) used below.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT`: the version field of TBSCertificate.
const VERSION: u8 = 0xa0;
/// `[3] EXPLICIT`: the extensions of TBSCertificate.
const EXTENSIONS: u8 = 0xa3;
/// `[2] IMPLICIT IA5String`: a dNSName in GeneralNames.
const DNS_NAME: u8 = 0x82;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// id-ce-subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// One tag-length-value: `(tag, contents, what follows)`. Definite lengths
/// only, as DER requires.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| acc << 8 | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The TLV at the start of `input`, if it has tag `want`: `(contents, rest)`.
fn expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, contents, rest) = tlv(input)?;
    (tag == want).then_some((contents, rest))
}

/// The TBSCertificate fields this module reads.
#[derive(Clone, Copy)]
struct TbsFields<'a> {
    subject: &'a [u8],
    not_after: Option<i64>,
    extensions: Option<&'a [u8]>,
}

/// Certificate ::= SEQUENCE { tbsCertificate, ... }; TBSCertificate ::= SEQUENCE
/// { [0] version OPTIONAL, serialNumber, signature, issuer, validity, subject,
/// subjectPublicKeyInfo, [1] [2] OPTIONAL, [3] extensions OPTIONAL }.
fn tbs_fields(der: &[u8]) -> Option<TbsFields<'_>> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if let Some((_, after_version)) = expect(rest, VERSION) {
        rest = after_version;
    }
    let (_serial, _, rest) = tlv(rest)?;
    let (_signature, _, rest) = tlv(rest)?;
    let (_issuer, _, rest) = tlv(rest)?;
    let (validity, rest) = expect(rest, SEQUENCE)?;
    let (subject, mut rest) = expect(rest, SEQUENCE)?;
    let (_not_before, _, after) = tlv(validity)?;
    let not_after = tlv(after).and_then(|(tag, time, _)| parse_time(tag, time));
    let mut extensions = None;
    while let Some((tag, contents, after)) = tlv(rest) {
        if tag == EXTENSIONS {
            extensions = expect(contents, SEQUENCE).map(|(list, _)| list);
        }
        rest = after;
    }
    Some(TbsFields {
        subject,
        not_after,
        extensions,
    })
}

/// Name ::= SEQUENCE OF SET OF AttributeTypeAndValue { type OID, value }: the
/// value of the first commonName, as text.
fn common_name(mut name: &[u8]) -> Option<String> {
    while let Some((set, rest)) = expect(name, SET) {
        let mut attributes = set;
        while let Some((attribute, more)) = expect(attributes, SEQUENCE) {
            if let Some((oid, value)) = expect(attribute, OID) {
                if oid == COMMON_NAME {
                    let (_string_type, text, _) = tlv(value)?;
                    return Some(String::from_utf8_lossy(text).into_owned());
                }
            }
            attributes = more;
        }
        name = rest;
    }
    None
}

/// Extensions ::= SEQUENCE OF Extension { extnID, critical DEFAULT FALSE,
/// extnValue OCTET STRING }: the first dNSName of subjectAltName.
fn first_dns_name(mut extensions: &[u8]) -> Option<String> {
    while let Some((extension, rest)) = expect(extensions, SEQUENCE) {
        if let Some((SUBJECT_ALT_NAME, after_id)) = expect(extension, OID) {
            // The last TLV of the extension is its value; `critical` may precede it.
            let mut value = None;
            let mut fields = after_id;
            while let Some((tag, contents, more)) = tlv(fields) {
                if tag == OCTET_STRING {
                    value = Some(contents);
                }
                fields = more;
            }
            let (mut names, _) = expect(value?, SEQUENCE)?;
            while let Some((tag, name, more)) = tlv(names) {
                if tag == DNS_NAME {
                    return Some(String::from_utf8_lossy(name).into_owned());
                }
                names = more;
            }
            return None;
        }
        extensions = rest;
    }
    None
}

/// UTCTime `YYMMDDHHMMSSZ` (years 1950-2049, RFC 5280 §4.1.2.5.1) or
/// GeneralizedTime `YYYYMMDDHHMMSSZ` (§4.1.2.5.2), as seconds since the epoch.
fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = text.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = digits.get(range)?;
        Some(
            part.iter()
                .fold(0, |acc, &d| acc * 10 + i64::from(d - b'0')),
        )
    };
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = number(0..2)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        (GENERALIZED_TIME, 14) => (number(0..4)?, 4),
        _ => return None,
    };
    let field = |i: usize| number(rest + 2 * i..rest + 2 * i + 2);
    let (month, day) = (field(0)?, field(1)?);
    let (hour, minute, second) = (field(2)?, field(3)?, field(4)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01 (the inverse of `days_from_civil`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_utc(seconds: i64) -> String {
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let s = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_both_encodings() {
        assert_eq!(parse_time(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(parse_time(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(
            parse_time(GENERALIZED_TIME, b"20380119031408Z"),
            Some(2_147_483_648)
        );
        assert_eq!(format_utc(2_147_483_648), "2038-01-19 03:14:08 UTC");
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        for bad in [&b"700101000000"[..], b"7001010000Z", b"70010100000xZ", b""] {
            assert_eq!(parse_time(UTC_TIME, bad), None, "{bad:?}");
        }
        assert_eq!(parse_time(GENERALIZED_TIME, b"700101000000Z"), None);
        assert_eq!(parse_time(UTC_TIME, b"701301000000Z"), None);
    }

    #[test]
    fn day_numbers_round_trip() {
        for days in [-800_000, -1, 0, 1, 59, 365, 10_957, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn garbage_is_summarized_as_unknown_not_refused() {
        for der in [
            &b""[..],
            b"\x30",
            b"\x30\x82\xff\xff",
            b"\x04\x00",
            &[0x30; 64],
        ] {
            assert_eq!(
                summarize(der),
                Summary {
                    subject: None,
                    not_after: None
                }
            );
        }
        assert_eq!(
            summarize(b"").to_string(),
            "(no subject name), expiry unknown"
        );
    }

    #[test]
    fn lengths_in_long_form_and_truncation() {
        let mut long = vec![0x04, 0x81, 200];
        long.extend(std::iter::repeat_n(7, 200));
        assert_eq!(
            tlv(&long).map(|(t, c, r)| (t, c.len(), r.len())),
            Some((4, 200, 0))
        );
        assert_eq!(tlv(&long[..100]), None);
        assert_eq!(tlv(&[0x04, 0x80]), None, "indefinite length is not DER");
    }

    #[test]
    fn expiry_is_judged_against_now() {
        let summary = Summary {
            subject: Some("CN=a".into()),
            not_after: Some(1000),
        };
        assert!(summary.expired_at(1001));
        assert!(!summary.expired_at(1000));
        assert!(summary.expired());
    }
}
