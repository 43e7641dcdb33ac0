//! FerroMQ server library: the roles of the `ferromq` binary, kept in a library so that
//! integration tests and the binary share one code path.
//!
//! Map: [`config`] (flags, env, file), [`standalone`] (process wiring and shutdown),
//! [`service`] (the RocketMQ 5 MessagingService, one module per RPC group), [`delivery`]
//! (pop-style invisible-time delivery, retries, dead letters, FIFO order), [`admin`] (admin API
//! and CLI), [`http`] and [`metrics`] (health and Prometheus), [`status`] (the single mapping
//! from failures to RocketMQ status codes).

pub mod admin;
pub mod bench;
pub mod broker;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod convert;
pub mod delivery;
pub mod filter;
pub mod groups;
pub mod http;
pub mod metrics;
pub mod parked;
pub mod props;
pub mod receipt;
pub mod service;
pub mod standalone;
pub mod status;
pub mod timers;
pub mod tls;
pub mod transactions;
pub mod validate;
