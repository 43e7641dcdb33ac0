//! `ferromq.admin.v1`: the administration API (served next to MessagingService) and the
//! `ferromq admin` command that calls it.

pub mod cli;
mod ops;
pub mod service;
pub mod users;
