//! A storage node: the store, the delivery engine over it, and the RocketMQ 5 and admin services
//! in front. `ferromq standalone` is a storage node alone; `ferromq broker` is one that also
//! reports itself to name servers ([`super::broker`]).
//!
//! Start-up: open the store (recovering after a crash), load the engine, bind both listeners,
//! then report ready. Shutdown: stop accepting, end long polls and Telemetry streams, let
//! in-flight requests finish (bounded), stop the timer threads, then flush and close the store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferromq_engine::Engine;
use ferromq_proto::admin::admin_server::AdminServer;
use ferromq_proto::v2::messaging_service_server::MessagingServiceServer;
use ferromq_store::Store;
use tokio::task::JoinSet;
use tracing::info;

use crate::admin::service::AdminApi;
use crate::auth::{Authenticate, Authenticated, Gate};
use crate::config::broker::MemberConfig;
use crate::config::node::NodeConfig;
use crate::config::ConfigError;
use crate::metrics::{Identity, Metrics, NodeType};
use crate::node::Node;
use crate::remoting::{self, Remoting};
use crate::serve::{self, Listeners, Services, Shutdown};
use crate::service::MessagingApi;
use ferromq_proto::tunnel::tunnel_server::TunnelServer;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A storage node with its store open and its listeners bound, ready to serve.
pub struct Bound {
    cfg: NodeConfig,
    member: Option<MemberConfig>,
    store: Arc<Store>,
    node: Arc<Node>,
    /// Authentication and authorization, with `--auth`.
    gate: Option<Arc<Gate>>,
    listeners: Listeners,
    remoting: Option<remoting::Listener>,
    shutdown: Shutdown,
}

/// Opens (recovering after a crash) the store of a storage node.
pub(super) async fn open_store(sc: ferromq_store::StoreConfig) -> anyhow::Result<Arc<Store>> {
    let dir = sc.data_dir.display().to_string();
    match tokio::task::spawn_blocking(move || Store::open(sc)).await? {
        Ok(s) => Ok(s),
        // A store setting that cannot work is bad configuration (exit 2), not a runtime failure.
        Err(ferromq_store::StoreError::Config { field, reason }) => {
            Err(ConfigError { field, reason }.into())
        }
        Err(e) => Err(e).with_context(|| format!("cannot open the store in {dir}")),
    }
}

/// Opens the store and the engine and binds the listeners. With `member` the node is one
/// broker group of a cluster.
pub async fn bind(mut cfg: NodeConfig, member: Option<MemberConfig>) -> anyhow::Result<Bound> {
    let listeners = Listeners::bind(cfg.grpc_addr, cfg.http_addr, "grpc-addr", &cfg.limits).await?;
    // A port chosen by the system (0, in tests) is advertised as the one it chose.
    if cfg.advertise_addr.ends_with(":0") {
        cfg.advertise_addr = crate::config::advertise_default(listeners.grpc_addr());
    }
    let store = open_store(cfg.store_config()).await?;
    let (s2, ec) = (store.clone(), cfg.engine.clone());
    let engine = tokio::task::spawn_blocking(move || Engine::open(s2, ec))
        .await?
        .map_err(|e| {
            anyhow::anyhow!("cannot load group settings, pending timers and transactions: {e}")
        })?;
    if let Some(m) = &member {
        engine
            .membership
            .join(&m.group, &cfg.data_dir)
            .with_context(|| {
                format!("cannot read the group state in {}", cfg.data_dir.display())
            })?;
    }
    let remoting = match &cfg.remoting {
        Some(r) => Some(remoting::Listener::bind(r, remoting::host_of(&cfg.advertise_addr)).await?),
        None => None,
    };
    let shutdown = Shutdown::default();
    // A cluster's storage node is known by its group (RocketMQ's broker name); a standalone
    // one by its host.
    let identity = Identity::new(NodeType::Broker, member.as_ref().map(|m| m.group.as_str()));
    let node = Node::with_metrics(
        engine,
        cfg.node_settings(),
        shutdown.subscribe(),
        Arc::new(Metrics::new(identity)),
    );
    let gate = if cfg.auth.enabled {
        let (dir, auth, metrics) = (cfg.data_dir.clone(), cfg.auth.clone(), node.metrics.clone());
        Some(tokio::task::spawn_blocking(move || Gate::open(&dir, &auth, metrics)).await??)
    } else {
        None
    };
    Ok(Bound {
        cfg,
        member,
        store,
        node,
        gate,
        listeners,
        remoting,
        shutdown,
    })
}

