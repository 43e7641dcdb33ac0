//! A proxy forwards SendMessage as the client's own bytes, gathered in batches
//! (`ferromq.forward.v1`) when the group serves them. Broker groups here are stand-ins that
//! heartbeat to a real name server and record the raw requests they get (behind the real
//! forwarding service, or without it, as a broker that predates batches), so the tests can see
//! what crossed the proxy: fields the proxy does not know arrive byte-identical, a send passed
//! on by a draining group reaches the next group with the same bytes, the caller's identity and
//! signature headers go along, and handles in the answer get their group's prefix. Malformed
//! requests get, through the proxy, the status a broker gives them directly; concurrent sends
//! to a real broker travel in batches and each gets its own answer, and so do a consumer's
//! acks, each settling its own message. Batches travel on a long-lived stream: one that breaks
//! fails its batch, one left unanswered fails at its deadline and frees its place, and a broker
//! without the stream gets a call per batch of sends and each ack alone.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferromq::forward::ForwardApi;
use ferromq::roles::proxy::batch::IN_FLIGHT;
use ferromq::roles::proxy::raw::{self, RawCodec};
use ferromq_proto::cluster::{self, nameserver_client::NameserverClient};
use ferromq_proto::forward::{
    self,
    forward_server::{Forward, ForwardServer},
};
use ferromq_proto::v2::{self, Code};
use futures_util::StreamExt;
use parking_lot::Mutex;
use prost::Message;
use support::inproc::*;
use tonic::codegen::http;
use tonic::codegen::{BoxFuture, Context, Poll, Service};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

/// What a stand-in group got: each request's bytes and its headers.
#[derive(Default)]
struct Received {
    sends: Vec<(Bytes, tonic::metadata::MetadataMap)>,
    acks: Vec<(Bytes, tonic::metadata::MetadataMap)>,
}

/// How a stand-in group answers every send.
#[derive(Clone)]
enum Reply {
    Answer(v2::SendMessageResponse),
    Error(Status),
}

#[derive(Clone)]
struct StandIn {
    received: Arc<Mutex<Received>>,
    reply: Reply,
}

impl tonic::server::NamedService for StandIn {
    const NAME: &'static str = "apache.rocketmq.v2.MessagingService";
}

impl Service<http::Request<tonic::body::Body>> for StandIn {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawCodec);
            match req.uri().path() {
                raw::SEND_PATH => Ok(grpc.unary(me, req).await),
                raw::ACK_PATH => Ok(grpc.unary(Acks(me), req).await),
                other => panic!("only sends and acks reach a stand-in, not {other}"),
            }
        })
    }
}

/// A stand-in's acks: recorded, and every entry answered OK with its handle.
#[derive(Clone)]
struct Acks(StandIn);

impl tonic::server::UnaryService<Bytes> for Acks {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let me = self.0.clone();
        Box::pin(async move {
            let (md, _, bytes) = req.into_parts();
            let acks = v2::AckMessageRequest::decode(bytes.clone()).expect("an ack decodes");
            me.received.lock().acks.push((bytes, md));
            let ok = || v2::Status {
                code: Code::Ok as i32,
                message: "OK".into(),
            };
            let answer = v2::AckMessageResponse {
                status: Some(ok()),
                entries: acks
                    .entries
                    .into_iter()
                    .map(|e| v2::AckMessageResultEntry {
                        message_id: e.message_id,
                        receipt_handle: e.receipt_handle,
                        status: Some(ok()),
                    })
                    .collect(),
            };
            Ok(Response::new(answer.encode_to_vec().into()))
        })
    }
}

impl tonic::server::UnaryService<Bytes> for StandIn {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let (md, _, bytes) = req.into_parts();
            me.received.lock().sends.push((bytes, md));
            match me.reply {
                Reply::Answer(a) => Ok(Response::new(a.encode_to_vec().into())),
                Reply::Error(s) => Err(s),
            }
        })
    }
}

