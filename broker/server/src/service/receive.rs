//! ReceiveMessage: pop-style delivery with long polling.
//!
//! The answer is a stream that always ends: a status item (OK or MESSAGE_NOT_FOUND or the
//! error), the messages, then the server's clock as `delivery_timestamp`. When nothing is
//! deliverable the call waits (long polling) until a message is dispatched to the topic, an
//! invisible message expires, or the polling time ends: the client's `long_polling_timeout`
//! (default 20 s, at most 30 s), and always before the client's own gRPC deadline with a
//! margin, because the Rust client sets its deadline to exactly the polling time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_proto::v2::{self, Code};
use ferromq_store::{MessageType, TagFilter as StoreTagFilter};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug_span, Instrument};

use super::{BoxStream, RequestMeta};
use crate::convert::{duration_from_proto, now_timestamp, to_proto, DeliveryInfo};
use crate::node::Node;
use crate::status::{self, RpcError};
use crate::validate;
use ferromq_engine::delivery::{Delivery, ReceiveOutcome, ReceiveSpec};

/// Invisibility of push-consumer deliveries (they send `auto_renew` and no duration).
const AUTO_RENEW_INVISIBLE: Duration = Duration::from_secs(60);
const DEFAULT_INVISIBLE: Duration = Duration::from_secs(30);
const MIN_INVISIBLE: Duration = Duration::from_secs(1);
const MAX_INVISIBLE: Duration = Duration::from_secs(12 * 3600);
const DEFAULT_POLL: Duration = Duration::from_secs(20);
const MAX_POLL: Duration = Duration::from_secs(30);
const MAX_BATCH: usize = 64;

/// Rotates the first queue served to requests that do not name one.
static NEXT_QUEUE: AtomicU32 = AtomicU32::new(0);

/// A validated receive request.
struct Plan {
    group: String,
    topic: String,
    namespace: String,
    queues: Vec<u32>,
    batch: usize,
    invisible: Duration,
    filter: StoreTagFilter,
    fifo: bool,
    priority: bool,
    max_attempts: u32,
    poll: Duration,
    /// Client id of a push consumer that asked for automatic renewal.
    renew_for: Option<String>,
    /// Client id + attempt id, so a retried receive gets the same messages.
    attempt: Option<String>,
}

/// Time left for polling: the requested time, capped, and ended before the caller's deadline
/// with a margin of 10 % (at least 500 ms) for the answer to travel.
fn poll_budget(requested: Option<Duration>, meta: &RequestMeta) -> Duration {
    let mut poll = requested.unwrap_or(DEFAULT_POLL).min(MAX_POLL);
    if let Some(timeout) = meta.timeout {
        let margin = (timeout / 10).max(Duration::from_millis(500));
        poll = poll.min(timeout.saturating_sub(margin));
        if let Some(received) = meta.received {
            poll = poll.min(
                timeout
                    .saturating_sub(margin)
                    .saturating_sub(received.elapsed()),
            );
        }
    }
    poll
}

