//! The proxy's remoting port: classic clients and tools connect here, and the proxy forwards
//! each request to the broker group that owns it, over the groups' internal gRPC port (the
//! [`super::tunnel`]), exactly as the RocketMQ 5 side forwards RPCs. Delivery semantics stay in
//! the brokers; the proxy keeps nothing a crash could lose.
//!
//! ## How groups are presented
//! Each live broker group is one broker of the `DefaultCluster` cluster, named after the group,
//! whose only address is this proxy's remoting address. A topic's route lists the groups
//! holding it, each with its own queues (numbered from 0, per group), so every client request
//! comes back here naming its broker: 4.9.8 puts the broker name in `bname` (v2 sends: `n`) on
//! sends, pulls, offset requests, send-back and END_TRANSACTION, and in every queue of a lock
//! request. A request without one is routed by the commit-log offset it carries (brokers in a
//! cluster tag their offsets with their group; see `super::message::Offsets`), else to the
//! groups holding its topic.
//!
//! ## Answers
//! - Name-server requests (routes, cluster, topic lists, key/value settings) are answered here
//!   from the name servers' picture of the cluster. A group's retry topic is routable from the
//!   first request for it (its consumers' heartbeat creates it on every group).
//! - Heartbeats and unregistrations reach every live group; consumer lists are the union of
//!   every group's (each sees every member's heartbeat).
//! - Admin requests without a broker name reach the groups concerned and their answers are
//!   merged (topic stats, consume stats, connections, configs, offset resets); creating a
//!   topic creates it on every writable group. Tools send such a request once per broker of
//!   the cluster or route, all to this address: merged answers are keyed by queue, so the
//!   repeats change nothing, except for QUERY_MESSAGE, whose results are lists: the k-th
//!   identical query on a connection is answered by the k-th group holding the topic, so one
//!   round of the tool's queries returns each message once.
//! - The brokers' own requests to a client (membership notifications, transaction checks,
//!   running info, offset resets) come back on the tunnel and are passed to the client on its
//!   connection; a running-info answer is passed back.
//!
//! Each client connection gets one tunnel stream per group it talks to, opened on first use
//! and closed with the connection. A stream that breaks (a broker restart) is reopened by the
//! next request; the broker knows the client again at its next heartbeat (30 s).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ferromq_proto::tunnel::Frame;
use ferromq_remoting::body::{
    self, ConsumeStats, ConsumerConnection, GetConsumerListByGroupResponseBody,
    LockBatchRequestBody, LockBatchResponseBody, ProducerConnection, ResetOffsetBody,
    SubscriptionGroupWrapper, TopicConfigSerializeWrapper, TopicList, TopicStatsTable,
};
use ferromq_remoting::code::{request, response};
use ferromq_remoting::command::FLAG_RESPONSE;
use ferromq_remoting::custom::{
    ConsumerSendMsgBackRequestHeader, EndTransactionRequestHeader, GetRouteInfoRequestHeader,
    QueryMessageRequestHeader, TopicRequestHeader, ViewMessageRequestHeader,
};
use ferromq_remoting::frame::{decode_frame_bytes, encode_frame_bytes};
use ferromq_remoting::Command;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

use super::client::CLIENT_CALL_TIMEOUT;
use super::connection::{Answer, Front, Peer, Service};
use super::message::{tag_of, Offsets};
use super::namesrv::{
    cluster_body, is_visible, no_route, perm_bits, route_answer, route_data, BrokerQueues,
};
use super::status::RemotingError;
use super::{not_supported, observe, record, Handled, VERSION};
use crate::admin::service::permission_from_number;
use crate::metrics::Metrics;
use crate::roles::proxy::routes::{GroupRoute, Routes};

/// Longest a forwarded request waits for its broker (pulls hold up to 30 s).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);
/// Frames queued for one tunnel stream.
const SESSION_QUEUE: usize = 1024;
/// Identical queries remembered per connection (see the module docs).
const MAX_QUERY_ROUNDS: usize = 1024;

/// The proxy's remoting service.
pub struct ProxyRemoting {
    routes: Arc<Routes>,
    metrics: Arc<Metrics>,
    front: Arc<Front>,
    conns: Mutex<HashMap<u64, Arc<ClientConn>>>,
    kv: Mutex<BTreeMap<(String, String), String>>,
}

