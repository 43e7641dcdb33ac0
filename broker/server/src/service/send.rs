//! SendMessage: validate each message, check it against its topic, append it to the store.
//!
//! Each message gets its own result entry, in order (clients index the first one). A refused
//! message is not stored; the others of the batch still are. DELAY messages due later are
//! parked with the timers (the entry carries a recall handle), TRANSACTION messages are parked
//! as half messages (the entry carries the transaction id), PRIORITY messages keep their
//! priority for the delivery engine.

use std::sync::Arc;

use ferromq_engine::time::WallTime;
use ferromq_engine::{topics, Pending, Publication, Published, Quick};
use ferromq_proto::v2::{self, Code};
use ferromq_store::MessageType;
use tracing::{instrument, warn};

use super::RequestMeta;
use crate::convert::{duration_from_proto, ms_from_timestamp};
use crate::node::Node;
use crate::status::{self, RpcError};
use crate::validate;

/// Longest a send waits for its messages to become readable by consumers.
const DISPATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The engine's name for a message type, if FerroMQ has it.
fn engine_type(t: v2::MessageType) -> Option<MessageType> {
    match t {
        v2::MessageType::Normal => Some(MessageType::Normal),
        v2::MessageType::Fifo => Some(MessageType::Fifo),
        v2::MessageType::Delay => Some(MessageType::Delay),
        v2::MessageType::Transaction => Some(MessageType::Transaction),
        v2::MessageType::Priority => Some(MessageType::Priority),
        _ => None,
    }
}

/// The queue a producer chose: 0 (what proto3 sends for "not set", and what the official Python
/// client always sends) lets the engine pick (see `ferromq_engine::placement`).
fn chosen_queue(queue_id: i32) -> Result<Option<u32>, RpcError> {
    match queue_id {
        0 => Ok(None),
        q => u32::try_from(q)
            .map(Some)
            .map_err(|_| RpcError::bad_request(format!("queue_id {q} is negative"))),
    }
}

/// Validates one wire message and turns it into what the engine publishes.
fn publication(
    node: &Node,
    m: &v2::Message,
    producer: Option<&str>,
) -> Result<Publication, RpcError> {
    let topic = validate::topic_name(m.topic.as_ref())?;
    topics::check_client_topic(topic)?;
    let checked = validate::message(m, node.settings.max_body_size)?;
    let sp = m
        .system_properties
        .as_ref()
        .ok_or_else(|| RpcError::bad_request("message has no system_properties"))?;
    let message_type = engine_type(checked.message_type).ok_or_else(|| {
        RpcError::new(
            Code::NotImplemented,
            format!(
                "{:?} messages are not implemented by this FerroMQ version",
                checked.message_type
            ),
        )
    })?;
    Ok(Publication {
        topic: topic.to_string(),
        queue_id: chosen_queue(sp.queue_id)?,
        message_type,
        message_id: checked.message_id.to_string(),
        tag: checked.tag.map(str::to_string),
        keys: checked.keys.iter().map(|k| k.to_string()).collect(),
        message_group: checked.message_group.map(str::to_string),
        delivery_time: sp.delivery_timestamp.as_ref().map(|t| WallTime {
            seconds: t.seconds,
            nanos: t.nanos,
        }),
        priority: sp.priority,
        transaction_recovery: sp
            .orphaned_transaction_recovery_duration
            .as_ref()
            .and_then(duration_from_proto),
        producer: producer.map(str::to_string),
        born_timestamp_ms: sp.born_timestamp.as_ref().map_or(0, ms_from_timestamp),
        born_host: sp.born_host.clone(),
        trace_context: sp.trace_context.clone(),
        user_properties: m.user_properties.clone().into_iter().collect(),
        body: m.body.clone(),
    })
}

/// Validates, publishes and counts one message (blocking; off the async workers). An appended
/// message counts once [`acknowledge`] says so.
fn send_one(node: &Node, m: &v2::Message, producer: Option<&str>) -> Result<Published, RpcError> {
    let p = publication(node, m, producer)?;
    publish_counted(node, Slow::Publish(p))
}

/// A message the async worker could not finish without blocking.
enum Slow {
    /// Checked; only its append is left.
    Append(Pending, Counted),
    /// Not checked yet (it may auto-create its topic or be parked).
    Publish(Publication),
}

