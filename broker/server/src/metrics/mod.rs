//! Prometheus metrics of every role, on the `prometheus-client` crate, served by `/metrics` in
//! the Prometheus text format (0.0.4).
//!
//! Two sets of names:
//! - RocketMQ 5's (`rocketmq_messages_in_total`, `rocketmq_consumer_lag_messages`,
//!   `rocketmq_rpc_latency`, ...) with RocketMQ's labels and units (latencies in
//!   milliseconds), each carrying the node's identity (`cluster`, `node_type`, `node_id`), so
//!   dashboards built for Apache RocketMQ work unchanged;
//! - FerroMQ's own `ferromq_*` families, for what RocketMQ has no name for (build info, disk
//!   space, timers, transactions, replication, connections) and the names suites and the
//!   operator read since before the RocketMQ set existed. They keep their labels; the chart's
//!   PodMonitor adds the cluster and node type from the pod's labels.
//!
//! Counters and histograms counted as things happen live in [`Metrics`]; what is computed at
//! scrape time (lag, store state, replication) is a [`Family`] the role builds per scrape and
//! [`Metrics::render`] encodes after them.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::RwLock;

pub mod node;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as LabelledFamily;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// `Content-Type` of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A label set: (name, value) pairs in the order they are printed.
pub type Labels = Vec<(&'static str, String)>;

/// Bucket bounds of `ferromq_rpc_duration_seconds`.
const SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// Bucket bounds of `rocketmq_rpc_latency` (milliseconds), the ones RocketMQ's remoting layer
/// declares, so a RocketMQ dashboard's `le` values exist here too.
const MILLIS_BUCKETS: [f64; 9] = [1.0, 3.0, 5.0, 7.0, 10.0, 100.0, 1000.0, 2000.0, 3000.0];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

fn millis_histogram() -> Histogram {
    Histogram::new(MILLIS_BUCKETS)
}

/// The kind of process, RocketMQ's `node_type` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeType {
    Broker,
    Proxy,
    Nameserver,
}

impl NodeType {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Broker => "broker",
            NodeType::Proxy => "proxy",
            NodeType::Nameserver => "nameserver",
        }
    }
}

static CLUSTER: OnceLock<String> = OnceLock::new();

/// Cluster name used when none was set (RocketMQ's default cluster name is `DefaultCluster`;
/// ours names the product).
pub const DEFAULT_CLUSTER: &str = "ferromq";

/// Sets the `cluster` label of every role in this process (`--cluster-name`). Only the first
/// call counts: a process belongs to one cluster.
pub fn set_cluster(name: &str) {
    let _ = CLUSTER.set(name.to_string());
}

fn cluster() -> String {
    CLUSTER
        .get()
        .cloned()
        .unwrap_or_else(|| DEFAULT_CLUSTER.to_string())
}

/// This machine's host name (the pod's name on Kubernetes), or `localhost`.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(h) if rc == 0 && !h.is_empty() => h.to_string(),
        _ => "localhost".to_string(),
    }
}

/// Who reports: RocketMQ's `cluster`, `node_type` and `node_id` labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cluster: String,
    pub node_type: NodeType,
    /// The broker group for a storage node (RocketMQ's broker name), else the host name.
    pub node_id: String,
}

impl Identity {
    /// The identity of a process of `node_type`; `node_id` defaults to the host name.
    pub fn new(node_type: NodeType, node_id: Option<&str>) -> Identity {
        Identity {
            cluster: cluster(),
            node_type,
            node_id: node_id.map_or_else(hostname, str::to_string),
        }
    }

    fn labels(&self) -> Labels {
        vec![
            ("cluster", self.cluster.clone()),
            ("node_type", self.node_type.as_str().to_string()),
            ("node_id", self.node_id.clone()),
        ]
    }
}

impl Default for Identity {
    fn default() -> Identity {
        Identity::new(NodeType::Broker, None)
    }
}

