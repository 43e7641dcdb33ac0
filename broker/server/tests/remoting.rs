//! The classic remoting protocol against the real `ferromq standalone` binary: bad input closes
//! the connection or gets a clear error and changes nothing, unknown requests are answered,
//! messages keep their fields across both protocols, held pulls wake on new messages, 4.9.8's
//! END_TRANSACTION without topic or id commits, and shutdown answers held pulls.

mod support;

use std::time::Duration;

use ferromq_remoting::body::{self, HeartbeatData, TopicList};
use ferromq_remoting::code::{request, response};
use ferromq_remoting::custom::{
    pull_sys_flag, transaction_type, CreateTopicRequestHeader, EndTransactionRequestHeader,
    PullMessageRequestHeader, SendMessageRequestHeader, SendMessageRequestHeaderV2,
    SendMessageResponseHeader, UpdateConsumerOffsetRequestHeader,
};
use ferromq_remoting::message::{decode_offset_msg_id, encode_properties, sys_flag, StoredMessage};
use ferromq_remoting::{Command, SerializeType};
use support::remoting::{request, typed, Remoting};
use support::*;

fn create_topic_cmd(topic: &str, kind: &str) -> Command {
    typed(
        request::UPDATE_AND_CREATE_TOPIC,
        &CreateTopicRequestHeader {
            topic: topic.into(),
            default_topic: "TBW102".into(),
            read_queue_nums: 2,
            write_queue_nums: 2,
            perm: 6,
            topic_filter_type: "SINGLE_TAG".into(),
            attributes: Some(format!("+message.type={kind}")),
            ..Default::default()
        },
    )
}

async fn create_topic(r: &mut Remoting, topic: &str, kind: &str) {
    let a = r.call(create_topic_cmd(topic, kind)).await;
    assert_eq!(a.code, response::SUCCESS, "create {topic}: {:?}", a.remark);
}

