//! The storage node's side of `ferromq.forward.v1`: many clients' calls that a proxy hands over
//! as one batch, in a call of its own (`SendMany`) or as one message of a long-lived stream
//! ([`serve_stream`]). On `CallStream`, what proxies of this version open, an entry is a send
//! or one of the per-message settling calls ([`FORWARDED_CALLS`]: a consumer's ack, a producer's
//! transaction end); on `SendMany` and `SendStream` (older proxies) every entry is a send.
//!
//! Each entry is served by the node's own RocketMQ service stack, in process, exactly as if it
//! had arrived as its own HTTP/2 request on the same connection: the same authentication hook
//! (with the entry's own signed headers and the connection's peer address), the same leader
//! gate on replicated members, the same decoding limits, span and metrics, and the same answer
//! bytes. A batch only saves the per-request HTTP/2 frames, system calls and wake-ups on both
//! sides of the hop; it grants nothing, which is why the service itself needs no check of its
//! own (a client calling it directly gets what its sends alone would get).
//!
//! A batch's entries run concurrently on the call's (or the stream's) task: a replicated leader
//! appends them one after the other and waits for one confirm offset for all of them, like a
//! batch of one client.

use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use ferromq_proto::forward::{self, forward_server::Forward, forward_server::ForwardServer};
use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::{self, HeaderName, HeaderValue};
use tonic::codegen::Service;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::hook::Body;
use crate::roles::proxy::raw::{
    ACK_PATH, CHANGE_INVISIBLE_PATH, DEAD_LETTER_PATH, END_TRANSACTION_PATH, RECALL_PATH, SEND_PATH,
};
use crate::rpc::BoxStream;

/// The most message bytes a proxy puts in one batch (a single larger send travels alone).
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// The most sends a proxy puts in one batch.
pub const MAX_BATCH_SENDS: usize = 128;

/// Room for the entries' headers and framing on top of the message bytes.
pub const BATCH_OVERHEAD: usize = 1 << 20;

/// The gRPC service to add beside `messaging`: a proxy's batch holds up to [`MAX_BATCH_BYTES`]
/// of sends plus one more of at most that size.
pub fn server<S>(messaging: S, max_message: usize) -> ForwardServer<ForwardApi<S>>
where
    ForwardApi<S>: Forward,
{
    let limit = max_message
        .max(2 * MAX_BATCH_BYTES)
        .saturating_add(BATCH_OVERHEAD);
    ForwardServer::new(ForwardApi::new(messaging))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit)
}

/// The forwarding service around `messaging`, the node's RocketMQ service exactly as it is
/// served (auth hook and leader gate included).
#[derive(Clone)]
pub struct ForwardApi<S> {
    messaging: S,
}

impl<S> ForwardApi<S> {
    pub fn new(messaging: S) -> ForwardApi<S> {
        ForwardApi { messaging }
    }
}

#[tonic::async_trait]
impl<S> Forward for ForwardApi<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    async fn send_many(
        &self,
        req: Request<forward::SendManyRequest>,
    ) -> Result<Response<forward::SendManyResponse>, Status> {
        let (_, ext, batch) = req.into_parts();
        let peer = ext.get::<TcpConnectInfo>().cloned();
        let answers =
            serve_batch(self.messaging.clone(), batch.sends, peer, Paths::SendsOnly).await;
        Ok(Response::new(forward::SendManyResponse {
            answers,
            batch: 0,
        }))
    }

    type SendStreamStream = BoxStream<forward::SendManyResponse>;

    async fn send_stream(
        &self,
        req: Request<Streaming<forward::SendManyRequest>>,
    ) -> Result<Response<Self::SendStreamStream>, Status> {
        Ok(self.stream(req, Paths::SendsOnly))
    }

    type CallStreamStream = BoxStream<forward::SendManyResponse>;

    async fn call_stream(
        &self,
        req: Request<Streaming<forward::SendManyRequest>>,
    ) -> Result<Response<Self::CallStreamStream>, Status> {
        Ok(self.stream(req, Paths::Named))
    }
}

