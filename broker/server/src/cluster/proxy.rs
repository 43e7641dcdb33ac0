//! `ferromq proxy`: the stateless compute tier. It serves the RocketMQ 5 protocol to clients and
//! forwards each request to the broker group that owns what the request is about.
//!
//! How a request finds its group:
//! - QueryRoute / QueryAssignment: asked of every group holding the topic and merged; each queue
//!   carries its group as the broker name and this proxy tier's endpoints (what the client
//!   dialled), so clients keep talking to proxies and spread over them.
//! - SendMessage: a writable group holding the topic, chosen by the message group's hash for FIFO
//!   messages (same key, same group) and in rotation otherwise. A group that cannot be reached is
//!   skipped for non-FIFO sends; FIFO sends fail instead of breaking order.
//! - ReceiveMessage / PullMessage / offsets: the group named in the request's message queue.
//! - Ack, ChangeInvisibleDuration, dead-lettering, EndTransaction and RecallMessage: the group
//!   named inside the handle. The proxy prefixes every receipt handle, transaction id and recall
//!   handle it hands out with `fm:<group>:`, so any proxy can route the answer to it later.
//! - Heartbeat and NotifyClientTermination go to every live group; a Telemetry stream is opened
//!   to every live group and the client's commands are copied to each, so a group can reach the
//!   producer (transaction check-back) through whichever proxy holds its stream.
//!
//! The proxy keeps no state of its own beyond the route cache: killing one loses nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ferromq_proto::admin::admin_server::AdminServer;
use ferromq_proto::v2::messaging_service_client::MessagingServiceClient;
use ferromq_proto::v2::messaging_service_server::{MessagingService, MessagingServiceServer};
use ferromq_proto::v2::{self, Code};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::KeyAndValueRef;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::{info, instrument, warn};

use super::routes::{GroupRoute, Routes};
use crate::metrics::Metrics;
use crate::service::parse_grpc_timeout;
use crate::status::{self, ClientLanguage};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Prefix of every handle the proxy hands out: `fm:<group>:<the group's own handle>`.
const HANDLE_PREFIX: &str = "fm:";

/// Wraps a group's handle so that any proxy can route it back to the group.
pub fn wrap_handle(group: &str, handle: &str) -> String {
    if handle.is_empty() {
        return String::new();
    }
    format!("{HANDLE_PREFIX}{group}:{handle}")
}

/// Splits a wrapped handle into (group, the group's handle).
pub fn unwrap_handle(h: &str) -> Option<(&str, &str)> {
    let rest = h.strip_prefix(HANDLE_PREFIX)?;
    let (group, handle) = rest.split_once(':')?;
    if group.is_empty() || handle.is_empty() {
        return None;
    }
    Some((group, handle))
}

/// A stable hash for message groups (FNV-1a), so every proxy sends one key to the same group.
fn key_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Flags of `ferromq proxy`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Address clients connect to (RocketMQ 5 protocol and the admin API) [default: 0.0.0.0:8081].
    #[arg(long, env = "FERROMQ_GRPC_ADDR")]
    pub grpc_addr: Option<String>,
    /// Address of the HTTP endpoint (/healthz, /readyz, /metrics) [default: 0.0.0.0:9090].
    #[arg(long, env = "FERROMQ_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Name servers to read routes from, comma separated host:port.
    #[arg(long, env = "FERROMQ_NAMESERVERS", value_delimiter = ',')]
    pub nameservers: Vec<String>,
    /// How often routes are re-read from the name servers (e.g. 1s, 500ms).
    #[arg(long, env = "FERROMQ_ROUTE_REFRESH")]
    pub route_refresh: Option<String>,
    /// host:port routes advertise when the address a client dialled is unusable.
    #[arg(long, env = "FERROMQ_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// TOML file with the same keys as the flags (kebab-case).
    #[arg(long, env = "FERROMQ_CONFIG")]
    pub config: Option<std::path::PathBuf>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ProxyFile {
    grpc_addr: Option<String>,
    http_addr: Option<String>,
    nameservers: Option<Vec<String>>,
    route_refresh: Option<String>,
    advertise_addr: Option<String>,
}

/// The validated configuration of a proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub nameservers: Vec<String>,
    pub route_refresh: Duration,
    pub advertise_addr: String,
}

