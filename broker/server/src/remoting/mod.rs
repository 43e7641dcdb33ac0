//! The classic RocketMQ remoting protocol: FerroMQ's second front door, for 4.x clients
//! (`rocketmq-client` 4.9.x, `rocketmq-client-go/v2`), `mqadmin` and `DefaultMQAdminExt`
//! (rocketmq-dashboard, rocketmq-exporter). It speaks the protocol with the
//! `ferromq-remoting` codec and drives the same engine as the RocketMQ 5 service: a message
//! sent through one protocol is consumed through the other.
//!
//! ## Map
//! - [`connection`]: one connection over TCP or a proxy's tunnel: framing, answers out of
//!   order, bounded requests in flight, idle timeout, calls from the server to the client.
//! - [`Remoting`] (this file): a storage node's remoting service; it routes each request code to
//!   its module, in a tracing span, with the same metrics as RPCs of the RocketMQ 5 service.
//!   - [`namesrv`]: name-server requests (routes, cluster, topic lists); standalone is its own
//!     name server, so both kinds share one port.
//!   - [`client`]: heartbeats, consumer membership and its notifications, queue locks, running
//!     info; [`registry`] holds what heartbeats tell.
//!   - [`send`]: SEND_MESSAGE v1, v2 and batch; [`pull`]: PULL_MESSAGE with long polling;
//!     [`offset`]: consumer offsets; [`consume`]: send-back for retry;
//!     [`transaction`]: END_TRANSACTION and the check-back to producers.
//!   - [`admin`]: what `mqadmin` and `DefaultMQAdminExt` ask a broker.
//! - [`message`]: remoting messages to and from the engine's; [`status`]: the one mapping of
//!   failures to remoting codes.
//! - [`auth`]: with `--auth`, every request's signature and rights, before it is routed.
//! - [`tunnel`]: the broker end of a proxy's tunnel; [`proxy`]: the proxy's remoting port.
//!
//! Unknown request codes are answered `REQUEST_CODE_NOT_SUPPORTED`; the connection stays.

pub mod admin;
pub mod auth;
pub mod client;
pub mod connection;
pub mod consume;
pub mod message;
pub mod namesrv;
pub mod offset;
pub mod proxy;
pub mod pull;
pub mod registry;
pub mod send;
pub mod status;
pub mod transaction;
pub mod tunnel;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_remoting::code::{request, response};
use ferromq_remoting::Command;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, field, Instrument};

use crate::config::node::RemotingListen;
use crate::node::Node;
use connection::{Answer, Front, Peer, Service};
use message::Offsets;
use registry::{Locks, Registry};
use status::RemotingError;

/// The cluster name remoting clients and tools see: RocketMQ's default, so scripts that pass
/// `-c DefaultCluster` work unchanged.
pub const CLUSTER: &str = "DefaultCluster";

/// The version FerroMQ announces in answers: RocketMQ 5.3.3's `MQVersion` ordinal.
pub const VERSION: i32 = 479;

/// A handler's result: the answer, or why the request failed.
pub type Handled = Result<Command, RemotingError>;

/// A storage node's remoting service.
pub struct Remoting {
    pub node: Arc<Node>,
    /// How this node shows commit log offsets (tagged in a cluster).
    pub offsets: Offsets,
    pub clients: Registry,
    pub locks: Locks,
    /// Name-server key/value settings (`updateTopic -o` writes the order config here).
    kv: Mutex<BTreeMap<(String, String), String>>,
    pub started: Instant,
    pub started_ms: i64,
    /// Messages answered to pulls since start; appends and pulls in the last second (runtime
    /// info for the tools).
    pub pulled: AtomicU64,
    pub put_tps: AtomicU64,
    pub get_tps: AtomicU64,
    /// With `--auth`: what every request is checked against ([`auth`]).
    auth: Option<Arc<crate::auth::Gate>>,
}

impl Remoting {
    /// The remoting service of `node`; `clustered`: the node is one broker group of a cluster
    /// (its offsets carry the group's tag); `auth`: the node's gate, when `--auth` is on.
    pub fn new(
        node: Arc<Node>,
        clustered: bool,
        auth: Option<Arc<crate::auth::Gate>>,
    ) -> Arc<Remoting> {
        let offsets = if clustered {
            Offsets::for_group(&node.engine.membership.group())
        } else {
            Offsets::default()
        };
        let r = Arc::new(Remoting {
            node,
            offsets,
            clients: Registry::default(),
            locks: Locks::default(),
            kv: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
            started_ms: ferromq_engine::time::now_ms(),
            pulled: AtomicU64::new(0),
            put_tps: AtomicU64::new(0),
            get_tps: AtomicU64::new(0),
            auth,
        });
        transaction::install_checks(&r);
        r
    }

    /// The broker name clients see: the broker group's name (`standalone` alone).
    pub fn broker_name(&self) -> String {
        self.node.engine.membership.group()
    }

