//! Client lifecycle: Heartbeat, NotifyClientTermination and the Telemetry stream.
//!
//! Telemetry is where a client announces its settings and the server answers with the
//! settings it must use (limits, retry policy, receive batch size, FIFO). Every official
//! client opens it at start; several refuse to start without the answer, and the Rust client
//! never reopens it, so the stream stays open until the client closes its side or the server
//! shuts down. Server-to-client commands go through the sender kept in [`crate::clients`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferromq_proto::v2::{self, ClientType, Code};
use ferromq_store::MessageType;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info_span, instrument, Instrument};

use super::{BoxStream, RequestMeta};
use crate::convert::duration_to_proto;
use crate::node::Node;
use crate::status::{self, RpcError};
use crate::validate;

static STREAM_IDS: AtomicU64 = AtomicU64::new(1);

/// Backoff the server tells producers to use between send attempts.
fn producer_backoff() -> v2::RetryPolicy {
    v2::RetryPolicy {
        max_attempts: 3,
        strategy: Some(v2::retry_policy::Strategy::ExponentialBackoff(
            v2::ExponentialBackoff {
                initial: Some(duration_to_proto(Duration::from_millis(10))),
                max: Some(duration_to_proto(Duration::from_secs(1))),
                multiplier: 2.0,
            },
        )),
    }
}

/// Redelivery delays of consumer groups (RocketMQ's customary schedule).
fn consumer_backoff(max_attempts: u32) -> v2::RetryPolicy {
    const SECS: [u64; 18] = [
        1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200,
    ];
    v2::RetryPolicy {
        max_attempts: max_attempts as i32,
        strategy: Some(v2::retry_policy::Strategy::CustomizedBackoff(
            v2::CustomizedBackoff {
                next: SECS
                    .iter()
                    .map(|s| duration_to_proto(Duration::from_secs(*s)))
                    .collect(),
            },
        )),
    }
}

/// The client's settings merged with what the server decides.
pub fn merged_settings(node: &Node, s: &v2::Settings) -> Result<v2::Settings, RpcError> {
    let mut out = s.clone();
    out.metric = Some(v2::Metric {
        on: false,
        endpoints: None,
    });
    match &mut out.pub_sub {
        Some(v2::settings::PubSub::Publishing(p)) => {
            out.backoff_policy = Some(producer_backoff());
            p.max_body_size = node.settings.max_body_size.min(i32::MAX as usize) as i32;
            p.validate_message_type = true;
        }
        Some(v2::settings::PubSub::Subscription(sub)) => {
            // A bad filter is refused when the consumer subscribes, not at its first receive.
            for e in &sub.subscriptions {
                crate::convert::read_filter(e.expression.as_ref())?;
            }
            let group = sub
                .group
                .as_ref()
                .map(|g| g.name.clone())
                .unwrap_or_default();
            let fifo = sub.subscriptions.iter().any(|e| {
                let topic_fifo = e
                    .topic
                    .as_ref()
                    .and_then(|t| node.engine.store.topics().get(&t.name))
                    .is_some_and(|t| t.message_type == MessageType::Fifo);
                node.engine.groups.fifo(&group, topic_fifo)
            });
            out.backoff_policy = Some(consumer_backoff(node.engine.groups.max_attempts(&group)));
            sub.fifo = Some(fifo);
            sub.receive_batch_size = Some(32);
            sub.long_polling_timeout = Some(duration_to_proto(Duration::from_secs(20)));
        }
        None => {
            return Err(RpcError::bad_request(
                "settings carry neither publishing nor subscription",
            ))
        }
    }
    Ok(out)
}

#[instrument(skip_all, fields(client = meta.client_id.as_deref().unwrap_or("")))]
pub fn heartbeat(
    node: &Node,
    meta: &RequestMeta,
    req: v2::HeartbeatRequest,
) -> v2::HeartbeatResponse {
    let result = (|| {
        let id = meta.require_client_id()?;
        let group = match &req.group {
            Some(g) if !g.name.is_empty() => Some(validate::group_name(Some(g))?),
            _ => None,
        };
        let ct = ClientType::try_from(req.client_type).unwrap_or(ClientType::Unspecified);
        node.clients.heartbeat(id, &meta.language.0, group, ct);
        Ok::<_, RpcError>(())
    })();
    v2::HeartbeatResponse {
        status: Some(result.map_or_else(|e| meta.status(&e), |_| status::ok())),
    }
}

#[instrument(skip_all, fields(client = meta.client_id.as_deref().unwrap_or("")))]
pub fn notify_client_termination(
    node: &Node,
    meta: &RequestMeta,
    _req: v2::NotifyClientTerminationRequest,
) -> v2::NotifyClientTerminationResponse {
    // Always OK: the Rust client's shutdown fails on anything else, and forgetting an unknown
    // client is a no-op.
    if let Some(id) = &meta.client_id {
        node.clients.terminate(id);
    }
    v2::NotifyClientTerminationResponse {
        status: Some(status::ok()),
    }
}

fn reply_for(
    node: &Node,
    meta: &RequestMeta,
    client_id: &str,
    cmd: v2::TelemetryCommand,
) -> Option<v2::TelemetryCommand> {
    match cmd.command {
        Some(v2::telemetry_command::Command::Settings(s)) => {
            node.clients.on_settings(client_id, &meta.language.0, &s);
            Some(match merged_settings(node, &s) {
                Ok(merged) => v2::TelemetryCommand {
                    status: Some(status::ok()),
                    command: Some(v2::telemetry_command::Command::Settings(merged)),
                },
                Err(e) => v2::TelemetryCommand {
                    status: Some(meta.status(&e)),
                    command: None,
                },
            })
        }
        Some(other) => {
            // Answers to commands we never send yet (stack traces, verify results): logged only.
            debug!(client = client_id, command = ?other, "telemetry command from client ignored");
            None
        }
        None => Some(v2::TelemetryCommand {
            status: Some(status::status(
                Code::BadRequest,
                "telemetry command carries no command",
            )),
            command: None,
        }),
    }
}

pub fn telemetry(
    node: Arc<Node>,
    meta: RequestMeta,
    mut inbound: tonic::Streaming<v2::TelemetryCommand>,
) -> Result<BoxStream<v2::TelemetryCommand>, tonic::Status> {
    let client_id = meta.client_id.clone().ok_or_else(|| {
        tonic::Status::invalid_argument("header x-mq-client-id is required for Telemetry")
    })?;
    let (tx, rx) = mpsc::channel(32);
    let stream_id = STREAM_IDS.fetch_add(1, Ordering::Relaxed);
    node.clients
        .attach_stream(&client_id, &meta.language.0, stream_id, tx.clone());
    let span = info_span!("telemetry", client = %client_id, stream = stream_id);
    tokio::spawn(
        async move {
            let mut shutdown = node.shutdown.clone();
            loop {
                if *shutdown.borrow() {
                    break;
                }
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(cmd)) => {
                            if let Some(reply) = reply_for(&node, &meta, &client_id, cmd) {
                                if tx.send(Ok(reply)).await.is_err() {
                                    break;
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            debug!(error = %e, "telemetry stream failed");
                            break;
                        }
                    },
                    _ = shutdown.changed() => break,
                }
            }
            // Dropping every sender completes the response stream.
            node.clients.detach_stream(&client_id, stream_id);
            debug!("telemetry stream closed");
        }
        .instrument(span),
    );
    Ok(Box::pin(ReceiverStream::new(rx)))
}
