//! The roles of the `ferromq` binary. Each binds its listeners, then serves through the one
//! serve loop ([`crate::serve`]) until its shutdown future resolves, so a test can start any of
//! them inside its own process (see `tests/roles.rs`).
//!
//! - [`standalone`]: everything in one process over a local store (a storage [`node`]).
//! - [`broker`]: a storage node that is one member of a broker group, reporting to name servers.
//! - [`member`]: a broker that is one replica of a replicated group (`--replica-id`): it leads or
//!   follows as the replication controller decides.
//! - [`nameserver`]: the route registry brokers report to and proxies read.
//! - [`proxy`]: the stateless client-facing tier forwarding to the broker groups.

pub mod broker;
pub mod member;
pub mod nameserver;
pub mod node;
pub mod proxy;
pub mod standalone;
