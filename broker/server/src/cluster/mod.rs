//! The cluster roles: name servers (route registry), broker groups (storage) and proxies
//! (stateless compute). `member` is what a broker adds to the standalone server, `nameserver`
//! the registry, `routes` a proxy's picture of the groups, `proxy` and `admin_proxy` the
//! client-facing tier.

pub mod admin_proxy;
pub mod member;
pub mod nameserver;
pub mod proxy;
pub mod routes;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use routes::Routes;

type ProxyState = (Arc<Routes>, Arc<Metrics>);

/// The proxy's HTTP endpoint: ready once it knows at least one live broker group.
pub fn http_router(routes: Arc<Routes>, metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state((routes, metrics))
}

async fn readyz(State((routes, _)): State<ProxyState>) -> impl IntoResponse {
    if routes.view().groups.is_empty() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no live broker group\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn render_metrics(State((routes, metrics)): State<ProxyState>) -> impl IntoResponse {
    let view = routes.view();
    let groups: Vec<(String, f64)> = view
        .groups
        .iter()
        .map(|g| {
            (
                format!(
                    "group=\"{}\",state=\"{}\"",
                    g.name,
                    if g.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    }
                ),
                1.0,
            )
        })
        .collect();
    let gauges = [(
        "ferromq_proxy_broker_groups",
        "Live broker groups known to this proxy, by drain state.",
        groups,
    )];
    (StatusCode::OK, metrics.render(&gauges))
}