/// One client connection's tunnel streams.
struct ClientConn {
    peer: Arc<Peer>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    query_rounds: Mutex<HashMap<(String, String, bool), usize>>,
}

/// One tunnel stream: a client connection's requests to one broker group.
struct Session {
    group: String,
    tx: Mutex<Option<mpsc::Sender<Frame>>>,
    pending: Mutex<HashMap<i32, oneshot::Sender<Command>>>,
    next_opaque: AtomicI32,
    closed: AtomicBool,
}

impl Session {
    fn sender(&self) -> Result<mpsc::Sender<Frame>, RemotingError> {
        self.tx
            .lock()
            .clone()
            .filter(|_| !self.closed.load(Ordering::Acquire))
            .ok_or_else(|| self.gone())
    }

    fn gone(&self) -> RemotingError {
        RemotingError::system(format!(
            "the connection to broker group {} is closed",
            self.group
        ))
    }

    async fn write(&self, cmd: &Command) -> Result<(), RemotingError> {
        let data = encode_frame_bytes(cmd).map_err(|e| RemotingError::system(e.to_string()))?;
        self.sender()?
            .send(Frame { data })
            .await
            .map_err(|_| self.gone())
    }

    /// Sends a request and waits for the group's answer (carrying the request's opaque).
    async fn call(&self, req: &Command) -> Handled {
        let mut cmd = req.clone();
        let opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        cmd.opaque = opaque;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(opaque, tx);
        if let Err(e) = self.write(&cmd).await {
            self.pending.lock().remove(&opaque);
            return Err(e);
        }
        match tokio::time::timeout(FORWARD_TIMEOUT, rx).await {
            Ok(Ok(mut answer)) => {
                answer.opaque = req.opaque;
                Ok(answer)
            }
            Ok(Err(_)) => Err(self.gone()),
            Err(_) => {
                self.pending.lock().remove(&opaque);
                Err(RemotingError::system(format!(
                    "broker group {} did not answer within {FORWARD_TIMEOUT:?}",
                    self.group
                )))
            }
        }
    }

    fn complete(&self, answer: Command) {
        if let Some(tx) = self.pending.lock().remove(&answer.opaque) {
            let _ = tx.send(answer);
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.tx.lock().take();
        self.pending.lock().clear();
    }
}

impl ClientConn {
    fn close(&self) {
        for (_, s) in self.sessions.lock().drain() {
            s.close();
        }
    }
}

impl ProxyRemoting {
    pub fn new(routes: Arc<Routes>, metrics: Arc<Metrics>, front: Arc<Front>) -> Arc<Self> {
        Arc::new(ProxyRemoting {
            routes,
            metrics,
            front,
            conns: Mutex::new(HashMap::new()),
            kv: Mutex::new(BTreeMap::new()),
        })
    }

    fn conn(&self, peer: &Arc<Peer>) -> Arc<ClientConn> {
        self.conns
            .lock()
            .entry(peer.id())
            .or_insert_with(|| {
                Arc::new(ClientConn {
                    peer: peer.clone(),
                    sessions: Mutex::new(HashMap::new()),
                    query_rounds: Mutex::new(HashMap::new()),
                })
            })
            .clone()
    }

    /// The connection's stream to `g`, opened (in the background) when it has none.
    fn session(
        &self,
        conn: &Arc<ClientConn>,
        g: &GroupRoute,
    ) -> Result<Arc<Session>, RemotingError> {
        let mut sessions = conn.sessions.lock();
        if let Some(s) = sessions.get(&g.name) {
            if !s.closed.load(Ordering::Acquire) {
                return Ok(s.clone());
            }
        }
        let client = self
            .routes
            .tunnel(g)
            .map_err(|e| RemotingError::system(format!("broker group {}: {e}", g.name)))?;
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let s = Arc::new(Session {
            group: g.name.clone(),
            tx: Mutex::new(Some(tx)),
            pending: Mutex::new(HashMap::new()),
            next_opaque: AtomicI32::new(1),
            closed: AtomicBool::new(false),
        });
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        for (k, v) in [
            (super::tunnel::CLIENT_ADDR, conn.peer.addr.as_str()),
            (super::tunnel::REMOTING_ADDR, self.front.addr.as_str()),
        ] {
            if let Ok(v) = v.parse() {
                req.metadata_mut().insert(k, v);
            }
        }
        tokio::spawn(pump(s.clone(), client, req, Arc::downgrade(conn)));
        sessions.insert(g.name.clone(), s.clone());
        Ok(s)
    }

