//! FerroMQ's Kubernetes operator: custom resource types, pure builders of the child objects
//! they own, and the controllers that apply those objects with server-side apply.

pub mod crd;
pub mod builders;
