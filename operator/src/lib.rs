//! FerroMQ's Kubernetes operator: custom resource types, pure builders of the child objects
//! they own, and the controllers that apply those objects with server-side apply.

pub mod admin;
pub mod builders;
pub mod cleanup;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod pki;

pub use error::{Error, Result};