/// How a stand-in serves `ferromq.forward.v1`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Batches {
    /// As brokers of this version: batches on a stream, or one call each.
    Streamed,
    /// As brokers that predate the stream: one `SendMany` call per batch.
    CallsOnly,
    /// Every stream breaks at its first batch without answering it; calls are served.
    StreamsBreak,
    /// The first batches (over all streams), as many as a proxy keeps on their way, are never
    /// answered; later ones are answered at once with `ok_answer("")`.
    FirstBatchesHang,
    /// As brokers that predate batches: only SendMessage.
    None,
}

/// The forwarding service of a stand-in that serves it otherwise than this version does.
#[derive(Clone)]
struct OlderForward {
    inner: ForwardApi<StandIn>,
    batches: Batches,
    streams: Arc<AtomicUsize>,
    /// Batches seen on all streams.
    seen: Arc<AtomicUsize>,
}

type AnswerStream = ferromq::rpc::BoxStream<forward::SendManyResponse>;

#[tonic::async_trait]
impl Forward for OlderForward {
    async fn send_many(
        &self,
        req: Request<forward::SendManyRequest>,
    ) -> Result<Response<forward::SendManyResponse>, Status> {
        self.inner.send_many(req).await
    }

    type SendStreamStream = AnswerStream;

    async fn send_stream(
        &self,
        _req: Request<tonic::Streaming<forward::SendManyRequest>>,
    ) -> Result<Response<AnswerStream>, Status> {
        Err(Status::unimplemented("no SendStream here"))
    }

    type CallStreamStream = AnswerStream;

    async fn call_stream(
        &self,
        req: Request<tonic::Streaming<forward::SendManyRequest>>,
    ) -> Result<Response<AnswerStream>, Status> {
        self.streams.fetch_add(1, Ordering::SeqCst);
        match self.batches {
            Batches::StreamsBreak => {
                let mut inbound = req.into_inner();
                let broken = futures_util::stream::once(async move {
                    let _ = inbound.message().await;
                    Err(Status::unavailable("the stand-in broke the stream"))
                });
                Ok(Response::new(Box::pin(broken)))
            }
            Batches::FirstBatchesHang => {
                let seen = self.seen.clone();
                let answers = req.into_inner().filter_map(move |b| {
                    let seen = seen.fetch_add(1, Ordering::SeqCst) + 1;
                    let answer = match b {
                        Ok(b) if seen > IN_FLIGHT => Some(Ok(forward::SendManyResponse {
                            answers: b
                                .sends
                                .iter()
                                .map(|_| forward::ForwardedAnswer {
                                    response: ok_answer("").encode_to_vec().into(),
                                    grpc_code: 0,
                                    grpc_message: String::new(),
                                })
                                .collect(),
                            batch: b.batch,
                        })),
                        Ok(_) => None,
                        Err(st) => Some(Err(st)),
                    };
                    std::future::ready(answer)
                });
                Ok(Response::new(Box::pin(answers)))
            }
            _ => Err(Status::unimplemented("no CallStream here")),
        }
    }
}

/// Serves a stand-in for group `group` and keeps it registered with the name server holding
/// topic `t`; answers what it records. It takes batches, as brokers of this version do.
async fn stand_in(group: &str, ns: &str, reply: Reply) -> Arc<Mutex<Received>> {
    stand_in_with(group, ns, reply, Batches::Streamed).await.0
}

