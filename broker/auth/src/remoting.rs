//! The request signature of the classic remoting protocol (RocketMQ 4.x clients, `mqadmin`,
//! `rocketmq-client-go/v2`), the "ACL" hook those clients have carried since 4.4.
//!
//! A client given an access key and a secret adds, to every request's header fields (the
//! remoting "ext fields"),
//!
//! ```text
//! AccessKey = <access key>
//! Signature = base64(HMAC-SHA1(secret, values of every other field in key order ++ body))
//! ```
//!
//! where "every other field" is all header fields except `Signature` itself (so `AccessKey` and an
//! optional `SecurityToken` are covered), sorted by field name, their values concatenated with no
//! separator, followed by the raw body bytes. Unlike the gRPC signature this one covers the whole
//! request, but carries no time: a captured request can be replayed as is. TLS on the remoting
//! port is what keeps requests from being captured; FerroMQ documents that.
//!
//! Field names are compared as bytes; the Java client sorts with `String.compareTo` (UTF-16 code
//! units), which orders ASCII names the same way, and every header field name is ASCII.

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::authn::{AuthnError, Principal};
use crate::secret::Secret;
use crate::signature::{MalformedHeader, SIGNATURE_LEN};
use crate::user::{User, MAX_ACCESS_KEY_LEN};

/// Header field holding the access key.
pub const ACCESS_KEY_FIELD: &str = "AccessKey";
/// Header field holding the base64 signature.
pub const SIGNATURE_FIELD: &str = "Signature";
/// Header field of an STS token (covered by the signature, otherwise ignored: FerroMQ issues
/// none).
pub const SECURITY_TOKEN_FIELD: &str = "SecurityToken";
/// Longest `Signature` value read: base64 of 20 bytes is 28 characters.
const MAX_SIGNATURE_FIELD_LEN: usize = 64;

fn mac_over(secret: &Secret, fields: &BTreeMap<String, String>, body: &[u8]) -> Hmac<Sha1> {
    // HMAC takes keys of any length (longer ones are hashed first), so this cannot fail.
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    for (name, value) in fields {
        if name != SIGNATURE_FIELD {
            mac.update(value.as_bytes());
        }
    }
    mac.update(body);
    mac
}

