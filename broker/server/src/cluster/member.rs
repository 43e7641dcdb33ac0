//! `ferromq broker`: one broker group's storage node in a cluster.
//!
//! It is the standalone server (store, delivery, admin) listening on the internal address, plus
//! membership: it reports itself to every name server once a second (endpoint, drain state,
//! topics and unsettled messages) and says goodbye on a clean shutdown. Proxies find it through
//! those reports and forward client requests to it.

use std::sync::Arc;
use std::time::Duration;

use ferromq_proto::cluster::{self, nameserver_client::NameserverClient};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::config::{ConfigError, StandaloneArgs, StandaloneConfig};

/// Flags of `ferromq broker`: the standalone flags plus the cluster ones.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    #[command(flatten)]
    pub server: StandaloneArgs,
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

/// The cluster half of a broker's configuration.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub group: String,
    pub nameservers: Vec<String>,
    pub role: String,
}

/// Keys of the TOML file that only the cluster roles read (the standalone ignores them).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterFileKeys {
    addr: Option<String>,
    group: Option<String>,
    nameservers: Option<Vec<String>>,
    role: Option<String>,
}

fn file_keys(path: Option<&std::path::Path>) -> Result<ClusterFileKeys, ConfigError> {
    let Some(path) = path else {
        return Ok(ClusterFileKeys::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        field: "config",
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError {
        field: "config",
        reason: format!("{}: {}", path.display(), e.to_string().trim()),
    })
}

/// Checks a list of name server addresses (`host:port` each, at least one).
pub fn nameserver_list(field: &'static str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = list
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() {
        return Err(ConfigError {
            field,
            reason: "at least one name server (host:port) is required".into(),
        });
    }
    for ns in &list {
        let ok = ns
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err(ConfigError {
                field,
                reason: format!("{ns:?} is not host:port"),
            });
        }
    }
    Ok(list)
}

impl BrokerArgs {
    /// Merges flags, file and defaults like the standalone, then the cluster keys.
    pub fn resolve(&self) -> Result<(StandaloneConfig, MemberConfig), ConfigError> {
        let keys = file_keys(self.server.config.as_deref())?;
        let mut server = self.server.clone();
        if let Some(a) = self.addr.clone().or(keys.addr) {
            if server.grpc_addr.is_none() {
                server.grpc_addr = Some(a);
            }
        }
        if server.grpc_addr.is_none() {
            server.grpc_addr = Some("0.0.0.0:10911".into());
        }
        let cfg = StandaloneConfig::resolve(&server)?;
        let group = self.group.clone().or(keys.group).ok_or(ConfigError {
            field: "group",
            reason: "a broker needs --group NAME".into(),
        })?;
        crate::validate::broker_group_name(&group).map_err(|reason| ConfigError {
            field: "group",
            reason,
        })?;
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
            "follower" => {
                return Err(ConfigError {
                    field: "role",
                    reason: "followers (replication inside a group) are not available in this version; run one replica per broker group".into(),
                })
            }
            other => {
                return Err(ConfigError {
                    field: "role",
                    reason: format!("{other:?} is not leader or follower"),
                })
            }
        }
        Ok((
            cfg,
            MemberConfig {
                group,
                nameservers,
                role,
            },
        ))
    }
}

/// What this broker tells the name servers about itself.
fn report(b: &Broker, role: &str) -> cluster::BrokerInfo {
    let topics = b.store.topics().list();
    let me = crate::admin::service::self_view_of(b, &topics);
    cluster::BrokerInfo {
        group: me.name,
        endpoint: me.endpoint,
        state: if b.membership.is_read_only() {
            cluster::GroupState::ReadOnly as i32
        } else {
            cluster::GroupState::ReadWrite as i32
        },
        topics: topics
            .into_iter()
            .map(|t| cluster::TopicRoute {
                queues: t.queues,
                message_type: crate::admin::service::type_number(t.message_type),
                permission: crate::admin::service::permission_number(t.permission),
                name: t.name,
            })
            .collect(),
        total_lag: me.total_lag,
        reported_at_ms: crate::convert::now_ms(),
        role: role.to_string(),
        queues_with_lag: me.queues_with_lag,
    }
}

fn channel(addr: &str) -> Option<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()
        .map(|e| {
            e.connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(2))
                .connect_lazy()
        })
}

/// Reports to every name server once per interval until shutdown, then unregisters.
pub async fn heartbeat_loop(
    broker: Arc<Broker>,
    member: MemberConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let clients: Vec<(String, Option<NameserverClient<tonic::transport::Channel>>)> = member
        .nameservers
        .iter()
        .map(|ns| (ns.clone(), channel(ns).map(NameserverClient::new)))
        .collect();
    let mut healthy = vec![None::<bool>; clients.len()];
    let mut tick = tokio::time::interval(crate::cluster::nameserver::HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|v| *v) => break,
        }
        let b = broker.clone();
        let role = member.role.clone();
        let Ok(info) = tokio::task::spawn_blocking(move || report(&b, &role)).await else {
            continue;
        };
        let sends = clients.iter().map(|(ns, c)| {
            let info = info.clone();
            async move {
                let Some(c) = c else {
                    return Err(format!("{ns} is not a valid address"));
                };
                c.clone()
                    .heartbeat(cluster::HeartbeatRequest { broker: Some(info) })
                    .await
                    .map(|_| ())
                    .map_err(|e| e.message().to_string())
            }
        });
        let results = futures_util::future::join_all(sends).await;
        for (i, r) in results.into_iter().enumerate() {
            let ok = r.is_ok();
            if healthy[i] != Some(ok) {
                match &r {
                    Ok(()) => {
                        info!(nameserver = %clients[i].0, group = %member.group, "reporting to name server")
                    }
                    Err(e) => {
                        warn!(nameserver = %clients[i].0, group = %member.group, error = %e, "name server unreachable; will keep trying")
                    }
                }
                healthy[i] = Some(ok);
            }
        }
    }
    let endpoint = broker.cfg.advertise_addr.clone();
    let byes = clients.iter().filter_map(|(_, c)| c.clone()).map(|mut c| {
        let req = cluster::UnregisterRequest {
            group: member.group.clone(),
            endpoint: endpoint.clone(),
        };
        async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), c.unregister(req)).await;
        }
    });
    futures_util::future::join_all(byes).await;
    info!(group = %member.group, "unregistered from the name servers");
}