    /// Forwards a request to one group; one-way requests get no answer (`Ok(None)`).
    async fn forward(
        &self,
        conn: &Arc<ClientConn>,
        g: &GroupRoute,
        req: &Command,
    ) -> Result<Option<Command>, RemotingError> {
        let s = self.session(conn, g)?;
        if req.is_oneway() {
            s.write(req).await?;
            return Ok(None);
        }
        s.call(req).await.map(Some)
    }

    /// Forwards to one group and answers with its answer.
    async fn to_group(&self, conn: &Arc<ClientConn>, g: &GroupRoute, req: &Command) -> Handled {
        Ok(self
            .forward(conn, g, req)
            .await?
            .unwrap_or_else(|| req.response_to(response::SUCCESS, None)))
    }

    /// Forwards to each group at once; answers each group's result.
    async fn fan_out(
        &self,
        conn: &Arc<ClientConn>,
        groups: &[GroupRoute],
        req: &Command,
    ) -> Vec<(GroupRoute, Handled)> {
        let calls = groups.iter().map(|g| async move {
            let r = self.to_group(conn, g, req).await;
            (g.clone(), r)
        });
        futures_util::future::join_all(calls).await
    }

    fn group(&self, name: &str) -> Result<GroupRoute, RemotingError> {
        self.routes
            .view()
            .group(name)
            .cloned()
            .ok_or_else(|| RemotingError::system(format!("broker group {name} is not alive")))
    }

    fn live_groups(&self) -> Result<Vec<GroupRoute>, RemotingError> {
        let groups = self.routes.view().groups.clone();
        if groups.is_empty() {
            return Err(RemotingError::new(
                response::SERVICE_NOT_AVAILABLE,
                "no broker group is alive (the name servers know none)",
            ));
        }
        Ok(groups)
    }

    /// Groups holding `topic`, else every live group (so a broker answers TOPIC_NOT_EXIST, or
    /// creates it when auto-creation is on).
    fn holders(&self, topic: &str) -> Result<Vec<GroupRoute>, RemotingError> {
        let holding: Vec<GroupRoute> = self.routes.view().holding(topic).cloned().collect();
        if holding.is_empty() {
            return self.live_groups();
        }
        Ok(holding)
    }

    /// Groups whose offset tag is `tag` (more than one only when two names hash alike).
    fn tagged(&self, tag: Option<u8>) -> Vec<GroupRoute> {
        self.routes
            .view()
            .groups
            .iter()
            .filter(|g| Some(Offsets::for_group(&g.name).tag) == tag)
            .cloned()
            .collect()
    }

    /// A request naming its broker in `bname` (v2 sends: `n`) goes to that group; one without
    /// goes to the first of `fallback`.
    async fn by_broker_name(
        &self,
        conn: &Arc<ClientConn>,
        req: &Command,
        fallback: impl FnOnce() -> Result<Vec<GroupRoute>, RemotingError>,
    ) -> Handled {
        let named = req
            .ext_fields
            .get("bname")
            .or_else(|| {
                (req.code == request::SEND_MESSAGE_V2 || req.code == request::SEND_BATCH_MESSAGE)
                    .then(|| req.ext_fields.get("n"))
                    .flatten()
            })
            .filter(|n| !n.is_empty());
        let g = match named {
            Some(n) => self.group(n)?,
            None => {
                let candidates = fallback()?;
                let i = self.routes.next() % candidates.len().max(1);
                candidates
                    .get(i)
                    .cloned()
                    .ok_or_else(|| RemotingError::system("no broker group for this request"))?
            }
        };
        record(None, None);
        self.to_group(conn, &g, req).await
    }

    /// Tries `groups` in turn until one answers SUCCESS; answers the last answer otherwise.
    async fn first_success(
        &self,
        conn: &Arc<ClientConn>,
        groups: Vec<GroupRoute>,
        req: &Command,
    ) -> Handled {
        let mut last = Err(RemotingError::system("no broker group to ask"));
        for g in groups {
            last = self.to_group(conn, &g, req).await;
            if matches!(&last, Ok(a) if a.code == response::SUCCESS) {
                return last;
            }
        }
        last
    }

