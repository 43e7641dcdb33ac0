//! End to end: the gRPC port speaks TLS (ALPN h2) to clients that want it (Java and Go default
//! to TLS and trust any certificate) and plaintext to the others, on the same port: with the
//! user's certificate, or by default with a self-signed one made at start-up. `--tls required`
//! closes plaintext connections, `--tls off` serves plaintext only.

mod support;

use std::process::Command;
use std::sync::Arc;

use ferromq_proto::v2::{self, messaging_service_client::MessagingServiceClient, Code};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use support::*;
use tonic::transport::Channel;

/// A client configuration trusting `roots` only.
fn trusting(roots: impl IntoIterator<Item = CertificateDer<'static>>) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        store.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// Accepts any server certificate, as the Java and Go clients do by default.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn trusting_anything() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// A TLS connection to the gRPC port for `name`; checks that h2 was negotiated.
async fn tls_connect(
    port: u16,
    cfg: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?;
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "server negotiates h2"
    );
    Ok(tls)
}

/// A gRPC client over TLS.
async fn tls_client(
    port: u16,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<MessagingServiceClient<Channel>, tonic::transport::Error> {
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_uri| {
            let cfg = cfg.clone();
            async move {
                let tls = tls_connect(port, cfg, "localhost").await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(MessagingServiceClient::new(channel))
}

/// A gRPC client in the clear (h2c), connecting lazily.
fn plain_client(port: u16) -> MessagingServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    MessagingServiceClient::new(channel)
}

async fn send(
    client: &mut MessagingServiceClient<Channel>,
    topic: &str,
    id: &str,
    body: &[u8],
) -> Result<Code, tonic::Status> {
    let mut req = tonic::Request::new(v2::SendMessageRequest {
        messages: vec![message(topic, id, body)],
    });
    req.metadata_mut()
        .insert("x-mq-client-id", "tls-client".parse().unwrap());
    let r = client.send_message(req).await?.into_inner();
    Ok(code_of(&r.status))
}

#[tokio::test]
async fn one_port_serves_tls_and_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed(dir.path()) else {
        eprintln!("SKIP: openssl CLI not available to make a test certificate");
        return;
    };
    let s = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    s.create_topic("t", "normal", 1);

    // TLS client trusting the given certificate only.
    let roots = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .map(|c| c.unwrap());
    let mut tls = tls_client(s.grpc_port, trusting(roots))
        .await
        .expect("TLS connection");
    let sent = send(&mut tls, "t", "T1", b"secret").await;
    assert_eq!(sent.expect("gRPC over TLS"), Code::Ok);

    // Plaintext on the same port still works.
    let mut plain = s.client().await;
    let got = receive_n(
        &mut plain,
        receive_request("g", "t", 4, 30_000, 2_000, "*"),
        1,
    )
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, &b"secret"[..]);
}

#[tokio::test]
async fn tls_is_on_by_default_with_a_self_signed_certificate() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 1);

    // What the Java and Go clients do by default: TLS, any certificate.
    let conn = tls_connect(s.grpc_port, trusting_anything(), "localhost")
        .await
        .expect("TLS handshake with the default server");
    let leaf = conn.get_ref().1.peer_certificates().expect("a certificate")[0].clone();
    drop(conn);
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
    let fingerprint: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    let fingerprint = fingerprint.join(":");
    assert!(
        s.log().contains(&fingerprint),
        "the log names the certificate's SHA-256 fingerprint {fingerprint}; log: {}",
        s.log()
    );
    // Its names: a client that trusts it verifies it for localhost and 127.0.0.1.
    for name in ["localhost", "127.0.0.1"] {
        tls_connect(s.grpc_port, trusting([leaf.clone()]), name)
            .await
            .unwrap_or_else(|e| panic!("the self-signed certificate is valid for {name}: {e}"));
    }
    let mut tls = tls_client(s.grpc_port, trusting_anything())
        .await
        .expect("TLS gRPC");
    assert_eq!(
        send(&mut tls, "t", "D1", b"by default").await.unwrap(),
        Code::Ok
    );
    let mut plain = plain_client(s.grpc_port);
    assert_eq!(
        send(&mut plain, "t", "D2", b"clear").await.unwrap(),
        Code::Ok
    );
}

#[tokio::test]
async fn required_refuses_plaintext_and_off_refuses_tls() {
    // Topics are auto-created: `ferromq admin` speaks plaintext, which `required` closes.
    let s = Server::start(&["--tls", "required", "--auto-create-topics"]);
    let mut tls = tls_client(s.grpc_port, trusting_anything())
        .await
        .expect("TLS gRPC");
    assert_eq!(send(&mut tls, "t", "R1", b"tls").await.unwrap(), Code::Ok);
    let mut plain = plain_client(s.grpc_port);
    let refused = send(&mut plain, "t", "R2", b"clear").await;
    assert!(
        refused.is_err(),
        "a plaintext call on a TLS-only port fails, got {refused:?}"
    );

    let s = Server::start(&["--tls", "off", "--auto-create-topics"]);
    let handshake = tls_connect(s.grpc_port, trusting_anything(), "localhost").await;
    assert!(
        handshake.is_err(),
        "no TLS handshake on a plaintext-only port"
    );
    let mut plain = plain_client(s.grpc_port);
    assert_eq!(
        send(&mut plain, "t", "O1", b"clear").await.unwrap(),
        Code::Ok
    );
    assert!(s.log().contains("plaintext only"), "log: {}", s.log());
}
#[test]
fn a_certificate_without_its_key_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "standalone",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--tls-cert",
        ])
        .arg(dir.path().join("cert.pem"))
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls-key"));
}
