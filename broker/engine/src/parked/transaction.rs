//! Transactional messages: a half message is parked ([`super`]) until EndTransaction
//! commits it (released to its topic, visible exactly once) or rolls it back (discarded).
//!
//! ## Orphans
//! A half message nobody resolves is checked back: when its first check falls due (the
//! message's `orphaned_transaction_recovery_duration`, else `--transaction-check-interval`)
//! the server sends RecoverOrphanedTransactionCommand on the Telemetry stream of the producer
//! that sent it, or else of a live producer that declared the topic, and asks again every
//! interval. The producer's checker
//! answers with EndTransaction (source SERVER_CHECK). After `--transaction-check-max` checks
//! without an answer the message is rolled back and the rollback is logged. A check with no
//! producer online counts too, so a transaction whose producer is gone for good ends.
//!
//! ## Exactly once
//! Commit and rollback settle the parked entry under one lock, so a commit racing a check's
//! answer, a repeated commit, or a commit after a restart delivers the message once. Repeating
//! the same outcome answers OK; the opposite outcome of a settled transaction answers
//! PRECONDITION_FAILED and changes nothing.
//!
//! The number of checks made is kept in memory: a restart starts counting again.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferromq_store::marks::Mark;
use ferromq_store::{NewMessage, Store, StoredMessage};
use tracing::{info, warn};

use super::schedule::Schedule;
use super::{Parked, ParkedAt, ParkedQueue, Settled};
use crate::error::EngineError;
use crate::props::{CQ_KEY, REAL_QUEUE, REAL_TOPIC, TX_PRODUCER};
use crate::time::now_ms;

/// The system topic holding half messages.
pub const HALF_TOPIC: &str = "%SYS%FM_HALF";
/// Kind of a transaction id (see [`ParkedAt::encode`]).
const TRANSACTION_ID: &str = "x1";

/// How a producer (or its checker) resolves a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Commit,
    Rollback,
    /// Still unknown: keep the half message and check again later.
    Unknown,
}
/// Longest first-check delay a message may ask for (RocketMQ caps it the same way).
pub const MAX_RECOVERY_DURATION: Duration = Duration::from_secs(3600);

/// Asks a producer of the message's topic to resolve a transaction: gets the half message (as
/// a message of its real topic) and the transaction id; says whether a producer was reached.
pub type CheckSender = Box<dyn Fn(&StoredMessage, &str) -> bool + Send + Sync>;

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct TxStats {
    pub prepared: AtomicU64,
    pub committed: AtomicU64,
    pub rolled_back: AtomicU64,
    pub checks_sent: AtomicU64,
    /// Rolled back because no check got an answer.
    pub checks_exhausted: AtomicU64,
}

/// The transaction id of a half message.
pub fn transaction_id(at: ParkedAt) -> String {
    at.encode(TRANSACTION_ID)
}

fn parse_transaction_id(s: &str) -> Option<ParkedAt> {
    ParkedAt::decode(s, TRANSACTION_ID)
}

/// The half message as its producer sent it: real topic and queue, no parking properties.
pub fn as_sent(m: &StoredMessage) -> StoredMessage {
    let mut out = m.clone();
    if let Some(t) = out.properties.remove(REAL_TOPIC) {
        out.topic = t;
    }
    if let Some(q) = out
        .properties
        .remove(REAL_QUEUE)
        .and_then(|q| q.parse().ok())
    {
        out.queue_id = q;
    }
    out.properties.remove(CQ_KEY);
    out
}

pub struct Transactions {
    parked: Parked,
    /// Unresolved half messages: (next check, (parked message, checks made so far)).
    pending: Schedule<(ParkedAt, u32)>,
    interval: Duration,
    max_checks: u32,
    sender: OnceLock<CheckSender>,
    pub stats: TxStats,
}

