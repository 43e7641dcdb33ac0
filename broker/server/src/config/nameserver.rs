//! Configuration of `ferromq nameserver`.

use std::net::SocketAddr;
use std::time::Duration;

pub use ferromq_config::keys::NameserverKeys;

use super::controller::ControllerArgs;
use super::limits::LimitArgs;
use super::{parse_addr, parse_duration, ConfigError, ConfigFile, FileRole};

/// Flags of `ferromq nameserver`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NameserverArgs {
    /// Address of the gRPC endpoint brokers and proxies talk to [default: 0.0.0.0:9876].
    #[arg(long, env = "FERROMQ_ADDR")]
    pub addr: Option<String>,
    /// Address of the HTTP endpoint (/healthz, /readyz, /metrics) [default: 0.0.0.0:9090].
    #[arg(long, env = "FERROMQ_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// A broker group missing heartbeats for this long leaves the routes (e.g. 3s, 500ms)
    /// [default: 3s].
    #[arg(long, env = "FERROMQ_BROKER_EXPIRY")]
    pub broker_expiry: Option<String>,
    /// TOML file with the same keys as the flags (kebab-case).
    #[arg(long, env = "FERROMQ_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub controller: ControllerArgs,
    #[command(flatten)]
    pub tls: super::tls::TlsArgs,
    #[command(flatten)]
    pub tls_ca: super::tls::TlsCaArgs,
}

/// The validated configuration of a name server.
#[derive(Debug, Clone)]
pub struct NameserverConfig {
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// A group silent for this long drops out of the routes.
    pub broker_expiry: Duration,
    /// Bounds on connections (from brokers and proxies).
    pub limits: crate::connections::Limits,
    /// The replication controller peer this name server runs, if any.
    pub controller: Option<ferromq_controller::ControllerConfig>,
    /// TLS on the gRPC port (brokers, proxies and controller peers connect there; `None`:
    /// plaintext only).
    pub tls: Option<crate::tls::Tls>,
    /// How the controller dials its Raft peers.
    pub link: ferromq_controller::Link,
}

impl NameserverArgs {
    pub fn resolve(&self) -> Result<NameserverConfig, ConfigError> {
        let file = ConfigFile::load(self.config.as_deref())?;
        FileRole::Nameserver.check(&file)?;
        let keys: NameserverKeys = file.section()?;
        let limits = self.limits.resolve(file.section()?)?;
        let pick = |flag: &Option<String>, key: Option<String>, default: &str| {
            flag.clone().or(key).unwrap_or_else(|| default.to_string())
        };
        let addr = parse_addr("addr", &pick(&self.addr, keys.addr, "0.0.0.0:9876"))?;
        let link = self.tls_ca.resolve(&file)?;
        let mut controller = self.controller.resolve(&file, addr)?;
        if let Some(c) = controller.as_mut() {
            c.link = link.clone();
        }
        // Without --tls-cert: a self-signed certificate, as the other roles make.
        let tls = self.tls.resolve(&file, &addr.to_string())?;
        Ok(NameserverConfig {
            controller,
            tls,
            link,
            addr,
            http_addr: parse_addr(
                "http-addr",
                &pick(&self.http_addr, keys.http_addr, "0.0.0.0:9090"),
            )?,
            broker_expiry: parse_duration(
                "broker-expiry",
                &pick(&self.broker_expiry, keys.broker_expiry, "3s"),
            )?,
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_fields() {
        let c = NameserverArgs::default().resolve().expect("defaults");
        assert_eq!(c.addr.port(), 9876);
        assert_eq!(c.broker_expiry, Duration::from_secs(3));
        let a = NameserverArgs {
            broker_expiry: Some("0s".into()),
            ..Default::default()
        };
        assert_eq!(a.resolve().unwrap_err().field, "broker-expiry");
        assert!(
            c.tls.is_some(),
            "TLS beside plaintext by default, as the other roles"
        );
        assert!(!c.link.is_tls());
        let a = NameserverArgs {
            tls_ca: super::super::tls::TlsCaArgs {
                tls_ca: Some("/nonexistent/ca.pem".into()),
            },
            ..Default::default()
        };
        assert_eq!(a.resolve().unwrap_err().field, "tls-ca");
    }
}
