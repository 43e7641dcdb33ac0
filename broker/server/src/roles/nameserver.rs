//! `ferromq nameserver`: the route registry of a cluster.
//!
//! Every broker group reports itself (endpoint, state, topics, lag) to every name server once
//! per heartbeat interval; proxies ask any name server for the live set. A group whose last
//! report is older than the expiry is left out of answers, so a dead broker stops receiving
//! traffic within `expiry + proxy refresh`. Name servers never talk to each other and keep
//! everything in memory: one that restarts is whole again after a single heartbeat round, and
//! losing one loses nothing.
//!
//! The gRPC port takes TLS beside plaintext by default, as the other roles' (`--tls`,
//! `--tls-cert`, `--tls-key`); with `--tls-ca` the controller dials its Raft peers in TLS.
//!
//! With `--controller-peers` the name server also runs one peer of the replication controller
//! (`ferromq-controller`): its Raft and Controller gRPC services on the same port, its
//! election loop among the background tasks, its state under `--data-dir`. `/readyz` then
//! waits until the peer knows a Raft leader, and `/metrics` adds the `ferromq_controller_*`
//! families.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use ferromq_proto::cluster::{
    self, nameserver_server::Nameserver, nameserver_server::NameserverServer, BrokerInfo,
};
use parking_lot::{Mutex, MutexGuard};
use tokio::task::JoinSet;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use ferromq_controller::Controller;

use crate::config::nameserver::NameserverConfig;
use crate::metrics::{Family, Identity, Metrics, NodeType};
use crate::serve::{self, Listeners, Services, Shutdown};

/// How often brokers are asked to report, and the default expiry (three missed reports).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
struct Entry {
    info: BrokerInfo,
    seen: Instant,
}

/// The registry: the latest report of each (group, endpoint).
#[derive(Debug)]
pub struct Registry {
    entries: Mutex<HashMap<(String, String), Entry>>,
    expiry: Duration,
}

impl Registry {
    pub fn new(expiry: Duration) -> Registry {
        Registry {
            entries: Mutex::new(HashMap::new()),
            expiry,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.entries.lock()
    }

    /// Records a report; says whether the group is new to this name server.
    pub fn report(&self, info: BrokerInfo) -> bool {
        let key = (info.group.clone(), info.endpoint.clone());
        let mut m = self.lock();
        // A replicated group's new leader: the members that led older epochs no longer do,
        // even when they could not say goodbye (killed).
        if info.epoch > 0 {
            m.retain(|(g, ep), e| {
                let deposed = *g == info.group && *ep != info.endpoint && e.info.epoch < info.epoch;
                if deposed {
                    info!(group = %g, endpoint = %ep, epoch = e.info.epoch, new_epoch = info.epoch, "broker group leader replaced");
                }
                !deposed
            });
            if m.iter()
                .any(|((g, _), e)| *g == info.group && e.info.epoch > info.epoch)
            {
                // A deposed leader's late report: the group has a newer leader.
                return false;
            }
        }
        let fresh = m.get(&key).is_none_or(|e| e.seen.elapsed() > self.expiry);
        m.insert(
            key,
            Entry {
                info,
                seen: Instant::now(),
            },
        );
        fresh
    }

    pub fn remove(&self, group: &str, endpoint: &str) -> bool {
        self.lock()
            .remove(&(group.to_string(), endpoint.to_string()))
            .is_some()
    }

    /// Live groups (sorted by name), dropping expired entries as a side effect.
    pub fn live(&self) -> Vec<(BrokerInfo, Duration)> {
        let mut m = self.lock();
        let expiry = self.expiry;
        m.retain(|(g, ep), e| {
            let keep = e.seen.elapsed() <= expiry;
            if !keep {
                warn!(group = %g, endpoint = %ep, "broker group missed its heartbeats; removed from routes");
            }
            keep
        });
        let mut out: Vec<_> = m
            .values()
            .map(|e| (e.info.clone(), e.seen.elapsed()))
            .collect();
        out.sort_by(|a, b| (&a.0.group, &a.0.endpoint).cmp(&(&b.0.group, &b.0.endpoint)));
        out
    }
}

struct NameserverApi {
    registry: Arc<Registry>,
}

#[tonic::async_trait]
impl Nameserver for NameserverApi {
    #[tracing::instrument(skip_all, name = "ns.heartbeat")]
    async fn heartbeat(
        &self,
        req: Request<cluster::HeartbeatRequest>,
    ) -> Result<Response<cluster::HeartbeatResponse>, Status> {
        let info = req
            .into_inner()
            .broker
            .ok_or_else(|| Status::invalid_argument("broker is required"))?;
        crate::validate::broker_group_name(&info.group).map_err(Status::invalid_argument)?;
        if info.endpoint.rsplit_once(':').is_none() {
            return Err(Status::invalid_argument(format!(
                "endpoint {:?} is not host:port",
                info.endpoint
            )));
        }
        let (group, endpoint) = (info.group.clone(), info.endpoint.clone());
        if self.registry.report(info) {
            info!(%group, %endpoint, "broker group registered");
        }
        Ok(Response::new(cluster::HeartbeatResponse {
            interval_ms: HEARTBEAT_INTERVAL.as_millis() as i64,
        }))
    }

