//! The durable store of users and policies: one file, replaced whole on every change.
//!
//! Layout of `<dir>/auth.json`:
//!
//! ```text
//! ferromq-auth 1 crc32c=<8 hex digits> len=<decimal>\n
//! <JSON body: {"generation":N,"users":[{"name","kind","secret"}...],"policies":[{"user","entries":[...]}...]}>
//! ```
//!
//! The first line holds the format version (`1`), the CRC32C of the body and its length in bytes,
//! so a torn, truncated or bit-flipped file is detected, never half-read. The body is validated
//! like input from the admin API (names, secrets, patterns, limits, no duplicates, policies of
//! existing users only); a file that fails any check stops the store from opening rather than
//! letting it serve a partial or altered rule set.
//!
//! Durability contract: a change returns `Ok` only after the new file is written to a temporary
//! file in the same directory, fsynced, renamed over `auth.json` and the directory fsynced. A
//! crash at any point leaves either the old or the new file whole; an acknowledged change
//! survives kill -9 and power loss. A failed write changes nothing, on disk or in memory. The
//! file and the temporary file are created with mode 0600 and the directory with 0700: the
//! secrets are in it.
//!
//! Concurrency: readers take the current [`Snapshot`] (an `Arc`, lock-free through `arc-swap`)
//! and keep a consistent view for as long as they hold it. Writers are serialized by a mutex;
//! each builds the next snapshot from the current one, persists it, then publishes it. Writes
//! fsync, so call them from a blocking context (`tokio::task::spawn_blocking`), never on an
//! async worker.
//!
//! Replicated groups: a store given a [`Replicator`] ([`AuthStore::replicate_with`]) does not
//! write its own changes; admin operations are proposed to the group, one at a time, and the
//! file changes only through [`AuthStore::apply_replicated`] (see [`crate::change`]).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::change::{AuthChange, ChangeError, Replicator};
use crate::policy::{normalize_entries, Effect, Policy, PolicyEntry, PolicyError, ResourcePattern};
use crate::secret::{Secret, SecretError};
use crate::snapshot::Snapshot;
use crate::user::{validate_access_key, NameError, User, UserInfo, UserKind};

/// Format version of the file; a file of another version is refused.
pub const FORMAT_VERSION: u32 = 1;
/// Most users a store holds.
pub const MAX_USERS: usize = 10_000;
/// Largest file the store reads (the limits above keep real files far below it).
pub const MAX_FILE_LEN: u64 = 64 << 20;

const FILE_NAME: &str = "auth.json";
const TEMP_PREFIX: &str = ".auth.json.tmp";
const MAGIC: &str = "ferromq-auth";

/// The store could not read or write its file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("auth store {} is corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "auth store {} has format version {found}; this build reads version {FORMAT_VERSION}",
        path.display()
    )]
    UnsupportedVersion { path: PathBuf, found: String },
}

/// Why an admin operation was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("user {name:?} already exists")]
    UserExists { name: String },
    #[error("no user {name:?}")]
    UserNotFound { name: String },
    #[error("user {user:?} has no policy")]
    PolicyNotFound { user: String },
    #[error("policy of user {user:?} has no {effect} entry for {resource}")]
    EntryNotFound {
        user: String,
        resource: String,
        effect: String,
    },
    #[error("invalid access key: {0}")]
    InvalidName(#[from] NameError),
    #[error("invalid secret: {0}")]
    InvalidSecret(#[from] SecretError),
    #[error("invalid policy for user {user:?}: {source}")]
    InvalidPolicy {
        user: String,
        #[source]
        source: PolicyError,
    },
    #[error("the store already holds {MAX_USERS} users")]
    TooManyUsers,
    #[error("user {name:?} is the last super user; create another super user first")]
    LastSuperUser { name: String },
    /// A replicated group did not take the change (see [`Replicator::replicate`]).
    #[error("the change was not replicated: {reason}")]
    NotReplicated { reason: String },
    #[error(transparent)]
    InvalidChange(#[from] ChangeError),
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// The class of an [`AdminError`], which the admin API maps to a gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminErrorKind {
    AlreadyExists,
    NotFound,
    InvalidArgument,
    FailedPrecondition,
    /// Try again (on the group's leader, or once the group confirms again).
    Unavailable,
    Internal,
}

impl AdminError {
    pub fn kind(&self) -> AdminErrorKind {
        match self {
            AdminError::UserExists { .. } => AdminErrorKind::AlreadyExists,
            AdminError::UserNotFound { .. }
            | AdminError::PolicyNotFound { .. }
            | AdminError::EntryNotFound { .. } => AdminErrorKind::NotFound,
            AdminError::InvalidName(_)
            | AdminError::InvalidSecret(_)
            | AdminError::InvalidPolicy { .. } => AdminErrorKind::InvalidArgument,
            AdminError::TooManyUsers | AdminError::LastSuperUser { .. } => {
                AdminErrorKind::FailedPrecondition
            }
            AdminError::NotReplicated { .. } => AdminErrorKind::Unavailable,
            AdminError::InvalidChange(_) | AdminError::Storage(_) => AdminErrorKind::Internal,
        }
    }
}

/// Users and policies of one server, on disk in a directory of their own.
pub struct AuthStore {
    dir: PathBuf,
    current: ArcSwap<Snapshot>,
    writer: Mutex<()>,
    /// Set on a member of a replicated group: changes go through the group.
    replicator: OnceLock<Arc<dyn Replicator>>,
    /// Serializes the changes this store proposes to its group: each is worked out from a
    /// snapshot that holds the one before.
    proposing: Mutex<()>,
}

impl std::fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthStore")
            .field("dir", &self.dir)
            .field("generation", &self.current.load().generation())
            .finish()
    }
}

