//! Moving a consumer group's position by hand, and forgetting a group: what `mqadmin
//! resetOffsetByTime` and `kafka-consumer-groups --reset-offsets / --delete` do.
//!
//! A reset is planned first ([`Engine::plan_offset_reset`]: per queue, where the group is and
//! where it would go) and applied second ([`Engine::reset_offsets`]), so an operator can look at
//! the plan before anything changes. Applying it replaces the queue's delivery state: messages
//! in flight are forgotten (their receipt handles go stale, an ack of one is refused), and the
//! group's next receive starts at the new offset, live consumers included. The new offsets are
//! committed durably and journaled like any offset that moved, so a replicated group's followers
//! take them over.

use std::collections::BTreeMap;

use crate::error::EngineError;
use crate::journal::Change;
use crate::Engine;

/// Where a reset moves a group's offset on each queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The oldest message still stored.
    Earliest,
    /// The end of the queue: only messages sent from now on.
    Latest,
    /// The first message stored at or after this time (ms since the epoch).
    Time(i64),
    /// This queue offset, clamped into what the queue holds.
    Offset(u64),
}

/// The plan for one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetMove {
    pub topic: String,
    pub queue_id: u32,
    /// Where the group is now (every message below is settled).
    pub current: u64,
    /// Where it goes.
    pub target: u64,
    /// What the queue holds: `min..max`.
    pub min: u64,
    pub max: u64,
    /// Messages handed out and not settled, forgotten by the reset.
    pub inflight: u64,
}

/// Consumer groups FerroMQ keeps positions for itself (the dead-letter resend cursors); they
/// are not users' groups and stay out of group views, lag and metrics.
pub fn is_internal_group(group: &str) -> bool {
    group.starts_with('%')
}

impl Engine {
    /// The offset each queue of `topic` (or of every topic the group has a position on) would
    /// move to. Changes nothing.
    pub fn plan_offset_reset(
        &self,
        group: &str,
        topic: Option<&str>,
        to: ResetTo,
    ) -> Result<Vec<OffsetMove>, EngineError> {
        let mut subscriptions = BTreeMap::new();
        if let Some(t) = topic {
            if self.store.topics().get(t).is_none() {
                return Err(EngineError::TopicNotFound(t.to_string()));
            }
            subscriptions.insert(group.to_string(), vec![t.to_string()]);
        }
        let mut plan = Vec::new();
        for l in self.lag(&subscriptions) {
            if l.group != group || topic.is_some_and(|t| t != l.topic) {
                continue;
            }
            let (min, max) = self.store.queue_range(&l.topic, l.queue_id);
            let target = match to {
                ResetTo::Earliest => min,
                ResetTo::Latest => max,
                ResetTo::Time(ms) => self.offset_for_time(&l.topic, l.queue_id, ms)?,
                ResetTo::Offset(o) => o.clamp(min, max),
            };
            plan.push(OffsetMove {
                topic: l.topic,
                queue_id: l.queue_id,
                current: l.committed,
                target,
                min,
                max,
                inflight: l.inflight,
            });
        }
        if plan.is_empty() {
            return Err(EngineError::GroupNotFound(format!(
                "consumer group {group} has no position on {} here; name a topic with --topic",
                topic.map_or("any topic".to_string(), |t| format!("topic {t}"))
            )));
        }
        Ok(plan)
    }

    /// Applies a plan: every queue's delivery state starts over at its target, durably
    /// committed and journaled before this returns ([`crate::Deliveries::reset_offset`]).
    pub fn reset_offsets(&self, group: &str, plan: &[OffsetMove]) -> Result<(), EngineError> {
        for m in plan {
            self.deliveries
                .reset_offset(group, &m.topic, m.queue_id, m.target)?;
        }
        for m in plan {
            // Long polls of the group wake and read from the new position.
            self.wakeups.wake(&m.topic);
        }
        tracing::info!(group, queues = plan.len(), "consumer offsets reset");
        Ok(())
    }

    /// First queue offset whose message was stored at or after `ms` (the end of the queue when
    /// none was): a binary search over store times, which only grow along a queue.
    pub fn offset_for_time(&self, topic: &str, queue_id: u32, ms: i64) -> Result<u64, EngineError> {
        let (mut lo, mut hi) = self.store.queue_range(topic, queue_id);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let r = self.store.read(topic, queue_id, mid, 1, None)?;
            match r.messages.first() {
                Some(m) if m.store_timestamp_ms < ms => lo = m.queue_offset + 1,
                Some(_) => hi = mid,
                None => lo = mid + 1,
            }
        }
        Ok(lo)
    }

    /// Forgets a consumer group: its offsets, its delivery state and its settings (journaled).
    /// Its dead-letter topic stays: dead letters are data. Callers refuse the deletion while
    /// the group has online consumers, which would bring it back at once.
    pub fn delete_group(&self, group: &str) -> Result<(), EngineError> {
        let known = self.groups.list().contains_key(group)
            || self
                .store
                .offsets()
                .all()
                .iter()
                .any(|(k, _)| k.group == group)
            || self.deliveries.progress().iter().any(|p| p.group == group);
        if !known {
            return Err(EngineError::GroupNotFound(format!(
                "consumer group {group} has no offsets or settings here"
            )));
        }
        self.deliveries.forget_group(group)?;
        self.groups
            .remove(group)
            .map_err(|e| EngineError::Io(e.to_string()))?;
        self.journal(&Change::GroupDeleted {
            name: group.to_string(),
        })?;
        tracing::info!(group, "consumer group deleted");
        Ok(())
    }
}