/// What the metrics count for a message once it is stored.
struct Counted {
    topic: String,
    kind: &'static str,
    size: usize,
}

impl Counted {
    fn of(p: &Publication) -> Counted {
        Counted {
            topic: p.topic.clone(),
            kind: crate::metrics::message_type_label(p.message_type),
            size: p.body.len(),
        }
    }
}

/// Finishes a message on a thread that may block, and counts it. The thread waits for what
/// must be allocated, never for the flush or the group (see [`acknowledge`]).
fn publish_counted(node: &Node, work: Slow) -> Result<Published, RpcError> {
    let (published, counted) = match work {
        Slow::Append(pending, counted) => (node.engine.publish_pending(pending)?, counted),
        Slow::Publish(p) => {
            let counted = Counted::of(&p);
            (node.engine.publish_deferred(p)?, counted)
        }
    };
    node.metrics
        .message_in(&counted.topic, counted.kind, counted.size);
    Ok(published)
}

/// What the async worker did with a message.
enum Step {
    Done(Result<Published, RpcError>),
    /// Boxed: rare, and much larger than an outcome.
    Slow(Box<Slow>),
}

/// Validates a message and stores it on this async worker when that is a copy into memory
/// (see `Engine::publish_quick`); otherwise says what is left for a blocking thread.
fn send_quick(node: &Node, m: &v2::Message, producer: Option<&str>) -> Step {
    let p = match publication(node, m, producer) {
        Ok(p) => p,
        Err(e) => return Step::Done(Err(e)),
    };
    let counted = Counted::of(&p);
    match node.engine.publish_quick(p) {
        Ok(Quick::Published(published)) => {
            node.metrics
                .message_in(&counted.topic, counted.kind, counted.size);
            Step::Done(Ok(published))
        }
        Ok(Quick::Blocked(pending)) => Step::Slow(Box::new(Slow::Append(pending, counted))),
        Ok(Quick::Later(p)) => Step::Slow(Box::new(Slow::Publish(p))),
        Err(e) => Step::Done(Err(e.into())),
    }
}

/// Stores a request of several messages on this async worker under one acquisition of the
/// append lock, when each is valid and an ordinary append with nothing to allocate (see
/// `Engine::publish_quick_batch`). `None` means nothing was stored: the caller takes the
/// message-by-message path, which gives each message its own outcome.
fn store_batch_quick(
    node: &Node,
    messages: &[v2::Message],
    producer: Option<&str>,
) -> Option<Vec<Result<Published, RpcError>>> {
    let mut ps = Vec::with_capacity(messages.len());
    for m in messages {
        ps.push(publication(node, m, producer).ok()?);
    }
    // Counted per topic and type, one metrics update each (a request has few of them).
    let mut counted: Vec<(Counted, u64)> = Vec::with_capacity(1);
    for p in &ps {
        let kind = crate::metrics::message_type_label(p.message_type);
        match counted
            .iter_mut()
            .find(|(c, _)| c.kind == kind && c.topic == p.topic)
        {
            Some((c, n)) => {
                c.size += p.body.len();
                *n += 1;
            }
            None => counted.push((Counted::of(p), 1)),
        }
    }
    let published = node.engine.publish_quick_batch(ps)?;
    for (c, n) in &counted {
        node.metrics
            .messages_in_n(&c.topic, c.kind, *n, c.size as u64);
    }
    Some(published.into_iter().map(Ok).collect())
}

/// Each message's id and outcome, in order. Messages are stored on this task while that needs
/// no disk I/O (the common case: no thread hand-off per send); from the first one that does,
/// the rest of the request goes to the blocking pool, so the request's order is kept.
async fn store_all(
    node: &Arc<Node>,
    messages: Vec<v2::Message>,
    producer: Option<String>,
) -> Result<Vec<(String, Result<Published, RpcError>)>, RpcError> {
    let id_of = |m: &v2::Message| {
        m.system_properties
            .as_ref()
            .map(|s| s.message_id.clone())
            .unwrap_or_default()
    };
    if messages.len() > 1 {
        if let Some(results) = store_batch_quick(node, &messages, producer.as_deref()) {
            let mut results: Vec<_> = messages.iter().map(id_of).zip(results).collect();
            acknowledge(node, &mut results).await;
            return Ok(results);
        }
    }
    let mut results = Vec::with_capacity(messages.len());
    let mut rest = messages.into_iter();
    let mut slow = None;
    for m in rest.by_ref() {
        match send_quick(node, &m, producer.as_deref()) {
            Step::Done(r) => results.push((id_of(&m), r)),
            Step::Slow(work) => {
                slow = Some((id_of(&m), work));
                break;
            }
        }
    }
    if let Some(first) = slow {
        let rest: Vec<v2::Message> = rest.collect();
        let later = node
            .blocking(move |b| {
                let mut out = Vec::with_capacity(rest.len() + 1);
                let (id, work) = first;
                out.push((id, publish_counted(b, *work)));
                for m in &rest {
                    out.push((id_of(m), send_one(b, m, producer.as_deref())));
                }
                Ok(out)
            })
            .await?;
        results.extend(later);
    }
    acknowledge(node, &mut results).await;
    Ok(results)
}

