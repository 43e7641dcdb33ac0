//! JSON bodies of the requests and answers FerroMQ serves, as Rust types.
//!
//! Read them with [`decode`] and write them with [`encode`] (fastjson style, see
//! [`crate::fastjson`]). Field names are the Java bean property names fastjson derives from the
//! getters (`isWithoutSub()` becomes `withoutSub`, `getLockOKMQSet()` becomes `lockOKMQSet`).
//! Every field has a default so a peer that leaves one out (older versions, other languages) is
//! still understood; enum-like fields are kept as strings because non-Java clients are not always
//! consistent about them. Java `Set`s are JSON arrays.
//!
//! Which bodies carry fastjson's non-string keys: `BrokerData.brokerAddrs` (numeric keys, so
//! [`TopicRouteData`] and [`ClusterInfo`]), and the `Map<MessageQueue, _>` tables (object keys) of
//! [`TopicStatsTable`], [`ConsumeStats`], [`ResetOffsetBody`] and [`ConsumerRunningInfo`].

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::fastjson::{self, JsonError};
pub use crate::fastjson::{LongKeyMap, MessageQueue, MessageQueueMap, Style};

/// Reads a body (fastjson or standard JSON).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, JsonError> {
    fastjson::from_slice(body)
}

/// Writes a body as fastjson does (numeric and object map keys bare).
pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    fastjson::to_vec(body, Style::Fastjson)
}

/// Topic/queue permission bits (`PermName`).
pub mod perm {
    pub const PRIORITY: i32 = 1 << 3;
    pub const READ: i32 = 1 << 2;
    pub const WRITE: i32 = 1 << 1;
    pub const INHERIT: i32 = 1;
}

/// Accepts a string, a number or a boolean where Java has an enum or a string.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// GET_ROUTEINFO_BY_TOPIC's answer. Write it with [`Style::Standard`] for clients of version
/// ≥ 4.9.4 (ordinal 401) or that asked `acceptStandardJsonOnly`, [`Style::Fastjson`] otherwise,
/// as RocketMQ's name server does.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicRouteData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_topic_conf: Option<String>,
    pub queue_datas: Vec<QueueData>,
    pub broker_datas: Vec<BrokerData>,
    pub filter_server_table: BTreeMap<String, Vec<String>>,
    /// Static-topic mappings (5.x); opaque here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_queue_mapping_by_broker: Option<serde_json::Value>,
}

/// One broker group's queues of a topic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueueData {
    pub broker_name: String,
    pub read_queue_nums: i32,
    pub write_queue_nums: i32,
    /// [`perm`] bits.
    pub perm: i32,
    pub topic_sys_flag: i32,
}

/// One broker group: its cluster, name and addresses by broker id (0 = master).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerData {
    pub cluster: String,
    pub broker_name: String,
    pub broker_addrs: LongKeyMap<String>,
    pub enable_acting_master: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_name: Option<String>,
}

/// HEART_BEAT's body: who the client is and which groups it serves.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeartbeatData {
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub producer_data_set: Vec<ProducerData>,
    pub consumer_data_set: Vec<ConsumerData>,
    /// 5.x clients: a hash of the rest, sent so the broker can skip unchanged heartbeats.
    pub heartbeat_fingerprint: i32,
    /// 5.x clients: the consumer data carries no subscriptions (unchanged since the last one).
    pub without_sub: bool,
}

/// A producer group announced in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerData {
    pub group_name: String,
}

/// A consumer group announced in a heartbeat.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerData {
    pub group_name: String,
    /// `CONSUME_PASSIVELY` (push), `CONSUME_ACTIVELY` (pull), `CONSUME_POP`.
    #[serde(deserialize_with = "lenient_string")]
    pub consume_type: String,
    /// `CLUSTERING` or `BROADCASTING`.
    #[serde(deserialize_with = "lenient_string")]
    pub message_model: String,
    /// `CONSUME_FROM_LAST_OFFSET`, `CONSUME_FROM_FIRST_OFFSET`, `CONSUME_FROM_TIMESTAMP`, ...
    #[serde(deserialize_with = "lenient_string")]
    pub consume_from_where: String,
    pub subscription_data_set: Vec<SubscriptionData>,
    pub unit_mode: bool,
}

