//! The sections of the file, one struct per group of flags, with the checks each value needs
//! on its own (its kind and unit). Cross-field checks, and those needing the server's types,
//! run at start-up in the server.
//!
//! Fields are raw (`toml::Value` where a string must be accepted for a number or a switch) so
//! that the server layers flags over them and reads each with the parser in [`crate::parse`].

use std::path::PathBuf;

use serde::Deserialize;

use crate::parse::{
    check_host_port, count_value, is_off, parse_addr, parse_duration, parse_flush_gather,
    parse_receive_gather, size_value, switch_value,
};
use crate::{bad, ConfigError, Section};

fn each<T>(
    v: &Option<T>,
    f: impl FnOnce(&T) -> Result<(), ConfigError>,
) -> Result<(), ConfigError> {
    v.as_ref().map_or(Ok(()), f)
}

fn addr(field: &'static str, v: &Option<String>) -> Result<(), ConfigError> {
    each(v, |s| parse_addr(field, s).map(drop))
}

fn host_port(field: &'static str, v: &Option<String>) -> Result<(), ConfigError> {
    each(v, |s| check_host_port(field, s))
}

fn positive_duration(field: &'static str, v: &Option<String>) -> Result<(), ConfigError> {
    each(v, |s| parse_duration(field, s).map(drop))
}

fn count(field: &'static str, v: &Option<toml::Value>) -> Result<(), ConfigError> {
    each(v, |x| count_value(field, x).map(drop))
}

fn size(field: &'static str, v: &Option<toml::Value>) -> Result<(), ConfigError> {
    each(v, |x| size_value(field, x).map(drop))
}

fn switch(field: &'static str, v: &Option<toml::Value>) -> Result<(), ConfigError> {
    each(v, |x| switch_value(field, x).map(drop))
}

fn one_of(field: &'static str, v: &Option<String>, allowed: &[&str]) -> Result<(), ConfigError> {
    each(v, |s| {
        if allowed.contains(&s.trim().to_ascii_lowercase().as_str()) {
            Ok(())
        } else {
            Err(bad(
                field,
                format!("{s:?} is not one of {}", allowed.join(", ")),
            ))
        }
    })
}

/// The storage node's keys (`standalone`, and the storage part of `broker`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeKeys {
    pub data_dir: Option<PathBuf>,
    pub grpc_addr: Option<String>,
    pub http_addr: Option<String>,
    pub advertise_addr: Option<String>,
    pub auto_create_topics: Option<toml::Value>,
    pub flush: Option<String>,
    pub max_body_size: Option<toml::Value>,
    pub segment_size: Option<toml::Value>,
    pub default_queues: Option<toml::Value>,
    pub max_delivery_attempts: Option<toml::Value>,
    pub max_delay: Option<String>,
    pub transaction_check_interval: Option<String>,
    pub transaction_check_max: Option<toml::Value>,
    pub remoting_addr: Option<String>,
    pub remoting_advertise_addr: Option<String>,
    pub retention: Option<String>,
    pub retention_bytes: Option<toml::Value>,
    pub disk_high_water: Option<toml::Value>,
    pub receive_gather: Option<String>,
    pub flush_gather: Option<String>,
}

impl Section for NodeKeys {
    const KEYS: &'static [&'static str] = &[
        "data-dir",
        "grpc-addr",
        "http-addr",
        "advertise-addr",
        "auto-create-topics",
        "flush",
        "max-body-size",
        "segment-size",
        "default-queues",
        "max-delivery-attempts",
        "max-delay",
        "transaction-check-interval",
        "transaction-check-max",
        "remoting-addr",
        "remoting-advertise-addr",
        "retention",
        "retention-bytes",
        "disk-high-water",
        "receive-gather",
        "flush-gather",
    ];
}

impl NodeKeys {
    /// Each value on its own.
    pub fn check(&self) -> Result<(), ConfigError> {
        each(&self.data_dir, |d| {
            if d.as_os_str().is_empty() {
                Err(bad("data-dir", "must not be empty"))
            } else {
                Ok(())
            }
        })?;
        addr("grpc-addr", &self.grpc_addr)?;
        addr("http-addr", &self.http_addr)?;
        host_port("advertise-addr", &self.advertise_addr)?;
        switch("auto-create-topics", &self.auto_create_topics)?;
        one_of("flush", &self.flush, &["async", "sync"])?;
        size("max-body-size", &self.max_body_size)?;
        size("segment-size", &self.segment_size)?;
        count("default-queues", &self.default_queues)?;
        count("max-delivery-attempts", &self.max_delivery_attempts)?;
        positive_duration("max-delay", &self.max_delay)?;
        positive_duration(
            "transaction-check-interval",
            &self.transaction_check_interval,
        )?;
        count("transaction-check-max", &self.transaction_check_max)?;
        each(&self.receive_gather, |s| {
            parse_receive_gather("receive-gather", s).map(drop)
        })?;
        each(&self.flush_gather, |s| {
            parse_flush_gather("flush-gather", s).map(drop)
        })?;
        each(&self.remoting_addr, |a| {
            if is_off(a) {
                Ok(())
            } else {
                parse_addr("remoting-addr", a.trim()).map(drop)
            }
        })?;
        host_port("remoting-advertise-addr", &self.remoting_advertise_addr)?;
        positive_duration("retention", &self.retention)?;
        each(&self.retention_bytes, |v| {
            crate::parse::limit_value("retention-bytes", v).map(drop)
        })?;
        each(&self.disk_high_water, |v| {
            crate::parse::percent_value("disk-high-water", v).map(drop)
        })
    }
}

