//! TLS on the client-facing gRPC port, with plaintext accepted on the same port by default.
//!
//! Why both: the Java and Go clients default to TLS (and trust any certificate), the Python,
//! Rust and Node clients default to plaintext. Like RocketMQ's proxy, each new connection is
//! classified by its first byte: 0x16 starts a TLS handshake (record type "handshake"),
//! anything else is HTTP/2 in the clear. ALPN offers `h2`, which gRPC clients require.
//!
//! Three modes ([`TlsMode`]): `off` (plaintext only, tonic's default), `mixed` (the default:
//! both), `required` (plaintext connections are closed after their first byte). Without
//! `--tls-cert`/`--tls-key` a self-signed certificate is made at start-up ([`Tls::self_signed`]):
//! the clients that default to TLS skip verification, so users get a working port with no
//! set-up, and anyone who verifies gives their own certificate.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, info};

use crate::coalesce::Coalesced;
use crate::config::ConfigError;
use crate::connections::{Connections, Guarded, Permit, Port, Protocol};

/// First byte of a TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

/// What the gRPC port accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plaintext (h2c) only.
    Off,
    /// TLS and plaintext on the same port, told apart by the first byte.
    #[default]
    Mixed,
    /// TLS only: plaintext connections are closed.
    Required,
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Off => "off",
            TlsMode::Mixed => "mixed",
            TlsMode::Required => "required",
        })
    }
}

/// Where the server certificate came from, for the start-up log.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// `--tls-cert`/`--tls-key`.
    Files(PathBuf),
    /// Made at start-up for these subject alternative names.
    SelfSigned(Vec<String>),
}

/// TLS as a role serves it: never built for mode `off`.
#[derive(Clone, Debug)]
pub struct Tls {
    /// `mixed` or `required`.
    pub mode: TlsMode,
    pub server: Arc<rustls::ServerConfig>,
    pub source: CertSource,
    /// SHA-256 of the leaf certificate (DER), colon-separated upper-case hex, as `openssl x509
    /// -fingerprint -sha256` prints it: what a user compares before trusting the certificate.
    pub fingerprint: String,
}

impl Tls {
    /// Loads the certificate chain and private key (PEM files).
    pub fn from_files(mode: TlsMode, cert: &Path, key: &Path) -> Result<Tls, ConfigError> {
        let bad = |field: &'static str, reason: String| ConfigError { field, reason };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| bad("tls-cert", format!("cannot read {}: {e}", cert.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| {
                bad(
                    "tls-cert",
                    format!("{} is not a PEM certificate chain: {e}", cert.display()),
                )
            })?;
        if certs.is_empty() {
            return Err(bad(
                "tls-cert",
                format!("{} holds no certificate", cert.display()),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            bad(
                "tls-key",
                format!("{} holds no usable PEM private key: {e}", key.display()),
            )
        })?;
        let fingerprint = fingerprint(&certs[0]);
        Ok(Tls {
            mode,
            server: server_config(certs, key)?,
            source: CertSource::Files(cert.to_path_buf()),
            fingerprint,
        })
    }

    /// A self-signed certificate for `names` (host names or IP addresses, duplicates
    /// ignored), made now and kept in memory only: a restart makes a new one.
    pub fn self_signed(mode: TlsMode, names: &[String]) -> Result<Tls, ConfigError> {
        let mut sans: Vec<String> = Vec::new();
        for n in names {
            let n = n.trim().trim_start_matches('[').trim_end_matches(']');
            if !n.is_empty() && !sans.iter().any(|s| s.eq_ignore_ascii_case(n)) {
                sans.push(n.to_string());
            }
        }
        let failed = |e: rcgen::Error| ConfigError {
            field: "tls",
            reason: format!("cannot make a self-signed certificate for {sans:?}: {e}"),
        };
        let mut params = rcgen::CertificateParams::new(sans.clone()).map_err(failed)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "FerroMQ self-signed");
        let key = rcgen::KeyPair::generate().map_err(failed)?;
        let cert = params.self_signed(&key).map_err(failed)?;
        let der = cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(Tls {
            mode,
            fingerprint: fingerprint(&der),
            server: server_config(vec![der], key)?,
            source: CertSource::SelfSigned(sans),
        })
    }
}

