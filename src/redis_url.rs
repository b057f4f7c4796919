//! `--redis redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`: where the cluster's
//! Redis is, as Redis URLs carry it (the IANA `redis` URI scheme). Sans-IO:
//! [`RedisUrl::parse`] only reads text; the host is resolved once, at start.

use std::fmt;

/// A parsed Redis URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    /// `AUTH USER PASSWORD` (Redis 6 ACL) or `AUTH PASSWORD` when `user` is empty.
    pub user: String,
    pub password: Option<String>,
    /// `SELECT DB` for the keys (pub/sub channels are global in Redis).
    pub db: u32,
}

/// The URL without its password, for logs and `/metrics`.
impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = if self.password.is_some() { "***@" } else { "" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "redis://{auth}{host}:{}/{}", self.port, self.db)
    }
}

impl RedisUrl {
    /// Reads a `redis://` URL; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<RedisUrl, String> {
        let rest = text.strip_prefix("redis://").ok_or_else(|| {
            format!("{text:?} is not a redis:// URL (rediss:// is not supported)")
        })?;
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, path),
            None => (rest, ""),
        };
        let (user_info, host_port) = match authority.rsplit_once('@') {
            Some((info, host)) => (Some(info), host),
            None => (None, authority),
        };
        let (user, password) = match user_info {
            None => (String::new(), None),
            Some(info) => match info.split_once(':') {
                Some((user, password)) => (decode(user)?, Some(decode(password)?)),
                None => (String::new(), Some(decode(info)?)),
            },
        };
        let (host, port) = split_host_port(host_port)?;
        if host.is_empty() {
            return Err(format!("{text:?} names no host"));
        }
        let db = match path.trim_end_matches('/') {
            "" => 0,
            db => db
                .parse()
                .map_err(|_| format!("database {db:?} is not a number"))?,
        };
        Ok(RedisUrl {
            host,
            port,
            user,
            password,
            db,
        })
    }
}

/// `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`; the port defaults to 6379.
fn split_host_port(text: &str) -> Result<(String, u16), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("port {p:?} is not a number from 1 to 65535"))
    };
    if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: unclosed '['"))?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host.to_string(), port(p)?)),
            None if after.is_empty() => Ok((host.to_string(), 6379)),
            None => Err(format!("{text:?}: unexpected text after ']'")),
        };
    }
    match text.rsplit_once(':') {
        Some((host, p)) => Ok((host.to_string(), port(p)?)),
        None => Ok((text.to_string(), 6379)),
    }
}

/// Percent-decoding (RFC 3986 §2.1), for passwords with reserved characters:
/// the request parser's decoder, refusing what it would keep as it is.
fn decode(text: &str) -> Result<String, String> {
    let (bytes, all_valid) = crate::http::decode_escapes(text, false);
    if !all_valid {
        return Err("a '%' in the user info is not followed by two hex digits".to_string());
    }
    String::from_utf8(bytes).map_err(|_| "the user info is not UTF-8 once decoded".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn url(host: &str, port: u16, user: &str, password: Option<&str>, db: u32) -> RedisUrl {
        RedisUrl {
            host: host.into(),
            port,
            user: user.into(),
            password: password.map(Into::into),
            db,
        }
    }

    #[test]
    fn reads_the_usual_forms() {
        let cases = [
            ("redis://localhost", url("localhost", 6379, "", None, 0)),
            (
                "redis://127.0.0.1:7000",
                url("127.0.0.1", 7000, "", None, 0),
            ),
            ("redis://h:1/3", url("h", 1, "", None, 3)),
            ("redis://:s3cret@h", url("h", 6379, "", Some("s3cret"), 0)),
            ("redis://pw@h/", url("h", 6379, "", Some("pw"), 0)),
            (
                "redis://ann:p%40ss@h:2/1",
                url("h", 2, "ann", Some("p@ss"), 1),
            ),
            ("redis://[::1]:6380", url("::1", 6380, "", None, 0)),
            ("redis://[::1]", url("::1", 6379, "", None, 0)),
        ];
        for (text, expected) in cases {
            assert_eq!(RedisUrl::parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_redis_url() {
        for bad in [
            "localhost:6379",
            "rediss://h",
            "redis://",
            "redis://h:0",
            "redis://h:70000",
            "redis://h:x",
            "redis://h/x",
            "redis://[::1",
            "redis://%zz@h",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn logs_never_show_the_password() {
        let u = RedisUrl::parse("redis://ann:hunter2@h:7/2").unwrap();
        assert_eq!(u.to_string(), "redis://***@h:7/2");
        assert!(!format!("{u:?}").contains("hunter2"));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "redis://\\PC{0,40}") {
            let _ = RedisUrl::parse(&text);
        }

        #[test]
        fn host_port_db_round_trip(host in "[a-z][a-z0-9.-]{0,20}", port in 1u16.., db in 0u32..16) {
            let parsed = RedisUrl::parse(&format!("redis://{host}:{port}/{db}"));
            prop_assert_eq!(parsed, Ok(url(&host, port, "", None, db)));
        }
    }
}
