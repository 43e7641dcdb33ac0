//! [`ControllerClient`]: how broker group members and admins call the controller.
//!
//! It takes the peer list, finds the Raft leader and remembers it, follows "not the
//! controller leader, try ADDRESS" answers, and retries unreachable peers, all within a
//! bounded time per call. A refusal (stale epoch, not the leader, ...) is returned at once as
//! [`ClientError::Refused`]: retrying it would not change the answer.
//!
//! Retries and idempotence: `heartbeat`, `alter_in_sync` and `switchover` may be sent twice
//! harmlessly. `complete_switchover` may have been applied when its answer was lost; a retry
//! is then refused (`FAILED_PRECONDITION`, no switchover pending) and the caller reads the
//! outcome from the group state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferromq_proto::controller::{self as proto, controller_client::ControllerClient as Grpc};
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::link::Link;
use tonic::{Code, Response, Status};

use crate::service::LEADER_METADATA;

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The controller leader refused the request; the status says why.
    #[error("the controller refused: {code:?}: {message}")]
    Refused { code: Code, message: String },
    /// No controller leader answered within the call's time.
    #[error("no controller leader answered within {waited:?} (last error: {last})")]
    Unavailable { waited: Duration, last: String },
    #[error("invalid controller peer {peer:?}: {reason}")]
    BadPeer { peer: String, reason: String },
}

/// A heartbeat's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatAnswer {
    pub state: proto::GroupState,
    /// Present when the caller leads its group at `state.epoch`: it may act as leader until
    /// this instant, which is counted from just before the request that earned it was sent.
    pub lease_until: Option<Instant>,
    /// An admin asked to move leadership to this member: stop acknowledging, wait until it
    /// holds the whole log, then call [`ControllerClient::complete_switchover`].
    pub switchover_to: Option<u64>,
    /// How often to heartbeat.
    pub interval: Duration,
}

#[derive(Debug, Default)]
struct Cache {
    leader: Option<String>,
    next: usize,
    channels: HashMap<String, Channel>,
    /// This process has had a heartbeat answer.
    answered: bool,
    /// The epoch an answer said this process had led in an earlier life (0: none).
    restarted_epoch: u64,
}

/// A client of the controller peers (cheap to share behind an `Arc`; all methods take `&self`).
#[derive(Debug)]
pub struct ControllerClient {
    peers: Vec<String>,
    cache: Mutex<Cache>,
    attempt_timeout: Duration,
    call_timeout: Duration,
    link: Link,
    /// Sent in heartbeats: which process of the member speaks (0: not said).
    incarnation: u64,
}