/// What a role counts as it serves.
#[derive(Debug)]
pub struct Metrics {
    identity: Identity,
    registry: Registry,
    messages_in: LabelledFamily<Labels, Counter>,
    throughput_in: LabelledFamily<Labels, Counter>,
    messages_out: LabelledFamily<Labels, Counter>,
    throughput_out: LabelledFamily<Labels, Counter>,
    rpc_latency: LabelledFamily<Labels, Histogram, fn() -> Histogram>,
    own_messages_in: LabelledFamily<Labels, Counter>,
    own_bytes_in: LabelledFamily<Labels, Counter>,
    own_messages_out: LabelledFamily<Labels, Counter>,
    own_bytes_out: LabelledFamily<Labels, Counter>,
    rpc_seconds: LabelledFamily<Labels, Histogram, fn() -> Histogram>,
    rpc_errors: LabelledFamily<Labels, Counter>,
    auth_refusals: LabelledFamily<Labels, Counter>,
    forwarded_batches: Counter,
    forwarded_sends: Counter,
    /// The families' members already looked up, by label values: a request then costs a
    /// shared lock and a few atomic adds, not one label-set lookup per family (each with
    /// freshly allocated label strings to hash), which was 1.4 us of a 27 us send of 100 B.
    flows_in: Flows,
    flows_out: Flows,
    found_rpc: RwLock<HashMap<RpcOutcome, RpcTimers>>,
}

/// A call's protocol, method and outcome (the gRPC status code, or the remoting error code
/// with `None` for success).
type RpcOutcome = (&'static str, &'static str, Option<i32>);

/// The two latency histograms of one [`RpcOutcome`].
#[derive(Debug, Clone)]
struct RpcTimers {
    seconds: Histogram,
    millis: Histogram,
}

/// The four counters of one flow of messages (in: a topic and message type; out: a topic and
/// consumer group): RocketMQ's messages and bytes, and ours.
#[derive(Debug, Clone)]
struct Flow {
    messages: Counter,
    bytes: Counter,
    own_messages: Counter,
    own_bytes: Counter,
}

impl Flow {
    fn add(&self, count: u64, bytes: u64) {
        self.messages.inc_by(count);
        self.bytes.inc_by(bytes);
        self.own_messages.inc_by(count);
        self.own_bytes.inc_by(bytes);
    }
}

/// Flows found by two label values (a topic, then a message type or group), looked up
/// without allocating once they exist. Like the families themselves, it keeps every flow it
/// has seen.
#[derive(Debug, Default)]
struct Flows {
    by: RwLock<HashMap<String, HashMap<String, Flow>>>,
}

impl Flows {
    /// Counts `count` messages of `bytes` on the flow of (`a`, `b`), made by `make` the first
    /// time.
    fn add(&self, a: &str, b: &str, make: impl FnOnce() -> Flow, count: u64, bytes: u64) {
        if let Some(f) = self.by.read().get(a).and_then(|m| m.get(b)) {
            f.add(count, bytes);
            return;
        }
        self.by
            .write()
            .entry(a.to_string())
            .or_default()
            .entry(b.to_string())
            .or_insert_with(make)
            .add(count, bytes);
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new(Identity::default())
    }
}

