//! Calls to one broker group, gathered: concurrent SendMessage calls the proxy forwards to the
//! same endpoint, and the settling calls (a consumer's acks, one per message with the official
//! clients; invisible time changes, dead-lettering, transaction ends, recalls), travel together
//! as one batch (the broker serves each entry as its own call: [`crate::forward`]), so the hop
//! costs one message, one write and one wake-up on each side per batch rather than per call.
//!
//! No call waits for a batch to fill. A call leaves at once while fewer than [`IN_FLIGHT`]
//! batches are on their way to the endpoint; the calls that arrive meanwhile leave together as
//! soon as one of them comes back. Under light load every batch holds one call; under heavy
//! load batches grow by themselves, so the hop's cost per call falls as the rate rises, which
//! is when the cores are short.
//!
//! Each pooled connection carries its batches on one long-lived
//! `ferromq.forward.v1.Forward/CallStream` ([`lane`]): a batch is then only DATA frames each
//! way, where a `SendMany` call per batch costs a whole HTTP/2 request (a new stream, HPACK-coded
//! headers, trailers, and a task per stream on both sides). Measured (BENCHMARKS.md,
//! 2026-12-06, one message per send): about a ninth less CPU per send in the proxy and in the
//! broker at the maximum rate, 14 to 21 % less in the proxy at 5 000 sends/s, where batches are
//! smallest; no gain shown with clients' batches of 32. With a consumer acking each message
//! alone, as the official clients do, the broker's CPU per message fell by nearly half.
//!
//! Older brokers: one that does not serve the call stream answers UNIMPLEMENTED to opening it,
//! and gets each batch's sends as their own `SendMany` call, its settling calls going back
//! unmade for their callers to make alone ([`Batcher::streamed`]); one that predates the
//! service altogether answers UNIMPLEMENTED to that: nothing was stored, and from then on the
//! proxy sends to that endpoint one request per call ([`Batcher::legacy`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferromq_proto::forward::{self, forward_client::ForwardClient};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::{KeyAndValueRef, MetadataMap};
use tonic::transport::Channel;
use tonic::Status;
use tracing::Instrument;

use super::raw::SEND_PATH;
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

/// The gatherer of one endpoint's calls; its task ends when the batcher is dropped.
pub struct Batcher {
    tx: mpsc::UnboundedSender<Pending>,
    legacy: Arc<AtomicBool>,
    streamed: Arc<AtomicBool>,
}

impl Batcher {
    /// A batcher sending over `channels` (used in turn), with a task of its own.
    pub fn start(endpoint: &str, channels: Vec<Channel>, metrics: Arc<Metrics>) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        let legacy = Arc::new(AtomicBool::new(false));
        let streamed = Arc::new(AtomicBool::new(true));
        let span = tracing::info_span!("forward", endpoint);
        let task = gather(rx, channels, streamed.clone(), legacy.clone(), metrics);
        tokio::spawn(task.instrument(span));
        Batcher {
            tx,
            legacy,
            streamed,
        }
    }

    /// True once the endpoint answered that it does not serve batches: send alone.
    pub fn legacy(&self) -> bool {
        self.legacy.load(Ordering::Relaxed)
    }

    /// True until the endpoint answers that it does not serve `CallStream`: settling calls
    /// then go alone (sends still go in batches, as `SendMany` calls).
    pub fn streamed(&self) -> bool {
        self.streamed.load(Ordering::Relaxed)
    }

    /// Whether a send of `len` bytes goes in a batch (a larger one travels alone, so that it
    /// never fails the batch with a size limit of its own).
    pub fn takes(&self, len: usize) -> bool {
        !self.legacy() && len <= MAX_BATCH_BYTES
    }

    /// Whether a settling call of `len` bytes goes in a batch: only on the call stream.
    pub fn takes_call(&self, len: usize) -> bool {
        self.streamed() && self.takes(len)
    }

    /// Forwards one encoded SendMessageRequest with the client's headers, and answers the
    /// broker's encoded SendMessageResponse, or the gRPC status the send (or its batch) failed
    /// with.
    pub async fn send(&self, md: &MetadataMap, request: Bytes) -> Result<Bytes, Status> {
        self.call(SEND_PATH, md, request).await
    }

    /// Forwards one encoded request of the method at `path` (a send, or one of the settling
    /// calls [`crate::forward::FORWARDED_CALLS`] names) with the client's headers, and answers
    /// the broker's encoded response, or the gRPC status the call (or its batch) failed with.
    /// A settling call answered UNIMPLEMENTED while [`Batcher::streamed`] is false was not
    /// made: the endpoint takes only sends in batches.
    pub async fn call(
        &self,
        path: &str,
        md: &MetadataMap,
        request: Bytes,
    ) -> Result<Bytes, Status> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            send: forward::ForwardedSend {
                headers: headers(md),
                request,
                // Empty for a send: the bytes a SendMany call (older brokers) carries unchanged.
                path: if path == SEND_PATH {
                    String::new()
                } else {
                    path.to_string()
                },
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

/// Takes the queued sends in batches, at most [`IN_FLIGHT`] on their way at once, and hands
/// each batch to the next connection's lane in turn.
async fn gather(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    channels: Vec<Channel>,
    streamed: Arc<AtomicBool>,
    legacy: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let lanes: Vec<mpsc::UnboundedSender<Outgoing>> = channels
        .into_iter()
        .map(|channel| {
            let (tx, rx) = mpsc::unbounded_channel();
            let lane = lane(channel, rx, streamed.clone(), legacy.clone());
            tokio::spawn(lane.in_current_span());
            tx
        })
        .collect();
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
        let Some(lane) = lanes.get(turn % lanes.len().max(1)) else {
            let st = Status::internal("no connection to the broker group");
            fail_all(batch.into_iter().map(|p| p.reply), &st);
            continue;
        };
        turn = turn.wrapping_add(1);
        metrics.forwarded(batch.len());
        if let Err(mpsc::error::SendError(out)) = lane.send(Outgoing { batch, slot }) {
            let st = Status::unavailable("the proxy is shutting down");
            fail_all(out.batch.into_iter().map(|p| p.reply), &st);
        }
    }
}