fn plan(
    node: &Node,
    meta: &RequestMeta,
    req: &v2::ReceiveMessageRequest,
) -> Result<Plan, RpcError> {
    meta.require_client_id()?;
    let group = validate::group_name(req.group.as_ref())?.to_string();
    let mq = req
        .message_queue
        .as_ref()
        .ok_or_else(|| RpcError::bad_request("message_queue is required"))?;
    let topic_name = validate::topic_name(mq.topic.as_ref())?.to_string();
    let filter = crate::convert::read_filter(req.filter_expression.as_ref())?;
    if req.batch_size <= 0 {
        return Err(RpcError::bad_request(format!(
            "batch_size {} must be positive",
            req.batch_size
        )));
    }
    let invisible = match &req.invisible_duration {
        Some(d) => {
            let d = duration_from_proto(d).ok_or_else(|| {
                RpcError::new(
                    Code::IllegalInvisibleTime,
                    "invisible_duration is negative or malformed",
                )
            })?;
            if !(MIN_INVISIBLE..=MAX_INVISIBLE).contains(&d) {
                return Err(RpcError::new(
                    Code::IllegalInvisibleTime,
                    format!(
                        "invisible_duration {d:?} is outside {MIN_INVISIBLE:?}..={MAX_INVISIBLE:?}"
                    ),
                ));
            }
            d
        }
        None if req.auto_renew => AUTO_RENEW_INVISIBLE,
        None => DEFAULT_INVISIBLE,
    };
    let requested_poll = match &req.long_polling_timeout {
        Some(d) => Some(duration_from_proto(d).ok_or_else(|| {
            RpcError::new(
                Code::IllegalPollingTime,
                "long_polling_timeout is negative or malformed",
            )
        })?),
        None => None,
    };
    let topic = node.engine.topic(&topic_name)?;
    if !topic.permission.readable() {
        return Err(RpcError::new(
            Code::Forbidden,
            format!("topic {topic_name} is not readable"),
        ));
    }
    let n = topic.queues;
    let start = if mq.id >= 0 && (mq.id as u32) < n {
        mq.id as u32
    } else {
        NEXT_QUEUE.fetch_add(1, Ordering::Relaxed) % n
    };
    let queues = (0..n).map(|i| (start + i) % n).collect();
    Ok(Plan {
        fifo: node
            .engine
            .groups
            .fifo(&group, topic.message_type == MessageType::Fifo),
        priority: topic.message_type == MessageType::Priority,
        max_attempts: node.engine.groups.max_attempts(&group),
        namespace: mq
            .topic
            .as_ref()
            .map(|t| t.resource_namespace.clone())
            .unwrap_or_default(),
        group,
        topic: topic_name,
        queues,
        batch: (req.batch_size as usize).min(MAX_BATCH),
        invisible,
        filter,
        poll: poll_budget(requested_poll, meta),
        renew_for: if req.auto_renew {
            meta.client_id.clone()
        } else {
            None
        },
        attempt: req
            .attempt_id
            .as_ref()
            .filter(|a| !a.is_empty())
            .map(|a| format!("{}/{a}", meta.client_id.as_deref().unwrap_or(""))),
    })
}

/// One look at the plan's queues for deliverable messages.
fn receive_once(b: &Node, p: &Plan) -> Result<ReceiveOutcome, RpcError> {
    Ok(b.engine.deliveries.receive(&ReceiveSpec {
        group: &p.group,
        topic: &p.topic,
        queues: p.queues.clone(),
        batch: p.batch,
        invisible: p.invisible,
        filter: &p.filter,
        fifo: p.fifo,
        priority: p.priority,
        max_attempts: p.max_attempts,
        renew_for: p.renew_for.as_deref(),
        attempt: p.attempt.clone(),
    })?)
}

/// What a receive's own task could do before the first hand-off.
enum FirstLook {
    /// Planned and looked, or refused.
    Done(Result<(Arc<Plan>, ReceiveOutcome), RpcError>),
    /// Planned; the look may wait for the disk. Boxed: clippy's `large_enum_variant` counts a plan at
    /// 256 bytes or more and the next variant at 48 or more.
    Planned(Box<Plan>),
    /// Nothing: planning may write (a topic to auto-create).
    Nothing,
}

