//! Configuration of every role: flags, `FERROMQ_*` environment variables and one optional TOML
//! file, merged once at start-up into one validated config per role ([`node`] for `standalone`
//! and the storage part of `broker`, [`broker`], [`proxy`], [`nameserver`] with its optional
//! [`controller`]).
//!
//! Precedence: a flag (or its environment variable, which clap reads for the same argument)
//! wins over the file, and the file wins over the built-in defaults. Every error names the field
//! it is about, with the spelling used in the file (`grpc-addr`), because that is what a user
//! has to go and fix; `main` turns it into exit code 2. `ferromq config check` ([`check`]) runs
//! exactly this resolution on a file without starting anything.
//!
//! The file's keys, their sections and the parsers of each kind of value (durations in human
//! units, sizes such as `64MiB`, counts and switches given as strings because the operator
//! renders every `spec.config` value as one) live in the small `ferromq-config` crate, which
//! the operator shares to refuse a bad `spec.config` before a pod starts. Every role's
//! resolution starts with that crate's [`ferromq_config::Role::check`], so what the operator
//! refuses, start-up refuses too; the modules here add the flags, the defaults and the checks
//! that need the server's own types (TLS certificates, the store, the controller).
//!
//! Why the layering is not built on `figment`: it was weighed (0.10.19, the version served)
//! and kept out. Flag > env > file > default is already one line per value here, with the
//! environment read by clap for the very argument it overrides (so `--help` shows each
//! variable); figment's `Env` provider reads every `FERROMQ_*` variable by prefix, and the
//! pods carry variables that are not configuration keys (`FERROMQ_POD_NAME`, `FERROMQ_GROUP`,
//! `FERROMQ_LOG`), which an unknown-key check would have to be taught to skip role by role.
//! Figment also depends on toml 0.8 while the workspace reads files with toml 0.9, so the
//! same file would be parsed by two TOML implementations. What figment would add, the source
//! of a bad value, the messages here already give (the file's path, or `spec.config`).

pub mod auth;
pub mod broker;
pub mod check;
pub mod controller;
pub mod limits;
pub mod nameserver;
pub mod node;
pub mod proxy;
pub mod tls;

pub use ferromq_config::{
    advertise_default, bad, check_host_port, count_value, duration, nameserver_list, parse_addr,
    parse_duration, parse_size, size_value, ConfigError, ConfigFile, Role as FileRole, Section,
};