/// A batch on its way to a lane, holding its in-flight slot until it is answered.
struct Outgoing {
    batch: Vec<Pending>,
    slot: OwnedSemaphorePermit,
}

/// A batch sent on a lane's stream and not answered yet.
struct Waiting {
    replies: Vec<Reply>,
    deadline: Option<Instant>,
    _slot: OwnedSemaphorePermit,
}

/// A lane's open `CallStream`: where its batches go, and where their answers come from.
struct Open {
    out: mpsc::UnboundedSender<forward::SendManyRequest>,
    answers: tonic::Streaming<forward::SendManyResponse>,
}

/// The largest batch message either way: at most one send above [`MAX_BATCH_BYTES`]' worth
/// of smaller ones, plus the entries' framing.
const BATCH_LIMIT: usize = 2 * MAX_BATCH_BYTES + BATCH_OVERHEAD;

/// One pooled connection's batches, on one long-lived `CallStream` opened at the first batch
/// and again after it breaks. An endpoint that does not serve the stream gets each batch's
/// sends as their own `SendMany` call from then on, on every lane (`streamed`, shared; see
/// [`deliver`]), and its settling calls back unmade.
///
/// A batch whose stream breaks before its answer fails with the stream's status, and one
/// whose deadline (the longest its sends gave) passes fails with DEADLINE_EXCEEDED and frees
/// its slot; in both cases whether the broker stored its sends is unknown, as for a unary call
/// cut short, and a late answer is dropped.
async fn lane(
    channel: Channel,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    streamed: Arc<AtomicBool>,
    legacy: Arc<AtomicBool>,
) {
    let mut open: Option<Open> = None;
    let mut waiting: HashMap<u64, Waiting> = HashMap::new();
    let mut next = 0u64;
    // Once the batcher is gone, the batches on their way still get their answers.
    let mut closed = false;
    while !(closed && waiting.is_empty()) {
        let earliest = waiting.values().filter_map(|w| w.deadline).min();
        tokio::select! {
            out = rx.recv(), if !closed => {
                let Some(Outgoing { batch, slot }) = out else {
                    closed = true;
                    continue;
                };
                if !streamed.load(Ordering::Relaxed) {
                    tokio::spawn(deliver(channel.clone(), batch, legacy.clone(), slot).in_current_span());
                    continue;
                }
                if open.is_none() {
                    match open_stream(&channel).await {
                        Ok(o) => open = Some(o),
                        Err(st) if st.code() == tonic::Code::Unimplemented => {
                            if streamed.swap(false, Ordering::Relaxed) {
                                tracing::info!("the broker group does not take a call stream; one SendMany call per batch of sends, other calls alone");
                            }
                            tokio::spawn(deliver(channel.clone(), batch, legacy.clone(), slot).in_current_span());
                            continue;
                        }
                        Err(st) => {
                            fail_all(batch.into_iter().map(|p| p.reply), &st);
                            continue;
                        }
                    }
                }
                next = next.wrapping_add(1);
                let (replies, sends, timeout) = unzip(batch);
                let deadline = timeout.map(|t| Instant::now() + t);
                tracing::debug!(sends = sends.len(), batch = next, "forwarding a batch");
                let sent = open.as_ref().map(|o| o.out.send(forward::SendManyRequest { sends, batch: next }));
                match sent {
                    Some(Ok(())) => {
                        waiting.insert(next, Waiting { replies, deadline, _slot: slot });
                    }
                    _ => {
                        open = None;
                        let st = Status::unavailable("the call stream to the broker group closed");
                        fail_all(replies, &st);
                        fail_waiting(&mut waiting, &st);
                    }
                }
            }
            answer = next_answer(&mut open) => match answer {
                Ok(Some(resp)) => {
                    if let Some(w) = waiting.remove(&resp.batch) {
                        answer_each(w.replies, resp.answers);
                    }
                }
                Ok(None) | Err(_) => {
                    let st = match answer {
                        Err(st) => st,
                        _ => Status::unavailable("the broker group closed the call stream"),
                    };
                    tracing::debug!(error = %st, waiting = waiting.len(), "the call stream ended");
                    open = None;
                    fail_waiting(&mut waiting, &st);
                }
            },
            _ = sleep_until_some(earliest) => {
                let now = Instant::now();
                let late: Vec<u64> = waiting
                    .iter()
                    .filter(|(_, w)| w.deadline.is_some_and(|d| d <= now))
                    .map(|(b, _)| *b)
                    .collect();
                let st = Status::deadline_exceeded("the broker group did not answer the forwarded calls in time");
                for b in late {
                    if let Some(w) = waiting.remove(&b) {
                        fail_all(w.replies, &st);
                    }
                }
            }
        }
    }
}

