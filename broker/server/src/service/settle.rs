//! Settling deliveries: AckMessage, ChangeInvisibleDuration (also the push consumer's nack)
//! and ForwardMessageToDeadLetterQueue. Each needs the receipt handle of the latest delivery.

use std::sync::Arc;
use std::time::Duration;

use ferromq_proto::v2::{self, Code};
use tracing::instrument;

use super::RequestMeta;
use crate::convert::duration_from_proto;
use crate::node::Node;
use crate::status::{self, RpcError};
use crate::validate;
use ferromq_engine::ReceiptHandle;
use ferromq_store::TryPersist;

const MAX_INVISIBLE: Duration = Duration::from_secs(12 * 3600);

fn names(
    meta: &RequestMeta,
    group: Option<&v2::Resource>,
    topic: Option<&v2::Resource>,
) -> Result<(String, String), RpcError> {
    meta.require_client_id()?;
    Ok((
        validate::group_name(group)?.to_string(),
        validate::topic_name(topic)?.to_string(),
    ))
}

#[instrument(level = "debug", skip_all, fields(group = req.group.as_ref().map(|g| g.name.as_str()).unwrap_or(""), topic = req.topic.as_ref().map(|t| t.name.as_str()).unwrap_or(""), entries = req.entries.len()))]
pub async fn ack_message(
    node: &Arc<Node>,
    meta: &RequestMeta,
    req: v2::AckMessageRequest,
) -> v2::AckMessageResponse {
    let (group, topic) = match names(meta, req.group.as_ref(), req.topic.as_ref()) {
        Ok(n) => n,
        Err(e) => {
            return v2::AckMessageResponse {
                status: Some(meta.status(&e)),
                entries: vec![],
            }
        }
    };
    if req.entries.is_empty() {
        let e = RpcError::bad_request("AckMessage carries no entry");
        return v2::AckMessageResponse {
            status: Some(meta.status(&e)),
            entries: vec![],
        };
    }
    let results = match settle_acks(node, group, topic, req.entries).await {
        Ok(r) => r,
        Err(e) => {
            return v2::AckMessageResponse {
                status: Some(meta.status(&e)),
                entries: vec![],
            }
        }
    };
    let entries: Vec<v2::AckMessageResultEntry> = results
        .into_iter()
        .map(|(e, r)| v2::AckMessageResultEntry {
            message_id: e.message_id,
            receipt_handle: e.receipt_handle,
            status: Some(r.map_or_else(|err| meta.status(&err), |_| status::ok())),
        })
        .collect();
    let summary = status::summarize(entries.iter().filter_map(|e| e.status.as_ref()));
    v2::AckMessageResponse {
        status: Some(summary),
        entries,
    }
}

/// Tries of an offset log held by another writer before a persist waits for it on a thread:
/// first by yielding the worker (a write to the page cache takes microseconds), then by
/// sleeping a millisecond at a time (a compaction, an fsync).
const PERSIST_YIELDS: u32 = 32;
const PERSIST_SLEEPS: u32 = 20;

/// Persists the offsets acks settled so far without a thread that may block: `Ok(false)` when
/// that thread is needed after all (see `OffsetStore::try_persist`). Why: the official clients
/// ack each message with a call of its own, all of a receive's at once, so acks find the log
/// held by another ack's write; each used to wait for it on a blocking-pool thread, and a
/// consumer acking each message grew the pool to about a hundred threads (and their heaps).
async fn persist_here(
    deliveries: &ferromq_engine::delivery::Deliveries,
) -> Result<bool, ferromq_engine::EngineError> {
    let ticket = deliveries.persist_ticket();
    let mut tries = 0u32;
    loop {
        match deliveries.try_persist_offsets(ticket)? {
            TryPersist::Written => return Ok(true),
            TryPersist::Block => return Ok(false),
            TryPersist::Busy => {}
        }
        tries += 1;
        if tries <= PERSIST_YIELDS {
            tokio::task::yield_now().await;
        } else if tries <= PERSIST_YIELDS + PERSIST_SLEEPS {
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            return Ok(false);
        }
    }
}

