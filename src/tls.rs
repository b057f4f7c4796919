//! TLS for `https://` and `wss://` (RFC 6455 §11.1.2, §4.1: a `wss` URI is a
//! WebSocket over TLS, its handshake and frames unchanged inside it): the
//! certificate the server presents, and each connection's TLS state.
//!
//! [`Identity`] is the certificate chain and private key of `--tls-cert` and
//! `--tls-key` (PEM, as certbot writes `fullchain.pem` and `privkey.pem`),
//! checked when loaded: the files are readable, hold PEM certificates and a
//! private key, and the key is the certificate's. It carries the rustls server
//! configuration every new connection starts from: TLS 1.3 (RFC 8446) and 1.2
//! (RFC 5246) with rustls's safe defaults (no older versions, no weak suites),
//! ALPN `http/1.1` (RFC 7301), the `ring` crypto provider. Nothing here weakens
//! them. [`Identity::from_pem`] is sans-IO; only [`Identity::load`] reads files.
//!
//! [`TlsStream`] (`tls/stream.rs`) is one connection's TLS over a socket the loop
//! lends it; `tls/certificate.rs` describes a certificate for the log.
//!
//! Without the `tls` feature the types remain, so the loop's code is the same in
//! both builds, but an `Identity` cannot be made and a `TlsStream` cannot exist.

#[cfg(feature = "tls")]
pub mod certificate;
#[cfg(feature = "tls")]
mod stream;

use crate::config::Config;
use std::path::Path;

#[cfg(feature = "tls")]
pub use stream::TlsStream;

/// The ALPN protocol the server speaks (RFC 7301 §3; RFC 6455 runs over HTTP/1.1).
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// A checked certificate chain and private key, ready to serve.
#[derive(Clone)]
pub struct Identity {
    #[cfg(feature = "tls")]
    config: std::sync::Arc<rustls::ServerConfig>,
    /// Whom the certificate names and when it expires, for the log.
    pub description: String,
    /// Whether the (first) certificate has expired.
    pub expired: bool,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// Which input a loading problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Certificate,
    Key,
    /// The two together: the key does not match the certificate.
    Pair,
}

/// Why a certificate and key cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub part: Part,
    pub message: String,
}

impl Problem {
    fn new(part: Part, message: impl Into<String>) -> Problem {
        Problem {
            part,
            message: message.into(),
        }
    }
}

impl Identity {
    /// The identity `config` asks for: `None` without `--tls-cert`, else the pair
    /// loaded from its files, or a one-line message that names the flag and the
    /// file at fault.
    pub fn from_config(config: &Config) -> Result<Option<Identity>, String> {
        match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Identity::load(cert, key).map(Some),
            (None, None) => Ok(None),
            _ => Err("--tls-cert and --tls-key go together: give both, or neither".into()),
        }
    }

    /// Reads and checks the PEM files. The message names the flag and the file.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, String> {
        let read = |flag: &str, path: &Path| {
            std::fs::read(path)
                .map_err(|e| format!("{flag} {}: cannot read it: {e}", path.display()))
        };
        let (cert_pem, key_pem) = (read("--tls-cert", cert)?, read("--tls-key", key)?);
        Identity::from_pem(&cert_pem, &key_pem).map_err(|problem| match problem.part {
            Part::Certificate => format!("--tls-cert {}: {}", cert.display(), problem.message),
            Part::Key => format!("--tls-key {}: {}", key.display(), problem.message),
            Part::Pair => format!(
                "--tls-key {} {} in --tls-cert {}",
                key.display(),
                problem.message,
                cert.display()
            ),
        })
    }

    /// Checks a PEM certificate chain (leaf first) and a PEM private key (PKCS#8,
    /// PKCS#1 or SEC1), and builds the server configuration.
    #[cfg(feature = "tls")]
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Identity, Problem> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Problem::new(Part::Certificate, format!("not valid PEM: {e}")))?;
        let Some(leaf) = chain.first() else {
            return Err(Problem::new(
                Part::Certificate,
                "holds no certificate (a PEM \"BEGIN CERTIFICATE\" block)",
            ));
        };
        let summary = certificate::summarize(leaf);
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            let why = match e {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    "holds no private key (a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" \
                     or \"BEGIN EC PRIVATE KEY\" block)"
                        .to_string()
                }
                e => format!("not valid PEM: {e}"),
            };
            Problem::new(Part::Key, why)
        })?;
        let certificates = chain.len();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Problem::new(Part::Pair, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => {
                    Problem::new(Part::Pair, "is not the key of the certificate")
                }
                rustls::Error::General(message) => Problem::new(Part::Key, message),
                e => Problem::new(Part::Certificate, e.to_string()),
            })?;
        config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
        let chain_note = match certificates {
            1 => String::new(),
            n => format!(" (chain of {n} certificates)"),
        };
        Ok(Identity {
            config: std::sync::Arc::new(config),
            description: format!("{summary}{chain_note}"),
            expired: summary.expired(),
        })
    }

    /// Without the `tls` feature nothing can be served over TLS.
    #[cfg(not(feature = "tls"))]
    pub fn from_pem(_cert_pem: &[u8], _key_pem: &[u8]) -> Result<Identity, Problem> {
        Err(Problem::new(
            Part::Pair,
            "this loopchat was built without the `tls` feature",
        ))
    }

    /// A new connection's TLS state, presenting this certificate; rustls holds
    /// at most `buffer_limit` bytes for the peer.
    #[cfg(feature = "tls")]
    pub fn accept(&self, buffer_limit: usize) -> Result<TlsStream, String> {
        TlsStream::new(std::sync::Arc::clone(&self.config), buffer_limit).map_err(|e| e.to_string())
    }

    #[cfg(not(feature = "tls"))]
    pub fn accept(&self, _buffer_limit: usize) -> Result<TlsStream, String> {
        Err("this loopchat was built without the `tls` feature".into())
    }
}

