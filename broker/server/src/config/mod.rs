//! Configuration of every role: flags, `FERROMQ_*` environment variables and one optional TOML
//! file, merged once at start-up into one validated config per role ([`node`] for `standalone`
//! and the storage part of `broker`, [`broker`], [`proxy`], [`nameserver`] with its optional
//! [`controller`]).
//!
//! Precedence: a flag (or its environment variable, which clap reads for the same argument)
//! wins over the file, and the file wins over the built-in defaults. Every error names the field
//! it is about, with the spelling used in the file (`grpc-addr`), because that is what a user
//! has to go and fix; `main` turns it into exit code 2.
//!
//! The file holds the same keys as the flags, kebab-case, at the top level. Each role's keys
//! form one section struct here ([`limits`] holds the connection bounds every role shares); a file given to a role may only hold that role's keys, so a
//! misspelt or misplaced key is refused instead of silently ignored. Durations take human
//! units (`500ms`, `10s`, `3d`; a bare number is seconds), sizes take `4MiB`, `1GiB`, `10MB`
//! (a bare number is bytes), counts take integers or strings of digits (the operator renders
//! every `spec.config` value as a string).

pub mod auth;
pub mod broker;
pub mod controller;
pub mod limits;
pub mod nameserver;
pub mod node;
pub mod proxy;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

/// A configuration value that cannot work, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

pub(crate) fn bad(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

/// The keys of one section of the file.
pub trait Section: DeserializeOwned + Default {
    /// Every key the section holds, as spelt in the file.
    const KEYS: &'static [&'static str];
}

/// A TOML file as read once, before its keys are handed to the sections of a role.
#[derive(Debug, Default)]
pub struct ConfigFile {
    path: PathBuf,
    table: toml::Table,
}

impl ConfigFile {
    /// Reads `path`; no path means an empty file.
    pub fn load(path: Option<&Path>) -> Result<ConfigFile, ConfigError> {
        let Some(path) = path else {
            return Ok(ConfigFile::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad("config", format!("cannot read {}: {e}", path.display())))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // toml names the offending line in its message; keep it whole.
            bad(
                "config",
                format!("{}: {}", path.display(), e.to_string().trim()),
            )
        })?;
        Ok(ConfigFile {
            path: path.to_path_buf(),
            table,
        })
    }

    /// Refuses keys that none of `allowed` holds, naming the role (`a proxy`).
    pub fn only(&self, role: &str, allowed: &[&[&str]]) -> Result<(), ConfigError> {
        for key in self.table.keys() {
            if !allowed.iter().any(|keys| keys.contains(&key.as_str())) {
                return Err(bad(
                    "config",
                    format!(
                        "{}: unknown key {key:?} for {role} (keys are the long flags of the role, e.g. grpc-addr)",
                        self.path.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The values of one section (keys of other sections are left for them).
    pub fn section<S: Section>(&self) -> Result<S, ConfigError> {
        let sub: toml::Table = self
            .table
            .iter()
            .filter(|(k, _)| S::KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        sub.try_into().map_err(|e: toml::de::Error| {
            bad(
                "config",
                format!("{}: {}", self.path.display(), e.to_string().trim()),
            )
        })
    }
}

/// A listening address such as `0.0.0.0:8081`.
pub fn parse_addr(field: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| bad(field, format!("{s:?} is not an address like 0.0.0.0:8081")))
}

/// The host:port routes advertise when none is configured: the listening address, with an
/// unspecified host (0.0.0.0) replaced by loopback so the answer is dialable on this machine.
pub fn advertise_default(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        format!("127.0.0.1:{}", listen.port())
    } else {
        listen.to_string()
    }
}

/// Checks a `host:port` that is advertised or dialled (not bound).
pub fn check_host_port(field: &'static str, s: &str) -> Result<(), ConfigError> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(bad(field, format!("{s:?} is not host:port"))),
    }
}

/// Checks a list of name server addresses (`host:port` each, at least one).
pub fn nameserver_list(field: &'static str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = list
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() {
        return Err(bad(
            field,
            "at least one name server (host:port) is required",
        ));
    }
    for ns in &list {
        check_host_port(field, ns)?;
    }
    Ok(list)
}

/// Parses a duration: `500ms`, `10s`, `2m`, `1h`, `3d` (humantime's units), or a bare number
/// of seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    match t.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(t)
            .map_err(|e| format!("{s:?} is not a duration like \"3s\" or \"500ms\": {e}")),
    }
}

/// Parses a positive duration (see [`duration`]).
pub fn parse_duration(field: &'static str, s: &str) -> Result<Duration, ConfigError> {
    let d = duration(s).map_err(|e| bad(field, e))?;
    if d.is_zero() {
        return Err(bad(field, "must be more than zero"));
    }
    Ok(d)
}

/// Parses a size: `4096`, `64KiB`, `4MiB`, `1GiB` (powers of 1024), `10MB` (powers of 1000).
pub fn parse_size(field: &'static str, s: &str) -> Result<u64, ConfigError> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| {
            bad(
                field,
                format!("{s:?} is not a size like \"4MiB\" or a byte count: {e}"),
            )
        })
}