    /// Runs blocking engine work off the async workers.
    pub async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, RemotingError>
    where
        F: FnOnce(&Remoting) -> Result<T, RemotingError> + Send + 'static,
        T: Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| RemotingError::system(format!("worker failed: {e}")))?
    }

    /// Tells every member of each group that its membership changed, so they rebalance now.
    pub fn notify(&self, groups: &[String]) {
        for g in groups {
            client::notify_ids_changed(self, g);
        }
    }

    /// Once a second: forget clients gone silent and expired queue locks. Ends at shutdown.
    pub async fn upkeep(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let stop = crate::serve::stopped(shutdown);
        tokio::pin!(stop);
        let (mut puts, mut gets) = (0u64, 0u64);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let changed = self.clients.expire();
                    self.notify(&changed);
                    self.locks.expire();
                    let (p, g) = (
                        self.node.engine.store.stats().appends_total,
                        self.pulled.load(Ordering::Relaxed),
                    );
                    self.put_tps.store(p.saturating_sub(puts), Ordering::Relaxed);
                    self.get_tps.store(g.saturating_sub(gets), Ordering::Relaxed);
                    (puts, gets) = (p, g);
                }
                _ = &mut stop => return,
            }
        }
    }

    fn kv_get(&self, namespace: &str, key: &str) -> Option<String> {
        self.kv
            .lock()
            .get(&(namespace.to_string(), key.to_string()))
            .cloned()
    }

    fn kv_put(&self, namespace: &str, key: &str, value: Option<String>) {
        let k = (namespace.to_string(), key.to_string());
        let mut kv = self.kv.lock();
        match value {
            Some(v) => {
                kv.insert(k, v);
            }
            None => {
                kv.remove(&k);
            }
        }
    }

    /// Routes one request to its handler.
    async fn route(self: &Arc<Self>, peer: &Arc<Peer>, req: &Command) -> Handled {
        use request::*;
        match req.code {
            GET_ROUTEINFO_BY_TOPIC => namesrv::route(self, peer, req).await,
            GET_BROKER_CLUSTER_INFO => Ok(namesrv::cluster_info(self, peer, req)),
            GET_ALL_TOPIC_LIST_FROM_NAMESERVER
            | GET_TOPICS_BY_CLUSTER
            | GET_TOPIC_NAME_LIST
            | GET_SYSTEM_TOPIC_LIST_FROM_NS
            | GET_SYSTEM_TOPIC_LIST_FROM_BROKER => namesrv::topic_list(self, peer, req).await,
            PUT_KV_CONFIG | GET_KV_CONFIG | DELETE_KV_CONFIG => namesrv::kv(self, req),
            DELETE_TOPIC_IN_NAMESRV | REGISTER_TOPIC_IN_NAMESRV => {
                Ok(req.response_to(response::SUCCESS, None))
            }
            HEART_BEAT => client::heartbeat(self, peer, req),
            UNREGISTER_CLIENT => client::unregister(self, peer, req),
            GET_CONSUMER_LIST_BY_GROUP => client::consumer_list(self, req),
            CHECK_CLIENT_CONFIG => client::check_config(req),
            LOCK_BATCH_MQ => client::lock(self, req),
            UNLOCK_BATCH_MQ => client::unlock(self, req),
            GET_CONSUMER_RUNNING_INFO => client::running_info(self, req).await,
            SEND_MESSAGE | SEND_MESSAGE_V2 | SEND_BATCH_MESSAGE => {
                send::send(self, peer, req).await
            }
            PULL_MESSAGE => pull::pull(self, peer, req).await,
            QUERY_CONSUMER_OFFSET => offset::query(self, req).await,
            UPDATE_CONSUMER_OFFSET => offset::update(self, req).await,
            GET_MAX_OFFSET | GET_MIN_OFFSET | GET_EARLIEST_MSG_STORETIME => {
                offset::queue_bounds(self, req).await
            }
            SEARCH_OFFSET_BY_TIMESTAMP => offset::search(self, req).await,
            CONSUMER_SEND_MSG_BACK => consume::send_back(self, req).await,
            END_TRANSACTION => transaction::end(self, req).await,
            UPDATE_AND_CREATE_TOPIC => admin::create_topic(self, req).await,
            DELETE_TOPIC_IN_BROKER => admin::delete_topic(self, req).await,
            GET_TOPIC_STATS_INFO => admin::topic_stats(self, req).await,
            GET_TOPIC_CONFIG => admin::topic_config(self, req).await,
            GET_ALL_TOPIC_CONFIG => admin::all_topic_config(self, req).await,
            GET_CONSUME_STATS => admin::consume_stats(self, req).await,
            GET_CONSUMER_CONNECTION_LIST => admin::consumer_connections(self, req),
            GET_PRODUCER_CONNECTION_LIST => admin::producer_connections(self, req),
            UPDATE_AND_CREATE_SUBSCRIPTIONGROUP => admin::update_group(self, req).await,
            GET_SUBSCRIPTIONGROUP_CONFIG => admin::group_config(self, req).await,
            GET_ALL_SUBSCRIPTIONGROUP_CONFIG => admin::all_group_config(self, req).await,
            DELETE_SUBSCRIPTIONGROUP => admin::delete_group(self, req).await,
            QUERY_MESSAGE => admin::query_message(self, peer, req).await,
            VIEW_MESSAGE_BY_ID => admin::view_message(self, peer, req).await,
            GET_BROKER_RUNTIME_INFO => admin::runtime_info(self, req).await,
            GET_BROKER_CONFIG => Ok(admin::broker_config(self, peer, req)),
            INVOKE_BROKER_TO_RESET_OFFSET => admin::reset_offset(self, peer, req).await,
            QUERY_TOPIC_CONSUME_BY_WHO => admin::consumed_by(self, req).await,
            other => Err(not_supported(other)),
        }
    }
}