/// The plan and the first look, taken on this task when neither can wait: the topic exists
/// (no auto-creation to write) and every queue's next records are recent, so in memory (see
/// `Deliveries::reads_recent`). Otherwise the look goes to the blocking pool, whose hand-off
/// per receive was a tenth of the server's time for a consumer reading a recent backlog. As
/// with the inline looks of [`poll`], the one thing such a look may wait for is moving a
/// message that used up its attempts to the dead-letter topic (an append).
fn first_look_here(
    node: &Arc<Node>,
    meta: &RequestMeta,
    req: &v2::ReceiveMessageRequest,
) -> FirstLook {
    let exists = req
        .message_queue
        .as_ref()
        .and_then(|q| q.topic.as_ref())
        .is_some_and(|t| node.engine.store.topics().get(&t.name).is_some());
    if !exists {
        return FirstLook::Nothing;
    }
    let p = match plan(node, meta, req) {
        Ok(p) => p,
        Err(e) => return FirstLook::Done(Err(e)),
    };
    if !node
        .engine
        .deliveries
        .reads_recent(&p.group, &p.topic, &p.queues)
    {
        return FirstLook::Planned(Box::new(p));
    }
    FirstLook::Done(receive_once(node, &p).map(|first| (Arc::new(p), first)))
}

/// Long-polls until something is delivered or the budget ends. Stops early when the caller
/// went away (`out` closed), so nothing is handed out to nobody. The first look was taken with
/// the plan (see `first_look_here`); it is not trusted to be empty for good, because nothing
/// listened for new messages yet: the loop looks again once it does.
///
/// Two things keep a consumer reading along a busy producer cheap:
/// - **Gather.** A wake-up that comes within the node's `receive_gather` of the last empty
///   look means messages are arriving fast: the call lets that much time pass since the empty
///   look before it looks again, so it answers with what arrived meanwhile instead of one or
///   two messages (each answer costs the consumer an ack call too). A wake-up after a longer
///   wait (a quiet topic) is answered at once, so a lone message is never held back.
/// - **Inline look.** A look after a dispatch wake-up reads records that were just written and
///   are in the page cache, so it runs on this task instead of a trip to the blocking pool.
///   Looks after a timer (expired invisible messages, which may be old and cold) still go to
///   the blocking pool. The one thing such a look may do that waits is a dead-letter move (an
///   expired message out of attempts, in a queue scanned on the way): that append then holds
///   this worker for as long as an append takes.
async fn poll<T>(
    node: &Arc<Node>,
    plan: Arc<Plan>,
    first: ReceiveOutcome,
    out: &mpsc::Sender<T>,
) -> Result<Vec<Delivery>, RpcError> {
    if !first.deliveries.is_empty() {
        return Ok(first.deliveries);
    }
    let until = Instant::now() + plan.poll;
    let notify = node.engine.wakeups.for_topic(&plan.topic);
    let mut shutdown = node.shutdown.clone();
    let gather = node.settings.receive_gather;
    let mut dispatched = false;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if out.is_closed() {
            return Ok(Vec::new());
        }
        let outcome = if dispatched {
            receive_once(node, &plan)?
        } else {
            let p = plan.clone();
            node.blocking(move |b| receive_once(b, &p)).await?
        };
        let now = Instant::now();
        if !outcome.deliveries.is_empty() || now >= until || *shutdown.borrow() {
            return Ok(outcome.deliveries);
        }
        // Wake for a new message, for the next expiry, and at least once a second (expiries
        // of other consumers' messages in queues we did not scan first).
        let mut wake = until.min(now + Duration::from_secs(1));
        if let Some(e) = outcome.next_expiry {
            wake = wake.min(e.max(now + Duration::from_millis(5)));
        }
        dispatched = tokio::select! {
            _ = &mut notified => true,
            _ = tokio::time::sleep_until(wake.into()) => false,
            _ = shutdown.changed() => false,
            _ = out.closed() => return Ok(Vec::new()),
        };
        let gathered = (now + gather).min(until);
        if dispatched && Instant::now() < gathered {
            tokio::select! {
                _ = tokio::time::sleep_until(gathered.into()) => {}
                _ = shutdown.changed() => {}
                _ = out.closed() => return Ok(Vec::new()),
            }
        }
    }
}

