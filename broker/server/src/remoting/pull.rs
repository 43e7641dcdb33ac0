//! PULL_MESSAGE: offset-based reads of a consume queue through the group's filter, with long
//! polling. The client owns its position; the answer is the next messages in the stored-message
//! encoding 4.x clients decode and the offset to pull from next.
//!
//! ## Answers
//! - `SUCCESS` with messages (at most `maxMsgNums`, at most 256, and about 4 MiB of bodies,
//!   always at least one message).
//! - `PULL_RETRY_IMMEDIATELY` when the filter skipped every message read and more are stored:
//!   the client pulls again at once from `nextBeginOffset`.
//! - `PULL_NOT_FOUND` when nothing matching is stored beyond the offset, after holding the
//!   request (long polling) while the client allows it (`sysFlag` SUSPEND, for
//!   `suspendTimeoutMillis` minus a margin, at most 30 s). A message dispatched to the topic
//!   wakes the request at once, as the RocketMQ 5 long poll does; so do shutdown and the
//!   client going away.
//! - `PULL_OFFSET_MOVED` for an offset beyond the end of the queue (the client resets to
//!   `nextBeginOffset`). An offset below the oldest stored message reads from the oldest one.
//!
//! The filter is the subscription in the request when it carries one (`sysFlag` SUBSCRIPTION),
//! else the one the group's consumers announced in their heartbeat: `SUBSCRIPTION_NOT_EXIST`
//! when there is none, `SUBSCRIPTION_NOT_LATEST` when the request's version is newer than the
//! heartbeat's (the client retries). Filtering is the broker's, so non-matching messages never
//! leave it. A pull also commits `commitOffset` for the group when it says so (`sysFlag`
//! COMMIT_OFFSET), which is how 4.x push consumers usually commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_remoting::code::response;
use ferromq_remoting::custom::{
    pull_sys_flag, PullMessageRequestHeader, PullMessageResponseHeader,
};
use ferromq_remoting::Command;
use ferromq_store::{ReadResult, TagFilter};

use super::client::compile;
use super::connection::Peer;
use super::message::{Offsets, PullWriter};
use super::status::RemotingError;
use super::{record, Handled, Remoting};
use crate::validate;

/// Most messages one pull answers.
pub const MAX_BATCH: usize = 256;
/// About the most body bytes one pull answers (a larger single message still goes alone).
pub const MAX_BYTES: usize = 4 << 20;
/// Longest a pull is held.
pub const MAX_SUSPEND: Duration = Duration::from_secs(30);
/// A held pull is answered this long before the client's suspend time runs out.
const SUSPEND_MARGIN: Duration = Duration::from_millis(200);

/// Messages read for an answer, already in the stored-message encoding.
struct Answer {
    body: Vec<u8>,
    count: u64,
    /// Body bytes.
    bytes: u64,
}

/// What one read of the queue found.
enum Found {
    Messages(Answer, ReadResult),
    /// Everything read was filtered out and more is stored: read again from here.
    Skipped(u64, ReadResult),
    /// Nothing matching up to the end of the queue (read on from here).
    Nothing(u64, ReadResult),
    /// The offset is beyond the end of the queue.
    Beyond(ReadResult),
}

/// Room for a record's fixed fields, topic and properties in the answer, beside its body.
const ROOM_PER_MESSAGE: usize = 512;

/// Keeps an answer to about [`MAX_BYTES`] of bodies, never empty.
#[derive(Default)]
struct Budget {
    count: u64,
    bytes: u64,
}

impl Budget {
    /// Whether a message with a body of `len` bytes still goes in this answer.
    fn admit(&mut self, len: usize) -> bool {
        if self.count > 0 && self.bytes + len as u64 > MAX_BYTES as u64 {
            return false;
        }
        self.count += 1;
        self.bytes += len as u64;
        true
    }
}

