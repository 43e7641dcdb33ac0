//! The RocketMQ 5 `MessagingService`: one file per group of RPCs, this file only routes calls
//! and reads the request headers every RPC needs.
//!
//! Every RPC answers gRPC OK with its outcome in the response's `Status`; gRPC errors are kept
//! for requests the protocol cannot even express (a Telemetry stream without a client id).

mod client;
mod parked;
mod pull;
mod receive;
mod route;

pub use route::advertised_endpoints;
pub use send::DRAINING;
mod send;
mod settle;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_proto::v2::messaging_service_server::MessagingService;
use ferromq_proto::v2::{self, Code};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::broker::Broker;
use crate::status::{self, ClientLanguage, RpcError};

/// The header values of a request that handlers use.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub client_id: Option<String>,
    pub language: ClientLanguage,
    /// What is left of the caller's deadline (`grpc-timeout`) when the request arrived.
    pub timeout: Option<Duration>,
    pub received: Option<Instant>,
}

impl RequestMeta {
    pub fn from_request<T>(req: &Request<T>) -> RequestMeta {
        let md = req.metadata();
        let text = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        RequestMeta {
            client_id: text("x-mq-client-id").filter(|s| !s.trim().is_empty()),
            language: ClientLanguage(text("x-mq-language").unwrap_or_default()),
            timeout: text("grpc-timeout").and_then(|t| parse_grpc_timeout(&t)),
            received: Some(Instant::now()),
        }
    }

    /// The client id, which ties RPCs to the client's Telemetry session.
    pub fn require_client_id(&self) -> Result<&str, RpcError> {
        self.client_id.as_deref().ok_or_else(|| {
            RpcError::new(Code::ClientIdRequired, "header x-mq-client-id is required")
        })
    }

    pub fn status(&self, e: &RpcError) -> v2::Status {
        e.to_status(&self.language)
    }

    /// When the caller stops waiting.
    pub fn deadline(&self) -> Option<Instant> {
        Some(self.received? + self.timeout?)
    }
}

