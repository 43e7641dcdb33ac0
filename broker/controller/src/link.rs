//! How a FerroMQ process dials its internal peers (name servers, controller peers, broker group
//! leaders, brokers behind a proxy): plaintext, or TLS verified against the cluster's CA bundle
//! (`--tls-ca`).
//!
//! Why a bundle of our own and not the system roots: internal certificates are issued by a
//! cluster CA (the operator's, cert-manager's, the user's), and trusting the system roots as
//! well would let any publicly trusted certificate impersonate a peer. With a bundle there is
//! no plaintext fallback: a peer that answers in plaintext, or with a certificate the bundle did
//! not sign, is a connection error ([`describe`] says which).
//!
//! The name checked is the host of the address dialled (`broker-0.g1.ns.svc` or an IP
//! address), as every address in FerroMQ is `host:port`. The bundle is read once at start-up:
//! a renewed CA takes a restart (Kubernetes rolls the pods when the Secret changes).

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::CertificateDer;
use tonic::transport::{ClientTlsConfig, Endpoint};

/// Why a CA bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is empty")]
    Empty { path: PathBuf },
    #[error("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not valid PEM: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("certificate {index} of {path} is not a usable CA certificate: {reason}")]
    BadCertificate {
        path: PathBuf,
        index: usize,
        reason: String,
    },
}

/// How internal links are dialled. The default is plaintext (`http://`).
#[derive(Clone, Default)]
pub struct Link {
    tls: Option<Tls>,
}

/// The bundle's path and size, not its bytes: configurations are printed with `{:?}`.
impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Link({self})")
    }
}

#[derive(Clone)]
struct Tls {
    config: ClientTlsConfig,
    /// Where the bundle came from and how many CAs it holds, for logs.
    source: PathBuf,
    cas: usize,
}

impl Link {
    /// Plaintext links.
    pub fn plaintext() -> Link {
        Link::default()
    }

    /// TLS links trusting exactly the CA certificates in the PEM file at `path`.
    pub fn from_ca_file(path: &Path) -> Result<Link, BundleError> {
        let bytes = std::fs::read(path).map_err(|source| BundleError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Link::from_ca_pem(path, &bytes)
    }

    /// [`Link::from_ca_file`] on bytes already read; `path` names them in errors.
    pub fn from_ca_pem(path: &Path, bytes: &[u8]) -> Result<Link, BundleError> {
        let path = path.to_path_buf();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(BundleError::Empty { path });
        }
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<_, pem::Error>>()
            .map_err(|e| BundleError::BadPem {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(BundleError::NoCertificate { path });
        }
        // Each certificate must parse as a trust anchor: tonic would skip one that does not,
        // silently trusting fewer CAs than the file names.
        let mut roots = rustls::RootCertStore::empty();
        for (i, c) in certs.into_iter().enumerate() {
            roots.add(c).map_err(|e| BundleError::BadCertificate {
                path: path.clone(),
                index: i + 1,
                reason: e.to_string(),
            })?;
        }
        let cas = roots.roots.len();
        // No `with_enabled_roots`: the bundle is the only trust.
        let config = ClientTlsConfig::new().trust_anchors(roots.roots);
        Ok(Link {
            tls: Some(Tls {
                config,
                source: path,
                cas,
            }),
        })
    }

    /// Whether links dial TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The URI scheme links use.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// An endpoint for `addr` (`host:port`), with TLS when the link has a bundle. The server
    /// name checked is `host`.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        let e = Endpoint::from_shared(format!("{}://{addr}", self.scheme()))?;
        match &self.tls {
            Some(t) => e.tls_config(t.config.clone()),
            None => Ok(e),
        }
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tls {
            Some(t) => write!(
                f,
                "TLS verified against {} ({} CA certificate{})",
                t.source.display(),
                t.cas,
                if t.cas == 1 { "" } else { "s" }
            ),
            None => f.write_str("plaintext"),
        }
    }
}

/// Why a call or connection to a peer failed, in a user's words: a TLS failure says what the
/// peer presented ("certificate not signed by --tls-ca", "does not speak TLS"), anything else
/// the innermost cause (tonic's chain repeats itself).
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = err.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = tls_error(e) {
            return explain(t);
        }
        let text = e.to_string();
        if !text.is_empty() {
            innermost = text;
        }
        cur = e.source();
    }
    innermost
}

/// A rustls error, directly or inside an `io::Error` (whose `source()` skips its payload).
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    e.downcast_ref::<rustls::Error>().or_else(|| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    })
}

fn explain(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature | C::UnhandledCriticalExtension => {
                format!("TLS: certificate not signed by --tls-ca ({c:?})")
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("TLS: the certificate does not name the host dialled: {e}")
            }
            C::Expired | C::ExpiredContext { .. } => format!("TLS: the certificate expired: {e}"),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!("TLS: the certificate is not valid yet: {e}")
            }
            _ => format!("TLS: {e}"),
        },
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => {
            format!("TLS: the peer does not speak TLS on this port (plaintext only?): {e}")
        }
        other => format!("TLS: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Link, BundleError> {
        Link::from_ca_pem(Path::new("ca.pem"), text.as_bytes())
    }

    #[test]
    fn a_missing_empty_or_certificate_less_bundle_is_refused() {
        let missing = Link::from_ca_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(
            matches!(missing, BundleError::Unreadable { .. }),
            "{missing}"
        );
        assert!(missing.to_string().contains("/nonexistent/ca.pem"));
        assert!(matches!(load(""), Err(BundleError::Empty { .. })));
        assert!(matches!(load(" \n\n"), Err(BundleError::Empty { .. })));
        assert!(matches!(
            load("just some words\n"),
            Err(BundleError::NoCertificate { .. })
        ));
        // A key is PEM but no certificate.
        assert!(matches!(
            load("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(BundleError::NoCertificate { .. })
        ));
        // A certificate block whose body is not an X.509 certificate.
        let err = load("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .expect_err("garbage certificate");
        assert!(
            matches!(err, BundleError::BadCertificate { index: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn links_dial_http_or_https() {
        assert!(!Link::plaintext().is_tls());
        assert_eq!(Link::plaintext().to_string(), "plaintext");
        let e = Link::plaintext().endpoint("h:1").unwrap();
        assert_eq!(e.uri().to_string(), "http://h:1/");
        assert!(Link::plaintext().endpoint("not an address").is_err());
    }

    #[test]
    fn tls_failures_are_said_plainly() {
        let unknown = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let wrapped = tonic::Status::unavailable(unknown.to_string());
        // The status alone carries only text; the chain holds the rustls error.
        assert!(!describe(&wrapped).contains("--tls-ca"));
        assert!(describe(&unknown).contains("certificate not signed by --tls-ca"));
        let plain = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert!(describe(&plain).contains("does not speak TLS"));
        let other = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(describe(&other), "refused");
    }
}
