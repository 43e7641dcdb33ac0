//! Users and policies kept by a replicated broker group: a change as a record the group's
//! journal carries, and the hook through which a store proposes one.
//!
//! On a member of a replicated group the store is a copy of the group's state, not a state of
//! its own: an admin operation does not write the file itself. It works out what the operation
//! changes ([`AuthChange::between`] the current snapshot and the one the operation would make),
//! hands that to the group ([`Replicator::replicate`]), and the store changes only when the
//! group's copy of the record is applied to it ([`crate::AuthStore::apply_replicated`]), on the
//! leader exactly as on the followers. So every member holds what the group confirmed, and
//! nothing else: a change the leader wrote but the group never confirmed is in no member's
//! store, even the leader's.
//!
//! A change holds, for each user it touched, the user's whole state after it (kind, secret and
//! whole policy, or "deleted"). Applying it sets values, so applying the same record twice, or a
//! record to a store that already holds it, changes nothing.

use serde::{Deserialize, Serialize};

use crate::policy::{normalize_entries, PolicyEntry};
use crate::secret::Secret;
use crate::snapshot::Snapshot;
use crate::store::{read_secret, write_secret, MAX_USERS};
use crate::user::{validate_access_key, User, UserKind};

/// What one admin operation changed: the new state of each user it touched, in name order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthChange {
    pub users: Vec<UserChange>,
}

/// One user after a change. `Debug` shows the secret as `<redacted>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    pub name: String,
    /// The user's kind and secret; `None`: the user (and its policy) is gone.
    #[serde(default)]
    pub user: Option<UserState>,
    /// The user's whole policy (empty: none).
    #[serde(default)]
    pub entries: Vec<PolicyEntry>,
}

/// A user's kind and secret, as a change carries them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserState {
    pub kind: UserKind,
    #[serde(serialize_with = "write_secret", deserialize_with = "read_secret")]
    pub secret: Secret,
}

/// Why a replicated change could not be applied. The record is not applied at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("replicated change of user {user:?} is invalid: {reason}")]
pub struct ChangeError {
    pub user: String,
    pub reason: String,
}

/// Makes a change part of a replicated group's state (a member's side of the group's journal).
pub trait Replicator: Send + Sync {
    /// Writes `change` where the group replicates it and returns once the group confirmed it and
    /// this store applied it. `Err` says why not (this member does not lead, the group did not
    /// confirm in time); the store then did not change, though a change the group confirms
    /// later still reaches every member.
    fn replicate(&self, change: &AuthChange) -> Result<(), String>;
}

impl AuthChange {
    /// What turns `before` into `after`: every user whose kind, secret or policy differs.
    pub fn between(before: &Snapshot, after: &Snapshot) -> AuthChange {
        let mut names: Vec<&String> = before
            .users
            .keys()
            .chain(after.users.keys())
            .chain(before.policies.keys())
            .chain(after.policies.keys())
            .collect();
        names.sort();
        names.dedup();
        let users = names
            .into_iter()
            .filter(|name| {
                let same_user = match (before.users.get(*name), after.users.get(*name)) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a.kind == b.kind && a.secret.ct_eq(&b.secret),
                    _ => false,
                };
                !same_user || before.policy_entries(name) != after.policy_entries(name)
            })
            .map(|name| UserChange {
                name: name.clone(),
                user: after.users.get(name).map(|u| UserState {
                    kind: u.kind,
                    secret: u.secret.clone(),
                }),
                entries: after.policy_entries(name).to_vec(),
            })
            .collect();
        AuthChange { users }
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Applies the change to `s`, checking each user as the admin API would; on error `s` is
    /// left as it was.
    pub(crate) fn apply_to(&self, s: &mut Snapshot) -> Result<(), ChangeError> {
        let mut next = s.clone();
        for u in &self.users {
            let bad = |reason: String| ChangeError {
                user: u.name.clone(),
                reason,
            };
            validate_access_key(&u.name).map_err(|e| bad(e.to_string()))?;
            let Some(state) = &u.user else {
                if !u.entries.is_empty() {
                    return Err(bad("a deleted user cannot keep a policy".into()));
                }
                next.users.remove(&u.name);
                next.policies.remove(&u.name);
                continue;
            };
            if !next.users.contains_key(&u.name) && next.users.len() >= MAX_USERS {
                return Err(bad(format!("the store already holds {MAX_USERS} users")));
            }
            next.users.insert(
                u.name.clone(),
                User {
                    name: u.name.clone(),
                    secret: state.secret.clone(),
                    kind: state.kind,
                },
            );
            let count = u.entries.len();
            let entries = normalize_entries(u.entries.clone()).map_err(|e| bad(e.to_string()))?;
            if entries.len() != count {
                return Err(bad("the policy has duplicate entries".into()));
            }
            if entries.is_empty() {
                next.policies.remove(&u.name);
            } else {
                next.policies.insert(u.name.clone(), entries);
            }
        }
        next.generation = s.generation;
        *s = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, kind: UserKind, secret: &str) -> User {
        User {
            name: name.into(),
            secret: Secret::new(secret).unwrap(),
            kind,
        }
    }