impl fmt::Display for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            CertSource::Files(p) => write!(f, "{} (certificate {})", self.mode, p.display()),
            CertSource::SelfSigned(names) => write!(
                f,
                "{} (self-signed certificate for {})",
                self.mode,
                names.join(", ")
            ),
        }
    }
}

fn fingerprint(der: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let bad = |field: &'static str, reason: String| ConfigError { field, reason };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("tls-cert", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("tls-key", format!("does not match the certificate: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// A connection on the gRPC port, encrypted or not.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Conn::Plain(s) => s.connect_info(),
            Conn::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Tells TLS from plaintext by the first byte and completes the TLS handshake, all within the
/// handshake timeout; then guards the connection against silence and gathers its writes
/// ([`crate::coalesce`], above TLS: records are sealed from what a turn wrote, not per frame).
async fn classify(
    stream: TcpStream,
    permit: Permit,
    acceptor: Option<(TlsAcceptor, TlsMode)>,
    conns: &Connections,
) -> io::Result<Guarded<Coalesced<Conn>>> {
    let accepted = tokio::time::Instant::now();
    let Some((acceptor, mode)) = acceptor else {
        // Plaintext only: the guard itself waits for the first byte.
        return Ok(Guarded::new(
            Coalesced::new(Conn::Plain(stream)),
            permit,
            Protocol::Http2,
            accepted,
        ));
    };
    let handshake = async {
        let mut first = [0u8; 1];
        let n = stream.peek(&mut first).await?;
        if n == 1 && first[0] == TLS_HANDSHAKE {
            Ok(Conn::Tls(Box::new(acceptor.accept(stream).await?)))
        } else if mode == TlsMode::Required {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "plaintext connection refused: the port requires TLS (--tls required)",
            ))
        } else {
            Ok(Conn::Plain(stream))
        }
    };
    match tokio::time::timeout(conns.limits.handshake_timeout, handshake).await {
        Ok(Ok(conn)) => Ok(Guarded::new(
            Coalesced::new(conn),
            permit,
            Protocol::Http2,
            accepted,
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            conns.count_timeout();
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no first byte or TLS handshake within the handshake timeout",
            ))
        }
    }
}

/// Accepts connections until shutdown, admitted by the role's connection cap, handing
/// classified ones to tonic. Handshakes run on their own tasks so a slow client never delays
/// the others.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Tls>,
    conns: Arc<Connections>,
    mut shutdown: watch::Receiver<bool>,
) -> ReceiverStream<io::Result<Guarded<Coalesced<Conn>>>> {
    let (tx, rx) = mpsc::channel(64);
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    match &tls {
        Some(t) => info!(
            %addr,
            tls = %t,
            sha256_fingerprint = %t.fingerprint,
            "gRPC port accepts TLS{}",
            if t.mode == TlsMode::Mixed { " and plaintext" } else { " only" }
        ),
        None => info!(%addr, "gRPC port accepts plaintext only (TLS is off)"),
    }
    let acceptor = tls.map(|t| (TlsAcceptor::from(t.server), t.mode));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                (stream, peer, permit) = conns.accept(&listener, Port::Clients) => {
                    let _ = stream.set_nodelay(true);
                    let (tx, acceptor, conns) = (tx.clone(), acceptor.clone(), conns.clone());
                    tokio::spawn(async move {
                        match classify(stream, permit, acceptor, &conns).await {
                            Ok(c) => {
                                let _ = tx.send(Ok(c)).await;
                            }
                            Err(e) => debug!(%peer, error = %e, "connection dropped before gRPC"),
                        }
                    });
                }
                _ = shutdown.changed() => break,
            }
        }
    });
    ReceiverStream::new(rx)
}
