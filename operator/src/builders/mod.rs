//! Pure builders of the child objects each custom resource owns.
//!
//! Every function here takes the custom resource (plus facts read from the cluster, passed in
//! as plain values) and returns the object the operator wants to exist. Nothing here talks to
//! the API server, so unit tests call them directly and the controllers only add one
//! server-side-apply step on top.

pub mod auth;
pub mod broker;
pub mod common;
pub mod endpoint;
pub mod internal_tls;
pub mod nameserver;
pub mod pod_template;
pub mod quantity;
pub mod user;

pub use common::BuildError;