/// Parses the gRPC `grpc-timeout` header (`<digits><unit>`, units H M S m u n).
pub fn parse_grpc_timeout(s: &str) -> Option<Duration> {
    if s.len() < 2 {
        return None;
    }
    let (num, unit) = s.split_at(s.len() - 1);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Answers RPCs of features planned for later releases, clearly and at once.
fn not_implemented(what: &str) -> v2::Status {
    status::status(
        Code::NotImplemented,
        format!("{what} is not implemented by this FerroMQ version"),
    )
}

pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The service object handed to tonic.
#[derive(Clone)]
pub struct MessagingApi {
    broker: Arc<Broker>,
}

impl MessagingApi {
    pub fn new(broker: Arc<Broker>) -> MessagingApi {
        MessagingApi { broker }
    }

    fn record(&self, method: &'static str, started: Instant, s: Option<&v2::Status>) {
        self.broker.metrics.rpc(
            method,
            started.elapsed(),
            s.map_or(Code::Ok as i32, |s| s.code),
        );
    }
}

#[tonic::async_trait]
impl MessagingService for MessagingApi {
    async fn query_route(
        &self,
        req: Request<v2::QueryRouteRequest>,
    ) -> Result<Response<v2::QueryRouteResponse>, Status> {
        let t = Instant::now();
        let meta = RequestMeta::from_request(&req);
        let resp = route::query_route(&self.broker, &meta, req.into_inner()).await;
        self.record("QueryRoute", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    async fn heartbeat(
        &self,
        req: Request<v2::HeartbeatRequest>,
    ) -> Result<Response<v2::HeartbeatResponse>, Status> {
        let t = Instant::now();
        let meta = RequestMeta::from_request(&req);
        let resp = client::heartbeat(&self.broker, &meta, req.into_inner());
        self.record("Heartbeat", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    async fn send_message(
        &self,
        req: Request<v2::SendMessageRequest>,
    ) -> Result<Response<v2::SendMessageResponse>, Status> {
        let t = Instant::now();
        let meta = RequestMeta::from_request(&req);
        let resp = send::send_message(&self.broker, &meta, req.into_inner()).await;
        self.record("SendMessage", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    async fn query_assignment(
        &self,
        req: Request<v2::QueryAssignmentRequest>,
    ) -> Result<Response<v2::QueryAssignmentResponse>, Status> {
        let t = Instant::now();
        let meta = RequestMeta::from_request(&req);
        let resp = route::query_assignment(&self.broker, &meta, req.into_inner()).await;
        self.record("QueryAssignment", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    type ReceiveMessageStream = BoxStream<v2::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        req: Request<v2::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        let meta = RequestMeta::from_request(&req);
        Ok(Response::new(receive::receive_message(
            self.broker.clone(),
            meta,
            req.into_inner(),
        )))
    }

    async fn ack_message(
        &self,
        req: Request<v2::AckMessageRequest>,
    ) -> Result<Response<v2::AckMessageResponse>, Status> {
        let t = Instant::now();
        let meta = RequestMeta::from_request(&req);
        let resp = settle::ack_message(&self.broker, &meta, req.into_inner()).await;
        self.record("AckMessage", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        req: Request<v2::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<v2::ForwardMessageToDeadLetterQueueResponse>, Status> {
        let t = Instant::now();
        let meta = RequestMeta::from_request(&req);
        let resp = settle::forward_to_dlq(&self.broker, &meta, req.into_inner()).await;
        self.record("ForwardMessageToDeadLetterQueue", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    type PullMessageStream = BoxStream<v2::PullMessageResponse>;

    async fn pull_message(
        &self,
        req: Request<v2::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, Status> {
        let meta = RequestMeta::from_request(&req);
        Ok(Response::new(pull::pull_message(
            self.broker.clone(),
            meta,
            req.into_inner(),
        )))
    }

    async fn update_offset(
        &self,
        req: Request<v2::UpdateOffsetRequest>,
    ) -> Result<Response<v2::UpdateOffsetResponse>, Status> {
        let t = Instant::now();
        let meta = RequestMeta::from_request(&req);
        let resp = pull::update_offset(&self.broker, &meta, req.into_inner()).await;
        self.record("UpdateOffset", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    async fn get_offset(
        &self,
        req: Request<v2::GetOffsetRequest>,
    ) -> Result<Response<v2::GetOffsetResponse>, Status> {
        let t = Instant::now();
        let meta = RequestMeta::from_request(&req);
        let resp = pull::get_offset(&self.broker, &meta, req.into_inner()).await;
        self.record("GetOffset", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    async fn query_offset(
        &self,
        req: Request<v2::QueryOffsetRequest>,
    ) -> Result<Response<v2::QueryOffsetResponse>, Status> {
        let t = Instant::now();
        let meta = RequestMeta::from_request(&req);
        let resp = pull::query_offset(&self.broker, &meta, req.into_inner()).await;
        self.record("QueryOffset", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    async fn end_transaction(
        &self,
        req: Request<v2::EndTransactionRequest>,
    ) -> Result<Response<v2::EndTransactionResponse>, Status> {
        let t = Instant::now();
        let meta = RequestMeta::from_request(&req);
        let resp = parked::end_transaction(&self.broker, &meta, req.into_inner()).await;
        self.record("EndTransaction", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    type TelemetryStream = BoxStream<v2::TelemetryCommand>;

    async fn telemetry(
        &self,
        req: Request<tonic::Streaming<v2::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        let meta = RequestMeta::from_request(&req);
        client::telemetry(self.broker.clone(), meta, req.into_inner()).map(Response::new)
    }

    async fn notify_client_termination(
        &self,
        req: Request<v2::NotifyClientTerminationRequest>,
    ) -> Result<Response<v2::NotifyClientTerminationResponse>, Status> {
        let t = Instant::now();
        let meta = RequestMeta::from_request(&req);
        let resp = client::notify_client_termination(&self.broker, &meta, req.into_inner());
        self.record("NotifyClientTermination", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    async fn change_invisible_duration(
        &self,
        req: Request<v2::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<v2::ChangeInvisibleDurationResponse>, Status> {
        let t = Instant::now();
        let meta = RequestMeta::from_request(&req);
        let resp = settle::change_invisible_duration(&self.broker, &meta, req.into_inner()).await;
        self.record("ChangeInvisibleDuration", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    async fn recall_message(
        &self,
        req: Request<v2::RecallMessageRequest>,
    ) -> Result<Response<v2::RecallMessageResponse>, Status> {
        let t = Instant::now();
        let meta = RequestMeta::from_request(&req);
        let resp = parked::recall_message(&self.broker, &meta, req.into_inner()).await;
        self.record("RecallMessage", t, resp.status.as_ref());
        Ok(Response::new(resp))
    }

    async fn sync_lite_subscription(
        &self,
        _req: Request<v2::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<v2::SyncLiteSubscriptionResponse>, Status> {
        Ok(Response::new(v2::SyncLiteSubscriptionResponse {
            status: Some(not_implemented("SyncLiteSubscription (lite topics)")),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_every_unit() {
        assert_eq!(parse_grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_grpc_timeout("2999m"),
            Some(Duration::from_millis(2999))
        );
        assert_eq!(parse_grpc_timeout("1M"), Some(Duration::from_secs(60)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout("10X"), None);
    }
}