impl Metrics {
    pub fn new(identity: Identity) -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            identity: identity.clone(),
            messages_in: Default::default(),
            throughput_in: Default::default(),
            messages_out: Default::default(),
            throughput_out: Default::default(),
            rpc_latency: LabelledFamily::new_with_constructor(millis_histogram),
            own_messages_in: Default::default(),
            own_bytes_in: Default::default(),
            own_messages_out: Default::default(),
            own_bytes_out: Default::default(),
            rpc_seconds: LabelledFamily::new_with_constructor(seconds_histogram),
            rpc_errors: Default::default(),
            auth_refusals: Default::default(),
            forwarded_batches: Default::default(),
            forwarded_sends: Default::default(),
            flows_in: Flows::default(),
            flows_out: Flows::default(),
            found_rpc: RwLock::new(HashMap::new()),
            registry: Registry::default(),
        };
        {
            let rmq = registry.sub_registry_with_labels(
                identity
                    .labels()
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into())),
            );
            rmq.register(
                "rocketmq_messages_in",
                "Messages received from producers, by topic and message type",
                m.messages_in.clone(),
            );
            rmq.register(
                "rocketmq_throughput_in",
                "Body bytes received from producers, by topic and message type",
                m.throughput_in.clone(),
            );
            rmq.register(
                "rocketmq_messages_out",
                "Messages delivered to consumers, by topic and consumer group",
                m.messages_out.clone(),
            );
            rmq.register(
                "rocketmq_throughput_out",
                "Body bytes delivered to consumers, by topic and consumer group",
                m.throughput_out.clone(),
            );
            rmq.register(
                "rocketmq_rpc_latency",
                "Time to answer a client RPC in milliseconds (streams: until the answer is complete), by method (request_code) and RocketMQ status (response_code)",
                m.rpc_latency.clone(),
            );
        }
        registry.register(
            "ferromq_messages_in",
            "Messages received from producers, by topic",
            m.own_messages_in.clone(),
        );
        registry.register(
            "ferromq_message_bytes_in",
            "Body bytes received from producers, by topic",
            m.own_bytes_in.clone(),
        );
        registry.register(
            "ferromq_messages_out",
            "Messages delivered to consumers, by topic and consumer group",
            m.own_messages_out.clone(),
        );
        registry.register(
            "ferromq_message_bytes_out",
            "Body bytes delivered to consumers, by topic and consumer group",
            m.own_bytes_out.clone(),
        );
        registry.register(
            "ferromq_rpc_duration_seconds",
            "Time to answer a client RPC (streams: until the answer is complete)",
            m.rpc_seconds.clone(),
        );
        registry.register(
            "ferromq_rpc_errors",
            "Client RPCs answered with a status other than OK or MESSAGE_NOT_FOUND, by method and numeric code",
            m.rpc_errors.clone(),
        );
        registry.register(
            "ferromq_auth_refusals",
            "Calls refused by authentication or authorization, by reason",
            m.auth_refusals.clone(),
        );
        registry.register(
            "ferromq_proxy_forwarded_batches",
            "Batches of calls (sends and settling calls) a proxy forwarded to broker groups",
            m.forwarded_batches.clone(),
        );
        registry.register(
            "ferromq_proxy_forwarded_sends",
            "Sends and settling calls (acks, transaction ends...) a proxy forwarded in batches (divide by the batches for their mean size)",
            m.forwarded_sends.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A batch of `sends` forwarded by a proxy in one call.
    pub fn forwarded(&self, sends: usize) {
        self.forwarded_batches.inc();
        self.forwarded_sends.inc_by(sends as u64);
    }

    /// Who these metrics describe.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// A message accepted from a producer (`message_type`: normal, fifo, delay, transaction).
    pub fn message_in(&self, topic: &str, message_type: &str, bytes: usize) {
        self.messages_in_n(topic, message_type, 1, bytes as u64);
    }

    /// `count` messages of one topic and type stored, `bytes` of body between them (a
    /// request's batch, counted with one lookup per family).
    pub fn messages_in_n(&self, topic: &str, message_type: &str, count: u64, bytes: u64) {
        if count == 0 {
            return;
        }
        let make = || {
            let l = vec![
                ("topic", topic.to_string()),
                ("message_type", message_type.to_string()),
            ];
            let t = vec![("topic", topic.to_string())];
            Flow {
                messages: self.messages_in.get_or_create(&l).clone(),
                bytes: self.throughput_in.get_or_create(&l).clone(),
                own_messages: self.own_messages_in.get_or_create(&t).clone(),
                own_bytes: self.own_bytes_in.get_or_create(&t).clone(),
            }
        };
        self.flows_in.add(topic, message_type, make, count, bytes);
    }

    /// A message handed to a consumer of `group` (empty for a pull without a group).
    pub fn message_out(&self, topic: &str, group: &str, bytes: usize) {
        self.messages_out_n(topic, group, 1, bytes as u64);
    }

    /// `count` messages of `bytes` in all handed to a consumer of `group` in one answer: one
    /// label lookup per answer rather than per message.
    pub fn messages_out_n(&self, topic: &str, group: &str, count: u64, bytes: u64) {
        if count == 0 {
            return;
        }
        let make = || {
            let l = vec![
                ("topic", topic.to_string()),
                ("consumer_group", group.to_string()),
            ];
            let o = vec![("topic", topic.to_string()), ("group", group.to_string())];
            Flow {
                messages: self.messages_out.get_or_create(&l).clone(),
                bytes: self.throughput_out.get_or_create(&l).clone(),
                own_messages: self.own_messages_out.get_or_create(&o).clone(),
                own_bytes: self.own_bytes_out.get_or_create(&o).clone(),
            }
        };
        self.flows_out.add(topic, group, make, count, bytes);
    }

    /// A call refused by authentication or authorization (`unauthenticated`, `forbidden`,
    /// `bad_request`).
    pub fn auth_refusal(&self, reason: &'static str) {
        self.auth_refusals
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// A RocketMQ 5 (gRPC) call answered with status `code` after `elapsed`: OK and the empty
    /// receive's MESSAGE_NOT_FOUND are not errors.
    pub fn rpc(&self, method: &'static str, elapsed: Duration, code: i32) {
        let failed = code != ferromq_proto::v2::Code::Ok as i32
            && code != ferromq_proto::v2::Code::MessageNotFound as i32;
        self.record(
            ("grpc", method, Some(code)),
            elapsed,
            || code_name(code),
            failed.then_some(code),
        );
    }

    /// A request of the classic remoting protocol (`method`: its request code's name): its
    /// time, and its response code when it failed (`response_code` is `ok` otherwise, so
    /// RocketMQ's error-rate queries read both protocols alike).
    pub fn call(&self, method: &'static str, elapsed: Duration, error: Option<i32>) {
        let response = || error.map_or_else(|| "ok".to_string(), |c| c.to_string());
        self.record(("remoting", method, error), elapsed, response, error);
    }

    /// `response_code` is the outcome's label, made only the first time the outcome is seen.
    fn record(
        &self,
        outcome: RpcOutcome,
        elapsed: Duration,
        response_code: impl FnOnce() -> String,
        error: Option<i32>,
    ) {
        let secs = elapsed.as_secs_f64();
        let observe = |t: &RpcTimers| {
            t.seconds.observe(secs);
            t.millis.observe(secs * 1000.0);
        };
        let found = self.found_rpc.read().get(&outcome).map(observe);
        if found.is_none() {
            let (protocol, method, _) = outcome;
            let timers = RpcTimers {
                seconds: self
                    .rpc_seconds
                    .get_or_create(&vec![("method", method.to_string())])
                    .clone(),
                millis: self
                    .rpc_latency
                    .get_or_create(&vec![
                        ("protocol_type", protocol.to_string()),
                        ("request_code", method.to_string()),
                        ("response_code", response_code()),
                    ])
                    .clone(),
            };
            observe(&timers);
            self.found_rpc.write().entry(outcome).or_insert(timers);
        }
        if let Some(code) = error {
            self.rpc_errors
                .get_or_create(&vec![
                    ("method", outcome.1.to_string()),
                    ("code", code.to_string()),
                ])
                .inc();
        }
    }

    /// The exposition: every family counted here, then `families` computed by the caller
    /// (RocketMQ ones get this node's identity labels).
    pub fn render(&self, families: Vec<Family>) -> String {
        let mut scraped = Registry::default();
        scraped.register_collector(Box::new(Scraped {
            identity: self.identity.labels(),
            families,
        }));
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a label.
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry)
            .and_then(|()| prometheus_text::encode(&mut out, &scraped))
        {
            out.push_str(&format!("# encoding failed: {e}\n"));
        }
        out
    }
}

