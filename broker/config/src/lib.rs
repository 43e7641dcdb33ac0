//! The configuration file of every FerroMQ role: its keys, how each value is read, and the
//! checks that need nothing but the file.
//!
//! Two programs read these files: the `ferromq` binary at start-up (which layers flags and
//! `FERROMQ_*` variables over them and then runs the cross-field checks that need its own
//! types), and the operator, which renders a Broker's `spec.config` into `broker.toml` and
//! must refuse a key or value the broker would refuse before any pod starts with it. Both use
//! the section structs and parsers here, so the operator cannot accept what start-up refuses
//! for a reason the file alone shows. This crate depends on serde, toml, humantime and
//! bytesize only, so the operator does not link the server.
//!
//! The file holds the same keys as the flags, kebab-case, at the top level. Durations take
//! human units (`500ms`, `10s`, `3d`; a bare number is seconds), sizes take `4MiB`, `1GiB`,
//! `10MB` (a bare number is bytes), counts and switches take integers and booleans or the same
//! as strings (the operator renders every `spec.config` value as a string).

pub mod file;
pub mod keys;
pub mod parse;
pub mod role;

pub use file::{ConfigFile, Section};
pub use parse::*;
pub use role::Role;

/// A configuration value that cannot work, naming the field (as spelt in the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

/// A [`ConfigError`] about `field`.
pub fn bad(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}
