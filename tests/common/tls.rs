//! TLS helpers for the integration tests: a certificate made at test time
//! (rcgen, ECDSA P-256, for `localhost` and 127.0.0.1) written to PEM files, a
//! rustls client that trusts exactly the certificates a test names, and https
//! and wss clients over it. Every read has the common `READ_TIMEOUT`.

use super::{json_field, upgrade_request, READ_TIMEOUT};
use loopchat::Config;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A TLS client socket.
pub type TlsSocket = StreamOwned<ClientConnection, TcpStream>;
/// A WebSocket client over TLS.
pub type Wss = tungstenite::WebSocket<TlsSocket>;

/// A certificate and its key, as PEM files in a directory of their own.
pub struct TestCert {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCert {
    /// A fresh self-signed certificate for `localhost` and 127.0.0.1, with
    /// common name `cn`, in `cert.pem` and `key.pem` under a new temp dir.
    pub fn new(tag: &str, cn: &str) -> TestCert {
        let dir = super::fresh_temp_dir(tag);
        let mut cert = TestCert::make(&dir, cn);
        cert.cert = dir.join("cert.pem");
        cert.key = dir.join("key.pem");
        cert.write_to(&cert.cert, &cert.key);
        cert
    }

    /// Another certificate, not written anywhere yet.
    pub fn make(dir: &Path, cn: &str) -> TestCert {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).expect("self-signed");
        TestCert {
            dir: dir.to_path_buf(),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes this pair over the files `cert` and `key`.
    pub fn write_to(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).expect("write cert");
        std::fs::write(key, &self.key_pem).expect("write key");
    }

    /// The server arguments that serve this pair.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// The test configuration serving this pair.
    pub fn config(&self) -> Config {
        self.config_with(|_| {})
    }

    /// The test configuration serving this pair, with `change` applied.
    pub fn config_with(&self, change: impl FnOnce(&mut Config)) -> Config {
        super::config_with(|c| {
            c.tls_cert = Some(self.cert.clone());
            c.tls_key = Some(self.key.clone());
            change(c);
        })
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        if !self.cert.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Which TLS versions a client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// TLS 1.3 and 1.2, as browsers do (1.3 is chosen).
    Both,
    Tls12Only,
}

/// A client that trusts `trusted` only, offers `versions`, and no session
/// resumption (every handshake is a full one).
pub fn client_config(
    trusted: &[&CertificateDer<'static>],
    versions: Versions,
) -> Arc<ClientConfig> {
    client_config_with_alpn(trusted, versions, &[])
}

/// [`client_config`] offering the ALPN protocols `alpn`.
pub fn client_config_with_alpn(
    trusted: &[&CertificateDer<'static>],
    versions: Versions,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in trusted {
        roots
            .add((*cert).clone())
            .expect("trust the test certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider);
    let builder = match versions {
        Versions::Both => builder.with_safe_default_protocol_versions(),
        Versions::Tls12Only => builder.with_protocol_versions(&[&rustls::version::TLS12]),
    }
    .expect("protocol versions");
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Connects to `addr` and completes the TLS handshake for `localhost`.
pub fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> TlsSocket {
    try_tls_connect(addr, config).expect("TLS handshake")
}

/// [`tls_connect`], or the error that ended the handshake.
pub fn try_tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> std::io::Result<TlsSocket> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(READ_TIMEOUT))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").expect("server name");
    let conn = ClientConnection::new(Arc::clone(config), name).map_err(std::io::Error::other)?;
    let mut socket = StreamOwned::new(conn, tcp);
    while socket.conn.is_handshaking() {
        socket.conn.complete_io(&mut socket.sock)?;
    }
    Ok(socket)
}

/// The certificate the server presented on `socket`.
pub fn presented(socket: &TlsSocket) -> CertificateDer<'static> {
    socket
        .conn
        .peer_certificates()
        .expect("a server certificate")[0]
        .clone()
}

/// A tungstenite client on `wss://localhost{path}` over a fresh TLS connection.
pub fn wss(addr: SocketAddr, path: &str, config: &Arc<ClientConfig>) -> Wss {
    wss_over(tls_connect(addr, config), addr, path)
}

/// A tungstenite client on `wss://localhost{path}` over `socket`.
pub fn wss_over(socket: TlsSocket, addr: SocketAddr, path: &str) -> Wss {
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, response) = tungstenite::client::client(url, socket).expect("wss handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// GET `path` over https on a fresh connection that closes after it: status,
/// head and body.
pub fn https_get(
    addr: SocketAddr,
    path: &str,
    config: &Arc<ClientConfig>,
) -> (u16, String, Vec<u8>) {
    let mut socket = tls_connect(addr, config);
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).expect("write");
    let mut response = Vec::new();
    // The server ends with close_notify: a clean end, not UnexpectedEof.
    socket
        .read_to_end(&mut response)
        .expect("a response ended by close_notify");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, _) = text.split_once("\r\n\r\n").expect("a response head");
    let body = response[head.len() + 4..].to_vec();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head.to_string(), body)
}

/// The value of a metric, read over https.
pub fn https_metric(addr: SocketAddr, config: &Arc<ClientConfig>, name: &str) -> u64 {
    let (_, _, body) = https_get(addr, "/metrics", config);
    super::metric_in(&String::from_utf8_lossy(&body), name)
}

/// The upgrade request of the common helpers, to send over TLS by hand.
pub fn upgrade(path: &str) -> String {
    upgrade_request(path, "")
}

/// The next chat message's text on a wss member, skipping notices.
pub fn next_chat_text(ws: &mut Wss) -> String {
    loop {
        match ws.read().expect("a frame") {
            tungstenite::Message::Text(json) if json_field(&json, "type") == Some("message") => {
                return json_field(&json, "text").expect("text").to_string()
            }
            _ => continue,
        }
    }
}
