//! The follower's end of log shipping: while this member follows a known leader it holds one
//! `Fetch` stream to it, cuts its log where its epoch history and the leader's diverge, writes
//! every batch at the same offsets, reports how far it holds the log after each, and dispatches
//! up to the confirm offset the leader sends. A broken stream is opened again after a short
//! pause; a new leader or epoch closes it and opens one to the new leader. A member that would
//! have to cut below what it already dispatched refuses, says it must be rebuilt (log and
//! `ferromq_replication_rebuild_needed`) and retries, in case a leader whose history reaches
//! far enough is elected.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq_proto::replication::{
    self as pb, fetch_request, fetch_response, replication_client::ReplicationClient,
};
use ferromq_store::epochs::{divergence, EpochStart};
use ferromq_store::{FlushMode, RawBatch};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{error, info, warn};

use super::fetch::{KEEPALIVE, MAX_MESSAGE};
use super::{Replica, Role};
use crate::credentials::Signer;
use ferromq_controller::Link;

/// Pause before a broken stream is opened again.
const RETRY: Duration = Duration::from_millis(200);

/// Follows whichever leader the role names until `shutdown` flips.
pub async fn run(replica: Arc<Replica>, shutdown: watch::Receiver<bool>) {
    run_signed(replica, shutdown, Signer::default(), Link::plaintext()).await
}

