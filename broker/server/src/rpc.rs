//! One wrapper around every RPC of every role (the storage node's service and the proxy's), so
//! each call gets the same tracing span (`rpc` at DEBUG, with the method, client id, topic and
//! group) and the same metrics (`ferromq_rpc_duration_seconds`, `ferromq_rpc_errors_total`),
//! whichever role answers it. Streaming answers are timed until the stream ends.
//!
//! With auth on, the call is also authorized here, before its handler runs, from the
//! [`crate::auth::Caller`] the service wrapper left in the request and the names the request
//! carries: a refused call is answered with the refusal's status and changes nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use ferromq_proto::v2::{self, Code};
use tokio_stream::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::{field::Empty, Instrument, Span};

use crate::auth::{Caller, Targeted};
use crate::metrics::Metrics;

/// An RPC answer that carries a RocketMQ status.
pub trait Answer {
    /// The status code of the answer (OK when it carries none).
    fn code(&self) -> i32;
    /// The answer to a refused call: only the status.
    fn refusal(status: v2::Status) -> Self;
}

macro_rules! answers {
    ($($t:ty),* $(,)?) => {
        $(impl Answer for $t {
            fn code(&self) -> i32 {
                self.status.as_ref().map_or(Code::Ok as i32, |s| s.code)
            }
            // Some answers hold only the status; the update is for the others.
            #[allow(clippy::needless_update)]
            fn refusal(status: v2::Status) -> Self {
                Self { status: Some(status), ..Default::default() }
            }
        })*
    };
}

answers!(
    v2::QueryRouteResponse,
    v2::HeartbeatResponse,
    v2::SendMessageResponse,
    v2::QueryAssignmentResponse,
    v2::AckMessageResponse,
    v2::ForwardMessageToDeadLetterQueueResponse,
    v2::UpdateOffsetResponse,
    v2::GetOffsetResponse,
    v2::QueryOffsetResponse,
    v2::EndTransactionResponse,
    v2::NotifyClientTerminationResponse,
    v2::ChangeInvisibleDurationResponse,
    v2::RecallMessageResponse,
    v2::SyncLiteSubscriptionResponse,
);

/// An item of a streamed answer; the one carrying the call's status says so.
pub trait StreamItem {
    fn status_code(&self) -> Option<i32>;
    /// The one item of the answer to a refused call.
    fn refusal(status: v2::Status) -> Self;
}

impl StreamItem for v2::ReceiveMessageResponse {
    fn status_code(&self) -> Option<i32> {
        match &self.content {
            Some(v2::receive_message_response::Content::Status(s)) => Some(s.code),
            _ => None,
        }
    }
    fn refusal(status: v2::Status) -> Self {
        v2::ReceiveMessageResponse {
            content: Some(v2::receive_message_response::Content::Status(status)),
        }
    }
}

impl StreamItem for v2::PullMessageResponse {
    fn status_code(&self) -> Option<i32> {
        match &self.content {
            Some(v2::pull_message_response::Content::Status(s)) => Some(s.code),
            _ => None,
        }
    }
    fn refusal(status: v2::Status) -> Self {
        v2::PullMessageResponse {
            content: Some(v2::pull_message_response::Content::Status(status)),
        }
    }
}

impl StreamItem for v2::TelemetryCommand {
    fn status_code(&self) -> Option<i32> {
        self.status.as_ref().map(|s| s.code)
    }
    fn refusal(status: v2::Status) -> Self {
        v2::TelemetryCommand {
            status: Some(status),
            command: None,
        }
    }
}

/// The refusal of a call by authorization, when auth is on and the caller may not make it.
fn refused<Req: Targeted>(ext: &tonic::Extensions, msg: &Req) -> Option<v2::Status> {
    ext.get::<Caller>()?.check(&msg.targets()).err()
}

/// The span every RPC runs in. It is at DEBUG: at the default INFO it would cost about 4 % of
/// an unbatched send's CPU (creating it formats its fields, every poll enters it) only to give
/// context to the rare line logged inside a call, and those lines name what they are about
/// themselves (BENCHMARKS.md, "Request spans at DEBUG").
fn span<T>(method: &'static str, req: &Request<T>) -> Span {
    // The client id is looked up inside the macro, which evaluates fields only for a span
    // that is on.
    tracing::debug_span!(
        "rpc",
        method,
        client = req
            .metadata()
            .get("x-mq-client-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        topic = Empty,
        group = Empty
    )
}

/// A failure the protocol could not express as a status, as a code for the metrics.
fn grpc_error_code(_: &Status) -> i32 {
    Code::InternalServerError as i32
}

/// Runs a unary RPC handler (given the request's headers and message) inside its span, and
/// records its time and outcome.
pub async fn unary<Req, Resp, F, Fut>(
    metrics: &Metrics,
    method: &'static str,
    req: Request<Req>,
    handle: F,
) -> Result<Response<Resp>, Status>
where
    Req: Targeted,
    Resp: Answer,
    F: FnOnce(MetadataMap, Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let started = Instant::now();
    let span = span(method, &req);
    let (md, ext, msg) = req.into_parts();
    let r = match refused(&ext, &msg) {
        Some(status) => Ok(Resp::refusal(status)),
        None => handle(md, msg).instrument(span).await,
    };
    let code = match &r {
        Ok(resp) => resp.code(),
        Err(s) => grpc_error_code(s),
    };
    metrics.rpc(method, started.elapsed(), code);
    r.map(Response::new)
}

pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Runs a streaming RPC handler inside its span; its time and outcome are recorded when the
/// answer stream ends (or is dropped by a client that went away).
pub async fn streaming<Req, T, F, Fut>(
    metrics: Arc<Metrics>,
    method: &'static str,
    req: Request<Req>,
    handle: F,
) -> Result<Response<BoxStream<T>>, Status>
where
    Req: Targeted,
    T: StreamItem + Send + 'static,
    F: FnOnce(MetadataMap, Req) -> Fut,
    Fut: Future<Output = Result<BoxStream<T>, Status>>,
{
    let started = Instant::now();
    let span = span(method, &req);
    let (md, ext, msg) = req.into_parts();
    let answer = match refused(&ext, &msg) {
        Some(status) => {
            let one = tokio_stream::once(Ok(T::refusal(status)));
            Ok(Box::pin(one) as BoxStream<T>)
        }
        None => handle(md, msg).instrument(span.clone()).await,
    };
    match answer {
        Ok(inner) => Ok(Response::new(Box::pin(Observed {
            inner,
            metrics,
            method,
            started,
            code: None,
            span,
        }) as BoxStream<T>)),
        Err(s) => {
            metrics.rpc(method, started.elapsed(), grpc_error_code(&s));
            Err(s)
        }
    }
}

/// A streamed answer being watched for its status and its end.
struct Observed<T> {
    inner: BoxStream<T>,
    metrics: Arc<Metrics>,
    method: &'static str,
    started: Instant,
    code: Option<i32>,
    span: Span,
}

impl<T: StreamItem> Stream for Observed<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let _entered = self.span.clone().entered();
        let item = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(Some(r)) = &item {
            let code = match r {
                Ok(i) => i.status_code(),
                Err(s) => Some(grpc_error_code(s)),
            };
            if self.code.is_none() {
                self.code = code;
            }
        }
        item
    }
}

impl<T> Drop for Observed<T> {
    fn drop(&mut self) {
        self.metrics.rpc(
            self.method,
            self.started.elapsed(),
            self.code.unwrap_or(Code::Ok as i32),
        );
    }
}
