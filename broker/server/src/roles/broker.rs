//! `ferromq broker`: one broker group's storage node in a cluster.
//!
//! It is a storage node ([`super::node`]) listening on the internal address, plus membership:
//! it reports itself to every name server once a second (endpoint, drain state, topics and
//! unsettled messages) and says goodbye on a clean shutdown. Proxies find it through those
//! reports and forward client requests to it.

use std::sync::Arc;
use std::time::Duration;

use ferromq_proto::cluster::{self, nameserver_client::NameserverClient};
use tracing::{info, warn};

use crate::config::broker::MemberConfig;
use crate::node::Node;

/// What this broker tells the name servers about itself.
/// `lead` is the epoch and replica id of a replicated group's leader.
fn report(b: &Node, lead: Option<(u64, u32)>) -> cluster::BrokerInfo {
    let topics = b.engine.store.topics().list();
    let me = crate::admin::service::self_view_of(b, &topics);
    cluster::BrokerInfo {
        group: me.name,
        endpoint: me.endpoint,
        state: if b.engine.membership.is_read_only() {
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
        role: "leader".to_string(),
        queues_with_lag: me.queues_with_lag,
        epoch: lead.map_or(0, |l| l.0),
        replica_id: lead.map_or(0, |l| l.1),
    }
}

fn channel(link: &ferromq_controller::Link, addr: &str) -> Option<tonic::transport::Channel> {
    link.endpoint(addr).ok().map(|e| {
        e.connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .connect_lazy()
    })
}

/// Reports to every name server once per interval until the node's shutdown (for a replicated
/// group's leader: the end of its term), then unregisters.
pub async fn heartbeat_loop(node: Arc<Node>, member: MemberConfig, lead: Option<(u64, u32)>) {
    let stopped = crate::serve::stopped(node.shutdown.clone());
    tokio::pin!(stopped);
    let clients: Vec<(String, Option<NameserverClient<tonic::transport::Channel>>)> = member
        .nameservers
        .iter()
        .map(|ns| {
            (
                ns.clone(),
                channel(&member.link, ns).map(NameserverClient::new),
            )
        })
        .collect();
    // Logged on each change only: a name server down (or refusing our TLS) is said once per
    // outage, with its cause, not at every heartbeat.
    let mut healthy = vec![None::<Result<(), String>>; clients.len()];
    let mut tick = tokio::time::interval(super::nameserver::HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stopped => break,
        }
        let b = node.clone();
        let Ok(info) = tokio::task::spawn_blocking(move || report(&b, lead)).await else {
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
                    .map_err(|e| ferromq_controller::describe(&e))
            }
        });
        let results = futures_util::future::join_all(sends).await;
        for (i, r) in results.into_iter().enumerate() {
            if healthy[i].as_ref() != Some(&r) {
                match &r {
                    Ok(()) => {
                        info!(nameserver = %clients[i].0, group = %member.group, link = %member.link, "reporting to name server")
                    }
                    Err(e) => {
                        warn!(nameserver = %clients[i].0, group = %member.group, error = %e, "name server unreachable; will keep trying")
                    }
                }
                healthy[i] = Some(r);
            }
        }
    }
    let endpoint = node.settings.advertise_addr.clone();
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

/// Runs a broker group member until SIGTERM or Ctrl-C.
pub async fn run(cfg: crate::config::node::NodeConfig, member: MemberConfig) -> anyhow::Result<()> {
    if member.replication.is_some() {
        return super::member::run(cfg, member).await;
    }
    super::node::run(cfg, Some(member)).await
}
