//! End to end: every malformed or refused request gets its RocketMQ status code and changes
//! nothing on the server.

mod support;

use ferromq_proto::v2::{self, Code};
use support::*;

fn total_messages(s: &Server, topic: &str) -> i64 {
    s.admin_json(&["topic", "describe", topic])["total_messages"]
        .as_i64()
        .expect("total_messages")
}

#[tokio::test]
async fn unknown_topics_are_not_found_and_not_created() {
    let s = Server::start(&[]);
    let mut c = s.client().await;
    let r = c
        .query_route(v2::QueryRouteRequest {
            topic: res("nope"),
            endpoints: None,
        })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(code_of(&r.status), Code::TopicNotFound);
    assert!(r.message_queues.is_empty());
    let (code, r) = send(&mut c, message("nope", "01A", b"x")).await;
    assert_eq!(code, Code::TopicNotFound);
    assert_eq!(
        r.entries.len(),
        1,
        "one entry per message even when refused"
    );
    assert_eq!(s.admin_json(&["topic", "list"]), serde_json::json!([]));
}

#[tokio::test]
async fn auto_create_topics_flag_creates_normal_topics_on_route() {
    let s = Server::start(&["--auto-create-topics"]);
    let mut c = s.client().await;
    let endpoints = v2::Endpoints {
        scheme: v2::AddressScheme::Ipv4 as i32,
        addresses: vec![v2::Address {
            host: "127.0.0.1".into(),
            port: s.grpc_port as i32,
        }],
    };
    let r = c
        .query_route(v2::QueryRouteRequest {
            topic: res("fresh"),
            endpoints: Some(endpoints),
        })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(code_of(&r.status), Code::Ok);
    assert_eq!(r.message_queues.len(), 8);
    let q = &r.message_queues[0];
    let broker = q.broker.as_ref().expect("broker");
    assert_eq!(broker.id, 0, "clients only use broker id 0");
    let ep = broker.endpoints.as_ref().expect("endpoints");
    assert_eq!(ep.addresses[0].port, s.grpc_port as i32);
    assert_eq!(q.permission, v2::Permission::ReadWrite as i32);
    assert_eq!(q.accept_message_types, vec![v2::MessageType::Normal as i32]);
    send_ok(&mut c, message("fresh", "01A", b"x")).await;
}

#[tokio::test]
async fn refused_messages_get_their_codes_and_store_nothing() {
    let s = Server::start(&["--max-body-size", "1KiB"]);
    s.create_topic("plain", "normal", 2);
    s.create_topic("ordered", "fifo", 2);
    let mut c = s.client().await;

    let cases: Vec<(&str, v2::Message, Code)> = vec![
        (
            "body over the limit",
            message("plain", "01A", &[b'x'; 1025]),
            Code::MessageBodyTooLarge,
        ),
        (
            "FIFO message to a NORMAL topic",
            fifo_message("plain", "01B", "g", b"x"),
            Code::MessagePropertyConflictWithType,
        ),
        (
            "NORMAL message to a FIFO topic",
            message("ordered", "01C", b"x"),
            Code::MessagePropertyConflictWithType,
        ),
        (
            "empty message id",
            message("plain", "", b"x"),
            Code::IllegalMessageId,
        ),
        (
            "invalid topic name",
            message("bad topic!", "01D", b"x"),
            Code::IllegalTopic,
        ),
        (
            "publishing to a DLQ topic",
            message("%DLQ%g", "01E", b"x"),
            Code::IllegalTopic,
        ),
        (
            "empty body",
            message("plain", "01F", b""),
            Code::MessageBodyEmpty,
        ),
        (
            "tag with a bar",
            {
                let mut m = message("plain", "01G", b"x");
                m.system_properties.as_mut().unwrap().tag = Some("a|b".into());
                m
            },
            Code::IllegalMessageTag,
        ),
        (
            "reserved property key",
            {
                let mut m = message("plain", "01H", b"x");
                m.user_properties.insert("__FM_GROUP".into(), "x".into());
                m
            },
            Code::IllegalMessagePropertyKey,
        ),
        (
            "no system properties",
            {
                let mut m = message("plain", "01I", b"x");
                m.system_properties = None;
                m
            },
            Code::BadRequest,
        ),
    ];
    for (what, m, want) in cases {
        let (code, r) = send(&mut c, m).await;
        assert_eq!(code, want, "{what}: {r:?}");
        assert_eq!(code_of(&r.entries[0].status), want, "{what}: entry status");
    }
    // A mixed batch: the good message is stored, the bad one refused, entries in order.
    let r = c
        .send_message(v2::SendMessageRequest {
            messages: vec![message("plain", "01J", b"ok"), message("plain", "", b"bad")],
        })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(code_of(&r.status), Code::MultipleResults);
    assert_eq!(code_of(&r.entries[0].status), Code::Ok);
    assert_eq!(code_of(&r.entries[1].status), Code::IllegalMessageId);
    // A send is answered once its message is readable, so the count is final here.
    assert_eq!(
        total_messages(&s, "plain"),
        1,
        "only the valid message was stored"
    );
    assert_eq!(total_messages(&s, "ordered"), 0);

    let r = c
        .send_message(v2::SendMessageRequest { messages: vec![] })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(code_of(&r.status), Code::BadRequest);
}

