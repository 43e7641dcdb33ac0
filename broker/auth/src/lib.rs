//! Authentication and authorization for FerroMQ: who is calling, and may they.
//!
//! The crate knows no wire types: the server hands it header values as bytes, a gRPC method path,
//! the topic and group names a request carries and the peer address, and gets back a
//! [`Principal`], a [`Decision`] or a typed refusal whose [`RocketMqCode`] it puts in the answer.
//!
//! # Threat model
//!
//! - **Anyone who can reach the port** may send anything. Without valid credentials they get
//!   `UNAUTHORIZED` (40100) and nothing else happens: no topic is created, nothing is stored.
//!   Headers are bounded (512 bytes for `authorization`, 64 for `x-mq-date-time`) and refused
//!   before they are scanned, so oversized or malformed input costs the server nothing.
//! - **A client with credentials** may do what its user's policy allows and nothing more
//!   (`FORBIDDEN`, 40300, otherwise). User and policy management is for super users only.
//! - **Someone who sees traffic** sees the signature, which covers only the date-time: for the
//!   clock window it is a bearer token for any call of that user. The window
//!   ([`ClockPolicy`], 5 minutes by default) bounds that; TLS on the client port is what keeps it
//!   secret. The secret itself never crosses the wire.
//! - **Someone who reads the server's disk** reads the secrets: HMAC verification needs them in
//!   the clear (RocketMQ stores them the same way). The store's file is mode 0600 in a 0700
//!   directory.
//! - **Logs, metrics and errors** never hold a secret or a signature: [`Secret`] prints as
//!   `<redacted>` and has no `Serialize`, parse errors never echo the signature, and
//!   [`AuthnError::client_message`] does not tell an unknown access key from a wrong secret.
//!
//! # Decisions
//!
//! - Signatures are checked with the HMAC crate's constant-time comparison.
//! - The date-time is checked after the signature, so "clock skew" is said only to a holder of the
//!   secret, and a replayed header is named as such.
//! - The Java, Go and Python clients label their local wall-clock time `Z`. By default only true
//!   UTC passes; [`ClockPolicy::new`] can tolerate whole quarter-hour zone offsets instead.
//! - Deny wins over allow whatever the specificity; normal users are refused what no allow entry
//!   grants; unmapped RPCs are super-user only (see [`policy`] and [`rpc`]).
//! - Users and policies live in one CRC-framed file replaced atomically; readers use lock-free
//!   snapshots (see [`store`]). On a member of a replicated broker group the file is a copy of
//!   the group's state: changes travel through the group's journal (see [`change`]).
//! - FerroMQ's internal topics (`%SYS%...`: the replication journal, which carries users'
//!   secrets to the followers, and parked messages) are refused to normal users whatever their
//!   policy says (a `topic:*` entry does not reach them).
//!
//! # Status codes
//!
//! See [`status`]: `UNAUTHORIZED = 40100` for every authentication failure (malformed header,
//! unknown access key, signature mismatch, clock skew; Apache's proxy also answers 40100 for
//! those), `FORBIDDEN = 40300` for policy refusals (Apache answers 40100 there too),
//! `BAD_REQUEST = 40000` when a request lacks the topic or group its rule needs.
//!
//! # Use
//!
//! ```
//! use std::time::SystemTime;
//! use ferromq_auth::*;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = AuthStore::open(dir.path()).unwrap();
//! store.create_user("app", Secret::new("app-secret-1").unwrap(), UserKind::Normal).unwrap();
//! store.put_entry("app", PolicyEntry::parse("topic:orders", "publish", "allow", &[]).unwrap()).unwrap();
//!
//! // What a client sends (here signed by the crate's own signer, as the admin CLI will).
//! let now = SystemTime::now();
//! let headers = sign("app", &Secret::new("app-secret-1").unwrap(), now);
//! let credentials = RequestCredentials {
//!     authorization: Some(headers.authorization.as_bytes()),
//!     date_time: Some(headers.date_time.as_bytes()),
//! };
//!
//! let snapshot = store.snapshot();
//! let who = snapshot.authenticate(&credentials, now, &ClockPolicy::default()).unwrap();
//! let send = "/apache.rocketmq.v2.MessagingService/SendMessage";
//! let peer = Some("127.0.0.1".parse().unwrap());
//! assert!(snapshot.authorize_rpc(&who, send, &Targets { topic: Some("orders"), group: None }, peer).is_ok());
//! let refused = snapshot.authorize_rpc(&who, send, &Targets { topic: Some("payments"), group: None }, peer);
//! assert_eq!(refused.unwrap_err().code(), RocketMqCode::Forbidden);
//! ```

pub mod authn;
pub mod change;
pub mod policy;
pub mod remoting;
pub mod rpc;
pub mod secret;
pub mod signature;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod user;

pub use authn::{AuthnError, ClockPolicy, ClockPolicyError, Principal, RequestCredentials};
pub use change::{AuthChange, ChangeError, Replicator, UserChange, UserState};
pub use policy::{
    Action, ActionSet, AllowedBy, Decision, DeniedBy, Effect, NamePattern, Policy, PolicyEntry,
    PolicyError, Resource, ResourcePattern, SourceRange,
};
pub use remoting::{authenticate_remoting, remoting_signature, sign_remoting};
pub use rpc::{rpc_rule, AccessError, RpcRule, SettingsTargets, Targets};
pub use secret::{Secret, SecretError};
pub use signature::{sign, AuthorizationHeader, MalformedHeader, SignedHeaders};
pub use snapshot::Snapshot;
pub use status::{Refusal, RocketMqCode};
pub use store::{AdminError, AdminErrorKind, AuthStore, StoreError};
pub use user::{User, UserInfo, UserKind};