impl AuthStore {
    /// Opens (or creates) the store in `dir`, reading and validating `auth.json` if present and
    /// removing temporary files a crash left behind.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        create_private_dir(&dir)?;
        remove_stale_temp_files(&dir)?;
        let path = dir.join(FILE_NAME);
        let snapshot = match fs::File::open(&path) {
            Ok(file) => read_file(file, &path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Snapshot::default(),
            Err(source) => {
                return Err(StoreError::Io {
                    op: "open",
                    path,
                    source,
                })
            }
        };
        Ok(AuthStore {
            dir,
            current: ArcSwap::from_pointee(snapshot),
            writer: Mutex::new(()),
            replicator: OnceLock::new(),
            proposing: Mutex::new(()),
        })
    }

    /// Makes this store a copy of a replicated group's users and policies: from now on every
    /// admin operation is proposed to the group through `replicator`, and the store changes only
    /// through [`AuthStore::apply_replicated`]. Set once; `false` when it already was.
    pub fn replicate_with(&self, replicator: Arc<dyn Replicator>) -> bool {
        self.replicator.set(replicator).is_ok()
    }

    /// Whether changes go through a replicated group.
    pub fn is_replicated(&self) -> bool {
        self.replicator.get().is_some()
    }

    /// Applies a change the group confirmed (from its journal): written durably, then
    /// published. An invalid change is refused whole and changes nothing.
    pub fn apply_replicated(&self, change: &AuthChange) -> Result<(), AdminError> {
        let _serialized = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current.load_full();
        let mut next = Snapshot::clone(&current);
        change.apply_to(&mut next)?;
        next.generation = current.generation + 1;
        write_file(&self.dir, &next)?;
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// The current users and policies. Cheap; hold it for the length of one request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Path of the store's file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Adds a user. Its name must be new.
    pub fn create_user(
        &self,
        name: &str,
        secret: Secret,
        kind: UserKind,
    ) -> Result<UserInfo, AdminError> {
        validate_access_key(name)?;
        self.change(|s| {
            if s.users.contains_key(name) {
                return Err(AdminError::UserExists { name: name.into() });
            }
            if s.users.len() >= MAX_USERS {
                return Err(AdminError::TooManyUsers);
            }
            let user = User {
                name: name.into(),
                secret,
                kind,
            };
            let info = user.info();
            s.users.insert(name.into(), user);
            Ok(info)
        })
    }

    /// Changes a user's secret, kind, or both. Demoting the last super user is refused.
    pub fn update_user(
        &self,
        name: &str,
        secret: Option<Secret>,
        kind: Option<UserKind>,
    ) -> Result<UserInfo, AdminError> {
        self.change(|s| {
            let last_super = s.super_user_count() == 1;
            let user = s
                .users
                .get_mut(name)
                .ok_or_else(|| AdminError::UserNotFound { name: name.into() })?;
            if last_super && user.kind == UserKind::Super && kind == Some(UserKind::Normal) {
                return Err(AdminError::LastSuperUser { name: name.into() });
            }
            if let Some(secret) = secret {
                user.secret = secret;
            }
            if let Some(kind) = kind {
                user.kind = kind;
            }
            Ok(user.info())
        })
    }

    /// Removes a user and its policy: its next call is refused. Removing the last super user is
    /// refused (nobody could manage users any more).
    pub fn delete_user(&self, name: &str) -> Result<(), AdminError> {
        self.change(|s| {
            let user = s
                .users
                .get(name)
                .ok_or_else(|| AdminError::UserNotFound { name: name.into() })?;
            if user.kind == UserKind::Super && s.super_user_count() == 1 {
                return Err(AdminError::LastSuperUser { name: name.into() });
            }
            s.users.remove(name);
            s.policies.remove(name);
            Ok(())
        })
    }

    /// Users in name order, without secrets.
    pub fn list_users(&self) -> Vec<UserInfo> {
        self.snapshot().users().map(User::info).collect()
    }

    pub fn describe_user(&self, name: &str) -> Result<UserInfo, AdminError> {
        self.snapshot()
            .user(name)
            .map(User::info)
            .ok_or_else(|| AdminError::UserNotFound { name: name.into() })
    }

    /// Makes sure a super user with this name and secret exists (the bootstrap user a server is
    /// started with, from a flag or a Kubernetes Secret). Writes only when something differs;
    /// answers whether it wrote.
    pub fn ensure_super_user(&self, name: &str, secret: &Secret) -> Result<bool, AdminError> {
        validate_access_key(name)?;
        let same = |s: &Snapshot| {
            s.user(name)
                .is_some_and(|u| u.kind == UserKind::Super && u.secret.ct_eq(secret))
        };
        if same(&self.snapshot()) {
            return Ok(false);
        }
        self.change(|s| {
            if same(s) {
                return Ok(false);
            }
            if !s.users.contains_key(name) && s.users.len() >= MAX_USERS {
                return Err(AdminError::TooManyUsers);
            }
            s.users.insert(
                name.into(),
                User {
                    name: name.into(),
                    secret: secret.clone(),
                    kind: UserKind::Super,
                },
            );
            Ok(true)
        })
    }

    /// Replaces a user's whole policy (what the operator does from a `User` resource's spec).
    /// An empty list removes the policy.
    pub fn set_policy(&self, user: &str, entries: Vec<PolicyEntry>) -> Result<Policy, AdminError> {
        let entries = checked_entries(user, entries)?;
        self.change(|s| {
            require_user(s, user)?;
            store_entries(s, user, entries.clone());
            Ok(policy_of(s, user))
        })
    }

    /// Adds an entry to a user's policy, replacing the entry with the same resource and effect
    /// if there is one (`ferromq admin acl create|update`).
    pub fn put_entry(&self, user: &str, entry: PolicyEntry) -> Result<Policy, AdminError> {
        checked_entries(user, vec![entry.clone()])?;
        self.change(|s| {
            require_user(s, user)?;
            let mut entries = s.policies.get(user).cloned().unwrap_or_default();
            match entries
                .iter_mut()
                .find(|e| e.resource == entry.resource && e.effect == entry.effect)
            {
                Some(existing) => *existing = entry.clone(),
                None => entries.push(entry.clone()),
            }
            let entries = checked_entries(user, entries)?;
            store_entries(s, user, entries);
            Ok(policy_of(s, user))
        })
    }

    /// Removes the entries of a user's policy for a resource: those of one effect, or all.
    pub fn remove_entries(
        &self,
        user: &str,
        resource: &ResourcePattern,
        effect: Option<Effect>,
    ) -> Result<Policy, AdminError> {
        self.change(|s| {
            require_user(s, user)?;
            let mut entries = s.policies.get(user).cloned().unwrap_or_default();
            let before = entries.len();
            entries.retain(|e| !(e.resource == *resource && effect.is_none_or(|x| x == e.effect)));
            if entries.len() == before {
                return Err(AdminError::EntryNotFound {
                    user: user.into(),
                    resource: resource.to_string(),
                    effect: effect.map_or("any".into(), |e| e.to_string()),
                });
            }
            store_entries(s, user, entries);
            Ok(policy_of(s, user))
        })
    }

    /// Removes a user's whole policy (the user stays, allowed nothing).
    pub fn delete_policy(&self, user: &str) -> Result<(), AdminError> {
        self.change(|s| {
            require_user(s, user)?;
            s.policies
                .remove(user)
                .map(|_| ())
                .ok_or_else(|| AdminError::PolicyNotFound { user: user.into() })
        })
    }

    /// A user's policy; empty entries when it has none.
    pub fn describe_policy(&self, user: &str) -> Result<Policy, AdminError> {
        let s = self.snapshot();
        require_user(&s, user)?;
        Ok(policy_of(&s, user))
    }

    /// Every policy, by user name.
    pub fn list_policies(&self) -> Vec<Policy> {
        let s = self.snapshot();
        s.policies.keys().map(|u| policy_of(&s, u)).collect()
    }

    /// Applies one change: next snapshot from the current one, written durably, then published.
    /// On any error nothing changes. A replicated store proposes it to its group instead.
    fn change<T>(
        &self,
        apply: impl FnOnce(&mut Snapshot) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        if let Some(replicator) = self.replicator.get() {
            return self.propose(replicator.as_ref(), apply);
        }
        let _serialized = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current.load_full();
        let mut next = Snapshot::clone(&current);
        let out = apply(&mut next)?;
        next.generation = current.generation + 1;
        write_file(&self.dir, &next)?;
        self.current.store(Arc::new(next));
        Ok(out)
    }
}

impl AuthStore {
    /// A replicated store's change: worked out from the current snapshot, handed to the group,
    /// and in this store once the group's record of it is applied here. One at a time, so the
    /// next is worked out from a snapshot that holds this one.
    fn propose<T>(
        &self,
        replicator: &dyn Replicator,
        apply: impl FnOnce(&mut Snapshot) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        let _one = self.proposing.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current.load_full();
        let mut next = Snapshot::clone(&current);
        let out = apply(&mut next)?;
        let change = AuthChange::between(&current, &next);
        if change.is_empty() {
            return Ok(out);
        }
        replicator
            .replicate(&change)
            .map_err(|reason| AdminError::NotReplicated { reason })?;
        Ok(out)
    }
}

fn require_user(s: &Snapshot, user: &str) -> Result<(), AdminError> {
    if s.users.contains_key(user) {
        Ok(())
    } else {
        Err(AdminError::UserNotFound { name: user.into() })
    }
}

fn checked_entries(user: &str, entries: Vec<PolicyEntry>) -> Result<Vec<PolicyEntry>, AdminError> {
    normalize_entries(entries).map_err(|source| AdminError::InvalidPolicy {
        user: user.into(),
        source,
    })
}

fn store_entries(s: &mut Snapshot, user: &str, entries: Vec<PolicyEntry>) {
    if entries.is_empty() {
        s.policies.remove(user);
    } else {
        s.policies.insert(user.into(), entries);
    }
}

fn policy_of(s: &Snapshot, user: &str) -> Policy {
    Policy {
        user: user.into(),
        entries: s.policy_entries(user).to_vec(),
    }
}

/// The JSON body of the file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    generation: u64,
    users: Vec<UserRecord>,
    policies: Vec<Policy>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRecord {
    name: String,
    kind: UserKind,
    #[serde(serialize_with = "write_secret", deserialize_with = "read_secret")]
    secret: Secret,
}

/// The only places a secret is serialized: into the store's own file, and into the record of a
/// replicated change ([`crate::change`]), which the group's journal carries to its members.
pub(crate) fn write_secret<S: serde::Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose())
}

