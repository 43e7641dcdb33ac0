//! How each kind of value is read, from a flag (a string) or from the file (a TOML value).

use std::net::SocketAddr;
use std::time::Duration;

use crate::{bad, ConfigError};

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

/// Longest gather a receive may be given: it is added to end-to-end latency on a busy topic,
/// so anything near a client's polling scale is a mistake, not a tuning.
pub const MAX_RECEIVE_GATHER: Duration = Duration::from_millis(50);

/// Parses `receive-gather`: a duration from `0ms` (off) to [`MAX_RECEIVE_GATHER`].
pub fn parse_receive_gather(field: &'static str, s: &str) -> Result<Duration, ConfigError> {
    duration_up_to(field, s, MAX_RECEIVE_GATHER)
}

/// A duration from zero to `max`.
fn duration_up_to(field: &'static str, s: &str, max: Duration) -> Result<Duration, ConfigError> {
    let d = duration(s).map_err(|e| bad(field, e))?;
    if d > max {
        return Err(bad(
            field,
            format!("{s:?} is longer than {}ms", max.as_millis()),
        ));
    }
    Ok(d)
}

/// Longest gather the sync flusher may be given: every sync send under concurrency waits it
/// out, so anything near a disk's own latency scale is a mistake, not a tuning.
pub const MAX_FLUSH_GATHER: Duration = Duration::from_millis(10);

/// Parses `flush-gather`: a duration from `0ms` (off) to [`MAX_FLUSH_GATHER`], such as
/// `300us` or `1ms`.
pub fn parse_flush_gather(field: &'static str, s: &str) -> Result<Duration, ConfigError> {
    duration_up_to(field, s, MAX_FLUSH_GATHER)
}

/// Parses a retention given in whole milliseconds or more (`24h`, `7d`, `90m`): a topic's
/// retention is kept in milliseconds.
pub fn parse_retention_ms(field: &'static str, s: &str) -> Result<u64, ConfigError> {
    let d = parse_duration(field, s)?;
    match u64::try_from(d.as_millis()) {
        Ok(0) => Err(bad(field, format!("{s:?} is shorter than a millisecond"))),
        Ok(ms) if ms <= i64::MAX as u64 => Ok(ms),
        _ => Err(bad(field, format!("{s:?} is too long"))),
    }
}

/// Writes a duration in the largest unit that divides it (`3d`, `36h`, `90m`, `1500ms`), a
/// form [`duration`] reads back to the same value (sub-millisecond parts are dropped).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms.is_multiple_of(len) {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
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

/// A size limit that can be turned off: a size as [`parse_size`], or `off`/`none` for no
/// limit (`None`).
pub fn parse_limit(field: &'static str, s: &str) -> Result<Option<u64>, ConfigError> {
    if is_off(s) {
        return Ok(None);
    }
    parse_size(field, s).map(Some)
}

/// [`parse_limit`] of a file value (a byte count or a string).
pub fn limit_value(field: &'static str, v: &toml::Value) -> Result<Option<u64>, ConfigError> {
    match v {
        toml::Value::String(s) => parse_limit(field, s),
        other => size_value(field, other).map(Some),
    }
}

/// A switch of the file: `true`, `false`, or the same as a string.
pub fn switch_value(field: &'static str, v: &toml::Value) -> Result<bool, ConfigError> {
    match v {
        toml::Value::Boolean(b) => Ok(*b),
        toml::Value::String(s) if s.trim() == "true" => Ok(true),
        toml::Value::String(s) if s.trim() == "false" => Ok(false),
        other => Err(bad(field, format!("{other} is neither true nor false"))),
    }
}

/// A percentage of the disk such as `90`, `"90%"` or `"92.5"`, as a fraction in (0, 1].
pub fn percent_value(field: &'static str, v: &toml::Value) -> Result<f64, ConfigError> {
    let p = match v {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        toml::Value::String(s) => parse_percent(field, s)?,
        other => return Err(bad(field, format!("{other} is not a percentage like 90"))),
    };
    percent_fraction(field, p)
}

/// A percentage from a flag: `90`, `90%`, `92.5`.
pub fn parse_percent(field: &'static str, s: &str) -> Result<f64, ConfigError> {
    s.trim()
        .trim_end_matches('%')
        .trim()
        .parse::<f64>()
        .map_err(|_| bad(field, format!("{s:?} is not a percentage like 90")))
}

/// Checks a percentage and turns it into a fraction.
pub fn percent_fraction(field: &'static str, p: f64) -> Result<f64, ConfigError> {
    if !(p > 0.0 && p <= 100.0) {
        return Err(bad(field, format!("{p} is not within (0, 100] percent")));
    }
    Ok(p / 100.0)
}

/// `remoting-addr`: `""`, `off` or `none` turn the endpoint off.
pub fn is_off(s: &str) -> bool {
    matches!(s.trim(), "" | "off" | "none")
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

    #[test]
    fn a_receive_gather_may_be_off_but_not_long() {
        let g = |s| parse_receive_gather("receive-gather", s);
        assert_eq!(g("0ms").unwrap(), Duration::ZERO);
        assert_eq!(g("1ms").unwrap(), Duration::from_millis(1));
        assert_eq!(g("50ms").unwrap(), MAX_RECEIVE_GATHER);
        let e = g("1s").unwrap_err();
        assert_eq!(e.field, "receive-gather");
        assert!(e.to_string().contains("longer than 50ms"), "{e}");
        assert!(g("soon").is_err());
    }

    #[test]
    fn retentions_are_whole_milliseconds_and_print_back_in_their_largest_unit() {
        assert_eq!(parse_retention_ms("r", "24h").unwrap(), 86_400_000);
        assert_eq!(parse_retention_ms("r", "1500ms").unwrap(), 1_500);
        for bad in ["0", "0s", "500us", "-1h", "soon", ""] {
            let e = parse_retention_ms("r", bad).unwrap_err();
            assert_eq!(e.field, "r", "{bad}");
        }
        for (ms, text) in [
            (86_400_000, "1d"),
            (36 * 3_600_000, "36h"),
            (90 * 60_000, "90m"),
            (61_000, "61s"),
            (1_500, "1500ms"),
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(format_duration(d), text);
            assert_eq!(duration(text).unwrap(), d, "reads back");
        }
    }

    #[test]
    fn percentages_and_switches_read_from_strings() {
        let s = |t: &str| toml::Value::String(t.into());
        assert_eq!(percent_value("p", &s("90%")).unwrap(), 0.9);
        assert_eq!(percent_value("p", &toml::Value::Integer(95)).unwrap(), 0.95);
        assert!(percent_value("p", &s("0")).is_err());
        assert!(percent_value("p", &s("101")).is_err());
        assert!(percent_value("p", &s("most")).is_err());
        assert!(switch_value("s", &s("true")).unwrap());
        assert_eq!(limit_value("l", &s("off")).unwrap(), None);
        assert_eq!(limit_value("l", &s("2GiB")).unwrap(), Some(2 << 30));
        assert_eq!(
            limit_value("l", &toml::Value::Integer(4096)).unwrap(),
            Some(4096)
        );
        assert!(limit_value("l", &s("lots")).is_err());
        assert!(switch_value("s", &s("yes")).is_err());
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