#[tokio::test]
async fn requests_without_a_client_id_are_refused() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 1);
    let mut anon = connect(s.grpc_port, None).await;
    let (code, _) = send(&mut anon, message("t", "01A", b"x")).await;
    assert_eq!(code, Code::ClientIdRequired);
    // Telemetry cannot tie a stream to nobody: a gRPC error, at once.
    let stream = tokio_stream::iter(vec![v2::TelemetryCommand::default()]);
    assert!(anon.telemetry(stream).await.is_err());
}

#[tokio::test]
async fn receive_and_settle_validation() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 1);
    let mut c = s.client().await;

    let mut req = receive_request("g", "t", 8, 10_000, 1_000, "*");
    // A malformed SQL92 expression (SQL filters themselves are supported: tests/sql_filter.rs).
    req.filter_expression = Some(v2::FilterExpression {
        r#type: v2::FilterType::Sql as i32,
        expression: "a >>> 1".into(),
    });
    let r = receive_with(&mut c, req).await;
    assert_eq!(r.code(), Code::IllegalFilterExpression);
    assert!(
        r.saw_timestamp,
        "the stream always ends with the server clock"
    );

    let r = receive_with(&mut c, receive_request("g", "t", 8, 100, 1_000, "*")).await;
    assert_eq!(r.code(), Code::IllegalInvisibleTime);
    let r = receive_with(&mut c, receive_request("", "t", 8, 10_000, 1_000, "*")).await;
    assert_eq!(r.code(), Code::IllegalConsumerGroup);
    let r = receive_with(
        &mut c,
        receive_request("g", "missing", 8, 10_000, 1_000, "*"),
    )
    .await;
    assert_eq!(r.code(), Code::TopicNotFound);
    let r = receive_with(&mut c, receive_request("g", "t", 0, 10_000, 1_000, "*")).await;
    assert_eq!(r.code(), Code::BadRequest);

    let fake = v2::Message {
        system_properties: Some(v2::SystemProperties {
            receipt_handle: Some("F1.1.0.0.1".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        ack(&mut c, "g", "t", &fake).await,
        Code::InvalidReceiptHandle
    );
    let garbage = v2::Message {
        system_properties: Some(v2::SystemProperties {
            receipt_handle: Some("garbage".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        ack(&mut c, "g", "t", &garbage).await,
        Code::InvalidReceiptHandle
    );
    let r = c
        .change_invisible_duration(v2::ChangeInvisibleDurationRequest {
            group: res("g"),
            topic: res("t"),
            receipt_handle: "garbage".into(),
            invisible_duration: Some(dur(1000)),
            message_id: "x".into(),
            lite_topic: None,
            suspend: None,
        })
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(code_of(&r.status), Code::InvalidReceiptHandle);
}

#[tokio::test]
async fn malformed_transaction_and_recall_requests_get_precise_errors() {
    let s = Server::start(&[]);
    s.create_topic("tx", "transaction", 1);
    let mut c = s.client().await;
    let end = |topic: &str, id: &str, resolution: i32| v2::EndTransactionRequest {
        topic: res(topic),
        message_id: "01A".into(),
        transaction_id: id.into(),
        resolution,
        source: v2::TransactionSource::Client as i32,
        trace_context: String::new(),
    };
    let cases = [
        (v2::EndTransactionRequest::default(), Code::IllegalTopic),
        (end("tx", "", 1), Code::InvalidTransactionId),
        (end("tx", "not-an-id", 1), Code::InvalidTransactionId),
        (end("tx", "x1:0:0", 1), Code::InvalidTransactionId),
        (end("tx", "x1:0:0", 7), Code::BadRequest),
    ];
    for (req, want) in cases {
        let r = c
            .end_transaction(req.clone())
            .await
            .expect("grpc ok")
            .into_inner();
        assert_eq!(code_of(&r.status), want, "{req:?}");
    }
    let recall = |handle: &str| v2::RecallMessageRequest {
        topic: res("tx"),
        recall_handle: handle.into(),
    };
    for (req, want) in [
        (v2::RecallMessageRequest::default(), Code::IllegalTopic),
        (recall(""), Code::BadRequest),
        (recall("t1:5:5"), Code::MessageNotFound),
    ] {
        let r = c
            .recall_message(req.clone())
            .await
            .expect("grpc ok")
            .into_inner();
        assert_eq!(code_of(&r.status), want, "{req:?}");
    }
    // Lite topics are not implemented: said at once.
    let r = c
        .sync_lite_subscription(v2::SyncLiteSubscriptionRequest::default())
        .await
        .expect("grpc ok")
        .into_inner();
    assert_eq!(code_of(&r.status), Code::NotImplemented);
}