impl ProxyArgs {
    pub fn resolve(&self) -> Result<ProxyConfig, crate::config::ConfigError> {
        use crate::config::ConfigError;
        let file: ProxyFile = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                    field: "config",
                    reason: format!("cannot read {}: {e}", p.display()),
                })?;
                toml::from_str(&text).map_err(|e| ConfigError {
                    field: "config",
                    reason: format!("{}: {}", p.display(), e.to_string().trim()),
                })?
            }
            None => ProxyFile::default(),
        };
        let addr = |field: &'static str, v: Option<&String>, default: &str| {
            let s = v.map(String::as_str).unwrap_or(default);
            s.parse::<SocketAddr>().map_err(|_| ConfigError {
                field,
                reason: format!("{s:?} is not an address like {default}"),
            })
        };
        let grpc_addr = addr(
            "grpc-addr",
            self.grpc_addr.as_ref().or(file.grpc_addr.as_ref()),
            "0.0.0.0:8081",
        )?;
        let http_addr = addr(
            "http-addr",
            self.http_addr.as_ref().or(file.http_addr.as_ref()),
            "0.0.0.0:9090",
        )?;
        if grpc_addr == http_addr && grpc_addr.port() != 0 {
            return Err(ConfigError {
                field: "http-addr",
                reason: format!("{http_addr} is also the grpc-addr"),
            });
        }
        let ns = if self.nameservers.is_empty() {
            file.nameservers.unwrap_or_default()
        } else {
            self.nameservers.clone()
        };
        let nameservers = super::member::nameserver_list("nameservers", ns)?;
        let route_refresh = super::nameserver::parse_duration(
            "route-refresh",
            self.route_refresh
                .as_deref()
                .or(file.route_refresh.as_deref())
                .unwrap_or("1s"),
        )?;
        let advertise_addr = match self.advertise_addr.clone().or(file.advertise_addr) {
            Some(a) => a,
            None if grpc_addr.ip().is_unspecified() => format!("127.0.0.1:{}", grpc_addr.port()),
            None => grpc_addr.to_string(),
        };
        Ok(ProxyConfig {
            grpc_addr,
            http_addr,
            nameservers,
            route_refresh,
            advertise_addr,
        })
    }
}

/// The client-facing service.
#[derive(Clone)]
pub struct ProxyApi {
    routes: Arc<Routes>,
    metrics: Arc<Metrics>,
    /// Where routes send clients when the address they dialled is unusable: this proxy, never
    /// a broker's internal address.
    advertise: String,
}