/// One topic subscription of a consumer group.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionData {
    pub class_filter_mode: bool,
    pub topic: String,
    /// The expression as written: `*`, `TagA || TagB`, or SQL92 text.
    pub sub_string: String,
    pub tags_set: Vec<String>,
    /// Java `String.hashCode` of each tag (4.x brokers filter the consume queue by it).
    pub code_set: Vec<i32>,
    pub sub_version: i64,
    /// `TAG` or `SQL92`.
    #[serde(deserialize_with = "lenient_string")]
    pub expression_type: String,
}

/// LOCK_BATCH_MQ and UNLOCK_BATCH_MQ request bodies (orderly consumption).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LockBatchRequestBody {
    pub consumer_group: String,
    pub client_id: String,
    pub only_this_broker: bool,
    pub mq_set: Vec<MessageQueue>,
}

/// LOCK_BATCH_MQ's answer: the queues now locked by the requesting client.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LockBatchResponseBody {
    #[serde(rename = "lockOKMQSet")]
    pub lock_ok_mq_set: Vec<MessageQueue>,
}

/// GET_CONSUMER_LIST_BY_GROUP's answer: the client ids of the group's live consumers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetConsumerListByGroupResponseBody {
    pub consumer_id_list: Vec<String>,
}

/// GET_BROKER_CLUSTER_INFO's answer (name-server port).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInfo {
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    pub cluster_addr_table: BTreeMap<String, Vec<String>>,
}

/// Topic name lists (GET_ALL_TOPIC_LIST_FROM_NAMESERVER, GET_TOPICS_BY_CLUSTER, ...).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicList {
    pub topic_list: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_addr: Option<String>,
}

/// GET_TOPIC_STATS_INFO's answer: offsets per queue.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicStatsTable {
    pub offset_table: MessageQueueMap<TopicOffset>,
    pub topic_put_tps: f64,
}

/// One queue's offsets in a [`TopicStatsTable`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicOffset {
    pub min_offset: i64,
    pub max_offset: i64,
    pub last_update_timestamp: i64,
}

/// GET_CONSUME_STATS's answer (mqadmin consumerProgress).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumeStats {
    pub offset_table: MessageQueueMap<OffsetWrapper>,
    pub consume_tps: f64,
}

/// One queue's progress in [`ConsumeStats`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OffsetWrapper {
    pub broker_offset: i64,
    pub consumer_offset: i64,
    pub pull_offset: i64,
    /// Store time of the last consumed message (ms), 0 if none.
    pub last_timestamp: i64,
}

/// GET_CONSUMER_CONNECTION_LIST's answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerConnection {
    pub connection_set: Vec<Connection>,
    pub subscription_table: BTreeMap<String, SubscriptionData>,
    #[serde(deserialize_with = "lenient_string")]
    pub consume_type: String,
    #[serde(deserialize_with = "lenient_string")]
    pub message_model: String,
    #[serde(deserialize_with = "lenient_string")]
    pub consume_from_where: String,
}

/// One client connection in a connection list.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Connection {
    pub client_id: String,
    pub client_addr: String,
    /// Language name (`JAVA`, `GO`, ...).
    #[serde(deserialize_with = "lenient_string")]
    pub language: String,
    pub version: i32,
}

/// GET_PRODUCER_CONNECTION_LIST's answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerConnection {
    pub connection_set: Vec<Connection>,
}

