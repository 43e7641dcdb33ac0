//! Optional TLS on the gRPC port, with plaintext still accepted on the same port.
//!
//! Why both: the Java and Go clients default to TLS (and trust any certificate), the Python,
//! Rust and Node clients default to plaintext. With `--tls-cert`/`--tls-key` set, each new
//! connection is classified by its first byte: 0x16 starts a TLS handshake (record type
//! "handshake"), anything else is HTTP/2 in the clear. ALPN offers `h2`, which gRPC clients
//! require. Without a certificate the port is plaintext only (tonic's default).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::debug;

use crate::config::ConfigError;
use crate::connections::{Connections, Guarded, Permit, Port, Protocol};

/// First byte of a TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

/// Loads the certificate chain and private key (PEM) into a server configuration.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
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
/// handshake timeout; then guards the connection against silence.
async fn classify(
    stream: TcpStream,
    permit: Permit,
    acceptor: Option<TlsAcceptor>,
    conns: &Connections,
) -> io::Result<Guarded<Conn>> {
    let accepted = tokio::time::Instant::now();
    let Some(acceptor) = acceptor else {
        // Plaintext only: the guard itself waits for the first byte.
        return Ok(Guarded::new(
            Conn::Plain(stream),
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
        } else {
            Ok(Conn::Plain(stream))
        }
    };
    match tokio::time::timeout(conns.limits.handshake_timeout, handshake).await {
        Ok(Ok(conn)) => Ok(Guarded::new(conn, permit, Protocol::Http2, accepted)),
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
    tls: Option<Arc<rustls::ServerConfig>>,
    conns: Arc<Connections>,
    mut shutdown: watch::Receiver<bool>,
) -> ReceiverStream<io::Result<Guarded<Conn>>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tls.map(TlsAcceptor::from);
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
