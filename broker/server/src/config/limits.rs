//! Connection limits: the keys every role shares, because every role's listeners go through the
//! one serve loop ([`crate::serve`]) and are bounded the same way ([`crate::connections`]).

use std::time::Duration;

pub use ferromq_config::keys::LimitKeys;

use super::{bad, count_value, parse_duration, parse_size, size_value, ConfigError};
use crate::connections::Limits;

/// Flags bounding what clients may hold on a role's ports.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct LimitArgs {
    /// Connections open at once over the gRPC and HTTP ports together; more are closed as
    /// soon as they are accepted [default: 10000].
    #[arg(long, env = "FERROMQ_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// HTTP/2 streams (RPCs in flight) one connection may hold open; more are refused with
    /// REFUSED_STREAM [default: 256].
    #[arg(long, env = "FERROMQ_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// Largest header block of one request, e.g. `16KiB` [default: 16KiB].
    #[arg(long, env = "FERROMQ_MAX_HEADER_LIST_SIZE")]
    pub max_header_list_size: Option<String>,
    /// A connection with no request, answer or stream message in either direction for this
    /// long is closed (HTTP/2 PING frames do not count) [default: 5m].
    #[arg(long, env = "FERROMQ_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// A new connection must send its first byte, and finish its TLS handshake, within this
    /// [default: 10s].
    #[arg(long, env = "FERROMQ_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<String>,
    /// File descriptors kept for the store and outgoing connections: connections beyond the
    /// descriptor limit (RLIMIT_NOFILE) minus this are closed at accept [default: 256].
    #[arg(long, env = "FERROMQ_FD_RESERVE")]
    pub fd_reserve: Option<u32>,
}

impl LimitArgs {
    /// Merges the flags with the role's file section and the defaults, and checks the result.
    pub fn resolve(&self, file: LimitKeys) -> Result<Limits, ConfigError> {
        let mut l = Limits::default();
        let count = |flag: Option<u32>, key: &Option<toml::Value>, field| match (flag, key) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(v)) => count_value(field, v).map(Some),
            (None, None) => Ok(None),
        };
        if let Some(n) = count(
            self.max_connections,
            &file.max_connections,
            "max-connections",
        )? {
            l.max_connections = n as usize;
        }
        if let Some(n) = count(
            self.max_concurrent_streams,
            &file.max_concurrent_streams,
            "max-concurrent-streams",
        )? {
            l.max_concurrent_streams = n;
        }
        if let Some(n) = count(self.fd_reserve, &file.fd_reserve, "fd-reserve")? {
            l.fd_reserve = u64::from(n);
        }
        let header = match (&self.max_header_list_size, &file.max_header_list_size) {
            (Some(s), _) => Some(parse_size("max-header-list-size", s)?),
            (None, Some(v)) => Some(size_value("max-header-list-size", v)?),
            (None, None) => None,
        };
        if let Some(b) = header {
            l.max_header_list_size = u32::try_from(b)
                .map_err(|_| bad("max-header-list-size", format!("{b} bytes is over 4 GiB")))?;
        }
        if let Some(d) = self.idle_timeout.as_ref().or(file.idle_timeout.as_ref()) {
            l.idle_timeout = parse_duration("idle-timeout", d)?;
        }
        if let Some(d) = self
            .handshake_timeout
            .as_ref()
            .or(file.handshake_timeout.as_ref())
        {
            l.handshake_timeout = parse_duration("handshake-timeout", d)?;
        }
        validate(&l)?;
        Ok(l)
    }
}

fn validate(l: &Limits) -> Result<(), ConfigError> {
    if l.max_connections == 0 {
        return Err(bad("max-connections", "must be at least 1"));
    }
    if l.max_concurrent_streams == 0 {
        return Err(bad("max-concurrent-streams", "must be at least 1"));
    }
    if l.max_header_list_size < 1024 {
        return Err(bad(
            "max-header-list-size",
            format!(
                "{} bytes cannot hold a client's identity headers; use at least 1KiB",
                l.max_header_list_size
            ),
        ));
    }
    // Long polls last up to 30 s with nothing on the wire: a shorter idle timeout would cut
    // legitimate consumers.
    if l.idle_timeout < Duration::from_secs(1) {
        return Err(bad("idle-timeout", "must be at least 1s"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_flags_and_file_values() {
        let l = LimitArgs::default().resolve(LimitKeys::default()).unwrap();
        assert_eq!(l, Limits::default());
        let file: LimitKeys = toml::from_str(
            "max-connections = \"100\"\nidle-timeout = \"2s\"\nmax-header-list-size = \"32KiB\"\n",
        )
        .unwrap();
        let args = LimitArgs {
            max_concurrent_streams: Some(8),
            ..Default::default()
        };
        let l = args.resolve(file).unwrap();
        assert_eq!(l.max_connections, 100);
        assert_eq!(l.max_concurrent_streams, 8);
        assert_eq!(l.max_header_list_size, 32 << 10);
        assert_eq!(l.idle_timeout, Duration::from_secs(2));
    }

    #[test]
    fn bad_values_name_their_field() {
        let bad_one = |args: LimitArgs| args.resolve(LimitKeys::default()).unwrap_err().field;
        assert_eq!(
            bad_one(LimitArgs {
                max_concurrent_streams: Some(0),
                ..Default::default()
            }),
            "max-concurrent-streams"
        );
        assert_eq!(
            bad_one(LimitArgs {
                idle_timeout: Some("0s".into()),
                ..Default::default()
            }),
            "idle-timeout"
        );
        assert_eq!(
            bad_one(LimitArgs {
                max_header_list_size: Some("10".into()),
                ..Default::default()
            }),
            "max-header-list-size"
        );
    }
}
