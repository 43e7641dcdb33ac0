//! FerroMQ server library: the roles of the `ferromq` binary, kept in a library so that
//! integration tests and the binary share one code path. Delivery semantics live in
//! `ferromq-engine`; this crate is the front door (wire protocols, transport, CLI).
//!
//! Map:
//! - [`roles`]: `standalone`, `broker`, `nameserver`, `proxy`, each run by [`serve`] (the one
//!   serve loop) with its configuration from [`config`].
//! - [`node`]: what a storage node's handlers share (the engine, clients, metrics).
//! - [`service`]: the RocketMQ 5 MessagingService of a storage node, one module per RPC group;
//!   [`rpc`]: the wrapper every RPC of every role runs in (span and metrics).
//! - [`status`]: the single mapping from engine and store failures to RocketMQ status codes;
//!   [`convert`] and [`validate`]: protocol types to engine types and their checks.
//! - [`admin`]: the admin API and its CLI; [`http`] and [`metrics`]: health and Prometheus;
//!   [`clients`]: client sessions and Telemetry streams; [`tls`]: TLS beside plaintext;
//!   [`connections`]: the bounds on every connection (count, descriptors, timeouts).
//!   [`auth`]: authentication and authorization of every call (with `--auth`).
//! - [`remoting`]: the classic RocketMQ remoting protocol (4.x clients, mqadmin), a second
//!   front door to the same engine, on its own port in every role that serves clients.
//! - [`bench`]: the load generator and the null sink; [`console`]: `ferromq send` and
//!   `ferromq consume`; [`cli`]: the command line itself (completions, man pages);
//!   [`dial`]: how those clients connect; [`progress`]: their progress bars.

pub mod admin;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod clients;
pub mod coalesce;
pub mod config;
pub mod connections;
pub mod console;
pub mod convert;
pub mod credentials;
pub mod dial;
pub mod forward;
pub mod hook;
pub mod http;
pub mod metrics;
pub mod node;
pub mod progress;
pub mod remoting;
pub mod replication;
pub mod roles;
pub mod rpc;
pub mod serve;
pub mod service;
pub mod status;
pub mod tls;
pub mod validate;
