//! Users: an access key (the user's name), a secret key, and whether the user is a super user.
//!
//! The access key is what clients put in `Credential=` and what policies and logs name, so it is
//! not secret; it is restricted to characters that survive every client's header building (no
//! `,`, `/`, `=` or space, which the `authorization` header uses as separators) and Kubernetes
//! object names (the operator's `User` resource names the user).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Longest access key accepted, in bytes.
pub const MAX_ACCESS_KEY_LEN: usize = 128;

/// Whether a user is bound by policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserKind {
    /// Allowed everything, including user and policy management; policies are ignored.
    Super,
    /// Allowed only what an allow entry of its policy grants and no deny entry refuses.
    Normal,
}

impl UserKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::Super => "super",
            UserKind::Normal => "normal",
        }
    }
}

impl fmt::Display for UserKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for UserKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "super" => Ok(UserKind::Super),
            "normal" => Ok(UserKind::Normal),
            _ => Err(format!(
                "user kind {s:?} is neither \"super\" nor \"normal\""
            )),
        }
    }
}

/// A user as the store holds it. `Debug` shows the secret as `<redacted>`.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub secret: Secret,
    pub kind: UserKind,
}

/// What `describe` and `list` answer about a user: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub kind: UserKind,
}

impl User {
    pub fn info(&self) -> UserInfo {
        UserInfo {
            name: self.name.clone(),
            kind: self.kind,
        }
    }
}

/// Why an access key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("access key is empty")]
    Empty,
    #[error("access key is {len} bytes long; at most {MAX_ACCESS_KEY_LEN} are allowed")]
    TooLong { len: usize },
    #[error(
        "access key {name:?} holds {found:?}; only ASCII letters, digits and . _ - @ are allowed"
    )]
    Charset { name: String, found: char },
}

/// Checks an access key: 1 to [`MAX_ACCESS_KEY_LEN`] bytes of `[A-Za-z0-9._@-]`.
pub fn validate_access_key(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_ACCESS_KEY_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    if let Some(found) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(NameError::Charset {
            name: name.to_string(),
            found,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_keys_exclude_the_header_separators() {
        for good in ["app", "orders-producer", "svc.payments@prod", "A_1"] {
            assert_eq!(validate_access_key(good), Ok(()), "{good}");
        }
        assert_eq!(validate_access_key(""), Err(NameError::Empty));
        for (bad, found) in [("a,b", ','), ("a/b", '/'), ("a=b", '='), ("a b", ' ')] {
            assert_eq!(
                validate_access_key(bad),
                Err(NameError::Charset {
                    name: bad.into(),
                    found
                })
            );
        }
        assert_eq!(
            validate_access_key(&"a".repeat(MAX_ACCESS_KEY_LEN + 1)),
            Err(NameError::TooLong {
                len: MAX_ACCESS_KEY_LEN + 1
            })
        );
    }

    #[test]
    fn user_debug_hides_the_secret() {
        let u = User {
            name: "app".into(),
            secret: Secret::new("very-secret-value").unwrap(),
            kind: UserKind::Normal,
        };
        let shown = format!("{u:?}");
        assert!(shown.contains("app") && !shown.contains("very-secret-value"));
    }
}
