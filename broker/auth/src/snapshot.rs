//! One consistent view of users and policies, and every question the server asks of it: who is
//! calling ([`Snapshot::authenticate`]) and may they ([`Snapshot::authorize`] and friends).
//!
//! A snapshot is immutable; the store publishes a new one after each change. A request takes one
//! snapshot and asks all its questions of it, so it never sees a user from one version and a
//! policy from another. Authorization reads the user's kind and policy from the snapshot, not
//! from the [`Principal`] authentication returned: deleting a user or demoting a super user
//! takes effect on the next question, even on a stream that authenticated earlier.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use crate::authn::{authenticate, AuthnError, ClockPolicy, Principal, RequestCredentials};
use crate::policy::{evaluate, Action, AllowedBy, Decision, DeniedBy, PolicyEntry, Resource};
use crate::rpc::{
    rpc_rule, rule_access, settings_access, Access, AccessError, RpcRule, SettingsTargets, Targets,
};
use crate::secret::Secret;
use crate::user::{validate_access_key, NameError, User, UserKind};

/// Prefix of FerroMQ's internal topics: the replication journal (users' secrets travel in it),
/// parked delay and transaction messages.
pub const INTERNAL_TOPIC_PREFIX: &str = "%SYS%";

/// Users and policies at one generation.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) users: BTreeMap<String, User>,
    /// Entries by user; a user without entries has no key here.
    pub(crate) policies: BTreeMap<String, Vec<PolicyEntry>>,
}

impl Snapshot {
    /// Counts the changes since the store was created (0: never written).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Users in name order.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// The entries of a user's policy (empty when it has none).
    pub fn policy_entries(&self, user: &str) -> &[PolicyEntry] {
        self.policies.get(user).map(Vec::as_slice).unwrap_or(&[])
    }

    pub(crate) fn super_user_count(&self) -> usize {
        self.users
            .values()
            .filter(|u| u.kind == UserKind::Super)
            .count()
    }

    /// Authenticates one call against the users of this snapshot.
    pub fn authenticate(
        &self,
        credentials: &RequestCredentials<'_>,
        now: SystemTime,
        clock: &ClockPolicy,
    ) -> Result<Principal, AuthnError> {
        authenticate(credentials, now, clock, |ak| self.users.get(ak))
    }

