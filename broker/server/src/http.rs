//! The HTTP endpoint every role serves: `/healthz` (the process is alive), `/readyz` (it serves
//! clients: store open, listeners bound, not shutting down) and `/metrics` (Prometheus text).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::node::Node;
use ferromq_engine::ParkedQueue as _;

/// What the HTTP endpoint reads from the role behind it.
pub trait Serving: Send + Sync + 'static {
    /// Whether the role serves (readiness).
    fn ready(&self) -> bool;
    /// The node serving clients now (none on a member of a replicated group that follows).
    fn node(&self) -> Option<Arc<Node>>;
    /// Gauges the role adds beside the node's (replication state).
    fn gauges(&self) -> Vec<crate::metrics::OwnedGauge> {
        Vec::new()
    }
    /// Where RPC metrics are counted when no node serves.
    fn metrics(&self) -> Option<Arc<crate::metrics::Metrics>> {
        None
    }
}

/// A storage node that always serves (standalone, unreplicated broker).
pub struct OneNode(pub Arc<Node>);

impl Serving for OneNode {
    fn ready(&self) -> bool {
        self.0.is_ready()
    }
    fn node(&self) -> Option<Arc<Node>> {
        Some(self.0.clone())
    }
}

pub fn router(role: Arc<dyn Serving>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(role)
}

async fn readyz(State(r): State<Arc<dyn Serving>>) -> impl IntoResponse {
    if r.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

async fn metrics(State(r): State<Arc<dyn Serving>>) -> impl IntoResponse {
    let Some(b2) = r.node() else {
        let owned = r.gauges();
        let text = r
            .metrics()
            .map(|m| m.render(&crate::metrics::borrow_gauges(&owned)))
            .unwrap_or_default();
        return (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            text,
        );
    };
    let extra = r.gauges();
    let text = tokio::task::spawn_blocking(move || {
        let stats = b2.engine.store.stats();
        let mut lag: std::collections::BTreeMap<(String, String), u64> = Default::default();
        for l in b2.lag() {
            *lag.entry((l.group, l.topic)).or_insert(0) += l.lag();
        }
        let lag_values = lag
            .into_iter()
            .map(|((g, t), v)| {
                (
                    format!("group=\"{}\",topic=\"{}\"", label(&g), label(&t)),
                    v as f64,
                )
            })
            .collect();
        let dlq = b2
            .engine.deliveries
            .dead_lettered()
            .into_iter()
            .map(|(g, n)| (format!("group=\"{}\"", label(&g)), n as f64))
            .collect();
        let per_topic = |m: std::collections::BTreeMap<String, u64>| -> Vec<(String, f64)> {
            m.into_iter()
                .map(|(t, n)| (format!("topic=\"{}\"", label(&t)), n as f64))
                .collect()
        };
        let (ts, xs) = (&b2.engine.timers.stats, &b2.engine.transactions.stats);
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed) as f64;
        let mut lateness = Vec::new();
        for (i, c) in ts.lateness.iter().enumerate() {
            let le = ferromq_engine::parked::timer::LATENESS_BUCKETS_MS
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            lateness.push((format!("upto_ms=\"{le}\""), load(c)));
        }
        b2.metrics.render(&[
            (
                "ferromq_timers_pending",
                "Delay messages waiting for their delivery time, per topic.",
                per_topic(b2.engine.timers.pending_by_topic()),
            ),
            (
                "ferromq_timers_released_total",
                "Delay messages delivered to their topic since start.",
                vec![(String::new(), load(&ts.released))],
            ),
            (
                "ferromq_timers_recalled_total",
                "Delay messages recalled before their time since start.",
                vec![(String::new(), load(&ts.recalled))],
            ),
            (
                "ferromq_timers_unreadable_total",
                "Delay messages dropped because their stored copy failed its checksum or was gone.",
                vec![(String::new(), load(&ts.unreadable))],
            ),
            (
                "ferromq_timer_lateness_releases_total",
                "Released delay messages by how late they were released (ms after their time, bucket upper bound; not cumulative).",
                lateness,
            ),
            (
                "ferromq_transactions_half_messages",
                "Half messages waiting for their transaction's outcome, per topic.",
                per_topic(b2.engine.transactions.pending_by_topic()),
            ),
            (
                "ferromq_transactions_total",
                "Transactions settled since start, by outcome (check_exhausted: rolled back after every check went unanswered; also counted in rolled_back).",
                vec![
                    ("outcome=\"prepared\"".to_string(), load(&xs.prepared)),
                    ("outcome=\"committed\"".to_string(), load(&xs.committed)),
                    ("outcome=\"rolled_back\"".to_string(), load(&xs.rolled_back)),
                    ("outcome=\"check_exhausted\"".to_string(), load(&xs.checks_exhausted)),
                ],
            ),
            (
                "ferromq_transaction_checks_sent_total",
                "RecoverOrphanedTransactionCommand sent to producers since start.",
                vec![(String::new(), load(&xs.checks_sent))],
            ),
            (
                "ferromq_messages_dead_lettered_total",
                "Messages moved to a dead-letter topic since start.",
                dlq,
            ),
            (
                "ferromq_consumer_lag_messages",
                "Messages from a group's committed offset to the end of each topic.",
                lag_values,
            ),
            (
                "ferromq_store_size_bytes",
                "Bytes of commit log segments on disk.",
                vec![(String::new(), stats.log_bytes_on_disk as f64)],
            ),
            (
                "ferromq_store_segments",
                "Commit log segment files.",
                vec![(String::new(), stats.segments as f64)],
            ),
            (
                "ferromq_store_write_offset_bytes",
                "End of the commit log.",
                vec![(String::new(), stats.log_write_offset as f64)],
            ),
            (
                "ferromq_store_appends",
                "Appends since start.",
                vec![(String::new(), stats.appends_total as f64)],
            ),
            (
                "ferromq_store_disk_full",
                "1 while appends are refused for lack of disk.",
                vec![(String::new(), if stats.disk_full { 1.0 } else { 0.0 })],
            ),
            (
                "ferromq_topics",
                "Topics defined.",
                vec![(String::new(), b2.engine.store.topics().list().len() as f64)],
            ),
            (
                "ferromq_clients",
                "Clients known to this proxy.",
                vec![(String::new(), b2.clients.count() as f64)],
            ),
        ].into_iter().chain(crate::metrics::borrow_gauges(&extra)).collect::<Vec<_>>())
    })
    .await
    .unwrap_or_else(|e| format!("# metrics unavailable: {e}\n"));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
}
