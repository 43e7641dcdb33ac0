//! Sends to one broker group, gathered: concurrent SendMessage calls the proxy forwards to the
//! same endpoint travel together in one `ferromq.forward.v1.Forward/SendMany` call (the broker
//! serves each entry as its own call: [`crate::forward`]), so the hop costs one HTTP/2 request,
//! one write and one wake-up on each side per batch rather than per send.
//!
//! No send waits for a batch to fill. A send leaves at once while fewer than [`IN_FLIGHT`]
//! batches are on their way to the endpoint; the sends that arrive meanwhile leave together as
//! soon as one of them comes back. Under light load every batch holds one send; under heavy
//! load batches grow by themselves, so the hop's cost per send falls as the rate rises, which
//! is when the cores are short.
//!
//! A broker that predates the service answers UNIMPLEMENTED: nothing was stored, and from then
//! on the proxy sends to that endpoint one request per send, as before ([`Batcher::legacy`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq_proto::forward::{self, forward_client::ForwardClient};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tonic::metadata::{KeyAndValueRef, MetadataMap};
use tonic::transport::Channel;
use tonic::Status;
use tracing::Instrument;

use crate::forward::{BATCH_OVERHEAD, MAX_BATCH_BYTES, MAX_BATCH_SENDS};
use crate::metrics::Metrics;

/// Batches on their way to one endpoint at a time: one can be answered while the next gathers
/// and travels; a larger number lets more sends leave alone and batches stay smaller. Measured
/// against 1 and 4 with batches of 32 (BENCHMARKS.md, 2026-12-06): one in flight halves the
/// number of batches but leaves cores idle at no higher rate, four costs more CPU per message.
pub const IN_FLIGHT: usize = 2;

/// Where a send's answer goes.
type Reply = oneshot::Sender<Result<Bytes, Status>>;

/// One send waiting for its batch.
struct Pending {
    send: forward::ForwardedSend,
    timeout: Option<Duration>,
    reply: Reply,
}

/// The gatherer of one endpoint's sends; its task ends when the batcher is dropped.
pub struct Batcher {
    tx: mpsc::UnboundedSender<Pending>,
    legacy: Arc<AtomicBool>,
}

impl Batcher {
    /// A batcher sending over `channels` (used in turn), with a task of its own.
    pub fn start(endpoint: &str, channels: Vec<Channel>, metrics: Arc<Metrics>) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        let legacy = Arc::new(AtomicBool::new(false));
        let span = tracing::info_span!("forward", endpoint);
        tokio::spawn(gather(rx, channels, legacy.clone(), metrics).instrument(span));
        Batcher { tx, legacy }
    }

    /// True once the endpoint answered that it does not serve batches: send alone.
    pub fn legacy(&self) -> bool {
        self.legacy.load(Ordering::Relaxed)
    }

    /// Whether a send of `len` bytes goes in a batch (a larger one travels alone, so that it
    /// never fails the batch with a size limit of its own).
    pub fn takes(&self, len: usize) -> bool {
        !self.legacy() && len <= MAX_BATCH_BYTES
    }

    /// Forwards one encoded SendMessageRequest with the client's headers, and answers the
    /// broker's encoded SendMessageResponse, or the gRPC status the send (or its batch) failed
    /// with.
    pub async fn send(&self, md: &MetadataMap, request: Bytes) -> Result<Bytes, Status> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            send: forward::ForwardedSend {
                headers: headers(md),
                request,
            },
            timeout: md
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .and_then(crate::service::parse_grpc_timeout),
            reply,
        };
        self.tx
            .send(pending)
            .map_err(|_| Status::unavailable("the proxy is shutting down"))?;
        answer
            .await
            .map_err(|_| Status::unavailable("the proxy is shutting down"))?
    }
}