fn send_cmd(topic: &str, queue: i32, props: &[(&str, &str)], body: &[u8], flag: i32) -> Command {
    let properties = encode_properties(
        &props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let header = SendMessageRequestHeaderV2::from_v1(SendMessageRequestHeader {
        producer_group: "pg".into(),
        topic: topic.into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 4,
        queue_id: queue,
        sys_flag: flag,
        born_timestamp: 1_700_000_000_000,
        properties: Some(properties),
        ..Default::default()
    });
    typed(request::SEND_MESSAGE_V2, &header).with_body(body.to_vec())
}

async fn send(r: &mut Remoting, cmd: Command) -> SendMessageResponseHeader {
    let a = r.call(cmd).await;
    assert_eq!(a.code, response::SUCCESS, "send: {:?}", a.remark);
    a.header().expect("a send answer header")
}

fn pull_cmd(topic: &str, queue: i32, offset: i64, suspend_ms: i64) -> Command {
    let mut flags = pull_sys_flag::SUBSCRIPTION;
    if suspend_ms > 0 {
        flags |= pull_sys_flag::SUSPEND;
    }
    typed(
        request::PULL_MESSAGE,
        &PullMessageRequestHeader {
            consumer_group: "cg".into(),
            topic: topic.into(),
            queue_id: queue,
            queue_offset: offset,
            max_msg_nums: 32,
            sys_flag: flags,
            commit_offset: 0,
            suspend_timeout_millis: suspend_ms,
            subscription: Some("*".into()),
            sub_version: 0,
            expression_type: Some("TAG".into()),
            max_msg_bytes: None,
        },
    )
}

fn pulled(a: &Command) -> Vec<StoredMessage> {
    assert_eq!(a.code, response::SUCCESS, "pull: {:?}", a.remark);
    StoredMessage::decode_all(&a.body, true).expect("stored messages decode")
}

async fn topics(r: &mut Remoting) -> Vec<String> {
    let a = r
        .call(request(request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER, &[]))
        .await;
    let list: TopicList = body::decode(&a.body).expect("topic list");
    list.topic_list
}

#[tokio::test]
async fn unknown_requests_are_refused_and_the_connection_stays() {
    let s = Server::start(&[]);
    let mut r = Remoting::connect(s.remoting_port).await;
    let a = r.call(request(30_999, &[])).await;
    assert_eq!(a.code, response::REQUEST_CODE_NOT_SUPPORTED);
    assert!(
        a.remark.as_deref().unwrap_or("").contains("30999"),
        "{:?}",
        a.remark
    );
    let hb = HeartbeatData {
        client_id: "127.0.0.1@t".into(),
        ..Default::default()
    };
    let a = r
        .call(request(request::HEART_BEAT, &[]).with_body(body::encode(&hb)))
        .await;
    assert_eq!(
        a.code,
        response::SUCCESS,
        "the same connection still serves"
    );
    let a = r
        .call(request(request::HEART_BEAT, &[]).with_body(b"{not json".to_vec()))
        .await;
    assert_eq!(
        a.code,
        response::INVALID_PARAMETER,
        "a body that does not parse"
    );
}

#[tokio::test]
async fn a_message_keeps_its_fields_through_remoting_and_grpc() {
    let s = Server::start(&[]);
    let mut r = Remoting::connect(s.remoting_port).await;
    create_topic(&mut r, "rt", "NORMAL").await;
    // A 4.x client zlib-compresses bodies over 4 KiB and flags them.
    let plain = vec![b'z'; 6000];
    let compressed = {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&plain).expect("compress");
        z.finish().expect("compress")
    };
    let props = [
        ("UNIQ_KEY", "7F0000010001ABCD"),
        ("TAGS", "TagA"),
        ("KEYS", "k1 k2"),
        ("WAIT", "true"),
        ("color", "ünï"),
    ];
    let sent = send(
        &mut r,
        send_cmd("rt", 1, &props, &compressed, sys_flag::COMPRESSED),
    )
    .await;
    assert_eq!(sent.transaction_id.as_deref(), Some("7F0000010001ABCD"));
    let (host, _) = decode_offset_msg_id(&sent.msg_id).expect("an offset message id");
    assert_eq!(
        host.port(),
        s.remoting_port,
        "the id names the remoting port"
    );

    let got = pulled(&r.call(pull_cmd("rt", 1, 0, 0)).await);
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.plain_body().expect("body"), plain);
    assert_eq!(m.uniq_key(), Some("7F0000010001ABCD"));
    assert_eq!(m.properties.get("TAGS").map(String::as_str), Some("TagA"));
    assert_eq!(m.properties.get("KEYS").map(String::as_str), Some("k1 k2"));
    assert_eq!(m.properties.get("color").map(String::as_str), Some("ünï"));
    assert_eq!(m.properties.get("WAIT").map(String::as_str), Some("true"));
    assert!(!m.properties.keys().any(|k| k.starts_with("__FM_")));
    assert_eq!(
        m.offset_msg_id(),
        sent.msg_id,
        "the pulled id is the sent one"
    );

    let mut c = s.client().await;
    let got = receive_n(
        &mut c,
        receive_request("g5", "rt", 16, 30_000, 1_000, "*"),
        1,
    )
    .await;
    let sp = got[0].system_properties.clone().expect("system properties");
    assert_eq!(sp.message_id, "7F0000010001ABCD");
    assert_eq!(sp.tag.as_deref(), Some("TagA"));
    assert_eq!(sp.keys, vec!["k1", "k2"]);
    assert_eq!(got[0].body, plain, "a gRPC consumer reads the body plain");
    assert_eq!(
        got[0].user_properties.get("color").map(String::as_str),
        Some("ünï")
    );
    assert!(
        !got[0].user_properties.contains_key("WAIT"),
        "RocketMQ system properties are not user properties"
    );
}

#[tokio::test]
async fn binary_headers_are_answered_in_binary() {
    let s = Server::start(&[]);
    let mut r = Remoting::connect(s.remoting_port).await;
    let mut cmd = request(request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER, &[]);
    cmd.serialize_type = SerializeType::RocketMq;
    let a = r.call(cmd).await;
    assert_eq!(a.code, response::SUCCESS);
    assert_eq!(a.serialize_type, SerializeType::RocketMq);
}