/// Opens a `CallStream` on `channel`; fails as the call does (UNIMPLEMENTED from a broker
/// that predates it).
async fn open_stream(channel: &Channel) -> Result<Open, Status> {
    let mut client = ForwardClient::new(channel.clone())
        .max_encoding_message_size(BATCH_LIMIT)
        .max_decoding_message_size(BATCH_LIMIT);
    let (out, rx) = mpsc::unbounded_channel();
    let answers = client
        .call_stream(UnboundedReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(Open { out, answers })
}

/// The next answer on the open stream; never ready while none is open.
async fn next_answer(open: &mut Option<Open>) -> Result<Option<forward::SendManyResponse>, Status> {
    match open {
        Some(o) => o.answers.message().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`; never wakes without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// A batch's replies and sends, in the same order, and the longest timeout its sends gave.
fn unzip(batch: Vec<Pending>) -> (Vec<Reply>, Vec<forward::ForwardedSend>, Option<Duration>) {
    let timeout = batch.iter().filter_map(|p| p.timeout).max();
    let (replies, sends) = batch.into_iter().map(|p| (p.reply, p.send)).unzip();
    (replies, sends, timeout)
}

/// Fails every batch still waiting on a stream that ended.
fn fail_waiting(waiting: &mut HashMap<u64, Waiting>, st: &Status) {
    for (_, w) in waiting.drain() {
        fail_all(w.replies, st);
    }
}

/// Hands each send of a batch its answer, or fails them all when the count is wrong.
fn answer_each(replies: Vec<Reply>, answers: Vec<forward::ForwardedAnswer>) {
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

/// Sends one batch's sends as their own `SendMany` call and hands each its answer (brokers
/// that do not serve the stream); its settling calls are answered UNIMPLEMENTED unmade, for
/// their callers to make alone.
async fn deliver(
    channel: Channel,
    batch: Vec<Pending>,
    legacy: Arc<AtomicBool>,
    _slot: OwnedSemaphorePermit,
) {
    let (batch, calls): (Vec<Pending>, Vec<Pending>) =
        batch.into_iter().partition(|p| p.send.path.is_empty());
    let st = Status::unimplemented("the broker group takes only sends in a batch");
    fail_all(calls.into_iter().map(|p| p.reply), &st);
    if batch.is_empty() {
        return;
    }
    let mut client = ForwardClient::new(channel)
        .max_encoding_message_size(BATCH_LIMIT)
        .max_decoding_message_size(BATCH_LIMIT);
    let (replies, sends, timeout) = unzip(batch);
    tracing::debug!(sends = sends.len(), "forwarding a batch");
    let mut req = tonic::Request::new(forward::SendManyRequest { sends, batch: 0 });
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    match client.send_many(req).await {
        Ok(resp) => answer_each(replies, resp.into_inner().answers),
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