pub(crate) fn read_secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    let text = zeroize::Zeroizing::new(String::deserialize(d)?);
    Secret::new(text.as_str()).map_err(serde::de::Error::custom)
}

fn encode(s: &Snapshot) -> Result<Vec<u8>, serde_json::Error> {
    let body = Body {
        generation: s.generation,
        users: s
            .users
            .values()
            .map(|u| UserRecord {
                name: u.name.clone(),
                kind: u.kind,
                secret: u.secret.clone(),
            })
            .collect(),
        policies: s
            .policies
            .iter()
            .map(|(user, entries)| Policy {
                user: user.clone(),
                entries: entries.clone(),
            })
            .collect(),
    };
    let json = zeroize::Zeroizing::new(serde_json::to_vec_pretty(&body)?);
    Ok(frame(&json))
}

/// The header line (version, CRC32C, length) followed by the body.
fn frame(body: &[u8]) -> Vec<u8> {
    let header = format!(
        "{MAGIC} {FORMAT_VERSION} crc32c={:08x} len={}\n",
        crc32c::crc32c(body),
        body.len()
    );
    let mut out = Vec::with_capacity(header.len() + body.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out
}

fn decode(bytes: &[u8], path: &Path) -> Result<Snapshot, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let newline = bytes
        .iter()
        .take(128)
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no header line".into()))?;
    let header = std::str::from_utf8(&bytes[..newline])
        .map_err(|_| corrupt("header line is not text".into()))?;
    let body = &bytes[newline + 1..];
    let fields: Vec<&str> = header.split(' ').collect();
    let [magic, version, crc, len] = fields[..] else {
        return Err(corrupt(format!("header line {header:?} has not 4 fields")));
    };
    if magic != MAGIC {
        return Err(corrupt(format!(
            "header line {header:?} does not start with {MAGIC}"
        )));
    }
    if version != FORMAT_VERSION.to_string() {
        return Err(StoreError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version.into(),
        });
    }
    let crc = crc
        .strip_prefix("crc32c=")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| corrupt(format!("bad crc field {crc:?}")))?;
    let len: usize = len
        .strip_prefix("len=")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| corrupt(format!("bad len field {len:?}")))?;
    if body.len() != len {
        return Err(corrupt(format!(
            "header says {len} body bytes, file holds {} (torn or truncated write)",
            body.len()
        )));
    }
    let actual = crc32c::crc32c(body);
    if actual != crc {
        return Err(corrupt(format!(
            "body CRC32C is {actual:08x}, header says {crc:08x}"
        )));
    }
    let parsed: Body =
        serde_json::from_slice(body).map_err(|e| corrupt(format!("body does not parse: {e}")))?;
    build_snapshot(parsed).map_err(corrupt)
}