    /// Routes one request (see the module docs).
    async fn route(self: &Arc<Self>, conn: &Arc<ClientConn>, req: &Command) -> Handled {
        use request::*;
        match req.code {
            GET_ROUTEINFO_BY_TOPIC => self.topic_route(req),
            GET_BROKER_CLUSTER_INFO => {
                let brokers: Vec<(String, String)> = self
                    .routes
                    .view()
                    .groups
                    .iter()
                    .map(|g| (g.name.clone(), self.front.addr.clone()))
                    .collect();
                Ok(req
                    .response_to(response::SUCCESS, None)
                    .with_body(body::encode(&cluster_body(&brokers))))
            }
            GET_ALL_TOPIC_LIST_FROM_NAMESERVER
            | GET_TOPICS_BY_CLUSTER
            | GET_TOPIC_NAME_LIST
            | GET_SYSTEM_TOPIC_LIST_FROM_NS => {
                let system = req.code == GET_SYSTEM_TOPIC_LIST_FROM_NS;
                let names: BTreeSet<String> = self
                    .routes
                    .view()
                    .groups
                    .iter()
                    .flat_map(|g| g.topics.keys().cloned())
                    .filter(|t| is_visible(t))
                    .filter(|t| !system || ferromq_engine::topics::is_system_topic(t))
                    .collect();
                Ok(req
                    .response_to(response::SUCCESS, None)
                    .with_body(body::encode(&TopicList {
                        topic_list: names.into_iter().collect(),
                        broker_addr: None,
                    })))
            }
            PUT_KV_CONFIG | GET_KV_CONFIG | DELETE_KV_CONFIG => self.kv(req),
            DELETE_TOPIC_IN_NAMESRV | REGISTER_TOPIC_IN_NAMESRV => {
                Ok(req.response_to(response::SUCCESS, None))
            }
            HEART_BEAT | UNREGISTER_CLIENT => {
                let answers = self.fan_out(conn, &self.live_groups()?, req).await;
                first_ok(answers)
            }
            GET_CONSUMER_LIST_BY_GROUP => {
                let answers = self.fan_out(conn, &self.live_groups()?, req).await;
                merge(
                    req,
                    answers,
                    |acc: &mut GetConsumerListByGroupResponseBody, b| {
                        acc.consumer_id_list.extend(b.consumer_id_list);
                        acc.consumer_id_list.sort();
                        acc.consumer_id_list.dedup();
                    },
                )
            }
            LOCK_BATCH_MQ | UNLOCK_BATCH_MQ => self.locks(conn, req).await,
            SEND_MESSAGE | SEND_MESSAGE_V2 | SEND_BATCH_MESSAGE => {
                let topic = ferromq_remoting::custom::send_header(req.code, &req.ext_fields)
                    .map(|h| h.topic)
                    .unwrap_or_default();
                record(Some(&topic), None);
                self.by_broker_name(conn, req, || {
                    let view = self.routes.view();
                    let writable: Vec<GroupRoute> =
                        view.writable_for(&topic).into_iter().cloned().collect();
                    if writable.is_empty() {
                        return Err(RemotingError::new(
                            response::NO_PERMISSION,
                            format!("topic {topic} has no writable broker group"),
                        ));
                    }
                    Ok(writable)
                })
                .await
            }
            PULL_MESSAGE
            | QUERY_CONSUMER_OFFSET
            | UPDATE_CONSUMER_OFFSET
            | GET_MAX_OFFSET
            | GET_MIN_OFFSET
            | GET_EARLIEST_MSG_STORETIME
            | SEARCH_OFFSET_BY_TIMESTAMP => {
                let topic = req.ext_fields.get("topic").cloned().unwrap_or_default();
                record(
                    Some(&topic),
                    req.ext_fields.get("consumerGroup").map(String::as_str),
                );
                self.by_broker_name(conn, req, || self.holders(&topic))
                    .await
            }
            CONSUMER_SEND_MSG_BACK => {
                let h: ConsumerSendMsgBackRequestHeader = req.header()?;
                let tagged = self.tagged(tag_of(h.offset));
                self.by_broker_name(conn, req, || non_empty(tagged)).await
            }
            END_TRANSACTION => {
                let h: EndTransactionRequestHeader = req.header()?;
                let tagged = self.tagged(tag_of(h.commit_log_offset));
                self.by_broker_name(conn, req, || non_empty(tagged)).await
            }
            VIEW_MESSAGE_BY_ID => {
                let h: ViewMessageRequestHeader = req.header()?;
                self.first_success(conn, self.tagged(tag_of(h.offset)), req)
                    .await
            }
            QUERY_MESSAGE => self.query(conn, req).await,
            GET_BROKER_CONFIG | GET_BROKER_RUNTIME_INFO | CHECK_CLIENT_CONFIG => {
                self.first_success(conn, self.live_groups()?, req).await
            }
            GET_CONSUMER_RUNNING_INFO | GET_SUBSCRIPTIONGROUP_CONFIG => {
                self.first_success(conn, self.live_groups()?, req).await
            }
            GET_TOPIC_CONFIG => {
                let h: TopicRequestHeader = req.header()?;
                self.first_success(conn, self.holders(&h.topic)?, req).await
            }
            UPDATE_AND_CREATE_TOPIC => {
                let writable: Vec<GroupRoute> = self
                    .live_groups()?
                    .into_iter()
                    .filter(|g| !g.read_only)
                    .collect();
                all_ok(self.fan_out(conn, &non_empty(writable)?, req).await)
            }
            DELETE_TOPIC_IN_BROKER
            | UPDATE_AND_CREATE_SUBSCRIPTIONGROUP
            | DELETE_SUBSCRIPTIONGROUP => {
                all_ok(self.fan_out(conn, &self.live_groups()?, req).await)
            }
            GET_TOPIC_STATS_INFO => {
                let h: TopicRequestHeader = req.header()?;
                let answers = self.fan_out(conn, &self.holders(&h.topic)?, req).await;
                merge(req, answers, |acc: &mut TopicStatsTable, b| {
                    acc.offset_table.0.extend(b.offset_table.0);
                    acc.topic_put_tps += b.topic_put_tps;
                })
            }
            GET_ALL_TOPIC_CONFIG => {
                let answers = self.fan_out(conn, &self.live_groups()?, req).await;
                merge(req, answers, |acc: &mut TopicConfigSerializeWrapper, b| {
                    for (k, v) in b.topic_config_table {
                        acc.topic_config_table.entry(k).or_insert(v);
                    }
                    acc.data_version = b.data_version;
                })
            }
            GET_CONSUME_STATS => {
                let answers = self.fan_out(conn, &self.live_groups()?, req).await;
                merge(req, answers, |acc: &mut ConsumeStats, b| {
                    acc.offset_table.0.extend(b.offset_table.0);
                    acc.consume_tps += b.consume_tps;
                })
            }
            GET_CONSUMER_CONNECTION_LIST => {
                let answers = self.fan_out(conn, &self.live_groups()?, req).await;
                merge(req, answers, |acc: &mut ConsumerConnection, b| {
                    add_connections(&mut acc.connection_set, b.connection_set);
                    acc.subscription_table.extend(b.subscription_table);
                    acc.consume_type = b.consume_type;
                    acc.message_model = b.message_model;
                    acc.consume_from_where = b.consume_from_where;
                })
            }
            GET_PRODUCER_CONNECTION_LIST => {
                let answers = self.fan_out(conn, &self.live_groups()?, req).await;
                merge(req, answers, |acc: &mut ProducerConnection, b| {
                    add_connections(&mut acc.connection_set, b.connection_set);
                })
            }
            GET_ALL_SUBSCRIPTIONGROUP_CONFIG => {
                let answers = self.fan_out(conn, &self.live_groups()?, req).await;
                merge(req, answers, |acc: &mut SubscriptionGroupWrapper, b| {
                    for (k, v) in b.subscription_group_table {
                        acc.subscription_group_table.entry(k).or_insert(v);
                    }
                    acc.data_version = b.data_version;
                })
            }
            INVOKE_BROKER_TO_RESET_OFFSET => {
                let topic = req.ext_fields.get("topic").cloned().unwrap_or_default();
                let answers = self.fan_out(conn, &self.holders(&topic)?, req).await;
                merge(req, answers, |acc: &mut ResetOffsetBody, b| {
                    acc.offset_table.0.extend(b.offset_table.0);
                })
            }
            QUERY_TOPIC_CONSUME_BY_WHO => {
                let answers = self.fan_out(conn, &self.live_groups()?, req).await;
                merge(req, answers, |acc: &mut GroupList, b| {
                    acc.group_list.extend(b.group_list);
                    acc.group_list.sort();
                    acc.group_list.dedup();
                })
            }
            other => Err(not_supported(other)),
        }
    }