/// Without the `tls` feature: a TLS stream that cannot exist, so that the code
/// which would drive one compiles in both builds and is never reached.
#[cfg(not(feature = "tls"))]
#[derive(Debug)]
pub enum TlsStream {}

#[cfg(not(feature = "tls"))]
impl TlsStream {
    pub fn buffer_limit(&self) -> usize {
        match *self {}
    }
    pub fn read<S>(&mut self, _socket: &mut S, _buf: &mut [u8]) -> std::io::Result<usize> {
        match *self {}
    }
    pub fn write<S>(&mut self, _socket: &mut S, _plain: &[u8]) -> std::io::Result<usize> {
        match *self {}
    }
    pub fn write_vectored<S>(
        &mut self,
        _socket: &mut S,
        _plain: &[std::io::IoSlice<'_>],
    ) -> std::io::Result<usize> {
        match *self {}
    }
    pub fn flush<S>(&mut self, _socket: &mut S) -> std::io::Result<()> {
        match *self {}
    }
    pub fn wants_write(&self) -> bool {
        match *self {}
    }
    pub fn ended(&self) -> bool {
        match *self {}
    }
    pub fn close_notify(&mut self) {
        match *self {}
    }
    pub fn is_handshaking(&self) -> bool {
        match *self {}
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads_and_says_whom_it_names() {
        let (cert, key) = self_signed(&["chat.example"]);
        let identity = Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        // rcgen's default subject; its validity ends in 4096.
        assert_eq!(
            identity.description,
            "CN=rcgen self signed cert, expires 4096-01-01 00:00:00 UTC"
        );
        assert!(!identity.expired);
        assert_eq!(identity.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn a_chain_a_san_only_subject_and_a_past_expiry_are_described() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["only-san.example".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.not_after = rcgen::date_time_ymd(2001, 2, 3);
        let leaf = params.signed_by(&leaf_key, &ca).unwrap();
        let chain = format!("{}{}", leaf.pem(), ca.pem());
        let identity =
            Identity::from_pem(chain.as_bytes(), leaf_key.serialize_pem().as_bytes()).unwrap();
        assert_eq!(
            identity.description,
            "DNS:only-san.example, expires 2001-02-03 00:00:00 UTC (chain of 2 certificates)"
        );
        assert!(identity.expired);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_as_a_mismatch() {
        let (cert, _) = self_signed(&["a.example"]);
        let (_, other_key) = self_signed(&["a.example"]);
        let problem = Identity::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert_eq!(problem.part, Part::Pair, "{problem:?}");
    }

    #[test]
    fn files_without_pem_blocks_say_what_is_missing() {
        let (cert, key) = self_signed(&["a.example"]);
        let problem = Identity::from_pem(b"hello", key.as_bytes()).unwrap_err();
        assert_eq!(problem.part, Part::Certificate);
        assert!(problem.message.contains("no certificate"), "{problem:?}");
        let problem = Identity::from_pem(cert.as_bytes(), cert.as_bytes()).unwrap_err();
        assert_eq!(problem.part, Part::Key);
        assert!(problem.message.contains("no private key"), "{problem:?}");
        // The blocks swapped: the key file has no key, whatever else it holds.
        let problem = Identity::from_pem(key.as_bytes(), cert.as_bytes()).unwrap_err();
        assert_eq!(problem.part, Part::Certificate, "{problem:?}");
    }

    #[test]
    fn a_certificate_that_is_not_der_is_refused() {
        let (_, key) = self_signed(&["a.example"]);
        let garbage = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
        let problem = Identity::from_pem(garbage.as_bytes(), key.as_bytes()).unwrap_err();
        assert_ne!(problem.part, Part::Key, "{problem:?}");
    }

    #[test]
    fn load_names_the_flag_and_the_file() {
        let missing = Path::new("/nonexistent/loopchat/cert.pem");
        let error = Identity::load(missing, missing).unwrap_err();
        assert!(
            error.starts_with("--tls-cert /nonexistent/loopchat/cert.pem: cannot read it"),
            "{error}"
        );
    }
}