impl<S> ForwardApi<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    /// Serves a stream of batches on a task of its own, answering through a bounded channel.
    fn stream(
        &self,
        req: Request<Streaming<forward::SendManyRequest>>,
        paths: Paths,
    ) -> Response<BoxStream<forward::SendManyResponse>> {
        let (_, ext, inbound) = req.into_parts();
        let peer = ext.get::<TcpConnectInfo>().cloned();
        let (tx, rx) = mpsc::channel(STREAM_ANSWERS);
        let span = tracing::debug_span!("forward_stream", ?paths);
        tokio::spawn(
            serve_stream(self.messaging.clone(), inbound, peer, paths, tx).instrument(span),
        );
        Response::new(Box::pin(ReceiverStream::new(rx)))
    }
}

/// Which methods a batch's entries may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paths {
    /// Every entry is a send, whatever its `path` says (SendMany, SendStream: what proxies that
    /// predate `path` send).
    SendsOnly,
    /// An entry calls the method its `path` names, when [`FORWARDED_CALLS`] has it (CallStream).
    Named,
}

/// The methods an entry on CallStream may call: the per-message calls a proxy routes to one
/// group by a handle or a topic (each unary, each answered with one message).
pub const FORWARDED_CALLS: [&str; 6] = [
    SEND_PATH,
    ACK_PATH,
    CHANGE_INVISIBLE_PATH,
    DEAD_LETTER_PATH,
    END_TRANSACTION_PATH,
    RECALL_PATH,
];

/// The path an entry calls under `paths`, or the status it fails with.
fn path_of(entry_path: &str, paths: Paths) -> Result<&'static str, Status> {
    if paths == Paths::SendsOnly || entry_path.is_empty() {
        return Ok(SEND_PATH);
    }
    FORWARDED_CALLS
        .iter()
        .find(|p| **p == entry_path)
        .copied()
        .ok_or_else(|| {
            Status::unimplemented(format!(
                "{entry_path:?} cannot be forwarded in a batch (only a send or a settling call can)"
            ))
        })
}

/// Answers a proxy's stream can hold before the broker stops reading its next batches.
const STREAM_ANSWERS: usize = 16;

