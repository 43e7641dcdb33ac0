//! The `ferromq.controller.v1.Controller` gRPC service, served by every controller peer.
//!
//! Only the Raft leader answers: liveness and pending switchovers live in its memory, and a
//! lease must come from the peer that decides elections. Any other peer refuses with
//! `UNAVAILABLE`, the message "not the controller leader, try ADDRESS" and the address in the
//! [`LEADER_METADATA`] key, which [`crate::ControllerClient`] follows.
//!
//! Refusals map to one status each: `INVALID_ARGUMENT` (malformed request, unknown member,
//! in-sync set without the leader), `NOT_FOUND` (unknown group), `FAILED_PRECONDITION` (stale
//! epoch, caller not the leader, target not in sync, no pending switchover, no leader),
//! `DEADLINE_EXCEEDED` (a switchover the leader did not complete in time).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_proto::controller::{self as proto, controller_server::Controller as ControllerRpc};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::node::{log_election, Controller, ProposeError};
use crate::raft::NodeId;
use crate::state::{Command, CommandError, ElectionKind, GroupState};

/// gRPC metadata key carrying the controller leader's address on a redirect.
pub const LEADER_METADATA: &str = "ferromq-controller-leader";

/// The service over one controller peer.
pub struct ControllerService {
    pub controller: Arc<Controller>,
}

/// The status of a refused command.
pub fn refusal(e: &CommandError) -> Status {
    let msg = e.to_string();
    match e {
        CommandError::UnknownGroup { .. } => Status::not_found(msg),
        CommandError::UnknownMember { .. }
        | CommandError::LeaderNotInSync { .. }
        | CommandError::Invalid(_) => Status::invalid_argument(msg),
        CommandError::StaleEpoch { .. }
        | CommandError::NotLeader { .. }
        | CommandError::NotInSync { .. }
        | CommandError::NoLeader { .. }
        | CommandError::NoSwitchoverPending { .. } => Status::failed_precondition(msg),
    }
}

impl Controller {
    /// The refusal a non-leader answers with.
    fn redirect(&self, leader: Option<NodeId>) -> Status {
        match leader
            .filter(|l| *l != self.id)
            .and_then(|l| self.peer_address(l))
        {
            Some(addr) => {
                let mut s = Status::unavailable(format!("not the controller leader, try {addr}"));
                if let Ok(v) = addr.parse() {
                    s.metadata_mut().insert(LEADER_METADATA, v);
                }
                s
            }
            None => Status::unavailable("not the controller leader, and no leader is known yet"),
        }
    }

    fn check_leader(&self) -> Result<(), Status> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(self.redirect(self.leader()))
        }
    }

    fn status(&self, e: ProposeError) -> Status {
        match e {
            ProposeError::NotLeader(l) => self.redirect(l),
            ProposeError::Raft(m) => Status::unavailable(m),
        }
    }

    async fn write(&self, cmd: Command) -> Result<GroupState, Status> {
        match self.propose(cmd).await {
            Ok(Ok(g)) => Ok(g),
            Ok(Err(e)) => Err(refusal(&e)),
            Err(e) => Err(self.status(e)),
        }
    }

    /// The wire view of a group, with what this leader saw of each member.
    fn view(&self, name: &str, g: &GroupState) -> proto::GroupState {
        let now = Instant::now();
        let el = self.elector.lock();
        proto::GroupState {
            group: name.to_string(),
            leader: g.leader,
            leader_address: g.leader_address().unwrap_or_default().to_string(),
            epoch: g.epoch,
            in_sync: g.in_sync.iter().copied().collect(),
            members: g
                .members
                .iter()
                .map(|(id, addr)| {
                    let seen = el.seen(name, *id);
                    proto::Member {
                        replica_id: *id,
                        address: addr.clone(),
                        log_end_offset: seen.map_or(0, |s| s.log_end),
                        heartbeat_age_ms: seen.map_or(-1, |s| {
                            now.saturating_duration_since(s.at).as_millis() as i64
                        }),
                        alive: el.is_alive(name, *id, now),
                    }
                })
                .collect(),
            confirm_floor: el.floor(name, g),
        }
    }

    fn existing(&self, group: &str) -> Result<GroupState, Status> {
        self.group(group).ok_or_else(|| {
            refusal(&CommandError::UnknownGroup {
                group: group.to_string(),
            })
        })
    }
}

fn check_group(group: &str) -> Result<(), Status> {
    if group.is_empty()
        || group.len() > 127
        || !group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '%' | '|'))
    {
        return Err(Status::invalid_argument(format!(
            "group {group:?} must be 1 to 127 letters, digits, '-', '_', '.', '%' or '|'"
        )));
    }
    Ok(())
}

