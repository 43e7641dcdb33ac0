//! Configuration of `ferromq broker`: a storage node ([`super::node`]) that is one member of a
//! broker group in a cluster.

use serde::Deserialize;

use super::node::{NodeArgs, NodeConfig, NodeKeys};
use super::{bad, nameserver_list, ConfigError, ConfigFile, Section};

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
    /// leader (serves clients) or follower (replication, not available in this version).
    #[arg(long, env = "FERROMQ_ROLE", default_value = "leader")]
    pub role: String,
}

/// The broker's own keys of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BrokerKeys {
    addr: Option<String>,
    group: Option<String>,
    nameservers: Option<Vec<String>>,
    role: Option<String>,
    replication_mode: Option<String>,
}

impl Section for BrokerKeys {
    const KEYS: &'static [&'static str] =
        &["addr", "group", "nameservers", "role", "replication-mode"];
}

/// How a group's members copy the log (only `async` exists before replication lands: the
/// leader's own write is the acknowledgement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationMode {
    Async,
}

/// The cluster half of a broker's configuration.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub group: String,
    pub nameservers: Vec<String>,
    pub role: String,
    pub replication: ReplicationMode,
}

impl BrokerArgs {
    /// Reads the file once, refuses keys that are not a broker's, and merges flags, file and
    /// defaults: the storage node's settings, then the cluster ones.
    pub fn resolve(&self) -> Result<(NodeConfig, MemberConfig), ConfigError> {
        let file = ConfigFile::load(self.node.config.as_deref())?;
        file.only("a broker", &[NodeKeys::KEYS, BrokerKeys::KEYS])?;
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
        let role = if self.role != "leader" {
            self.role.clone()
        } else {
            keys.role.unwrap_or_else(|| self.role.clone())
        };
        match role.as_str() {
            "leader" => {}
            "follower" => return Err(bad(
                "role",
                "followers (replication inside a group) are not available in this version; run one replica per broker group",
            )),
            other => return Err(bad("role", format!("{other:?} is not leader or follower"))),
        }
        let replication = match keys.replication_mode.as_deref().unwrap_or("async") {
            "async" => ReplicationMode::Async,
            other => {
                return Err(bad(
                    "replication-mode",
                    format!(
                    "{other:?}: only async is available in this version (one replica per group)"
                ),
                ))
            }
        };
        Ok((
            cfg,
            MemberConfig {
                group,
                nameservers,
                role,
                replication,
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
            role: "leader".into(),
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
    fn followers_and_missing_groups_are_refused_by_field() {
        let mut a = args(None);
        assert_eq!(a.resolve().unwrap_err().field, "group");
        a.group = Some("g1".into());
        a.nameservers = vec!["ns:9876".into()];
        a.role = "follower".into();
        assert_eq!(a.resolve().unwrap_err().field, "role");
    }
}