#[tokio::test]
async fn a_held_pull_is_answered_when_a_message_arrives() {
    let s = Server::start(&[]);
    let mut r = Remoting::connect(s.remoting_port).await;
    create_topic(&mut r, "lp", "NORMAL").await;
    let port = s.remoting_port;
    let held = tokio::spawn(async move {
        let mut p = Remoting::connect(port).await;
        p.call(pull_cmd("lp", 0, 0, 20_000)).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    send(&mut r, send_cmd("lp", 0, &[("UNIQ_KEY", "A1")], b"wake", 0)).await;
    let a = held.await.expect("the pull task");
    let got = pulled(&a);
    assert_eq!(
        got[0].body.as_ref(),
        b"wake",
        "answered with the message, not PULL_NOT_FOUND after the hold"
    );
}

#[tokio::test]
async fn malformed_frames_close_the_connection_and_change_nothing() {
    let s = Server::start(&[]);
    let mut r = Remoting::connect(s.remoting_port).await;
    let before = topics(&mut r).await;
    let json = br#"{"code":17,"extFields":{"topic":"evil"},"flag":0,"language":"JAVA","opaque":1,"version":409,"serializeTypeCurrentRPC":"JSON"}"#;
    let frame = |kind: u8, header: &[u8], body: &[u8], declared: Option<i32>| {
        let len = declared.unwrap_or((4 + header.len() + body.len()) as i32);
        let mut f = len.to_be_bytes().to_vec();
        f.extend_from_slice(&((u32::from(kind) << 24) | header.len() as u32).to_be_bytes());
        f.extend_from_slice(header);
        f.extend_from_slice(body);
        f
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("oversized frame", (512_i32 << 20).to_be_bytes().to_vec()),
        ("negative length", (-5_i32).to_be_bytes().to_vec()),
        ("unknown serialize type", frame(7, json, b"", None)),
        ("header longer than the frame", {
            let mut f = frame(0, json, b"", None);
            f[4..8].copy_from_slice(&(0x00FF_FFFFu32).to_be_bytes());
            f
        }),
        ("bad JSON header", frame(0, b"{\"code\":17,", b"", None)),
        ("truncated binary header", frame(1, &[0, 17, 0], b"", None)),
        ("frame cut short", {
            let mut f = frame(0, json, b"", None);
            f.truncate(f.len() - 10);
            f
        }),
    ];
    for (what, bytes) in cases {
        let mut c = Remoting::connect(s.remoting_port).await;
        c.raw(&bytes).await;
        if what == "frame cut short" {
            // The rest never comes: the stream ends inside the frame.
            c.half_close().await;
        }
        assert!(
            c.closed_within(Duration::from_secs(10)).await,
            "{what}: the connection must close"
        );
    }
    assert_eq!(topics(&mut r).await, before, "nothing was created");
    assert_eq!(http_get(s.http_port, "/readyz").map(|r| r.0), Some(200));
}

#[tokio::test]
async fn a_flood_of_one_way_requests_is_absorbed() {
    let s = Server::start(&[]);
    let mut r = Remoting::connect(s.remoting_port).await;
    create_topic(&mut r, "fl", "NORMAL").await;
    let mut f = Remoting::connect(s.remoting_port).await;
    for i in 0..20_000 {
        f.oneway(typed(
            request::UPDATE_CONSUMER_OFFSET,
            &UpdateConsumerOffsetRequestHeader {
                consumer_group: "flood".into(),
                topic: "fl".into(),
                queue_id: 0,
                // Beyond the end of the empty queue: refused, nothing stored.
                commit_offset: 1_000_000 + i,
            },
        ))
        .await;
    }
    f.flush().await;
    let a = f
        .call(request(request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER, &[]))
        .await;
    assert_eq!(a.code, response::SUCCESS, "answered after the flood");
    let q = r
        .call(request(
            request::QUERY_CONSUMER_OFFSET,
            &[
                ("consumerGroup", "flood"),
                ("topic", "fl"),
                ("queueId", "0"),
            ],
        ))
        .await;
    assert_eq!(q.code, response::QUERY_NOT_FOUND, "no bad offset was kept");
}

#[tokio::test]
async fn end_transaction_without_topic_or_id_commits_by_offset() {
    let s = Server::start(&["--transaction-check-interval", "1h"]);
    let mut r = Remoting::connect(s.remoting_port).await;
    create_topic(&mut r, "tx", "TRANSACTION").await;
    let sent = send(
        &mut r,
        send_cmd(
            "tx",
            0,
            &[("UNIQ_KEY", "TX1"), ("TRAN_MSG", "true"), ("PGROUP", "pg")],
            b"half",
            sys_flag::TRANSACTION_PREPARED,
        ),
    )
    .await;
    assert!(
        pulled_or_empty(&r.call(pull_cmd("tx", 0, 0, 0)).await).is_empty(),
        "a half message is invisible"
    );
    let (_, offset) = decode_offset_msg_id(&sent.msg_id).expect("offset id");
    // What 4.9.8 sends: no topic; here without the transaction id too.
    let end = typed(
        request::END_TRANSACTION,
        &EndTransactionRequestHeader {
            topic: None,
            producer_group: "pg".into(),
            tran_state_table_offset: sent.queue_offset,
            commit_log_offset: offset,
            commit_or_rollback: transaction_type::COMMIT,
            from_transaction_check: Some(false),
            msg_id: "TX1".into(),
            transaction_id: None,
        },
    );
    let a = r.call(end).await;
    assert_eq!(a.code, response::SUCCESS, "{:?}", a.remark);
    let mut got = Vec::new();
    for _ in 0..50 {
        got = pulled_or_empty(&r.call(pull_cmd("tx", 0, 0, 0)).await);
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got.len(), 1, "the committed message is delivered");
    assert_eq!(got[0].body.as_ref(), b"half");
}

fn pulled_or_empty(a: &Command) -> Vec<StoredMessage> {
    if a.code == response::PULL_NOT_FOUND {
        return Vec::new();
    }
    pulled(a)
}

#[tokio::test]
async fn routes_are_written_in_the_json_the_caller_parses() {
    let s = Server::start(&[]);
    let mut r = Remoting::connect(s.remoting_port).await;
    create_topic(&mut r, "rj", "NORMAL").await;
    let mut old = request(request::GET_ROUTEINFO_BY_TOPIC, &[("topic", "rj")]);
    old.version = 317;
    let body = String::from_utf8(r.call(old).await.body.to_vec()).expect("utf-8");
    assert!(
        body.contains("{0:\""),
        "Go (317) gets bare numeric keys: {body}"
    );
    let new = request(request::GET_ROUTEINFO_BY_TOPIC, &[("topic", "rj")]);
    let body = String::from_utf8(r.call(new).await.body.to_vec()).expect("utf-8");
    assert!(
        body.contains("{\"0\":\""),
        "4.9.8 (409) gets quoted keys: {body}"
    );
    let missing = r
        .call(request(
            request::GET_ROUTEINFO_BY_TOPIC,
            &[("topic", "nope")],
        ))
        .await;
    assert_eq!(missing.code, response::TOPIC_NOT_EXIST);
}

#[tokio::test]
async fn shutdown_answers_held_pulls_and_exits_cleanly() {
    let mut s = Server::start(&[]);
    let mut r = Remoting::connect(s.remoting_port).await;
    create_topic(&mut r, "sd", "NORMAL").await;
    let port = s.remoting_port;
    let held = tokio::spawn(async move {
        let mut p = Remoting::connect(port).await;
        p.call(pull_cmd("sd", 0, 0, 25_000)).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::task::spawn_blocking(move || s.terminate())
        .await
        .expect("terminate");
    assert_eq!(status.code(), Some(0), "a clean shutdown exits 0");
    let a = held.await.expect("the held pull");
    assert_eq!(a.code, response::PULL_NOT_FOUND, "answered, not dropped");
}
