//! The one serve loop every role runs: its gRPC services, its HTTP endpoint and its raw TCP
//! protocols (the classic remoting protocol) on bound listeners, its background tasks, until a
//! shutdown future resolves.
//!
//! Shutdown is designed in: a role builds its services holding a receiver of [`Shutdown`]
//! (long polls, Telemetry streams and background tasks watch it), then hands everything to
//! [`run`] with the future that ends it: a signal in the binary, anything a test likes in a
//! test. When that future resolves, `run` flips the shutdown flag, stops accepting, gives
//! in-flight requests the role's drain time to finish, and waits for the background tasks;
//! the role then closes what it owns (the store). If the gRPC server stops on its own (an
//! error), `run` shuts the rest down and returns the error.
//!
//! Every connection on either port is bounded the same way, whatever the role: a cap on
//! connections that leaves descriptors to the store, handshake and idle timeouts, and HTTP/2
//! stream and header limits ([`crate::connections`]).
//!
//! Raw TCP protocols plug in as [`TcpService`]s: a bound listener and a [`ConnectionHandler`]
//! that serves one accepted connection. The loop accepts (up to the service's connection cap;
//! a connection beyond it is closed at once), hands each connection the shutdown flag, stops
//! accepting when shutdown begins and gives open connections the same drain time as gRPC
//! requests: a handler stops reading new requests when it sees the flag, finishes the ones in
//! flight and closes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::connections::{Connections, HttpListener, Limits};

/// The flag every part of a role watches to learn that shutdown has begun.
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            tx: watch::channel(false).0,
        }
    }
}

impl Shutdown {
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    pub(crate) fn begin(&self) {
        self.tx.send_replace(true);
    }
}

/// Resolves when `rx` says shutdown has begun.
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// A role's two listeners, bound before anything is served so that their real addresses (port
/// 0 in tests) are known, and the connection bounds both share.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
    /// Admission and counts of every connection on either port (metrics read it).
    pub connections: Arc<Connections>,
}