/// RocketMQ's `message_type` label of a message type.
pub fn message_type_label(t: ferromq_store::MessageType) -> &'static str {
    use ferromq_store::MessageType as T;
    match t {
        T::Normal => "normal",
        T::Fifo => "fifo",
        T::Delay => "delay",
        T::Transaction => "transaction",
        T::Priority => "priority",
    }
}

/// RocketMQ's name of a status code in lower case (`ok`, `message_not_found`, ...), or the
/// number when the code is unknown.
pub fn code_name(code: i32) -> String {
    ferromq_proto::v2::Code::try_from(code)
        .map(|c| {
            let n = c.as_str_name();
            n.strip_prefix("CODE_").unwrap_or(n).to_ascii_lowercase()
        })
        .unwrap_or_else(|_| code.to_string())
}

/// A value of a family computed at scrape time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i64),
    Count(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Count(v)
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Value {
        Value::Count(v as u64)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(i64::from(v))
    }
}

/// A family computed at scrape time: a gauge, or a counter read from a total kept elsewhere.
#[derive(Debug, Clone)]
pub struct Family {
    /// The name without the `_total` a counter's samples get.
    name: &'static str,
    help: &'static str,
    counter: bool,
    /// Carries the node's identity labels (the RocketMQ families).
    rocketmq: bool,
    samples: Vec<(Labels, Value)>,
}