/// Applies every admin-API check to a loaded body.
fn build_snapshot(body: Body) -> Result<Snapshot, String> {
    if body.users.len() > MAX_USERS {
        return Err(format!("{} users, more than {MAX_USERS}", body.users.len()));
    }
    let mut s = Snapshot {
        generation: body.generation,
        ..Snapshot::default()
    };
    for record in body.users {
        validate_access_key(&record.name).map_err(|e| e.to_string())?;
        if s.users.contains_key(&record.name) {
            return Err(format!("user {:?} appears twice", record.name));
        }
        s.users.insert(
            record.name.clone(),
            User {
                name: record.name,
                secret: record.secret,
                kind: record.kind,
            },
        );
    }
    for policy in body.policies {
        if !s.users.contains_key(&policy.user) {
            return Err(format!("policy of unknown user {:?}", policy.user));
        }
        if s.policies.contains_key(&policy.user) {
            return Err(format!("two policies for user {:?}", policy.user));
        }
        let count = policy.entries.len();
        let entries = normalize_entries(policy.entries)
            .map_err(|e| format!("policy of user {:?}: {e}", policy.user))?;
        if entries.len() != count || entries.is_empty() {
            return Err(format!(
                "policy of user {:?} has duplicate or no entries",
                policy.user
            ));
        }
        s.policies.insert(policy.user, entries);
    }
    Ok(s)
}

