//! The leader's end of log shipping: the `Fetch` stream each follower holds open.
//!
//! After the follower's `Start` the leader sends its epoch history (`Hello`); the follower cuts
//! its log where the histories diverge and reports where its log now ends. From there the
//! leader sends whole records in batches of about [`BATCH_BYTES`], cut at epoch boundaries and
//! at segment ends. With nothing new to send it sends an empty batch only when that tells the
//! follower something: a confirm offset it has not had yet, or every [`KEEPALIVE`] (so an idle
//! follower keeps reporting and stays in the in-sync set). The follower's progress reports move
//! the confirm offset ([`super::progress`]). The stream ends when this member stops leading the
//! epoch.

use std::sync::Arc;
use std::time::Duration;

use ferromq_proto::replication::{
    self as pb, fetch_request, fetch_response, replication_server::Replication,
};
use ferromq_store::epochs::EpochStart;
use ferromq_store::FlushMode;
use futures_util::StreamExt;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::{debug, info, Instrument};

use super::{Replica, Role};
use crate::rpc::BoxStream;

/// About how many bytes of records one batch carries.
pub const BATCH_BYTES: usize = 1 << 20;
/// An idle stream still carries the confirm offset this often.
pub const KEEPALIVE: Duration = Duration::from_millis(200);
/// A confirm offset with no records to ride on waits this long for some before it goes alone.
/// Under load every follower report moves the confirm offset, and a batch of its own for each
/// move (and the follower's report on it) made a batch of records cost four messages on the
/// link instead of two; the next records usually come sooner than this. What
/// waits for it on the follower (dispatch, the journal, reads) lags by at most this much.
const CONFIRM_LINGER: Duration = Duration::from_millis(5);
/// A batch starting this close to the log's end is read on the stream's task: those pages were
/// written through the mapping moments ago and are in memory, so the read is a copy. Older
/// records (a follower catching up) are read on the blocking pool, as they may fault from disk.
const READ_INLINE_WITHIN: u64 = 4 * BATCH_BYTES as u64;
/// Largest gRPC message of the replication service (a batch holds at least one record, and a
/// record can be as large as the largest body).
pub const MAX_MESSAGE: usize = 256 << 20;

/// The replication service a member serves on its internal port.
#[derive(Clone)]
pub struct ReplicationApi {
    replica: Arc<Replica>,
}

impl ReplicationApi {
    pub fn new(replica: Arc<Replica>) -> ReplicationApi {
        ReplicationApi { replica }
    }
}

/// The epoch that wrote `offset`, and where the next epoch starts after it (if any).
fn epoch_span(history: &[EpochStart], offset: u64) -> (u64, Option<u64>, bool) {
    let current = history.iter().rev().find(|e| e.start <= offset);
    let next = history.iter().find(|e| e.start > offset).map(|e| e.start);
    let starts_here = history.iter().any(|e| e.start == offset);
    (current.map_or(0, |e| e.epoch), next, starts_here)
}

fn batch(b: pb::Batch) -> pb::FetchResponse {
    pb::FetchResponse {
        kind: Some(fetch_response::Kind::Batch(b)),
    }
}

#[tonic::async_trait]
impl Replication for ReplicationApi {
    type FetchStream = BoxStream<pb::FetchResponse>;

    async fn fetch(
        &self,
        req: Request<tonic::Streaming<pb::FetchRequest>>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let mut inbound = req.into_inner();
        let Some(pb::FetchRequest {
            kind: Some(fetch_request::Kind::Start(start)),
        }) = inbound.message().await?
        else {
            return Err(Status::invalid_argument("a fetch stream starts with Start"));
        };
        let r = self.replica.clone();
        if start.group != r.cfg.group {
            return Err(Status::invalid_argument(format!(
                "this member belongs to broker group {}, not {}",
                r.cfg.group, start.group
            )));
        }
        let Role::Leader { epoch, .. } = r.role() else {
            return Err(Status::failed_precondition(format!(
                "replica {} of {} is not the leader",
                r.cfg.replica_id, r.cfg.group
            )));
        };
        if start.epoch > epoch {
            return Err(Status::failed_precondition(format!(
                "epoch {} is newer than this leader's {epoch}",
                start.epoch
            )));
        }
        let segment_size = r.store.config().segment_size;
        if start.segment_size != segment_size {
            return Err(Status::failed_precondition(format!(
                "segment size {} differs from the leader's {segment_size}: replicas must use the same",
                start.segment_size
            )));
        }
        let follower = start.replica_id;
        let hello = pb::FetchResponse {
            kind: Some(fetch_response::Kind::Hello(pb::Hello {
                epoch,
                history: r
                    .history()
                    .into_iter()
                    .map(|e| pb::EpochStart {
                        epoch: e.epoch,
                        start: e.start,
                    })
                    .collect(),
                segment_size,
                leader_end: r.store.log_end(),
            })),
        };
        info!(group = %r.cfg.group, follower, epoch, "follower connected");

        // Progress reports: how far the follower holds the log, and where to send from.
        let (pos_tx, pos_rx) = watch::channel::<Option<u64>>(None);
        let reader = r.clone();
        let span = tracing::info_span!("replication.progress", follower);
        tokio::spawn(
            async move {
                while let Ok(Some(m)) = inbound.message().await {
                    if let Some(fetch_request::Kind::Progress(p)) = m.kind {
                        let held = match reader.store.config().flush {
                            FlushMode::Sync => p.flushed,
                            FlushMode::Async => p.log_end,
                        };
                        reader
                            .progress
                            .report(follower, held, reader.store.log_end());
                        reader.recompute_confirm();
                        let _ = pos_tx.send(Some(p.log_end));
                    }
                }
                debug!("follower's progress stream ended");
            }
            .instrument(span),
        );

        let shipper = Shipper {
            role: r.watch_role(),
            confirm_rx: r.progress.watch(),
            replica: r,
            epoch,
            pos_rx,
            next: None,
            told: None,
            keepalive_due: false,
            confirm_due: None,
        };
        // The batches are made as the connection asks for them: no task of their own and no
        // queue between it and the connection (one wake-up less per batch on the leader).
        let batches = futures_util::stream::unfold(Some(shipper), |shipper| async move {
            let mut s = shipper?;
            match s.next_batch().await {
                Ok(Some(b)) => Some((Ok(b), Some(s))),
                Ok(None) => None,
                Err(status) => Some((Err(status), None)),
            }
        });
        let hello = futures_util::stream::once(std::future::ready(Ok::<_, Status>(hello)));
        Ok(Response::new(Box::pin(hello.chain(batches))))
    }
}

