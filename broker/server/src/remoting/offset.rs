//! Consumer offsets and queue bounds: QUERY_CONSUMER_OFFSET, UPDATE_CONSUMER_OFFSET,
//! GET_MAX_OFFSET, GET_MIN_OFFSET, GET_EARLIEST_MSG_STORETIME, SEARCH_OFFSET_BY_TIMESTAMP.
//!
//! A 4.x consumer's offsets are the engine's consumer offsets, the ones pop delivery commits
//! too (see `ferromq_engine::delivery`'s offsets module for what a 4.x and a 5.x consumer of
//! one group name do to each other). Commits are kept in memory at once and written to disk
//! within a second: 4.x clients commit every queue every 5 s, one-way, and a fsync per commit
//! would cost more than the second of progress a crash can lose (those messages are delivered
//! again: at-least-once).
//!
//! A group that never committed on a queue gets `QUERY_NOT_FOUND` and starts where its
//! `consumeFromWhere` says, except on a queue whose every message is still stored and recent
//! (within 40 % of memory of the end of the commit log, `Store::is_recent`): then it starts
//! at 0, so a consumer started after its producer still gets the first messages. That is
//! RocketMQ's rule ("the first message is still in memory") in FerroMQ's terms.

use std::sync::Arc;

use ferromq_remoting::code::{request, response};
use ferromq_remoting::custom::{
    GetMaxOffsetRequestHeader, OffsetResponseHeader, QueryConsumerOffsetRequestHeader,
    SearchOffsetRequestHeader, TopicQueueRequestHeader, UpdateConsumerOffsetRequestHeader,
};
use ferromq_remoting::Command;
use ferromq_store::Store;

use super::status::RemotingError;
use super::{record, Handled, Remoting};
use crate::validate;

/// The queue id of a request, checked against the topic.
fn queue_of(r: &Remoting, topic: &str, queue_id: i32) -> Result<u32, RemotingError> {
    let t = r.node.engine.store.topics().get(topic).ok_or_else(|| {
        RemotingError::new(
            response::TOPIC_NOT_EXIST,
            format!("topic[{topic}] not exist"),
        )
    })?;
    if queue_id < 0 || queue_id as u32 >= t.queues {
        return Err(RemotingError::system(format!(
            "queueId[{queue_id}] is illegal, topic {topic} has {} queues",
            t.queues
        )));
    }
    Ok(queue_id as u32)
}

fn offset_answer(req: &Command, offset: u64) -> Command {
    req.response_to(response::SUCCESS, None)
        .with_header(&OffsetResponseHeader {
            offset: offset as i64,
        })
}

/// Whether a queue still holds its first message and it is recent (see the module docs).
fn starts_fresh(store: &Store, topic: &str, queue: u32) -> bool {
    let (min, max) = store.queue_range(topic, queue);
    if min != 0 || max == 0 {
        return false;
    }
    match store.queue_entry(topic, queue, 0) {
        Ok(Some(e)) => store.is_recent(e.phys_offset),
        _ => false,
    }
}

pub(super) async fn query(r: &Arc<Remoting>, req: &Command) -> Handled {
    let h: QueryConsumerOffsetRequestHeader = req.header()?;
    record(Some(&h.topic), Some(&h.consumer_group));
    validate::group(&h.consumer_group)?;
    let found = r
        .blocking(move |r| {
            let q = queue_of(r, &h.topic, h.queue_id)?;
            let store = &r.node.engine.store;
            if let Some(o) = store.offsets().get(&h.consumer_group, &h.topic, q) {
                return Ok(Some(o));
            }
            if h.set_zero_if_not_found != Some(false) && starts_fresh(store, &h.topic, q) {
                return Ok(Some(0));
            }
            Ok(None)
        })
        .await?;
    match found {
        Some(o) => Ok(offset_answer(req, o)),
        None => Err(RemotingError::new(
            response::QUERY_NOT_FOUND,
            "Not found, the group has no offset for this queue",
        )),
    }
}

pub(super) async fn update(r: &Arc<Remoting>, req: &Command) -> Handled {
    let h: UpdateConsumerOffsetRequestHeader = req.header()?;
    record(Some(&h.topic), Some(&h.consumer_group));
    validate::group(&h.consumer_group)?;
    r.blocking(move |r| {
        let q = queue_of(r, &h.topic, h.queue_id)?;
        let (_, max) = r.node.engine.store.queue_range(&h.topic, q);
        if h.commit_offset < 0 || h.commit_offset as u64 > max {
            return Err(RemotingError::invalid(format!(
                "commitOffset {} is outside 0..={max}",
                h.commit_offset
            )));
        }
        r.node.engine.deliveries.commit_offset(
            &h.consumer_group,
            &h.topic,
            q,
            h.commit_offset as u64,
            false,
        )?;
        Ok(())
    })
    .await?;
    Ok(req.response_to(response::SUCCESS, None))
}

/// GET_MAX_OFFSET, GET_MIN_OFFSET and GET_EARLIEST_MSG_STORETIME. A queue that does not exist
/// reads as empty (offset 0), as RocketMQ answers.
pub(super) async fn queue_bounds(r: &Arc<Remoting>, req: &Command) -> Handled {
    let (topic, queue_id) = if req.code == request::GET_MAX_OFFSET {
        let h: GetMaxOffsetRequestHeader = req.header()?;
        (h.topic, h.queue_id)
    } else {
        let h: TopicQueueRequestHeader = req.header()?;
        (h.topic, h.queue_id)
    };
    record(Some(&topic), None);
    let code = req.code;
    let value = r
        .blocking(move |r| {
            let store = &r.node.engine.store;
            let (min, max) = store.queue_range(&topic, queue_id.max(0) as u32);
            Ok(match code {
                request::GET_MAX_OFFSET => max as i64,
                request::GET_MIN_OFFSET => min as i64,
                _ => store
                    .read(&topic, queue_id.max(0) as u32, min, 1, None)?
                    .messages
                    .first()
                    .map_or(0, |m| m.store_timestamp_ms),
            })
        })
        .await?;
    let mut out = req.response_to(response::SUCCESS, None);
    let key = if code == request::GET_EARLIEST_MSG_STORETIME {
        "timestamp"
    } else {
        "offset"
    };
    out.ext_fields.insert(key.into(), value.to_string());
    Ok(out)
}

/// SEARCH_OFFSET_BY_TIMESTAMP: the first offset stored at or after the time (`LOWER`, the
/// default), or the last stored at or before it (`UPPER`).
pub(super) async fn search(r: &Arc<Remoting>, req: &Command) -> Handled {
    let h: SearchOffsetRequestHeader = req.header()?;
    record(Some(&h.topic), None);
    let offset = r
        .blocking(move |r| {
            let q = queue_of(r, &h.topic, h.queue_id)?;
            search_offset(
                r,
                &h.topic,
                q,
                h.timestamp,
                h.boundary_type.as_deref() == Some("UPPER"),
            )
        })
        .await?;
    Ok(offset_answer(req, offset))
}

/// The offset of `topic`/`queue` for a time (see [`search`]).
pub fn search_offset(
    r: &Remoting,
    topic: &str,
    queue: u32,
    timestamp: i64,
    upper: bool,
) -> Result<u64, RemotingError> {
    let find = |ts: i64| {
        r.node
            .engine
            .offset_for_time(topic, queue, ts)
            .map_err(|e| RemotingError::system(e.to_string()))
    };
    if !upper {
        return find(timestamp);
    }
    let (min, _) = r.node.engine.store.queue_range(topic, queue);
    Ok(find(timestamp.saturating_add(1))?
        .saturating_sub(1)
        .max(min))
}
