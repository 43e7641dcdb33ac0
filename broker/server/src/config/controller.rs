//! Configuration of the replication controller a name server may run (`--controller-peers`).
//!
//! Without `controller-peers` the name server runs no controller and behaves as before. With
//! it, `data-dir` is required (the Raft log and state live there) and the peer id defaults to
//! the 1-based position of this name server's address in the peer list; in Kubernetes the
//! operator passes `--controller-id` (pod ordinal + 1) because pods listen on 0.0.0.0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use ferromq_config::keys::ControllerKeys;
use ferromq_controller::{ControllerConfig, Timing};

use super::{bad, check_host_port, parse_duration, ConfigError, ConfigFile};

/// Flags of the controller, part of `ferromq nameserver`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ControllerArgs {
    /// Run a replication controller peer: host:port of every controller peer's name server,
    /// comma-separated, in the same order on every peer (e.g. ns-0:9876,ns-1:9876,ns-2:9876).
    #[arg(long, env = "FERROMQ_CONTROLLER_PEERS")]
    pub controller_peers: Option<String>,
    /// This peer's id: its 1-based position in --controller-peers [default: the position of
    /// --addr in the list].
    #[arg(long, env = "FERROMQ_CONTROLLER_ID")]
    pub controller_id: Option<String>,
    /// Directory of the controller's Raft log and state (required with --controller-peers).
    #[arg(long, env = "FERROMQ_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A group member not heard from for this long is dead; longer than --lease [default: 3s].
    #[arg(long, env = "FERROMQ_MEMBER_EXPIRY")]
    pub member_expiry: Option<String>,
    /// How long a group leader may act on one heartbeat answer [default: 2s].
    #[arg(long, env = "FERROMQ_LEASE")]
    pub lease: Option<String>,
    /// Elect a member outside the in-sync set when no in-sync member is alive (acknowledged
    /// messages may be lost; logged at every use) [default: false].
    #[arg(long, env = "FERROMQ_UNCLEAN_ELECTION", num_args = 0..=1, default_missing_value = "true")]
    pub unclean_election: Option<bool>,
}

impl ControllerArgs {
    /// The controller's configuration, or `None` when no peers are configured. `addr` is the
    /// name server's listening address (the default id is its position in the peers).
    pub fn resolve(
        &self,
        file: &ConfigFile,
        addr: SocketAddr,
    ) -> Result<Option<ControllerConfig>, ConfigError> {
        let keys: ControllerKeys = file.section()?;
        let Some(peers) = self.controller_peers.clone().or(keys.controller_peers) else {
            return Ok(None);
        };
        let peers: Vec<String> = peers
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if peers.is_empty() {
            return Err(bad(
                "controller-peers",
                "at least one host:port is required",
            ));
        }
        for p in &peers {
            check_host_port("controller-peers", p)?;
        }
        if let Some(dup) = peers
            .iter()
            .enumerate()
            .find(|(i, p)| peers[..*i].contains(p))
        {
            return Err(bad(
                "controller-peers",
                format!("{:?} is listed twice", dup.1),
            ));
        }
        let id = match (&self.controller_id, keys.controller_id) {
            (Some(s), _) => parse_id(s)?,
            (None, Some(v)) => match v {
                toml::Value::String(s) => parse_id(&s)?,
                v => super::count_value("controller-id", &v)? as u64,
            },
            (None, None) => default_id(&peers, addr)?,
        };
        let data_dir = self.data_dir.clone().or(keys.data_dir).ok_or_else(|| {
            bad(
                "data-dir",
                "required with controller-peers (the controller's Raft log and state live there)",
            )
        })?;
        let pick = |flag: &Option<String>, key: Option<String>, default: &str| {
            flag.clone().or(key).unwrap_or_else(|| default.to_string())
        };
        let member_expiry = parse_duration(
            "member-expiry",
            &pick(&self.member_expiry, keys.member_expiry, "3s"),
        )?;
        let lease = parse_duration("lease", &pick(&self.lease, keys.lease, "2s"))?;
        let unclean_election = match (self.unclean_election, keys.unclean_election) {
            (Some(b), _) => b,
            (None, Some(toml::Value::Boolean(b))) => b,
            (None, Some(toml::Value::String(s))) => s
                .trim()
                .parse()
                .map_err(|_| bad("unclean-election", format!("{s:?} is not true or false")))?,
            (None, Some(v)) => {
                return Err(bad("unclean-election", format!("{v} is not true or false")))
            }
            (None, None) => false,
        };
        let cfg = ControllerConfig {
            id,
            peers,
            data_dir,
            timing: Timing {
                member_expiry,
                lease,
                unclean_election,
                ..Timing::default()
            },
            heartbeat_interval: (lease / 4).min(Duration::from_millis(300)),
            // Set by the name server's resolution from --tls-ca.
            link: ferromq_controller::Link::plaintext(),
        };
        cfg.validate().map_err(|e| match e {
            ferromq_controller::ControllerError::Config { field, reason } => bad(field, reason),
            other => bad("controller-peers", other.to_string()),
        })?;
        Ok(Some(cfg))
    }
}