impl Family {
    pub fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            counter: false,
            rocketmq: name.starts_with("rocketmq_"),
            samples: Vec::new(),
        }
    }

    /// A counter; `name` may end in `_total` (the samples get it either way).
    pub fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name: name.strip_suffix("_total").unwrap_or(name),
            counter: true,
            ..Family::gauge(name, help)
        }
    }

    /// Adds a sample.
    pub fn push(&mut self, labels: Labels, v: impl Into<Value>) {
        self.samples.push((labels, v.into()));
    }

    /// With one sample.
    pub fn with(mut self, labels: Labels, v: impl Into<Value>) -> Family {
        self.push(labels, v);
        self
    }

    /// With one unlabelled sample.
    pub fn value(self, v: impl Into<Value>) -> Family {
        self.with(Vec::new(), v)
    }

    /// The name as it appears in the exposition (counters end in `_total`).
    pub fn exposed_name(&self) -> String {
        if self.counter {
            format!("{}_total", self.name)
        } else {
            self.name.to_string()
        }
    }
}

/// Families computed for one scrape.
#[derive(Debug)]
struct Scraped {
    identity: Labels,
    families: Vec<Family>,
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            let kind = if f.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let help = format!("{}.", f.help.trim_end_matches('.'));
            let mut metric = encoder.encode_descriptor(f.name, &help, None, kind)?;
            for (labels, v) in &f.samples {
                let mut all = if f.rocketmq {
                    self.identity.clone()
                } else {
                    Vec::new()
                };
                all.extend(labels.iter().cloned());
                let mut sample = metric.encode_family(&all)?;
                match (f.counter, *v) {
                    (true, Value::Count(n)) => sample
                        .encode_counter::<prometheus_client::encoding::NoLabelSet, _, f64>(
                            &n, None,
                        )?,
                    (true, Value::Int(n)) => sample
                        .encode_counter::<prometheus_client::encoding::NoLabelSet, _, f64>(
                            &(n.max(0) as u64),
                            None,
                        )?,
                    (true, Value::Float(x)) => sample
                        .encode_counter::<prometheus_client::encoding::NoLabelSet, _, f64>(
                            &x, None,
                        )?,
                    (false, Value::Count(n)) => sample.encode_gauge(&n)?,
                    (false, Value::Int(n)) => sample.encode_gauge(&n)?,
                    (false, Value::Float(x)) => sample.encode_gauge(&x)?,
                }
            }
        }
        Ok(())
    }
}