/// The request headers a broker reads from a forwarded send: the RocketMQ ones (`x-mq-*`), the
/// credentials and the caller's deadline, as the client sent them.
fn headers(md: &MetadataMap) -> Vec<forward::Header> {
    md.iter()
        .filter_map(|kv| match kv {
            KeyAndValueRef::Ascii(k, v) => {
                let name = k.as_str();
                let wanted = super::fanout::forwarded_header(name) || name == "grpc-timeout";
                match (wanted, v.to_str()) {
                    (true, Ok(value)) => Some(forward::Header {
                        name: name.to_string(),
                        value: value.to_string(),
                    }),
                    _ => None,
                }
            }
            KeyAndValueRef::Binary(..) => None,
        })
        .collect()
}

/// Takes the queued sends in batches, at most [`IN_FLIGHT`] on their way at once.
async fn gather(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    channels: Vec<Channel>,
    legacy: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut turn = 0usize;
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.send.request.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_SENDS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.send.request.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let Some(channel) = channels.get(turn % channels.len().max(1)).cloned() else {
            let st = Status::internal("no connection to the broker group");
            fail_all(batch.into_iter().map(|p| p.reply), &st);
            continue;
        };
        turn = turn.wrapping_add(1);
        metrics.forwarded(batch.len());
        tokio::spawn(deliver(channel, batch, legacy.clone(), slot).in_current_span());
    }
}

/// Sends one batch and hands each send its answer.
async fn deliver(
    channel: Channel,
    batch: Vec<Pending>,
    legacy: Arc<AtomicBool>,
    _slot: OwnedSemaphorePermit,
) {
    // A batch holds at most one send above MAX_BATCH_BYTES' worth of smaller ones.
    let limit = 2 * MAX_BATCH_BYTES + BATCH_OVERHEAD;
    let mut client = ForwardClient::new(channel)
        .max_encoding_message_size(limit)
        .max_decoding_message_size(limit);
    let timeout = batch.iter().filter_map(|p| p.timeout).max();
    let mut replies = Vec::with_capacity(batch.len());
    let mut sends = Vec::with_capacity(batch.len());
    for p in batch {
        replies.push(p.reply);
        sends.push(p.send);
    }
    tracing::debug!(sends = sends.len(), "forwarding a batch");
    let mut req = tonic::Request::new(forward::SendManyRequest { sends });
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    match client.send_many(req).await {
        Ok(resp) => {
            let answers = resp.into_inner().answers;
            if answers.len() != replies.len() {
                let st = Status::internal(format!(
                    "the broker group answered {} of {} forwarded sends",
                    answers.len(),
                    replies.len()
                ));
                fail_all(replies, &st);
                return;
            }
            for (r, a) in replies.into_iter().zip(answers) {
                let outcome = match a.grpc_code {
                    0 => Ok(a.response),
                    c => Err(Status::new(tonic::Code::from(c), a.grpc_message)),
                };
                let _ = r.send(outcome);
            }
        }
        Err(st) => {
            if st.code() == tonic::Code::Unimplemented {
                tracing::info!("the broker group does not take batched sends; sending one by one");
                legacy.store(true, Ordering::Relaxed);
            }
            fail_all(replies, &st);
        }
    }
}

/// Answers every waiting send with the status their batch failed with.
fn fail_all(replies: impl IntoIterator<Item = Reply>, st: &Status) {
    for r in replies {
        let _ = r.send(Err(st.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_a_broker_reads_is_forwarded() {
        let mut md = MetadataMap::new();
        md.insert("x-mq-client-id", "c1".parse().expect("ascii"));
        md.insert("authorization", "MQv2-HMAC-SHA1 x".parse().expect("ascii"));
        md.insert("grpc-timeout", "3000m".parse().expect("ascii"));
        md.insert("user-agent", "grpc-java".parse().expect("ascii"));
        md.insert("x-other", "1".parse().expect("ascii"));
        let mut names: Vec<String> = headers(&md).into_iter().map(|h| h.name).collect();
        names.sort();
        assert_eq!(names, ["authorization", "grpc-timeout", "x-mq-client-id"]);
    }
}