/// Each entry with its outcome, in order. Settling an ack is bookkeeping in memory and, in
/// async flush mode, a write to the page cache, so it runs on this task while nothing has to
/// wait (a queue locked by a receive reading the store, a synced offset log, a compaction of
/// it, a replicated group's journal); from the first entry that would, the rest of the work
/// goes to the blocking pool. A hand-off to that pool per ack was a fifth of the server's time
/// for a consumer reading a backlog. An offset log that another ack is writing is waited for
/// here ([`persist_here`]).
async fn settle_acks(
    node: &Arc<Node>,
    group: String,
    topic: String,
    entries: Vec<v2::AckMessageEntry>,
) -> Result<Vec<(v2::AckMessageEntry, Result<(), RpcError>)>, RpcError> {
    let deliveries = &node.engine.deliveries;
    let mut results = Vec::with_capacity(entries.len());
    let mut moved = false;
    let mut rest = entries.into_iter().peekable();
    while let Some(e) = rest.peek() {
        let r = match ReceiptHandle::decode(&e.receipt_handle) {
            Ok(h) => match deliveries.try_ack_in_memory(&group, &topic, &h) {
                Some(r) => r.map_err(RpcError::from),
                None => break,
            },
            Err(err) => Err(RpcError::from(err)),
        };
        moved |= matches!(r, Ok(true));
        if let Some(e) = rest.next() {
            results.push((e, r.map(|_| ())));
        }
    }
    let rest: Vec<_> = rest.collect();
    if rest.is_empty() {
        let written = if moved {
            persist_here(deliveries).await
        } else {
            Ok(true)
        };
        match written {
            Ok(true) => return Ok(results),
            // The write would wait: the blocking pool does it.
            Ok(false) => {}
            Err(err) => {
                fail_acked(&mut results, RpcError::from(err));
                return Ok(results);
            }
        }
    }
    node.blocking(move |b| {
        let deliveries = &b.engine.deliveries;
        for e in rest {
            let r = ReceiptHandle::decode(&e.receipt_handle)
                .and_then(|h| deliveries.ack_in_memory(&group, &topic, &h))
                .map_err(RpcError::from);
            moved |= matches!(r, Ok(true));
            results.push((e, r.map(|_| ())));
        }
        // One offset write for the whole batch; if it fails, no entry is reported acked.
        if moved {
            if let Err(err) = deliveries.persist_offsets() {
                fail_acked(&mut results, RpcError::from(err));
            }
        }
        Ok(results)
    })
    .await
}

/// Reports every entry acked so far as failed with `err` (their offsets were not written).
fn fail_acked(results: &mut [(v2::AckMessageEntry, Result<(), RpcError>)], err: RpcError) {
    for (_, r) in results.iter_mut().filter(|(_, r)| r.is_ok()) {
        *r = Err(err.clone());
    }
}

#[instrument(skip_all, fields(group = req.group.as_ref().map(|g| g.name.as_str()).unwrap_or(""), topic = req.topic.as_ref().map(|t| t.name.as_str()).unwrap_or(""), message_id = %req.message_id))]
pub async fn change_invisible_duration(
    node: &Arc<Node>,
    meta: &RequestMeta,
    req: v2::ChangeInvisibleDurationRequest,
) -> v2::ChangeInvisibleDurationResponse {
    let result = async {
        let (group, topic) = names(meta, req.group.as_ref(), req.topic.as_ref())?;
        let d = req.invisible_duration.as_ref().ok_or_else(|| {
            RpcError::new(Code::IllegalInvisibleTime, "invisible_duration is required")
        })?;
        let d = duration_from_proto(d).ok_or_else(|| {
            RpcError::new(
                Code::IllegalInvisibleTime,
                "invisible_duration is negative or malformed",
            )
        })?;
        if d > MAX_INVISIBLE {
            return Err(RpcError::new(
                Code::IllegalInvisibleTime,
                format!("invisible_duration {d:?} is over {MAX_INVISIBLE:?}"),
            ));
        }
        let h = ReceiptHandle::decode(&req.receipt_handle)?;
        node.blocking(move |b| {
            Ok(b.engine
                .deliveries
                .change_invisible(&group, &topic, &h, d)?)
        })
        .await
    }
    .await;
    match result {
        Ok(h) => v2::ChangeInvisibleDurationResponse {
            status: Some(status::ok()),
            receipt_handle: h.encode(),
        },
        Err(e) => v2::ChangeInvisibleDurationResponse {
            status: Some(meta.status(&e)),
            receipt_handle: String::new(),
        },
    }
}

#[instrument(skip_all, fields(group = req.group.as_ref().map(|g| g.name.as_str()).unwrap_or(""), topic = req.topic.as_ref().map(|t| t.name.as_str()).unwrap_or(""), message_id = %req.message_id))]
pub async fn forward_to_dlq(
    node: &Arc<Node>,
    meta: &RequestMeta,
    req: v2::ForwardMessageToDeadLetterQueueRequest,
) -> v2::ForwardMessageToDeadLetterQueueResponse {
    let result = async {
        let (group, topic) = names(meta, req.group.as_ref(), req.topic.as_ref())?;
        let h = ReceiptHandle::decode(&req.receipt_handle)?;
        node.blocking(move |b| Ok(b.engine.deliveries.forward_to_dlq(&group, &topic, &h)?))
            .await
    }
    .await;
    v2::ForwardMessageToDeadLetterQueueResponse {
        status: Some(result.map_or_else(|e| meta.status(&e), |_| status::ok())),
    }
}
