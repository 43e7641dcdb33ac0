//! FerroMQ's replication controller: a small Raft group (openraft 0.9) that runs inside the
//! name server processes and decides, for every replicated broker group, who leads.
//!
//! # State (replicated through Raft, on disk on every peer)
//! Per broker group ([`state::GroupState`]):
//! - `members`: replica id -> `host:port`, registered by a member's first heartbeat;
//! - `leader`: a replica id, or none (a group whose leader died with no in-sync member alive);
//! - `epoch`: incremented by every leader change, including to "none"; it never decreases;
//! - `in_sync`: the members that hold everything the leader acknowledged; it contains the
//!   leader whenever there is one.
//!
//! # Commands ([`state::Command`]), applied only through Raft
//! - `Join`: register a member or update its address; a group that never had a leader
//!   (epoch 0) elects this first member at epoch 1 with in_sync = {it}.
//! - `Elect`: compare-and-set on the epoch (`expected_epoch` -> `expected_epoch + 1`), so a
//!   proposal decided on a stale view fails on every replica. A clean or switchover election
//!   must pick a member of the current in-sync set and can only shrink it; an unclean one
//!   leaves the new leader alone in the set.
//! - `AlterInSync`: only the leader at the current epoch, and the set must contain it.
//! - `RaiseConfirmFloor`: raises the group's `confirm_floor`, the highest confirm offset a
//!   member reported (what some member may have dispatched); an unclean election resets it.
//!
//! # What is not replicated
//! Member liveness (last heartbeat instant, reported log end and confirm offset; the highest
//! confirm offset is also persisted, see `RaiseConfirmFloor`), pending switchovers and
//! elections being proposed live in the Raft leader's memory ([`rules::Elector`]) and are
//! forgotten when leadership moves. A new Raft leader therefore knows nobody is alive, and
//! it waits `member-expiry` before any election (see below), during which every live member
//! heartbeats to it.
//!
//! # Leases, and why two group leaders never both act
//! A group leader may acknowledge writes only while it holds a lease. A heartbeat answer
//! carries a lease (default 2 s) only when the caller is the leader at the current epoch and
//! knows that epoch, only after the controller confirmed with a Raft quorum that it still
//! leads (`ensure_linearizable`, which also makes the state read current), and never while an
//! election of that group is being proposed.
//! - The member counts its lease from the instant it SENT the heartbeat (S); the controller
//!   counts its expiry from the instant it RECEIVED it (R >= S). The controller replaces a
//!   leader only when `now - R > member-expiry`, so the election happens after
//!   `S + member-expiry > S + lease`: the old lease has ended first, whatever the network
//!   delay (monotonic clocks on both sides; only their rates must roughly agree, which the gap
//!   `member-expiry - lease` covers).
//! - Leases granted by an earlier Raft leader: the earlier leader confirmed leadership with a
//!   quorum after receiving the heartbeat, so the new leader's term began after S (a quorum
//!   member acknowledged the old term after S, and voted for the new one later). The new
//!   leader waits `member-expiry` after it took office before electing anything, so such a
//!   lease (ending at S + lease) has ended too. A member it has not heard from counts as last
//!   heard at the instant it took office.
//! - Switchover: the controller elects the target at once, without waiting out the lease,
//!   because the old leader asked for it after it had stopped acknowledging.
//!
//! # Election rules (see [`rules`])
//! Only on the Raft leader, every 100 ms: a leader silent for longer than `member-expiry` is
//! replaced by the alive (heard within `member-expiry`) in-sync member with the highest reported
//! log end (ties: lowest replica id), epoch + 1, in_sync = the alive in-sync members. With no
//! in-sync member alive the group gets no leader (epoch + 1, in-sync set kept) until one comes
//! back, unless unclean election is enabled (`--unclean-election`, logged as an error at every
//! use): then the alive member with the highest log end leads alone. A member whose reported
//! log end is below the group's confirm floor (the highest confirm offset any member reported,
//! kept in memory and persisted through Raft) is never elected cleanly: after every member of
//! a group was killed, the group waits for a member whose log reaches what was dispatched
//! (the safety argument is in [`rules`]).
//!
//! # Switchover
//! An admin's `Switchover` marks a pending switchover (in memory, `switchover-timeout`, 5 s);
//! the leader learns it in its next heartbeat answer (`switchover_to`), stops acknowledging,
//! waits until the target holds its whole log and calls `CompleteSwitchover`; the controller
//! then elects the target at epoch + 1 with the same in-sync set. The admin's call answers once
//! the target leads.
//!
//! # Failure modes
//! - A controller peer dies: the others elect a Raft leader within about a second (election
//!   timeout 0.5-1 s); no group election happens for `member-expiry` after that; members follow
//!   the "try ADDRESS" redirect ([`ControllerClient`]).
//! - A majority of controller peers is down: no heartbeat is answered, so no lease is renewed and
//!   every group leader stops acknowledging when its lease ends (the broker side's rule).
//!   Nothing is elected; state on disk is intact.
//! - Every controller restarts: Raft log, vote and state machine are on disk ([`store`]); epochs
//!   and in-sync sets are as before; liveness restarts from nothing (the wait above).
//! - A controller's disk is lost: it rejoins as an empty follower and receives the log or a
//!   snapshot from the leader; the lowest-id peer would re-initialize the same membership,
//!   which cannot override the others' longer logs.
//!
//! # Map
//! [`state`] (replicated data and commands), [`rules`] (election decisions with an explicit
//! clock), [`store`] (redb storage), [`raft`] (openraft types and gRPC transport), [`node`]
//! (one peer: Raft node plus election loop), [`service`] (the Controller gRPC service),
//! [`client`] ([`ControllerClient`]), [`link`] (plaintext or TLS dialling of every internal
//! link, with `--tls-ca`).

pub mod client;
pub mod link;
pub mod node;
pub mod raft;
pub mod rules;
pub mod service;
pub mod state;
pub mod store;

pub use client::{ClientError, ControllerClient, HeartbeatAnswer};
pub use ferromq_proto::controller as proto;
pub use link::{describe, BundleError, Link};
pub use node::{Controller, ControllerConfig, ControllerError, MetricsSnapshot};
pub use rules::Timing;
pub use service::ControllerService;
pub use state::{ElectionKind, GroupState, ReplicaId};

use std::sync::Arc;

use ferromq_proto::controller::{controller_server::ControllerServer, raft_server::RaftServer};

/// The two gRPC services a controller peer serves on its name server's port.
pub fn services(
    c: &Arc<Controller>,
) -> (
    RaftServer<raft::RaftService>,
    ControllerServer<ControllerService>,
) {
    (
        RaftServer::new(raft::RaftService {
            raft: c.raft.clone(),
        }),
        ControllerServer::new(ControllerService {
            controller: c.clone(),
        }),
    )
}