impl Bound {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.listeners.grpc_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.listeners.http_addr()
    }

    /// The remoting listener's address, when remoting is on.
    pub fn remoting_addr(&self) -> Option<SocketAddr> {
        self.remoting.as_ref().map(remoting::Listener::local_addr)
    }

    /// Serves until `stop` resolves, then shuts down and closes the store.
    pub async fn run(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Bound {
            cfg,
            member,
            store,
            node,
            gate,
            listeners,
            remoting: remoting_listener,
            shutdown,
        } = self;
        let threads = node
            .engine
            .start_background()
            .context("cannot start the timer threads")?;

        // Room for a body at the limit plus headers and properties.
        let max_msg = cfg.max_body_size.saturating_mul(2).max(16 << 20);
        let messaging = MessagingServiceServer::new(MessagingApi::new(node.clone()))
            .max_decoding_message_size(max_msg)
            .max_encoding_message_size(max_msg);
        let admin = AdminServer::new(AdminApi::new(node.clone()).with_auth(gate.clone()))
            .max_encoding_message_size(max_msg);

        // The remoting protocol: its own port (when on) and the tunnel proxies use.
        let remoting = Remoting::new(node.clone(), member.is_some(), gate.clone());
        let limits = remoting::connection::Limits::for_body_size(cfg.max_body_size);
        let tunnel = TunnelServer::new(remoting::tunnel::TunnelApi::new(
            remoting.clone(),
            limits,
            shutdown.subscribe(),
        ))
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
        let remoting_addr = remoting_listener.as_ref().map(|l| l.front.addr.clone());
        let tcp = remoting_listener
            .into_iter()
            .map(|l| l.into_service(remoting.clone(), limits))
            .collect();
        // The tunnel proxies use for remoting clients: with auth on, opening it needs no
        // signature, and every remoting request it carries is checked as on the TCP port.
        // Sends a proxy forwards in batches are served by the messaging service as it is
        // served here, auth hook included (`crate::forward`).
        let grpc = match &gate {
            Some(g) => {
                let messaging = Authenticated::new(Authenticate(g.clone()), messaging);
                Services::grpc_builder(&cfg.limits)
                    .add_service(crate::forward::server(messaging.clone(), max_msg))
                    .add_service(messaging)
                    .add_service(Authenticated::new(Authenticate(g.clone()), admin))
                    .add_service(Authenticated::new(Authenticate(g.clone()), tunnel))
            }
            None => {
                info!("auth is off: anyone who reaches the gRPC port may send, consume and administer (start with --auth to require credentials)");
                Services::grpc_builder(&cfg.limits)
                    .add_service(crate::forward::server(messaging.clone(), max_msg))
                    .add_service(messaging)
                    .add_service(admin)
                    .add_service(tunnel)
            }
        };

        let mut background = JoinSet::new();
        background.spawn(upkeep(node.clone()));
        background.spawn(remoting.upkeep(shutdown.subscribe()));
        if let Some(m) = member.clone() {
            info!(group = %m.group, nameservers = ?m.nameservers, links = %m.link, endpoint = %cfg.advertise_addr, state = node.engine.membership.state_name(), "ferromq broker joining the cluster");
            background.spawn(super::broker::heartbeat_loop(node.clone(), m, None));
        }
        let stopping = node.clone();
        let services = Services {
            grpc,
            http: crate::http::router(
                Arc::new(crate::http::OneNode(node.clone())),
                listeners.connections.clone(),
            ),
            tcp,
            tls: cfg.tls.clone(),
            background,
            drain: DRAIN_TIMEOUT,
            on_stop: Some(Box::new(move || {
                stopping.ready.store(false, Ordering::Release);
                stopping.clients.close_all_streams();
            })),
        };
        node.ready.store(true, Ordering::Release);
        info!(grpc = %listeners.grpc_addr(), http = %listeners.http_addr(), remoting = remoting_addr.as_deref().unwrap_or("off"), tls = cfg.tls.is_some(), auth = gate.is_some(), data_dir = %cfg.data_dir.display(), auto_create_topics = cfg.engine.auto_create_topics, role = if member.is_some() { "broker" } else { "standalone" }, "ferromq ready");
        let served = serve::run(listeners, services, &shutdown, stop).await;

        let n = node.clone();
        tokio::task::spawn_blocking(move || n.engine.stop_background(threads)).await?;
        tokio::task::spawn_blocking(move || store.close())
            .await?
            .context("closing the store")?;
        info!("store flushed and closed");
        served
    }
}

/// Once a second: renew push consumers' deliveries, dead-letter exhausted messages even when
/// nobody receives, keep retention away from parked messages, forget long-gone clients.
pub(super) async fn upkeep(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let stopped = serve::stopped(node.shutdown.clone());
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let n = node.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    n.engine.deliveries.reap(&|id| n.clients.is_alive(id));
                    n.engine.keep_parked_messages();
                }).await;
                node.clients.prune(Duration::from_secs(600));
            }
            _ = &mut stopped => break,
        }
    }
}

/// `ferromq standalone`, or `ferromq broker` with `member`: serves until SIGTERM or Ctrl-C.
pub async fn run(cfg: NodeConfig, member: Option<MemberConfig>) -> anyhow::Result<()> {
    bind(cfg, member).await?.run(serve::signal()).await
}