/// Waits until the appended messages count as stored, without holding a thread: flushed in
/// sync mode (the flusher wakes every send a flush covers at once) and, on a replicated
/// group's leader, confirmed by the group in the term each was admitted in. One wait per term
/// for the last end of the request, not one per message. Messages it could not settle get
/// the error instead of "ok" (they may still be delivered).
async fn acknowledge(node: &Node, results: &mut [(String, Result<Published, RpcError>)]) {
    let mut waits: Vec<(Option<u64>, u64)> = Vec::with_capacity(1);
    for p in results.iter().filter_map(|(_, r)| r.as_ref().ok()) {
        let Some(end) = p.visible_end else { continue };
        match waits.iter_mut().find(|(t, _)| *t == p.term) {
            Some(w) => w.1 = w.1.max(end),
            None => waits.push((p.term, end)),
        }
    }
    for (term, end) in waits {
        if let Err(e) = node.engine.store.acknowledged(term, end).await {
            let e = RpcError::from(e);
            for (_, r) in results.iter_mut() {
                if r.as_ref().is_ok_and(|p| p.term == term) {
                    *r = Err(e.clone());
                }
            }
        }
    }
}

#[instrument(level = "debug", skip_all, fields(client = meta.client_id.as_deref().unwrap_or(""), messages = req.messages.len()))]
pub async fn send_message(
    node: &Arc<Node>,
    meta: &RequestMeta,
    req: v2::SendMessageRequest,
) -> v2::SendMessageResponse {
    if let Err(e) = meta.require_client_id() {
        return v2::SendMessageResponse {
            status: Some(meta.status(&e)),
            entries: vec![],
        };
    }
    if req.messages.is_empty() {
        let e = RpcError::bad_request("SendMessage carries no message");
        return v2::SendMessageResponse {
            status: Some(meta.status(&e)),
            entries: vec![],
        };
    }
    let results = match store_all(node, req.messages, meta.client_id.clone()).await {
        Ok(r) => r,
        Err(e) => {
            return v2::SendMessageResponse {
                status: Some(meta.status(&e)),
                entries: vec![],
            }
        }
    };
    // Read-your-writes: once a send is answered, a receive finds the message. The dispatcher
    // normally catches up within a millisecond; never wait long for it.
    if let Some(end) = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .filter_map(|s| s.visible_end)
        .max()
    {
        node.engine.dispatched.wait(end, DISPATCH_WAIT).await;
    }
    let entries: Vec<v2::SendResultEntry> = results
        .into_iter()
        .map(|(message_id, r)| match r {
            Ok(sent) => v2::SendResultEntry {
                status: Some(status::ok()),
                message_id,
                transaction_id: sent.transaction_id.unwrap_or_default(),
                offset: sent.queue_offset.map_or(0, |o| o as i64),
                recall_handle: sent.recall_handle.unwrap_or_default(),
            },
            Err(e) => {
                if e.code == Code::InternalServerError {
                    warn!(
                        message_id,
                        client = meta.client_id.as_deref().unwrap_or(""),
                        error = %e,
                        "append failed"
                    );
                }
                v2::SendResultEntry {
                    status: Some(meta.status(&e)),
                    message_id,
                    ..Default::default()
                }
            }
        })
        .collect();
    let summary = status::summarize(entries.iter().filter_map(|e| e.status.as_ref()));
    v2::SendMessageResponse {
        status: Some(summary),
        entries,
    }
}