    fn topic_route(&self, req: &Command) -> Handled {
        let h: GetRouteInfoRequestHeader = req.header()?;
        record(Some(&h.topic), None);
        let view = self.routes.view();
        let mut brokers: Vec<BrokerQueues> = view
            .holding(&h.topic)
            .filter(|_| is_visible(&h.topic))
            .filter_map(|g| {
                let t = g.topics.get(&h.topic)?;
                Some(BrokerQueues {
                    broker_name: g.name.clone(),
                    addr: self.front.addr.clone(),
                    queues: t.queues,
                    perm: perm_bits(permission_from_number(t.permission), !g.read_only),
                })
            })
            .collect();
        if brokers.is_empty() && ferromq_engine::topics::retry_group(&h.topic).is_some() {
            // Consumers ask their retry topic's route before their first heartbeat creates it.
            brokers = view
                .groups
                .iter()
                .map(|g| BrokerQueues {
                    broker_name: g.name.clone(),
                    addr: self.front.addr.clone(),
                    queues: 1,
                    perm: perm_bits(ferromq_store::Permission::ReadWrite, !g.read_only),
                })
                .collect();
        }
        if brokers.is_empty() {
            return Err(no_route(&h.topic));
        }
        Ok(route_answer(
            req,
            h.accept_standard_json_only,
            &route_data(&brokers),
        ))
    }