    fn entry(resource: &str, actions: &str) -> PolicyEntry {
        PolicyEntry::parse(resource, actions, "allow", &[]).unwrap()
    }

    fn with(users: &[User]) -> Snapshot {
        let mut s = Snapshot::default();
        for u in users {
            s.users.insert(u.name.clone(), u.clone());
        }
        s
    }

    #[test]
    fn a_change_names_only_the_users_that_differ_and_applies_back() {
        let before = with(&[
            user("root", UserKind::Super, "root-secret-1"),
            user("app", UserKind::Normal, "app-secret-1"),
            user("old", UserKind::Normal, "old-secret-1"),
        ]);
        let mut after = before.clone();
        after
            .users
            .insert("app".into(), user("app", UserKind::Normal, "app-secret-2"));
        after.users.remove("old");
        after
            .users
            .insert("new".into(), user("new", UserKind::Normal, "new-secret-1"));
        after
            .policies
            .insert("new".into(), vec![entry("topic:orders", "pub")]);
        let change = AuthChange::between(&before, &after);
        let names: Vec<&str> = change.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["app", "new", "old"]);

        // Through its text form, as the journal carries it.
        let text = serde_json::to_string(&change).unwrap();
        let back: AuthChange = serde_json::from_str(&text).unwrap();
        let mut s = before.clone();
        back.apply_to(&mut s).unwrap();
        assert!(s
            .user("app")
            .unwrap()
            .secret
            .ct_eq(&Secret::new("app-secret-2").unwrap()));
        assert!(s.user("old").is_none());
        assert_eq!(s.policy_entries("new"), &[entry("topic:orders", "pub")]);
        assert!(AuthChange::between(&s, &after).is_empty());
        // Applying it again changes nothing.
        back.apply_to(&mut s).unwrap();
        assert!(AuthChange::between(&s, &after).is_empty());
    }

    #[test]
    fn a_change_that_breaks_a_rule_is_refused_whole() {
        let mut s = with(&[user("root", UserKind::Super, "root-secret-1")]);
        let change = AuthChange {
            users: vec![
                UserChange {
                    name: "fine".into(),
                    user: Some(UserState {
                        kind: UserKind::Normal,
                        secret: Secret::new("fine-secret-1").unwrap(),
                    }),
                    entries: vec![],
                },
                UserChange {
                    name: "ghost".into(),
                    user: None,
                    entries: vec![entry("topic:a", "pub")],
                },
            ],
        };
        let e = change.apply_to(&mut s).unwrap_err();
        assert_eq!(e.user, "ghost");
        assert!(
            s.user("fine").is_none(),
            "nothing of a refused change applies"
        );
        let bad_name = AuthChange {
            users: vec![UserChange {
                name: "a/b".into(),
                user: None,
                entries: vec![],
            }],
        };
        assert!(bad_name.apply_to(&mut s).is_err());
    }

    #[test]
    fn the_text_form_holds_the_secret_but_debug_does_not() {
        let before = Snapshot::default();
        let after = with(&[user("app", UserKind::Normal, "app-secret-XYZ")]);
        let change = AuthChange::between(&before, &after);
        assert!(serde_json::to_string(&change)
            .unwrap()
            .contains("app-secret-XYZ"));
        assert!(!format!("{change:?}").contains("app-secret-XYZ"));
        // A secret the store would refuse is refused when read back.
        let text = r#"{"users":[{"name":"u","user":{"kind":"normal","secret":"bad secret"}}]}"#;
        assert!(serde_json::from_str::<AuthChange>(text).is_err());
    }
}
