//! `ferromq proxy`: the stateless compute tier. It serves the RocketMQ 5 protocol to clients and
//! forwards each request to the broker group that owns what the request is about.
//!
//! How a request finds its group (one module each):
//! - [`route`]: QueryRoute / QueryAssignment, asked of every group holding the topic and merged.
//! - [`send`]: SendMessage, to a writable group by FIFO hash or rotation, forwarded as the
//!   client's own bytes ([`raw`], served by [`front`] in front of the generated server).
//! - [`receive`]: ReceiveMessage, PullMessage and offsets, to the group named in the request's
//!   message queue (receives first probe the other groups holding the topic).
//! - [`settle`]: Ack, ChangeInvisibleDuration, dead-lettering, EndTransaction and RecallMessage,
//!   to the group named inside the handle ([`handles`]: every handle the proxy hands out is
//!   prefixed `fm:<group>:`, so any proxy can route the answer back).
//! - [`telemetry`]: Heartbeat, NotifyClientTermination and Telemetry, to every live group.
//! - [`admin`]: the admin API, fanned out and merged.
//!
//! [`routes`] keeps the picture of the groups read from the name servers and the connections
//! to them; [`fanout`] the calls to several groups. The proxy keeps no state of its own beyond
//! the route cache: killing one loses nothing.

pub mod admin;
pub mod batch;
pub mod credentials;
pub mod fanout;
pub mod front;
pub mod handles;
pub mod raw;
pub mod raw_ack;
pub mod raw_receive;
pub mod receive;
pub mod route;
pub mod routes;
pub mod send;
pub mod settle;
pub mod telemetry;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use ferromq_proto::admin::admin_server::AdminServer;
use ferromq_proto::v2;
use ferromq_proto::v2::messaging_service_client::MessagingServiceClient;
use ferromq_proto::v2::messaging_service_server::MessagingService;
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::config::proxy::ProxyConfig;
use crate::config::ConfigError;
use crate::connections::Connections;
use crate::metrics::{Family, Identity, Metrics, NodeType};
use crate::rpc::{self, BoxStream};
use crate::serve::{self, Listeners, Services, Shutdown};
use routes::{GroupRoute, Routes};

/// Largest message a proxy passes on.
const MAX_MESSAGE: usize = 128 << 20;

/// The client-facing service.
#[derive(Clone)]
pub struct ProxyApi {
    routes: Arc<Routes>,
    metrics: Arc<Metrics>,
    /// Where routes send clients when the address they dialled is unusable: this proxy, never
    /// a broker's internal address.
    advertise: String,
}

impl ProxyApi {
    pub fn new(routes: Arc<Routes>, metrics: Arc<Metrics>, advertise: String) -> ProxyApi {
        ProxyApi {
            routes,
            metrics,
            advertise,
        }
    }

    fn client(&self, g: &GroupRoute) -> Result<MessagingServiceClient<Channel>, Status> {
        self.routes.messaging(g).map_err(Status::internal)
    }

    fn group_named(&self, name: &str) -> Option<GroupRoute> {
        self.routes.view().group(name).cloned()
    }

    /// A client for the group a queue-addressed request (pull, offsets) belongs to.
    fn queue_client(
        &self,
        mq: Option<&v2::MessageQueue>,
    ) -> Result<MessagingServiceClient<Channel>, Status> {
        let g = receive::group_for_queue(&self.routes.view(), mq, self.routes.next())
            .ok_or_else(|| Status::unavailable("no broker group is alive"))?;
        self.client(&g)
    }
}

#[tonic::async_trait]
impl MessagingService for ProxyApi {
    async fn query_route(
        &self,
        req: Request<v2::QueryRouteRequest>,
    ) -> Result<Response<v2::QueryRouteResponse>, Status> {
        rpc::unary(&self.metrics, "QueryRoute", req, |md, r| async move {
            Ok(self.query_route(&md, r).await)
        })
        .await
    }

    async fn heartbeat(
        &self,
        req: Request<v2::HeartbeatRequest>,
    ) -> Result<Response<v2::HeartbeatResponse>, Status> {
        rpc::unary(&self.metrics, "Heartbeat", req, |md, r| async move {
            Ok(self.heartbeat(&md, r).await)
        })
        .await
    }

    async fn send_message(
        &self,
        req: Request<v2::SendMessageRequest>,
    ) -> Result<Response<v2::SendMessageResponse>, Status> {
        rpc::unary(&self.metrics, "SendMessage", req, |md, r| async move {
            self.send_message(&md, r).await
        })
        .await
    }

    async fn query_assignment(
        &self,
        req: Request<v2::QueryAssignmentRequest>,
    ) -> Result<Response<v2::QueryAssignmentResponse>, Status> {
        rpc::unary(&self.metrics, "QueryAssignment", req, |md, r| async move {
            Ok(self.query_assignment(&md, r).await)
        })
        .await
    }