/// The answer to a request code FerroMQ does not serve.
pub fn not_supported(code: i32) -> RemotingError {
    RemotingError::new(
        response::REQUEST_CODE_NOT_SUPPORTED,
        format!(
            "request code {code} ({}) is not supported by FerroMQ",
            request::name(code).unwrap_or("unknown")
        ),
    )
}

/// Runs one request in its span and records its time and outcome, as every RPC of the RocketMQ
/// 5 service is (metrics name remoting requests by their RocketMQ request code).
pub async fn observe<F>(
    metrics: &crate::metrics::Metrics,
    peer: &Peer,
    req: &Command,
    handle: F,
) -> Command
where
    F: std::future::Future<Output = Handled>,
{
    let method = request::name(req.code).unwrap_or("UNKNOWN_REQUEST");
    // At DEBUG, as the gRPC calls' span (see `crate::rpc`).
    let span = tracing::debug_span!(
        "remoting",
        code = method,
        client = %peer.addr,
        topic = field::Empty,
        group = field::Empty
    );
    let started = Instant::now();
    let answer = match handle.instrument(span.clone()).await {
        Ok(a) => a,
        Err(e) => {
            debug!(parent: &span, code = e.code, remark = %e.remark, "request refused");
            req.response_to(e.code, Some(e.remark))
        }
    };
    let code = answer.code;
    metrics.call(
        method,
        started.elapsed(),
        (!status::is_normal(code)).then_some(code),
    );
    answer
}

impl Service for Remoting {
    fn handle(self: Arc<Self>, peer: Arc<Peer>, req: Command) -> Answer {
        Box::pin(async move {
            let handled = async {
                if let Some(gate) = &self.auth {
                    auth::check(gate, &peer, &req)?;
                }
                self.route(&peer, &req).await
            };
            let mut answer = observe(&self.node.metrics, &peer, &req, handled).await;
            answer.version = VERSION;
            Some(answer)
        })
    }

    fn closed(self: Arc<Self>, peer: Arc<Peer>) {
        let changed = self.clients.remove(peer.id());
        self.notify(&changed);
    }
}

/// Records the topic and group of the current request in its span.
pub fn record(topic: Option<&str>, group: Option<&str>) {
    let span = tracing::Span::current();
    if let Some(t) = topic {
        span.record("topic", t);
    }
    if let Some(g) = group {
        span.record("group", g);
    }
}

/// A bound remoting listener and how it presents the server.
pub struct Listener {
    pub listener: TcpListener,
    pub front: Arc<Front>,
}

impl Listener {
    /// Binds `listen`; the advertised address is the configured one, else `advertise_host` (the
    /// role's advertised host) with the bound port.
    pub async fn bind(listen: &RemotingListen, advertise_host: &str) -> anyhow::Result<Listener> {
        use anyhow::Context;
        let listener = TcpListener::bind(listen.addr)
            .await
            .with_context(|| format!("cannot listen on remoting-addr {}", listen.addr))?;
        let bound = listener.local_addr()?;
        let addr = match &listen.advertise {
            Some(a) => a.clone(),
            None => format!("{advertise_host}:{}", bound.port()),
        };
        let store_host = resolve_host(&addr, bound).await;
        Ok(Listener {
            listener,
            front: Arc::new(Front { addr, store_host }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The serve loop's TCP service for these connections.
    pub fn into_service(
        self,
        service: Arc<dyn Service>,
        limits: connection::Limits,
    ) -> crate::serve::TcpService {
        crate::serve::TcpService {
            name: "remoting",
            listener: self.listener,
            handler: Arc::new(connection::TcpRemoting {
                service,
                front: self.front,
                limits,
            }),
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Remoting connections one process serves at once.
pub const MAX_CONNECTIONS: usize = 10_000;

/// The host of an advertised `host:port`, the part before the port.
pub fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_matches(|c| c == '[' || c == ']')
}

/// The socket address offset message ids carry for advertised address `addr`: an IP, so a
/// host name is resolved once; when it cannot be, the bound address (loopback for 0.0.0.0).
pub async fn resolve_host(addr: &str, bound: SocketAddr) -> SocketAddr {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return a;
    }
    if let Ok(Some(a)) = tokio::net::lookup_host(addr)
        .await
        .map(|mut it| it.find(SocketAddr::is_ipv4))
    {
        return a;
    }
    if bound.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], bound.port()))
    } else {
        bound
    }
}