    fn kv(&self, req: &Command) -> Handled {
        let ns = req.ext_fields.get("namespace").cloned().unwrap_or_default();
        let key = req.ext_fields.get("key").cloned().unwrap_or_default();
        let k = (ns, key);
        match req.code {
            request::PUT_KV_CONFIG => {
                let v = req.ext_fields.get("value").cloned().unwrap_or_default();
                self.kv.lock().insert(k, v);
                Ok(req.response_to(response::SUCCESS, None))
            }
            request::GET_KV_CONFIG => match self.kv.lock().get(&k).cloned() {
                Some(v) => {
                    let mut out = req.response_to(response::SUCCESS, None);
                    out.ext_fields.insert("value".into(), v);
                    Ok(out)
                }
                None => Err(RemotingError::new(
                    response::QUERY_NOT_FOUND,
                    format!("No config item, Namespace: {} Key: {}", k.0, k.1),
                )),
            },
            _ => {
                self.kv.lock().remove(&k);
                Ok(req.response_to(response::SUCCESS, None))
            }
        }
    }

    /// LOCK_BATCH_MQ / UNLOCK_BATCH_MQ: each queue to its group, the answers merged.
    async fn locks(&self, conn: &Arc<ClientConn>, req: &Command) -> Handled {
        let b: LockBatchRequestBody = body::decode(&req.body)?;
        record(None, Some(&b.consumer_group));
        let mut by_group: BTreeMap<String, Vec<body::MessageQueue>> = BTreeMap::new();
        for mq in &b.mq_set {
            by_group
                .entry(mq.broker_name.clone())
                .or_default()
                .push(mq.clone());
        }
        let mut locked = Vec::new();
        let mut failure = None;
        for (name, mqs) in by_group {
            let Ok(g) = self.group(&name) else { continue };
            let mut part = req.clone();
            part.body = body::encode(&LockBatchRequestBody {
                mq_set: mqs,
                ..b.clone()
            })
            .into();
            match self.to_group(conn, &g, &part).await {
                Ok(a) if a.code == response::SUCCESS => {
                    if req.code == request::LOCK_BATCH_MQ {
                        let got: LockBatchResponseBody = body::decode(&a.body)?;
                        locked.extend(got.lock_ok_mq_set);
                    }
                }
                Ok(a) => failure = Some(RemotingError::new(a.code, a.remark.unwrap_or_default())),
                Err(e) => failure = Some(e),
            }
        }
        if req.code == request::UNLOCK_BATCH_MQ {
            return match failure {
                Some(e) => Err(e),
                None => Ok(req.response_to(response::SUCCESS, None)),
            };
        }
        Ok(req
            .response_to(response::SUCCESS, None)
            .with_body(body::encode(&LockBatchResponseBody {
                lock_ok_mq_set: locked,
            })))
    }