/// The leader's side of one follower's stream, between two batches.
struct Shipper {
    replica: Arc<Replica>,
    epoch: u64,
    role: watch::Receiver<Role>,
    /// The follower's reports: where its log ends.
    pos_rx: watch::Receiver<Option<u64>>,
    confirm_rx: watch::Receiver<u64>,
    /// Where the next batch starts (None until the follower's first report).
    next: Option<u64>,
    /// The confirm offset the follower has from this stream.
    told: Option<u64>,
    /// Nothing was sent for a while: an empty batch is due.
    keepalive_due: bool,
    /// When a confirm offset the follower has not had goes alone ([`CONFIRM_LINGER`]).
    confirm_due: Option<tokio::time::Instant>,
}

impl Shipper {
    /// The next batch: records from where the last one ended, or an empty one that tells the
    /// follower a new confirm offset or keeps the stream alive. `Ok(None)` ends the stream
    /// quietly (the follower went away, the member is shutting down); an error ends it with
    /// that status (leadership moved, the log could not be read).
    async fn next_batch(&mut self) -> Result<Option<pb::FetchResponse>, Status> {
        let next = match self.next {
            Some(n) => n,
            None => loop {
                if let Some(p) = *self.pos_rx.borrow_and_update() {
                    self.next = Some(p);
                    break p;
                }
                if self.pos_rx.changed().await.is_err() {
                    return Ok(None);
                }
            },
        };
        let r = &self.replica;
        let epoch = self.epoch;
        loop {
            if !matches!(*self.role.borrow_and_update(), Role::Leader { epoch: e, .. } if e == epoch)
            {
                return Err(Status::failed_precondition("leadership moved"));
            }
            let grown = r.grown.notified();
            tokio::pin!(grown);
            grown.as_mut().enable();
            self.confirm_rx.borrow_and_update();
            let history = r.history();
            let (batch_epoch, next_epoch, starts_here) = epoch_span(&history, next);
            let end = r.store.log_end();
            let upto = next_epoch.map_or(end, |n| n.min(end));
            let raw = if next >= upto {
                ferromq_store::RawBatch {
                    from: next,
                    ..Default::default()
                }
            } else if end.saturating_sub(next) <= READ_INLINE_WITHIN {
                r.store
                    .read_raw(next, BATCH_BYTES, upto)
                    .map_err(|e| Status::internal(format!("reading the log at {next}: {e}")))?
            } else {
                let store = r.store.clone();
                tokio::task::spawn_blocking(move || store.read_raw(next, BATCH_BYTES, upto))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(|e| Status::internal(format!("reading the log at {next}: {e}")))?
            };
            let raw_end = raw.end();
            let moved = raw_end > next;
            let confirm = r.confirm();
            let news = self.told != Some(confirm);
            let now = tokio::time::Instant::now();
            let confirm_due = news && *self.confirm_due.get_or_insert(now + CONFIRM_LINGER) <= now;
            if moved || confirm_due || self.keepalive_due {
                self.told = Some(confirm);
                self.keepalive_due = false;
                self.confirm_due = None;
                if moved {
                    self.next = Some(raw_end);
                }
                return Ok(Some(batch(pb::Batch {
                    epoch: batch_epoch,
                    from: next,
                    filler_to: raw.filler_to,
                    epoch_start: (starts_here && moved).then_some(next),
                    data: raw.bytes,
                    confirm,
                    leader_end: end,
                })));
            }
            // Nothing to send yet: wait for the log, for a confirm offset to pass on (or the
            // linger of one already waiting), or for the keepalive.
            let linger = self.confirm_due;
            tokio::select! {
                _ = &mut grown => {}
                c = self.confirm_rx.changed(), if linger.is_none() => if c.is_err() { return Ok(None) },
                _ = tokio::time::sleep_until(linger.unwrap_or(now)), if linger.is_some() => {}
                _ = tokio::time::sleep(KEEPALIVE) => self.keepalive_due = true,
                c = self.role.changed() => if c.is_err() { return Ok(None) },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stop_at_the_next_epoch() {
        let h = [
            EpochStart { epoch: 1, start: 0 },
            EpochStart {
                epoch: 3,
                start: 100,
            },
        ];
        assert_eq!(epoch_span(&h, 0), (1, Some(100), true));
        assert_eq!(epoch_span(&h, 50), (1, Some(100), false));
        assert_eq!(epoch_span(&h, 100), (3, None, true));
        assert_eq!(epoch_span(&h, 150), (3, None, false));
    }
}
