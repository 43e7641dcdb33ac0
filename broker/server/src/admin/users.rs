//! Users and ACL policies over the admin API: the store operations of `ferromq-auth` behind the
//! CreateUser .. DescribeAcl RPCs. Super users only (the service wrapper authenticated the call;
//! each RPC's rule in `ferromq_auth::rpc_rule` is super-user only). Secrets go in and never come
//! out.

use std::sync::Arc;

use ferromq_auth::{
    AdminError, AdminErrorKind, AuthStore, Effect, Policy, PolicyEntry, ResourcePattern, Secret,
    UserInfo, UserKind,
};
use ferromq_proto::admin;
use tonic::Status;
use tracing::info;

use crate::auth::Gate;

/// A store refusal as a gRPC status: the store's message, never a secret (secrets print as
/// `<redacted>` and their errors say only what is wrong with the length or characters).
pub fn admin_status(e: AdminError) -> Status {
    let msg = e.to_string();
    match e.kind() {
        AdminErrorKind::AlreadyExists => Status::already_exists(msg),
        AdminErrorKind::NotFound => Status::not_found(msg),
        AdminErrorKind::InvalidArgument => Status::invalid_argument(msg),
        AdminErrorKind::FailedPrecondition => Status::failed_precondition(msg),
        // A replicated group's follower, or a group that did not confirm in time.
        AdminErrorKind::Unavailable => Status::unavailable(msg),
        AdminErrorKind::Internal => Status::internal(msg),
    }
}

pub fn user_out(u: &UserInfo) -> admin::User {
    admin::User {
        name: u.name.clone(),
        kind: u.kind.as_str().to_string(),
    }
}

pub fn acl_out(p: &Policy) -> admin::Acl {
    admin::Acl {
        user: p.user.clone(),
        entries: p
            .entries
            .iter()
            .map(|e| admin::AclEntry {
                resource: e.resource.to_string(),
                actions: e.actions.names().iter().map(|a| a.to_string()).collect(),
                effect: e.effect.to_string(),
                sources: e.sources.iter().map(|s| s.to_string()).collect(),
            })
            .collect(),
    }
}

fn kind(text: &str, field: &str) -> Result<Option<UserKind>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e: String| Status::invalid_argument(format!("{field}: {e}")))
}

fn secret(text: String) -> Result<Secret, Status> {
    Secret::new(text).map_err(|e| Status::invalid_argument(format!("secret: {e}")))
}

/// Parses an entry as the CLI sends it.
pub fn entry_in(e: Option<admin::AclEntry>) -> Result<PolicyEntry, Status> {
    let e = e.ok_or_else(|| Status::invalid_argument("entry is required"))?;
    let sources: Vec<&str> = e.sources.iter().map(String::as_str).collect();
    PolicyEntry::parse(&e.resource, &e.actions.join(","), &e.effect, &sources)
        .map_err(|err| Status::invalid_argument(format!("entry: {err}")))
}

/// The user and ACL operations of one storage node.
#[derive(Clone)]
pub struct Users {
    gate: Option<Arc<Gate>>,
}

impl Users {
    pub fn new(gate: Option<Arc<Gate>>) -> Users {
        Users { gate }
    }

    /// Runs a store operation off the async workers (each change is an fsynced file write).
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&AuthStore) -> Result<T, AdminError> + Send + 'static,
    ) -> Result<T, Status> {
        let gate = self.gate.clone().ok_or_else(|| {
            Status::failed_precondition(
                "auth is off on this server: start it with --auth to manage users and ACLs",
            )
        })?;
        tokio::task::spawn_blocking(move || f(gate.store()))
            .await
            .map_err(|e| Status::internal(format!("worker failed: {e}")))?
            .map_err(admin_status)
    }

    pub async fn create_user(&self, r: admin::CreateUserRequest) -> Result<admin::User, Status> {
        let kind = kind(&r.kind, "kind")?.unwrap_or(UserKind::Normal);
        let secret = secret(r.secret)?;
        let name = r.name;
        let u = self
            .with_store(move |s| s.create_user(&name, secret, kind))
            .await?;
        info!(user = %u.name, kind = %u.kind, "user created");
        Ok(user_out(&u))
    }

    pub async fn update_user(&self, r: admin::UpdateUserRequest) -> Result<admin::User, Status> {
        let kind = kind(&r.kind, "kind")?;
        let secret = match r.secret.is_empty() {
            true => None,
            false => Some(secret(r.secret)?),
        };
        let changed_secret = secret.is_some();
        let name = r.name;
        let u = self
            .with_store(move |s| s.update_user(&name, secret, kind))
            .await?;
        info!(user = %u.name, kind = %u.kind, secret_changed = changed_secret, "user updated");
        Ok(user_out(&u))
    }

    pub async fn delete_user(&self, name: String) -> Result<(), Status> {
        let n = name.clone();
        self.with_store(move |s| s.delete_user(&n)).await?;
        info!(user = %name, "user deleted");
        Ok(())
    }

    pub async fn list_users(&self) -> Result<Vec<admin::User>, Status> {
        self.with_store(|s| Ok(s.list_users().iter().map(user_out).collect()))
            .await
    }

    pub async fn describe_user(&self, name: String) -> Result<admin::User, Status> {
        self.with_store(move |s| s.describe_user(&name).map(|u| user_out(&u)))
            .await
    }

    pub async fn put_acl(&self, r: admin::PutAclRequest) -> Result<admin::Acl, Status> {
        let entry = entry_in(r.entry)?;
        let shown = entry.to_string();
        let user = r.user;
        let p = self.with_store(move |s| s.put_entry(&user, entry)).await?;
        info!(user = %p.user, entry = %shown, "ACL entry stored");
        Ok(acl_out(&p))
    }

    pub async fn delete_acl(&self, r: admin::DeleteAclRequest) -> Result<(), Status> {
        let user = r.user.clone();
        if r.resource.is_empty() {
            self.with_store(move |s| s.delete_policy(&user)).await?;
            info!(user = %r.user, "policy deleted");
            return Ok(());
        }
        let resource: ResourcePattern = r
            .resource
            .parse()
            .map_err(|e| Status::invalid_argument(format!("resource: {e}")))?;
        let effect: Option<Effect> = match r.effect.is_empty() {
            true => None,
            false => Some(
                r.effect
                    .parse()
                    .map_err(|e| Status::invalid_argument(format!("effect: {e}")))?,
            ),
        };
        self.with_store(move |s| s.remove_entries(&user, &resource, effect).map(|_| ()))
            .await?;
        info!(user = %r.user, resource = %r.resource, effect = %r.effect, "ACL entries removed");
        Ok(())
    }

    pub async fn list_acls(&self) -> Result<Vec<admin::Acl>, Status> {
        self.with_store(|s| Ok(s.list_policies().iter().map(acl_out).collect()))
            .await
    }

    pub async fn describe_acl(&self, user: String) -> Result<admin::Acl, Status> {
        self.with_store(move |s| s.describe_policy(&user).map(|p| acl_out(&p)))
            .await
    }
}