fn check_address(address: &str) -> Result<(), Status> {
    match address.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(()),
        _ => Err(Status::invalid_argument(format!(
            "address {address:?} is not host:port"
        ))),
    }
}

#[tonic::async_trait]
impl ControllerRpc for ControllerService {
    #[tracing::instrument(skip_all, name = "controller.heartbeat", fields(group = %req.get_ref().group, replica = req.get_ref().replica_id))]
    async fn heartbeat(
        &self,
        req: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        check_group(&r.group)?;
        check_address(&r.address)?;
        let c = &self.controller;
        c.check_leader()?;
        // Expiry counts from here, after the member sent: its lease (counted from its sending)
        // ends first.
        let received = Instant::now();
        let previous_life = c.elector.lock().record_from(
            &r.group,
            r.replica_id,
            r.incarnation,
            r.log_end_offset,
            r.confirm_offset,
            received,
        );
        let before = c.group(&r.group);
        let led_before = before
            .as_ref()
            .is_some_and(|b| b.epoch > 0 && b.leader == Some(r.replica_id));
        let known = before.as_ref().and_then(|g| g.members.get(&r.replica_id));
        if known != Some(&r.address) {
            let g = c
                .write(Command::Join {
                    group: r.group.clone(),
                    replica: r.replica_id,
                    address: r.address.clone(),
                })
                .await?;
            info!(group = %r.group, replica = r.replica_id, address = %r.address, "group member registered");
            let had_leader = before.as_ref().is_some_and(|b| b.epoch > 0);
            if !had_leader && g.leader == Some(r.replica_id) {
                log_election(
                    &r.group,
                    &before.unwrap_or_default(),
                    &g,
                    ElectionKind::Clean,
                );
                c.count_election(ElectionKind::Clean);
            }
        }
        let mut g = c.existing(&r.group)?;
        // A restart shows as a new incarnation (seen by this controller leader), as a process's
        // first heartbeat finding it the leader already, or as the member saying an earlier
        // answer told it so (a controller leader elected since knows nothing of the first two).
        // A member that names no incarnation takes no part in this.
        let restart = previous_life.or_else(|| {
            let first_as_leader = r.first && r.incarnation != 0 && led_before;
            let says_so = r.restarted_epoch != 0 && r.restarted_epoch == g.epoch;
            (first_as_leader || says_so).then_some(received)
        });
        if let Some(last_heard) = restart.filter(|_| g.leader == Some(r.replica_id)) {
            let mut el = c.elector.lock();
            if !el.restarted_leader(&r.group, r.replica_id, g.epoch) {
                warn!(group = %r.group, replica = r.replica_id, epoch = g.epoch,
                      "the group's leader restarted: it leads no more at this epoch; another in-sync member is elected once its previous life's lease has ended");
                el.leader_restarted(&r.group, r.replica_id, g.epoch, last_heard);
            }
        }
        let (mut lease, mut switchover_to) = (None, None);
        if g.leader == Some(r.replica_id) {
            // A lease only from a confirmed leader reading the current state.
            c.confirm_leadership().await.map_err(|e| c.status(e))?;
            g = c.existing(&r.group)?;
            let mut el = c.elector.lock();
            lease = el.lease_for(&r.group, &g, r.replica_id, r.epoch);
            if lease.is_some() {
                switchover_to = el.pending_switchover(&r.group, &g, Instant::now());
            }
        }
        Ok(Response::new(proto::HeartbeatResponse {
            state: Some(c.view(&r.group, &g)),
            lease_ms: lease.map_or(0, |l| l.as_millis() as u64),
            switchover_to,
            heartbeat_interval_ms: c.heartbeat_interval.as_millis() as u64,
            restarted: c
                .elector
                .lock()
                .restarted_leader(&r.group, r.replica_id, g.epoch),
        }))
    }