impl Transactions {
    /// Opens the half-message queue in `data_dir` and schedules checks of the pending ones.
    pub fn open(
        store: Arc<Store>,
        data_dir: &Path,
        interval: Duration,
        max_checks: u32,
        journal: Option<crate::journal::Journal>,
    ) -> Result<Arc<Transactions>, EngineError> {
        let parked = Parked::open(store, HALF_TOPIC, &data_dir.join("transactions"), journal)?;
        let pending = Schedule::load(&parked, |at| (at, 0))?;
        if !pending.is_empty() {
            info!(
                half_messages = pending.len(),
                "unresolved transactions loaded"
            );
        }
        Ok(Arc::new(Transactions {
            parked,
            pending,
            interval,
            max_checks,
            sender: OnceLock::new(),
            stats: TxStats::default(),
        }))
    }

    /// Sets how checks reach producers (once, before [`Transactions::start`]).
    pub fn set_sender(&self, s: CheckSender) {
        let _ = self.sender.set(s);
    }

    /// Parks a half message and returns its transaction id. `recovery` is the message's own
    /// wait before the first check.
    pub fn prepare(
        &self,
        msg: &NewMessage,
        recovery: Option<Duration>,
        producer: Option<&str>,
    ) -> Result<String, EngineError> {
        self.prepare_at(msg, recovery, producer).map(transaction_id)
    }

    /// [`Transactions::prepare`], answering where the half message is.
    pub fn prepare_at(
        &self,
        msg: &NewMessage,
        recovery: Option<Duration>,
        producer: Option<&str>,
    ) -> Result<ParkedAt, EngineError> {
        let mut owned;
        let msg = match producer {
            Some(p) => {
                owned = msg.clone();
                owned.properties.insert(TX_PRODUCER.into(), p.to_string());
                &owned
            }
            None => msg,
        };
        let wait = recovery
            .map(|d| d.clamp(Duration::from_secs(1), MAX_RECOVERY_DURATION))
            .unwrap_or(self.interval);
        let first = now_ms().max(0) as u64 + wait.as_millis() as u64;
        let at = self.parked.park(msg, first)?;
        self.stats.prepared.fetch_add(1, Ordering::Relaxed);
        self.pending.add(first, (at, 0), &msg.topic);
        Ok(at)
    }

    /// The transaction id of the half message whose record starts at commit log offset `phys`:
    /// how front doors that address messages by offset (the remoting protocol's
    /// END_TRANSACTION) find a transaction when its id did not travel.
    pub fn id_at_offset(&self, phys: u64) -> Result<String, EngineError> {
        let m = self.parked.store().message_at(phys).map_err(|_| {
            EngineError::InvalidTransactionId(format!(
                "no half message starts at commit log offset {phys}"
            ))
        })?;
        if m.topic != HALF_TOPIC {
            return Err(EngineError::InvalidTransactionId(format!(
                "the message at commit log offset {phys} is not a half message"
            )));
        }
        Ok(transaction_id(ParkedAt {
            entry: m.queue_offset,
            phys,
        }))
    }

    /// EndTransaction: commits or rolls back the half message `transaction_id`. `topic`, when
    /// the client names one, must be the message's (4.x remoting producers name none).
    pub fn end(
        &self,
        topic: Option<&str>,
        message_id: &str,
        transaction_id: &str,
        resolution: Resolution,
    ) -> Result<(), EngineError> {
        let invalid = |why: &str| {
            EngineError::InvalidTransactionId(format!("transaction id {transaction_id:?} {why}"))
        };
        if transaction_id.trim().is_empty() {
            return Err(EngineError::InvalidTransactionId(
                "transaction_id is empty".into(),
            ));
        }
        let at = parse_transaction_id(transaction_id)
            .ok_or_else(|| invalid("is not a transaction id of this broker"))?;
        let m = self.parked.read(at.entry, Some(at.phys)).map_err(|_| {
            invalid("names no half message (expired by retention, or another broker's)")
        })?;
        let real_topic = m.properties.get(REAL_TOPIC).cloned().unwrap_or_default();
        if let Some(topic) = topic.filter(|t| *t != real_topic) {
            return Err(invalid(&format!("is not a transaction of topic {topic}")));
        }
        let topic = real_topic.as_str();
        let id = m.msg_id().unwrap_or_default();
        if !message_id.is_empty() && message_id != id {
            return Err(invalid(&format!(
                "belongs to message {id}, not {message_id}"
            )));
        }
        let how = match resolution {
            Resolution::Commit => Mark::Released,
            Resolution::Rollback => Mark::Discarded,
            // Keep checking.
            Resolution::Unknown => return Ok(()),
        };
        let settled = match self.parked.settle(at, how) {
            Ok(s) => s,
            Err(e) => {
                // Committed after its topic was deleted: dropped (the parked entry is discarded).
                if matches!(e, EngineError::TopicNotFound(_)) {
                    self.pending.forget(topic);
                }
                return Err(e);
            }
        };
        match settled {
            (Settled::Now, _) => {
                let counter = if how == Mark::Released {
                    &self.stats.committed
                } else {
                    &self.stats.rolled_back
                };
                counter.fetch_add(1, Ordering::Relaxed);
                self.pending.forget(topic);
                Ok(())
            }
            (Settled::Already(before), _) if before == how => Ok(()),
            (Settled::Already(before), _) => Err(EngineError::AlreadySettled(format!(
                "transaction of message {id} was already {}",
                if before == Mark::Released {
                    "committed"
                } else {
                    "rolled back"
                }
            ))),
        }
    }