/// The `Signature` value a client with `secret` puts on a request with these header fields
/// (`AccessKey` included) and body.
pub fn remoting_signature(
    secret: &Secret,
    fields: &BTreeMap<String, String>,
    body: &[u8],
) -> String {
    use base64::Engine as _;
    let mac = mac_over(secret, fields, body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Adds `AccessKey` and `Signature` to a request's header fields, as a client's hook does (for
/// FerroMQ's own remoting callers and tests).
pub fn sign_remoting(
    access_key: &str,
    secret: &Secret,
    fields: &mut BTreeMap<String, String>,
    body: &[u8],
) {
    fields.remove(SIGNATURE_FIELD);
    fields.insert(ACCESS_KEY_FIELD.to_string(), access_key.to_string());
    let signature = remoting_signature(secret, fields, body);
    fields.insert(SIGNATURE_FIELD.to_string(), signature);
}

/// Authenticates one remoting request from its header fields and body. `find_user` looks an
/// access key up in the current snapshot. The comparison is constant-time.
pub fn authenticate_remoting<'u>(
    fields: &BTreeMap<String, String>,
    body: &[u8],
    find_user: impl FnOnce(&str) -> Option<&'u User>,
) -> Result<Principal, AuthnError> {
    let access_key = fields
        .get(ACCESS_KEY_FIELD)
        .ok_or(AuthnError::MissingRemotingCredentials)?;
    if access_key.is_empty() {
        return Err(AuthnError::NoCredentials);
    }
    if access_key.len() > MAX_ACCESS_KEY_LEN {
        return Err(MalformedHeader::TooLong {
            len: access_key.len(),
        }
        .into());
    }
    let presented = fields
        .get(SIGNATURE_FIELD)
        .ok_or(AuthnError::MissingRemotingSignature)?;
    let signature = decode_signature(presented)?;
    let user = find_user(access_key).ok_or_else(|| AuthnError::UnknownAccessKey {
        access_key: access_key.clone(),
    })?;
    if mac_over(&user.secret, fields, body)
        .verify_slice(&signature)
        .is_err()
    {
        return Err(AuthnError::SignatureMismatch {
            access_key: access_key.clone(),
        });
    }
    Ok(Principal {
        name: std::sync::Arc::from(user.name.as_str()),
        kind: user.kind,
    })
}

fn decode_signature(value: &str) -> Result<[u8; SIGNATURE_LEN], AuthnError> {
    use base64::Engine as _;
    if value.len() > MAX_SIGNATURE_FIELD_LEN {
        return Err(AuthnError::MalformedRemotingSignature);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| AuthnError::MalformedRemotingSignature)?;
    bytes
        .try_into()
        .map_err(|_| AuthnError::MalformedRemotingSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::UserKind;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn user(name: &str, secret: &str) -> User {
        User {
            name: name.into(),
            secret: Secret::new(secret).unwrap(),
            kind: UserKind::Normal,
        }
    }

    /// The digest was computed apart (Python's `hmac` over the joined text): the content is the
    /// values in key order, then the body, with nothing between them.
    #[test]
    fn signs_the_sorted_values_then_the_body() {
        let secret = Secret::new("Jefe-secret").unwrap();
        // "what do ya want for nothing?" split across two fields and the body, listed out of
        // order: the signature must not depend on insertion order.
        let f = fields(&[
            ("zz", " for nothing?"),
            ("AccessKey", "what do ya"),
            ("b", " want"),
        ]);
        let sig = remoting_signature(&secret, &f, b"");
        // base64(HMAC-SHA1("Jefe-secret", "what do ya want for nothing?")).
        assert_eq!(sig, "xKWoYOfnt2remiSR6jKz/eGc9uI=");
        let f2 = fields(&[("AccessKey", "what do ya"), ("b", " want")]);
        assert_eq!(remoting_signature(&secret, &f2, b" for nothing?"), sig);
    }

    #[test]
    fn a_signed_request_authenticates_and_any_change_breaks_it() {
        let u = user("app", "app-secret-1");
        let mut f = fields(&[("topic", "orders"), ("queueId", "3")]);
        sign_remoting("app", &u.secret, &mut f, b"body");
        let who = authenticate_remoting(&f, b"body", |ak| (ak == "app").then_some(&u)).unwrap();
        assert_eq!(&*who.name, "app");

        let mismatch = |f: &BTreeMap<String, String>, body: &[u8]| {
            authenticate_remoting(f, body, |ak| (ak == "app").then_some(&u)).unwrap_err()
        };
        assert!(matches!(
            mismatch(&f, b"bodx"),
            AuthnError::SignatureMismatch { .. }
        ));
        let mut other = f.clone();
        other.insert("topic".into(), "payments".into());
        assert!(matches!(
            mismatch(&other, b"body"),
            AuthnError::SignatureMismatch { .. }
        ));
        let mut added = f.clone();
        added.insert("extra".into(), "1".into());
        assert!(matches!(
            mismatch(&added, b"body"),
            AuthnError::SignatureMismatch { .. }
        ));
    }

    #[test]
    fn bad_input_gets_a_precise_refusal() {
        let u = user("app", "app-secret-1");
        let find = |ak: &str| (ak == "app").then_some(&u);
        let e = authenticate_remoting(&fields(&[("topic", "t")]), b"", find).unwrap_err();
        assert_eq!(e, AuthnError::MissingRemotingCredentials);
        let e = authenticate_remoting(&fields(&[("AccessKey", "")]), b"", find).unwrap_err();
        assert_eq!(e, AuthnError::NoCredentials);
        let e = authenticate_remoting(&fields(&[("AccessKey", "app")]), b"", find).unwrap_err();
        assert_eq!(e, AuthnError::MissingRemotingSignature);
        for bad in ["not base64!", "AAAA", &"A".repeat(500)] {
            let f = fields(&[("AccessKey", "app"), ("Signature", bad)]);
            let e = authenticate_remoting(&f, b"", find).unwrap_err();
            assert_eq!(e, AuthnError::MalformedRemotingSignature, "{bad}");
        }
        let long = "k".repeat(MAX_ACCESS_KEY_LEN + 1);
        let e = authenticate_remoting(&fields(&[("AccessKey", &long)]), b"", find).unwrap_err();
        assert!(matches!(e, AuthnError::Malformed(_)));
        // An unknown key and a wrong secret read the same to the caller.
        let mut f = fields(&[("topic", "t")]);
        sign_remoting("ghost", &Secret::new("whatever-1").unwrap(), &mut f, b"");
        let unknown = authenticate_remoting(&f, b"", find).unwrap_err();
        let mut f = fields(&[("topic", "t")]);
        sign_remoting("app", &Secret::new("wrong-secret").unwrap(), &mut f, b"");
        let wrong = authenticate_remoting(&f, b"", find).unwrap_err();
        assert_eq!(unknown.client_message(), wrong.client_message());
        assert!(!format!("{wrong}").contains(f["Signature"].as_str()));
    }
}