    type ReceiveMessageStream = BoxStream<v2::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        req: Request<v2::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        // The front answers receives from raw bytes (`front::RawReceive`); this typed method
        // is the generated server's, reached only if the front did not take the path.
        let raw = rpc::streaming(
            self.metrics.clone(),
            "ReceiveMessage",
            req,
            |md, r| async move { self.receive_message(&md, r).await },
        )
        .await?;
        let typed = raw
            .into_inner()
            .map(|item| item.and_then(raw_receive::decode));
        Ok(Response::new(Box::pin(typed) as Self::ReceiveMessageStream))
    }

    async fn ack_message(
        &self,
        req: Request<v2::AckMessageRequest>,
    ) -> Result<Response<v2::AckMessageResponse>, Status> {
        rpc::unary(&self.metrics, "AckMessage", req, |md, r| async move {
            self.ack_message(&md, r).await
        })
        .await
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        req: Request<v2::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<v2::ForwardMessageToDeadLetterQueueResponse>, Status> {
        let method = "ForwardMessageToDeadLetterQueue";
        rpc::unary(&self.metrics, method, req, |md, r| async move {
            self.forward_to_dlq(&md, r).await
        })
        .await
    }

    type PullMessageStream = BoxStream<v2::PullMessageResponse>;

    async fn pull_message(
        &self,
        req: Request<v2::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, Status> {
        rpc::streaming(
            self.metrics.clone(),
            "PullMessage",
            req,
            |md, r| async move {
                let mut c = self.queue_client(r.message_queue.as_ref())?;
                let s = c.pull_message(fanout::outgoing(&md, r)).await?;
                Ok(Box::pin(s.into_inner()) as BoxStream<_>)
            },
        )
        .await
    }

    async fn update_offset(
        &self,
        req: Request<v2::UpdateOffsetRequest>,
    ) -> Result<Response<v2::UpdateOffsetResponse>, Status> {
        rpc::unary(&self.metrics, "UpdateOffset", req, |md, r| async move {
            let mut c = self.queue_client(r.message_queue.as_ref())?;
            Ok(c.update_offset(fanout::outgoing(&md, r))
                .await?
                .into_inner())
        })
        .await
    }

    async fn get_offset(
        &self,
        req: Request<v2::GetOffsetRequest>,
    ) -> Result<Response<v2::GetOffsetResponse>, Status> {
        rpc::unary(&self.metrics, "GetOffset", req, |md, r| async move {
            let mut c = self.queue_client(r.message_queue.as_ref())?;
            Ok(c.get_offset(fanout::outgoing(&md, r)).await?.into_inner())
        })
        .await
    }

    async fn query_offset(
        &self,
        req: Request<v2::QueryOffsetRequest>,
    ) -> Result<Response<v2::QueryOffsetResponse>, Status> {
        rpc::unary(&self.metrics, "QueryOffset", req, |md, r| async move {
            let mut c = self.queue_client(r.message_queue.as_ref())?;
            Ok(c.query_offset(fanout::outgoing(&md, r)).await?.into_inner())
        })
        .await
    }

    async fn end_transaction(
        &self,
        req: Request<v2::EndTransactionRequest>,
    ) -> Result<Response<v2::EndTransactionResponse>, Status> {
        rpc::unary(&self.metrics, "EndTransaction", req, |md, r| async move {
            self.end_transaction(&md, r).await
        })
        .await
    }

    type TelemetryStream = BoxStream<v2::TelemetryCommand>;

    async fn telemetry(
        &self,
        req: Request<tonic::Streaming<v2::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        rpc::streaming(self.metrics.clone(), "Telemetry", req, |md, r| async move {
            self.telemetry(&md, r).await
        })
        .await
    }

    async fn notify_client_termination(
        &self,
        req: Request<v2::NotifyClientTerminationRequest>,
    ) -> Result<Response<v2::NotifyClientTerminationResponse>, Status> {
        rpc::unary(
            &self.metrics,
            "NotifyClientTermination",
            req,
            |md, r| async move { Ok(self.notify_client_termination(&md, r).await) },
        )
        .await
    }

    async fn change_invisible_duration(
        &self,
        req: Request<v2::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<v2::ChangeInvisibleDurationResponse>, Status> {
        rpc::unary(
            &self.metrics,
            "ChangeInvisibleDuration",
            req,
            |md, r| async move { self.change_invisible_duration(&md, r).await },
        )
        .await
    }

    async fn recall_message(
        &self,
        req: Request<v2::RecallMessageRequest>,
    ) -> Result<Response<v2::RecallMessageResponse>, Status> {
        rpc::unary(&self.metrics, "RecallMessage", req, |md, r| async move {
            self.recall_message(&md, r).await
        })
        .await
    }

    async fn sync_lite_subscription(
        &self,
        req: Request<v2::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<v2::SyncLiteSubscriptionResponse>, Status> {
        rpc::unary(
            &self.metrics,
            "SyncLiteSubscription",
            req,
            |md, r| async move {
                let g = self
                    .routes
                    .view()
                    .groups
                    .first()
                    .cloned()
                    .ok_or_else(|| Status::unavailable("no broker group is alive"))?;
                Ok(self
                    .client(&g)?
                    .sync_lite_subscription(fanout::outgoing(&md, r))
                    .await?
                    .into_inner())
            },
        )
        .await
    }
}

type ProxyState = (Arc<Routes>, Arc<Metrics>, Arc<Connections>);

/// The proxy's HTTP endpoint: ready once it knows at least one live broker group.
pub fn http_router(
    routes: Arc<Routes>,
    metrics: Arc<Metrics>,
    conns: Arc<Connections>,
) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state((routes, metrics, conns))
}

async fn readyz(State((routes, _, _)): State<ProxyState>) -> impl IntoResponse {
    if routes.view().groups.is_empty() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no live broker group\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn render_metrics(State((routes, metrics, conns)): State<ProxyState>) -> impl IntoResponse {
    let view = routes.view();
    let mut groups = Family::gauge(
        "ferromq_proxy_broker_groups",
        "Live broker groups known to this proxy, by drain state.",
    );
    for g in &view.groups {
        let state = if g.read_only {
            "read-only"
        } else {
            "read-write"
        };
        groups.push(
            vec![("group", g.name.clone()), ("state", state.to_string())],
            1i64,
        );
    }
    let mut families = vec![crate::metrics::build_info(), groups];
    families.extend(conns.families());
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        metrics.render(families),
    )
}

/// A proxy with its listeners bound.
pub struct Bound {
    cfg: ProxyConfig,
    listeners: Listeners,
    remoting: Option<crate::remoting::Listener>,
}

/// Binds the proxy's listeners.
pub async fn bind(mut cfg: ProxyConfig) -> anyhow::Result<Bound> {
    let listeners = Listeners::bind(cfg.grpc_addr, cfg.http_addr, "grpc-addr", &cfg.limits).await?;
    if cfg.advertise_addr.ends_with(":0") {
        cfg.advertise_addr = crate::config::advertise_default(listeners.grpc_addr());
    }
    let remoting = match &cfg.remoting {
        Some(r) => Some(
            crate::remoting::Listener::bind(r, crate::remoting::host_of(&cfg.advertise_addr))
                .await?,
        ),
        None => None,
    };
    Ok(Bound {
        cfg,
        listeners,
        remoting,
    })
}

impl Bound {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.listeners.grpc_addr()
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.listeners.http_addr()
    }

    /// The remoting listener's address, when remoting is on.
    pub fn remoting_addr(&self) -> Option<SocketAddr> {
        self.remoting
            .as_ref()
            .map(crate::remoting::Listener::local_addr)
    }

    /// Serves until `stop` resolves.
    pub async fn run(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Bound {
            cfg,
            listeners,
            remoting,
        } = self;
        let routes = Arc::new(
            Routes::new(&cfg.nameservers, MAX_MESSAGE, cfg.link.clone()).map_err(|reason| {
                ConfigError {
                    field: "nameservers",
                    reason,
                }
            })?,
        );
        let metrics = Arc::new(Metrics::new(Identity::new(NodeType::Proxy, None)));
        let shutdown = Shutdown::default();
        // First routes before serving, so the first client request already finds the groups.
        if routes.refresh().await == 0 {
            warn!(nameservers = ?cfg.nameservers, "no name server answers yet; serving and retrying");
        }
        let mut background = JoinSet::new();
        background.spawn(
            routes
                .clone()
                .refresh_loop(cfg.route_refresh, shutdown.subscribe()),
        );
        let api = ProxyApi::new(routes.clone(), metrics.clone(), cfg.advertise_addr.clone());
        let messaging = front::Front::new(api, MAX_MESSAGE);
        let admin = crate::hook::Hooked::new(
            credentials::Forwarding,
            AdminServer::new(admin::AdminProxy::new(routes.clone()))
                .max_encoding_message_size(MAX_MESSAGE),
        );
        let remoting_addr = remoting.as_ref().map(|l| l.front.addr.clone());
        let tcp = remoting
            .into_iter()
            .map(|l| {
                let service = crate::remoting::proxy::ProxyRemoting::new(
                    routes.clone(),
                    metrics.clone(),
                    l.front.clone(),
                );
                l.into_service(
                    service,
                    crate::remoting::connection::Limits::for_body_size(MAX_MESSAGE / 4),
                )
            })
            .collect();
        info!(grpc = %listeners.grpc_addr(), http = %listeners.http_addr(), remoting = remoting_addr.as_deref().unwrap_or("off"), nameservers = ?cfg.nameservers, links = %cfg.link, groups = routes.view().groups.len(), "ferromq proxy ready");
        let services = Services {
            tcp,
            grpc: Services::grpc_builder(&cfg.limits)
                .add_service(messaging)
                .add_service(admin),
            http: http_router(routes, metrics, listeners.connections.clone()),
            tls: cfg.tls.clone(),
            background,
            drain: Duration::from_secs(10),
            on_stop: None,
        };
        serve::run(listeners, services, &shutdown, stop).await?;
        info!("proxy stopped");
        Ok(())
    }
}

/// Runs a proxy until SIGTERM or Ctrl-C.
pub async fn run(cfg: ProxyConfig) -> anyhow::Result<()> {
    bind(cfg).await?.run(serve::signal()).await
}
