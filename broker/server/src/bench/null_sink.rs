//! `ferromq bench sink`: a RocketMQ 5 gRPC server that acknowledges every send and keeps
//! nothing.
//!
//! Benchmarks read every broker's result as a fraction of what the same client reaches against
//! this sink on the same machine: the sink costs only gRPC decoding and one answer per request,
//! so its rate is the ceiling the client, the loopback network and the CPU leave to any broker.
//! It serves `SendMessage`, `QueryRoute` (one writable queue on itself) and `Heartbeat`;
//! everything else is refused with UNIMPLEMENTED, so a client that needs more fails loudly
//! instead of measuring a shortcut.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use ferromq_proto::v2;
use ferromq_proto::v2::messaging_service_server::{MessagingService, MessagingServiceServer};
use tonic::{Request, Response, Status};

use crate::service::BoxStream;
use crate::status::ok;

/// The sink; counts what it acknowledged.
#[derive(Default)]
pub struct NullSink {
    acked: AtomicU64,
}

/// Serves the sink on `addr` until Ctrl-C or SIGTERM, then prints how many messages it acked.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let sink = Arc::new(NullSink::default());
    let svc = MessagingServiceServer::from_arc(sink.clone()).max_decoding_message_size(64 << 20);
    eprintln!("null sink listening on {addr}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("registering SIGTERM")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_shutdown(addr, shutdown)
        .await
        .with_context(|| format!("serving the null sink on {addr}"))?;
    eprintln!(
        "null sink acked {} messages",
        sink.acked.load(Ordering::Relaxed)
    );
    Ok(())
}

fn unimplemented<T>(what: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!(
        "the null sink serves SendMessage, QueryRoute and Heartbeat only, not {what}"
    )))
}

#[tonic::async_trait]
impl MessagingService for NullSink {
    async fn query_route(
        &self,
        request: Request<v2::QueryRouteRequest>,
    ) -> Result<Response<v2::QueryRouteResponse>, Status> {
        let req = request.into_inner();
        let broker = v2::Broker {
            name: "null-sink".into(),
            id: 0,
            endpoints: req.endpoints,
        };
        let queue = v2::MessageQueue {
            topic: req.topic,
            id: 0,
            permission: v2::Permission::ReadWrite as i32,
            broker: Some(broker),
            accept_message_types: vec![v2::MessageType::Normal as i32],
        };
        Ok(Response::new(v2::QueryRouteResponse {
            status: Some(ok()),
            message_queues: vec![queue],
        }))
    }

    async fn heartbeat(
        &self,
        _request: Request<v2::HeartbeatRequest>,
    ) -> Result<Response<v2::HeartbeatResponse>, Status> {
        Ok(Response::new(v2::HeartbeatResponse { status: Some(ok()) }))
    }

    async fn send_message(
        &self,
        request: Request<v2::SendMessageRequest>,
    ) -> Result<Response<v2::SendMessageResponse>, Status> {
        let req = request.into_inner();
        let first = self
            .acked
            .fetch_add(req.messages.len() as u64, Ordering::Relaxed);
        let entries = req
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| v2::SendResultEntry {
                status: Some(ok()),
                message_id: m
                    .system_properties
                    .map(|p| p.message_id)
                    .unwrap_or_default(),
                transaction_id: String::new(),
                offset: (first + i as u64) as i64,
                recall_handle: String::new(),
            })
            .collect();
        Ok(Response::new(v2::SendMessageResponse {
            status: Some(ok()),
            entries,
        }))
    }

    async fn query_assignment(
        &self,
        _r: Request<v2::QueryAssignmentRequest>,
    ) -> Result<Response<v2::QueryAssignmentResponse>, Status> {
        unimplemented("QueryAssignment")
    }

    type ReceiveMessageStream = BoxStream<v2::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        _r: Request<v2::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        unimplemented("ReceiveMessage")
    }

    async fn ack_message(
        &self,
        _r: Request<v2::AckMessageRequest>,
    ) -> Result<Response<v2::AckMessageResponse>, Status> {
        unimplemented("AckMessage")
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        _r: Request<v2::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<v2::ForwardMessageToDeadLetterQueueResponse>, Status> {
        unimplemented("ForwardMessageToDeadLetterQueue")
    }

    type PullMessageStream = BoxStream<v2::PullMessageResponse>;

    async fn pull_message(
        &self,
        _r: Request<v2::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, Status> {
        unimplemented("PullMessage")
    }

    async fn update_offset(
        &self,
        _r: Request<v2::UpdateOffsetRequest>,
    ) -> Result<Response<v2::UpdateOffsetResponse>, Status> {
        unimplemented("UpdateOffset")
    }

    async fn get_offset(
        &self,
        _r: Request<v2::GetOffsetRequest>,
    ) -> Result<Response<v2::GetOffsetResponse>, Status> {
        unimplemented("GetOffset")
    }

    async fn query_offset(
        &self,
        _r: Request<v2::QueryOffsetRequest>,
    ) -> Result<Response<v2::QueryOffsetResponse>, Status> {
        unimplemented("QueryOffset")
    }

    async fn end_transaction(
        &self,
        _r: Request<v2::EndTransactionRequest>,
    ) -> Result<Response<v2::EndTransactionResponse>, Status> {
        unimplemented("EndTransaction")
    }

    type TelemetryStream = BoxStream<v2::TelemetryCommand>;

    async fn telemetry(
        &self,
        _r: Request<tonic::Streaming<v2::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        unimplemented("Telemetry")
    }

    async fn notify_client_termination(
        &self,
        _r: Request<v2::NotifyClientTerminationRequest>,
    ) -> Result<Response<v2::NotifyClientTerminationResponse>, Status> {
        Ok(Response::new(v2::NotifyClientTerminationResponse {
            status: Some(ok()),
        }))
    }

    async fn change_invisible_duration(
        &self,
        _r: Request<v2::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<v2::ChangeInvisibleDurationResponse>, Status> {
        unimplemented("ChangeInvisibleDuration")
    }

    async fn recall_message(
        &self,
        _r: Request<v2::RecallMessageRequest>,
    ) -> Result<Response<v2::RecallMessageResponse>, Status> {
        unimplemented("RecallMessage")
    }

    async fn sync_lite_subscription(
        &self,
        _r: Request<v2::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<v2::SyncLiteSubscriptionResponse>, Status> {
        unimplemented("SyncLiteSubscription")
    }
}
