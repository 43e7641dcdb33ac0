//! What a storage node (standalone, broker) reports at scrape time: consumer lag and its age,
//! dead letters, the store and its disk, delay timers and transactions. Runs on the blocking
//! pool (it reads the store).
//!
//! Lag age reads one message per lagging queue (the oldest unsettled one) for its store time,
//! so a scrape costs one read per (group, queue) that lags, not one per message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use ferromq_engine::lag::QueueLag;
use ferromq_engine::ParkedQueue as _;

use super::{build_info, Family, Labels};
use crate::node::Node;

/// Consumer progress of one (group, topic), summed over its queues.
#[derive(Debug, Default, Clone, PartialEq)]
struct GroupTopic {
    lag: u64,
    inflight: u64,
    /// Store time (ms since the epoch) of the oldest message not settled, over the queues.
    oldest_unsettled_ms: Option<i64>,
}

/// Sums queue progress per (group, topic); `store_time` finds the store time of a queue's
/// message at an offset.
fn per_group_topic(
    lags: Vec<QueueLag>,
    store_time: impl Fn(&str, u32, u64) -> Option<i64>,
) -> BTreeMap<(String, String), GroupTopic> {
    let mut out: BTreeMap<(String, String), GroupTopic> = BTreeMap::new();
    for l in lags {
        let lag = l.lag();
        let e = out.entry((l.group.clone(), l.topic.clone())).or_default();
        e.lag += lag;
        e.inflight += l.inflight;
        if lag > 0 {
            if let Some(t) = store_time(&l.topic, l.queue_id, l.committed) {
                e.oldest_unsettled_ms = Some(e.oldest_unsettled_ms.map_or(t, |o| o.min(t)));
            }
        }
    }
    out
}