fn parse_id(s: &str) -> Result<u64, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| bad("controller-id", format!("{s:?} is not a whole number")))
}

/// The 1-based position of this name server's address in the peers.
fn default_id(peers: &[String], addr: SocketAddr) -> Result<u64, ConfigError> {
    let mine = [addr.to_string(), super::advertise_default(addr)];
    peers
        .iter()
        .position(|p| mine.contains(p))
        .map(|i| i as u64 + 1)
        .ok_or_else(|| {
            bad(
                "controller-id",
                format!(
                    "--addr {addr} is not one of the controller peers {peers:?}; pass --controller-id (its 1-based position)"
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_peers_no_controller() {
        let c = ControllerArgs::default()
            .resolve(&ConfigFile::default(), addr("0.0.0.0:9876"))
            .expect("resolves");
        assert!(c.is_none());
    }

    #[test]
    fn the_id_defaults_to_the_position_of_the_address() {
        let a = ControllerArgs {
            controller_peers: Some("127.0.0.1:1, 127.0.0.1:2,127.0.0.1:3".into()),
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        let c = a
            .resolve(&ConfigFile::default(), addr("127.0.0.1:2"))
            .expect("resolves")
            .expect("controller");
        assert_eq!(c.id, 2);
        assert_eq!(c.peers.len(), 3);
        assert_eq!(c.timing.member_expiry, Duration::from_secs(3));
        assert_eq!(c.timing.lease, Duration::from_secs(2));
        assert!(!c.timing.unclean_election);
        let err = a
            .resolve(&ConfigFile::default(), addr("0.0.0.0:9876"))
            .unwrap_err();
        assert_eq!(err.field, "controller-id");
        let explicit = ControllerArgs {
            controller_id: Some("3".into()),
            ..a.clone()
        };
        let c = explicit
            .resolve(&ConfigFile::default(), addr("0.0.0.0:9876"))
            .expect("resolves")
            .expect("controller");
        assert_eq!(c.id, 3);
    }

    #[test]
    fn bad_fields_are_named() {
        let base = ControllerArgs {
            controller_peers: Some("127.0.0.1:1,127.0.0.1:2".into()),
            data_dir: Some("/tmp/x".into()),
            controller_id: Some("1".into()),
            ..Default::default()
        };
        let field = |a: ControllerArgs| {
            a.resolve(&ConfigFile::default(), addr("127.0.0.1:1"))
                .unwrap_err()
                .field
        };
        assert_eq!(
            field(ControllerArgs {
                data_dir: None,
                ..base.clone()
            }),
            "data-dir"
        );
        assert_eq!(
            field(ControllerArgs {
                controller_id: Some("3".into()),
                ..base.clone()
            }),
            "controller-id"
        );
        assert_eq!(
            field(ControllerArgs {
                member_expiry: Some("1s".into()),
                ..base.clone()
            }),
            "member-expiry"
        );
        assert_eq!(
            field(ControllerArgs {
                controller_peers: Some("127.0.0.1:1,nowhere".into()),
                ..base.clone()
            }),
            "controller-peers"
        );
        assert_eq!(
            field(ControllerArgs {
                controller_peers: Some("127.0.0.1:1,127.0.0.1:1".into()),
                ..base.clone()
            }),
            "controller-peers"
        );
    }

    #[test]
    fn file_keys_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.toml");
        std::fs::write(
            &path,
            "controller-peers = \"127.0.0.1:1,127.0.0.1:2,127.0.0.1:3\"\ncontroller-id = 2\ndata-dir = \"/tmp/c\"\nmember-expiry = \"5s\"\nlease = \"3s\"\nunclean-election = true\n",
        )
        .unwrap();
        let file = ConfigFile::load(Some(&path)).expect("file");
        let c = ControllerArgs::default()
            .resolve(&file, addr("0.0.0.0:9876"))
            .expect("resolves")
            .expect("controller");
        assert_eq!(c.id, 2);
        assert_eq!(c.timing.member_expiry, Duration::from_secs(5));
        assert_eq!(c.timing.lease, Duration::from_secs(3));
        assert!(c.timing.unclean_election);
    }
}