    #[tracing::instrument(skip_all, name = "controller.alter_in_sync", fields(group = %req.get_ref().group, epoch = req.get_ref().epoch))]
    async fn alter_in_sync(
        &self,
        req: Request<proto::AlterInSyncRequest>,
    ) -> Result<Response<proto::AlterInSyncResponse>, Status> {
        let r = req.into_inner();
        check_group(&r.group)?;
        let c = &self.controller;
        c.check_leader()?;
        let in_sync: BTreeSet<_> = r.in_sync.iter().copied().collect();
        let before = c.existing(&r.group)?;
        if c.elector
            .lock()
            .restarted_leader(&r.group, r.leader, r.epoch)
        {
            return Err(Status::failed_precondition(format!(
                "replica {} of group {:?} restarted since it was elected leader at epoch {}: it leads no more at that epoch",
                r.leader, r.group, r.epoch
            )));
        }
        let g = c
            .write(Command::AlterInSync {
                group: r.group.clone(),
                epoch: r.epoch,
                leader: r.leader,
                in_sync,
            })
            .await?;
        if g.in_sync != before.in_sync {
            info!(group = %r.group, epoch = g.epoch, from = ?before.in_sync, to = ?g.in_sync, "in-sync set changed");
        }
        Ok(Response::new(proto::AlterInSyncResponse {
            state: Some(c.view(&r.group, &g)),
        }))
    }

    #[tracing::instrument(skip_all, name = "controller.switchover", fields(group = %req.get_ref().group))]
    async fn switchover(
        &self,
        req: Request<proto::SwitchoverRequest>,
    ) -> Result<Response<proto::SwitchoverResponse>, Status> {
        let r = req.into_inner();
        check_group(&r.group)?;
        let c = &self.controller;
        c.check_leader()?;
        c.confirm_leadership().await.map_err(|e| c.status(e))?;
        let g = c.existing(&r.group)?;
        let (target, timeout) = {
            let mut el = c.elector.lock();
            let t = el
                .request_switchover(&r.group, &g, r.target, Instant::now())
                .map_err(|e| refusal(&e))?;
            (t, el.timing.switchover_timeout)
        };
        info!(group = %r.group, from = ?g.leader, to = target, epoch = g.epoch, "switchover asked; waiting for the leader to hand over");
        // Answer once the target leads, or the switchover ended otherwise.
        let mut changes = c.changes.clone();
        let deadline = tokio::time::Instant::now() + timeout + Duration::from_millis(500);
        loop {
            let now = c.existing(&r.group)?;
            if now.epoch > g.epoch {
                if now.leader == Some(target) {
                    return Ok(Response::new(proto::SwitchoverResponse {
                        state: Some(c.view(&r.group, &now)),
                        target,
                    }));
                }
                return Err(Status::aborted(format!(
                    "switchover of group {:?} to replica {target} overtaken: epoch {} has leader {:?}",
                    r.group, now.epoch, now.leader
                )));
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Status::unavailable("controller stopping")),
                Err(_) => {
                    warn!(group = %r.group, target, "switchover not completed in time");
                    return Err(Status::deadline_exceeded(format!(
                        "switchover of group {:?} to replica {target} not completed within {timeout:?}: the leader did not hand over (is it alive, and is {target} catching up?)",
                        r.group
                    )));
                }
            }
        }
    }

    #[tracing::instrument(skip_all, name = "controller.complete_switchover", fields(group = %req.get_ref().group, target = req.get_ref().target))]
    async fn complete_switchover(
        &self,
        req: Request<proto::CompleteSwitchoverRequest>,
    ) -> Result<Response<proto::CompleteSwitchoverResponse>, Status> {
        let r = req.into_inner();
        check_group(&r.group)?;
        let c = &self.controller;
        c.check_leader()?;
        c.confirm_leadership().await.map_err(|e| c.status(e))?;
        let before = c.existing(&r.group)?;
        let cmd = {
            let mut el = c.elector.lock();
            let cmd = el
                .complete_switchover(&r.group, &before, r.epoch, r.target, Instant::now())
                .map_err(|e| refusal(&e))?;
            el.begin_election(&r.group);
            cmd
        };
        let result = c.write(cmd).await;
        c.elector.lock().end_election(&r.group);
        let g = result?;
        log_election(&r.group, &before, &g, ElectionKind::Switchover);
        c.count_election(ElectionKind::Switchover);
        Ok(Response::new(proto::CompleteSwitchoverResponse {
            state: Some(c.view(&r.group, &g)),
        }))
    }

    #[tracing::instrument(skip_all, name = "controller.get_groups")]
    async fn get_groups(
        &self,
        _req: Request<proto::GetGroupsRequest>,
    ) -> Result<Response<proto::GetGroupsResponse>, Status> {
        let c = &self.controller;
        c.check_leader()?;
        c.confirm_leadership().await.map_err(|e| c.status(e))?;
        Ok(Response::new(proto::GetGroupsResponse {
            groups: c.groups().iter().map(|(name, g)| c.view(name, g)).collect(),
            controller_id: c.id(),
            controller_address: c.peer_address(c.id()).unwrap_or_default().to_string(),
        }))
    }
}