/// Reads up to `batch` messages of the queue from `from` and writes them straight from the
/// log into the answer's encoding (see [`PullWriter`]).
#[allow(clippy::too_many_arguments)]
fn read(
    r: &Remoting,
    topic: &str,
    queue: u32,
    from: u64,
    batch: usize,
    filter: &TagFilter,
    store_host: std::net::SocketAddr,
    offsets: Offsets,
) -> Result<Found, RemotingError> {
    let store = &r.node.engine.store;
    let (min, max) = store.queue_range(topic, queue);
    if from > max {
        return Ok(Found::Beyond(ReadResult {
            next_offset: max,
            min_offset: min,
            max_offset: max,
            ..Default::default()
        }));
    }
    let filter = (!filter.is_all()).then_some(filter);
    let mut budget = Budget::default();
    let mut w = PullWriter::new(store_host, offsets, 64 << 10);
    let rr = store.read_each(topic, queue, from, batch, filter, |v| {
        if !budget.admit(v.body().len()) {
            return false;
        }
        if w.out.capacity() - w.out.len() < v.body().len() + ROOM_PER_MESSAGE {
            // Room for as many more of this size as the batch may still take, at once.
            let left = batch.saturating_sub(budget.count as usize - 1).max(1);
            let room = (v.body().len() + ROOM_PER_MESSAGE).saturating_mul(left);
            w.out
                .reserve(room.min(MAX_BYTES + (MAX_BATCH * ROOM_PER_MESSAGE)));
        }
        w.push(v);
        true
    })?;
    if budget.count > 0 {
        let answer = Answer {
            body: w.out,
            count: budget.count,
            bytes: budget.bytes,
        };
        return Ok(Found::Messages(answer, rr));
    }
    let next = rr.next_offset.max(from.min(rr.max_offset));
    if next < rr.max_offset {
        Ok(Found::Skipped(next, rr))
    } else {
        Ok(Found::Nothing(next, rr))
    }
}

