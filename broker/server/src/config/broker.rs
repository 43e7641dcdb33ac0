//! Configuration of `ferromq broker`: a storage node ([`super::node`]) that is one member of a
//! broker group in a cluster.

pub use ferromq_config::keys::BrokerKeys;

use super::node::{NodeArgs, NodeConfig};
use super::{bad, count_value, nameserver_list, ConfigError, ConfigFile, FileRole};

/// Flags of `ferromq broker`: the storage node's flags plus the cluster ones.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Internal gRPC address proxies forward to (same as --grpc-addr) [default: 0.0.0.0:10911].
    #[arg(long, env = "FERROMQ_ADDR")]
    pub addr: Option<String>,
    /// Name of this broker group (letters, digits, '-', '_').
    #[arg(long, env = "FERROMQ_GROUP")]
    pub group: Option<String>,
    /// Name servers to report to, comma separated host:port.
    #[arg(long, env = "FERROMQ_NAMESERVERS", value_delimiter = ',')]
    pub nameservers: Vec<String>,
    /// This member's id in a replicated group (0-65535, distinct per member): the group then
    /// has a leader chosen by the replication controller and followers that copy its log.
    /// Without it the broker is the group's only, unreplicated member.
    #[arg(long, env = "FERROMQ_REPLICA_ID")]
    pub replica_id: Option<u32>,
    /// When a send is acknowledged in a replicated group: async (the leader wrote it) or sync
    /// (every in-sync member holds it) [default: sync].
    #[arg(long, env = "FERROMQ_REPLICATION")]
    pub replication: Option<String>,
    /// Sends are refused while fewer members are in sync [default: 1].
    #[arg(long, env = "FERROMQ_MIN_IN_SYNC")]
    pub min_in_sync: Option<usize>,
    /// A follower that has not held the whole log for this long leaves the in-sync set
    /// [default: 10s].
    #[arg(long, env = "FERROMQ_REPLICA_LAG")]
    pub replica_lag: Option<String>,
    /// How long a sync send waits for the in-sync members before it is refused [default: 5s].
    #[arg(long, env = "FERROMQ_REPLICATION_TIMEOUT")]
    pub replication_timeout: Option<String>,
    /// The replication controller's peers, comma separated host:port [default: the name
    /// servers, which run it with --controller-peers].
    #[arg(long, env = "FERROMQ_CONTROLLER", value_delimiter = ',')]
    pub controller: Vec<String>,
    /// Kept for older manifests: "leader" is accepted and means nothing; members of a
    /// replicated group take --replica-id and the controller chooses the leader.
    #[arg(long, env = "FERROMQ_ROLE", hide = true)]
    pub role: Option<String>,
    #[command(flatten)]
    pub tls_ca: super::tls::TlsCaArgs,
}

/// How a replicated group's member takes part.
#[derive(Debug, Clone)]
pub struct ReplicationSettings {
    pub replica_id: u32,
    pub mode: crate::replication::Mode,
    pub min_in_sync: usize,
    pub replica_lag: std::time::Duration,
    pub ack_timeout: std::time::Duration,
    /// Where the replication controller answers (the name servers by default).
    pub controller: Vec<String>,
}

/// The cluster half of a broker's configuration.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub group: String,
    pub nameservers: Vec<String>,
    /// Set for a member of a replicated group.
    pub replication: Option<ReplicationSettings>,
    /// How the broker dials name servers, the controller and its group's leader.
    pub link: ferromq_controller::Link,
}

fn duration_field(
    field: &'static str,
    flag: &Option<String>,
    key: Option<String>,
    default: &str,
) -> Result<std::time::Duration, ConfigError> {
    let v = flag.clone().or(key).unwrap_or_else(|| default.to_string());
    super::duration(&v).map_err(|reason| bad(field, reason))
}