    #[tracing::instrument(skip_all, name = "ns.unregister")]
    async fn unregister(
        &self,
        req: Request<cluster::UnregisterRequest>,
    ) -> Result<Response<cluster::UnregisterResponse>, Status> {
        let r = req.into_inner();
        if self.registry.remove(&r.group, &r.endpoint) {
            info!(group = %r.group, endpoint = %r.endpoint, "broker group unregistered");
        }
        Ok(Response::new(cluster::UnregisterResponse {}))
    }

    #[tracing::instrument(skip_all, name = "ns.get_cluster")]
    async fn get_cluster(
        &self,
        _req: Request<cluster::GetClusterRequest>,
    ) -> Result<Response<cluster::GetClusterResponse>, Status> {
        let live = self.registry.live();
        Ok(Response::new(cluster::GetClusterResponse {
            age_ms: live.iter().map(|(_, a)| a.as_millis() as i64).collect(),
            brokers: live.into_iter().map(|(b, _)| b).collect(),
        }))
    }
}

/// What the HTTP endpoint reads.
#[derive(Clone)]
struct HttpState {
    registry: Arc<Registry>,
    controller: Option<Arc<Controller>>,
    connections: Arc<crate::connections::Connections>,
    metrics: Arc<Metrics>,
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    match &s.controller {
        Some(c) if !c.is_ready() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the controller has not joined Raft (no leader known)\n",
        ),
        _ => (StatusCode::OK, "ready\n"),
    }
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let live = s.registry.live();
    let mut families = vec![
        crate::metrics::build_info(),
        Family::gauge(
            "ferromq_nameserver_broker_groups",
            "Broker groups with a live heartbeat.",
        )
        .value(live.len()),
    ];
    if let Some(c) = &s.controller {
        let m = c.metrics();
        let per_group = |name, help, f: fn(&(String, u64, usize)) -> u64| {
            let mut fam = Family::gauge(name, help);
            for g in &m.groups {
                fam.push(vec![("group", g.0.clone())], f(g));
            }
            fam
        };
        let mut elections = Family::counter(
            "ferromq_controller_elections_total",
            "Group leader elections made by this controller while it led, by kind.",
        );
        for (k, n) in &m.elections {
            elections.push(vec![("kind", k.to_string())], *n);
        }
        families.extend([
            Family::gauge(
                "ferromq_controller_is_leader",
                "1 on the replication controller's Raft leader.",
            )
            .value(m.is_leader),
            Family::gauge(
                "ferromq_controller_groups",
                "Replicated broker groups the controller holds.",
            )
            .value(m.groups.len()),
            per_group(
                "ferromq_controller_group_epoch",
                "Leader epoch of each replicated broker group.",
                |g| g.1,
            ),
            per_group(
                "ferromq_controller_in_sync_members",
                "Members in the in-sync set of each replicated broker group.",
                |g| g.2 as u64,
            ),
            elections,
        ]);
    }
    families.extend(s.connections.families());
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        s.metrics.render(families),
    )
}