/// `ferromq_build_info`: the version every role reports.
pub fn build_info() -> Family {
    Family::gauge(
        "ferromq_build_info",
        "Always 1; the labels say which FerroMQ build runs (version, and the rustc that built it is not recorded).",
    )
    .with(
        vec![("version", env!("CARGO_PKG_VERSION").to_string())],
        1i64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            cluster: "c1".into(),
            node_type: NodeType::Broker,
            node_id: "g1".into(),
        }
    }

    #[test]
    fn counts_messages_under_both_names() {
        let m = Metrics::new(identity());
        m.message_in("t", "normal", 10);
        m.message_in("t", "normal", 5);
        m.message_out("t", "cg", 7);
        let text = m.render(Vec::new());
        assert!(
            text.contains(
                "rocketmq_messages_in_total{cluster=\"c1\",node_type=\"broker\",node_id=\"g1\",topic=\"t\",message_type=\"normal\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "rocketmq_throughput_in_total{cluster=\"c1\",node_type=\"broker\",node_id=\"g1\",topic=\"t\",message_type=\"normal\"} 15"
        ));
        assert!(
            text.contains("ferromq_messages_in_total{topic=\"t\"} 2"),
            "{text}"
        );
        assert!(text.contains("ferromq_message_bytes_in_total{topic=\"t\"} 15"));
        assert!(text.contains(
            "rocketmq_messages_out_total{cluster=\"c1\",node_type=\"broker\",node_id=\"g1\",topic=\"t\",consumer_group=\"cg\"} 1"
        ));
        assert!(text.contains("ferromq_messages_out_total{topic=\"t\",group=\"cg\"} 1"));
    }

    #[test]
    fn rpc_latency_is_a_millisecond_histogram_with_rocketmq_labels() {
        let m = Metrics::new(identity());
        m.rpc("SendMessage", Duration::from_millis(4), 20000);
        m.rpc("SendMessage", Duration::from_millis(50), 40402);
        let text = m.render(Vec::new());
        assert!(
            text.contains("# TYPE rocketmq_rpc_latency histogram"),
            "{text}"
        );
        assert!(text.contains(
            "rocketmq_rpc_latency_bucket{cluster=\"c1\",node_type=\"broker\",node_id=\"g1\",protocol_type=\"grpc\",request_code=\"SendMessage\",response_code=\"ok\",le=\"5\"} 1"
        ), "{text}");
        assert!(text.contains(
            "rocketmq_rpc_latency_bucket{cluster=\"c1\",node_type=\"broker\",node_id=\"g1\",protocol_type=\"grpc\",request_code=\"SendMessage\",response_code=\"ok\",le=\"3\"} 0"
        ));
        assert!(text.contains("response_code=\"topic_not_found\""), "{text}");
        assert!(text.contains("ferromq_rpc_duration_seconds_count{method=\"SendMessage\"} 2"));
        assert!(text.contains("ferromq_rpc_errors_total{method=\"SendMessage\",code=\"40402\"} 1"));
        assert!(!text.contains("code=\"20000\""), "OK is no error: {text}");
    }

    #[test]
    fn remoting_requests_are_counted_beside_grpc_calls() {
        let m = Metrics::new(identity());
        m.call("SEND_MESSAGE", Duration::from_millis(2), None);
        m.call("PULL_MESSAGE", Duration::from_millis(2), Some(17));
        let text = m.render(Vec::new());
        assert!(text.contains(
            "rocketmq_rpc_latency_count{cluster=\"c1\",node_type=\"broker\",node_id=\"g1\",protocol_type=\"remoting\",request_code=\"SEND_MESSAGE\",response_code=\"ok\"} 1"
        ), "{text}");
        assert!(text.contains(
            "protocol_type=\"remoting\",request_code=\"PULL_MESSAGE\",response_code=\"17\""
        ));
        assert!(text.contains("ferromq_rpc_errors_total{method=\"PULL_MESSAGE\",code=\"17\"} 1"));
        assert!(text.contains("ferromq_rpc_duration_seconds_count{method=\"SEND_MESSAGE\"} 1"));
    }

    #[test]
    fn members_found_once_keep_counting_apart() {
        let m = Metrics::new(identity());
        for _ in 0..3 {
            m.rpc("SendMessage", Duration::from_millis(2), 20000);
            m.call("SendMessage", Duration::from_millis(2), None);
            m.messages_in_n("a", "normal", 2, 20);
            m.messages_in_n("a", "fifo", 1, 5);
            m.messages_out_n("a", "g1", 4, 40);
        }
        m.rpc("SendMessage", Duration::from_millis(2), 40402);
        m.messages_out_n("b", "g1", 1, 1);
        let text = m.render(Vec::new());
        let has = |line: &str| assert!(text.contains(line), "{line} missing from {text}");
        has("protocol_type=\"grpc\",request_code=\"SendMessage\",response_code=\"ok\"} 3");
        has("protocol_type=\"remoting\",request_code=\"SendMessage\",response_code=\"ok\"} 3");
        has("protocol_type=\"grpc\",request_code=\"SendMessage\",response_code=\"topic_not_found\"} 1");
        has("ferromq_rpc_duration_seconds_count{method=\"SendMessage\"} 7");
        has("topic=\"a\",message_type=\"normal\"} 6");
        has("topic=\"a\",message_type=\"fifo\"} 3");
        has("ferromq_messages_in_total{topic=\"a\"} 9");
        has("ferromq_message_bytes_in_total{topic=\"a\"} 75");
        has("ferromq_messages_out_total{topic=\"a\",group=\"g1\"} 12");
        has("ferromq_messages_out_total{topic=\"b\",group=\"g1\"} 1");
    }

    #[test]
    fn every_family_has_help_and_a_type() {
        let m = Metrics::new(identity());
        m.message_in("t", "fifo", 1);
        m.auth_refusal("forbidden");
        m.rpc("Heartbeat", Duration::from_millis(1), 20000);
        let text = m.render(vec![
            build_info(),
            Family::gauge("ferromq_store_disk_full", "1 while full").value(false),
            Family::counter("ferromq_timers_released_total", "Released").value(18u64),
            Family::gauge("rocketmq_consumer_lag_messages", "Lag").with(
                vec![("topic", "t".into()), ("consumer_group", "g".into())],
                3u64,
            ),
        ]);
        let mut typed = std::collections::BTreeSet::new();
        let mut helped = std::collections::BTreeSet::new();
        for l in text.lines() {
            if let Some(r) = l.strip_prefix("# TYPE ") {
                typed.insert(r.split(' ').next().unwrap().to_string());
            } else if let Some(r) = l.strip_prefix("# HELP ") {
                let (name, help) = r.split_once(' ').unwrap();
                assert!(!help.trim().is_empty(), "empty help for {name}");
                helped.insert(name.to_string());
            }
        }
        assert_eq!(typed, helped, "{text}");
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| typed.contains(*f))
                .unwrap_or(name);
            assert!(typed.contains(family), "{name} has no TYPE: {text}");
        }
        assert!(
            text.contains("# TYPE ferromq_timers_released_total counter"),
            "{text}"
        );
        assert!(
            text.contains("ferromq_timers_released_total 18\n"),
            "{text}"
        );
        assert!(text.contains("ferromq_store_disk_full 0\n"), "{text}");
        assert!(text.contains(
            "rocketmq_consumer_lag_messages{cluster=\"c1\",node_type=\"broker\",node_id=\"g1\",topic=\"t\",consumer_group=\"g\"} 3"
        ), "{text}");
        assert!(text.contains("ferromq_build_info{version=\""), "{text}");
        assert!(text.contains("ferromq_auth_refusals_total{reason=\"forbidden\"} 1"));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new(identity());
        m.message_in("a\"b\\c\nd", "normal", 1);
        let text = m.render(Vec::new());
        assert!(
            text.contains("ferromq_messages_in_total{topic=\"a\\\"b\\\\c\\nd\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn unknown_codes_keep_their_number() {
        assert_eq!(code_name(20000), "ok");
        assert_eq!(code_name(40006), "illegal_message_group");
        assert_eq!(code_name(1), "1");
    }
}