/// A consumer group's settings (UPDATE_AND_CREATE_SUBSCRIPTIONGROUP body,
/// GET_SUBSCRIPTIONGROUP_CONFIG answer). Defaults are Java's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionGroupConfig {
    pub group_name: String,
    pub consume_enable: bool,
    pub consume_from_min_enable: bool,
    pub consume_broadcast_enable: bool,
    /// Orderly (FIFO) group.
    pub consume_message_orderly: bool,
    pub retry_queue_nums: i32,
    /// Retries before the DLQ (a message is delivered at most `retryMaxTimes + 1` times).
    pub retry_max_times: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_retry_policy: Option<serde_json::Value>,
    pub broker_id: i64,
    pub which_broker_when_consume_slowly: i64,
    pub notify_consumer_ids_changed_enable: bool,
    pub group_sys_flag: i32,
    pub consume_timeout_minute: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_data_set: Option<serde_json::Value>,
    pub attributes: BTreeMap<String, String>,
}

impl Default for SubscriptionGroupConfig {
    fn default() -> Self {
        SubscriptionGroupConfig {
            group_name: String::new(),
            consume_enable: true,
            consume_from_min_enable: true,
            consume_broadcast_enable: true,
            consume_message_orderly: false,
            retry_queue_nums: 1,
            retry_max_times: 16,
            group_retry_policy: None,
            broker_id: 0,
            which_broker_when_consume_slowly: 1,
            notify_consumer_ids_changed_enable: true,
            group_sys_flag: 0,
            consume_timeout_minute: 15,
            subscription_data_set: None,
            attributes: BTreeMap::new(),
        }
    }
}

/// GET_BROKER_RUNTIME_INFO's answer: a flat string table (`KVTable`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct KvTable {
    pub table: BTreeMap<String, String>,
}

/// A topic's settings (GET_ALL_TOPIC_CONFIG, GET_TOPIC_CONFIG).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfig {
    pub topic_name: String,
    pub read_queue_nums: i32,
    pub write_queue_nums: i32,
    pub perm: i32,
    /// `SINGLE_TAG` or `MULTI_TAG`.
    #[serde(deserialize_with = "lenient_string")]
    pub topic_filter_type: String,
    pub topic_sys_flag: i32,
    pub order: bool,
    /// 5.x: `+message.type` and friends.
    pub attributes: BTreeMap<String, String>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            topic_name: String::new(),
            read_queue_nums: 16,
            write_queue_nums: 16,
            perm: perm::READ | perm::WRITE,
            topic_filter_type: "SINGLE_TAG".into(),
            topic_sys_flag: 0,
            order: false,
            attributes: BTreeMap::new(),
        }
    }
}

/// A metadata version stamp (`DataVersion`; `counter` is an AtomicLong, written as a number).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVersion {
    pub state_version: i64,
    pub timestamp: i64,
    pub counter: i64,
}

/// GET_ALL_TOPIC_CONFIG's answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfigSerializeWrapper {
    pub topic_config_table: BTreeMap<String, TopicConfig>,
    pub data_version: DataVersion,
}

/// GET_ALL_SUBSCRIPTIONGROUP_CONFIG's answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionGroupWrapper {
    pub subscription_group_table: BTreeMap<String, SubscriptionGroupConfig>,
    pub data_version: DataVersion,
}

/// INVOKE_BROKER_TO_RESET_OFFSET's answer and RESET_CONSUMER_CLIENT_OFFSET's body: the new
/// offset per queue.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResetOffsetBody {
    pub offset_table: MessageQueueMap<i64>,
}

/// GET_CONSUMER_RUNNING_INFO's answer (client to broker to tools). Only the parts tools print
/// are typed; the per-queue and status tables are kept as JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerRunningInfo {
    pub properties: BTreeMap<String, serde_json::Value>,
    pub subscription_set: Vec<SubscriptionData>,
    pub mq_table: MessageQueueMap<serde_json::Value>,
    pub status_table: BTreeMap<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jstack: Option<String>,
}

