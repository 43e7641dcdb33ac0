//! The HTTP endpoint every role serves: `/healthz` (the process is alive), `/readyz` (it serves
//! clients: store open, listeners bound, not shutting down) and `/metrics` (Prometheus text).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::connections::Connections;
use crate::node::Node;

/// What the HTTP endpoint reads from the role behind it.
pub trait Serving: Send + Sync + 'static {
    /// Whether the role serves (readiness).
    fn ready(&self) -> bool;
    /// The node serving clients now (none on a member of a replicated group that follows).
    fn node(&self) -> Option<Arc<Node>>;
    /// Families the role adds beside the node's (replication state).
    fn families(&self) -> Vec<crate::metrics::Family> {
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

pub fn router(role: Arc<dyn Serving>, conns: Arc<Connections>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state((role, conns))
}

/// Ready while the role serves. A full disk keeps it ready (consumers must still reach it to
/// read what it acknowledged) but says so, as `ferromq_store_disk_full` does.
async fn readyz(State((r, _)): State<(Arc<dyn Serving>, Arc<Connections>)>) -> impl IntoResponse {
    if !r.ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string());
    }
    match r.node().and_then(|b| b.engine.store.disk_full()) {
        Some(reason) => (
            StatusCode::OK,
            format!("ready; sends refused, disk full: {reason}\n"),
        ),
        None => (StatusCode::OK, "ready\n".to_string()),
    }
}

async fn metrics(
    State((r, conns)): State<(Arc<dyn Serving>, Arc<Connections>)>,
) -> impl IntoResponse {
    let extra = r.families();
    let text = match r.node() {
        Some(node) => tokio::task::spawn_blocking(move || {
            let mut families = crate::metrics::node::families(&node);
            families.extend(extra);
            families.extend(conns.families());
            node.metrics.render(families)
        })
        .await
        .unwrap_or_else(|e| format!("# metrics unavailable: {e}\n")),
        // A member that follows serves no clients, but still reports its replication state.
        None => {
            let mut families = vec![crate::metrics::build_info()];
            families.extend(extra);
            families.extend(conns.families());
            r.metrics().map(|m| m.render(families)).unwrap_or_default()
        }
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
}