/// [`run`], with each stream signed by `signer` (a group with `--auth`: the bootstrap super
/// user every member is started with; the leader refuses unsigned streams) and dialled as
/// `link` says (TLS verified against `--tls-ca`, or plaintext).
pub async fn run_signed(
    replica: Arc<Replica>,
    mut shutdown: watch::Receiver<bool>,
    signer: Signer,
    link: Link,
) {
    let mut role = replica.watch_role();
    let mut warned = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let current = role.borrow_and_update().clone();
        let target = match &current {
            Role::Follower {
                epoch,
                leader: Some((id, addr)),
            } if *id != replica.cfg.replica_id => Some((*epoch, addr.clone())),
            _ => None,
        };
        let Some((epoch, addr)) = target else {
            tokio::select! {
                _ = role.changed() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        };
        match follow(
            &replica,
            epoch,
            &addr,
            (&signer, &link),
            &mut role,
            &mut shutdown,
        )
        .await
        {
            Ok(()) => warned = false,
            Err(e) => {
                if !warned {
                    let error = e
                        .downcast_ref::<tonic::transport::Error>()
                        .map(|t| ferromq_controller::describe(t))
                        .or_else(|| {
                            e.downcast_ref::<tonic::Status>()
                                .map(|s| ferromq_controller::describe(s))
                        })
                        .unwrap_or_else(|| format!("{e:#}"));
                    warn!(group = %replica.cfg.group, leader = %addr, epoch, %error, "cannot follow the leader; retrying");
                    warned = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

fn progress(p: pb::Progress) -> pb::FetchRequest {
    pb::FetchRequest {
        kind: Some(fetch_request::Kind::Progress(p)),
    }
}

/// What this member last told the leader, so that a batch that moved nothing is answered only
/// when the answer says something new.
struct Reported {
    held: pb::Progress,
    at: Instant,
}

impl Reported {
    /// Answer a batch? Always after records (the confirm offset waits for it); after an empty
    /// one (a new confirm offset, a keepalive) only if the log or its flushed end moved since
    /// the last report, or that report is half a keepalive old: an idle follower then still
    /// answers every keepalive and stays in the in-sync set, and under load the leader's
    /// confirm-only batches no longer cost a report each.
    fn due(&self, now: &pb::Progress, moved: bool) -> bool {
        moved || *now != self.held || self.at.elapsed() >= KEEPALIVE / 2
    }
}

/// Where this member's log and its flushed part end.
fn held(r: &Replica) -> pb::Progress {
    pb::Progress {
        log_end: r.store.log_end(),
        flushed: r.store.flushed_end(),
    }
}

/// Reports `now` to the leader.
async fn report(
    tx: &mpsc::Sender<pb::FetchRequest>,
    now: pb::Progress,
) -> anyhow::Result<Reported> {
    tx.send(progress(now)).await?;
    Ok(Reported {
        held: now,
        at: Instant::now(),
    })
}

/// One stream to the leader at `addr` in `epoch`; returns when the role moves on.
async fn follow(
    r: &Arc<Replica>,
    epoch: u64,
    addr: &str,
    (signer, link): (&Signer, &Link),
    role: &mut watch::Receiver<Role>,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let channel = crate::serve::bulk_channel(link.endpoint(addr)?)
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let mut client = ReplicationClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let (tx, rx) = mpsc::channel::<pb::FetchRequest>(8);
    let last = r.history().last().copied();
    tx.send(pb::FetchRequest {
        kind: Some(fetch_request::Kind::Start(pb::Start {
            group: r.cfg.group.clone(),
            replica_id: r.cfg.replica_id,
            epoch,
            last_epoch: last.map_or(0, |e| e.epoch),
            log_end: r.store.log_end(),
            segment_size: r.store.config().segment_size,
        })),
    })
    .await?;
    let mut open = tonic::Request::new(ReceiverStream::new(rx));
    if let Some((authorization, date_time)) = signer.headers() {
        let md = open.metadata_mut();
        md.insert(ferromq_auth::signature::AUTHORIZATION_HEADER, authorization);
        md.insert(ferromq_auth::signature::DATE_TIME_HEADER, date_time);
    }
    let mut stream = client.fetch(open).await?.into_inner();
    let Some(pb::FetchResponse {
        kind: Some(fetch_response::Kind::Hello(hello)),
    }) = stream.message().await?
    else {
        anyhow::bail!("the leader did not start with Hello");
    };
    let theirs: Vec<EpochStart> = hello
        .history
        .iter()
        .map(|e| EpochStart {
            epoch: e.epoch,
            start: e.start,
        })
        .collect();
    let end = r.store.log_end();
    let cut = divergence(&r.history(), end, &theirs, hello.leader_end);
    let dispatched = r.store.dispatched_end();
    if cut < end && cut < dispatched {
        // Consumers may have read records past the cut: taking them back would break what the
        // group promised them. This member cannot follow; an operator must rebuild it (empty
        // its data directory) or bring back the member that holds the confirmed log.
        if r.rebuild_needed() != Some((cut, dispatched)) {
            error!(group = %r.cfg.group, replica = r.cfg.replica_id, leader = %addr, epoch, cut, dispatched, log_end = end,
                   "this replica must be rebuilt: the leader's history ends at {cut}, below what this member already dispatched to consumers ({dispatched}); it will not cut its log and cannot follow");
        }
        r.set_rebuild_needed(Some((cut, dispatched)));
        anyhow::bail!(
            "the leader's history ends at {cut}, below what this member dispatched ({dispatched}): this replica must be rebuilt"
        );
    }
    r.set_rebuild_needed(None);
    if cut < end {
        let store = r.store.clone();
        let dropped = tokio::task::spawn_blocking(move || store.truncate(cut)).await??;
        r.epochs().truncate_from(cut)?;
        info!(group = %r.cfg.group, from = cut, bytes = dropped, "cut the log where it diverges from the leader's");
    }
    let mut reported = report(&tx, held(r)).await?;
    info!(group = %r.cfg.group, leader = %addr, epoch, from = r.store.log_end(), "following the leader");
    loop {
        let msg = tokio::select! {
            m = stream.message() => m?,
            c = role.changed() => {
                c?;
                let still = matches!(&*role.borrow(), Role::Follower { epoch: e, leader: Some((_, a)) } if *e == epoch && a == addr);
                if still { continue; }
                return Ok(());
            }
            _ = shutdown.changed() => return Ok(()),
        };
        let Some(pb::FetchResponse {
            kind: Some(fetch_response::Kind::Batch(b)),
        }) = msg
        else {
            anyhow::bail!("the leader ended the stream");
        };
        let had = r.store.log_end();
        if b.from != had {
            anyhow::bail!("batch at {} but the log ends at {had}", b.from);
        }
        let moved = !b.data.is_empty() || b.filler_to.is_some();
        if moved {
            let last = r.history().last().map_or(0, |e| e.epoch);
            if b.epoch_start == Some(b.from) || b.epoch > last {
                r.epochs().begin(b.epoch, b.from)?;
            }
            let raw = RawBatch {
                from: b.from,
                bytes: b.data,
                filler_to: b.filler_to,
            };
            // A copy into the active segment is done here; a batch that needs a new segment or
            // file (or finds the writer busy) goes to the blocking pool.
            let end = match r.store.try_append_raw(&raw)? {
                Some(end) => end,
                None => {
                    let store = r.store.clone();
                    tokio::task::spawn_blocking(move || store.append_raw(&raw)).await??
                }
            };
            if r.store.config().flush == FlushMode::Sync {
                r.store.durable(end).await?;
            }
            r.batches_written.fetch_add(1, Ordering::Relaxed);
        }
        let end = r.store.log_end();
        let limit = b.confirm.min(end);
        if limit > r.store.dispatch_limit() || r.store.dispatch_limit() > end {
            r.store.set_dispatch_limit(limit);
        }
        r.progress.note_confirm(limit);
        let now = held(r);
        if reported.due(&now, moved) {
            reported = report(&tx, now).await?;
        }
    }
}