impl Listeners {
    /// Binds both, naming the field whose address cannot be bound.
    pub async fn bind(
        grpc: SocketAddr,
        http: SocketAddr,
        grpc_field: &str,
        limits: &Limits,
    ) -> anyhow::Result<Listeners> {
        let g = TcpListener::bind(grpc)
            .await
            .with_context(|| format!("cannot listen on {grpc_field} {grpc}"))?;
        let h = TcpListener::bind(http)
            .await
            .with_context(|| format!("cannot listen on http-addr {http}"))?;
        Ok(Listeners {
            grpc: g,
            http: h,
            connections: Connections::new(limits.clone()),
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

/// Serves one accepted connection of a raw TCP protocol until it ends, or until `shutdown`
/// says shutdown has begun and its requests in flight are answered.
pub trait ConnectionHandler: Send + Sync + 'static {
    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// A raw TCP protocol a role serves: its bound listener and what serves each connection.
pub struct TcpService {
    /// For logs (`remoting`).
    pub name: &'static str,
    pub listener: TcpListener,
    pub handler: Arc<dyn ConnectionHandler>,
    /// Connections served at once; one beyond it is closed as soon as it is accepted.
    pub max_connections: usize,
}

/// Accepts connections of one TCP service until shutdown, then waits for them to finish.
async fn accept_loop(service: TcpService, shutdown: watch::Receiver<bool>) {
    let TcpService {
        name,
        listener,
        handler,
        max_connections,
    } = service;
    let mut connections = JoinSet::new();
    let stop = stopped(shutdown.clone());
    tokio::pin!(stop);
    let mut refused_logged = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= max_connections {
                        if !refused_logged {
                            warn!(service = name, %peer, max_connections, "connection refused: too many open connections");
                            refused_logged = true;
                        }
                        drop(stream);
                        continue;
                    }
                    refused_logged = false;
                    let _ = stream.set_nodelay(true);
                    connections.spawn(handler.clone().serve(stream, peer, shutdown.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(service = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// What a role serves.
pub struct Services {
    pub grpc: tonic::transport::server::Router,
    pub http: axum::Router,
    /// Raw TCP protocols (the remoting protocol), each on its own listener.
    pub tcp: Vec<TcpService>,
    /// TLS on the gRPC port (mixed or required); `None` serves plaintext only.
    pub tls: Option<crate::tls::Tls>,
    /// Tasks that run while the role serves; each ends when it sees shutdown.
    pub background: JoinSet<()>,
    /// How long in-flight requests get to finish once shutdown begins.
    pub drain: Duration,
    /// Runs right after shutdown begins, before the drain (ends streams that would hold it).
    pub on_stop: Option<Box<dyn FnOnce() + Send>>,
}

/// The server's HTTP/2 PING interval: a peer that does not answer one within
/// [`KEEPALIVE_TIMEOUT`] is dropped (PINGs do not keep a connection from being idle, see
/// [`crate::connections`]).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

impl Services {
    /// The gRPC server settings every role shares, bounded by `limits`.
    pub fn grpc_builder(limits: &Limits) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_max_header_list_size(limits.max_header_list_size)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
    }
}

/// HTTP/2 flow-control windows of every gRPC server and of the channels that carry bulk
/// between our own processes (a proxy's to its brokers, a replica's to its leader). The
/// defaults (64 KiB) let a few batched sends fill a connection shared by many clients and stall
/// it for a round trip.
pub const STREAM_WINDOW: u32 = 4 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// The largest HTTP/2 frame the same servers and channels accept (the default is 16 KiB). A
/// peer writes a message's body in frames of at most this size, and each frame costs a write of
/// its own: a proxy's batch of sends (120 KiB on average with clients' batches of 32 at 1 KiB)
/// went out as eight frames, each copied to be gathered (`crate::coalesce`), where one frame
/// this large goes to the socket uncopied. A frame is buffered whole before it is read, but a
/// gRPC message is too.
pub const MAX_FRAME: u32 = 1 << 20;

/// A channel's settings for bulk between our own processes: Nagle off, and the windows and
/// frame size our servers take ([`STREAM_WINDOW`], [`CONNECTION_WINDOW`], [`MAX_FRAME`]).
pub fn bulk_channel(e: tonic::transport::Endpoint) -> tonic::transport::Endpoint {
    e.tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
}

/// Serves until `stop` resolves (or the gRPC server fails), then shuts down as described in the
/// module docs.
pub async fn run(
    listeners: Listeners,
    services: Services,
    shutdown: &Shutdown,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let Services {
        grpc,
        http,
        tcp,
        tls,
        mut background,
        drain,
        on_stop,
    } = services;
    let mut tcp_tasks = JoinSet::new();
    for service in tcp {
        tcp_tasks.spawn(accept_loop(service, shutdown.subscribe()));
    }
    let http_stop = stopped(shutdown.subscribe());
    let conns = listeners.connections;
    let http_listener = HttpListener {
        inner: listeners.http,
        conns: conns.clone(),
    };
    let http_task = tokio::spawn(async move {
        axum::serve(http_listener, http.into_make_service())
            .with_graceful_shutdown(http_stop)
            .await
    });
    let incoming = crate::tls::incoming(listeners.grpc, tls, conns, shutdown.subscribe());
    let mut grpc_task =
        tokio::spawn(grpc.serve_with_incoming_shutdown(incoming, stopped(shutdown.subscribe())));
    let early = tokio::select! {
        _ = stop => None,
        r = &mut grpc_task => Some(r),
    };
    shutdown.begin();
    if let Some(f) = on_stop {
        f();
    }
    // TCP connections drain beside gRPC requests, within the same time.
    let tcp_drained = tokio::spawn(async move {
        let drained = tokio::time::timeout(drain, async {
            while tcp_tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("connections still open after {drain:?}; closing them");
            tcp_tasks.abort_all();
        }
    });
    let failed = match early {
        Some(r) => Some(format!("{r:?}")),
        None => {
            match tokio::time::timeout(drain, &mut grpc_task).await {
                Ok(Ok(Ok(()))) => info!("gRPC server drained"),
                Ok(Ok(Err(e))) => warn!(error = %e, "gRPC server ended with an error"),
                Ok(Err(e)) => warn!(error = %e, "gRPC server task failed"),
                Err(_) => warn!("requests still running after {drain:?}; stopping anyway"),
            }
            None
        }
    };
    let _ = tcp_drained.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
    let joined = tokio::time::timeout(Duration::from_secs(5), async {
        while background.join_next().await.is_some() {}
    })
    .await;
    if joined.is_err() {
        warn!("background tasks still running after 5s; abandoning them");
        background.abort_all();
    }
    match failed {
        Some(r) => anyhow::bail!("the gRPC server stopped unexpectedly: {r}"),
        None => Ok(()),
    }
}

/// Resolves on SIGTERM or Ctrl-C: the binary's shutdown future.
pub async fn signal() {
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

/// A gRPC service that is served only while it is installed: a member of a replicated group
/// serves clients (through the proxies) only while it leads, and its replication service all
/// the time, on the same port. While the gate is empty every call is answered `UNAVAILABLE`
/// with the reason, which proxies treat as "ask the routes again".
pub struct Gate<S> {
    current: Arc<parking_lot::RwLock<Option<S>>>,
    closed: Arc<dyn Fn() -> String + Send + Sync>,
}

impl<S> Clone for Gate<S> {
    fn clone(&self) -> Self {
        Gate {
            current: self.current.clone(),
            closed: self.closed.clone(),
        }
    }
}

impl<S> Gate<S> {
    /// An empty gate; `closed` says why when a call arrives while it is empty.
    pub fn new(closed: impl Fn() -> String + Send + Sync + 'static) -> Gate<S> {
        Gate {
            current: Arc::new(parking_lot::RwLock::new(None)),
            closed: Arc::new(closed),
        }
    }

    /// Installs (Some) or removes (None) the service behind the gate.
    pub fn set(&self, svc: Option<S>) {
        *self.current.write() = svc;
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Gate<S> {
    const NAME: &'static str = S::NAME;
}

type GrpcRequest = tonic::codegen::http::Request<tonic::body::Body>;
type GrpcResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl<S> tonic::codegen::Service<GrpcRequest> for Gate<S>
where
    S: tonic::codegen::Service<
            GrpcRequest,
            Response = GrpcResponse,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = GrpcResponse;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<GrpcResponse, std::convert::Infallible>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        let current = self.current.read().clone();
        match current {
            // Generated tonic services are always ready.
            Some(mut svc) => Box::pin(async move { svc.call(req).await }),
            None => {
                let status = tonic::Status::unavailable((self.closed)());
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