fn read_file(file: fs::File, path: &Path) -> Result<Snapshot, StoreError> {
    use std::io::Read;
    let io_err = |op, source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let len = file.metadata().map_err(|e| io_err("stat", e))?.len();
    if len > MAX_FILE_LEN {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("{len} bytes, more than the {MAX_FILE_LEN} a store can hold"),
        });
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(len as usize));
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err("read", e))?;
    decode(&bytes, path)
}

fn write_file(dir: &Path, s: &Snapshot) -> Result<(), StoreError> {
    let path = dir.join(FILE_NAME);
    let io_err = |op, source| StoreError::Io {
        op,
        path: path.clone(),
        source,
    };
    let bytes =
        zeroize::Zeroizing::new(encode(s).map_err(|e| io_err("encode", io::Error::other(e)))?);
    // tempfile creates the file with mode 0600 in the same directory, so the rename is atomic.
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| io_err("create temporary file for", e))?;
    tmp.write_all(&bytes).map_err(|e| io_err("write", e))?;
    tmp.as_file().sync_all().map_err(|e| io_err("fsync", e))?;
    tmp.persist(&path)
        .map_err(|e| io_err("rename into", e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Io {
            op: "fsync directory",
            path: dir.to_path_buf(),
            source: e,
        })
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| StoreError::Io {
        op: "create directory",
        path: dir.to_path_buf(),
        source,
    })
}

