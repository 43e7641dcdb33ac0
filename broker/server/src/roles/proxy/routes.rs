//! A proxy's picture of the cluster: which broker groups are alive, where they listen, whether
//! they take new messages and which topics they hold.
//!
//! Refreshed from every name server once per interval. The answers are merged (the freshest
//! report of each group wins), so one name server being down or restarted changes nothing; if
//! none answers, the last picture is kept and the proxy goes on serving with it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferromq_controller::Link;
use ferromq_proto::admin::admin_client::AdminClient;
use ferromq_proto::cluster::{self, nameserver_client::NameserverClient, GroupState};
use ferromq_proto::v2::messaging_service_client::MessagingServiceClient;
use parking_lot::{Mutex, RwLock};
use tonic::transport::Channel;
use tracing::{info, warn};

/// The admin client of one broker group.
pub type GroupAdmin = AdminClient<
    tonic::service::interceptor::InterceptedService<Channel, super::credentials::Forward>,
>;

/// One topic as one group holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicAtGroup {
    pub queues: u32,
    pub message_type: i32,
    pub permission: i32,
}

impl TopicAtGroup {
    pub fn writable(&self) -> bool {
        crate::admin::service::permission_from_number(self.permission).writable()
    }
}

/// One live broker group.
#[derive(Debug, Clone)]
pub struct GroupRoute {
    pub name: String,
    pub endpoint: String,
    pub read_only: bool,
    /// Shared: a request that picks a group takes a copy of its route, and a copy of every
    /// topic's entry cost a receive through the proxy a sixth of its CPU with 1 000 topics.
    pub topics: Arc<BTreeMap<String, TopicAtGroup>>,
    pub total_lag: i64,
    pub queues_with_lag: u32,
    pub age_ms: i64,
    /// The leader epoch of a replicated group (0: unreplicated).
    pub epoch: u64,
}

/// The live groups, sorted by name.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub groups: Vec<GroupRoute>,
}

impl ClusterView {
    pub fn group(&self, name: &str) -> Option<&GroupRoute> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Groups holding `topic`.
    pub fn holding<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a GroupRoute> + 'a {
        self.groups
            .iter()
            .filter(move |g| g.topics.contains_key(topic))
    }

    /// Groups a new message for `topic` may go to: not draining and holding the topic writable.
    /// When no group holds the topic yet (just created, or auto-creation), every writable group.
    pub fn writable_for(&self, topic: &str) -> Vec<&GroupRoute> {
        let holding: Vec<&GroupRoute> = self
            .groups
            .iter()
            .filter(|g| !g.read_only && g.topics.get(topic).is_some_and(|t| t.writable()))
            .collect();
        if !holding.is_empty() || self.holding(topic).next().is_some() {
            return holding;
        }
        self.groups.iter().filter(|g| !g.read_only).collect()
    }
}