    fn check_due(&self) {
        while let Some(due) = self.pending.wait_due(64) {
            for (_, (at, checks)) in due {
                if self.parked.mark(at.entry) == Mark::Pending {
                    self.check(at, checks);
                }
            }
        }
    }

    /// One check of a pending half message: ask a producer, or roll back when the checks are
    /// used up.
    fn check(&self, at: ParkedAt, checks: u32) {
        let next = now_ms().max(0) as u64 + self.interval.as_millis() as u64;
        if checks >= self.max_checks {
            match self.parked.settle(at, Mark::Discarded) {
                Ok((Settled::Now, m)) => {
                    let m = m.map(|m| as_sent(&m));
                    let topic = m.as_ref().map(|m| m.topic.clone()).unwrap_or_default();
                    warn!(
                        topic,
                        message_id = m.as_ref().and_then(|m| m.msg_id()).unwrap_or(""),
                        checks,
                        "transaction unresolved after every check; rolled back"
                    );
                    self.stats.checks_exhausted.fetch_add(1, Ordering::Relaxed);
                    self.stats.rolled_back.fetch_add(1, Ordering::Relaxed);
                    self.pending.forget(&topic);
                }
                Ok((Settled::Already(_), _)) => {}
                Err(e) => {
                    warn!(entry = at.entry, error = %e, "rolling back an unresolved transaction failed; trying again");
                    self.pending.requeue(next, (at, checks));
                }
            }
            return;
        }
        match self.parked.read(at.entry, Some(at.phys)) {
            Ok(m) => {
                let sent = self
                    .sender
                    .get()
                    .is_some_and(|send| send(&as_sent(&m), &transaction_id(at)));
                if sent {
                    self.stats.checks_sent.fetch_add(1, Ordering::Relaxed);
                }
                self.pending.requeue(next, (at, checks + 1));
            }
            Err(e @ (EngineError::MessageNotFound(_) | EngineError::Corrupt(_))) => {
                tracing::error!(entry = at.entry, error = %e, "a half message cannot be read; it is dropped");
                let _ = self.parked.abandon(at.entry);
            }
            Err(e) => {
                warn!(entry = at.entry, error = %e, "reading a half message failed; trying again");
                self.pending.requeue(next, (at, checks));
            }
        }
    }
}

impl ParkedQueue for Transactions {
    type Item = (ParkedAt, u32);
    const THREAD: &'static str = "tx-checks";

    fn parked(&self) -> &Parked {
        &self.parked
    }

    fn schedule(&self) -> &Schedule<(ParkedAt, u32)> {
        &self.pending
    }

    fn run(&self) {
        self.check_due()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_round_trip() {
        let at = ParkedAt { entry: 7, phys: 99 };
        assert_eq!(parse_transaction_id(&transaction_id(at)), Some(at));
        assert_eq!(parse_transaction_id("7:99"), None);
        assert_eq!(parse_transaction_id("x1:7"), None);
    }
}
