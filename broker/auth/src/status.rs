//! The RocketMQ status codes of refusals, in one place.
//!
//! From `apache.rocketmq.v2.Code` (rocketmq-apis `definition.proto`):
//! - `BAD_REQUEST = 40000`: the request lacks a name authorization needs.
//! - `UNAUTHORIZED = 40100`: "the client request lacks valid authentication credentials". Every
//!   [`AuthnError`]: no or malformed header, unknown access key, wrong signature, clock skew.
//!   Apache's proxy answers this code for all of them (its `ResponseBuilder` maps
//!   `AuthenticationException` to `UNAUTHORIZED`, with messages such as "user not found" and
//!   "check signature failed"; it has no clock check).
//! - `FORBIDDEN = 40300`: "user does not have the permission to operate". Every
//!   [`AccessError::Forbidden`]. Apache's proxy answers `UNAUTHORIZED` for authorization
//!   failures too; FerroMQ tells the two apart, which the Java client surfaces as
//!   `UnauthorizedException` versus `ForbiddenException`.
//!
//! On the MessagingService these travel in the response's `status` field with gRPC status OK, as
//! Apache does; the admin API maps them to gRPC `UNAUTHENTICATED` and `PERMISSION_DENIED`.

use crate::authn::AuthnError;
use crate::rpc::AccessError;

/// The `apache.rocketmq.v2.Code` values this crate answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum RocketMqCode {
    BadRequest = 40000,
    Unauthorized = 40100,
    Forbidden = 40300,
}

impl RocketMqCode {
    /// The numeric value of `apache.rocketmq.v2.Code`.
    pub fn value(self) -> i32 {
        self as i32
    }

    /// The name in `definition.proto`.
    pub fn name(self) -> &'static str {
        match self {
            RocketMqCode::BadRequest => "BAD_REQUEST",
            RocketMqCode::Unauthorized => "UNAUTHORIZED",
            RocketMqCode::Forbidden => "FORBIDDEN",
        }
    }
}

impl AuthnError {
    pub fn code(&self) -> RocketMqCode {
        RocketMqCode::Unauthorized
    }
}

impl AccessError {
    pub fn code(&self) -> RocketMqCode {
        match self {
            AccessError::Forbidden { .. } => RocketMqCode::Forbidden,
            AccessError::MissingTarget { .. } => RocketMqCode::BadRequest,
        }
    }
}

/// A call refused by authentication or authorization.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Unauthenticated(#[from] AuthnError),
    #[error(transparent)]
    Denied(#[from] AccessError),
}

impl Refusal {
    pub fn code(&self) -> RocketMqCode {
        match self {
            Refusal::Unauthenticated(e) => e.code(),
            Refusal::Denied(e) => e.code(),
        }
    }

    /// What the caller is told (see [`AuthnError::client_message`]).
    pub fn client_message(&self) -> String {
        match self {
            Refusal::Unauthenticated(e) => e.client_message(),
            Refusal::Denied(e) => e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_rocketmq_values() {
        assert_eq!(RocketMqCode::Unauthorized.value(), 40100);
        assert_eq!(RocketMqCode::Forbidden.value(), 40300);
        assert_eq!(RocketMqCode::BadRequest.value(), 40000);
        assert_eq!(
            Refusal::from(AuthnError::MissingAuthorization).code(),
            RocketMqCode::Unauthorized
        );
        let forbidden = AccessError::Forbidden {
            user: "u".into(),
            resource: "topic:t".into(),
            action: "publish".into(),
            peer: Some("10.0.0.1".parse().unwrap()),
            reason: "no allow entry matches".into(),
        };
        assert_eq!(forbidden.code(), RocketMqCode::Forbidden);
        assert_eq!(
            forbidden.to_string(),
            "user \"u\" may not publish topic:t from 10.0.0.1: no allow entry matches"
        );
    }
}