    /// Authenticates one remoting request (see [`crate::remoting`]) from its header fields and
    /// body against the users of this snapshot.
    pub fn authenticate_remoting(
        &self,
        fields: &std::collections::BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<Principal, AuthnError> {
        crate::remoting::authenticate_remoting(fields, body, |ak| self.users.get(ak))
    }

    /// A snapshot holding one super user and nothing else: what a member of a replicated group
    /// checks its peers' internal calls against (the bootstrap super user every member is
    /// started with), whatever its replicated copy holds yet.
    pub fn with_super_user(name: &str, secret: &Secret) -> Result<Snapshot, NameError> {
        validate_access_key(name)?;
        let mut s = Snapshot::default();
        s.users.insert(
            name.into(),
            User {
                name: name.into(),
                secret: secret.clone(),
                kind: UserKind::Super,
            },
        );
        Ok(s)
    }

    /// May `principal` do `action` on `resource`, calling from `source`? Super users may do
    /// everything; a user that no longer exists may do nothing; normal users never reach
    /// FerroMQ's internal topics ([`INTERNAL_TOPIC_PREFIX`]).
    pub fn authorize(
        &self,
        principal: &Principal,
        resource: &Resource<'_>,
        action: Action,
        source: Option<IpAddr>,
    ) -> Decision {
        match self.users.get(&*principal.name).map(|u| u.kind) {
            Some(UserKind::Super) => Decision::Allow(AllowedBy::SuperUser),
            Some(UserKind::Normal) if matches!(resource, Resource::Topic(name) if name.starts_with(INTERNAL_TOPIC_PREFIX)) => {
                Decision::Deny(DeniedBy::InternalTopic)
            }
            Some(UserKind::Normal) => evaluate(
                self.policy_entries(&principal.name),
                resource,
                action,
                source,
            ),
            None => Decision::Deny(DeniedBy::NoMatchingAllow),
        }
    }

    /// Allowed when any of `any_of` is allowed. Refused otherwise, by a deny entry if one
    /// matched any of them.
    pub fn authorize_any(
        &self,
        principal: &Principal,
        resource: &Resource<'_>,
        any_of: &[Action],
        source: Option<IpAddr>,
    ) -> Decision {
        let mut refusal = DeniedBy::NoMatchingAllow;
        for &action in any_of {
            match self.authorize(principal, resource, action, source) {
                allowed @ Decision::Allow(_) => return allowed,
                // The reason worth naming: a deny entry, or an internal topic.
                Decision::Deny(d)
                    if d != DeniedBy::NoMatchingAllow && refusal == DeniedBy::NoMatchingAllow =>
                {
                    refusal = d
                }
                Decision::Deny(_) => {}
            }
        }
        Decision::Deny(refusal)
    }

    /// Every access must be allowed; the first that is not is the refusal.
    pub fn check_all(
        &self,
        principal: &Principal,
        accesses: &[Access<'_>],
        source: Option<IpAddr>,
    ) -> Result<(), AccessError> {
        for access in accesses {
            if let Decision::Deny(by) =
                self.authorize_any(principal, &access.resource, access.any_of, source)
            {
                let actions: Vec<&str> = access.any_of.iter().map(|a| a.as_str()).collect();
                return Err(AccessError::Forbidden {
                    user: principal.name.to_string(),
                    resource: access.resource.to_string(),
                    action: actions.join("|"),
                    peer: source,
                    reason: by.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Authorizes a unary or server-streaming call by its gRPC path and the names its request
    /// carries. For `Telemetry`, only opening the stream is checked here (nothing to check);
    /// each Settings command goes through [`Snapshot::authorize_settings`].
    pub fn authorize_rpc(
        &self,
        principal: &Principal,
        path: &str,
        targets: &Targets<'_>,
        source: Option<IpAddr>,
    ) -> Result<(), AccessError> {
        let is_super = self.users.get(&*principal.name).map(|u| u.kind) == Some(UserKind::Super);
        match rpc_rule(path) {
            RpcRule::PerSettingsCommand => Ok(()),
            _ if is_super => Ok(()),
            RpcRule::SuperUserOnly => Err(AccessError::Forbidden {
                user: principal.name.to_string(),
                resource: "cluster".into(),
                action: path.trim_start_matches('/').to_string(),
                peer: source,
                reason: DeniedBy::SuperUserOnly.to_string(),
            }),
            RpcRule::Checks(checks) => {
                let accesses =
                    rule_access(checks, targets).map_err(|target| AccessError::MissingTarget {
                        rpc: path.trim_start_matches('/').to_string(),
                        target: target.as_str(),
                    })?;
                self.check_all(principal, &accesses, source)
            }
        }
    }

    /// Authorizes one Telemetry Settings command.
    pub fn authorize_settings(
        &self,
        principal: &Principal,
        settings: &SettingsTargets<'_>,
        source: Option<IpAddr>,
    ) -> Result<(), AccessError> {
        self.check_all(principal, &settings_access(settings), source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use std::sync::Arc;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        for (name, kind) in [("root", UserKind::Super), ("app", UserKind::Normal)] {
            s.users.insert(
                name.into(),
                User {
                    name: name.into(),
                    secret: Secret::new("secret-of-someone").unwrap(),
                    kind,
                },
            );
        }
        s.policies.insert(
            "app".into(),
            vec![
                PolicyEntry::parse("topic:orders*", "pub,sub", "allow", &[]).unwrap(),
                PolicyEntry::parse("group:billing", "sub", "allow", &[]).unwrap(),
                PolicyEntry::parse("topic:orders-secret", "sub", "deny", &[]).unwrap(),
            ],
        );
        s
    }

    fn principal(name: &str) -> Principal {
        Principal {
            name: Arc::from(name),
            kind: UserKind::Normal,
        }
    }

    /// Authorizes `user` calling `method` (`Service/Method` short forms below) with the names.
    fn call(
        s: &Snapshot,
        user: &str,
        method: &str,
        topic: Option<&str>,
        group: Option<&str>,
    ) -> Result<(), AccessError> {
        let path = match method.split_once('/') {
            Some(("admin", m)) => format!("/ferromq.admin.v1.Admin/{m}"),
            _ => format!("/apache.rocketmq.v2.MessagingService/{method}"),
        };
        s.authorize_rpc(&principal(user), &path, &Targets { topic, group }, None)
    }

    #[test]
    fn super_users_may_do_everything_normal_users_what_they_are_granted() {
        let s = snapshot();
        assert_eq!(
            s.authorize(&principal("root"), &Resource::Cluster, Action::Delete, None),
            Decision::Allow(AllowedBy::SuperUser)
        );
        assert!(call(&s, "root", "admin/CreateUser", None, None).is_ok());
        assert!(call(&s, "app", "SendMessage", Some("orders"), None).is_ok());
        assert!(call(&s, "app", "SendMessage", Some("orders-eu"), None).is_ok());
        let err = call(&s, "app", "SendMessage", Some("payments"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "user \"app\" may not publish topic:payments: no allow entry matches"
        );
        let err = call(&s, "app", "admin/CreateUser", None, None).unwrap_err();
        assert!(err.to_string().contains("only super users"), "{err}");
    }

    #[test]
    fn receive_needs_both_group_and_topic() {
        let s = snapshot();
        let recv = |topic, group| call(&s, "app", "ReceiveMessage", Some(topic), Some(group));
        assert!(recv("orders", "billing").is_ok());
        let err = recv("orders", "other-group").unwrap_err();
        assert!(err.to_string().contains("group:other-group"), "{err}");
        // The deny on orders-secret beats the prefix allow.
        let err = recv("orders-secret", "billing").unwrap_err();
        assert!(err.to_string().contains("deny entry #2"), "{err}");
    }

    #[test]
    fn query_route_needs_publish_or_subscribe() {
        let mut s = snapshot();
        s.policies.insert(
            "app".into(),
            vec![
                PolicyEntry::parse("topic:t", "sub", "allow", &[]).unwrap(),
                PolicyEntry::parse("topic:t", "pub", "deny", &[]).unwrap(),
            ],
        );
        assert!(
            call(&s, "app", "QueryRoute", Some("t"), None).is_ok(),
            "a consumer may look up the route"
        );
        let err = call(&s, "app", "QueryRoute", Some("u"), None).unwrap_err();
        assert!(
            err.to_string().contains("publish|subscribe topic:u"),
            "{err}"
        );
    }

    #[test]
    fn internal_topics_are_closed_to_normal_users_whatever_their_policy() {
        let mut s = snapshot();
        s.policies.insert(
            "app".into(),
            vec![
                PolicyEntry::parse("topic:*", "all", "allow", &[]).unwrap(),
                PolicyEntry::parse("group:*", "all", "allow", &[]).unwrap(),
            ],
        );
        let err = call(
            &s,
            "app",
            "PullMessage",
            Some("%SYS%FM_JOURNAL"),
            Some("billing"),
        );
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("internal topics are for super users only"),);
        assert!(call(&s, "app", "ReceiveMessage", Some("orders"), Some("billing")).is_ok());
        assert!(call(
            &s,
            "root",
            "PullMessage",
            Some("%SYS%FM_JOURNAL"),
            Some("g")
        )
        .is_ok());
    }

    #[test]
    fn a_lone_super_user_snapshot_authenticates_that_user_only() {
        let secret = Secret::new("cluster-secret-1").unwrap();
        let s = Snapshot::with_super_user("admin", &secret).unwrap();
        let now = std::time::SystemTime::now();
        let clock = ClockPolicy::default();
        let signed = crate::sign("admin", &secret, now);
        let creds = RequestCredentials {
            authorization: Some(signed.authorization.as_bytes()),
            date_time: Some(signed.date_time.as_bytes()),
        };
        let who = s.authenticate(&creds, now, &clock).unwrap();
        assert!(s
            .authorize_rpc(
                &who,
                "/ferromq.replication.v1.Replication/Fetch",
                &Targets::default(),
                None
            )
            .is_ok());
        let other = crate::sign("admin", &Secret::new("cluster-secret-2").unwrap(), now);
        let creds = RequestCredentials {
            authorization: Some(other.authorization.as_bytes()),
            date_time: Some(other.date_time.as_bytes()),
        };
        assert!(s.authenticate(&creds, now, &clock).is_err());
        assert!(Snapshot::with_super_user("a b", &secret).is_err());
    }

    #[test]
    fn missing_names_and_deleted_users() {
        let s = snapshot();
        assert_eq!(
            call(&s, "app", "SendMessage", None, None),
            Err(AccessError::MissingTarget {
                rpc: "apache.rocketmq.v2.MessagingService/SendMessage".into(),
                target: "topic"
            })
        );
        // A principal whose user is gone, even if it was a super user when it authenticated.
        let ghost = Principal {
            name: Arc::from("ghost"),
            kind: UserKind::Super,
        };
        assert_eq!(
            s.authorize(&ghost, &Resource::Topic("orders"), Action::Publish, None),
            Decision::Deny(DeniedBy::NoMatchingAllow)
        );
        assert!(call(&s, "ghost", "admin/ListUsers", None, None).is_err());
    }

    #[test]
    fn settings_commands_are_checked_per_topic() {
        let s = snapshot();
        let app = principal("app");
        let ok = SettingsTargets {
            publishing_topics: &["orders", "orders-2"],
            subscription_group: None,
            subscription_topics: &[],
        };
        assert!(s.authorize_settings(&app, &ok, None).is_ok());
        let bad = SettingsTargets {
            publishing_topics: &[],
            subscription_group: Some("billing"),
            subscription_topics: &["orders", "payments"],
        };
        let err = s.authorize_settings(&app, &bad, None).unwrap_err();
        assert!(
            err.to_string().contains("subscribe topic:payments"),
            "{err}"
        );
    }
}