/// A broker's own keys (the cluster half of `ferromq broker`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BrokerKeys {
    pub addr: Option<String>,
    pub group: Option<String>,
    pub nameservers: Option<Vec<String>>,
    pub role: Option<String>,
    pub replica_id: Option<toml::Value>,
    pub replication_mode: Option<String>,
    pub min_in_sync: Option<toml::Value>,
    pub replica_lag: Option<String>,
    pub replication_timeout: Option<String>,
    pub controller: Option<Vec<String>>,
}

impl Section for BrokerKeys {
    const KEYS: &'static [&'static str] = &[
        "addr",
        "group",
        "nameservers",
        "role",
        "replica-id",
        "replication-mode",
        "min-in-sync",
        "replica-lag",
        "replication-timeout",
        "controller",
    ];
}

impl BrokerKeys {
    /// Each value on its own.
    pub fn check(&self) -> Result<(), ConfigError> {
        addr("addr", &self.addr)?;
        each(&self.nameservers, |l| {
            l.iter().try_for_each(|a| check_host_port("nameservers", a))
        })?;
        one_of("role", &self.role, &["leader", "follower"])?;
        count("replica-id", &self.replica_id)?;
        one_of(
            "replication-mode",
            &self.replication_mode,
            &["async", "sync"],
        )?;
        count("min-in-sync", &self.min_in_sync)?;
        each(&self.replica_lag, |s| {
            crate::duration(s)
                .map(drop)
                .map_err(|r| bad("replica-lag", r))
        })?;
        each(&self.replication_timeout, |s| {
            crate::duration(s)
                .map(drop)
                .map_err(|r| bad("replication-timeout", r))
        })?;
        each(&self.controller, |l| {
            l.iter().try_for_each(|a| check_host_port("controller", a))
        })
    }
}

/// The proxy's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProxyKeys {
    pub grpc_addr: Option<String>,
    pub http_addr: Option<String>,
    pub nameservers: Option<Vec<String>>,
    pub route_refresh: Option<String>,
    pub advertise_addr: Option<String>,
    pub remoting_addr: Option<String>,
    pub remoting_advertise_addr: Option<String>,
}

impl Section for ProxyKeys {
    const KEYS: &'static [&'static str] = &[
        "grpc-addr",
        "http-addr",
        "nameservers",
        "route-refresh",
        "advertise-addr",
        "remoting-addr",
        "remoting-advertise-addr",
    ];
}

impl ProxyKeys {
    /// Each value on its own.
    pub fn check(&self) -> Result<(), ConfigError> {
        addr("grpc-addr", &self.grpc_addr)?;
        addr("http-addr", &self.http_addr)?;
        each(&self.nameservers, |l| {
            l.iter().try_for_each(|a| check_host_port("nameservers", a))
        })?;
        positive_duration("route-refresh", &self.route_refresh)?;
        host_port("advertise-addr", &self.advertise_addr)?;
        each(&self.remoting_addr, |a| {
            if is_off(a) {
                Ok(())
            } else {
                parse_addr("remoting-addr", a.trim()).map(drop)
            }
        })?;
        host_port("remoting-advertise-addr", &self.remoting_advertise_addr)
    }
}

/// The name server's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NameserverKeys {
    pub addr: Option<String>,
    pub http_addr: Option<String>,
    pub broker_expiry: Option<String>,
}

impl Section for NameserverKeys {
    const KEYS: &'static [&'static str] = &["addr", "http-addr", "broker-expiry"];
}

impl NameserverKeys {
    /// Each value on its own.
    pub fn check(&self) -> Result<(), ConfigError> {
        addr("addr", &self.addr)?;
        addr("http-addr", &self.http_addr)?;
        positive_duration("broker-expiry", &self.broker_expiry)
    }
}

/// The replication controller's keys (part of a name server).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ControllerKeys {
    pub controller_peers: Option<String>,
    pub controller_id: Option<toml::Value>,
    pub data_dir: Option<PathBuf>,
    pub member_expiry: Option<String>,
    pub lease: Option<String>,
    pub unclean_election: Option<toml::Value>,
}