impl ControllerClient {
    /// A client of `peers` (`host:port` each). Defaults: 1 s per attempt, 3 s per call.
    pub fn new<S: Into<String>>(
        peers: impl IntoIterator<Item = S>,
    ) -> Result<ControllerClient, ClientError> {
        let peers: Vec<String> = peers.into_iter().map(Into::into).collect();
        if peers.is_empty() {
            return Err(ClientError::BadPeer {
                peer: String::new(),
                reason: "at least one controller peer is required".into(),
            });
        }
        for p in &peers {
            Endpoint::from_shared(format!("http://{p}")).map_err(|e| ClientError::BadPeer {
                peer: p.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(ControllerClient {
            peers,
            cache: Mutex::new(Cache::default()),
            attempt_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_secs(3),
            link: Link::plaintext(),
            incarnation: 0,
        })
    }

    /// Dials the peers as `link` says (TLS verified against `--tls-ca`, or plaintext).
    pub fn with_link(mut self, link: Link) -> ControllerClient {
        self.link = link;
        self.cache.lock().channels.clear();
        self
    }

    /// Sets how long one attempt and one whole call (with redirects and retries) may take.
    pub fn with_timeouts(mut self, attempt: Duration, call: Duration) -> ControllerClient {
        self.attempt_timeout = attempt;
        self.call_timeout = call.max(attempt);
        self
    }

    /// Heartbeats say they come from process `incarnation` of the member (non-zero, new at
    /// every start of the process): a leader that restarted is then replaced rather than
    /// resuming its epoch (see [`crate::rules`]). One client heartbeats for one member: it
    /// also remembers whether this process had an answer yet and the epoch the controller said
    /// it had led in an earlier life.
    pub fn with_incarnation(mut self, incarnation: u64) -> ControllerClient {
        self.incarnation = incarnation;
        self
    }

    /// The controller leader last seen answering, if any.
    pub fn leader(&self) -> Option<String> {
        self.cache.lock().leader.clone()
    }

    /// Reports a member: its address, the epoch it believes current, where its log ends and the
    /// confirm offset it knows (0: none it vouches for); see [`HeartbeatAnswer`].
    pub async fn heartbeat(
        &self,
        group: &str,
        replica_id: u64,
        address: &str,
        epoch: u64,
        log_end_offset: u64,
        confirm_offset: u64,
    ) -> Result<HeartbeatAnswer, ClientError> {
        let (first, restarted_epoch) = {
            let cache = self.cache.lock();
            (!cache.answered, cache.restarted_epoch)
        };
        let req = proto::HeartbeatRequest {
            group: group.to_string(),
            replica_id,
            address: address.to_string(),
            epoch,
            log_end_offset,
            confirm_offset,
            incarnation: self.incarnation,
            first,
            restarted_epoch,
        };
        let (r, sent) = self
            .call(self.call_timeout, |mut c| {
                let req = req.clone();
                async move { c.heartbeat(req).await }
            })
            .await?;
        {
            let mut cache = self.cache.lock();
            cache.answered = true;
            if r.restarted {
                let epoch = r.state.as_ref().map_or(0, |s| s.epoch);
                cache.restarted_epoch = cache.restarted_epoch.max(epoch);
            }
        }
        Ok(HeartbeatAnswer {
            state: r.state.unwrap_or_default(),
            lease_until: (r.lease_ms > 0).then(|| sent + Duration::from_millis(r.lease_ms)),
            switchover_to: r.switchover_to,
            interval: Duration::from_millis(r.heartbeat_interval_ms),
        })
    }

    /// The leader at `epoch` sets the in-sync set (which must contain it).
    pub async fn alter_in_sync(
        &self,
        group: &str,
        epoch: u64,
        leader: u64,
        in_sync: impl IntoIterator<Item = u64>,
    ) -> Result<proto::GroupState, ClientError> {
        let req = proto::AlterInSyncRequest {
            group: group.to_string(),
            epoch,
            leader,
            in_sync: in_sync.into_iter().collect(),
        };
        let (r, _) = self
            .call(self.call_timeout, |mut c| {
                let req = req.clone();
                async move { c.alter_in_sync(req).await }
            })
            .await?;
        Ok(r.state.unwrap_or_default())
    }

    /// Asks to move leadership of `group` (to `target`, or the most caught-up in-sync member)
    /// and waits until the target leads; returns the target and the new state.
    pub async fn switchover(
        &self,
        group: &str,
        target: Option<u64>,
    ) -> Result<(u64, proto::GroupState), ClientError> {
        let req = proto::SwitchoverRequest {
            group: group.to_string(),
            target,
        };
        // The controller answers when the handover is done: allow for its own timeout.
        let (r, _) = self
            .call_with(
                self.attempt_timeout + Duration::from_secs(10),
                self.call_timeout + Duration::from_secs(10),
                |mut c| {
                    let req = req.clone();
                    async move { c.switchover(req).await }
                },
            )
            .await?;
        Ok((r.target, r.state.unwrap_or_default()))
    }

    /// The leader at `epoch` hands over to `target`, which holds its whole log.
    pub async fn complete_switchover(
        &self,
        group: &str,
        epoch: u64,
        target: u64,
    ) -> Result<proto::GroupState, ClientError> {
        let req = proto::CompleteSwitchoverRequest {
            group: group.to_string(),
            epoch,
            target,
        };
        let (r, _) = self
            .call(self.call_timeout, |mut c| {
                let req = req.clone();
                async move { c.complete_switchover(req).await }
            })
            .await?;
        Ok(r.state.unwrap_or_default())
    }

    /// Every group's state, as the controller leader sees it.
    pub async fn get_groups(&self) -> Result<proto::GetGroupsResponse, ClientError> {
        let (r, _) = self
            .call(self.call_timeout, |mut c| async move {
                c.get_groups(proto::GetGroupsRequest {}).await
            })
            .await?;
        Ok(r)
    }

    async fn call<T, F, Fut>(&self, total: Duration, f: F) -> Result<(T, Instant), ClientError>
    where
        F: FnMut(Grpc<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        self.call_with(self.attempt_timeout, total, f).await
    }

    /// Tries the cached leader, then each peer in turn, following redirects, until `total`
    /// has passed. Returns the answer and the instant just before its request was sent.
    async fn call_with<T, F, Fut>(
        &self,
        attempt: Duration,
        total: Duration,
        mut f: F,
    ) -> Result<(T, Instant), ClientError>
    where
        F: FnMut(Grpc<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        let start = Instant::now();
        let mut last;
        let mut backoff = Duration::from_millis(20);
        loop {
            let (addr, channel) = self.pick()?;
            let sent = Instant::now();
            let left = total.saturating_sub(start.elapsed());
            let outcome = tokio::time::timeout(attempt.min(left), f(Grpc::new(channel))).await;
            match outcome {
                Ok(Ok(r)) => {
                    self.cache.lock().leader = Some(addr);
                    return Ok((r.into_inner(), sent));
                }
                Ok(Err(s)) => {
                    let hint = s
                        .metadata()
                        .get(LEADER_METADATA)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    last = format!("{addr}: {:?}: {}", s.code(), crate::link::describe(&s));
                    match (s.code(), hint) {
                        (Code::Unavailable, Some(leader)) if leader != addr => {
                            self.cache.lock().leader = Some(leader);
                            continue_if_time(start, total, &last)?;
                            continue;
                        }
                        (
                            Code::Unavailable
                            | Code::Unknown
                            | Code::Cancelled
                            | Code::DeadlineExceeded,
                            _,
                        ) if !is_final_deadline(&s) => {}
                        (code, _) => {
                            return Err(ClientError::Refused {
                                code,
                                message: s.message().to_string(),
                            })
                        }
                    }
                }
                Err(_) => last = format!("{addr}: no answer within {attempt:?}"),
            }
            self.forget(&addr);
            continue_if_time(start, total, &last)?;
            tokio::time::sleep(backoff.min(total.saturating_sub(start.elapsed()))).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// The address to try next and its channel.
    fn pick(&self) -> Result<(String, Channel), ClientError> {
        let mut cache = self.cache.lock();
        let addr = match &cache.leader {
            Some(l) => l.clone(),
            None => {
                let i = cache.next % self.peers.len();
                cache.next = cache.next.wrapping_add(1);
                self.peers[i].clone()
            }
        };
        if let Some(ch) = cache.channels.get(&addr) {
            return Ok((addr, ch.clone()));
        }
        let ch = self
            .link
            .endpoint(&addr)
            .map_err(|e| ClientError::BadPeer {
                peer: addr.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(Duration::from_millis(500))
            .connect_lazy();
        cache.channels.insert(addr.clone(), ch.clone());
        Ok((addr, ch))
    }

    /// `addr` did not answer as leader: try another next time.
    fn forget(&self, addr: &str) {
        let mut cache = self.cache.lock();
        if cache.leader.as_deref() == Some(addr) {
            cache.leader = None;
        }
    }
}

/// A switchover's own DEADLINE_EXCEEDED is the controller's answer, not a transport failure.
fn is_final_deadline(s: &Status) -> bool {
    s.code() == Code::DeadlineExceeded && s.message().starts_with("switchover")
}

fn continue_if_time(start: Instant, total: Duration, last: &str) -> Result<(), ClientError> {
    if start.elapsed() >= total {
        return Err(ClientError::Unavailable {
            waited: total,
            last: last.to_string(),
        });
    }
    Ok(())
}
