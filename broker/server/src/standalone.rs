//! `ferromq standalone`: store, broker logic and the client-facing gRPC proxy in one process.
//!
//! Start-up: open the store (recovering after a crash), bind both listeners, then report ready.
//! Shutdown (SIGTERM or Ctrl-C): stop accepting, end long polls and Telemetry streams, let
//! in-flight requests finish (bounded), then flush and close the store and exit 0.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use ferromq_proto::admin::admin_server::AdminServer;
use ferromq_proto::v2::messaging_service_server::MessagingServiceServer;
use ferromq_store::{Store, StoreConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admin::service::AdminApi;
use crate::broker::Broker;
use crate::config::StandaloneConfig;
use crate::groups::Groups;
use crate::service::MessagingApi;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = term => info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => info!("interrupt received, shutting down"),
    }
}

pub fn store_config(cfg: &StandaloneConfig) -> StoreConfig {
    let mut s = StoreConfig::new(&cfg.data_dir);
    s.segment_size = cfg.segment_size;
    s.flush = cfg.flush;
    s.max_body_size = cfg.max_body_size;
    s.store_host = cfg.advertise_addr.parse().ok();
    s
}

pub async fn run(cfg: StandaloneConfig) -> anyhow::Result<()> {
    run_with(cfg, None).await
}

/// Runs the server; with `member` it is one broker group of a cluster (`ferromq broker`) that
/// reports itself to the name servers, otherwise the standalone.
pub async fn run_with(
    cfg: StandaloneConfig,
    member: Option<crate::cluster::member::MemberConfig>,
) -> anyhow::Result<()> {
    let sc = store_config(&cfg);
    let store = match tokio::task::spawn_blocking(move || Store::open(sc)).await? {
        Ok(s) => s,
        // A store setting that cannot work is bad configuration (exit 2), not a runtime failure.
        Err(ferromq_store::StoreError::Config { field, reason }) => {
            return Err(crate::config::ConfigError { field, reason }.into());
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot open the store in {}", cfg.data_dir.display()))
        }
    };
    let groups = Groups::open(&cfg.data_dir, cfg.max_delivery_attempts)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let broker = Broker::new(store.clone(), cfg.clone(), groups, shutdown_rx.clone())
        .map_err(|e| anyhow::anyhow!("cannot load pending timers and transactions: {e}"))?;
    let background = broker
        .start_background()
        .context("cannot start the timer threads")?;
    if let Some(m) = &member {
        broker
            .membership
            .join(&m.group, &cfg.data_dir)
            .with_context(|| {
                format!("cannot read the group state in {}", cfg.data_dir.display())
            })?;
    }

    let grpc = TcpListener::bind(cfg.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on grpc-addr {}", cfg.grpc_addr))?;
    let http = TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("cannot listen on http-addr {}", cfg.http_addr))?;
    let grpc_addr = grpc.local_addr()?;
    let http_addr = http.local_addr()?;

    // Room for a body at the limit plus headers and properties.
    let max_msg = cfg.max_body_size.saturating_mul(2).max(16 << 20);
    let messaging = MessagingServiceServer::new(MessagingApi::new(broker.clone()))
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    let admin = AdminServer::new(AdminApi::new(broker.clone())).max_encoding_message_size(max_msg);

    let mut rx = shutdown_rx.clone();
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(60)))
            .initial_stream_window_size(crate::cluster::routes::STREAM_WINDOW)
            .initial_connection_window_size(crate::cluster::routes::CONNECTION_WINDOW)
            .add_service(messaging)
            .add_service(admin)
            .serve_with_incoming_shutdown(
                crate::tls::incoming(grpc, cfg.tls.clone(), shutdown_rx.clone()),
                async move {
                    let _ = rx.wait_for(|v| *v).await;
                },
            ),
    );
    let mut rx = shutdown_rx.clone();
    let router = crate::http::router(broker.clone());
    let http_task = tokio::spawn(async move {
        axum::serve(http, router.into_make_service())
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|v| *v).await;
            })
            .await
    });

    // Dead-letters expired messages that used up their attempts even when nobody receives.
    let reaper = {
        let b = broker.clone();
        let mut rx = shutdown_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let b2 = b.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            b2.deliveries.reap(&|id| b2.clients.is_alive(id));
                            b2.keep_parked_messages();
                        }).await;
                        b.clients.prune(Duration::from_secs(600));
                    }
                    _ = rx.changed() => break,
                }
            }
        })
    };

    broker.ready.store(true, Ordering::Release);
    let membership_task = member.clone().map(|m| {
        info!(group = %m.group, nameservers = ?m.nameservers, endpoint = %cfg.advertise_addr, state = broker.membership.state_name(), "ferromq broker joining the cluster");
        tokio::spawn(crate::cluster::member::heartbeat_loop(
            broker.clone(),
            m,
            shutdown_rx.clone(),
        ))
    });
    info!(grpc = %grpc_addr, http = %http_addr, tls = cfg.tls.is_some(), data_dir = %cfg.data_dir.display(), auto_create_topics = cfg.auto_create_topics, "ferromq standalone ready");

    let mut grpc_task = grpc_task;
    let early = tokio::select! {
        _ = shutdown_signal() => None,
        r = &mut grpc_task => Some(r),
    };
    broker.ready.store(false, Ordering::Release);
    let _ = shutdown_tx.send(true);
    broker.clients.close_all_streams();
    let failed = match early {
        Some(r) => {
            error!(result = ?r, "gRPC server stopped unexpectedly");
            true
        }
        None => {
            match tokio::time::timeout(DRAIN_TIMEOUT, &mut grpc_task).await {
                Ok(Ok(Ok(()))) => info!("gRPC server drained"),
                Ok(Ok(Err(e))) => warn!(error = %e, "gRPC server ended with an error"),
                Ok(Err(e)) => warn!(error = %e, "gRPC server task failed"),
                Err(_) => warn!(
                    "requests still running after {DRAIN_TIMEOUT:?}; closing the store anyway"
                ),
            }
            false
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
    if let Some(t) = membership_task {
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }
    let _ = reaper.await;
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.stop_background(background)).await?;
    tokio::task::spawn_blocking(move || store.close())
        .await?
        .context("closing the store")?;
    info!("store flushed and closed");
    if failed {
        anyhow::bail!("the gRPC server failed");
    }
    Ok(())
}