    /// QUERY_MESSAGE: the k-th identical query of a connection goes to the k-th group holding
    /// the topic (see the module docs).
    async fn query(&self, conn: &Arc<ClientConn>, req: &Command) -> Handled {
        let h: QueryMessageRequestHeader = req.header()?;
        record(Some(&h.topic), None);
        let groups = self.holders(&h.topic)?;
        let round = {
            let mut rounds = conn.query_rounds.lock();
            if rounds.len() > MAX_QUERY_ROUNDS {
                rounds.clear();
            }
            let n = rounds
                .entry((
                    h.topic.clone(),
                    h.key.clone(),
                    h.unique_key_query == Some(true),
                ))
                .or_insert(0);
            let k = *n;
            *n += 1;
            k
        };
        let g = &groups[round % groups.len()];
        self.to_group(conn, g, req).await
    }
}

/// GroupList of QUERY_TOPIC_CONSUME_BY_WHO.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct GroupList {
    group_list: Vec<String>,
}

fn non_empty(groups: Vec<GroupRoute>) -> Result<Vec<GroupRoute>, RemotingError> {
    if groups.is_empty() {
        return Err(RemotingError::system(
            "no live broker group owns this request",
        ));
    }
    Ok(groups)
}

/// The first SUCCESS among the groups' answers, else the first answer.
fn first_ok(answers: Vec<(GroupRoute, Handled)>) -> Handled {
    let mut first = None;
    for (_, a) in answers {
        match a {
            Ok(a) if a.code == response::SUCCESS => return Ok(a),
            other => {
                if first.is_none() {
                    first = Some(other);
                }
            }
        }
    }
    first.unwrap_or_else(|| Err(RemotingError::system("no broker group answered")))
}

/// SUCCESS when every group answered SUCCESS, else the first other answer.
fn all_ok(answers: Vec<(GroupRoute, Handled)>) -> Handled {
    let mut ok = None;
    for (g, a) in answers {
        match a {
            Ok(a) if a.code == response::SUCCESS => ok = Some(a),
            Ok(a) => {
                warn!(group = %g.name, code = a.code, remark = ?a.remark, "broker group refused");
                return Ok(a);
            }
            Err(e) => return Err(e),
        }
    }
    ok.ok_or_else(|| RemotingError::system("no broker group answered"))
}

/// One answer whose body merges the SUCCESS bodies of every group (`fold` adds one to the
/// accumulator); the first other answer when none succeeded.
fn merge<T, F>(req: &Command, answers: Vec<(GroupRoute, Handled)>, fold: F) -> Handled
where
    T: DeserializeOwned + serde::Serialize + Default,
    F: Fn(&mut T, T),
{
    let mut acc: Option<T> = None;
    let mut other = None;
    for (_, a) in answers {
        match a {
            Ok(a) if a.code == response::SUCCESS => {
                let b: T = body::decode(&a.body)?;
                fold(acc.get_or_insert_with(T::default), b);
            }
            a => {
                if other.is_none() {
                    other = Some(a);
                }
            }
        }
    }
    match acc {
        Some(b) => Ok(req
            .response_to(response::SUCCESS, None)
            .with_body(body::encode(&b))),
        None => other.unwrap_or_else(|| Err(RemotingError::system("no broker group answered"))),
    }
}

/// Carries one tunnel stream: frames from the group to the waiting calls, the group's own
/// requests to the client; closes the session when the stream ends.
async fn pump(
    s: Arc<Session>,
    mut client: ferromq_proto::tunnel::tunnel_client::TunnelClient<tonic::transport::Channel>,
    req: tonic::Request<ReceiverStream<Frame>>,
    conn: Weak<ClientConn>,
) {
    let mut stream = match client.open(req).await {
        Ok(r) => r.into_inner(),
        Err(e) => {
            warn!(group = %s.group, error = %e.message(), "cannot open the tunnel to the broker group");
            s.close();
            return;
        }
    };
    while let Some(item) = stream.next().await {
        let cmd = match item.map(|f| decode_frame_bytes(f.data)) {
            Ok(Ok(cmd)) => cmd,
            Ok(Err(e)) => {
                warn!(group = %s.group, error = %e, "unreadable frame from the broker group");
                break;
            }
            Err(status) => {
                debug!(group = %s.group, error = %status.message(), "tunnel closed by the broker group");
                break;
            }
        };
        if cmd.is_response() {
            s.complete(cmd);
            continue;
        }
        let Some(conn) = conn.upgrade() else { break };
        tokio::spawn(to_client(conn, s.clone(), cmd));
    }
    s.close();
}

