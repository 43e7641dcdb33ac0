//! How FerroMQ's own clients (`ferromq admin`, `send`, `consume`, `bench`) reach a server: the
//! address as users type it, one connection error that says what failed once, and the headers
//! every RocketMQ call carries (client id, signature).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use ferromq_proto::v2::{self, messaging_service_client::MessagingServiceClient};

/// How FerroMQ's own clients verify a TLS server.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTls {
    /// PEM bundle of the CA certificates to verify the server against (only these, not the
    /// system roots): the server is then dialled in TLS and its certificate must name the host
    /// of --server. Without it, `https://host:port` is encrypted but not verified (a warning
    /// says so) and `host:port` is plaintext.
    #[arg(long = "tls-ca", value_name = "FILE", global = true)]
    pub tls_ca: Option<PathBuf>,
}

/// `host:port` as a URI (`http://host:port`); a URI is kept as given.
pub fn endpoint(server: &str) -> String {
    if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    }
}

/// The endpoint for `server`: plaintext for `host:port` and `http://`; TLS for `https://`
/// and whenever `--tls-ca` is given (verified against it).
pub fn tls_endpoint(server: &str, tls: &ServerTls) -> anyhow::Result<Endpoint> {
    let bad = || anyhow!("{server:?} is not a server address (host:port)");
    match &tls.tls_ca {
        Some(ca) => {
            if server.starts_with("http://") {
                bail!("--tls-ca verifies a TLS server, but {server} is plaintext (http://): give host:port or https://host:port");
            }
            let uri = format!("https://{}", server.trim_start_matches("https://"));
            let link =
                ferromq_controller::Link::from_ca_file(ca).map_err(|e| anyhow!("--tls-ca: {e}"))?;
            link.endpoint(uri.trim_start_matches("https://"))
                .map_err(|_| bad())
        }
        None => {
            let e = Endpoint::from_shared(endpoint(server)).map_err(|_| bad())?;
            if !server.starts_with("https://") {
                return Ok(e);
            }
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!("warning: not verifying the certificate of {server} (give --tls-ca FILE to verify it)")
            });
            e.tls_config_with_verifier(ClientTlsConfig::new(), Arc::new(Unverified::new()))
                .map_err(|e| anyhow!("cannot set up TLS to {server}: {e}"))
        }
    }
}

/// A connection to `server`. The error names the server and the cause once (tonic's own chain
/// repeats itself: "transport error: tcp connect error: tcp connect error: ...").
pub async fn connect(server: &str, tls: &ServerTls) -> anyhow::Result<Channel> {
    let ch = tls_endpoint(server, tls)?;
    ch.connect().await.map_err(|e| {
        anyhow!(
            "cannot connect to {server}: {}",
            ferromq_controller::describe(&e)
        )
    })
}

/// Takes any certificate, as the Java and Go clients do by default (`https://` without
/// `--tls-ca`: the server's self-signed certificate is then accepted), but still checks that
/// the handshake is signed by the key of the certificate presented.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl Unverified {
    fn new() -> Unverified {
        Unverified(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The headers of every RocketMQ call: the client id, the client's language, and the signature
/// when credentials are given. Nothing more: each header is work on both ends of every call (with
/// `x-mq-protocol` and `x-mq-client-version` as well, two A/B pairs of `bench produce` at maximum
/// rate on 2026-12-03 measured 61 against 65.7 µs of server CPU per message; with the language
/// alone, no difference above the run-to-run noise).
#[derive(Clone)]
pub struct ClientId(
    MetadataValue<tonic::metadata::Ascii>,
    crate::credentials::Signer,
);

/// `x-mq-language`. Apache RocketMQ's proxy reads it as the name of one of its languages on
/// every client registration (Telemetry settings, Heartbeat) and fails the call with
/// INTERNAL when it is missing or unknown; `RUST` is one it knows.
const LANGUAGE: &str = "RUST";

impl ClientId {
    /// `name@pid#n`: unique per process and connection, as the server's client table wants.
    pub fn new(name: &str, n: usize, signer: crate::credentials::Signer) -> anyhow::Result<Self> {
        let id = MetadataValue::try_from(format!("{name}@{}#{n}", std::process::id()))?;
        Ok(ClientId(id, signer))
    }
}

impl tonic::service::Interceptor for ClientId {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let md = req.metadata_mut();
        md.insert("x-mq-client-id", self.0.clone());
        md.insert("x-mq-language", MetadataValue::from_static(LANGUAGE));
        self.1.call(req)
    }
}

/// A RocketMQ 5 MessagingService client.
pub type Messaging = MessagingServiceClient<InterceptedService<Channel, ClientId>>;

/// Connects a MessagingService client named `name` (connection `n` of the process).
pub async fn messaging(
    server: &str,
    tls: &ServerTls,
    name: &str,
    n: usize,
    credentials: &crate::credentials::CredentialArgs,
) -> anyhow::Result<Messaging> {
    let ch = connect(server, tls).await?;
    let id = ClientId::new(name, n, credentials.signer()?)?;
    Ok(MessagingServiceClient::with_interceptor(ch, id).max_decoding_message_size(64 << 20))
}

/// A RocketMQ resource (topic or group) named `name`, without a namespace.
pub fn resource(name: &str) -> Option<v2::Resource> {
    Some(v2::Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

/// Wall-clock milliseconds since the epoch (born timestamps, latencies).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An error as one line: each cause once. A cause whose text an earlier one already holds is
/// skipped; one that repeats the previous cause and adds to it replaces it.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        match parts.last_mut() {
            Some(last) if text.contains(last.as_str()) => *last = text,
            _ => parts.push(text),
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let e = anyhow!("tcp connect error: refused")
            .context("tcp connect error")
            .context("cannot connect to h:1");
        assert_eq!(
            one_line(&e),
            "cannot connect to h:1: tcp connect error: refused"
        );
        assert_eq!(endpoint("h:1"), "http://h:1");
        assert_eq!(endpoint("https://h:1"), "https://h:1");
    }

    #[test]
    fn every_call_names_its_client_and_language() {
        use tonic::service::Interceptor as _;
        let mut id = ClientId::new("t", 3, crate::credentials::Signer::default()).unwrap();
        let req = id.call(tonic::Request::new(())).unwrap();
        let md = req.metadata();
        let get = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(
            get("x-mq-client-id"),
            Some(format!("t@{}#3", std::process::id()))
        );
        assert_eq!(get("x-mq-language").as_deref(), Some("RUST"));
        assert!(md.get("authorization").is_none());
    }

    #[test]
    fn tls_ca_dials_https_and_refuses_plaintext_addresses() {
        let plain = ServerTls::default();
        assert_eq!(
            tls_endpoint("h:1", &plain).unwrap().uri().to_string(),
            "http://h:1/"
        );
        assert_eq!(
            tls_endpoint("https://h:1", &plain)
                .unwrap()
                .uri()
                .to_string(),
            "https://h:1/"
        );
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
        std::fs::write(&ca, cert.pem()).unwrap();
        let tls = ServerTls {
            tls_ca: Some(ca.clone()),
        };
        for s in ["h:1", "https://h:1"] {
            assert_eq!(
                tls_endpoint(s, &tls).unwrap().uri().to_string(),
                "https://h:1/"
            );
        }
        let err = tls_endpoint("http://h:1", &tls).unwrap_err().to_string();
        assert!(err.contains("--tls-ca"), "{err}");
        std::fs::write(&ca, "").unwrap();
        let err = tls_endpoint("h:1", &tls).unwrap_err().to_string();
        assert!(err.starts_with("--tls-ca: "), "{err}");
    }
}
