//! TLS on the gRPC port: the keys `standalone`, `broker`, `proxy` and `nameserver` share (see
//! [`crate::tls`] for how connections are told apart); and TLS on the internal links `broker`,
//! `proxy` and `nameserver` dial (`--tls-ca`, see [`ferromq_controller::link`]).

use std::path::PathBuf;

pub use ferromq_config::keys::{TlsCaKeys, TlsKeys};
use ferromq_controller::Link;

use super::{bad, ConfigError, ConfigFile};
use crate::tls::{Tls, TlsMode};

/// Flags choosing what the gRPC port accepts and with which certificate.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct TlsArgs {
    /// What the gRPC port accepts: `off` (plaintext only), `mixed` (TLS and plaintext on the
    /// same port, told apart by the first byte) or `required` (TLS only) [default: mixed].
    #[arg(long = "tls", env = "FERROMQ_TLS", value_enum)]
    pub tls: Option<TlsMode>,
    /// PEM certificate chain for TLS [default: a self-signed certificate made at start-up for
    /// localhost, the advertised host and this machine's host name].
    #[arg(long, env = "FERROMQ_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "FERROMQ_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// Merges flags, file and defaults into what the port serves: `None` for `off`. A
    /// self-signed certificate names `localhost`, the loopback addresses, the host of
    /// `advertise_addr` and the machine's host name (a pod's name in Kubernetes).
    pub fn resolve(
        &self,
        file: &ConfigFile,
        advertise_addr: &str,
    ) -> Result<Option<Tls>, ConfigError> {
        let keys: TlsKeys = file.section()?;
        let mode = match (self.tls, keys.tls.as_deref()) {
            (Some(m), _) => m,
            (None, Some(s)) => parse_mode(s)?,
            (None, None) => TlsMode::default(),
        };
        let cert = self.tls_cert.as_ref().or(keys.tls_cert.as_ref());
        let key = self.tls_key.as_ref().or(keys.tls_key.as_ref());
        if mode == TlsMode::Off {
            return match (cert, key) {
                (Some(_), _) => Err(bad("tls-cert", "is set but tls is off")),
                (None, Some(_)) => Err(bad("tls-key", "is set but tls is off")),
                (None, None) => Ok(None),
            };
        }
        match (cert, key) {
            (Some(cert), Some(key)) => Tls::from_files(mode, cert, key).map(Some),
            (Some(_), None) => Err(bad("tls-key", "tls-cert is set but tls-key is not")),
            (None, Some(_)) => Err(bad("tls-cert", "tls-key is set but tls-cert is not")),
            (None, None) => Tls::self_signed(mode, &default_names(advertise_addr)).map(Some),
        }
    }
}

/// The CA bundle internal links verify their peers against.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct TlsCaArgs {
    /// PEM bundle of the CA certificates that signed the cluster's certificates. When set,
    /// every internal link this process dials (to name servers, controller peers, broker group
    /// leaders, brokers) uses TLS and verifies the peer's certificate against exactly this
    /// bundle (not the system roots), for the host name or IP address dialled; a peer
    /// answering in plaintext or with another CA's certificate is refused, never used in
    /// plaintext. Read once at start-up: a renewed CA takes a restart (in Kubernetes, a
    /// rollout of the pods) [default: internal links are plaintext].
    #[arg(long, env = "FERROMQ_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

impl TlsCaArgs {
    /// Reads the bundle named by the flag or the file: plaintext links without one; a file
    /// that is missing, unreadable, empty or holds no certificate is an error naming `tls-ca`.
    pub fn resolve(&self, file: &ConfigFile) -> Result<Link, ConfigError> {
        let keys: TlsCaKeys = file.section()?;
        match self.tls_ca.as_ref().or(keys.tls_ca.as_ref()) {
            None => Ok(Link::plaintext()),
            Some(p) if p.as_os_str().is_empty() => Err(bad("tls-ca", "is an empty path")),
            Some(p) => Link::from_ca_file(p).map_err(|e| bad("tls-ca", e.to_string())),
        }
    }
}

