//! Users and ACL policies of a replicated broker group (with `--auth`): they travel in the
//! group's journal like topics and offsets, and every member's auth store is a copy of what the
//! group confirmed.
//!
//! - **Proposing** ([`JournaledAuth`], the store's [`Replicator`]): the leader's admin
//!   operation is worked out against its store, journaled as a [`Change::Auth`] record and
//!   answered only once the group confirmed that record (the confirm offset passed it, whatever
//!   `--replication` says) and this member's own store applied it. A member that does not lead
//!   refuses (the journal's append gate admits only the leader), and one deposed before the
//!   group confirmed says so: the change may still take effect, like a send that timed out.
//! - **Applying** ([`AuthJournal`]): on every member, leader included, a reader follows the
//!   journal's queue up to what the member dispatched, which never passes the confirm offset,
//!   and applies each auth record to the store. A record a failover takes back was never
//!   dispatched, so no member's store, not even the old leader's, ever held it. Records set
//!   each touched user's whole state, so reading some twice after a restart changes nothing.
//!
//! Where the reader is: the journal queue offset of the next record, in `auth/journal-applied`
//! beside the store's file.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ferromq_auth::{AuthChange, AuthStore, Replicator};
use ferromq_engine::journal::{Change, Journal, AUTH_RECORD_PREFIX, JOURNAL_TOPIC};
use ferromq_engine::EngineError;
use ferromq_store::Store;
use parking_lot::Mutex;
use tracing::{error, info, warn};

use super::{Replica, Role};

/// File (in the auth store's directory) holding the reader's position.
const APPLIED_FILE: &str = "journal-applied";
/// Start offsets of the auth records applied lately (a proposer looks for its own there).
const REMEMBERED: usize = 256;

/// Applies the group's auth records to this member's store (see the module docs).
pub struct AuthJournal {
    store: Arc<Store>,
    auth: Arc<AuthStore>,
    applied_path: PathBuf,
    /// Journal queue offset of the next record to read.
    next: u64,
    /// Log offset after the last journal record read.
    read_end: u64,
    /// Where the auth records read lately start.
    applied: VecDeque<u64>,
}