/// Passes a broker's request to the client, and a two-way request's answer back.
async fn to_client(conn: Arc<ClientConn>, s: Arc<Session>, cmd: Command) {
    if cmd.is_oneway() {
        conn.peer.oneway(cmd);
        return;
    }
    let opaque = cmd.opaque;
    if let Ok(mut answer) = conn.peer.invoke(cmd, CLIENT_CALL_TIMEOUT).await {
        answer.opaque = opaque;
        answer.flag |= FLAG_RESPONSE;
        let _ = s.write(&answer).await;
    }
}

impl Service for ProxyRemoting {
    fn handle(self: Arc<Self>, peer: Arc<Peer>, req: Command) -> Answer {
        Box::pin(async move {
            let conn = self.conn(&peer);
            let mut answer = observe(&self.metrics, &peer, &req, self.route(&conn, &req)).await;
            answer.version = VERSION;
            Some(answer)
        })
    }

    fn closed(self: Arc<Self>, peer: Arc<Peer>) {
        if let Some(c) = self.conns.lock().remove(&peer.id()) {
            c.close();
        }
    }
}

/// Adds the clients one group reports to those already merged: a client connected through this
/// proxy appears in every group it talks to, and is listed once.
fn add_connections(
    merged: &mut Vec<ferromq_remoting::body::Connection>,
    more: Vec<ferromq_remoting::body::Connection>,
) {
    for c in more {
        if !merged.iter().any(|x| x.client_id == c.client_id) {
            merged.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferromq_remoting::body::MessageQueue;

    fn group(name: &str) -> GroupRoute {
        GroupRoute {
            name: name.into(),
            endpoint: "127.0.0.1:1".into(),
            read_only: false,
            topics: Default::default(),
            total_lag: 0,
            queues_with_lag: 0,
            age_ms: 0,
            epoch: 0,
        }
    }

    fn stats(group: &str, q: i32) -> Handled {
        let mut t = TopicStatsTable::default();
        t.offset_table.0.insert(
            MessageQueue {
                topic: "t".into(),
                broker_name: group.into(),
                queue_id: q,
            },
            Default::default(),
        );
        Ok(Command::default().with_body(body::encode(&t)))
    }

    #[test]
    fn merged_answers_key_by_queue_so_repeats_change_nothing() {
        let req = Command::default();
        let answers = vec![
            (group("g1"), stats("g1", 0)),
            (group("g2"), stats("g2", 0)),
            (group("g2"), stats("g2", 0)),
            (group("g3"), Err(RemotingError::system("down"))),
        ];
        let a = merge(&req, answers, |acc: &mut TopicStatsTable, b| {
            acc.offset_table.0.extend(b.offset_table.0)
        })
        .unwrap();
        let t: TopicStatsTable = body::decode(&a.body).unwrap();
        assert_eq!(t.offset_table.0.len(), 2);
        let none = merge(
            &req,
            vec![(group("g1"), Err(RemotingError::system("down")))],
            |acc: &mut TopicStatsTable, b| acc.offset_table.0.extend(b.offset_table.0),
        );
        assert!(none.is_err());
    }

    #[test]
    fn one_failing_group_fails_an_all_groups_change() {
        let ok = || Ok(Command::default());
        assert!(all_ok(vec![(group("a"), ok()), (group("b"), ok())]).is_ok());
        let refused = Command {
            code: response::NO_PERMISSION,
            ..Command::default()
        };
        assert_eq!(
            all_ok(vec![(group("a"), ok()), (group("b"), Ok(refused))])
                .unwrap()
                .code,
            response::NO_PERMISSION
        );
        assert_eq!(
            first_ok(vec![
                (group("a"), Err(RemotingError::system("x"))),
                (group("b"), ok())
            ])
            .unwrap()
            .code,
            response::SUCCESS
        );
    }
}