fn parse_mode(s: &str) -> Result<TlsMode, ConfigError> {
    <TlsMode as clap::ValueEnum>::from_str(s.trim(), true)
        .map_err(|_| bad("tls", format!("{s:?} is not one of off, mixed, required")))
}

/// The names a self-signed certificate is made for.
fn default_names(advertise_addr: &str) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Some((host, _port)) = advertise_addr.rsplit_once(':') {
        names.push(host.to_string());
    }
    if let Some(h) = hostname::get().ok().and_then(|h| h.into_string().ok()) {
        names.push(h);
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, ConfigFile) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        let f = ConfigFile::load(Some(&p)).unwrap();
        (dir, f)
    }

    #[test]
    fn mixed_with_a_self_signed_certificate_by_default() {
        let t = TlsArgs::default()
            .resolve(&ConfigFile::default(), "broker-0.example:8081")
            .unwrap()
            .expect("tls on by default");
        assert_eq!(t.mode, TlsMode::Mixed);
        let crate::tls::CertSource::SelfSigned(names) = &t.source else {
            panic!("expected a self-signed certificate, got {:?}", t.source);
        };
        for n in ["localhost", "127.0.0.1", "broker-0.example"] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        // SHA-256 is 32 bytes: 32 pairs of hex digits joined by colons.
        assert_eq!(t.fingerprint.len(), 32 * 3 - 1, "{}", t.fingerprint);
    }

    #[test]
    fn off_refuses_a_certificate_and_modes_name_their_field() {
        let (_d, f) = file("tls = \"off\"\n");
        assert!(TlsArgs::default().resolve(&f, "h:1").unwrap().is_none());
        let args = TlsArgs {
            tls_cert: Some("/nonexistent.pem".into()),
            ..Default::default()
        };
        assert_eq!(args.resolve(&f, "h:1").unwrap_err().field, "tls-cert");
        let (_d, f) = file("tls = \"sometimes\"\n");
        assert_eq!(
            TlsArgs::default().resolve(&f, "h:1").unwrap_err().field,
            "tls"
        );
        let (_d, f) = file("tls = \"required\"\ntls-cert = \"/nonexistent.pem\"\n");
        assert_eq!(
            TlsArgs::default().resolve(&f, "h:1").unwrap_err().field,
            "tls-key"
        );
    }

    #[test]
    fn tls_ca_is_read_at_start_and_bad_bundles_name_the_field() {
        assert!(!TlsCaArgs::default()
            .resolve(&ConfigFile::default())
            .unwrap()
            .is_tls());
        let dir = tempfile::tempdir().unwrap();
        let err = |path: PathBuf| {
            TlsCaArgs { tls_ca: Some(path) }
                .resolve(&ConfigFile::default())
                .unwrap_err()
        };
        let missing = err(dir.path().join("missing.pem"));
        assert_eq!(missing.field, "tls-ca");
        assert!(missing.reason.contains("missing.pem"), "{}", missing.reason);
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(err(empty).reason.contains("is empty"));
        let key_only = dir.path().join("key.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&key_only, key.serialize_pem()).unwrap();
        assert!(err(key_only).reason.contains("no PEM certificate"));
        // A bundle of two CAs, named in the file.
        let bundle = dir.path().join("ca.pem");
        let ca = |name: &str| {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.distinguished_name.push(rcgen::DnType::CommonName, name);
            p.self_signed(&rcgen::KeyPair::generate().unwrap())
                .unwrap()
                .pem()
        };
        std::fs::write(&bundle, format!("{}{}", ca("one"), ca("two"))).unwrap();
        let (_d, f) = file(&format!("tls-ca = {:?}\n", bundle.display().to_string()));
        let link = TlsCaArgs::default().resolve(&f).unwrap();
        assert!(link.is_tls());
        assert!(link.to_string().contains("2 CA certificates"), "{link}");
    }

    #[test]
    fn a_flag_wins_over_the_file() {
        let (_d, f) = file("tls = \"off\"\n");
        let args = TlsArgs {
            tls: Some(TlsMode::Required),
            ..Default::default()
        };
        assert_eq!(
            args.resolve(&f, "h:1").unwrap().unwrap().mode,
            TlsMode::Required
        );
    }
}
