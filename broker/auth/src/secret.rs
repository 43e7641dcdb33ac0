//! Secret keys: the one value in this crate that must never reach a log, a metric, an error or a
//! `Debug` dump.
//!
//! [`Secret`] is a newtype whose `Debug` and `Display` print a fixed placeholder, which has no
//! `Serialize` (the store writes it through a private function, so `serde_json::to_string(&user)`
//! cannot leak it by accident), whose comparison runs in constant time, and whose memory is
//! overwritten when it is dropped. The server needs the secret itself, not a hash of it: the
//! clients sign with HMAC-SHA1 keyed by the secret, so the server must hold the same key to check
//! the signature (RocketMQ's own ACL stores it the same way). The store's file is therefore
//! created readable by its owner only.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 8;
/// Longest secret accepted, in bytes.
pub const MAX_SECRET_LEN: usize = 256;
/// Random bytes in a [`Secret::generate`]d secret (printed as twice as many hex digits).
const GENERATED_SECRET_BYTES: usize = 24;

/// Why a secret was refused. Carries the rule that failed, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("secret is {len} bytes long; it must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN}")]
    Length { len: usize },
    #[error("secret may hold only printable ASCII without spaces (0x21 to 0x7e)")]
    Charset,
    #[error("the system random source failed while generating a secret: {0}")]
    Random(String),
}

/// The secret key of a user (RocketMQ calls it `secretKey` or `accessSecret`).
///
/// Printable ASCII without spaces, [`MIN_SECRET_LEN`] to [`MAX_SECRET_LEN`] bytes: every official
/// client encodes the secret as UTF-8 before keying HMAC-SHA1, so any text would work, but a secret
/// travels through flags, environment variables and Kubernetes Secrets, where whitespace and
/// non-ASCII characters get mangled.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Checks and wraps a secret.
    pub fn new(secret: impl Into<String>) -> Result<Self, SecretError> {
        let secret = Zeroizing::new(secret.into());
        let len = secret.len();
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&len) {
            return Err(SecretError::Length { len });
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecretError::Charset);
        }
        Ok(Secret(secret))
    }

    /// A fresh secret from the operating system's random source: 24 random bytes as 48 lower-case
    /// hex digits (192 bits), for `ferromq admin user create` without `--secret` and for the
    /// operator's `User` resources.
    pub fn generate() -> Result<Self, SecretError> {
        let mut bytes = Zeroizing::new([0u8; GENERATED_SECRET_BYTES]);
        getrandom::fill(bytes.as_mut()).map_err(|e| SecretError::Random(e.to_string()))?;
        Ok(Secret(Zeroizing::new(hex::encode(bytes.as_ref()))))
    }

    /// The secret itself, for keying the HMAC and for handing a generated secret to its owner
    /// once. Every call site is a place where the secret could leak: keep them few.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time equality, so comparing a presented secret with a stored one reveals nothing
    /// through timing but the length.
    pub fn ct_eq(&self, other: &Secret) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let s = Secret::new("hunter2-is-not-a-secret").unwrap();
        let shown = format!("{s:?} {s} {:?}", Some(&s));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn refuses_short_long_and_non_printable_secrets_without_echoing_them() {
        assert_eq!(
            Secret::new("short").unwrap_err(),
            SecretError::Length { len: 5 }
        );
        assert_eq!(
            Secret::new("x".repeat(MAX_SECRET_LEN + 1)).unwrap_err(),
            SecretError::Length {
                len: MAX_SECRET_LEN + 1
            }
        );
        let err = Secret::new("has a space in it").unwrap_err();
        assert_eq!(err, SecretError::Charset);
        assert!(!err.to_string().contains("space in it"));
        assert_eq!(
            Secret::new("tab\tinside!").unwrap_err(),
            SecretError::Charset
        );
        assert_eq!(
            Secret::new("naïve-secret").unwrap_err(),
            SecretError::Charset
        );
    }

    #[test]
    fn generated_secrets_are_valid_and_distinct() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        assert_eq!(a.expose().len(), 2 * GENERATED_SECRET_BYTES);
        assert!(Secret::new(a.expose()).is_ok());
        assert!(!a.ct_eq(&b));
        assert!(a.ct_eq(&a.clone()));
    }
}
