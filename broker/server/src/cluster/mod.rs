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

/// Serves a role's gRPC services (accepting through `tls::incoming`, so every connection gets
/// TCP_NODELAY) and its HTTP endpoint until SIGTERM or Ctrl-C, then flips `shutdown` and gives
/// both up to `drain` to finish. Also returns when the gRPC server stops on its own (an error).
pub(crate) async fn serve_until_signal(
    grpc_listener: tokio::net::TcpListener,
    grpc: tonic::transport::server::Router,
    http_listener: tokio::net::TcpListener,
    http: axum::Router,
    shutdown: &tokio::sync::watch::Sender<bool>,
    drain: std::time::Duration,
) -> anyhow::Result<()> {
    let mut hrx = shutdown.subscribe();
    let http_task = tokio::spawn(async move {
        axum::serve(http_listener, http.into_make_service())
            .with_graceful_shutdown(async move {
                let _ = hrx.wait_for(|v| *v).await;
            })
            .await
    });
    let mut grx = shutdown.subscribe();
    let incoming = crate::tls::incoming(grpc_listener, None, shutdown.subscribe());
    let mut server = tokio::spawn(grpc.serve_with_incoming_shutdown(incoming, async move {
        let _ = grx.wait_for(|v| *v).await;
    }));
    let early = tokio::select! {
        _ = crate::standalone::shutdown_signal() => None,
        r = &mut server => Some(r),
    };
    let _ = shutdown.send(true);
    if let Some(r) = early {
        anyhow::bail!("the gRPC server stopped: {r:?}");
    }
    let _ = tokio::time::timeout(drain, server).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), http_task).await;
    Ok(())
}

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