impl AuthJournal {
    /// The reader of `store`'s journal for `auth`, from where it stopped last time.
    pub fn open(
        store: Arc<Store>,
        auth: Arc<AuthStore>,
        dir: PathBuf,
    ) -> Result<Self, EngineError> {
        Journal::open(store.clone())?;
        let applied_path = dir.join(APPLIED_FILE);
        let next = match std::fs::read_to_string(&applied_path) {
            Ok(s) => s.trim().parse().map_err(|_| {
                EngineError::Io(format!(
                    "{} does not hold a journal offset: {:?}",
                    applied_path.display(),
                    s.trim()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                return Err(EngineError::Io(format!(
                    "read {}: {e}",
                    applied_path.display()
                )))
            }
        };
        Ok(AuthJournal {
            store,
            auth,
            applied_path,
            next,
            read_end: 0,
            applied: VecDeque::new(),
        })
    }

    /// Applies every auth record dispatched and not applied yet; returns how many.
    pub fn apply_dispatched(&mut self) -> Result<usize, EngineError> {
        let mut n = 0;
        loop {
            let r = self.store.read(JOURNAL_TOPIC, 0, self.next, 256, None)?;
            if r.messages.is_empty() {
                let skip = r.next_offset.max(r.min_offset);
                if skip > self.next {
                    warn!(
                        from = self.next,
                        to = skip,
                        "journal records gone (retention) before the auth store read them"
                    );
                    self.next = skip;
                    self.persist()?;
                }
                return Ok(n);
            }
            for m in &r.messages {
                if m.body.starts_with(AUTH_RECORD_PREFIX) {
                    if self.apply_one(m.phys_offset, &m.body) {
                        self.applied.push_back(m.phys_offset);
                        if self.applied.len() > REMEMBERED {
                            self.applied.pop_front();
                        }
                    }
                    n += 1;
                }
                self.next = m.queue_offset + 1;
                self.read_end = m.phys_offset + u64::from(m.size);
            }
            self.persist()?;
        }
    }

    /// Applies one record. One the store refuses is skipped with an error in the log: stopping
    /// here would stop every later change too, on this member only.
    /// Returns whether it applied.
    fn apply_one(&self, offset: u64, body: &[u8]) -> bool {
        let change = match serde_json::from_slice::<Change>(body) {
            Ok(Change::Auth { record }) => serde_json::from_value::<AuthChange>(record),
            Ok(_) => return false,
            Err(e) => Err(e),
        };
        match change {
            Ok(c) => match self.auth.apply_replicated(&c) {
                Ok(()) => {
                    let users: Vec<&str> = c.users.iter().map(|u| u.name.as_str()).collect();
                    info!(offset, users = ?users, "users and policies applied from the journal");
                    true
                }
                Err(e) => {
                    error!(offset, error = %e, "a journaled user or ACL change cannot be applied; skipped");
                    false
                }
            },
            // serde's message names the field, never a value (a secret is refused by its
            // shape, not echoed).
            Err(e) => {
                error!(offset, error = %e, "an unreadable journaled user or ACL change; skipped");
                false
            }
        }
    }

    /// The record starting at `start` and ending at `end`: `Some(true)` once applied,
    /// `Some(false)` when the reader went past `end` without applying it (a failover took it
    /// back, or the store refused it), `None` while the reader has not got there.
    fn outcome(&self, start: u64, end: u64) -> Option<bool> {
        if self.applied.contains(&start) {
            Some(true)
        } else if self.read_end >= end {
            Some(false)
        } else {
            None
        }
    }

    fn persist(&self) -> Result<(), EngineError> {
        use std::io::Write;
        let tmp = self.applied_path.with_extension("tmp");
        let io = |e: std::io::Error| EngineError::Io(format!("write {}: {e}", tmp.display()));
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        writeln!(f, "{}", self.next).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.applied_path).map_err(io)?;
        Ok(())
    }
}

/// The auth store's way into the group: journal the change, wait until the group confirmed it
/// and this member applied it (see the module docs).
pub struct JournaledAuth {
    replica: Arc<Replica>,
    journal: Journal,
    reader: Weak<Mutex<AuthJournal>>,
    /// How long a change waits for the group's confirmation.
    timeout: Duration,
}

impl JournaledAuth {
    pub fn new(
        replica: Arc<Replica>,
        reader: &Arc<Mutex<AuthJournal>>,
        timeout: Duration,
    ) -> Result<JournaledAuth, EngineError> {
        Ok(JournaledAuth {
            journal: Journal::open(replica.store.clone())?,
            replica,
            reader: Arc::downgrade(reader),
            timeout,
        })
    }

    fn group(&self) -> &str {
        &self.replica.cfg.group
    }
}

impl Replicator for JournaledAuth {
    fn replicate(&self, change: &AuthChange) -> Result<(), String> {
        let term = match self.replica.role() {
            Role::Leader { epoch, .. } => epoch,
            Role::Follower { leader, .. } => {
                return Err(match leader {
                    Some((id, addr)) => format!(
                        "broker group {}: this member follows; replica {id} at {addr} leads",
                        self.group()
                    ),
                    None => format!("broker group {} has no leader right now", self.group()),
                })
            }
        };
        let record =
            serde_json::to_value(change).map_err(|e| format!("encoding the change: {e}"))?;
        let (start, end) = self
            .journal
            .record_at(&Change::Auth { record })
            .map_err(|e| e.to_string())?;
        let began = Instant::now();
        loop {
            let reader = self
                .reader
                .upgrade()
                .ok_or_else(|| "this member is shutting down".to_string())?;
            let outcome = {
                let mut r = reader.lock();
                r.apply_dispatched().map_err(|e| e.to_string())?;
                r.outcome(start, end)
            };
            match outcome {
                Some(true) => return Ok(()),
                Some(false) => {
                    return Err(format!(
                        "broker group {}: the change did not take effect (leadership moved before the group confirmed it, or this member could not apply it: see its log)",
                        self.group()
                    ))
                }
                None => {}
            }
            let role = self.replica.role();
            if !(role.is_leader() && role.epoch() == term) {
                return Err(format!(
                    "broker group {}: leadership moved before the group confirmed the change; it may still take effect",
                    self.group()
                ));
            }
            if began.elapsed() >= self.timeout {
                return Err(format!(
                    "broker group {}: not every in-sync member confirmed the change within {:?}; it may still take effect",
                    self.group(),
                    self.timeout
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferromq_auth::{Secret, UserKind};
    use ferromq_store::StoreConfig;

    fn change(name: &str, secret: &str) -> AuthChange {
        let before = ferromq_auth::Snapshot::default();
        let after_store = tempfile::tempdir().unwrap();
        let s = AuthStore::open(after_store.path()).unwrap();
        s.create_user(name, Secret::new(secret).unwrap(), UserKind::Normal)
            .unwrap();
        AuthChange::between(&before, &s.snapshot())
    }

    /// A follower's reader applies what is dispatched, only the auth records, once, and picks
    /// up where it stopped after a restart.
    #[test]
    fn the_reader_applies_dispatched_auth_records_and_resumes_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("store"))).unwrap();
        let auth_dir = dir.path().join("auth");
        let auth = Arc::new(AuthStore::open(&auth_dir).unwrap());
        let journal = Journal::open(store.clone()).unwrap();
        let record = |c: &AuthChange| {
            journal
                .record_at(&Change::Auth {
                    record: serde_json::to_value(c).unwrap(),
                })
                .unwrap()
        };
        let (first, _) = record(&change("app", "app-secret-1"));
        journal.record(&Change::Drain { read_only: false }).unwrap();
        let (_, end) = record(&change("other", "other-secret-1"));
        assert!(store.wait_dispatched(end, Duration::from_secs(5)));

        let mut reader = AuthJournal::open(store.clone(), auth.clone(), auth_dir.clone()).unwrap();
        assert_eq!(reader.apply_dispatched().unwrap(), 2);
        assert_eq!(reader.outcome(first, end), Some(true));
        assert_eq!(reader.outcome(first + 1, end), Some(false));
        assert_eq!(reader.outcome(end, end + 100), None);
        assert!(auth.snapshot().user("app").is_some());
        assert!(auth.snapshot().user("other").is_some());
        let generation = auth.snapshot().generation();
        assert_eq!(reader.apply_dispatched().unwrap(), 0);

        // Restarted: nothing is applied twice.
        drop(reader);
        let mut reader = AuthJournal::open(store.clone(), auth.clone(), auth_dir).unwrap();
        assert_eq!(reader.apply_dispatched().unwrap(), 0);
        assert_eq!(auth.snapshot().generation(), generation);
    }

    /// A record the store refuses is skipped, and the records after it still apply.
    #[test]
    fn a_bad_record_is_skipped_and_later_ones_apply() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("store"))).unwrap();
        let auth_dir = dir.path().join("auth");
        let auth = Arc::new(AuthStore::open(&auth_dir).unwrap());
        let journal = Journal::open(store.clone()).unwrap();
        let (bad, bad_end) = journal
            .record_at(&Change::Auth {
                record: serde_json::json!({"users": [{"name": "a/b"}]}),
            })
            .unwrap();
        let end = journal
            .record(&Change::Auth {
                record: serde_json::to_value(change("app", "app-secret-1")).unwrap(),
            })
            .unwrap();
        assert!(store.wait_dispatched(end, Duration::from_secs(5)));
        let mut reader = AuthJournal::open(store, auth.clone(), auth_dir).unwrap();
        assert_eq!(reader.apply_dispatched().unwrap(), 2);
        assert_eq!(auth.list_users().len(), 1);
        assert_eq!(
            reader.outcome(bad, bad_end),
            Some(false),
            "the refused one is not applied"
        );
    }
}
