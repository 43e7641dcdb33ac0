//! Raft between controller peers: openraft's type configuration, the network that sends its
//! RPCs over gRPC (`ferromq.controller.v1.Raft`), and the service that receives them.
//!
//! Each RPC carries one openraft request, and its answer one `Result<response, RaftError>`,
//! as JSON bytes (openraft's own serde types), so the gRPC layer stays ignorant of Raft's
//! structures. Peers are addressed by the `host:port` of their name server's gRPC port, which
//! is the `BasicNode::addr` of the Raft membership.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use ferromq_proto::controller::{self as proto, raft_client::RaftClient};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::link::Link;
use crate::state::{Command, CommandResult};

/// Raft node ids: the 1-based position of the peer in `--controller-peers`.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's types for the controller: commands in, per-command results out.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
);

/// The openraft handle of a controller.
pub type ControllerRaft = openraft::Raft<TypeConfig>;

/// How long to wait for a TCP connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Makes one [`Peer`] per target; connections are opened lazily, plaintext or TLS as the
/// [`Link`] says.
#[derive(Debug, Clone, Default)]
pub struct Network {
    link: Link,
    /// Peers whose last call failed to reach them, with the cause: a failure is logged when it
    /// starts (or its cause changes), not at every heartbeat (ten a second).
    unreachable: Arc<Mutex<HashMap<String, String>>>,
}

impl Network {
    pub fn new(link: Link) -> Network {
        Network {
            link,
            unreachable: Arc::default(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        let client = self
            .link
            .endpoint(&node.addr)
            .map(|e| RaftClient::new(e.connect_timeout(CONNECT_TIMEOUT).connect_lazy()));
        Peer {
            target,
            addr: node.addr.clone(),
            client: client.map_err(|e| e.to_string()),
            unreachable: self.unreachable.clone(),
        }
    }
}

/// The sending side towards one peer.
pub struct Peer {
    target: NodeId,
    addr: String,
    client: Result<RaftClient<Channel>, String>,
    unreachable: Arc<Mutex<HashMap<String, String>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("controller peer {addr}: {reason}")]
struct PeerError {
    addr: String,
    reason: String,
}

impl Peer {
    /// Logs a peer becoming unreachable (or its cause changing) and coming back, once each.
    fn note(&self, cause: Option<String>) {
        let mut m = self.unreachable.lock();
        match cause {
            Some(c) => {
                if m.get(&self.addr) != Some(&c) {
                    warn!(peer = %self.addr, error = %c, "controller peer unreachable; retrying");
                    m.insert(self.addr.clone(), c);
                }
            }
            None => {
                if m.remove(&self.addr).is_some() {
                    info!(peer = %self.addr, "controller peer reachable again");
                }
            }
        }
    }

    fn fail(&self, reason: impl Into<String>) -> PeerError {
        PeerError {
            addr: self.addr.clone(),
            reason: reason.into(),
        }
    }

    /// Sends `req` through `call`, decoding the peer's `Result<Resp, RaftError<E>>`.
    async fn send<Req, Resp, E, F, Fut>(
        &mut self,
        req: &Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, proto::RaftMessage) -> Fut,
        Fut: std::future::Future<Output = Result<Response<proto::RaftMessage>, Status>>,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(Unreachable::new(&self.fail(e.clone())).into()),
        };
        let payload = serde_json::to_vec(req)
            .map_err(|e| NetworkError::new(&self.fail(format!("encode: {e}"))))?;
        let answer = tokio::time::timeout(
            option.hard_ttl(),
            call(client, proto::RaftMessage { payload }),
        )
        .await;
        let msg = match answer {
            Err(_) => {
                return Err(NetworkError::new(
                    &self.fail(format!("no answer within {:?}", option.hard_ttl())),
                )
                .into())
            }
            Ok(Err(status)) => {
                let err = self.fail(format!(
                    "{}: {}",
                    status.code(),
                    crate::link::describe(&status)
                ));
                return Err(match status.code() {
                    tonic::Code::Unavailable => {
                        self.note(Some(err.reason.clone()));
                        Unreachable::new(&err).into()
                    }
                    _ => NetworkError::new(&err).into(),
                });
            }
            Ok(Ok(r)) => {
                self.note(None);
                r.into_inner()
            }
        };
        let decoded: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&msg.payload)
            .map_err(|e| NetworkError::new(&self.fail(format!("decode: {e}"))))?;
        decoded.map_err(|e| {
            RemoteError::new_with_node(self.target, BasicNode::new(&self.addr), e).into()
        })
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(&rpc, &option, |mut c, m| async move {
            c.append_entries(m).await
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(&rpc, &option, |mut c, m| async move {
            c.install_snapshot(m).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(&rpc, &option, |mut c, m| async move { c.vote(m).await })
            .await
    }
}

/// The receiving side: hands each decoded request to the local Raft node.
pub struct RaftService {
    pub raft: ControllerRaft,
}

fn decode<T: DeserializeOwned>(req: Request<proto::RaftMessage>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

fn encode<T: Serialize>(answer: &T) -> Result<Response<proto::RaftMessage>, Status> {
    serde_json::to_vec(answer)
        .map(|payload| Response::new(proto::RaftMessage { payload }))
        .map_err(|e| Status::internal(format!("cannot encode the Raft answer: {e}")))
}

#[tonic::async_trait]
impl proto::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        req: Request<proto::RaftMessage>,
    ) -> Result<Response<proto::RaftMessage>, Status> {
        let r: AppendEntriesRequest<TypeConfig> = decode(req)?;
        encode(&self.raft.append_entries(r).await)
    }

    async fn vote(
        &self,
        req: Request<proto::RaftMessage>,
    ) -> Result<Response<proto::RaftMessage>, Status> {
        let r: VoteRequest<NodeId> = decode(req)?;
        encode(&self.raft.vote(r).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<proto::RaftMessage>,
    ) -> Result<Response<proto::RaftMessage>, Status> {
        let r: InstallSnapshotRequest<TypeConfig> = decode(req)?;
        encode(&self.raft.install_snapshot(r).await)
    }
}
