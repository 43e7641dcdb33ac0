//! The broker end of a proxy's remoting tunnel (`ferromq.remoting.v1.Tunnel`): each stream is
//! one remoting client connection, carried from a proxy, and is served by the node's remoting
//! service exactly as a TCP connection ([`super::connection::run`]). The proxy names the
//! client's address and its own remoting address in the stream's metadata, so connection lists
//! show the client and routes and message ids name the proxy.
//!
//! Every remoting request and answer stays whole: the proxy routes frames, the broker decides
//! what they mean (delivery semantics live in one place), and the broker's own requests to the
//! client (membership notifications, transaction checks, running info) go back on the stream.

use std::net::SocketAddr;
use std::sync::Arc;

use ferromq_proto::tunnel::tunnel_server::Tunnel;
use ferromq_proto::tunnel::Frame;
use ferromq_remoting::frame::{decode_frame_bytes, encode_frame_bytes};
use ferromq_remoting::{Command, FrameError};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::connection::{self, Front, Limits, Peer};
use super::Remoting;
use crate::rpc::BoxStream;

/// Metadata key: the client's socket address as the proxy saw it.
pub const CLIENT_ADDR: &str = "x-ferromq-client-addr";
/// Metadata key: the proxy's advertised remoting address.
pub const REMOTING_ADDR: &str = "x-ferromq-remoting-addr";

/// The tunnel service of a storage node.
pub struct TunnelApi {
    remoting: Arc<Remoting>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
}

impl TunnelApi {
    pub fn new(remoting: Arc<Remoting>, limits: Limits, shutdown: watch::Receiver<bool>) -> Self {
        TunnelApi {
            remoting,
            limits: Limits {
                // The proxy closes the stream with its client's connection, which has its own
                // idle limit.
                idle: None,
                ..limits
            },
            shutdown,
        }
    }
}

fn text(req: &Request<Streaming<Frame>>, key: &str) -> Option<String> {
    req.metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn closed() -> FrameError {
    FrameError::Io(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the tunnel stream is closed",
    ))
}

/// Decodes the frames of a tunnel stream (one whole remoting frame per message).
pub fn frames_in<S>(
    s: S,
) -> impl futures_util::Stream<Item = Result<Command, FrameError>> + Send + Unpin
where
    S: futures_util::Stream<Item = Result<Frame, Status>> + Send + Unpin,
{
    s.map(|r| match r {
        Ok(f) => decode_frame_bytes(f.data),
        Err(status) => Err(FrameError::Io(std::io::Error::other(
            status.message().to_string(),
        ))),
    })
}

/// A sink that writes commands as tunnel frames to `tx`.
pub fn frames_out(
    tx: mpsc::Sender<Result<Frame, Status>>,
) -> std::pin::Pin<Box<dyn futures_util::Sink<Command, Error = FrameError> + Send>> {
    Box::pin(futures_util::sink::unfold(
        tx,
        |tx, cmd: Command| async move {
            let data = encode_frame_bytes(&cmd)?;
            tx.send(Ok(Frame { data })).await.map_err(|_| closed())?;
            Ok::<_, FrameError>(tx)
        },
    ))
}

#[tonic::async_trait]
impl Tunnel for TunnelApi {
    type OpenStream = BoxStream<Frame>;

    async fn open(
        &self,
        req: Request<Streaming<Frame>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let client = text(&req, CLIENT_ADDR).unwrap_or_else(|| "unknown".into());
        let proxy = req
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|i| i.remote_addr())
            .map(|a| ferromq_auth::policy::canonical_ip(a.ip()));
        let advertised = text(&req, REMOTING_ADDR).ok_or_else(|| {
            Status::invalid_argument(format!("metadata {REMOTING_ADDR} is required"))
        })?;
        crate::config::check_host_port(REMOTING_ADDR, &advertised)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let store_host =
            super::resolve_host(&advertised, SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let front = Arc::new(Front {
            addr: advertised,
            store_host,
        });
        let incoming = frames_in(req.into_inner());
        let (tx, rx) = mpsc::channel(connection::IN_FLIGHT);
        let (queue_tx, queue_rx) = connection::queue();
        let peer = Peer::with_source(client, proxy, front, queue_tx);
        tokio::spawn(connection::run(
            self.remoting.clone(),
            peer,
            queue_rx,
            incoming,
            frames_out(tx),
            self.limits,
            self.shutdown.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