/// A count from the file: an integer, or a string of digits.
pub fn count_value(field: &'static str, v: &toml::Value) -> Result<u32, ConfigError> {
    match v {
        toml::Value::Integer(i) => {
            u32::try_from(*i).map_err(|_| bad(field, format!("{i} is out of range")))
        }
        toml::Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| bad(field, format!("{s:?} is not a whole number"))),
        other => Err(bad(field, format!("{other} is not a whole number"))),
    }
}

/// A size from the file: a byte count, or a string with a unit.
pub fn size_value(field: &'static str, v: &toml::Value) -> Result<u64, ConfigError> {
    match v {
        toml::Value::Integer(i) if *i >= 0 => Ok(*i as u64),
        toml::Value::String(s) => parse_size(field, s),
        other => Err(bad(
            field,
            format!("{other} is not a size like \"4MiB\" or a byte count"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_human_units() {
        assert_eq!(parse_size("x", "4096").unwrap(), 4096);
        assert_eq!(parse_size("x", "4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("x", "64kib").unwrap(), 64 << 10);
        assert_eq!(parse_size("x", "1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("x", "10MB").unwrap(), 10_000_000);
        assert!(parse_size("x", "4 parsecs").is_err());
    }

    #[test]
    fn durations_parse_with_units_and_refuse_zero() {
        assert_eq!(parse_duration("x", "3s").unwrap(), Duration::from_secs(3));
        assert_eq!(
            parse_duration("x", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("x", "2").unwrap(), Duration::from_secs(2));
        assert_eq!(
            parse_duration("x", "3d").unwrap(),
            Duration::from_secs(3 * 86_400)
        );
        assert!(parse_duration("x", "0s").is_err());
        assert!(parse_duration("x", "3 fortnights").is_err());
    }

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
        keys_are_fields::<node::NodeKeys>();
        keys_are_fields::<broker::BrokerKeys>();
        keys_are_fields::<proxy::ProxyKeys>();
        keys_are_fields::<nameserver::NameserverKeys>();
        keys_are_fields::<limits::LimitKeys>();
        keys_are_fields::<tls::TlsKeys>();
        keys_are_fields::<controller::ControllerKeys>();
    }

    #[test]
    fn advertised_addresses_are_dialable() {
        assert_eq!(
            advertise_default("0.0.0.0:8081".parse().unwrap()),
            "127.0.0.1:8081"
        );
        assert_eq!(
            advertise_default("10.1.2.3:8081".parse().unwrap()),
            "10.1.2.3:8081"
        );
        assert!(check_host_port("x", "broker-0.svc:10911").is_ok());
        assert!(check_host_port("x", "nowhere").is_err());
        assert!(nameserver_list("nameservers", vec![" ".into()]).is_err());
    }
}