pub fn receive_message(
    node: Arc<Node>,
    meta: RequestMeta,
    req: v2::ReceiveMessageRequest,
) -> BoxStream<v2::ReceiveMessageResponse> {
    // The whole answer goes through the channel as one item: the stream then yields every
    // message at once, so tonic encodes them into a few large writes instead of waking the
    // connection once per message.
    let (tx, rx) = mpsc::channel::<Vec<Result<v2::ReceiveMessageResponse, tonic::Status>>>(1);
    let span = debug_span!(
        "ReceiveMessage",
        client = meta.client_id.as_deref().unwrap_or(""),
        group = req.group.as_ref().map(|g| g.name.as_str()).unwrap_or(""),
        topic = req
            .message_queue
            .as_ref()
            .and_then(|q| q.topic.as_ref())
            .map(|t| t.name.as_str())
            .unwrap_or("")
    );
    tokio::spawn(
        async move {
            let item = |c| Ok(v2::ReceiveMessageResponse { content: Some(c) });
            let result = async {
                let (p, first) = match first_look_here(&node, &meta, &req) {
                    FirstLook::Done(looked) => looked?,
                    FirstLook::Planned(p) => {
                        let p: Arc<Plan> = Arc::from(p);
                        let q = p.clone();
                        let first = node.blocking(move |b| receive_once(b, &q)).await?;
                        (p, first)
                    }
                    FirstLook::Nothing => {
                        let (m, r) = (meta.clone(), req.clone());
                        node.blocking(move |b| {
                            let p = plan(b, &m, &r)?;
                            let first = receive_once(b, &p)?;
                            Ok((Arc::new(p), first))
                        })
                        .await?
                    }
                };
                let deliveries = poll(&node, p.clone(), first, &tx).await?;
                Ok::<_, RpcError>((p, deliveries))
            }
            .await;
            use v2::receive_message_response::Content;
            let mut answer = Vec::new();
            match result {
                Ok((p, deliveries)) if !deliveries.is_empty() => {
                    answer.reserve(deliveries.len() + 2);
                    answer.push(item(Content::Status(status::ok())));
                    let bytes: usize = deliveries.iter().map(|d| d.message.body.len()).sum();
                    node.metrics.messages_out_n(
                        &p.topic,
                        &p.group,
                        deliveries.len() as u64,
                        bytes as u64,
                    );
                    for d in deliveries {
                        let info = DeliveryInfo {
                            receipt_handle: d.handle.encode(),
                            attempt: d.attempt,
                            invisible: d.invisible,
                        };
                        let m = to_proto(
                            d.message,
                            &p.namespace,
                            &node.settings.advertise_addr,
                            Some(&info),
                        );
                        answer.push(item(Content::Message(m)));
                    }
                }
                Ok(_) => {
                    answer.push(item(Content::Status(status::status(
                        Code::MessageNotFound,
                        "no new message",
                    ))));
                }
                Err(e) => {
                    answer.push(item(Content::Status(meta.status(&e))));
                }
            }
            answer.push(item(Content::DeliveryTimestamp(now_timestamp())));
            // A vanished caller leaves the messages invisible; they are redelivered after
            // their invisible time, as for any consumer that dies.
            let _ = tx.send(answer).await;
        }
        .instrument(span),
    );
    Box::pin(ReceiverStream::new(rx).flat_map(futures_util::stream::iter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_ends_before_the_callers_deadline() {
        let meta = RequestMeta {
            timeout: Some(Duration::from_secs(40)),
            ..Default::default()
        };
        assert_eq!(
            poll_budget(Some(Duration::from_secs(40)), &meta),
            Duration::from_secs(30)
        );
        let meta = RequestMeta {
            timeout: Some(Duration::from_secs(8)),
            ..Default::default()
        };
        assert_eq!(
            poll_budget(Some(Duration::from_secs(5)), &meta),
            Duration::from_secs(5)
        );
        let meta = RequestMeta {
            timeout: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        assert_eq!(
            poll_budget(Some(Duration::from_secs(5)), &meta),
            Duration::from_millis(4500)
        );
        assert_eq!(poll_budget(None, &RequestMeta::default()), DEFAULT_POLL);
    }
}