/// A stand-in as [`stand_in`] makes, serving batches as `batches` says; also answers how many
/// send streams were opened to it.
async fn stand_in_with(
    group: &str,
    ns: &str,
    reply: Reply,
    batches: Batches,
) -> (Arc<Mutex<Received>>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = listener.local_addr().expect("addr").to_string();
    let received = Arc::new(Mutex::new(Received::default()));
    let svc = StandIn {
        received: received.clone(),
        reply,
    };
    let streams = Arc::new(AtomicUsize::new(0));
    let (current, older) = match batches {
        Batches::Streamed => (Some(ferromq::forward::server(svc.clone(), 16 << 20)), None),
        Batches::CallsOnly | Batches::StreamsBreak | Batches::FirstBatchesHang => (
            None,
            Some(ForwardServer::new(OlderForward {
                inner: ForwardApi::new(svc.clone()),
                batches,
                streams: streams.clone(),
                seen: Arc::new(AtomicUsize::new(0)),
            })),
        ),
        Batches::None => (None, None),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_optional_service(current)
            .add_optional_service(older)
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut nsc = NameserverClient::connect(format!("http://{ns}"))
        .await
        .expect("name server");
    let info = cluster::BrokerInfo {
        group: group.into(),
        endpoint,
        state: cluster::GroupState::ReadWrite as i32,
        topics: vec![cluster::TopicRoute {
            name: "t".into(),
            queues: 4,
            message_type: v2::MessageType::Normal as i32,
            permission: 3,
        }],
        ..Default::default()
    };
    tokio::spawn(async move {
        loop {
            let mut b = info.clone();
            b.reported_at_ms = support::now_ms();
            let _ = nsc
                .heartbeat(cluster::HeartbeatRequest { broker: Some(b) })
                .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    (received, streams)
}

/// A name server, a stand-in group `g1` answering every send with `ok_answer("")` and serving
/// batches as `batches` says, and a proxy that routes to it.
struct BeforeStandIn {
    nameserver: Running,
    proxy: Running,
    port: u16,
    got: Arc<Mutex<Received>>,
    /// Call streams opened to the stand-in.
    streams: Arc<AtomicUsize>,
}

async fn proxy_before_stand_in(batches: Batches) -> BeforeStandIn {
    let (nameserver, ns) = nameserver().await;
    let (got, streams) = stand_in_with("g1", &ns, Reply::Answer(ok_answer("")), batches).await;
    let (proxy, port) = proxy(&ns).await;
    until_routed(port, 1).await;
    BeforeStandIn {
        nameserver,
        proxy,
        port,
        got,
        streams,
    }
}

impl BeforeStandIn {
    async fn stop(self) {
        self.proxy.stop().await;
        self.nameserver.stop().await;
    }
}

fn ok_answer(recall_handle: &str) -> v2::SendMessageResponse {
    v2::SendMessageResponse {
        status: Some(v2::Status {
            code: Code::Ok as i32,
            message: "OK".into(),
        }),
        entries: vec![v2::SendResultEntry {
            status: Some(v2::Status {
                code: Code::Ok as i32,
                message: "OK".into(),
            }),
            message_id: "M1".into(),
            recall_handle: recall_handle.into(),
            offset: 7,
            ..Default::default()
        }],
    }
}

/// A send of one message to `t` with user properties, and fields no version of the protocol
/// defines: one inside the message, one at the top of the request.
fn send_bytes(id: &str) -> Bytes {
    let mut m = support::message("t", id, b"a body the proxy never reads");
    m.user_properties.insert("color".into(), "blue".into());
    let mut msg = m.encode_to_vec();
    // Field 100, length-delimited, "future".
    msg.extend_from_slice(&[0xa2, 0x06, 6]);
    msg.extend_from_slice(b"future");
    let mut req = vec![0x0a];
    prost::encoding::encode_varint(msg.len() as u64, &mut req);
    req.extend_from_slice(&msg);
    // Field 55, varint 12345.
    req.extend_from_slice(&[0xb8, 0x03]);
    prost::encoding::encode_varint(12345, &mut req);
    let req = Bytes::from(req);
    let decoded = v2::SendMessageRequest::decode(req.clone()).expect("a valid request");
    assert_ne!(
        Bytes::from(decoded.encode_to_vec()),
        req,
        "a decode and re-encode would drop the unknown fields"
    );
    req
}

/// Sends raw bytes to `port` as a signed client would (identity and authorization headers).
async fn send_raw(port: u16, body: Bytes) -> Result<Bytes, Status> {
    call_raw(port, raw::SEND_PATH, body).await
}

/// Calls the method at `path` through the proxy at `port` as `send_raw` sends.
async fn call_raw(port: u16, path: &'static str, body: Bytes) -> Result<Bytes, Status> {
    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut c = tonic::client::Grpc::new(ch);
    let mut req = Request::new(body);
    let md = req.metadata_mut();
    md.insert("x-mq-client-id", MetadataValue::from_static("raw-client"));
    md.insert("x-mq-language", MetadataValue::from_static("JAVA"));
    md.insert(
        "x-mq-date-time",
        MetadataValue::from_static("20261202T230000Z"),
    );
    md.insert(
        "authorization",
        MetadataValue::from_static(
            "MQv2-HMAC-SHA1 Credential=ak, SignedHeaders=x-mq-date-time, Signature=00",
        ),
    );
    raw::call(&mut c, path, req).await.map(Response::into_inner)
}

/// Waits until the proxy routes sends of `t` to `groups` groups (the name server saw them and
/// the proxy refreshed).
async fn until_routed(port: u16, groups: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut admin = ferromq_proto::admin::admin_client::AdminClient::connect(format!(
        "http://127.0.0.1:{port}"
    ))
    .await
    .expect("admin connects");
    loop {
        let n = admin
            .list_cluster(ferromq_proto::admin::ListClusterRequest {})
            .await
            .map(|r| r.into_inner().groups.len())
            .unwrap_or(0);
        if n == groups {
            // The send path reads the same view after the proxy's next refresh.
            tokio::time::sleep(Duration::from_millis(400)).await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{groups} groups reported, saw {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_arrives_at_the_broker_byte_identical_with_its_headers() {
    arrives_byte_identical(Batches::Streamed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_batches_gets_each_send_alone_and_unchanged() {
    arrives_byte_identical(Batches::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_the_call_stream_gets_a_call_per_batch_unchanged() {
    arrives_byte_identical(Batches::CallsOnly).await;
}

async fn arrives_byte_identical(batches: Batches) {
    let setup = proxy_before_stand_in(batches).await;
    let (port, got) = (setup.port, setup.got.clone());

    let sent = send_bytes("ID-1");
    let answer = send_raw(port, sent.clone())
        .await
        .expect("the send is answered");
    assert_eq!(
        answer,
        Bytes::from(ok_answer("").encode_to_vec()),
        "an answer without handles comes back as the broker sent it"
    );
    let (bytes, md) = got.lock().sends.pop().expect("the group got the send");
    assert_eq!(bytes, sent, "byte-identical, unknown fields included");
    // Sent again: still answered (a stream that was refused stays refused, and the batch went
    // as a call of its own).
    send_raw(port, sent.clone()).await.expect("answered again");
    assert_eq!(got.lock().sends.len(), 1, "{batches:?}");
    for (k, v) in [
        ("x-mq-client-id", "raw-client"),
        ("x-mq-date-time", "20261202T230000Z"),
    ] {
        assert_eq!(md.get(k).and_then(|v| v.to_str().ok()), Some(v), "{k}");
    }
    assert!(
        md.get("authorization").is_some(),
        "the signature goes along"
    );

    // An ack goes the same way (on the call stream, or alone where the broker has none): to
    // the group its handle names, with the group's own handle and the client's headers, made
    // once, and answered with the handle as the client knows it.
    let ack = v2::AckMessageRequest {
        group: support::res("cg"),
        topic: support::res("t"),
        entries: vec![v2::AckMessageEntry {
            message_id: "ID-1".into(),
            receipt_handle: "fm:g1:H-1".into(),
            lite_topic: None,
        }],
    };
    for made in 1..=2 {
        let answer = call_raw(port, raw::ACK_PATH, ack.encode_to_vec().into())
            .await
            .expect("the ack is answered");
        let answer = v2::AckMessageResponse::decode(answer).expect("decodes");
        assert_eq!(
            answer.status.map(|s| s.code),
            Some(Code::Ok as i32),
            "{batches:?}"
        );
        assert_eq!(answer.entries[0].receipt_handle, "fm:g1:H-1");
        assert_eq!(
            got.lock().acks.len(),
            made,
            "{batches:?}: each ack made once"
        );
    }
    let (bytes, md) = got.lock().acks.pop().expect("the group got the ack");
    let arrived = v2::AckMessageRequest::decode(bytes).expect("decodes");
    assert_eq!(arrived.entries[0].receipt_handle, "H-1");
    assert_eq!(
        md.get("x-mq-client-id").and_then(|v| v.to_str().ok()),
        Some("raw-client")
    );
    assert!(
        md.get("authorization").is_some(),
        "the signature goes along"
    );
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_groups_refusal_passes_the_same_bytes_to_the_next_group() {
    let (nameserver, ns) = nameserver().await;
    let refusal = v2::SendMessageResponse {
        status: Some(v2::Status {
            code: Code::Forbidden as i32,
            message: format!("group a is {}", ferromq_engine::DRAINING),
        }),
        entries: vec![],
    };
    let a = stand_in("a", &ns, Reply::Answer(refusal)).await;
    let b = stand_in("b", &ns, Reply::Answer(ok_answer("R9"))).await;
    let (proxy, port) = proxy(&ns).await;
    until_routed(port, 2).await;

    // Sends rotate over the groups: within a few, one is tried at `a` first.
    let sent = send_bytes("ID-2");
    let mut sends = 0;
    while sends < 10 && (sends < 2 || a.lock().sends.is_empty()) {
        sends += 1;
        let answer = send_raw(port, sent.clone()).await.expect("answered");
        let answer = v2::SendMessageResponse::decode(answer).expect("decodes");
        assert_eq!(answer.status.map(|s| s.code), Some(Code::Ok as i32));
        assert_eq!(
            answer.entries[0].recall_handle, "fm:b:R9",
            "the handle names the group that stored the message"
        );
    }
    let at_a = a.lock().sends.len();
    let at_b = b.lock().sends.len();
    assert!(at_a >= 1, "some send was tried at the draining group first");
    assert_eq!(at_b, sends, "every send was stored by b");
    for (bytes, _) in a.lock().sends.iter().chain(b.lock().sends.iter()) {
        assert_eq!(bytes, &sent, "every attempt carries the client's bytes");
    }
    proxy.stop().await;
    nameserver.stop().await;
}

/// A request whose user property value is not UTF-8: the proxy does not read that field.
fn bad_property() -> Bytes {
    let mut m = support::message("t", "ID-3", b"x");
    m.user_properties.insert("k".into(), "\u{7f}".into());
    let mut msg = m.encode_to_vec();
    let at = msg
        .iter()
        .position(|b| *b == 0x7f)
        .expect("the value is in the encoding");
    msg[at] = 0xff;
    let mut req = vec![0x0a];
    prost::encoding::encode_varint(msg.len() as u64, &mut req);
    req.extend_from_slice(&msg);
    Bytes::from(req)
}

/// A request whose first topic name is not UTF-8: the proxy reads that field.
fn bad_topic() -> Bytes {
    Bytes::from_static(&[0x0a, 0x05, 0x0a, 0x03, 0x12, 0x01, 0xff])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sends_get_the_status_a_broker_gives_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (nameserver, ns) = nameserver().await;
    let g1 = broker("g1", &ns, &tmp.path().join("g1")).await;
    let (proxy, port) = proxy(&ns).await;
    until_routed(port, 1).await;
    let mut nsc = NameserverClient::connect(format!("http://{ns}"))
        .await
        .expect("name server");
    let endpoint = nsc
        .get_cluster(cluster::GetClusterRequest {})
        .await
        .expect("cluster")
        .into_inner()
        .brokers[0]
        .endpoint
        .clone();
    let broker_port: u16 = endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");

    for (case, bytes) in [("topic", bad_topic()), ("user property", bad_property())] {
        let direct = send_raw(broker_port, bytes.clone())
            .await
            .expect_err("the broker refuses it");
        let through = send_raw(port, bytes)
            .await
            .expect_err("the proxy refuses it");
        assert_eq!(direct.code(), tonic::Code::Internal, "{case}");
        assert_eq!(
            (through.code(), through.message()),
            (direct.code(), direct.message()),
            "{case}"
        );
    }
    proxy.stop().await;
    g1.stop().await;
    nameserver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_proxy_cannot_read_is_not_forwarded() {
    let (nameserver, ns) = nameserver().await;
    let got = stand_in(
        "g1",
        &ns,
        Reply::Error(Status::internal("the stand-in decodes nothing")),
    )
    .await;
    let (proxy, port) = proxy(&ns).await;
    until_routed(port, 1).await;

    let e = send_raw(port, bad_topic()).await.expect_err("refused");
    let want = v2::SendMessageRequest::decode(bad_topic())
        .expect_err("malformed")
        .to_string();
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::Internal, want.as_str())
    );
    assert!(got.lock().sends.is_empty(), "nothing was forwarded");

    // One the proxy forwards (it does not read user properties): the group's decoding error
    // becomes the request's own decoding status, not "the group did not answer".
    let e = send_raw(port, bad_property()).await.expect_err("refused");
    let want = v2::SendMessageRequest::decode(bad_property())
        .expect_err("malformed")
        .to_string();
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::Internal, want.as_str())
    );
    assert_eq!(got.lock().sends.len(), 1);
    proxy.stop().await;
    nameserver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_stream_that_breaks_fails_its_batch_and_the_next_opens_another() {
    let setup = proxy_before_stand_in(Batches::StreamsBreak).await;
    let port = setup.port;

    // Every stream breaks at its first batch: each send fails with the stream's status, none
    // reaches the broker's send path, and each is carried by a stream of its own.
    for i in 0..3 {
        let answered = send_raw(port, send_bytes(&format!("ID-B{i}"))).await;
        let failed = match &answered {
            Err(st) => st.message().contains("broke the stream"),
            Ok(raw) => v2::SendMessageResponse::decode(raw.clone())
                .ok()
                .and_then(|r| r.status)
                .is_some_and(|s| s.code != Code::Ok as i32),
        };
        assert!(failed, "send {i}: {answered:?}");
    }
    assert_eq!(setup.got.lock().sends.len(), 0, "no send was served");
    assert_eq!(
        setup.streams.load(Ordering::SeqCst),
        3,
        "one stream per batch"
    );
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_unanswered_by_its_deadline_fails_and_frees_its_place() {
    let setup = proxy_before_stand_in(Batches::FirstBatchesHang).await;
    let port = setup.port;
    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");

    // The first batches are never answered: each send fails at its deadline. Had their places
    // stayed taken, the next send would wait for ever.
    for i in 0..IN_FLIGHT {
        let mut c = tonic::client::Grpc::new(ch.clone());
        let mut req = Request::new(send_bytes(&format!("ID-H{i}")));
        req.set_timeout(Duration::from_millis(300));
        let answered = raw::send(&mut c, req).await;
        // The proxy's own server may end the call first (tonic answers CANCELLED, "Timeout
        // expired"); either way the send failed at its deadline.
        let code = answered.as_ref().map_err(Status::code).err();
        assert!(
            matches!(
                code,
                Some(tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)
            ),
            "send {i}: {answered:?}"
        );
    }
    let mut c = tonic::client::Grpc::new(ch.clone());
    let answered = tokio::time::timeout(
        Duration::from_secs(10),
        raw::send(&mut c, Request::new(send_bytes("ID-H-next"))),
    )
    .await
    .expect("a place was free again")
    .expect("answered")
    .into_inner();
    assert_eq!(answered, Bytes::from(ok_answer("").encode_to_vec()));
    assert!(
        setup.streams.load(Ordering::SeqCst) >= 1,
        "the sends went on streams"
    );
    setup.stop().await;
}

/// A send of one message with id `id` to `topic`.
fn send_of(topic: &str, id: &str) -> Bytes {
    v2::SendMessageRequest {
        messages: vec![support::message(topic, id, b"batched")],
    }
    .encode_to_vec()
    .into()
}

/// A real broker group `g1` behind a proxy, with topic `t` of 4 queues.
struct Proxied {
    nameserver: Running,
    g1: Running,
    proxy: Running,
    port: u16,
    http: u16,
    admin: ferromq_proto::admin::admin_client::AdminClient<tonic::transport::Channel>,
    _tmp: tempfile::TempDir,
}

async fn proxied_broker() -> Proxied {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (nameserver, ns) = nameserver().await;
    let g1 = broker("g1", &ns, &tmp.path().join("g1")).await;
    let (proxy, port, _, http) = proxy_with_ports(&ns, false).await;
    until_routed(port, 1).await;
    let mut admin = ferromq_proto::admin::admin_client::AdminClient::connect(format!(
        "http://127.0.0.1:{port}"
    ))
    .await
    .expect("admin connects");
    admin
        .create_topic(ferromq_proto::admin::CreateTopicRequest {
            topic: Some(ferromq_proto::admin::Topic {
                name: "t".into(),
                queues: 4,
                ..Default::default()
            }),
        })
        .await
        .expect("topic created");
    until_routed(port, 1).await;
    Proxied {
        nameserver,
        g1,
        proxy,
        port,
        http,
        admin,
        _tmp: tmp,
    }
}

impl Proxied {
    async fn stop(self) {
        self.proxy.stop().await;
        self.g1.stop().await;
        self.nameserver.stop().await;
    }

    /// The proxy's count of calls it forwarded in batches, and of those batches.
    async fn forwarded(&self) -> (u64, u64) {
        let metrics = reqwest_metrics(self.http).await;
        let value = |name: &str| -> u64 {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {metrics}"))
        };
        (
            value("ferromq_proxy_forwarded_sends_total"),
            value("ferromq_proxy_forwarded_batches_total"),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_travel_in_batches_and_each_gets_its_own_answer() {
    let mut p = proxied_broker().await;
    let port = p.port;

    // Every third send names a topic no name allows: refused by the broker, alone, while the
    // sends around it in the same batch are stored.
    const SENDS: usize = 300;
    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SENDS {
        let ch = ch.clone();
        tasks.spawn(async move {
            let bad = i % 3 == 0;
            let topic = if bad { "no such topic!" } else { "t" };
            let id = format!("ID-{i}");
            let mut c = tonic::client::Grpc::new(ch);
            let mut req = Request::new(send_of(topic, &id));
            req.metadata_mut()
                .insert("x-mq-client-id", MetadataValue::from_static("batch-client"));
            let answer = raw::send(&mut c, req).await.expect("answered").into_inner();
            (
                bad,
                id,
                v2::SendMessageResponse::decode(answer).expect("decodes"),
            )
        });
    }
    let (mut stored, mut refused) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (bad, id, answer) = done.expect("task");
        let code = answer.status.as_ref().map(|s| s.code);
        if bad {
            assert_ne!(code, Some(Code::Ok as i32), "{id}: refused");
            refused += 1;
        } else {
            assert_eq!(code, Some(Code::Ok as i32), "{id}: {answer:?}");
            assert_eq!(answer.entries.len(), 1);
            assert_eq!(
                answer.entries[0].message_id, id,
                "each send gets its own answer"
            );
            stored += 1;
        }
    }
    assert_eq!((stored, refused), (200, 100));

    // The proxy counted what it forwarded in batches: every send, in fewer calls.
    let (sends, batches) = p.forwarded().await;
    eprintln!("{sends} sends forwarded in {batches} batches");
    assert!(sends >= SENDS as u64, "{sends} sends forwarded");
    assert!(
        batches < sends,
        "{batches} batches for {sends} sends: none held two"
    );

    // The broker holds exactly the stored ones.
    let topic = p
        .admin
        .describe_topic(ferromq_proto::admin::DescribeTopicRequest { name: "t".into() })
        .await
        .expect("described")
        .into_inner();
    assert_eq!(topic.total_messages, 200);
    p.stop().await;
}

/// The official clients ack each message with a call of its own. Through the proxy, a
/// consumer's concurrent acks travel in batches on the call stream, each gets its own answer,
/// and each settles its message: after the invisible time only the messages whose ack carried
/// a forged handle (refused alone, beside acks that were taken) are delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acks_travel_in_batches_and_each_settles_its_message() {
    let p = proxied_broker().await;
    let mut c = support::client(p.port, "acker").await;
    const N: usize = 60;
    for i in 0..N {
        support::send_ok(&mut c, support::message("t", &format!("ID-{i}"), b"x")).await;
    }
    let invisible_ms = 1_000;
    let req = support::receive_request("cg", "t", 32, invisible_ms, 500, "*");
    let got = support::receive_n(&mut c, req.clone(), N).await;
    assert_eq!(got.len(), N, "every message delivered once");

    let before = p.forwarded().await;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, m) in got.into_iter().enumerate() {
        let mut c = c.clone();
        tasks.spawn(async move {
            let mut m = m;
            let forged = i % 10 == 0;
            if forged {
                let sp = m.system_properties.as_mut().expect("system properties");
                sp.receipt_handle = Some(format!("fm:g1:forged-{i}"));
            }
            let code = support::ack(&mut c, "cg", "t", &m).await;
            (forged, support::message_id(&m), code)
        });
    }
    let mut forged_ids = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (forged, id, code) = done.expect("task");
        if forged {
            assert_eq!(code, Code::InvalidReceiptHandle, "{id}: a forged handle");
            forged_ids.push(id);
        } else {
            assert_eq!(code, Code::Ok, "{id}");
        }
    }
    let after = p.forwarded().await;
    let (calls, batches) = (after.0 - before.0, after.1 - before.1);
    eprintln!("{calls} acks forwarded in {batches} batches");
    assert_eq!(calls, N as u64, "every ack forwarded in a batch");
    assert!(batches < calls, "{batches} batches for {calls} acks");

    // Past the invisible time, only the messages of the refused acks come back.
    tokio::time::sleep(Duration::from_millis(invisible_ms + 500)).await;
    let again = support::receive_n(&mut c, req, forged_ids.len()).await;
    let mut again: Vec<String> = again.iter().map(support::message_id).collect();
    again.sort();
    forged_ids.sort();
    assert_eq!(again, forged_ids, "acked messages stay settled");
    let more = support::receive(&mut c, "cg", "t", 32, invisible_ms, 500).await;
    assert!(more.messages.is_empty(), "nothing else is delivered again");
    p.stop().await;
}

/// The proxy's `/metrics` page.
async fn reqwest_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics port");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("answer");
    out
}

/// An ack the broker refuses as a whole (a group name it does not take) is answered with that
/// refusal, not with OK: as the broker answers it when the proxy forwards it as bytes (every
/// handle names one group), and for each of the group's entries when it goes the typed way (a
/// foreign handle beside it). An ack with no entry is refused as a broker refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_refused_as_a_whole_are_not_answered_ok() {
    let p = proxied_broker().await;
    let mut c = support::client(p.port, "acker").await;
    support::send_ok(&mut c, support::message("t", "ID-1", b"x")).await;
    let req = support::receive_request("cg", "t", 32, 30_000, 500, "*");
    let got = support::receive_n(&mut c, req, 1).await;
    let m = got.first().expect("the message is delivered");
    let entry = |h: String| v2::AckMessageEntry {
        message_id: support::message_id(m),
        receipt_handle: h,
        lite_topic: None,
    };
    let ack = |group: &str, entries: Vec<v2::AckMessageEntry>| v2::AckMessageRequest {
        group: support::res(group),
        topic: support::res("t"),
        entries,
    };

    let bad = c
        .ack_message(ack("bad group!", vec![entry(support::handle(m))]))
        .await
        .expect("answered")
        .into_inner();
    let refused = support::code_of(&bad.status);
    assert_eq!(refused, Code::IllegalConsumerGroup, "{bad:?}");
    assert!(bad.entries.is_empty(), "the broker's own answer: {bad:?}");

    let mixed = c
        .ack_message(ack(
            "bad group!",
            vec![entry(support::handle(m)), entry("not-from-a-proxy".into())],
        ))
        .await
        .expect("answered")
        .into_inner();
    let codes: Vec<Code> = mixed
        .entries
        .iter()
        .map(|e| support::code_of(&e.status))
        .collect();
    assert!(codes.contains(&refused), "{mixed:?}");
    assert!(codes.contains(&Code::InvalidReceiptHandle), "{mixed:?}");
    assert_eq!(support::code_of(&mixed.status), Code::MultipleResults);

    let empty = c
        .ack_message(ack("cg", vec![]))
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(support::code_of(&empty.status), Code::BadRequest);

    // The message is still there to ack, and the right ack settles it.
    assert_eq!(support::ack(&mut c, "cg", "t", m).await, Code::Ok);
    p.stop().await;
}