/// RocketMQ's lag labels: `topic`, `consumer_group`, `is_retry`, `is_system`.
fn lag_labels(group: &str, topic: &str) -> Labels {
    vec![
        ("topic", topic.to_string()),
        ("consumer_group", group.to_string()),
        ("is_retry", topic.starts_with("%RETRY%").to_string()),
        (
            "is_system",
            (ferromq_engine::topics::is_system_topic(topic) && !topic.starts_with("%RETRY%"))
                .to_string(),
        ),
    ]
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn per_topic(name: &'static str, help: &'static str, m: BTreeMap<String, u64>) -> Family {
    let mut f = Family::gauge(name, help);
    for (t, n) in m {
        f.push(vec![("topic", t)], n);
    }
    f
}

/// Every family a storage node computes at scrape time.
pub fn families(node: &Node) -> Vec<Family> {
    let store = &node.engine.store;
    let stats = store.stats();
    let now = now_ms();
    let progress = per_group_topic(node.lag(), |topic, q, offset| {
        let entry = store.queue_entry(topic, q, offset).ok()??;
        Some(store.message_at(entry.phys_offset).ok()?.store_timestamp_ms)
    });

    let mut rmq_lag = Family::gauge(
        "rocketmq_consumer_lag_messages",
        "Messages not yet settled by a consumer group: from its committed offset to the end of each queue, summed over the topic's queues.",
    );
    let mut rmq_inflight = Family::gauge(
        "rocketmq_consumer_inflight_messages",
        "Messages delivered to a consumer group and not yet settled (acknowledged or dead-lettered).",
    );
    let mut rmq_ready = Family::gauge(
        "rocketmq_consumer_ready_messages",
        "Messages a consumer group may receive now: lag minus in-flight.",
    );
    let mut rmq_latency = Family::gauge(
        "rocketmq_consumer_lag_latency",
        "Milliseconds since the oldest message a consumer group has not settled was stored (0 without lag).",
    );
    let mut own_lag = Family::gauge(
        "ferromq_consumer_lag_messages",
        "Messages from a group's committed offset to the end of each topic.",
    );
    let mut oldest = Family::gauge(
        "ferromq_consumer_oldest_unsettled_age_seconds",
        "Age of the oldest message a consumer group has not settled (since it was stored); 0 without lag.",
    );
    for ((group, topic), p) in &progress {
        let l = lag_labels(group, topic);
        let age_ms = p.oldest_unsettled_ms.map_or(0, |t| (now - t).max(0));
        rmq_lag.push(l.clone(), p.lag);
        rmq_inflight.push(l.clone(), p.inflight);
        rmq_ready.push(l.clone(), p.lag.saturating_sub(p.inflight));
        rmq_latency.push(l, age_ms);
        let own = vec![("group", group.clone()), ("topic", topic.clone())];
        own_lag.push(own.clone(), p.lag);
        oldest.push(own, age_ms as f64 / 1000.0);
    }

    let mut rmq_dlq = Family::counter(
        "rocketmq_send_to_dlq_messages_total",
        "Messages moved to a consumer group's dead-letter topic after their last delivery attempt, by the topic they came from.",
    );
    let mut per_group: BTreeMap<String, u64> = BTreeMap::new();
    for ((group, topic), n) in node.engine.deliveries.dead_lettered() {
        *per_group.entry(group.clone()).or_default() += n;
        rmq_dlq.push(vec![("topic", topic), ("consumer_group", group)], n);
    }
    let mut own_dlq = Family::counter(
        "ferromq_messages_dead_lettered_total",
        "Messages moved to a dead-letter topic since start.",
    );
    for (group, n) in per_group {
        own_dlq.push(vec![("group", group)], n);
    }

    let (ts, xs) = (&node.engine.timers.stats, &node.engine.transactions.stats);
    let mut lateness = Family::counter(
        "ferromq_timer_lateness_releases_total",
        "Released delay messages by how late they were released (ms after their time, bucket upper bound; not cumulative).",
    );
    for (i, c) in ts.lateness.iter().enumerate() {
        let le = ferromq_engine::parked::timer::LATENESS_BUCKETS_MS
            .get(i)
            .map_or("+Inf".to_string(), |b| b.to_string());
        lateness.push(vec![("upto_ms", le)], load(c));
    }
    let outcome = |o: &str| vec![("outcome", o.to_string())];
    let half = node.engine.transactions.pending_by_topic();
    let space = ferromq_store::disk::space(&store.config().data_dir);

    let mut families = vec![
        build_info(),
        rmq_lag,
        rmq_inflight,
        rmq_ready,
        rmq_latency,
        rmq_dlq,
        Family::gauge(
            "rocketmq_storage_flush_behind_bytes",
            "Commit log bytes written but not yet flushed to disk.",
        )
        .value(stats.log_write_offset.saturating_sub(stats.log_flushed_offset)),
        Family::gauge(
            "rocketmq_storage_dispatch_behind_bytes",
            "Commit log bytes written but not yet indexed into consume queues.",
        )
        .value(stats.log_write_offset.saturating_sub(stats.dispatched_offset)),
        Family::gauge(
            "rocketmq_storage_size",
            "Bytes of commit log segments on disk.",
        )
        .value(stats.log_bytes_on_disk),
        per_topic(
            "rocketmq_half_messages",
            "Transaction half messages waiting for their outcome, per topic.",
            half.clone(),
        ),
        Family::gauge("rocketmq_topic_number", "Topics defined on this node.")
            .value(store.topics().list().len()),
        own_lag,
        oldest,
        own_dlq,
        per_topic(
            "ferromq_timers_pending",
            "Delay messages waiting for their delivery time, per topic.",
            node.engine.timers.pending_by_topic(),
        ),
        Family::counter(
            "ferromq_timers_released_total",
            "Delay messages delivered to their topic since start.",
        )
        .value(load(&ts.released)),
        Family::counter(
            "ferromq_timers_recalled_total",
            "Delay messages recalled before their time since start.",
        )
        .value(load(&ts.recalled)),
        Family::counter(
            "ferromq_timers_unreadable_total",
            "Delay messages dropped because their stored copy failed its checksum or was gone.",
        )
        .value(load(&ts.unreadable)),
        lateness,
        per_topic(
            "ferromq_transactions_half_messages",
            "Half messages waiting for their transaction's outcome, per topic.",
            half,
        ),
        Family::counter(
            "ferromq_transactions_total",
            "Transactions settled since start, by outcome (check_exhausted: rolled back after every check went unanswered; also counted in rolled_back).",
        )
        .with(outcome("prepared"), load(&xs.prepared))
        .with(outcome("committed"), load(&xs.committed))
        .with(outcome("rolled_back"), load(&xs.rolled_back))
        .with(outcome("check_exhausted"), load(&xs.checks_exhausted)),
        Family::counter(
            "ferromq_transaction_checks_sent_total",
            "RecoverOrphanedTransactionCommand sent to producers since start.",
        )
        .value(load(&xs.checks_sent)),
        Family::gauge(
            "ferromq_store_size_bytes",
            "Bytes of commit log segments on disk.",
        )
        .value(stats.log_bytes_on_disk),
        Family::gauge("ferromq_store_segments", "Commit log segment files.").value(stats.segments),
        Family::gauge("ferromq_store_write_offset_bytes", "End of the commit log.")
            .value(stats.log_write_offset),
        Family::gauge(
            "ferromq_store_flushed_offset_bytes",
            "How far the commit log is flushed to disk.",
        )
        .value(stats.log_flushed_offset),
        Family::counter("ferromq_store_appends_total", "Appends since start.")
            .value(stats.appends_total),
        Family::counter(
            "ferromq_store_append_bytes_total",
            "Bytes appended to the commit log since start.",
        )
        .value(stats.append_bytes_total),
        Family::counter(
            "ferromq_store_flushes_total",
            "Commit log flushes (msync) since start; in sync mode each one acknowledges every send waiting for it (group commit).",
        )
        .value(stats.flushes_total),
        Family::counter(
            "ferromq_store_flush_seconds_total",
            "Time spent in commit log flushes since start; divided by the flushes, the average cost of one.",
        )
        .value(stats.flush_seconds_total),
        Family::gauge(
            "ferromq_store_disk_full",
            "1 while appends are refused for lack of disk (the filesystem is above the high-water mark, or an allocation failed).",
        )
        .value(stats.disk_full),
        Family::gauge(
            "ferromq_store_disk_high_water_ratio",
            "Filesystem usage (0-1) above which appends are refused (disk-high-water).",
        )
        .value(store.config().disk_high_water),
        Family::counter(
            "ferromq_store_corrupt_records_total",
            "Distinct commit log records found damaged (checksum or structure) since start, recovery included; they are never served.",
        )
        .value(stats.corrupt_records_total),
        Family::gauge("ferromq_topics", "Topics defined.").value(store.topics().list().len()),
        Family::gauge("ferromq_clients", "Clients known to this node.")
            .value(node.clients.count()),
    ];
    if let Some(s) = space {
        families.push(
            Family::gauge(
                "ferromq_store_disk_used_ratio",
                "Used fraction (0-1) of the filesystem holding the data directory, as df counts it.",
            )
            .value(s.used_fraction),
        );
        families.push(
            Family::gauge(
                "ferromq_store_disk_free_bytes",
                "Bytes still allocatable on the filesystem holding the data directory.",
            )
            .value(s.free_bytes),
        );
    }
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(
        group: &str,
        topic: &str,
        queue_id: u32,
        committed: u64,
        max: u64,
        inflight: u64,
    ) -> QueueLag {
        QueueLag {
            group: group.into(),
            topic: topic.into(),
            queue_id,
            committed,
            max_offset: max,
            inflight,
        }
    }

    #[test]
    fn lag_is_summed_per_group_and_topic_and_the_age_is_the_oldest_queue() {
        let lags = vec![
            q("g", "t", 0, 5, 8, 1),
            q("g", "t", 1, 2, 2, 0),
            q("g", "t", 2, 0, 4, 2),
            q("h", "t", 0, 8, 8, 0),
        ];
        // Store time = 1000 * queue + offset: queue 0 at 5 -> 5, queue 2 at 0 -> 2000.
        let read = |_: &str, queue: u32, offset: u64| Some(1000 * queue as i64 + offset as i64);
        let got = per_group_topic(lags, read);
        assert_eq!(
            got[&("g".to_string(), "t".to_string())],
            GroupTopic {
                lag: 7,
                inflight: 3,
                oldest_unsettled_ms: Some(5)
            }
        );
        // No lag: no message read, no age.
        assert_eq!(
            got[&("h".to_string(), "t".to_string())],
            GroupTopic::default()
        );
    }

    #[test]
    fn retry_and_system_topics_are_marked_as_rocketmq_does() {
        let l = lag_labels("g", "%RETRY%g");
        assert!(l.contains(&("is_retry", "true".into())));
        assert!(l.contains(&("is_system", "false".into())));
        let l = lag_labels("g", "rmq_sys_trace");
        assert!(l.contains(&("is_system", "true".into())));
        let l = lag_labels("g", "orders");
        assert!(
            l.contains(&("is_retry", "false".into())) && l.contains(&("is_system", "false".into()))
        );
    }
}