fn merge(reports: Vec<cluster::GetClusterResponse>) -> ClusterView {
    let mut best: HashMap<String, (cluster::BrokerInfo, i64)> = HashMap::new();
    for r in reports {
        for (i, b) in r.brokers.into_iter().enumerate() {
            let age = r.age_ms.get(i).copied().unwrap_or(0);
            match best.get(&b.group) {
                // The newest leader epoch wins (replicated groups), then the newest report.
                Some((cur, _))
                    if (cur.epoch, cur.reported_at_ms) >= (b.epoch, b.reported_at_ms) => {}
                _ => {
                    best.insert(b.group.clone(), (b, age));
                }
            }
        }
    }
    let mut groups: Vec<GroupRoute> = best
        .into_values()
        .map(|(b, age)| GroupRoute {
            read_only: b.state == GroupState::ReadOnly as i32,
            topics: b
                .topics
                .into_iter()
                .map(|t| {
                    (
                        t.name,
                        TopicAtGroup {
                            queues: t.queues,
                            message_type: t.message_type,
                            permission: t.permission,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>()
                .into(),
            name: b.group,
            endpoint: b.endpoint,
            epoch: b.epoch,
            total_lag: b.total_lag,
            queues_with_lag: b.queues_with_lag,
            age_ms: age,
        })
        .collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    ClusterView { groups }
}

/// The route cache and the connections to broker groups.
pub struct Routes {
    nameservers: Vec<(String, NameserverClient<Channel>)>,
    /// The last failure of each name server that is failing: a failure is logged when it
    /// starts or its cause changes, not at every refresh.
    unanswered: Mutex<HashMap<String, String>>,
    /// How name servers, the controller and brokers are dialled.
    link: Link,
    /// Broker endpoints the proxy cannot connect to, with the cause: logged when the failure
    /// starts or its cause changes, not for every request that meets it.
    unreachable_brokers: Mutex<HashMap<String, String>>,
    /// Whether `unreachable_brokers` holds anything: successful calls skip its lock.
    any_unreachable: std::sync::atomic::AtomicBool,
    view: RwLock<Arc<ClusterView>>,
    channels: Mutex<HashMap<String, Vec<Channel>>>,
    /// The send gatherer of each endpoint, over its pooled connections.
    batchers: Mutex<HashMap<String, Arc<super::batch::Batcher>>>,
    max_message: usize,
    next: AtomicUsize,
    /// Separate from `next`: sharing one counter made every second pick land on the same group.
    next_connection: AtomicUsize,
}

/// Connections a proxy keeps to each broker group: one HTTP/2 connection is driven by one task,
/// so several spread the framing work over the cores.
const CONNECTIONS_PER_GROUP: usize = 4;

fn lazy_channel(link: &Link, addr: &str) -> Result<Channel, String> {
    link.endpoint(addr)
        .map(|e| {
            crate::serve::bulk_channel(e)
                .connect_timeout(Duration::from_secs(2))
                .http2_keep_alive_interval(Duration::from_secs(30))
                .connect_with_connector_lazy(crate::coalesce::Connector::default())
        })
        .map_err(|e| format!("{addr:?} is not a usable address: {e}"))
}

impl Routes {
    pub fn new(nameservers: &[String], max_message: usize, link: Link) -> Result<Routes, String> {
        let mut ns = Vec::new();
        for a in nameservers {
            ns.push((a.clone(), NameserverClient::new(lazy_channel(&link, a)?)));
        }
        Ok(Routes {
            nameservers: ns,
            unanswered: Mutex::new(HashMap::new()),
            link,
            unreachable_brokers: Mutex::new(HashMap::new()),
            any_unreachable: std::sync::atomic::AtomicBool::new(false),
            view: RwLock::new(Arc::new(ClusterView::default())),
            channels: Mutex::new(HashMap::new()),
            batchers: Mutex::new(HashMap::new()),
            max_message,
            next: AtomicUsize::new(0),
            next_connection: AtomicUsize::new(0),
        })
    }

    /// How internal links are dialled.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Logs a name server's failure when it starts or its cause changes, and its recovery.
    fn note(&self, addr: &str, failure: Option<String>) {
        let mut m = self.unanswered.lock();
        match failure {
            Some(cause) if m.get(addr) != Some(&cause) => {
                warn!(nameserver = %addr, error = %cause, "name server did not answer; retrying");
                m.insert(addr.to_string(), cause);
            }
            Some(_) => {}
            None => {
                if m.remove(addr).is_some() {
                    info!(nameserver = %addr, "name server answers again");
                }
            }
        }
    }

    /// Logs a failed call to group `g`: a connection failure (refused, TLS refused) once per
    /// outage of its endpoint and cause, anything else every time, as `what`.
    pub fn broker_failed(&self, g: &GroupRoute, e: &tonic::Status, what: &str) {
        let cause = ferromq_controller::describe(e);
        let connection =
            e.code() == tonic::Code::Unavailable && std::error::Error::source(e).is_some();
        if !connection {
            warn!(group = %g.name, error = %cause, "{what}");
            return;
        }
        let mut m = self.unreachable_brokers.lock();
        if m.get(&g.endpoint) != Some(&cause) {
            warn!(group = %g.name, endpoint = %g.endpoint, error = %cause, "cannot connect to broker group; retrying with the next request");
            m.insert(g.endpoint.clone(), cause);
            self.any_unreachable.store(true, Ordering::Relaxed);
        }
    }

    /// A call to group `g` succeeded: logs its endpoint's recovery, if it was failing.
    pub fn broker_ok(&self, g: &GroupRoute) {
        if !self.any_unreachable.load(Ordering::Relaxed) {
            return;
        }
        let mut m = self.unreachable_brokers.lock();
        if m.remove(&g.endpoint).is_some() {
            info!(group = %g.name, endpoint = %g.endpoint, "broker group reachable again");
        }
        self.any_unreachable.store(!m.is_empty(), Ordering::Relaxed);
    }

    /// The name servers' addresses (they also run the replication controller, if any).
    pub fn nameserver_addrs(&self) -> Vec<String> {
        self.nameservers.iter().map(|(a, _)| a.clone()).collect()
    }

    pub fn view(&self) -> Arc<ClusterView> {
        self.view.read().clone()
    }

    /// A rotating number for round-robin choices.
    pub fn next(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Asks every name server; keeps the old picture when none answers. Returns how many did.
    pub async fn refresh(&self) -> usize {
        let asks = self.nameservers.iter().map(|(addr, c)| {
            let mut c = c.clone();
            async move {
                let r = tokio::time::timeout(
                    Duration::from_secs(2),
                    c.get_cluster(cluster::GetClusterRequest {}),
                )
                .await;
                match r {
                    Ok(Ok(r)) => {
                        self.note(addr, None);
                        Some(r.into_inner())
                    }
                    Ok(Err(e)) => {
                        self.note(addr, Some(ferromq_controller::describe(&e)));
                        None
                    }
                    Err(_) => {
                        self.note(addr, Some("no answer within 2s".into()));
                        None
                    }
                }
            }
        });
        let answers: Vec<_> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        if answers.is_empty() {
            return 0;
        }
        let n = answers.len();
        let fresh = merge(answers);
        let old = self.view();
        let names = |v: &ClusterView| {
            v.groups
                .iter()
                .map(|g| (g.name.clone(), g.endpoint.clone(), g.read_only))
                .collect::<Vec<_>>()
        };
        if names(&old) != names(&fresh) {
            info!(groups = ?names(&fresh), "cluster membership changed");
        }
        *self.view.write() = Arc::new(fresh);
        n
    }

    /// After `failed` (a replicated group's member) refused or could not be reached: asks the
    /// name servers again until the group reports a newer leader, up to `deadline`. Unreplicated
    /// groups have no other member to wait for.
    pub async fn newer_leader(
        &self,
        failed: &GroupRoute,
        deadline: std::time::Instant,
    ) -> Option<GroupRoute> {
        if failed.epoch == 0 {
            return None;
        }
        loop {
            let newer = self.view().group(&failed.name).and_then(|g| {
                (g.epoch > failed.epoch
                    || (g.epoch == failed.epoch && g.endpoint != failed.endpoint))
                    .then(|| g.clone())
            });
            if newer.is_some() {
                return newer;
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.refresh().await;
        }
    }

    /// Refreshes until shutdown; warns once when every name server is unreachable.
    pub async fn refresh_loop(
        self: Arc<Self>,
        every: Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let stopped = crate::serve::stopped(shutdown);
        tokio::pin!(stopped);
        let mut blind = false;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stopped => return,
            }
            let answered = self.refresh().await;
            if answered == 0 && !blind {
                warn!("no name server answers; serving with the last known routes");
            } else if answered > 0 && blind {
                info!("name servers answer again");
            }
            blind = answered == 0;
        }
    }

    fn channel(&self, endpoint: &str) -> Result<Channel, String> {
        let pick = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let pool = self.pool(endpoint)?;
        Ok(pool[pick % pool.len()].clone())
    }

    /// The pooled connections to an endpoint (made on first use, connected lazily).
    fn pool(&self, endpoint: &str) -> Result<Vec<Channel>, String> {
        let mut m = self.channels.lock();
        if let Some(pool) = m.get(endpoint) {
            return Ok(pool.clone());
        }
        let pool = (0..CONNECTIONS_PER_GROUP)
            .map(|_| lazy_channel(&self.link, endpoint))
            .collect::<Result<Vec<_>, _>>()?;
        m.insert(endpoint.to_string(), pool.clone());
        Ok(pool)
    }

    /// The send gatherer of a group's endpoint ([`super::batch`]).
    pub fn batcher(
        &self,
        g: &GroupRoute,
        metrics: &Arc<crate::metrics::Metrics>,
    ) -> Result<Arc<super::batch::Batcher>, String> {
        if let Some(b) = self.batchers.lock().get(&g.endpoint) {
            return Ok(b.clone());
        }
        let pool = self.pool(&g.endpoint)?;
        let mut m = self.batchers.lock();
        let b = m.entry(g.endpoint.clone()).or_insert_with(|| {
            Arc::new(super::batch::Batcher::start(
                &g.endpoint,
                pool,
                metrics.clone(),
            ))
        });
        Ok(b.clone())
    }

    pub fn messaging(&self, g: &GroupRoute) -> Result<MessagingServiceClient<Channel>, String> {
        Ok(MessagingServiceClient::new(self.channel(&g.endpoint)?)
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message))
    }

    /// A client that forwards encoded requests to the group as they are ([`super::raw`]).
    pub fn raw(&self, g: &GroupRoute) -> Result<super::raw::RawClient, String> {
        Ok(tonic::client::Grpc::new(self.channel(&g.endpoint)?)
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message))
    }

    /// A client of the group's remoting tunnel (the proxy's remoting port forwards through it).
    pub fn tunnel(
        &self,
        g: &GroupRoute,
    ) -> Result<ferromq_proto::tunnel::tunnel_client::TunnelClient<Channel>, String> {
        Ok(
            ferromq_proto::tunnel::tunnel_client::TunnelClient::new(self.channel(&g.endpoint)?)
                .max_decoding_message_size(self.max_message)
                .max_encoding_message_size(self.max_message),
        )
    }

    /// An admin client for a group; its calls carry the current admin call's credentials
    /// ([`super::credentials`]).
    pub fn admin(&self, g: &GroupRoute) -> Result<GroupAdmin, String> {
        Ok(
            AdminClient::with_interceptor(self.channel(&g.endpoint)?, super::credentials::Forward)
                .max_decoding_message_size(self.max_message)
                .max_encoding_message_size(self.max_message),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(group: &str, at: i64, ro: bool, topics: &[&str]) -> cluster::BrokerInfo {
        cluster::BrokerInfo {
            group: group.into(),
            endpoint: format!("{group}:1"),
            state: if ro {
                GroupState::ReadOnly as i32
            } else {
                GroupState::ReadWrite as i32
            },
            topics: topics
                .iter()
                .map(|t| cluster::TopicRoute {
                    name: t.to_string(),
                    queues: 4,
                    message_type: 1,
                    permission: 3,
                })
                .collect(),
            reported_at_ms: at,
            ..Default::default()
        }
    }

    #[test]
    fn the_freshest_report_of_each_group_wins() {
        let a = cluster::GetClusterResponse {
            brokers: vec![report("g1", 10, false, &["t"]), report("g2", 5, false, &[])],
            age_ms: vec![0, 0],
        };
        let b = cluster::GetClusterResponse {
            brokers: vec![report("g1", 20, true, &["t"])],
            age_ms: vec![0],
        };
        let v = merge(vec![a, b]);
        assert_eq!(v.groups.len(), 2);
        assert!(v.group("g1").is_some_and(|g| g.read_only));
        // g1 is draining and g2 does not hold t: nothing may take a new message for t.
        assert!(v.writable_for("t").is_empty());
        // An unknown topic may go to any writable group (it may be auto-created there).
        assert_eq!(v.writable_for("new").len(), 1);
    }

    #[test]
    fn a_copy_of_a_route_shares_its_topics() {
        let names: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let v = merge(vec![cluster::GetClusterResponse {
            brokers: vec![report("g1", 10, false, &names)],
            age_ms: vec![0],
        }]);
        let g = v.group("g1").expect("g1");
        assert_eq!(g.topics.len(), 1000);
        let copy = g.clone();
        assert!(
            Arc::ptr_eq(&g.topics, &copy.topics),
            "a request's copy is not a deep one"
        );
    }
}
