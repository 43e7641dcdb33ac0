//! Credential Secrets: the Secret a `User` owns and the Broker's generated super-user Secret
//! share one layout (`accessKey`, `secretKey`, and for users `endpoint`), built and read here.
//!
//! Reading never echoes a value: errors name the Secret and the key, and say what is wrong with
//! the secret key only in the auth crate's words (its length or character set).

use std::collections::BTreeMap;

use ferromq_auth::Secret as SecretKey;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;

use super::common::{object_labels, Parent};
use crate::admin::Credentials;

/// Key of the access key (user name) in a credential Secret.
pub const ACCESS_KEY: &str = "accessKey";
/// Key of the secret key in a credential Secret.
pub const SECRET_KEY: &str = "secretKey";
/// Key of the client address in a User's Secret.
pub const ENDPOINT_KEY: &str = "endpoint";
/// Annotation of a User's Secret: a command that uses it, ready to paste.
pub const EXAMPLE_ANNOTATION: &str = "ferromq.io/example";
/// Access key of the super user the operator generates for a Broker.
pub const GENERATED_SUPER_USER: &str = "admin";

/// Why a credential Secret cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// A key is absent or empty.
    #[error("Secret {secret} has no key {key}")]
    Missing {
        /// The Secret's name.
        secret: String,
        /// The missing key.
        key: &'static str,
    },
    /// The access key breaks the broker's rules.
    #[error("Secret {secret}: key {ACCESS_KEY}: {reason}")]
    AccessKey {
        /// The Secret's name.
        secret: String,
        /// The auth crate's words.
        reason: String,
    },
    /// The secret key breaks the broker's rules (never shown).
    #[error("Secret {secret}: key {SECRET_KEY}: {reason}")]
    SecretKey {
        /// The Secret's name.
        secret: String,
        /// The auth crate's words, which never include the value.
        reason: String,
    },
}

fn text(secret: &Secret, key: &'static str) -> Result<String, CredentialsError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let missing = || CredentialsError::Missing {
        secret: name.clone(),
        key,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(missing)?;
    let value = String::from_utf8(bytes).map_err(|_| match key {
        ACCESS_KEY => CredentialsError::AccessKey {
            secret: name.clone(),
            reason: "not UTF-8".into(),
        },
        _ => CredentialsError::SecretKey {
            secret: name.clone(),
            reason: "not UTF-8".into(),
        },
    })?;
    // A secret key's trailing newline (what `kubectl create secret --from-file` of an edited
    // file holds) is dropped, as the broker drops it from its secret file. The access key
    // reaches the broker as an environment variable, verbatim, so it is checked verbatim.
    let value = match key {
        SECRET_KEY => value.trim_end_matches(['\n', '\r']).to_string(),
        _ => value,
    };
    if value.is_empty() {
        return Err(missing());
    }
    Ok(value)
}

/// The secret key a credential Secret holds, checked by the auth crate.
pub fn secret_key_of(secret: &Secret) -> Result<SecretKey, CredentialsError> {
    let value = text(secret, SECRET_KEY)?;
    SecretKey::new(value).map_err(|e| CredentialsError::SecretKey {
        secret: secret.metadata.name.clone().unwrap_or_default(),
        reason: e.to_string(),
    })
}

/// The access key and secret key a credential Secret holds, both checked by the auth crate.
pub fn credentials_of(secret: &Secret) -> Result<Credentials, CredentialsError> {
    let access_key = text(secret, ACCESS_KEY)?;
    ferromq_auth::user::validate_access_key(&access_key).map_err(|e| {
        CredentialsError::AccessKey {
            secret: secret.metadata.name.clone().unwrap_or_default(),
            reason: e.to_string(),
        }
    })?;
    Ok(Credentials {
        access_key,
        secret: secret_key_of(secret)?,
    })
}