impl Section for ControllerKeys {
    const KEYS: &'static [&'static str] = &[
        "controller-peers",
        "controller-id",
        "data-dir",
        "member-expiry",
        "lease",
        "unclean-election",
    ];
}

impl ControllerKeys {
    /// Each value on its own.
    pub fn check(&self) -> Result<(), ConfigError> {
        each(&self.controller_peers, |p| {
            p.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .try_for_each(|a| check_host_port("controller-peers", a))
        })?;
        count("controller-id", &self.controller_id)?;
        positive_duration("member-expiry", &self.member_expiry)?;
        positive_duration("lease", &self.lease)?;
        switch("unclean-election", &self.unclean_election)
    }
}

/// Connection limits, shared by every role.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LimitKeys {
    pub max_connections: Option<toml::Value>,
    pub max_concurrent_streams: Option<toml::Value>,
    pub max_header_list_size: Option<toml::Value>,
    pub idle_timeout: Option<String>,
    pub handshake_timeout: Option<String>,
    pub fd_reserve: Option<toml::Value>,
}

impl Section for LimitKeys {
    const KEYS: &'static [&'static str] = &[
        "max-connections",
        "max-concurrent-streams",
        "max-header-list-size",
        "idle-timeout",
        "handshake-timeout",
        "fd-reserve",
    ];
}

impl LimitKeys {
    /// Each value on its own.
    pub fn check(&self) -> Result<(), ConfigError> {
        count("max-connections", &self.max_connections)?;
        count("max-concurrent-streams", &self.max_concurrent_streams)?;
        size("max-header-list-size", &self.max_header_list_size)?;
        positive_duration("idle-timeout", &self.idle_timeout)?;
        positive_duration("handshake-timeout", &self.handshake_timeout)?;
        count("fd-reserve", &self.fd_reserve)
    }
}

/// TLS on the gRPC port (`standalone`, `broker`, `proxy`, `nameserver`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsKeys {
    pub tls: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Section for TlsKeys {
    const KEYS: &'static [&'static str] = &["tls", "tls-cert", "tls-key"];
}

impl TlsKeys {
    /// Each value on its own.
    pub fn check(&self) -> Result<(), ConfigError> {
        one_of("tls", &self.tls, &["off", "mixed", "required"])
    }
}

/// TLS on the links a process dials to its peers (`broker`, `proxy`, `nameserver`; a
/// standalone server has none): the CA bundle their certificates are verified against.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsCaKeys {
    pub tls_ca: Option<PathBuf>,
}

impl Section for TlsCaKeys {
    const KEYS: &'static [&'static str] = &["tls-ca"];
}

impl TlsCaKeys {
    /// Each value on its own (whether the file holds certificates is read at start-up).
    pub fn check(&self) -> Result<(), ConfigError> {
        match &self.tls_ca {
            Some(p) if p.as_os_str().is_empty() => Err(bad("tls-ca", "is an empty path")),
            _ => Ok(()),
        }
    }
}

/// Authentication on a storage node (`standalone`, `broker`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AuthKeys {
    pub auth: Option<toml::Value>,
    pub auth_super_user: Option<String>,
    pub auth_super_secret_file: Option<PathBuf>,
    pub auth_max_clock_skew: Option<String>,
    pub auth_tolerate_zone_offsets: Option<toml::Value>,
}

impl Section for AuthKeys {
    const KEYS: &'static [&'static str] = &[
        "auth",
        "auth-super-user",
        "auth-super-secret-file",
        "auth-max-clock-skew",
        "auth-tolerate-zone-offsets",
    ];
}

impl AuthKeys {
    /// Each value on its own.
    pub fn check(&self) -> Result<(), ConfigError> {
        switch("auth", &self.auth)?;
        positive_duration("auth-max-clock-skew", &self.auth_max_clock_skew)?;
        switch(
            "auth-tolerate-zone-offsets",
            &self.auth_tolerate_zone_offsets,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key a section lists is one of its fields, so the allow-lists cannot drift.
    fn keys_are_fields<S: Section>() {
        for key in S::KEYS {
            let table: toml::Table = format!("{key} = []").parse().expect("toml");
            let err = table.try_into::<S>().err().map(|e| e.to_string());
            assert!(
                !err.as_deref().unwrap_or("").contains("unknown field"),
                "{key}: {err:?}"
            );
        }
    }

    #[test]
    fn section_key_lists_match_their_fields() {
        keys_are_fields::<NodeKeys>();
        keys_are_fields::<BrokerKeys>();
        keys_are_fields::<ProxyKeys>();
        keys_are_fields::<NameserverKeys>();
        keys_are_fields::<LimitKeys>();
        keys_are_fields::<TlsKeys>();
        keys_are_fields::<ControllerKeys>();
        keys_are_fields::<AuthKeys>();
    }
}
