//! The Broker's super user: the Secret its pods bootstrap it from and the credential the
//! operator signs its own admin calls to that cluster with.
//!
//! The Broker controller generates the Secret when `spec.auth` names none and registers the
//! credential for the Broker's admin endpoint on every reconcile (so Topic and drain calls are
//! signed too); the User controller reads it the same way before its calls, so it does not
//! depend on which reconcile ran first.

use ferromq_auth::Secret as SecretKey;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use kube::ResourceExt;

use super::{admin_endpoint, child_ref, Context};
use crate::admin::Credentials;
use crate::builders::auth::{credential_secret, credentials_of, GENERATED_SUPER_USER};
use crate::builders::broker::{super_user_secret, BROKER_COMPONENT};
use crate::builders::common::Parent;
use crate::crd::Broker;
use crate::Error;

/// What the operator knows of a Broker's super user.
#[derive(Debug)]
pub enum SuperUser {
    /// Authentication is off: admin calls go unsigned.
    Off,
    /// Calls are signed with this credential.
    Ready(Credentials),
    /// The credential cannot be had; the reason and message say why (never a secret).
    Unusable {
        /// CamelCase condition reason.
        reason: &'static str,
        /// What to do about it.
        message: String,
    },
}

/// Reads (and, when `generate` and the Broker names no Secret, creates) the super user's
/// Secret of `broker`, and registers the credential for its admin endpoint.
pub async fn resolve(ctx: &Context, broker: &Broker, generate: bool) -> Result<SuperUser, Error> {
    let namespace = broker.namespace().unwrap_or_default();
    let name = broker.name_any();
    let endpoint = admin_endpoint(ctx, &namespace, &name);
    let Some(secret_name) = super_user_secret(broker, &name) else {
        ctx.admin.use_credentials(&endpoint, None);
        return Ok(SuperUser::Off);
    };
    let named = broker
        .spec
        .auth
        .as_ref()
        .is_some_and(|a| a.super_user_secret_ref.is_some());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret = match secrets.get_opt(&secret_name).await? {
        Some(s) => s,
        None if named => {
            return Ok(SuperUser::Unusable {
                reason: "SuperUserSecretNotFound",
                message: format!(
                    "Secret {secret_name} (spec.auth.superUserSecretRef) does not exist in namespace {namespace}; create it with keys accessKey and secretKey"
                ),
            })
        }
        None if !generate => {
            return Ok(SuperUser::Unusable {
                reason: "SuperUserSecretPending",
                message: format!(
                    "the operator has not generated Secret {secret_name} for Broker {name} yet"
                ),
            })
        }
        None => match generate_secret(ctx, broker, &secrets, &secret_name).await? {
            Ok(s) => s,
            Err(unusable) => return Ok(unusable),
        },
    };
    match credentials_of(&secret) {
        Ok(c) => {
            ctx.admin.use_credentials(&endpoint, Some(c.clone()));
            Ok(SuperUser::Ready(c))
        }
        Err(e) => {
            ctx.admin.use_credentials(&endpoint, None);
            Ok(SuperUser::Unusable {
                reason: "InvalidSuperUserSecret",
                message: format!("{e}; fix the Secret (spec.auth.superUserSecretRef) or delete it to have the operator generate one when the Broker names none"),
            })
        }
    }
}

/// Creates `<broker>-superuser` with access key `admin` and a fresh random secret key, owned by
/// the Broker. Created, not applied: an existing Secret of that name is never overwritten (a
/// lost race re-reads the winner's).
async fn generate_secret(
    ctx: &Context,
    broker: &Broker,
    secrets: &Api<Secret>,
    secret_name: &str,
) -> Result<Result<Secret, SuperUser>, Error> {
    let key = match SecretKey::generate() {
        Ok(k) => k,
        Err(e) => {
            return Ok(Err(SuperUser::Unusable {
                reason: "SecretGenerationFailed",
                message: e.to_string(),
            }))
        }
    };
    let parent = Parent::of(broker)?;
    let secret = credential_secret(
        &parent,
        secret_name,
        BROKER_COMPONENT,
        GENERATED_SUPER_USER,
        &key,
        &[],
        Default::default(),
    );
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(created) => {
            ctx.event_related(
                broker,
                Some(child_ref::<Secret>(&parent.namespace, secret_name)),
                EventType::Normal,
                "Created",
                "Reconcile",
                format!("created Secret {secret_name} with a generated super user ({GENERATED_SUPER_USER})"),
            )
            .await;
            Ok(Ok(created))
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Ok(secrets.get(secret_name).await?)),
        Err(e) => Err(e.into()),
    }
}