pub(super) async fn pull(r: &Arc<Remoting>, peer: &Arc<Peer>, req: &Command) -> Handled {
    let h: PullMessageRequestHeader = req.header()?;
    record(Some(&h.topic), Some(&h.consumer_group));
    let group = validate::group(&h.consumer_group)?.to_string();
    let topic = validate::topic(&h.topic)?.to_string();
    if !super::namesrv::is_visible(&topic) {
        return Err(RemotingError::new(
            response::NO_PERMISSION,
            format!("topic {topic} is internal to FerroMQ"),
        ));
    }
    let t = r.node.engine.store.topics().get(&topic).ok_or_else(|| {
        RemotingError::new(
            response::TOPIC_NOT_EXIST,
            format!("topic[{topic}] not exist, apply first please!"),
        )
    })?;
    if !t.permission.readable() {
        return Err(RemotingError::new(
            response::NO_PERMISSION,
            format!("the topic[{topic}] pulling message is forbidden"),
        ));
    }
    if h.queue_id < 0 || h.queue_id as u32 >= t.queues {
        return Err(RemotingError::system(format!(
            "queueId[{}] is illegal, topic {topic} has {} queues",
            h.queue_id, t.queues
        )));
    }
    let queue = h.queue_id as u32;
    if h.queue_offset < 0 {
        return Err(RemotingError::invalid(format!(
            "queueOffset {} is negative",
            h.queue_offset
        )));
    }
    let filter = Arc::new(if h.sys_flag & pull_sys_flag::SUBSCRIPTION != 0 {
        compile(
            h.expression_type.as_deref().unwrap_or("TAG"),
            h.subscription.as_deref().unwrap_or("*"),
        )?
    } else {
        let sub = r.clients.subscription(&group, &topic).ok_or_else(|| {
            RemotingError::new(
                response::SUBSCRIPTION_NOT_EXIST,
                format!("the consumer's subscription of {topic} not exist (no heartbeat of group {group} yet)"),
            )
        })?;
        if h.sub_version > 0 && sub.sub_version < h.sub_version {
            return Err(RemotingError::new(
                response::SUBSCRIPTION_NOT_LATEST,
                "the consumer's subscription not latest",
            ));
        }
        compile(&sub.expression_type, &sub.sub_string)?
    });
    if h.sys_flag & pull_sys_flag::COMMIT_OFFSET != 0 && h.commit_offset >= 0 {
        let (g, tp, off) = (group.clone(), topic.clone(), h.commit_offset as u64);
        r.blocking(move |r| {
            let (_, max) = r.node.engine.store.queue_range(&tp, queue);
            if off <= max {
                r.node
                    .engine
                    .deliveries
                    .commit_offset(&g, &tp, queue, off, false)?;
            }
            Ok(())
        })
        .await?;
    }
    let batch = (h.max_msg_nums.max(1) as usize).min(MAX_BATCH);
    let hold = if h.sys_flag & pull_sys_flag::SUSPEND != 0 && h.suspend_timeout_millis > 0 {
        Duration::from_millis(h.suspend_timeout_millis as u64)
            .min(MAX_SUSPEND)
            .saturating_sub(SUSPEND_MARGIN)
    } else {
        Duration::ZERO
    };
    let until = Instant::now() + hold;
    let notify = r.node.engine.wakeups.for_topic(&topic);
    let mut shutdown = r.node.shutdown.clone();
    let mut from = h.queue_offset as u64;
    let found = loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (tp, f, host) = (topic.clone(), filter.clone(), peer.front.store_host);
        let found = r
            .blocking(move |r| read(r, &tp, queue, from, batch, &f, host, r.offsets))
            .await?;
        let next = match &found {
            Found::Nothing(next, _) => *next,
            _ => break found,
        };
        let now = Instant::now();
        if now >= until || *shutdown.borrow() || peer.is_closed() {
            break found;
        }
        from = next;
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(until.min(now + Duration::from_secs(1)).into()) => {}
            _ = shutdown.changed() => {}
            _ = peer.closed() => {}
        }
    };
    let header = |next: u64, rr: &ReadResult| PullMessageResponseHeader {
        suggest_which_broker_id: 0,
        next_begin_offset: next as i64,
        min_offset: rr.min_offset as i64,
        max_offset: rr.max_offset as i64,
        offset_delta: None,
        topic_sys_flag: Some(0),
        group_sys_flag: Some(0),
        forbidden_type: None,
    };
    Ok(match found {
        Found::Messages(answer, rr) => {
            r.node
                .metrics
                .messages_out_n(&topic, &group, answer.count, answer.bytes);
            r.pulled
                .fetch_add(answer.count, std::sync::atomic::Ordering::Relaxed);
            req.response_to(response::SUCCESS, Some("FOUND".into()))
                .with_header(&header(rr.next_offset, &rr))
                .with_body(answer.body)
        }
        Found::Skipped(next, rr) => req
            .response_to(
                response::PULL_RETRY_IMMEDIATELY,
                Some("NO_MATCHED_MESSAGE".into()),
            )
            .with_header(&header(next, &rr)),
        Found::Nothing(next, rr) => req
            .response_to(response::PULL_NOT_FOUND, Some("NO_NEW_MESSAGE".into()))
            .with_header(&header(next, &rr)),
        Found::Beyond(rr) => req
            .response_to(
                response::PULL_OFFSET_MOVED,
                Some(format!(
                    "offset {} is beyond the end of the queue ({})",
                    h.queue_offset, rr.max_offset
                )),
            )
            .with_header(&header(rr.max_offset, &rr)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_cut_by_bytes_but_never_empty() {
        let mut one = Budget::default();
        assert!(
            one.admit(MAX_BYTES * 2),
            "a single large message still goes"
        );
        assert!(!one.admit(1));
        let mut many = Budget::default();
        let taken = (0..6).take_while(|_| many.admit(MAX_BYTES / 4)).count();
        assert_eq!(taken, 4);
        assert_eq!(many.bytes, MAX_BYTES as u64);
    }
}
