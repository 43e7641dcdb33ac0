//! End to end: with `--tls-cert`/`--tls-key` the gRPC port speaks TLS (ALPN h2) to clients
//! that want it (Java and Go default to TLS) and plaintext to the others, on the same port.

mod support;

use std::process::Command;
use std::sync::Arc;

use ferromq_proto::v2::{self, messaging_service_client::MessagingServiceClient, Code};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;

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

    // TLS client trusting the self-signed certificate.
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let port = s.grpc_port;
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                let tls = connector
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await?;
                assert_eq!(
                    tls.get_ref().1.alpn_protocol(),
                    Some(&b"h2"[..]),
                    "server negotiates h2"
                );
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .expect("TLS connection");
    let mut tls_client = MessagingServiceClient::new(channel);
    let mut req = tonic::Request::new(v2::SendMessageRequest {
        messages: vec![message("t", "T1", b"secret")],
    });
    req.metadata_mut()
        .insert("x-mq-client-id", "tls-client".parse().unwrap());
    let r = tls_client
        .send_message(req)
        .await
        .expect("gRPC over TLS")
        .into_inner();
    assert_eq!(code_of(&r.status), Code::Ok);

    // Plaintext on the same port still works.
    let mut plain = s.client().await;
    let got = receive_n(
        &mut plain,
        receive_request("g", "t", 4, 30_000, 2_000, "*"),
        1,
    )
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"secret");
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
