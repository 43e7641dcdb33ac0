//! Typed custom headers: each request's parameters, carried as strings in `extFields`.
//!
//! Java peers fill `extFields` from the fields of a header class by reflection, so the wire names
//! are the Java field names (`consumerGroup`, `queueId`, and for send v2 the letters `a`..`n`),
//! every value is a string (`Integer.toString`, `Boolean.toString`), and a null field is left out.
//! Required fields (Java `@CFNotNull`) are plain Rust types here and their absence is a
//! [`FieldError::Missing`]; the others are `Option`. Booleans read as Java's `Boolean.parseBoolean`
//! does (only a case-insensitive `true` is true), numbers strictly (a bad number is an error that
//! names the field, where Java would log and carry on with a null).

use crate::command::ExtFields;

/// A bad or missing custom-header field; maps to RocketMQ's `SYSTEM_ERROR` / `INVALID_PARAMETER`.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum FieldError {
    #[error("the custom field <{field}> is null")]
    Missing { field: &'static str },
    #[error("the custom field <{field}> has value {value:?}, expected {expected}")]
    Invalid {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// A request's or response's typed parameters, convertible to and from `extFields`.
pub trait CustomHeader: Sized {
    /// Reads the header from a command's ext fields.
    fn from_ext_fields(ext: &ExtFields) -> Result<Self, FieldError>;
    /// Writes the header as ext fields (absent optional fields are left out).
    fn to_ext_fields(&self) -> ExtFields;
}

/// One scalar as it travels in `extFields`.
pub trait Scalar: Sized {
    /// What the error says was expected.
    const EXPECTED: &'static str;
    fn parse(text: &str) -> Option<Self>;
    fn render(&self) -> String;
}

impl Scalar for String {
    const EXPECTED: &'static str = "a string";
    fn parse(text: &str) -> Option<Self> {
        Some(text.to_string())
    }
    fn render(&self) -> String {
        self.clone()
    }
}

macro_rules! number_scalar {
    ($($t:ty => $what:literal),*) => {$(
        impl Scalar for $t {
            const EXPECTED: &'static str = $what;
            fn parse(text: &str) -> Option<Self> {
                text.trim().parse().ok()
            }
            fn render(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
number_scalar!(i32 => "a 32-bit integer", i64 => "a 64-bit integer", f64 => "a number");

impl Scalar for bool {
    const EXPECTED: &'static str = "a boolean";
    fn parse(text: &str) -> Option<Self> {
        Some(text.eq_ignore_ascii_case("true"))
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

/// A header field: a required [`Scalar`] or an optional one.
pub trait Field: Sized {
    fn read(ext: &ExtFields, name: &'static str) -> Result<Self, FieldError>;
    fn write(&self, ext: &mut ExtFields, name: &'static str);
}

impl<T: Scalar> Field for T {
    fn read(ext: &ExtFields, name: &'static str) -> Result<Self, FieldError> {
        let text = ext.get(name).ok_or(FieldError::Missing { field: name })?;
        T::parse(text).ok_or_else(|| FieldError::Invalid {
            field: name,
            value: text.clone(),
            expected: T::EXPECTED,
        })
    }
    fn write(&self, ext: &mut ExtFields, name: &'static str) {
        ext.insert(name.to_string(), self.render());
    }
}

impl<T: Scalar> Field for Option<T> {
    fn read(ext: &ExtFields, name: &'static str) -> Result<Self, FieldError> {
        match ext.get(name) {
            None => Ok(None),
            Some(_) => T::read(ext, name).map(Some),
        }
    }
    fn write(&self, ext: &mut ExtFields, name: &'static str) {
        if let Some(v) = self {
            v.write(ext, name);
        }
    }
}

/// Declares a header struct with its wire names.
macro_rules! custom_header {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty = $wire:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct $name { $($(#[$fdoc])* pub $field: $ty,)* }

        impl CustomHeader for $name {
            #[allow(unused_variables)]
            fn from_ext_fields(ext: &ExtFields) -> Result<Self, FieldError> {
                Ok($name { $($field: <$ty as Field>::read(ext, $wire)?,)* })
            }
            fn to_ext_fields(&self) -> ExtFields {
                #[allow(unused_mut)]
                let mut ext = ExtFields::new();
                $(Field::write(&self.$field, &mut ext, $wire);)*
                ext
            }
        }
    };
}

/// Bits of `PullMessageRequestHeader.sysFlag`.
pub mod pull_sys_flag {
    /// The request also commits `commitOffset` for the group.
    pub const COMMIT_OFFSET: i32 = 1;
    /// The broker may hold the request (long polling) for `suspendTimeoutMillis`.
    pub const SUSPEND: i32 = 1 << 1;
    /// The request carries its subscription (`subscription`, `expressionType`), not relying on a
    /// heartbeat's.
    pub const SUBSCRIPTION: i32 = 1 << 2;
    /// Class filter mode (long removed; refuse or ignore).
    pub const CLASS_FILTER: i32 = 1 << 3;
    /// Sent by the lite pull consumer.
    pub const LITE_PULL: i32 = 1 << 4;
}

/// `EndTransactionRequestHeader.commitOrRollback` values (the transaction bits of the message
/// sys flag).
pub mod transaction_type {
    pub const NOT_TYPE: i32 = 0;
    pub const PREPARED: i32 = 1 << 2;
    pub const COMMIT: i32 = 2 << 2;
    pub const ROLLBACK: i32 = 3 << 2;
}

custom_header! {
    /// SEND_MESSAGE (10) and, after [`SendMessageRequestHeaderV2::into_v1`], SEND_MESSAGE_V2 (310)
    /// and SEND_BATCH_MESSAGE (320).
    SendMessageRequestHeader {
        producer_group: String = "producerGroup",
        topic: String = "topic",
        /// `TBW102`: the template topic for auto-creation.
        default_topic: String = "defaultTopic",
        default_topic_queue_nums: i32 = "defaultTopicQueueNums",
        queue_id: i32 = "queueId",
        /// Message sys flag: compression, multi tags, transaction type (see `message::sys_flag`).
        sys_flag: i32 = "sysFlag",
        born_timestamp: i64 = "bornTimestamp",
        /// The user flag, opaque to the broker.
        flag: i32 = "flag",
        /// The message properties string (see `message::properties`).
        properties: Option<String> = "properties",
        /// Set when a consumer re-sends to a %RETRY% topic (4.x: never for plain producers).
        reconsume_times: Option<i32> = "reconsumeTimes",
        unit_mode: Option<bool> = "unitMode",
        batch: Option<bool> = "batch",
        max_reconsume_times: Option<i32> = "maxReconsumeTimes",
        /// 5.x clients: the broker name the queue belongs to (the proxy routes by it).
        broker_name: Option<String> = "bname",
    }
}

custom_header! {
    /// SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320): the v1 fields under one-letter names,
    /// which 4.x clients use by default to shorten every send's header.
    SendMessageRequestHeaderV2 {
        a: String = "a",
        b: String = "b",
        c: String = "c",
        d: i32 = "d",
        e: i32 = "e",
        f: i32 = "f",
        g: i64 = "g",
        h: i32 = "h",
        i: Option<String> = "i",
        j: Option<i32> = "j",
        k: Option<bool> = "k",
        l: Option<i32> = "l",
        m: Option<bool> = "m",
        n: Option<String> = "n",
    }
}

impl SendMessageRequestHeaderV2 {
    /// The same header under its long names.
    pub fn into_v1(self) -> SendMessageRequestHeader {
        SendMessageRequestHeader {
            producer_group: self.a,
            topic: self.b,
            default_topic: self.c,
            default_topic_queue_nums: self.d,
            queue_id: self.e,
            sys_flag: self.f,
            born_timestamp: self.g,
            flag: self.h,
            properties: self.i,
            reconsume_times: self.j,
            unit_mode: self.k,
            max_reconsume_times: self.l,
            batch: self.m,
            broker_name: self.n,
        }
    }

    /// The short form of a v1 header.
    pub fn from_v1(v1: SendMessageRequestHeader) -> Self {
        SendMessageRequestHeaderV2 {
            a: v1.producer_group,
            b: v1.topic,
            c: v1.default_topic,
            d: v1.default_topic_queue_nums,
            e: v1.queue_id,
            f: v1.sys_flag,
            g: v1.born_timestamp,
            h: v1.flag,
            i: v1.properties,
            j: v1.reconsume_times,
            k: v1.unit_mode,
            l: v1.max_reconsume_times,
            m: v1.batch,
            n: v1.broker_name,
        }
    }
}

/// Reads a send request of any of the three send codes into the long-named header.
pub fn send_header(code: i32, ext: &ExtFields) -> Result<SendMessageRequestHeader, FieldError> {
    use crate::code::request;
    match code {
        request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE => {
            SendMessageRequestHeaderV2::from_ext_fields(ext)
                .map(SendMessageRequestHeaderV2::into_v1)
        }
        _ => SendMessageRequestHeader::from_ext_fields(ext),
    }
}

custom_header! {
    /// Answer to a send. `msgId` is the offset message id (store host + commit-log offset), or the
    /// comma-joined ids of a batch; clients show the `UNIQ_KEY` as the id and keep this one as
    /// `offsetMsgId`.
    SendMessageResponseHeader {
        msg_id: String = "msgId",
        queue_id: i32 = "queueId",
        queue_offset: i64 = "queueOffset",
        transaction_id: Option<String> = "transactionId",
        batch_uniq_id: Option<String> = "batchUniqId",
        recall_handle: Option<String> = "recallHandle",
    }
}

custom_header! {
    /// PULL_MESSAGE (11).
    PullMessageRequestHeader {
        consumer_group: String = "consumerGroup",
        topic: String = "topic",
        queue_id: i32 = "queueId",
        queue_offset: i64 = "queueOffset",
        max_msg_nums: i32 = "maxMsgNums",
        /// [`pull_sys_flag`] bits.
        sys_flag: i32 = "sysFlag",
        commit_offset: i64 = "commitOffset",
        suspend_timeout_millis: i64 = "suspendTimeoutMillis",
        /// The filter expression (tags `a || b`, `*`, or SQL92).
        subscription: Option<String> = "subscription",
        sub_version: i64 = "subVersion",
        /// `TAG` (default) or `SQL92`.
        expression_type: Option<String> = "expressionType",
        max_msg_bytes: Option<i32> = "maxMsgBytes",
    }
}

custom_header! {
    /// Answer to a pull; the body is the found messages in the stored-message encoding.
    PullMessageResponseHeader {
        /// 0 = keep pulling from the master.
        suggest_which_broker_id: i64 = "suggestWhichBrokerId",
        next_begin_offset: i64 = "nextBeginOffset",
        min_offset: i64 = "minOffset",
        max_offset: i64 = "maxOffset",
        offset_delta: Option<i64> = "offsetDelta",
        topic_sys_flag: Option<i32> = "topicSysFlag",
        group_sys_flag: Option<i32> = "groupSysFlag",
        forbidden_type: Option<i32> = "forbiddenType",
    }
}

custom_header! {
    /// QUERY_CONSUMER_OFFSET (14).
    QueryConsumerOffsetRequestHeader {
        consumer_group: String = "consumerGroup",
        topic: String = "topic",
        queue_id: i32 = "queueId",
        set_zero_if_not_found: Option<bool> = "setZeroIfNotFound",
    }
}

custom_header! {
    /// UPDATE_CONSUMER_OFFSET (15), usually one-way from 4.x clients.
    UpdateConsumerOffsetRequestHeader {
        consumer_group: String = "consumerGroup",
        topic: String = "topic",
        queue_id: i32 = "queueId",
        commit_offset: i64 = "commitOffset",
    }
}

custom_header! {
    /// The answer of QUERY_CONSUMER_OFFSET, GET_MAX_OFFSET, GET_MIN_OFFSET and
    /// SEARCH_OFFSET_BY_TIMESTAMP: one offset.
    OffsetResponseHeader {
        offset: i64 = "offset",
    }
}

custom_header! {
    /// GET_MAX_OFFSET (30).
    GetMaxOffsetRequestHeader {
        topic: String = "topic",
        queue_id: i32 = "queueId",
        /// 5.x: only committed (replicated) messages count; default true.
        committed: Option<bool> = "committed",
    }
}

custom_header! {
    /// GET_MIN_OFFSET (31) and GET_EARLIEST_MSG_STORETIME (32).
    TopicQueueRequestHeader {
        topic: String = "topic",
        queue_id: i32 = "queueId",
    }
}

custom_header! {
    /// SEARCH_OFFSET_BY_TIMESTAMP (29).
    SearchOffsetRequestHeader {
        topic: String = "topic",
        queue_id: i32 = "queueId",
        timestamp: i64 = "timestamp",
        /// `LOWER` (default) or `UPPER`: which offset to pick among equal store times.
        boundary_type: Option<String> = "boundaryType",
    }
}

custom_header! {
    /// CONSUMER_SEND_MSG_BACK (36): a push consumer hands a failed message back for retry.
    ConsumerSendMsgBackRequestHeader {
        /// Commit-log offset of the message (what the offset message id encodes).
        offset: i64 = "offset",
        group: String = "group",
        /// 0 = broker picks `3 + reconsumeTimes`; -1 = straight to the DLQ; else a delay level.
        delay_level: i32 = "delayLevel",
        origin_msg_id: Option<String> = "originMsgId",
        origin_topic: Option<String> = "originTopic",
        unit_mode: Option<bool> = "unitMode",
        max_reconsume_times: Option<i32> = "maxReconsumeTimes",
    }
}

custom_header! {
    /// END_TRANSACTION (37), one-way from 4.x producers.
    EndTransactionRequestHeader {
        topic: Option<String> = "topic",
        producer_group: String = "producerGroup",
        /// Queue offset of the half message.
        tran_state_table_offset: i64 = "tranStateTableOffset",
        /// Commit-log offset of the half message.
        commit_log_offset: i64 = "commitLogOffset",
        /// [`transaction_type`]: COMMIT, ROLLBACK or NOT_TYPE (unknown).
        commit_or_rollback: i32 = "commitOrRollback",
        from_transaction_check: Option<bool> = "fromTransactionCheck",
        msg_id: String = "msgId",
        transaction_id: Option<String> = "transactionId",
    }
}

custom_header! {
    /// CHECK_TRANSACTION_STATE (39), broker to producer (one-way); the body is the half message
    /// in the stored-message encoding.
    CheckTransactionStateRequestHeader {
        topic: Option<String> = "topic",
        tran_state_table_offset: i64 = "tranStateTableOffset",
        commit_log_offset: i64 = "commitLogOffset",
        msg_id: Option<String> = "msgId",
        transaction_id: Option<String> = "transactionId",
        offset_msg_id: Option<String> = "offsetMsgId",
    }
}

custom_header! {
    /// UNREGISTER_CLIENT (35).
    UnregisterClientRequestHeader {
        client_id: String = "clientID",
        producer_group: Option<String> = "producerGroup",
        consumer_group: Option<String> = "consumerGroup",
    }
}

custom_header! {
    /// GET_CONSUMER_LIST_BY_GROUP (38), NOTIFY_CONSUMER_IDS_CHANGED (40, broker to client),
    /// GET_CONSUMER_CONNECTION_LIST (203).
    ConsumerGroupRequestHeader {
        consumer_group: String = "consumerGroup",
    }
}

custom_header! {
    /// GET_CONSUMER_RUNNING_INFO (307), broker to client.
    GetConsumerRunningInfoRequestHeader {
        consumer_group: String = "consumerGroup",
        client_id: String = "clientId",
        jstack_enable: Option<bool> = "jstackEnable",
    }
}

custom_header! {
    /// GET_ROUTEINFO_BY_TOPIC (105), name-server port.
    GetRouteInfoRequestHeader {
        topic: String = "topic",
        /// 5.x: ask for standard JSON (quoted numeric keys) whatever the version.
        accept_standard_json_only: Option<bool> = "acceptStandardJsonOnly",
    }
}

custom_header! {
    /// UPDATE_AND_CREATE_TOPIC (17).
    CreateTopicRequestHeader {
        topic: String = "topic",
        default_topic: String = "defaultTopic",
        read_queue_nums: i32 = "readQueueNums",
        write_queue_nums: i32 = "writeQueueNums",
        /// Permission bits: 2 = write, 4 = read, 6 = both.
        perm: i32 = "perm",
        /// `SINGLE_TAG` or `MULTI_TAG`.
        topic_filter_type: String = "topicFilterType",
        topic_sys_flag: Option<i32> = "topicSysFlag",
        order: bool = "order",
        /// `+message.type=FIFO` style attributes, comma separated (5.x tools).
        attributes: Option<String> = "attributes",
        force: Option<bool> = "force",
    }
}

custom_header! {
    /// Requests naming one topic: DELETE_TOPIC_IN_BROKER (215), GET_TOPIC_STATS_INFO (202),
    /// GET_TOPIC_CONFIG (351), QUERY_TOPIC_CONSUME_BY_WHO (300).
    TopicRequestHeader {
        topic: String = "topic",
    }
}

custom_header! {
    /// DELETE_TOPIC_IN_NAMESRV (216).
    DeleteTopicFromNamesrvRequestHeader {
        topic: String = "topic",
        cluster_name: Option<String> = "clusterName",
    }
}

custom_header! {
    /// GET_CONSUME_STATS (208).
    GetConsumeStatsRequestHeader {
        consumer_group: String = "consumerGroup",
        topic: Option<String> = "topic",
        topic_list: Option<String> = "topicList",
    }
}

custom_header! {
    /// GET_PRODUCER_CONNECTION_LIST (204).
    GetProducerConnectionListRequestHeader {
        producer_group: String = "producerGroup",
    }
}

custom_header! {
    /// GET_SUBSCRIPTIONGROUP_CONFIG (352).
    GetSubscriptionGroupConfigRequestHeader {
        group: String = "group",
    }
}

custom_header! {
    /// DELETE_SUBSCRIPTIONGROUP (207).
    DeleteSubscriptionGroupRequestHeader {
        group_name: String = "groupName",
        clean_offset: Option<bool> = "cleanOffset",
    }
}

custom_header! {
    /// QUERY_MESSAGE (12): by key, or by unique key (`UNIQ_KEY`) when `_UNIQUE_KEY_QUERY` is true.
    QueryMessageRequestHeader {
        topic: String = "topic",
        key: String = "key",
        max_num: i32 = "maxNum",
        begin_timestamp: i64 = "beginTimestamp",
        end_timestamp: i64 = "endTimestamp",
        unique_key_query: Option<bool> = "_UNIQUE_KEY_QUERY",
    }
}

custom_header! {
    /// Answer to QUERY_MESSAGE; the body is the found messages in the stored-message encoding.
    QueryMessageResponseHeader {
        index_last_update_timestamp: i64 = "indexLastUpdateTimestamp",
        index_last_update_phyoffset: i64 = "indexLastUpdatePhyoffset",
    }
}

custom_header! {
    /// VIEW_MESSAGE_BY_ID (33): the commit-log offset decoded from an offset message id.
    ViewMessageRequestHeader {
        topic: Option<String> = "topic",
        offset: i64 = "offset",
    }
}

custom_header! {
    /// INVOKE_BROKER_TO_RESET_OFFSET (222) from tools, and RESET_CONSUMER_CLIENT_OFFSET (220)
    /// from broker to client (with a `ResetOffsetBody`).
    ResetOffsetRequestHeader {
        group: String = "group",
        topic: String = "topic",
        queue_id: Option<i32> = "queueId",
        offset: Option<i64> = "offset",
        timestamp: i64 = "timestamp",
        is_force: bool = "isForce",
    }
}

custom_header! {
    /// INVOKE_BROKER_TO_GET_CONSUMER_STATUS (223) and GET_CONSUMER_STATUS_FROM_CLIENT (221).
    GetConsumerStatusRequestHeader {
        topic: String = "topic",
        group: String = "group",
        client_addr: Option<String> = "clientAddr",
    }
}

custom_header! {
    /// GET_TOPICS_BY_CLUSTER (224).
    GetTopicsByClusterRequestHeader {
        cluster: String = "cluster",
    }
}

custom_header! {
    /// Answer to GET_BROKER_CONFIG (26); the body is `key=value` lines (Java properties text).
    GetBrokerConfigResponseHeader {
        version: String = "version",
    }
}

custom_header! {
    /// GET_KV_CONFIG (101) and DELETE_KV_CONFIG (102), name-server port.
    KvConfigRequestHeader {
        namespace: String = "namespace",
        key: String = "key",
    }
}

custom_header! {
    /// PUT_KV_CONFIG (100), name-server port (tools store order-topic configs here).
    PutKvConfigRequestHeader {
        namespace: String = "namespace",
        key: String = "key",
        value: String = "value",
    }
}

custom_header! {
    /// Answer to GET_KV_CONFIG.
    GetKvConfigResponseHeader {
        value: Option<String> = "value",
    }
}

custom_header! {
    /// Requests without parameters (HEART_BEAT, LOCK_BATCH_MQ, GET_BROKER_RUNTIME_INFO, ...):
    /// 5.x clients may still send the RPC base fields, which are ignored.
    EmptyHeader {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::request;
    use proptest::prelude::*;

    fn ext(pairs: &[(&str, &str)]) -> ExtFields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn send_v2_short_names_map_to_v1() {
        let fields = ext(&[
            ("a", "pg"),
            ("b", "TopicTest"),
            ("c", "TBW102"),
            ("d", "4"),
            ("e", "2"),
            ("f", "0"),
            ("g", "1700000000000"),
            ("h", "0"),
            (
                "i",
                "UNIQ_KEY\u{1}AC1\u{2}WAIT\u{1}true\u{2}TAGS\u{1}TagA\u{2}",
            ),
            ("j", "0"),
            ("k", "false"),
            ("m", "false"),
        ]);
        let v1 = send_header(request::SEND_MESSAGE_V2, &fields).unwrap();
        assert_eq!(v1.producer_group, "pg");
        assert_eq!(v1.topic, "TopicTest");
        assert_eq!(v1.queue_id, 2);
        assert_eq!(v1.born_timestamp, 1_700_000_000_000);
        assert_eq!(v1.batch, Some(false));
        assert_eq!(v1.max_reconsume_times, None);
        let back = SendMessageRequestHeaderV2::from_v1(v1.clone()).to_ext_fields();
        assert_eq!(back, fields);
        assert_eq!(
            send_header(request::SEND_MESSAGE, &v1.to_ext_fields()).unwrap(),
            v1
        );
    }

    #[test]
    fn missing_and_bad_fields_are_named() {
        let no_group = ext(&[("topic", "t"), ("queueId", "0")]);
        assert_eq!(
            QueryConsumerOffsetRequestHeader::from_ext_fields(&no_group),
            Err(FieldError::Missing {
                field: "consumerGroup"
            })
        );
        let bad = ext(&[("consumerGroup", "g"), ("topic", "t"), ("queueId", "x")]);
        assert!(matches!(
            QueryConsumerOffsetRequestHeader::from_ext_fields(&bad),
            Err(FieldError::Invalid {
                field: "queueId",
                ..
            })
        ));
        // Java's Boolean.parseBoolean: anything but "true" is false.
        let h = GetRouteInfoRequestHeader::from_ext_fields(&ext(&[
            ("topic", "t"),
            ("acceptStandardJsonOnly", "TRUE"),
        ]))
        .unwrap();
        assert_eq!(h.accept_standard_json_only, Some(true));
        let h = GetRouteInfoRequestHeader::from_ext_fields(&ext(&[
            ("topic", "t"),
            ("acceptStandardJsonOnly", "yes"),
        ]))
        .unwrap();
        assert_eq!(h.accept_standard_json_only, Some(false));
    }

    #[test]
    fn pull_header_reads_a_4x_pull() {
        let fields = ext(&[
            ("consumerGroup", "cg"),
            ("topic", "t"),
            ("queueId", "1"),
            ("queueOffset", "0"),
            ("maxMsgNums", "32"),
            ("sysFlag", "6"),
            ("commitOffset", "0"),
            ("suspendTimeoutMillis", "15000"),
            ("subscription", "TagA || TagB"),
            ("subVersion", "1700000000000"),
            ("expressionType", "TAG"),
        ]);
        let h = PullMessageRequestHeader::from_ext_fields(&fields).unwrap();
        assert_eq!(h.sys_flag & pull_sys_flag::SUSPEND, pull_sys_flag::SUSPEND);
        assert_eq!(
            h.sys_flag & pull_sys_flag::SUBSCRIPTION,
            pull_sys_flag::SUBSCRIPTION
        );
        assert_eq!(h.sys_flag & pull_sys_flag::COMMIT_OFFSET, 0);
        assert_eq!(h.max_msg_bytes, None);
        assert_eq!(h.to_ext_fields(), fields);
    }

    proptest! {
        #[test]
        fn pull_headers_round_trip(group in "[a-zA-Z0-9_%-]{1,30}", queue_id in any::<i32>(), offset in any::<i64>(),
                                   sub in proptest::option::of("\\PC{1,30}"), bytes in proptest::option::of(any::<i32>())) {
            let h = PullMessageRequestHeader {
                consumer_group: group.clone(), topic: group, queue_id, queue_offset: offset, max_msg_nums: 32,
                sys_flag: 3, commit_offset: offset, suspend_timeout_millis: 15_000, subscription: sub,
                sub_version: 1, expression_type: Some("TAG".into()), max_msg_bytes: bytes,
            };
            prop_assert_eq!(PullMessageRequestHeader::from_ext_fields(&h.to_ext_fields()).unwrap(), h);
        }
    }
}