fn remove_stale_temp_files(dir: &Path) -> Result<(), StoreError> {
    let io_err = |op, source| StoreError::Io {
        op,
        path: dir.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(|e| io_err("list", e))? {
        let entry = entry.map_err(|e| io_err("list", e))?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            fs::remove_file(entry.path())
                .map_err(|e| io_err("remove stale temporary file in", e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn secret(s: &str) -> Secret {
        Secret::new(s).unwrap()
    }

    fn entry(resource: &str, actions: &str, effect: &str) -> PolicyEntry {
        PolicyEntry::parse(resource, actions, effect, &[]).unwrap()
    }

    /// A store in a fresh directory holding `users`, each with the secret `<name>-secret-1`.
    fn store_with(users: &[(&str, UserKind)]) -> (tempfile::TempDir, AuthStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        for (name, kind) in users {
            store
                .create_user(name, secret(&format!("{name}-secret-1")), *kind)
                .unwrap();
        }
        (dir, store)
    }

    const ROOT: (&str, UserKind) = ("root", UserKind::Super);
    const APP: (&str, UserKind) = ("app", UserKind::Normal);

    #[test]
    fn users_and_policies_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = AuthStore::open(dir.path()).unwrap();
            assert_eq!(store.snapshot().generation(), 0);
            for (name, kind) in [ROOT, APP] {
                store
                    .create_user(name, secret(&format!("{name}-secret-1")), kind)
                    .unwrap();
            }
            store
                .put_entry("app", entry("topic:orders*", "pub", "allow"))
                .unwrap();
            store
                .put_entry("app", entry("topic:orders-x", "pub", "deny"))
                .unwrap();
        }
        let store = AuthStore::open(dir.path()).unwrap();
        let s = store.snapshot();
        assert_eq!(s.generation(), 4);
        assert_eq!(
            store.list_users(),
            vec![
                UserInfo {
                    name: "app".into(),
                    kind: UserKind::Normal
                },
                UserInfo {
                    name: "root".into(),
                    kind: UserKind::Super
                },
            ]
        );
        assert!(s.user("app").unwrap().secret.ct_eq(&secret("app-secret-1")));
        assert_eq!(store.describe_policy("app").unwrap().entries.len(), 2);
        assert_eq!(store.list_policies().len(), 1);
    }

    #[test]
    fn the_file_is_private_and_never_holds_temp_leftovers() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("auth");
        let store = AuthStore::open(&sub).unwrap();
        store
            .create_user("root", secret("root-secret-1"), UserKind::Super)
            .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.path()), 0o600);
        assert_eq!(mode(&sub), 0o700);
        let names: Vec<String> = fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["auth.json"]);
    }

    #[test]
    fn admin_errors_are_precise_and_change_nothing() {
        let (_dir, store) = store_with(&[ROOT]);
        let before = fs::read(store.path()).unwrap();
        let generation = store.snapshot().generation();

        let e = store
            .create_user("root", secret("other-secret"), UserKind::Normal)
            .unwrap_err();
        assert_eq!(e.kind(), AdminErrorKind::AlreadyExists);
        let e = store
            .create_user("a/b", secret("other-secret"), UserKind::Normal)
            .unwrap_err();
        assert_eq!(e.kind(), AdminErrorKind::InvalidArgument);
        let e = store.delete_user("nobody").unwrap_err();
        assert_eq!(e.kind(), AdminErrorKind::NotFound);
        let e = store
            .put_entry("nobody", entry("topic:a", "pub", "allow"))
            .unwrap_err();
        assert_eq!(e.to_string(), "no user \"nobody\"");
        let e = store.delete_user("root").unwrap_err();
        assert_eq!(e.kind(), AdminErrorKind::FailedPrecondition);
        let e = store
            .update_user("root", None, Some(UserKind::Normal))
            .unwrap_err();
        assert!(matches!(e, AdminError::LastSuperUser { .. }));
        let e = store.delete_policy("root").unwrap_err();
        assert!(matches!(e, AdminError::PolicyNotFound { .. }));
        let e = store
            .remove_entries("root", &"topic:a".parse().unwrap(), None)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "policy of user \"root\" has no any entry for topic:a"
        );

        assert_eq!(store.snapshot().generation(), generation);
        assert_eq!(fs::read(store.path()).unwrap(), before);
    }

    #[test]
    fn deleting_a_user_revokes_it_and_its_policy() {
        let (_dir, store) = store_with(&[ROOT, APP]);
        store
            .set_policy("app", vec![entry("topic:*", "all", "allow")])
            .unwrap();
        store.delete_user("app").unwrap();
        assert!(store.snapshot().user("app").is_none());
        assert!(store.list_policies().is_empty());
        // Recreated under the same name, it starts with no policy.
        store
            .create_user("app", secret("app-secret-2"), UserKind::Normal)
            .unwrap();
        assert!(store.describe_policy("app").unwrap().entries.is_empty());
    }

    #[test]
    fn put_entry_replaces_by_resource_and_effect_and_remove_entries_selects() {
        let (_dir, store) = store_with(&[APP]);
        store
            .put_entry("app", entry("topic:a", "pub", "allow"))
            .unwrap();
        store
            .put_entry("app", entry("topic:a", "pub,sub", "allow"))
            .unwrap();
        let p = store
            .put_entry("app", entry("topic:a", "sub", "deny"))
            .unwrap();
        assert_eq!(
            p.entries.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            ["allow publish,subscribe topic:a", "deny subscribe topic:a"]
        );
        let p = store
            .remove_entries("app", &"topic:a".parse().unwrap(), Some(Effect::Deny))
            .unwrap();
        assert_eq!(p.entries.len(), 1);
        store
            .remove_entries("app", &"topic:a".parse().unwrap(), None)
            .unwrap();
        assert!(store.list_policies().is_empty());
    }

    #[test]
    fn ensure_super_user_writes_only_when_needed() {
        let (_dir, store) = store_with(&[]);
        assert!(store
            .ensure_super_user("admin", &secret("admin-secret-1"))
            .unwrap());
        assert!(!store
            .ensure_super_user("admin", &secret("admin-secret-1"))
            .unwrap());
        assert_eq!(store.snapshot().generation(), 1);
        // A rotated Secret takes over at the next start.
        assert!(store
            .ensure_super_user("admin", &secret("admin-secret-2"))
            .unwrap());
        assert!(store
            .snapshot()
            .user("admin")
            .unwrap()
            .secret
            .ct_eq(&secret("admin-secret-2")));
    }

    #[test]
    fn corrupt_truncated_and_foreign_files_are_refused() {
        let (dir, store) = store_with(&[ROOT]);
        let path = store.path();
        drop(store);
        let good = fs::read(&path).unwrap();
        let reopen = || AuthStore::open(dir.path()).map(|_| ());

        // One flipped bit in the body.
        let mut flipped = good.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x01;
        fs::write(&path, &flipped).unwrap();
        assert!(
            matches!(reopen(), Err(StoreError::Corrupt { detail, .. }) if detail.contains("CRC32C"))
        );

        fs::write(&path, &good[..good.len() - 10]).unwrap();
        assert!(
            matches!(reopen(), Err(StoreError::Corrupt { detail, .. }) if detail.contains("truncated"))
        );

        let newer = String::from_utf8(good.clone()).unwrap().replacen(
            "ferromq-auth 1",
            "ferromq-auth 2",
            1,
        );
        fs::write(&path, newer).unwrap();
        assert!(
            matches!(reopen(), Err(StoreError::UnsupportedVersion { found, .. }) if found == "2")
        );

        fs::write(&path, b"").unwrap();
        assert!(matches!(reopen(), Err(StoreError::Corrupt { .. })));

        // A well-framed body that breaks a rule (a policy of a missing user).
        let body = br#"{"generation":1,"users":[],"policies":[{"user":"ghost","entries":[{"resource":"*","actions":["all"],"effect":"allow"}]}]}"#;
        fs::write(&path, frame(body)).unwrap();
        assert!(
            matches!(reopen(), Err(StoreError::Corrupt { detail, .. }) if detail.contains("unknown user"))
        );

        // A bad secret in the file is refused without echoing it.
        let body = br#"{"generation":1,"users":[{"name":"u","kind":"normal","secret":"bad secret value"}],"policies":[]}"#;
        fs::write(&path, frame(body)).unwrap();
        let err = reopen().unwrap_err().to_string();
        assert!(
            err.contains("corrupt") && !err.contains("bad secret value"),
            "{err}"
        );

        fs::write(&path, &good).unwrap();
        assert!(reopen().is_ok());
    }

    #[test]
    fn a_crash_before_the_rename_keeps_the_old_file() {
        let (dir, store) = store_with(&[ROOT]);
        drop(store);
        // What a crash mid-write leaves: a half-written temporary file beside the old one.
        fs::write(
            dir.path().join(format!("{TEMP_PREFIX}XyZ123")),
            b"ferromq-auth 1 crc32c=0",
        )
        .unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        assert_eq!(store.list_users().len(), 1);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "stale temp file removed"
        );
    }

    #[test]
    fn the_file_holds_the_secret_only_where_expected() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuthStore::open(dir.path()).unwrap();
        store
            .create_user("app", secret("app-secret-XYZ"), UserKind::Normal)
            .unwrap();
        let text = fs::read_to_string(store.path()).unwrap();
        assert_eq!(text.matches("app-secret-XYZ").count(), 1);
        assert!(!format!("{store:?} {:?}", store.snapshot()).contains("app-secret-XYZ"));
    }

    /// A group's journal as a test sees it: what was proposed, and whether to refuse.
    #[derive(Default)]
    struct Journal {
        proposed: Mutex<Vec<AuthChange>>,
        refuse: AtomicBool,
    }

    impl Replicator for Journal {
        fn replicate(&self, change: &AuthChange) -> Result<(), String> {
            if self.refuse.load(Ordering::Relaxed) {
                return Err("replica 2 leads".into());
            }
            self.proposed.lock().unwrap().push(change.clone());
            Ok(())
        }
    }

    #[test]
    fn a_replicated_store_changes_only_through_what_its_group_applies() {
        let (leader_dir, leader) = store_with(&[]);
        let (follower_dir, follower) = store_with(&[]);
        let journal = Arc::new(Journal::default());
        assert!(leader.replicate_with(journal.clone()));
        assert!(!leader.replicate_with(journal.clone()), "set once");

        let info = leader
            .create_user("app", secret("app-secret-1"), UserKind::Normal)
            .unwrap();
        assert_eq!(info.name, "app");
        assert!(
            leader.snapshot().user("app").is_none(),
            "not in the store before the group's record is applied"
        );
        assert!(!leader.path().exists(), "nothing written by the proposal");
        let first = journal.proposed.lock().unwrap()[0].clone();
        for s in [&leader, &follower] {
            s.apply_replicated(&first).unwrap();
        }
        leader
            .put_entry("app", entry("topic:orders", "pub", "allow"))
            .unwrap();
        let second = journal.proposed.lock().unwrap()[1].clone();
        for s in [&leader, &follower] {
            s.apply_replicated(&second).unwrap();
            // A record applied twice (a restart re-reading the journal) changes nothing.
            s.apply_replicated(&second).unwrap();
            assert_eq!(s.describe_policy("app").unwrap().entries.len(), 1);
        }
        // The follower's file holds what the leader's does, and survives a reopen.
        drop(follower);
        let reopened = AuthStore::open(follower_dir.path()).unwrap();
        assert!(reopened
            .snapshot()
            .user("app")
            .unwrap()
            .secret
            .ct_eq(&secret("app-secret-1")));

        // Checks run against the current state before anything is proposed.
        let e = leader
            .create_user("app", secret("app-secret-2"), UserKind::Normal)
            .unwrap_err();
        assert_eq!(e.kind(), AdminErrorKind::AlreadyExists);
        // A change with no effect is not proposed.
        leader
            .put_entry("app", entry("topic:orders", "pub", "allow"))
            .unwrap();
        assert_eq!(journal.proposed.lock().unwrap().len(), 2);

        // A group that refuses leaves the store as it was, with a retryable error.
        journal.refuse.store(true, Ordering::Relaxed);
        let before = fs::read(leader.path()).unwrap();
        let e = leader.delete_user("app").unwrap_err();
        assert_eq!(e.kind(), AdminErrorKind::Unavailable);
        assert_eq!(
            e.to_string(),
            "the change was not replicated: replica 2 leads"
        );
        assert!(leader.snapshot().user("app").is_some());
        assert_eq!(fs::read(leader.path()).unwrap(), before);
        drop(leader_dir);
    }

    /// Readers running while users and their policies are created and deleted always see a user
    /// together with its policy (never one without the other), and generations never go back.
    #[test]
    fn readers_see_consistent_snapshots_during_writes() {
        let (dir, store) = store_with(&[ROOT]);
        let store = Arc::new(store);
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (store, stop) = (store.clone(), stop.clone());
                std::thread::spawn(move || {
                    let (mut last, mut checks) = (0, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let s = store.snapshot();
                        assert!(s.generation() >= last);
                        last = s.generation();
                        let users: BTreeSet<&str> = s.users().map(|u| u.name.as_str()).collect();
                        for u in users.iter().filter(|u| u.starts_with('u')) {
                            // Each user u<i> is created and given its policy in one change.
                            assert_eq!(s.policy_entries(u).len(), 1, "user {u} without its policy");
                        }
                        checks += 1;
                    }
                    checks
                })
            })
            .collect();
        for i in 0..40 {
            let name = format!("u{i}");
            store
                .change(|s| {
                    s.users.insert(
                        name.clone(),
                        User {
                            name: name.clone(),
                            secret: secret("user-secret-1"),
                            kind: UserKind::Normal,
                        },
                    );
                    s.policies
                        .insert(name.clone(), vec![entry("topic:t", "pub", "allow")]);
                    Ok(())
                })
                .unwrap();
            if i % 3 == 0 {
                store.delete_user(&name).unwrap();
            }
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        let reopened = AuthStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened.snapshot().generation(),
            store.snapshot().generation()
        );
        assert_eq!(reopened.list_users().len(), 1 + 40 - 14);
    }
}