/// A name server with its listeners bound.
pub struct Bound {
    cfg: NameserverConfig,
    listeners: Listeners,
}

/// Binds the name server's listeners.
pub async fn bind(cfg: NameserverConfig) -> anyhow::Result<Bound> {
    let listeners = Listeners::bind(cfg.addr, cfg.http_addr, "addr", &cfg.limits).await?;
    Ok(Bound { cfg, listeners })
}

impl Bound {
    pub fn addr(&self) -> SocketAddr {
        self.listeners.grpc_addr()
    }

    /// Serves until `stop` resolves.
    pub async fn run(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let registry = Arc::new(Registry::new(self.cfg.broker_expiry));
        let shutdown = Shutdown::default();
        let mut background = JoinSet::new();
        let mut grpc = Services::grpc_builder(&self.cfg.limits).add_service(NameserverServer::new(
            NameserverApi {
                registry: registry.clone(),
            },
        ));
        let controller = match self.cfg.controller.clone() {
            Some(cfg) => {
                let c = Controller::start(cfg).await?;
                let (raft, api) = ferromq_controller::services(&c);
                grpc = grpc.add_service(raft).add_service(api);
                background.spawn(c.clone().run(serve::stopped(shutdown.subscribe())));
                Some(c)
            }
            None => None,
        };
        let router = axum::Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(HttpState {
                registry,
                controller: controller.clone(),
                connections: self.listeners.connections.clone(),
                metrics: Arc::new(Metrics::new(Identity::new(NodeType::Nameserver, None))),
            });
        info!(grpc = %self.listeners.grpc_addr(), http = %self.listeners.http_addr(), expiry = ?self.cfg.broker_expiry, controller = controller.is_some(), controller_links = %self.cfg.link, "ferromq nameserver ready");
        let services = Services {
            tcp: Vec::new(),
            grpc,
            http: router,
            tls: self.cfg.tls.clone(),
            background,
            drain: Duration::from_secs(5),
            on_stop: None,
        };
        serve::run(self.listeners, services, &shutdown, stop).await?;
        info!("nameserver stopped");
        Ok(())
    }
}

/// Runs the name server until SIGTERM or Ctrl-C.
pub async fn run(cfg: NameserverConfig) -> anyhow::Result<()> {
    bind(cfg).await?.run(serve::signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(group: &str) -> BrokerInfo {
        BrokerInfo {
            group: group.into(),
            endpoint: "127.0.0.1:1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_replicated_groups_new_leader_replaces_the_old_one() {
        let r = Registry::new(Duration::from_secs(60));
        let at = |ep: &str, epoch: u64| BrokerInfo {
            endpoint: ep.into(),
            epoch,
            ..info("g")
        };
        r.report(at("a:1", 1));
        r.report(info("other"));
        r.report(at("b:1", 2));
        let live: Vec<_> = r.live().into_iter().map(|(b, _)| b.endpoint).collect();
        assert_eq!(live, ["b:1", "127.0.0.1:1"]);
        assert!(!r.report(at("a:1", 1)), "the deposed leader's late report");
        let live: Vec<_> = r.live().into_iter().map(|(b, _)| b.endpoint).collect();
        assert_eq!(live, ["b:1", "127.0.0.1:1"]);
    }

    #[test]
    fn reports_expire_and_come_back() {
        let r = Registry::new(Duration::from_millis(50));
        assert!(r.report(info("b")));
        assert!(r.report(info("a")));
        assert!(
            !r.report(info("a")),
            "a second report is not a new registration"
        );
        let names: Vec<_> = r.live().into_iter().map(|(b, _)| b.group).collect();
        assert_eq!(names, ["a", "b"]);
        std::thread::sleep(Duration::from_millis(80));
        assert!(r.live().is_empty());
        assert!(r.report(info("a")), "back after expiry counts as new");
        assert!(r.remove("a", "127.0.0.1:1"));
        assert!(r.live().is_empty());
    }
}