/// Java properties text (`key=value` lines), the body of GET_BROKER_CONFIG.
pub fn encode_properties_text(map: &BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route as RocketMQ's name server writes it for a pre-4.9.4 client (bare numeric keys).
    const ROUTE_FASTJSON: &str = r#"{"brokerDatas":[{"brokerAddrs":{0:"127.0.0.1:10911"},"brokerName":"broker-a","cluster":"DefaultCluster","enableActingMaster":false}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#;

    fn route() -> TopicRouteData {
        let mut addrs = LongKeyMap::default();
        addrs.0.insert(0, "127.0.0.1:10911".to_string());
        TopicRouteData {
            queue_datas: vec![QueueData {
                broker_name: "broker-a".into(),
                read_queue_nums: 4,
                write_queue_nums: 4,
                perm: 6,
                topic_sys_flag: 0,
            }],
            broker_datas: vec![BrokerData {
                cluster: "DefaultCluster".into(),
                broker_name: "broker-a".into(),
                broker_addrs: addrs,
                ..BrokerData::default()
            }],
            ..TopicRouteData::default()
        }
    }

    #[test]
    fn route_in_both_styles() {
        assert_eq!(String::from_utf8(encode(&route())).unwrap(), ROUTE_FASTJSON);
        assert_eq!(
            decode::<TopicRouteData>(ROUTE_FASTJSON.as_bytes()).unwrap(),
            route()
        );
        let standard = String::from_utf8(fastjson::to_vec(&route(), Style::Standard)).unwrap();
        assert!(standard.contains(r#""brokerAddrs":{"0":"127.0.0.1:10911"}"#));
        assert_eq!(
            decode::<TopicRouteData>(standard.as_bytes()).unwrap(),
            route()
        );
    }

    #[test]
    fn consume_stats_with_object_keys() {
        let text = r#"{"consumeTps":1.5,"offsetTable":{{"brokerName":"b","queueId":0,"topic":"t"}:{"brokerOffset":10,"consumerOffset":7,"lastTimestamp":1700000000000,"pullOffset":8}}}"#;
        let stats: ConsumeStats = decode(text.as_bytes()).unwrap();
        let mq = MessageQueue {
            topic: "t".into(),
            broker_name: "b".into(),
            queue_id: 0,
        };
        assert_eq!(stats.offset_table.0[&mq].consumer_offset, 7);
        assert_eq!(String::from_utf8(encode(&stats)).unwrap(), text);
    }

    #[test]
    fn heartbeat_from_a_4x_client() {
        let text = r#"{"clientID":"127.0.0.1@1234#1","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"cg","messageModel":"CLUSTERING","subscriptionDataSet":[{"classFilterMode":false,"codeSet":[2598919],"expressionType":"TAG","subString":"TagA","subVersion":1700000000000,"tagsSet":["TagA"],"topic":"T"}],"unitMode":false}],"producerDataSet":[{"groupName":"CLIENT_INNER_PRODUCER"}]}"#;
        let hb: HeartbeatData = decode(text.as_bytes()).unwrap();
        assert_eq!(hb.client_id, "127.0.0.1@1234#1");
        assert_eq!(
            hb.consumer_data_set[0].subscription_data_set[0].tags_set,
            vec!["TagA"]
        );
        assert_eq!(hb.producer_data_set[0].group_name, "CLIENT_INNER_PRODUCER");
        assert!(!hb.without_sub);
    }

    #[test]
    fn lock_bodies_use_java_property_names() {
        let resp = LockBatchResponseBody {
            lock_ok_mq_set: vec![MessageQueue {
                topic: "t".into(),
                broker_name: "b".into(),
                queue_id: 1,
            }],
        };
        assert_eq!(
            String::from_utf8(encode(&resp)).unwrap(),
            r#"{"lockOKMQSet":[{"brokerName":"b","queueId":1,"topic":"t"}]}"#
        );
        let req: LockBatchRequestBody =
            decode(br#"{"clientId":"c","consumerGroup":"g","mqSet":[{"brokerName":"b","queueId":1,"topic":"t"}],"onlyThisBroker":false}"#)
                .unwrap();
        assert_eq!(req.mq_set, resp.lock_ok_mq_set);
    }

    #[test]
    fn group_config_defaults_are_javas() {
        let g: SubscriptionGroupConfig = decode(br#"{"groupName":"g","retryMaxTimes":1}"#).unwrap();
        assert!(g.consume_enable);
        assert_eq!(g.retry_max_times, 1);
        assert_eq!(g.retry_queue_nums, 1);
    }
}