/// A credential Secret named `name`, owned by `parent` (deleted with it), labelled as a child of
/// `instance`/`component`. `extra` entries (a User's `endpoint`) join the two keys.
pub fn credential_secret(
    parent: &Parent,
    name: &str,
    component: &str,
    access_key: &str,
    secret_key: &SecretKey,
    extra: &[(&str, String)],
    annotations: BTreeMap<String, String>,
) -> Secret {
    let mut meta = parent.child_meta(name, object_labels(&parent.name, component));
    if !annotations.is_empty() {
        meta.annotations = Some(annotations);
    }
    let mut data = BTreeMap::from([
        (
            ACCESS_KEY.to_string(),
            ByteString(access_key.as_bytes().to_vec()),
        ),
        (
            SECRET_KEY.to_string(),
            ByteString(secret_key.expose().as_bytes().to_vec()),
        ),
    ]);
    for (k, v) in extra {
        data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
    }
    Secret {
        metadata: meta,
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Name of the super-user Secret the operator generates for Broker `broker`.
pub fn generated_super_user_secret(broker: &str) -> String {
    format!("{broker}-superuser")
}

/// True when `secret` is controlled by the object with `uid` (so the operator may rewrite it).
pub fn controlled_by(secret: &Secret, uid: &str) -> bool {
    secret
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.uid == uid && r.controller == Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn parent() -> Parent {
        Parent {
            name: "orders-app".into(),
            namespace: "prod".into(),
            owner: OwnerReference {
                api_version: "ferromq.io/v1alpha1".into(),
                kind: "User".into(),
                name: "orders-app".into(),
                uid: "uid-1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        }
    }

    #[test]
    fn a_built_secret_reads_back_and_is_owned_by_its_parent() {
        let key = SecretKey::new("0123456789abcdef").unwrap();
        let s = credential_secret(
            &parent(),
            "orders-app",
            "user",
            "orders-app",
            &key,
            &[(ENDPOINT_KEY, "demo.prod.svc:8081".to_string())],
            BTreeMap::new(),
        );
        let c = credentials_of(&s).unwrap();
        assert_eq!(c.access_key, "orders-app");
        assert!(c.secret.ct_eq(&key));
        assert!(controlled_by(&s, "uid-1"));
        assert!(!controlled_by(&s, "uid-2"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("prod"));
        let data = s.data.unwrap();
        assert_eq!(data[ENDPOINT_KEY].0, b"demo.prod.svc:8081");
        // Debug of the credentials never shows the secret.
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn unusable_secrets_name_the_key_and_never_the_value() {
        let mut s = credential_secret(
            &parent(),
            "su",
            "broker",
            "admin",
            &SecretKey::new("0123456789abcdef").unwrap(),
            &[],
            BTreeMap::new(),
        );
        let data = s.data.as_mut().unwrap();
        data.insert(SECRET_KEY.into(), ByteString(b"short!\n".to_vec()));
        let err = credentials_of(&s).unwrap_err();
        assert!(matches!(err, CredentialsError::SecretKey { .. }), "{err}");
        assert!(!err.to_string().contains("short!"), "{err}");
        let data = s.data.as_mut().unwrap();
        data.remove(SECRET_KEY);
        assert_eq!(
            credentials_of(&s).unwrap_err(),
            CredentialsError::Missing {
                secret: "su".into(),
                key: SECRET_KEY
            }
        );
        let data = s.data.as_mut().unwrap();
        data.insert(
            SECRET_KEY.into(),
            ByteString(b"0123456789abcdef\n".to_vec()),
        );
        data.insert(ACCESS_KEY.into(), ByteString(b"ad min".to_vec()));
        let err = credentials_of(&s).unwrap_err();
        assert!(err.to_string().contains("key accessKey"), "{err}");
        // A trailing newline is dropped, as the broker drops it from its secret file.
        let data = s.data.as_mut().unwrap();
        data.insert(ACCESS_KEY.into(), ByteString(b"admin".to_vec()));
        assert_eq!(
            credentials_of(&s).unwrap().secret.expose(),
            "0123456789abcdef"
        );
    }
}
