//! Consumer progress: how far each group has settled each queue, against the queue's end.

use std::collections::{BTreeMap, BTreeSet};

use crate::Engine;

/// Progress of one group on one queue.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueueLag {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
    /// Every message below it is settled for the group.
    pub committed: u64,
    /// Next offset to be written.
    pub max_offset: u64,
    /// Delivered and not yet settled.
    pub inflight: u64,
}

impl QueueLag {
    pub fn lag(&self) -> u64 {
        self.max_offset.saturating_sub(self.committed)
    }
}

impl Engine {
    /// Consumer progress per (group, topic, queue). Covers every queue of every topic a group
    /// consumed, has an offset for, or subscribed to (`subscriptions`: group -> topics, as the
    /// front doors know them); a queue it never read counts from where it would start.
    pub fn lag(&self, subscriptions: &BTreeMap<String, Vec<String>>) -> Vec<QueueLag> {
        let mut known: BTreeMap<(String, String, u32), (u64, u64)> = BTreeMap::new();
        for p in self.deliveries.progress() {
            known.insert((p.group, p.topic, p.queue_id), (p.committed, p.inflight));
        }
        for (k, off) in self.store.offsets().all() {
            known
                .entry((k.group, k.topic, k.queue_id))
                .or_insert((off, 0));
        }
        let mut pairs: BTreeSet<(String, String)> = known
            .keys()
            .map(|(g, t, _)| (g.clone(), t.clone()))
            .collect();
        for (g, topics) in subscriptions {
            for t in topics {
                pairs.insert((g.clone(), t.clone()));
            }
        }
        let mut out = Vec::new();
        for (g, t) in pairs {
            if crate::resets::is_internal_group(&g) {
                continue;
            }
            let Some(cfg) = self.store.topics().get(&t) else {
                continue;
            };
            for q in 0..cfg.queues {
                let (min, max) = self.store.queue_range(&t, q);
                let (committed, inflight) = known
                    .get(&(g.clone(), t.clone(), q))
                    .copied()
                    .unwrap_or((min, 0));
                out.push(QueueLag {
                    group: g.clone(),
                    topic: t.clone(),
                    queue_id: q,
                    committed: committed.max(min),
                    max_offset: max,
                    inflight,
                });
            }
        }
        out
    }
}