/// Serves the batches of one SendStream as they arrive, each as soon as it comes (they run
/// concurrently on this task, as a unary batch's entries do), and sends every answer back
/// with its batch number. Ends when the proxy closes its side and every batch is answered, or
/// when the stream breaks (what was running is then dropped, as a cancelled call's would be).
async fn serve_stream<S>(
    messaging: S,
    mut inbound: Streaming<forward::SendManyRequest>,
    peer: Option<TcpConnectInfo>,
    paths: Paths,
    tx: mpsc::Sender<Result<forward::SendManyResponse, Status>>,
) where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut running = FuturesUnordered::new();
    let mut open = true;
    while open || !running.is_empty() {
        tokio::select! {
            next = inbound.message(), if open => match next {
                Ok(Some(b)) => {
                    let (svc, peer) = (messaging.clone(), peer.clone());
                    running.push(async move {
                        let answers = serve_batch(svc, b.sends, peer, paths).await;
                        forward::SendManyResponse { answers, batch: b.batch }
                    });
                }
                Ok(None) => open = false,
                Err(st) => {
                    tracing::debug!(error = %st, "a proxy's send stream broke");
                    return;
                }
            },
            Some(done) = running.next(), if !running.is_empty() => {
                if tx.send(Ok(done)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Serves one batch's entries concurrently and answers each in its position.
async fn serve_batch<S>(
    messaging: S,
    sends: Vec<forward::ForwardedSend>,
    peer: Option<TcpConnectInfo>,
    paths: Paths,
) -> Vec<forward::ForwardedAnswer>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + Clone,
{
    let span = tracing::debug_span!("forwarded", sends = sends.len());
    join_all(sends.into_iter().map(|s| {
        let svc = messaging.clone();
        let peer = peer.clone();
        async move {
            match serve_one(svc, s, peer, paths).await {
                Ok(response) => forward::ForwardedAnswer {
                    response,
                    grpc_code: 0,
                    grpc_message: String::new(),
                },
                Err(st) => forward::ForwardedAnswer {
                    response: Bytes::new(),
                    grpc_code: st.code() as i32,
                    grpc_message: st.message().to_string(),
                },
            }
        }
    }))
    .instrument(span)
    .await
}

/// Serves one entry through `svc` as an HTTP/2 request of its own, and returns the encoded
/// response of its method, or the gRPC status the call ended with.
async fn serve_one<S>(
    mut svc: S,
    send: forward::ForwardedSend,
    peer: Option<TcpConnectInfo>,
    paths: Paths,
) -> Result<Bytes, Status>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    let path = path_of(&send.path, paths)?;
    let len = u32::try_from(send.request.len())
        .map_err(|_| Status::resource_exhausted("a forwarded call is larger than 4 GiB"))?;
    // The gRPC prefix and the request as two chunks of one body: the request is not copied
    // here (the service's decoder gathers the chunks into its own buffer anyway).
    let mut prefix = BytesMut::with_capacity(5);
    prefix.put_u8(0);
    prefix.put_u32(len);
    let chunks = [prefix.freeze(), send.request].map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let mut req = http::Request::new(Body::new(body));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static(path);
    *req.version_mut() = http::Version::HTTP_2;
    let headers = req.headers_mut();
    for h in send.headers {
        // A header that is not valid HTTP is left out: without it the entry can only get
        // less (no credentials: refused), never more.
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_str(&h.value),
        ) {
            headers.append(k, v);
        }
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    if let Some(p) = peer {
        req.extensions_mut().insert(p);
    }
    let Ok(()) = std::future::poll_fn(|cx| svc.poll_ready(cx)).await;
    let Ok(resp) = svc.call(req).await;
    let (parts, body) = resp.into_parts();
    failed(&parts.headers)?;
    let collected = body.collect().await?;
    if let Some(t) = collected.trailers() {
        failed(t)?;
    }
    unframe(collected.to_bytes())
}

/// The call's status when its headers or trailers say it failed.
fn failed(headers: &http::HeaderMap) -> Result<(), Status> {
    match Status::from_header_map(headers) {
        Some(st) if st.code() != tonic::Code::Ok => Err(st),
        _ => Ok(()),
    }
}

/// The message of a one-message gRPC body (an uncompressed length-prefixed frame).
fn unframe(data: Bytes) -> Result<Bytes, Status> {
    let bad = || Status::internal("the call's answer was not one uncompressed gRPC message");
    if data.len() < 5 || data[0] != 0 {
        return Err(bad());
    }
    let n = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    if data.len() != 5 + n {
        return Err(bad());
    }
    Ok(data.slice(5..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_unframed_and_anything_else_is_refused() {
        let mut ok = vec![0u8, 0, 0, 0, 3];
        ok.extend_from_slice(b"abc");
        assert_eq!(unframe(Bytes::from(ok)).expect("one frame"), &b"abc"[..]);
        for bad in [
            vec![],
            vec![1u8, 0, 0, 0, 0],
            vec![0u8, 0, 0, 0, 4, 1],
            vec![0u8, 0, 0, 0, 1, 1, 2],
        ] {
            assert!(unframe(Bytes::from(bad)).is_err());
        }
    }

    #[test]
    fn an_entry_calls_only_a_send_or_a_settling_call() {
        let ack = ACK_PATH;
        assert_eq!(path_of("", Paths::Named).ok(), Some(SEND_PATH));
        assert_eq!(path_of(ack, Paths::Named).ok(), Some(ack));
        // Where entries are sends only, a path changes nothing.
        assert_eq!(path_of(ack, Paths::SendsOnly).ok(), Some(SEND_PATH));
        for refused in [
            "/apache.rocketmq.v2.MessagingService/ReceiveMessage",
            "/apache.rocketmq.v2.MessagingService/Telemetry",
            "/ferromq.admin.v1.Admin/DeleteTopic",
            "AckMessage",
        ] {
            let st = path_of(refused, Paths::Named).expect_err(refused);
            assert_eq!(st.code(), tonic::Code::Unimplemented);
        }
    }

    #[test]
    fn a_failed_status_in_headers_is_the_answer() {
        let mut h = http::HeaderMap::new();
        assert!(failed(&h).is_ok());
        h.insert("grpc-status", HeaderValue::from_static("14"));
        h.insert("grpc-message", HeaderValue::from_static("not%20leading"));
        let st = failed(&h).expect_err("unavailable");
        assert_eq!(st.code(), tonic::Code::Unavailable);
        assert_eq!(st.message(), "not leading");
        h.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(failed(&h).is_ok());
    }
}