impl BrokerArgs {
    /// Reads the file once, refuses keys that are not a broker's, and merges flags, file and
    /// defaults: the storage node's settings, then the cluster ones.
    pub fn resolve(&self) -> Result<(NodeConfig, MemberConfig), ConfigError> {
        let file = ConfigFile::load(self.node.config.as_deref())?;
        FileRole::Broker.check(&file)?;
        let keys: BrokerKeys = file.section()?;
        let mut node = self.node.clone();
        if node.grpc_addr.is_none() {
            node.grpc_addr = Some(
                self.addr
                    .clone()
                    .or(keys.addr)
                    .unwrap_or_else(|| "0.0.0.0:10911".into()),
            );
        }
        // Clients reach a cluster through proxies: a broker serves remoting only when asked.
        let cfg = NodeConfig::resolve_with(&node, &file, None)?;
        let group = self
            .group
            .clone()
            .or(keys.group)
            .ok_or_else(|| bad("group", "a broker needs --group NAME"))?;
        crate::validate::broker_group_name(&group).map_err(|reason| bad("group", reason))?;
        let ns = if self.nameservers.is_empty() {
            keys.nameservers.unwrap_or_default()
        } else {
            self.nameservers.clone()
        };
        let nameservers = nameserver_list("nameservers", ns)?;
        let replica_id = match (self.replica_id, &keys.replica_id) {
            (Some(id), _) => Some(id),
            (None, Some(v)) => Some(count_value("replica-id", v)?),
            (None, None) => None,
        };
        match self.role.clone().or(keys.role).as_deref() {
            None | Some("leader") => {}
            Some("follower") if replica_id.is_some() => {}
            Some("follower") => {
                return Err(bad(
                    "role",
                    "members of a replicated group take --replica-id N; the controller chooses the leader",
                ))
            }
            Some(other) => return Err(bad("role", format!("{other:?} is not leader or follower"))),
        }
        let mode_name = self
            .replication
            .clone()
            .or(keys.replication_mode)
            .unwrap_or_else(|| {
                if replica_id.is_some() {
                    "sync"
                } else {
                    "async"
                }
                .into()
            });
        let mode: crate::replication::Mode = mode_name
            .parse()
            .map_err(|reason| bad("replication-mode", reason))?;
        let replication = match replica_id {
            None if mode == crate::replication::Mode::Sync => {
                return Err(bad(
                    "replication-mode",
                    "sync needs a replicated group: give every member --replica-id N",
                ))
            }
            None => None,
            Some(id) => {
                if id > u32::from(u16::MAX) {
                    return Err(bad("replica-id", format!("{id} is over 65535")));
                }
                let min_in_sync = match (self.min_in_sync, &keys.min_in_sync) {
                    (Some(n), _) => n,
                    (None, Some(v)) => count_value("min-in-sync", v)? as usize,
                    (None, None) => 1,
                };
                if min_in_sync == 0 {
                    return Err(bad("min-in-sync", "must be at least 1 (the leader itself)"));
                }
                let controller = if !self.controller.is_empty() {
                    self.controller.clone()
                } else {
                    keys.controller.unwrap_or_else(|| nameservers.clone())
                };
                Some(ReplicationSettings {
                    replica_id: id,
                    mode,
                    min_in_sync,
                    replica_lag: duration_field(
                        "replica-lag",
                        &self.replica_lag,
                        keys.replica_lag,
                        "10s",
                    )?,
                    ack_timeout: duration_field(
                        "replication-timeout",
                        &self.replication_timeout,
                        keys.replication_timeout,
                        "5s",
                    )?,
                    controller: nameserver_list("controller", controller)?,
                })
            }
        };
        Ok((
            cfg,
            MemberConfig {
                group,
                nameservers,
                replication,
                link: self.tls_ca.resolve(&file)?,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: Option<std::path::PathBuf>) -> BrokerArgs {
        BrokerArgs {
            node: NodeArgs {
                config,
                ..Default::default()
            },
            addr: None,
            group: None,
            nameservers: vec![],
            replica_id: None,
            replication: None,
            min_in_sync: None,
            replica_lag: None,
            replication_timeout: None,
            controller: vec![],
            role: None,
            tls_ca: Default::default(),
        }
    }

    #[test]
    fn one_file_serves_the_node_and_the_cluster_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("broker.toml");
        std::fs::write(
            &f,
            "group = \"g1\"\nnameservers = [\"ns:9876\"]\nflush = \"sync\"\nreplication-mode = \"async\"\n",
        )
        .expect("write");
        let (node, member) = args(Some(f.clone())).resolve().expect("valid");
        assert_eq!(member.group, "g1");
        assert_eq!(member.nameservers, ["ns:9876"]);
        assert_eq!(node.grpc_addr.port(), 10911);
        assert_eq!(node.flush, ferromq_store::FlushMode::Sync);
        std::fs::write(
            &f,
            "group = \"g1\"\nnameservers = [\"ns:9876\"]\nroute-refresh = \"1s\"\n",
        )
        .expect("write");
        let err = args(Some(f)).resolve().expect_err("a proxy key");
        assert!(err.reason.contains("route-refresh"), "{}", err.reason);
    }

    #[test]
    fn followers_without_replica_ids_and_missing_groups_are_refused_by_field() {
        let mut a = args(None);
        assert_eq!(a.resolve().unwrap_err().field, "group");
        a.group = Some("g1".into());
        a.nameservers = vec!["ns:9876".into()];
        a.role = Some("follower".into());
        assert_eq!(a.resolve().unwrap_err().field, "role");
        a.role = None;
        a.replication = Some("sync".into());
        assert_eq!(a.resolve().unwrap_err().field, "replication-mode");
    }

    #[test]
    fn a_replica_id_makes_a_replicated_member_that_asks_the_name_servers_controller() {
        let mut a = args(None);
        a.group = Some("g1".into());
        a.nameservers = vec!["ns1:9876".into(), "ns2:9876".into()];
        a.replica_id = Some(2);
        a.role = Some("follower".into());
        let (_, m) = a.resolve().expect("valid");
        let r = m.replication.expect("replicated");
        assert_eq!(r.replica_id, 2);
        assert_eq!(r.mode, crate::replication::Mode::Sync);
        assert_eq!(r.controller, ["ns1:9876", "ns2:9876"]);
        assert_eq!(r.min_in_sync, 1);
        a.min_in_sync = Some(0);
        assert_eq!(a.resolve().unwrap_err().field, "min-in-sync");
        a.min_in_sync = Some(2);
        a.replica_lag = Some("soon".into());
        assert_eq!(a.resolve().unwrap_err().field, "replica-lag");
        a.replica_lag = None;
        a.replication = Some("quorum".into());
        assert_eq!(a.resolve().unwrap_err().field, "replication-mode");
    }
}
