//! Frames captured on loopback between real peers: Apache RocketMQ 5.3.3 (name server and broker),
//! the 4.9.8 Java client, rocketmq-client-go/v2 and rocketmq-tools 5.3.3 (tshark, read with
//! tests/clients/remoting/frames.py). File names: `req<code>` or `resp<request code>-code<code>`,
//! serialization, the requesting client's language, and which side wrote the frame.
//! Every one must decode, survive a re-encode, and carry what the protocol says it carries.

use std::path::PathBuf;

use ferromq_remoting::body::{self, MessageQueue};
use ferromq_remoting::code::{request, response, LanguageCode};
use ferromq_remoting::custom::{self, pull_sys_flag, CustomHeader};
use ferromq_remoting::frame::{decode_frame, encode_frame};
use ferromq_remoting::message::{self, property, StoredMessage};
use ferromq_remoting::{Command, SerializeType};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> Command {
    let bytes =
        std::fs::read(dir().join(format!("{name}.bin"))).unwrap_or_else(|e| panic!("{name}: {e}"));
    decode_frame(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_capture_decodes_and_re_encodes() {
    let mut n = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let cmd = decode_frame(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let again = decode_frame(&encode_frame(&cmd).unwrap()).unwrap();
        assert_eq!(again, cmd, "{}", path.display());
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(cmd.is_response(), name.starts_with("resp"), "{name}");
        if name.contains("-json-") {
            assert_eq!(cmd.serialize_type, SerializeType::Json);
        }
        n += 1;
    }
    assert!(n >= 40, "only {n} fixtures");
}

#[test]
fn java_4x_send_v2_and_its_answer() {
    let req = fixture("req310-json-java-from-client");
    assert_eq!(req.code, request::SEND_MESSAGE_V2);
    assert_eq!(req.language, LanguageCode::Java);
    assert_eq!(req.version, 409, "4.9.8 is MQVersion ordinal 409");
    let h = custom::send_header(req.code, &req.ext_fields).unwrap();
    assert_eq!(h.default_topic, "TBW102");
    let props = message::decode_properties(h.properties.as_deref().unwrap());
    let uniq = &props[property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX];
    assert!(message::parse_unique_id(uniq).is_some(), "UNIQ_KEY {uniq}");
    assert!(props.contains_key(property::TAGS));
    assert_eq!(
        props.get(property::WAIT_STORE_MSG_OK).map(String::as_str),
        Some("true")
    );

    let resp = fixture("resp310-code0-json-java-from-server");
    assert_eq!(resp.code, response::SUCCESS);
    assert_eq!(resp.opaque, req.opaque);
    let r = custom::SendMessageResponseHeader::from_ext_fields(&resp.ext_fields).unwrap();
    assert_eq!(
        r.msg_id.len(),
        32,
        "offset message id of an IPv4 store host"
    );
    let (host, _offset) = message::decode_offset_msg_id(&r.msg_id).unwrap();
    assert_eq!(host.to_string(), "127.0.0.1:29911");
    assert_eq!(
        r.transaction_id.as_deref(),
        Some(uniq.as_str()),
        "5.3.3 echoes the UNIQ_KEY as transactionId"
    );
}

#[test]
fn java_4x_batch_send_body() {
    let req = fixture("req320-json-java-from-client");
    assert_eq!(req.code, request::SEND_BATCH_MESSAGE);
    let h = custom::send_header(req.code, &req.ext_fields).unwrap();
    assert_eq!(h.batch, Some(true));
    let entries = message::decode_batch(&req.body).unwrap();
    assert_eq!(entries.len(), 10);
    for e in &entries {
        assert!(e
            .properties
            .contains_key(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX));
        assert!(std::str::from_utf8(&e.body).unwrap().starts_with("BATCH-"));
    }
    let resp = fixture("resp320-code0-json-java-from-server");
    let r = custom::SendMessageResponseHeader::from_ext_fields(&resp.ext_fields).unwrap();
    assert_eq!(
        r.msg_id.split(',').count(),
        10,
        "one offset id per batch message"
    );
}

#[test]
fn go_sends_v1_headers() {
    let req = fixture("req10-json-go-from-client");
    assert_eq!(req.code, request::SEND_MESSAGE);
    assert_eq!(req.language, LanguageCode::Go);
    let h = custom::send_header(req.code, &req.ext_fields).unwrap();
    assert_eq!(h.broker_name.as_deref(), Some("broker-t"));
    assert_eq!(h.batch, Some(false));
    assert!(message::decode_properties(h.properties.as_deref().unwrap())
        .contains_key(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX));
}

#[test]
fn pull_request_and_found_messages() {
    for name in ["req11-json-java-from-client", "req11-json-go-from-client"] {
        let req = fixture(name);
        let h = custom::PullMessageRequestHeader::from_ext_fields(&req.ext_fields).unwrap();
        assert_ne!(
            h.sys_flag & pull_sys_flag::SUSPEND,
            0,
            "{name}: long polling asked"
        );
        assert!(h.suspend_timeout_millis > 0);
        assert!(h.max_msg_nums > 0);
    }
    let resp = fixture("resp11-code0-json-java-from-server");
    assert_eq!(resp.remark.as_deref(), Some("FOUND"));
    let h = custom::PullMessageResponseHeader::from_ext_fields(&resp.ext_fields).unwrap();
    let msgs = StoredMessage::decode_all(&resp.body, true).unwrap();
    assert!(!msgs.is_empty());
    let last = msgs.last().unwrap();
    assert_eq!(h.next_begin_offset, last.queue_offset + 1);
    for m in &msgs {
        assert_eq!(m.store_host.to_string(), "127.0.0.1:29911");
        assert!(m.uniq_key().is_some());
        // Bodies over 4 KiB arrive zlib-compressed, as the client sent them.
        let plain = m.plain_body().unwrap();
        assert!(
            plain.starts_with(b"SYNC-")
                || plain.starts_with(b"ASYNC-")
                || plain.starts_with(b"ONEWAY-")
                || plain.starts_with(b"BATCH-")
        );
        // Re-encoding gives the same bytes the broker sent.
        let mut one = Vec::new();
        m.encode_into(&mut one).unwrap();
        assert_eq!(StoredMessage::decode(&one, true).unwrap().0, *m);
    }
    let stale = fixture("resp11-code25-json-java-from-server");
    assert_eq!(stale.code, response::SUBSCRIPTION_NOT_LATEST);
}

#[test]
fn stored_messages_re_encode_to_the_same_layout() {
    let resp = fixture("resp11-code0-json-java-from-server");
    let mut rest = &resp.body[..];
    while !rest.is_empty() {
        let (m, used) = StoredMessage::decode(rest, true).unwrap();
        let ours = m.encode().unwrap();
        // Same size and the same bytes up to the properties, whose order is the sender's
        // HashMap order (ours is sorted); the property set itself is compared through decode.
        assert_eq!(ours.len(), used);
        let props_len = message::encode_properties(&m.properties).len();
        assert_eq!(ours[..used - props_len], rest[..used - props_len]);
        assert_eq!(StoredMessage::decode(&ours, true).unwrap().0, m);
        rest = &rest[used..];
    }
}

#[test]
fn heartbeats_of_java_and_go() {
    for name in ["req34-json-java-from-client", "req34-json-go-from-client"] {
        let hb: body::HeartbeatData = body::decode(&fixture(name).body).unwrap();
        assert!(!hb.client_id.is_empty(), "{name}");
        assert!(
            !hb.producer_data_set.is_empty() || !hb.consumer_data_set.is_empty(),
            "{name}"
        );
        for c in &hb.consumer_data_set {
            assert_eq!(c.message_model, "CLUSTERING", "{name}");
            assert_eq!(c.consume_type, "CONSUME_PASSIVELY", "{name}");
        }
    }
    let resp = fixture("resp34-code0-json-java-from-server");
    assert_eq!(
        resp.ext_fields
            .get("IS_SUPPORT_HEART_BEAT_V2")
            .map(String::as_str),
        Some("true")
    );
}

#[test]
fn routes_in_both_json_styles() {
    let go_req = fixture("req105-json-go-from-client");
    assert!(go_req.version < 401, "Go announces a pre-4.9.4 version");
    let go = fixture("resp105-code0-json-go-from-server");
    assert!(
        std::str::from_utf8(&go.body)
            .unwrap()
            .contains(r#""brokerAddrs":{0:"#),
        "bare numeric keys for old versions"
    );
    let java = fixture("resp105-code0-json-java-from-server");
    assert!(
        std::str::from_utf8(&java.body)
            .unwrap()
            .contains(r#""brokerAddrs":{"0":"#),
        "quoted keys from 4.9.4 on"
    );
    for resp in [go, java] {
        let route: body::TopicRouteData = body::decode(&resp.body).unwrap();
        assert_eq!(route.broker_datas[0].broker_addrs.0[&0], "127.0.0.1:29911");
        assert_eq!(
            route.queue_datas[0].perm,
            body::perm::READ | body::perm::WRITE
        );
        // Our writer reproduces RocketMQ's text in the style the version asks for.
        let style = if resp.body.windows(5).any(|w| w == b"{\"0\":") {
            body::Style::Standard
        } else {
            body::Style::Fastjson
        };
        assert_eq!(
            ferromq_remoting::fastjson::to_vec(&route, style),
            resp.body.to_vec()
        );
    }
    let missing = fixture("resp105-code17-json-java-from-server");
    assert_eq!(missing.code, response::TOPIC_NOT_EXIST);
}

#[test]
fn consumer_offsets() {
    let q = custom::QueryConsumerOffsetRequestHeader::from_ext_fields(
        &fixture("req14-json-java-from-client").ext_fields,
    )
    .unwrap();
    assert!(!q.consumer_group.is_empty());
    assert_eq!(
        fixture("resp14-code22-json-java-from-server").code,
        response::QUERY_NOT_FOUND
    );
    let found = fixture("resp14-code0-json-java-from-server");
    assert!(custom::OffsetResponseHeader::from_ext_fields(&found.ext_fields).is_ok());
    let upd = fixture("req15-json-java-from-client");
    assert!(upd.is_oneway(), "4.x commits offsets one-way");
    custom::UpdateConsumerOffsetRequestHeader::from_ext_fields(&upd.ext_fields).unwrap();
    let go = fixture("req15-json-go-from-client");
    assert!(!go.is_oneway(), "Go waits for the answer");
    custom::UpdateConsumerOffsetRequestHeader::from_ext_fields(&go.ext_fields).unwrap();
}

#[test]
fn retries_and_transactions() {
    let back = custom::ConsumerSendMsgBackRequestHeader::from_ext_fields(
        &fixture("req36-json-java-from-client").ext_fields,
    )
    .unwrap();
    assert!(back.origin_msg_id.is_some() && back.origin_topic.is_some());
    assert_eq!(back.max_reconsume_times, Some(1));
    let end = fixture("req37-json-java-from-client");
    assert!(end.is_oneway());
    let e = custom::EndTransactionRequestHeader::from_ext_fields(&end.ext_fields).unwrap();
    assert!([
        custom::transaction_type::COMMIT,
        custom::transaction_type::ROLLBACK,
        custom::transaction_type::NOT_TYPE
    ]
    .contains(&e.commit_or_rollback));
    let check = fixture("req39-json-java-from-server");
    assert!(check.is_oneway());
    let c = custom::CheckTransactionStateRequestHeader::from_ext_fields(&check.ext_fields).unwrap();
    let (half, _) = StoredMessage::decode(&check.body, true).unwrap();
    assert_eq!(half.commit_log_offset, c.commit_log_offset);
    // The broker sends the half message as stored in its half topic; the real topic is a property.
    assert_eq!(c.topic.as_deref(), Some("RMQ_SYS_TRANS_HALF_TOPIC"));
    assert_eq!(
        half.properties
            .get(property::TRANSACTION_PREPARED)
            .map(String::as_str),
        Some("true")
    );
    assert!(half.properties.contains_key(property::REAL_TOPIC));
    assert_eq!(c.transaction_id.as_deref(), half.uniq_key());
}

#[test]
fn rebalance_and_orderly_locks() {
    let notify = fixture("req40-json-java-from-server");
    assert!(notify.is_oneway());
    custom::ConsumerGroupRequestHeader::from_ext_fields(&notify.ext_fields).unwrap();
    let list: body::GetConsumerListByGroupResponseBody =
        body::decode(&fixture("resp38-code0-json-java-from-server").body).unwrap();
    assert_eq!(list.consumer_id_list.len(), 1);
    let lock: body::LockBatchRequestBody =
        body::decode(&fixture("req41-json-java-from-client").body).unwrap();
    assert!(!lock.mq_set.is_empty());
    let locked: body::LockBatchResponseBody =
        body::decode(&fixture("resp41-code0-json-java-from-server").body).unwrap();
    assert!(locked
        .lock_ok_mq_set
        .iter()
        .all(|mq| lock.mq_set.contains(mq)));
    let unlock: body::LockBatchRequestBody =
        body::decode(&fixture("req42-json-java-from-client").body).unwrap();
    assert!(!unlock.mq_set.is_empty());
    custom::UnregisterClientRequestHeader::from_ext_fields(
        &fixture("req35-json-java-from-client").ext_fields,
    )
    .unwrap();
}

#[test]
fn admin_answers() {
    let stats: body::ConsumeStats =
        body::decode(&fixture("resp208-code0-json-java-from-server").body).unwrap();
    assert_eq!(stats.offset_table.0.len(), 4, "object keys read");
    let topic: body::TopicStatsTable =
        body::decode(&fixture("resp202-code0-json-java-from-server").body).unwrap();
    assert_eq!(topic.offset_table.0.len(), 4);
    let cluster: body::ClusterInfo =
        body::decode(&fixture("resp106-code0-json-java-from-server").body).unwrap();
    assert_eq!(
        cluster.broker_addr_table["broker-t"].broker_addrs.0[&0],
        "127.0.0.1:29911"
    );
    assert!(cluster.cluster_addr_table["FerromqTestCluster"].contains(&"broker-t".to_string()));
    let cc: body::ConsumerConnection =
        body::decode(&fixture("resp203-code0-json-java-from-server").body).unwrap();
    assert_eq!(cc.connection_set[0].language, "JAVA");
    let pc: body::ProducerConnection =
        body::decode(&fixture("resp204-code0-json-java-from-server").body).unwrap();
    assert!(!pc.connection_set.is_empty());
    let kv: body::KvTable =
        body::decode(&fixture("resp28-code0-json-java-from-server").body).unwrap();
    assert!(kv.table.contains_key("brokerVersionDesc"));
    let topics: body::TopicConfigSerializeWrapper =
        body::decode(&fixture("resp21-code0-json-java-from-server").body).unwrap();
    assert!(
        topics.topic_config_table.contains_key("TBW102") || !topics.topic_config_table.is_empty()
    );
    let groups: body::SubscriptionGroupWrapper =
        body::decode(&fixture("resp201-code0-json-java-from-server").body).unwrap();
    assert!(!groups.subscription_group_table.is_empty());
    let g: body::SubscriptionGroupConfig =
        body::decode(&fixture("req200-json-java-from-client").body).unwrap();
    assert!(!g.group_name.is_empty());
    let reset: body::ResetOffsetBody =
        body::decode(&fixture("resp222-code0-json-java-from-server").body).unwrap();
    assert!(reset
        .offset_table
        .0
        .keys()
        .all(|mq: &MessageQueue| mq.broker_name == "broker-t"));
    custom::ResetOffsetRequestHeader::from_ext_fields(
        &fixture("req222-json-java-from-client").ext_fields,
    )
    .unwrap();
    let running: body::ConsumerRunningInfo =
        body::decode(&fixture("resp307-code0-json-java-from-client").body).unwrap();
    assert!(!running.mq_table.0.is_empty());
    custom::GetConsumerRunningInfoRequestHeader::from_ext_fields(
        &fixture("req307-json-java-from-server").ext_fields,
    )
    .unwrap();
    let topic_list: body::TopicList =
        body::decode(&fixture("resp206-code0-json-java-from-server").body).unwrap();
    assert!(!topic_list.topic_list.is_empty());
    let config = fixture("resp26-code0-json-java-from-server");
    assert!(std::str::from_utf8(&config.body)
        .unwrap()
        .contains("brokerName=broker-t"));
    custom::GetBrokerConfigResponseHeader::from_ext_fields(&config.ext_fields).unwrap();
    custom::CreateTopicRequestHeader::from_ext_fields(
        &fixture("req17-json-java-from-client").ext_fields,
    )
    .unwrap();
}

#[test]
fn query_and_view_messages() {
    let q = custom::QueryMessageRequestHeader::from_ext_fields(
        &fixture("req12-json-java-from-client").ext_fields,
    )
    .unwrap();
    assert!(q.max_num > 0);
    let found = fixture("resp12-code0-json-java-from-server");
    custom::QueryMessageResponseHeader::from_ext_fields(&found.ext_fields).unwrap();
    assert!(!StoredMessage::decode_all(&found.body, true)
        .unwrap()
        .is_empty());
    let v = custom::ViewMessageRequestHeader::from_ext_fields(
        &fixture("req33-json-java-from-client").ext_fields,
    )
    .unwrap();
    let viewed = fixture("resp33-code0-json-java-from-server");
    let (m, _) = StoredMessage::decode(&viewed.body, true).unwrap();
    assert_eq!(m.commit_log_offset, v.offset);
}

/// The 4.9.8 client and the 5.3.3 tools with `-Drocketmq.serialize.type=ROCKETMQ` send binary
/// headers (language is then a number: 0 = JAVA).
#[test]
fn binary_headers_from_java_clients() {
    let send = fixture("req310-rocketmq-0-from-client");
    assert_eq!(send.serialize_type, SerializeType::RocketMq);
    assert_eq!(send.language, LanguageCode::Java);
    assert_eq!(send.version, 409);
    let h = custom::send_header(send.code, &send.ext_fields).unwrap();
    assert!(message::decode_properties(h.properties.as_deref().unwrap())
        .contains_key(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX));
    let batch = fixture("req320-rocketmq-0-from-client");
    assert_eq!(message::decode_batch(&batch.body).unwrap().len(), 10);
    custom::PullMessageRequestHeader::from_ext_fields(
        &fixture("req11-rocketmq-0-from-client").ext_fields,
    )
    .unwrap();
    let hb: body::HeartbeatData =
        body::decode(&fixture("req34-rocketmq-0-from-client").body).unwrap();
    assert!(!hb.client_id.is_empty());
    let lock: body::LockBatchRequestBody =
        body::decode(&fixture("req41-rocketmq-0-from-client").body).unwrap();
    assert!(!lock.mq_set.is_empty());
    let end = fixture("req37-rocketmq-0-from-client");
    assert!(end.is_oneway());
    custom::EndTransactionRequestHeader::from_ext_fields(&end.ext_fields).unwrap();
    custom::ConsumerSendMsgBackRequestHeader::from_ext_fields(
        &fixture("req36-rocketmq-0-from-client").ext_fields,
    )
    .unwrap();
    let commit = fixture("req15-rocketmq-0-from-client");
    assert!(commit.is_oneway());
    custom::UpdateConsumerOffsetRequestHeader::from_ext_fields(&commit.ext_fields).unwrap();
    let route = fixture("req105-rocketmq-0-from-client");
    assert_eq!(route.code, request::GET_ROUTEINFO_BY_TOPIC);
    custom::GetRouteInfoRequestHeader::from_ext_fields(&route.ext_fields).unwrap();
    custom::CreateTopicRequestHeader::from_ext_fields(
        &fixture("req17-rocketmq-0-from-client").ext_fields,
    )
    .unwrap();
    custom::ResetOffsetRequestHeader::from_ext_fields(
        &fixture("req222-rocketmq-0-from-client").ext_fields,
    )
    .unwrap();
    custom::GetConsumeStatsRequestHeader::from_ext_fields(
        &fixture("req208-rocketmq-0-from-client").ext_fields,
    )
    .unwrap();
    custom::ViewMessageRequestHeader::from_ext_fields(
        &fixture("req33-rocketmq-0-from-client").ext_fields,
    )
    .unwrap();
    // A client's answer to the broker (consumer running info) in binary, remark included.
    let running = fixture("resp307-code0-rocketmq-java-from-client");
    assert!(running.is_response());
    assert_eq!(running.serialize_type, SerializeType::RocketMq);
    let info: body::ConsumerRunningInfo = body::decode(&running.body).unwrap();
    assert!(!info.mq_table.0.is_empty());
}

/// Binary headers re-encode byte for byte when the map has at most one entry (Java's HashMap
/// order and our sorted order can only differ with more).
#[test]
fn binary_header_bytes_match_java() {
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().contains("-rocketmq-") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let cmd = decode_frame(&bytes).unwrap();
        if cmd.ext_fields.len() <= 1 {
            assert_eq!(encode_frame(&cmd).unwrap(), bytes, "{}", path.display());
        } else {
            // Same length, except that entries with an empty value (Java's null on reading, e.g.
            // mqadmin's `attributes=""`) are dropped on decode, as Java drops them.
            let ours = encode_frame(&cmd).unwrap();
            assert!(ours.len() <= bytes.len(), "{}", path.display());
            assert_eq!(decode_frame(&ours).unwrap(), cmd);
        }
    }
}
