//! Configuration of `ferromq proxy`.

use std::net::SocketAddr;
use std::time::Duration;

pub use ferromq_config::keys::ProxyKeys;

use super::limits::LimitArgs;
use super::{
    advertise_default, bad, nameserver_list, parse_addr, parse_duration, ConfigError, ConfigFile,
    FileRole,
};

/// Flags of `ferromq proxy`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProxyArgs {
    /// Address clients connect to (RocketMQ 5 protocol and the admin API) [default: 0.0.0.0:8081].
    #[arg(long, env = "FERROMQ_GRPC_ADDR")]
    pub grpc_addr: Option<String>,
    /// Address of the HTTP endpoint (/healthz, /readyz, /metrics) [default: 0.0.0.0:9090].
    #[arg(long, env = "FERROMQ_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Name servers to read routes from, comma separated host:port.
    #[arg(long, env = "FERROMQ_NAMESERVERS", value_delimiter = ',')]
    pub nameservers: Vec<String>,
    /// How often routes are re-read from the name servers (e.g. 1s, 500ms) [default: 1s].
    #[arg(long, env = "FERROMQ_ROUTE_REFRESH")]
    pub route_refresh: Option<String>,
    /// host:port routes advertise when the address a client dialled is unusable.
    #[arg(long, env = "FERROMQ_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Address of the classic RocketMQ remoting endpoint (4.x clients, mqadmin, dashboards);
    /// "" turns it off [default: 0.0.0.0:8080].
    #[arg(long, env = "FERROMQ_REMOTING_ADDR")]
    pub remoting_addr: Option<String>,
    /// host:port remoting routes and message ids name [default: the host of advertise-addr
    /// with the remoting port].
    #[arg(long, env = "FERROMQ_REMOTING_ADVERTISE_ADDR")]
    pub remoting_advertise_addr: Option<String>,
    /// TOML file with the same keys as the flags (kebab-case).
    #[arg(long, env = "FERROMQ_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub tls: super::tls::TlsArgs,
    #[command(flatten)]
    pub tls_ca: super::tls::TlsCaArgs,
}

/// The proxy's remoting port: RocketMQ 5's proxy port for remoting clients.
pub const PROXY_REMOTING_ADDR: &str = "0.0.0.0:8080";

/// The validated configuration of a proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub nameservers: Vec<String>,
    pub route_refresh: Duration,
    pub advertise_addr: String,
    /// Bounds on client connections.
    pub limits: crate::connections::Limits,
    /// The remoting endpoint, when it is on.
    pub remoting: Option<super::node::RemotingListen>,
    /// TLS on the client port (`None`: plaintext only).
    pub tls: Option<crate::tls::Tls>,
    /// How the proxy dials name servers, the controller and brokers.
    pub link: ferromq_controller::Link,
}

impl ProxyArgs {
    pub fn resolve(&self) -> Result<ProxyConfig, ConfigError> {
        let file = ConfigFile::load(self.config.as_deref())?;
        FileRole::Proxy.check(&file)?;
        let keys: ProxyKeys = file.section()?;
        let limits = self.limits.resolve(file.section()?)?;
        let pick = |flag: &Option<String>, key: Option<String>, default: &str| {
            flag.clone().or(key).unwrap_or_else(|| default.to_string())
        };
        let grpc_addr = parse_addr(
            "grpc-addr",
            &pick(&self.grpc_addr, keys.grpc_addr, "0.0.0.0:8081"),
        )?;
        let http_addr = parse_addr(
            "http-addr",
            &pick(&self.http_addr, keys.http_addr, "0.0.0.0:9090"),
        )?;
        if grpc_addr == http_addr && grpc_addr.port() != 0 {
            return Err(bad(
                "http-addr",
                format!("{http_addr} is also the grpc-addr"),
            ));
        }
        let ns = if self.nameservers.is_empty() {
            keys.nameservers.unwrap_or_default()
        } else {
            self.nameservers.clone()
        };
        let advertise_addr = self
            .advertise_addr
            .clone()
            .or(keys.advertise_addr)
            .unwrap_or_else(|| advertise_default(grpc_addr));
        let remoting = super::node::remoting_listen(
            self.remoting_addr
                .as_deref()
                .or(keys.remoting_addr.as_deref()),
            self.remoting_advertise_addr
                .as_deref()
                .or(keys.remoting_advertise_addr.as_deref()),
            Some(PROXY_REMOTING_ADDR),
        )?;
        if let Some(r) = &remoting {
            if r.addr.port() != 0 && (r.addr == grpc_addr || r.addr == http_addr) {
                return Err(bad(
                    "remoting-addr",
                    format!("{} is also the grpc-addr or the http-addr", r.addr),
                ));
            }
        }
        Ok(ProxyConfig {
            remoting,
            grpc_addr,
            http_addr,
            nameservers: nameserver_list("nameservers", ns)?,
            route_refresh: parse_duration(
                "route-refresh",
                &pick(&self.route_refresh, keys.route_refresh, "1s"),
            )?,
            tls: self.tls.resolve(&file, &advertise_addr)?,
            link: self.tls_ca.resolve(&file)?,
            advertise_addr,
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_needs_name_servers_and_refuses_storage_keys() {
        assert_eq!(
            ProxyArgs::default().resolve().unwrap_err().field,
            "nameservers"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("proxy.toml");
        std::fs::write(&f, "nameservers = [\"ns:9876\"]\n").expect("write");
        let a = ProxyArgs {
            config: Some(f.clone()),
            ..Default::default()
        };
        let c = a.resolve().expect("valid");
        assert_eq!(c.advertise_addr, "127.0.0.1:8081");
        assert_eq!(c.route_refresh, Duration::from_secs(1));
        std::fs::write(&f, "nameservers = [\"ns:9876\"]\ndata-dir = \"/x\"\n").expect("write");
        assert!(a.resolve().unwrap_err().reason.contains("data-dir"));
    }
}
