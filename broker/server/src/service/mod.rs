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

mod send;
mod settle;

pub use route::advertised_endpoints;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_proto::v2::messaging_service_server::MessagingService;
use ferromq_proto::v2::{self, Code};
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::rpc;
pub use crate::rpc::BoxStream;
use crate::status::{self, ClientLanguage, RpcError};

/// The header values of a request that handlers use.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub client_id: Option<String>,
    pub language: ClientLanguage,
    /// What is left of the caller's deadline (`grpc-timeout`) when the request arrived.
    pub timeout: Option<Duration>,
    pub received: Option<Instant>,
    /// Who is calling, when auth is on (set for Telemetry streams, whose Settings commands are
    /// authorized one by one).
    pub caller: Option<crate::auth::Caller>,
}

impl RequestMeta {
    pub fn from_request<T>(req: &Request<T>) -> RequestMeta {
        RequestMeta::from_metadata(req.metadata())
    }

    pub fn from_metadata(md: &tonic::metadata::MetadataMap) -> RequestMeta {
        let text = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        RequestMeta {
            client_id: text("x-mq-client-id").filter(|s| !s.trim().is_empty()),
            language: ClientLanguage(text("x-mq-language").unwrap_or_default()),
            timeout: text("grpc-timeout").and_then(|t| parse_grpc_timeout(&t)),
            received: Some(Instant::now()),
            caller: None,
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

/// The service object handed to tonic.
#[derive(Clone)]
pub struct MessagingApi {
    node: Arc<Node>,
}

impl MessagingApi {
    pub fn new(node: Arc<Node>) -> MessagingApi {
        MessagingApi { node }
    }
}

#[tonic::async_trait]
impl MessagingService for MessagingApi {
    async fn query_route(
        &self,
        req: Request<v2::QueryRouteRequest>,
    ) -> Result<Response<v2::QueryRouteResponse>, Status> {
        let node = &self.node;
        rpc::unary(&node.metrics, "QueryRoute", req, |md, r| async move {
            Ok(route::query_route(node, &RequestMeta::from_metadata(&md), r).await)
        })
        .await
    }

    async fn heartbeat(
        &self,
        req: Request<v2::HeartbeatRequest>,
    ) -> Result<Response<v2::HeartbeatResponse>, Status> {
        let node = &self.node;
        rpc::unary(&node.metrics, "Heartbeat", req, |md, r| async move {
            Ok(client::heartbeat(node, &RequestMeta::from_metadata(&md), r))
        })
        .await
    }

    async fn send_message(
        &self,
        req: Request<v2::SendMessageRequest>,
    ) -> Result<Response<v2::SendMessageResponse>, Status> {
        let node = &self.node;
        rpc::unary(&node.metrics, "SendMessage", req, |md, r| async move {
            Ok(send::send_message(node, &RequestMeta::from_metadata(&md), r).await)
        })
        .await
    }

    async fn query_assignment(
        &self,
        req: Request<v2::QueryAssignmentRequest>,
    ) -> Result<Response<v2::QueryAssignmentResponse>, Status> {
        let node = &self.node;
        rpc::unary(&node.metrics, "QueryAssignment", req, |md, r| async move {
            Ok(route::query_assignment(node, &RequestMeta::from_metadata(&md), r).await)
        })
        .await
    }

    type ReceiveMessageStream = BoxStream<v2::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        req: Request<v2::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        let node = self.node.clone();
        rpc::streaming(
            self.node.metrics.clone(),
            "ReceiveMessage",
            req,
            |md, r| async move {
                Ok(receive::receive_message(
                    node,
                    RequestMeta::from_metadata(&md),
                    r,
                ))
            },
        )
        .await
    }

    async fn ack_message(
        &self,
        req: Request<v2::AckMessageRequest>,
    ) -> Result<Response<v2::AckMessageResponse>, Status> {
        let node = &self.node;
        rpc::unary(&node.metrics, "AckMessage", req, |md, r| async move {
            Ok(settle::ack_message(node, &RequestMeta::from_metadata(&md), r).await)
        })
        .await
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        req: Request<v2::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<v2::ForwardMessageToDeadLetterQueueResponse>, Status> {
        let node = &self.node;
        let method = "ForwardMessageToDeadLetterQueue";
        rpc::unary(&node.metrics, method, req, |md, r| async move {
            Ok(settle::forward_to_dlq(node, &RequestMeta::from_metadata(&md), r).await)
        })
        .await
    }

    type PullMessageStream = BoxStream<v2::PullMessageResponse>;

    async fn pull_message(
        &self,
        req: Request<v2::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, Status> {
        let node = self.node.clone();
        rpc::streaming(
            self.node.metrics.clone(),
            "PullMessage",
            req,
            |md, r| async move { Ok(pull::pull_message(node, RequestMeta::from_metadata(&md), r)) },
        )
        .await
    }

    async fn update_offset(
        &self,
        req: Request<v2::UpdateOffsetRequest>,
    ) -> Result<Response<v2::UpdateOffsetResponse>, Status> {
        let node = &self.node;
        rpc::unary(&node.metrics, "UpdateOffset", req, |md, r| async move {
            Ok(pull::update_offset(node, &RequestMeta::from_metadata(&md), r).await)
        })
        .await
    }

    async fn get_offset(
        &self,
        req: Request<v2::GetOffsetRequest>,
    ) -> Result<Response<v2::GetOffsetResponse>, Status> {
        let node = &self.node;
        rpc::unary(&node.metrics, "GetOffset", req, |md, r| async move {
            Ok(pull::get_offset(node, &RequestMeta::from_metadata(&md), r).await)
        })
        .await
    }

    async fn query_offset(
        &self,
        req: Request<v2::QueryOffsetRequest>,
    ) -> Result<Response<v2::QueryOffsetResponse>, Status> {
        let node = &self.node;
        rpc::unary(&node.metrics, "QueryOffset", req, |md, r| async move {
            Ok(pull::query_offset(node, &RequestMeta::from_metadata(&md), r).await)
        })
        .await
    }

    async fn end_transaction(
        &self,
        req: Request<v2::EndTransactionRequest>,
    ) -> Result<Response<v2::EndTransactionResponse>, Status> {
        let node = &self.node;
        rpc::unary(&node.metrics, "EndTransaction", req, |md, r| async move {
            Ok(parked::end_transaction(node, &RequestMeta::from_metadata(&md), r).await)
        })
        .await
    }

    type TelemetryStream = BoxStream<v2::TelemetryCommand>;

    async fn telemetry(
        &self,
        req: Request<tonic::Streaming<v2::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        let node = self.node.clone();
        let caller = req.extensions().get::<crate::auth::Caller>().cloned();
        rpc::streaming(
            self.node.metrics.clone(),
            "Telemetry",
            req,
            |md, r| async move {
                let meta = RequestMeta {
                    caller,
                    ..RequestMeta::from_metadata(&md)
                };
                client::telemetry(node, meta, r)
            },
        )
        .await
    }

    async fn notify_client_termination(
        &self,
        req: Request<v2::NotifyClientTerminationRequest>,
    ) -> Result<Response<v2::NotifyClientTerminationResponse>, Status> {
        let node = &self.node;
        rpc::unary(
            &node.metrics,
            "NotifyClientTermination",
            req,
            |md, r| async move {
                Ok(client::notify_client_termination(
                    node,
                    &RequestMeta::from_metadata(&md),
                    r,
                ))
            },
        )
        .await
    }

    async fn change_invisible_duration(
        &self,
        req: Request<v2::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<v2::ChangeInvisibleDurationResponse>, Status> {
        let node = &self.node;
        rpc::unary(
            &node.metrics,
            "ChangeInvisibleDuration",
            req,
            |md, r| async move {
                let meta = RequestMeta::from_metadata(&md);
                Ok(settle::change_invisible_duration(node, &meta, r).await)
            },
        )
        .await
    }

    async fn recall_message(
        &self,
        req: Request<v2::RecallMessageRequest>,
    ) -> Result<Response<v2::RecallMessageResponse>, Status> {
        let node = &self.node;
        rpc::unary(&node.metrics, "RecallMessage", req, |md, r| async move {
            Ok(parked::recall_message(node, &RequestMeta::from_metadata(&md), r).await)
        })
        .await
    }

    async fn sync_lite_subscription(
        &self,
        req: Request<v2::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<v2::SyncLiteSubscriptionResponse>, Status> {
        rpc::unary(
            &self.node.metrics,
            "SyncLiteSubscription",
            req,
            |_, _| async {
                Ok(v2::SyncLiteSubscriptionResponse {
                    status: Some(not_implemented("SyncLiteSubscription (lite topics)")),
                })
            },
        )
        .await
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