/// Copies what a broker needs from the client's request: the `x-mq-*` identity headers, the
/// authorization header and what is left of the deadline.
fn outgoing<T>(from: &tonic::metadata::MetadataMap, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    for kv in from.iter() {
        if let KeyAndValueRef::Ascii(k, v) = kv {
            let n = k.as_str();
            if n.starts_with("x-mq-") || n == "authorization" {
                r.metadata_mut().insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(t) = from
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
    {
        r.set_timeout(t);
    }
    r
}

fn language(md: &tonic::metadata::MetadataMap) -> ClientLanguage {
    ClientLanguage(
        md.get("x-mq-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    )
}

/// A status for a request the proxy could not complete.
fn fail(md: &tonic::metadata::MetadataMap, code: Code, msg: impl Into<String>) -> v2::Status {
    crate::status::RpcError::new(code, msg).to_status(&language(md))
}

fn unreachable_status(md: &tonic::metadata::MetadataMap, g: &str, e: &Status) -> v2::Status {
    fail(
        md,
        Code::InternalServerError,
        format!("broker group {g} did not answer: {}", e.message()),
    )
}

fn topic_of(r: Option<&v2::Resource>) -> String {
    r.map(|t| t.name.clone()).unwrap_or_default()
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

    /// The group a message queue names, or another one holding the topic if it is gone.
    fn group_for_queue(&self, mq: Option<&v2::MessageQueue>) -> Option<GroupRoute> {
        let view = self.routes.view();
        let topic = mq.map(|m| topic_of(m.topic.as_ref())).unwrap_or_default();
        if let Some(name) = mq.and_then(|m| m.broker.as_ref()).map(|b| b.name.as_str()) {
            if let Some(g) = view.group(name) {
                return Some(g.clone());
            }
        }
        let holding: Vec<&GroupRoute> = view.holding(&topic).collect();
        if holding.is_empty() {
            return view.groups.first().cloned();
        }
        Some(holding[self.routes.next() % holding.len()].clone())
    }

    /// Where a receive goes: the group it long-polls, and the groups it first checks without
    /// waiting (that one first). FIFO topics stay on the group the queue names (order lives in
    /// its queues) and probe nothing; other topics rotate over every group holding them and
    /// probe them all, so a backlog on one group is served at once, before the consumer's next
    /// route refresh even shows it a new group's queues.
    fn receive_plan(&self, mq: Option<&v2::MessageQueue>) -> Option<(GroupRoute, Vec<GroupRoute>)> {
        let view = self.routes.view();
        let topic = mq.map(|m| topic_of(m.topic.as_ref())).unwrap_or_default();
        let holding: Vec<&GroupRoute> = view.holding(&topic).collect();
        let fifo = holding.iter().any(|g| {
            g.topics
                .get(&topic)
                .is_some_and(|t| t.message_type == ferromq_proto::admin::TopicType::Fifo as i32)
        });
        if fifo || holding.len() < 2 {
            return self.group_for_queue(mq).map(|g| (g, Vec::new()));
        }
        let start = self.routes.next() % holding.len();
        let order: Vec<GroupRoute> = (0..holding.len())
            .map(|i| holding[(start + i) % holding.len()].clone())
            .collect();
        Some((order[0].clone(), order))
    }

    fn group_named(&self, name: &str) -> Option<GroupRoute> {
        self.routes.view().group(name).cloned()
    }

    /// The live group a wrapped handle (`fm:<group>:<handle>`) names and the group's own
    /// handle. A foreign handle, or one whose group is gone, is answered with `code`.
    fn resolve_handle(
        &self,
        md: &tonic::metadata::MetadataMap,
        wrapped: &str,
        what: &str,
        code: Code,
    ) -> Result<(GroupRoute, String), v2::Status> {
        let (group, handle) = unwrap_handle(wrapped).ok_or_else(|| {
            fail(
                md,
                code,
                format!("{what} was not issued by a FerroMQ proxy"),
            )
        })?;
        let g = self.group_named(group).ok_or_else(|| {
            fail(
                md,
                code,
                format!("broker group {group} of this {what} is not alive"),
            )
        })?;
        Ok((g, handle.to_string()))
    }

    /// A client for the group a queue-addressed request (pull, offsets) belongs to.
    fn queue_client(
        &self,
        mq: Option<&v2::MessageQueue>,
    ) -> Result<MessagingServiceClient<Channel>, Status> {
        let g = self
            .group_for_queue(mq)
            .ok_or_else(|| Status::unavailable("no broker group is alive"))?;
        self.client(&g)
    }

    fn record(&self, method: &'static str, t: Instant, s: Option<&v2::Status>) {
        self.metrics
            .rpc(method, t.elapsed(), s.map_or(Code::Ok as i32, |s| s.code));
    }

    /// Asks every group holding the topic (or the first live group when none does, so that the
    /// broker answers TOPIC_NOT_FOUND or auto-creates) and gathers the answers.
    async fn ask_holders<Req, Resp, F, Fut>(
        &self,
        md: &tonic::metadata::MetadataMap,
        topic: &str,
        req: Req,
        call: F,
    ) -> Result<Vec<(GroupRoute, Resp)>, v2::Status>
    where
        Req: Clone,
        F: Fn(MessagingServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
    {
        let view = self.routes.view();
        let mut targets: Vec<GroupRoute> = view.holding(topic).cloned().collect();
        if targets.is_empty() {
            match view
                .groups
                .iter()
                .find(|g| !g.read_only)
                .or(view.groups.first())
            {
                Some(g) => targets.push(g.clone()),
                None => {
                    return Err(fail(
                        md,
                        Code::InternalServerError,
                        "no broker group is alive (the name servers know none)",
                    ))
                }
            }
        }
        let calls = targets.into_iter().map(|g| {
            let c = self.client(&g);
            let r = outgoing(md, req.clone());
            let fut = c.map(|c| call(c, r));
            async move {
                match fut {
                    Ok(f) => (g, f.await.map(Response::into_inner)),
                    Err(e) => (g, Err(e)),
                }
            }
        });
        let answers = futures_util::future::join_all(calls).await;
        let mut out = Vec::new();
        let mut last_err = None;
        for (g, r) in answers {
            match r {
                Ok(v) => out.push((g, v)),
                Err(e) => {
                    warn!(group = %g.name, error = %e.message(), "broker group did not answer");
                    last_err = Some(unreachable_status(md, &g.name, &e));
                }
            }
        }
        if out.is_empty() {
            return Err(last_err.unwrap_or_else(|| {
                fail(md, Code::InternalServerError, "no broker group answered")
            }));
        }
        Ok(out)
    }
}

/// A broker's answer to a send while its group is read-only (see `service::send`).
fn is_drain_refusal(s: Option<&v2::Status>) -> bool {
    s.is_some_and(|s| {
        s.code == Code::Forbidden as i32 && s.message.contains(crate::service::DRAINING)
    })
}

/// Sets each queue's broker to its group, and marks a draining group's queues read-only.
fn relabel(mq: &mut v2::MessageQueue, g: &GroupRoute, endpoints: &v2::Endpoints) {
    if let Some(b) = mq.broker.as_mut() {
        b.name = g.name.clone();
        b.endpoints = Some(endpoints.clone());
    }
    if g.read_only {
        mq.permission = v2::Permission::Read as i32;
    }
}

/// Prefixes the receipt handle of a delivered message with its group (see [`wrap_handle`]).
fn wrap_response(mut resp: v2::ReceiveMessageResponse, group: &str) -> v2::ReceiveMessageResponse {
    if let Some(v2::receive_message_response::Content::Message(m)) = resp.content.as_mut() {
        if let Some(h) = m
            .system_properties
            .as_mut()
            .and_then(|sp| sp.receipt_handle.as_mut())
        {
            *h = wrap_handle(group, h);
        }
    }
    resp
}

#[tonic::async_trait]
impl MessagingService for ProxyApi {
    #[instrument(skip_all, name = "proxy.query_route", fields(topic))]
    async fn query_route(
        &self,
        req: Request<v2::QueryRouteRequest>,
    ) -> Result<Response<v2::QueryRouteResponse>, Status> {
        let t = Instant::now();
        let md = req.metadata().clone();
        let r = req.into_inner();
        let topic = topic_of(r.topic.as_ref());
        tracing::Span::current().record("topic", topic.as_str());
        let endpoints = crate::service::advertised_endpoints(r.endpoints.as_ref(), &self.advertise);
        let resp = match self
            .ask_holders(
                &md,
                &topic,
                r,
                |mut c, r| async move { c.query_route(r).await },
            )
            .await
        {
            Err(s) => v2::QueryRouteResponse {
                status: Some(s),
                message_queues: vec![],
            },
            Ok(answers) => {
                let mut queues = Vec::new();
                let mut first_err = None;
                for (g, a) in answers {
                    if a.status.as_ref().is_some_and(|s| s.code == Code::Ok as i32) {
                        for mut q in a.message_queues {
                            relabel(&mut q, &g, &endpoints);
                            queues.push(q);
                        }
                    } else if first_err.is_none() {
                        first_err = a.status;
                    }
                }
                if queues.is_empty() {
                    v2::QueryRouteResponse {
                        status: first_err.or_else(|| Some(status::ok())),
                        message_queues: vec![],
                    }
                } else {
                    v2::QueryRouteResponse {
                        status: Some(status::ok()),
                        message_queues: queues,
                    }
                }
            }
        };
        self.record("QueryRoute", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    #[instrument(skip_all, name = "proxy.heartbeat")]
    async fn heartbeat(
        &self,
        req: Request<v2::HeartbeatRequest>,
    ) -> Result<Response<v2::HeartbeatResponse>, Status> {
        let t = Instant::now();
        let md = req.metadata().clone();
        let r = req.into_inner();
        let status = broadcast(&self.routes, &md, r, |mut c, r| async move {
            c.heartbeat(r).await.map(|x| x.into_inner().status)
        })
        .await;
        self.record("Heartbeat", t, Some(&status));
        Ok(Response::new(v2::HeartbeatResponse {
            status: Some(status),
        }))
    }

    #[instrument(skip_all, name = "proxy.send_message", fields(topic, group))]
    async fn send_message(
        &self,
        req: Request<v2::SendMessageRequest>,
    ) -> Result<Response<v2::SendMessageResponse>, Status> {
        let t = Instant::now();
        let md = req.metadata().clone();
        let r = req.into_inner();
        let first = r.messages.first();
        let topic = first
            .map(|m| topic_of(m.topic.as_ref()))
            .unwrap_or_default();
        let key = first
            .and_then(|m| m.system_properties.as_ref())
            .and_then(|sp| sp.message_group.clone());
        tracing::Span::current().record("topic", topic.as_str());
        let view = self.routes.view();
        let candidates = view.writable_for(&topic);
        let resp = if candidates.is_empty() {
            let msg = if view.groups.is_empty() {
                "no broker group is alive (the name servers know none)".to_string()
            } else {
                format!("topic {topic} has no writable broker group (all holding it are read-only or draining)")
            };
            let code = if view.groups.is_empty() {
                Code::InternalServerError
            } else {
                Code::Forbidden
            };
            v2::SendMessageResponse {
                status: Some(fail(&md, code, msg)),
                entries: vec![],
            }
        } else {
            // FIFO keys always map to the same group; other sends rotate. A group refusing because
            // it is being drained (its report may lag the drain by a heartbeat) passes the send on
            // to the next group; an unreachable one too, for non-FIFO sends only.
            let start = match &key {
                Some(k) => (key_hash(k) % candidates.len() as u64) as usize,
                None => self.routes.next() % candidates.len(),
            };
            let mut answer = None;
            for i in 0..candidates.len() {
                let g = candidates[(start + i) % candidates.len()];
                tracing::Span::current().record("group", g.name.as_str());
                let mut c = match self.client(g) {
                    Ok(c) => c,
                    Err(e) => {
                        answer = Some(Err((g.name.clone(), e)));
                        continue;
                    }
                };
                match c.send_message(outgoing(&md, r.clone())).await {
                    Ok(resp) => {
                        let mut resp = resp.into_inner();
                        if is_drain_refusal(resp.status.as_ref()) {
                            answer = Some(Ok(resp));
                            continue;
                        }
                        for e in &mut resp.entries {
                            e.transaction_id = wrap_handle(&g.name, &e.transaction_id);
                            e.recall_handle = wrap_handle(&g.name, &e.recall_handle);
                        }
                        answer = Some(Ok(resp));
                        break;
                    }
                    Err(e) => {
                        warn!(group = %g.name, error = %e.message(), "send to broker group failed");
                        // Only a refused connection is certain not to have stored anything.
                        let retry = e.code() == tonic::Code::Unavailable && key.is_none();
                        answer = Some(Err((g.name.clone(), e)));
                        if !retry {
                            break;
                        }
                    }
                }
            }
            match answer {
                Some(Ok(resp)) => resp,
                Some(Err((g, e))) => v2::SendMessageResponse {
                    status: Some(unreachable_status(&md, &g, &e)),
                    entries: vec![],
                },
                None => v2::SendMessageResponse {
                    status: Some(fail(
                        &md,
                        Code::InternalServerError,
                        "no broker group tried",
                    )),
                    entries: vec![],
                },
            }
        };
        self.record("SendMessage", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    #[instrument(skip_all, name = "proxy.query_assignment")]
    async fn query_assignment(
        &self,
        req: Request<v2::QueryAssignmentRequest>,
    ) -> Result<Response<v2::QueryAssignmentResponse>, Status> {
        let t = Instant::now();
        let md = req.metadata().clone();
        let r = req.into_inner();
        let topic = topic_of(r.topic.as_ref());
        let endpoints = crate::service::advertised_endpoints(r.endpoints.as_ref(), &self.advertise);
        let resp = match self
            .ask_holders(&md, &topic, r, |mut c, r| async move {
                c.query_assignment(r).await
            })
            .await
        {
            Err(s) => v2::QueryAssignmentResponse {
                status: Some(s),
                assignments: vec![],
            },
            Ok(answers) => {
                let mut assignments = Vec::new();
                let mut first_err = None;
                for (g, a) in answers {
                    if a.status.as_ref().is_some_and(|s| s.code == Code::Ok as i32) {
                        for mut x in a.assignments {
                            if let Some(q) = x.message_queue.as_mut() {
                                relabel(q, &g, &endpoints);
                            }
                            assignments.push(x);
                        }
                    } else if first_err.is_none() {
                        first_err = a.status;
                    }
                }
                v2::QueryAssignmentResponse {
                    status: if assignments.is_empty() {
                        first_err.or_else(|| Some(status::ok()))
                    } else {
                        Some(status::ok())
                    },
                    assignments,
                }
            }
        };
        self.record("QueryAssignment", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    type ReceiveMessageStream = BoxStream<v2::ReceiveMessageResponse>;

    #[instrument(skip_all, name = "proxy.receive_message", fields(group))]
    async fn receive_message(
        &self,
        req: Request<v2::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        let md = req.metadata().clone();
        let r = req.into_inner();
        let Some((g, probes)) = self.receive_plan(r.message_queue.as_ref()) else {
            let s = fail(&md, Code::InternalServerError, "no broker group is alive");
            let one = v2::ReceiveMessageResponse {
                content: Some(v2::receive_message_response::Content::Status(s)),
            };
            return Ok(Response::new(Box::pin(tokio_stream::once(Ok(one)))));
        };
        // Several groups: ask each once without waiting, starting with the chosen one, so a
        // backlog on one group is served at once instead of after long polls on empty ones.
        // Only when none has anything does the receive long-poll, on the chosen group.
        for other in probes {
            let mut quick = r.clone();
            quick.long_polling_timeout = Some(prost_types::Duration::default());
            let Ok(mut c) = self.client(&other) else {
                continue;
            };
            let Ok(s) = c.receive_message(outgoing(&md, quick)).await else {
                continue;
            };
            let items: Vec<v2::ReceiveMessageResponse> =
                s.into_inner().filter_map(|i| i.ok()).collect().await;
            let has_messages = items.iter().any(|i| {
                matches!(
                    i.content,
                    Some(v2::receive_message_response::Content::Message(_))
                )
            });
            if has_messages {
                tracing::Span::current().record("group", other.name.as_str());
                let out: Vec<Result<v2::ReceiveMessageResponse, Status>> = items
                    .into_iter()
                    .map(|resp| Ok(wrap_response(resp, &other.name)))
                    .collect();
                return Ok(Response::new(Box::pin(tokio_stream::iter(out))));
            }
        }
        tracing::Span::current().record("group", g.name.as_str());
        let mut c = self.client(&g)?;
        match c.receive_message(outgoing(&md, r)).await {
            Ok(s) => {
                let name = g.name.clone();
                let out = s
                    .into_inner()
                    .map(move |item| item.map(|resp| wrap_response(resp, &name)));
                Ok(Response::new(Box::pin(out)))
            }
            Err(e) => {
                let s = unreachable_status(&md, &g.name, &e);
                let one = v2::ReceiveMessageResponse {
                    content: Some(v2::receive_message_response::Content::Status(s)),
                };
                Ok(Response::new(Box::pin(tokio_stream::once(Ok(one)))))
            }
        }
    }

    #[instrument(skip_all, name = "proxy.ack_message")]
    async fn ack_message(
        &self,
        req: Request<v2::AckMessageRequest>,
    ) -> Result<Response<v2::AckMessageResponse>, Status> {
        let t = Instant::now();
        let md = req.metadata().clone();
        let r = req.into_inner();
        let mut by_group: BTreeMap<String, (GroupRoute, Vec<v2::AckMessageEntry>)> =
            BTreeMap::new();
        let mut results = Vec::new();
        for mut e in r.entries.clone() {
            match self.resolve_handle(
                &md,
                &e.receipt_handle,
                "receipt handle",
                Code::InvalidReceiptHandle,
            ) {
                Ok((g, h)) => {
                    e.receipt_handle = h;
                    by_group
                        .entry(g.name.clone())
                        .or_insert_with(|| (g, Vec::new()))
                        .1
                        .push(e);
                }
                Err(status) => results.push(v2::AckMessageResultEntry {
                    message_id: e.message_id.clone(),
                    receipt_handle: e.receipt_handle.clone(),
                    status: Some(status),
                }),
            }
        }
        for (group, (g, entries)) in by_group {
            let sub = v2::AckMessageRequest {
                entries: entries.clone(),
                ..r.clone()
            };
            match self.client(&g)?.ack_message(outgoing(&md, sub)).await {
                Ok(a) => {
                    for mut x in a.into_inner().entries {
                        x.receipt_handle = wrap_handle(&group, &x.receipt_handle);
                        results.push(x);
                    }
                }
                Err(e) => {
                    let s = unreachable_status(&md, &group, &e);
                    for e in entries {
                        results.push(v2::AckMessageResultEntry {
                            message_id: e.message_id,
                            receipt_handle: wrap_handle(&group, &e.receipt_handle),
                            status: Some(s.clone()),
                        });
                    }
                }
            }
        }
        let all_ok = results
            .iter()
            .all(|e| e.status.as_ref().is_some_and(|s| s.code == Code::Ok as i32));
        let status = if all_ok {
            status::ok()
        } else if results.len() == 1 {
            results[0].status.clone().unwrap_or_else(status::ok)
        } else {
            status::status(Code::MultipleResults, "some entries failed; see each entry")
        };
        self.record("AckMessage", t, Some(&status));
        Ok(Response::new(v2::AckMessageResponse {
            status: Some(status),
            entries: results,
        }))
    }

    #[instrument(skip_all, name = "proxy.forward_to_dlq")]
    async fn forward_message_to_dead_letter_queue(
        &self,
        req: Request<v2::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<v2::ForwardMessageToDeadLetterQueueResponse>, Status> {
        let md = req.metadata().clone();
        let mut r = req.into_inner();
        let status = match self.resolve_handle(
            &md,
            &r.receipt_handle,
            "receipt handle",
            Code::InvalidReceiptHandle,
        ) {
            Err(s) => s,
            Ok((g, h)) => {
                r.receipt_handle = h;
                match self
                    .client(&g)?
                    .forward_message_to_dead_letter_queue(outgoing(&md, r))
                    .await
                {
                    Ok(a) => a.into_inner().status.unwrap_or_else(status::ok),
                    Err(e) => unreachable_status(&md, &g.name, &e),
                }
            }
        };
        Ok(Response::new(v2::ForwardMessageToDeadLetterQueueResponse {
            status: Some(status),
        }))
    }

    type PullMessageStream = BoxStream<v2::PullMessageResponse>;

    #[instrument(skip_all, name = "proxy.pull_message")]
    async fn pull_message(
        &self,
        req: Request<v2::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, Status> {
        let md = req.metadata().clone();
        let r = req.into_inner();
        let mut c = self.queue_client(r.message_queue.as_ref())?;
        let s = c.pull_message(outgoing(&md, r)).await?;
        Ok(Response::new(Box::pin(s.into_inner())))
    }

    async fn update_offset(
        &self,
        req: Request<v2::UpdateOffsetRequest>,
    ) -> Result<Response<v2::UpdateOffsetResponse>, Status> {
        let md = req.metadata().clone();
        let r = req.into_inner();
        let mut c = self.queue_client(r.message_queue.as_ref())?;
        c.update_offset(outgoing(&md, r)).await
    }

    async fn get_offset(
        &self,
        req: Request<v2::GetOffsetRequest>,
    ) -> Result<Response<v2::GetOffsetResponse>, Status> {
        let md = req.metadata().clone();
        let r = req.into_inner();
        let mut c = self.queue_client(r.message_queue.as_ref())?;
        c.get_offset(outgoing(&md, r)).await
    }

    async fn query_offset(
        &self,
        req: Request<v2::QueryOffsetRequest>,
    ) -> Result<Response<v2::QueryOffsetResponse>, Status> {
        let md = req.metadata().clone();
        let r = req.into_inner();
        let mut c = self.queue_client(r.message_queue.as_ref())?;
        c.query_offset(outgoing(&md, r)).await
    }

    #[instrument(skip_all, name = "proxy.end_transaction")]
    async fn end_transaction(
        &self,
        req: Request<v2::EndTransactionRequest>,
    ) -> Result<Response<v2::EndTransactionResponse>, Status> {
        let md = req.metadata().clone();
        let mut r = req.into_inner();
        let status = match self.resolve_handle(
            &md,
            &r.transaction_id,
            "transaction id",
            Code::InvalidTransactionId,
        ) {
            Err(s) => s,
            Ok((g, id)) => {
                r.transaction_id = id;
                match self.client(&g)?.end_transaction(outgoing(&md, r)).await {
                    Ok(a) => a.into_inner().status.unwrap_or_else(status::ok),
                    Err(e) => unreachable_status(&md, &g.name, &e),
                }
            }
        };
        Ok(Response::new(v2::EndTransactionResponse {
            status: Some(status),
        }))
    }

    type TelemetryStream = BoxStream<v2::TelemetryCommand>;

    #[instrument(skip_all, name = "proxy.telemetry")]
    async fn telemetry(
        &self,
        req: Request<tonic::Streaming<v2::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        let md = req.metadata().clone();
        if md.get("x-mq-client-id").is_none() {
            return Err(Status::invalid_argument(
                "header x-mq-client-id is required",
            ));
        }
        let mut inbound = req.into_inner();
        let view = self.routes.view();
        if view.groups.is_empty() {
            return Err(Status::unavailable("no broker group is alive"));
        }
        let (out_tx, out_rx) = mpsc::channel::<Result<v2::TelemetryCommand, Status>>(16);
        // Settings answers: the client sends Settings and expects one answer per command; every
        // group answers, so only as many answers as the client asked for are passed on.
        let asked = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let mut to_groups = Vec::new();
        for g in view.groups.iter() {
            let (tx, rx) = mpsc::channel::<v2::TelemetryCommand>(16);
            to_groups.push(tx);
            let mut c = self.client(g)?;
            let out = out_tx.clone();
            let (asked, answered) = (asked.clone(), answered.clone());
            let name = g.name.clone();
            let r = outgoing(&md, ReceiverStream::new(rx));
            tokio::spawn(async move {
                let mut s = match c.telemetry(r).await {
                    Ok(s) => s.into_inner(),
                    Err(e) => {
                        warn!(group = %name, error = %e.message(), "cannot open Telemetry to broker group");
                        return;
                    }
                };
                while let Ok(Some(mut cmd)) = s.message().await {
                    // A transaction check names the group's half message: route the answer back.
                    if let Some(
                        v2::telemetry_command::Command::RecoverOrphanedTransactionCommand(c),
                    ) = cmd.command.as_mut()
                    {
                        c.transaction_id = wrap_handle(&name, &c.transaction_id);
                    }
                    let is_settings = matches!(
                        cmd.command,
                        Some(v2::telemetry_command::Command::Settings(_))
                    );
                    if is_settings {
                        let n = answered.fetch_add(1, Ordering::AcqRel);
                        if n >= asked.load(Ordering::Acquire) {
                            answered.fetch_sub(1, Ordering::AcqRel);
                            continue;
                        }
                    }
                    if out.send(Ok(cmd)).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(out_tx);
        tokio::spawn(async move {
            while let Ok(Some(cmd)) = inbound.message().await {
                if matches!(
                    cmd.command,
                    Some(v2::telemetry_command::Command::Settings(_))
                ) {
                    asked.fetch_add(1, Ordering::AcqRel);
                }
                for tx in &to_groups {
                    let _ = tx.send(cmd.clone()).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    #[instrument(skip_all, name = "proxy.notify_client_termination")]
    async fn notify_client_termination(
        &self,
        req: Request<v2::NotifyClientTerminationRequest>,
    ) -> Result<Response<v2::NotifyClientTerminationResponse>, Status> {
        let md = req.metadata().clone();
        let r = req.into_inner();
        let status = broadcast(&self.routes, &md, r, |mut c, r| async move {
            c.notify_client_termination(r)
                .await
                .map(|x| x.into_inner().status)
        })
        .await;
        Ok(Response::new(v2::NotifyClientTerminationResponse {
            status: Some(status),
        }))
    }

    #[instrument(skip_all, name = "proxy.change_invisible_duration")]
    async fn change_invisible_duration(
        &self,
        req: Request<v2::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<v2::ChangeInvisibleDurationResponse>, Status> {
        let t = Instant::now();
        let md = req.metadata().clone();
        let mut r = req.into_inner();
        let failed = |s: v2::Status| v2::ChangeInvisibleDurationResponse {
            status: Some(s),
            receipt_handle: String::new(),
        };
        let resp = match self.resolve_handle(
            &md,
            &r.receipt_handle,
            "receipt handle",
            Code::InvalidReceiptHandle,
        ) {
            Err(s) => failed(s),
            Ok((g, h)) => {
                r.receipt_handle = h;
                match self
                    .client(&g)?
                    .change_invisible_duration(outgoing(&md, r))
                    .await
                {
                    Ok(a) => {
                        let mut a = a.into_inner();
                        a.receipt_handle = wrap_handle(&g.name, &a.receipt_handle);
                        a
                    }
                    Err(e) => failed(unreachable_status(&md, &g.name, &e)),
                }
            }
        };
        self.record("ChangeInvisibleDuration", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    #[instrument(skip_all, name = "proxy.recall_message")]
    async fn recall_message(
        &self,
        req: Request<v2::RecallMessageRequest>,
    ) -> Result<Response<v2::RecallMessageResponse>, Status> {
        let md = req.metadata().clone();
        let mut r = req.into_inner();
        let (g, h) =
            match self.resolve_handle(&md, &r.recall_handle, "recall handle", Code::BadRequest) {
                Ok(x) => x,
                Err(s) => {
                    return Ok(Response::new(v2::RecallMessageResponse {
                        status: Some(s),
                        message_id: String::new(),
                    }))
                }
            };
        r.recall_handle = h;
        self.client(&g)?.recall_message(outgoing(&md, r)).await
    }

    async fn sync_lite_subscription(
        &self,
        req: Request<v2::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<v2::SyncLiteSubscriptionResponse>, Status> {
        let md = req.metadata().clone();
        let r = req.into_inner();
        let g = self
            .routes
            .view()
            .groups
            .first()
            .cloned()
            .ok_or_else(|| Status::unavailable("no broker group is alive"))?;
        self.client(&g)?
            .sync_lite_subscription(outgoing(&md, r))
            .await
    }
}

/// Sends a request to every live group; OK when any answered OK.
async fn broadcast<Req, F, Fut>(
    routes: &Routes,
    md: &tonic::metadata::MetadataMap,
    req: Req,
    call: F,
) -> v2::Status
where
    Req: Clone,
    F: Fn(MessagingServiceClient<Channel>, Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<Option<v2::Status>, Status>>,
{
    let view = routes.view();
    let calls = view.groups.iter().filter_map(|g| {
        let c = routes.messaging(g).ok()?;
        Some(call(c, outgoing(md, req.clone())))
    });
    let answers = futures_util::future::join_all(calls).await;
    let mut first = None;
    for a in answers {
        match a {
            Ok(Some(s)) if s.code == Code::Ok as i32 => return s,
            Ok(Some(s)) => first = first.or(Some(s)),
            Ok(None) => return status::ok(),
            Err(e) => {
                first = first
                    .or_else(|| Some(fail(md, Code::InternalServerError, e.message().to_string())))
            }
        }
    }
    first.unwrap_or_else(|| fail(md, Code::InternalServerError, "no broker group is alive"))
}

/// Runs a proxy until SIGTERM or Ctrl-C.
pub async fn run(cfg: ProxyConfig) -> anyhow::Result<()> {
    let max_msg = 128 << 20;
    let routes = Arc::new(Routes::new(&cfg.nameservers, max_msg).map_err(|reason| {
        crate::config::ConfigError {
            field: "nameservers",
            reason,
        }
    })?);
    let metrics = Arc::new(Metrics::default());
    let grpc = TcpListener::bind(cfg.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on grpc-addr {}", cfg.grpc_addr))?;
    let http = TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("cannot listen on http-addr {}", cfg.http_addr))?;
    let grpc_addr = grpc.local_addr()?;
    let (tx, rx) = watch::channel(false);

    // First routes before serving, so the first client request already finds the groups.
    let answered = routes.refresh().await;
    if answered == 0 {
        warn!(nameservers = ?cfg.nameservers, "no name server answers yet; serving and retrying");
    }
    let refresher = tokio::spawn(routes.clone().refresh_loop(cfg.route_refresh, rx.clone()));

    let api = ProxyApi::new(routes.clone(), metrics.clone(), cfg.advertise_addr.clone());
    let admin = super::admin_proxy::AdminProxy::new(routes.clone());
    let messaging = MessagingServiceServer::new(api)
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    let router = super::http_router(routes.clone(), metrics.clone());
    let services = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .initial_stream_window_size(crate::cluster::routes::STREAM_WINDOW)
        .initial_connection_window_size(crate::cluster::routes::CONNECTION_WINDOW)
        .add_service(messaging)
        .add_service(AdminServer::new(admin).max_encoding_message_size(max_msg));
    info!(grpc = %grpc_addr, http = %cfg.http_addr, nameservers = ?cfg.nameservers, groups = routes.view().groups.len(), "ferromq proxy ready");
    let served =
        super::serve_until_signal(grpc, services, http, router, &tx, Duration::from_secs(10)).await;
    let _ = refresher.await;
    served?;
    info!("proxy stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_foreign_ones_are_refused() {
        let w = wrap_handle("group-a", "abc:def");
        assert_eq!(unwrap_handle(&w), Some(("group-a", "abc:def")));
        assert_eq!(wrap_handle("g", ""), "");
        assert_eq!(unwrap_handle("abc"), None);
        assert_eq!(unwrap_handle("fm::x"), None);
        assert_eq!(unwrap_handle("fm:g:"), None);
    }

    #[test]
    fn routes_name_the_group_and_point_at_the_proxy_tier() {
        let g = GroupRoute {
            name: "g7".into(),
            endpoint: "10.0.0.9:10911".into(),
            read_only: true,
            topics: Default::default(),
            total_lag: 0,
            queues_with_lag: 0,
            age_ms: 0,
        };
        let proxy = crate::service::advertised_endpoints(None, "proxy.example:8081");
        let mut q = v2::MessageQueue {
            permission: v2::Permission::ReadWrite as i32,
            broker: Some(v2::Broker {
                name: "standalone".into(),
                id: 0,
                endpoints: crate::service::advertised_endpoints(None, "10.0.0.9:10911").into(),
            }),
            ..Default::default()
        };
        relabel(&mut q, &g, &proxy);
        let b = q.broker.expect("broker kept");
        assert_eq!(b.name, "g7");
        assert_eq!(
            b.endpoints.expect("endpoints").addresses[0].host,
            "proxy.example"
        );
        assert_eq!(
            q.permission,
            v2::Permission::Read as i32,
            "a draining group is read-only"
        );
    }

    #[test]
    fn message_groups_hash_the_same_everywhere() {
        assert_eq!(key_hash("order-42"), key_hash("order-42"));
        assert_ne!(key_hash("order-42"), key_hash("order-43"));
    }
}
