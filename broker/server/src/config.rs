//! Configuration of the `standalone` role: flags, `FERROMQ_*` environment variables and an
//! optional TOML file, merged once at start-up into one validated [`StandaloneConfig`].
//!
//! Precedence: a flag (or its environment variable, which clap reads for the same argument)
//! wins over the file, and the file wins over the built-in defaults. Every error names the field
//! it is about, with the spelling used in the file (`grpc-addr`), because that is what a user
//! has to go and fix; `main` turns it into exit code 2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ferromq_store::FlushMode;
use serde::Deserialize;

/// A configuration value that cannot work, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

fn bad(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

/// Flags of `ferromq standalone`. All optional so that the file can supply what they omit.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct StandaloneArgs {
    /// TOML file with the same keys as the flags (kebab-case).
    #[arg(long, env = "FERROMQ_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory holding the commit log, queues, indexes and metadata [default: ./data].
    #[arg(long, env = "FERROMQ_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the gRPC endpoint (RocketMQ 5 protocol and admin API) [default: 0.0.0.0:8081].
    #[arg(long, env = "FERROMQ_GRPC_ADDR")]
    pub grpc_addr: Option<String>,
    /// Address of the HTTP endpoint (/healthz, /readyz, /metrics) [default: 0.0.0.0:9090].
    #[arg(long, env = "FERROMQ_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// host:port that routes advertise to clients when the address a client dialled is unusable
    /// [default: the gRPC address, with 0.0.0.0 replaced by 127.0.0.1].
    #[arg(long, env = "FERROMQ_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Create unknown topics (NORMAL, `default-queues` queues) when clients ask for them.
    #[arg(long, env = "FERROMQ_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: bool,
    /// When a send is acknowledged: `async` (page cache) or `sync` (fsync, group commit).
    #[arg(long, env = "FERROMQ_FLUSH")]
    pub flush: Option<String>,
    /// Largest message body accepted, e.g. `4MiB`.
    #[arg(long, env = "FERROMQ_MAX_BODY_SIZE")]
    pub max_body_size: Option<String>,
    /// Size of one commit log segment file, e.g. `1GiB`.
    #[arg(long, env = "FERROMQ_SEGMENT_SIZE")]
    pub segment_size: Option<String>,
    /// Queue count of auto-created topics.
    #[arg(long, env = "FERROMQ_DEFAULT_QUEUES")]
    pub default_queues: Option<u32>,
    /// Deliveries of one message to a consumer group before it moves to `%DLQ%<group>`
    /// (groups can override it with `ferromq admin group update`).
    #[arg(long, env = "FERROMQ_MAX_DELIVERY_ATTEMPTS")]
    pub max_delivery_attempts: Option<u32>,
    /// Longest delay a DELAY message may ask for (its delivery time minus now), e.g. `3d`.
    #[arg(long, env = "FERROMQ_MAX_DELAY")]
    pub max_delay: Option<String>,
    /// How long a half (transactional) message waits for EndTransaction before the server asks
    /// its producer (unless the message sets its own orphaned-transaction recovery duration),
    /// and the wait between further checks, e.g. `10s`.
    #[arg(long, env = "FERROMQ_TRANSACTION_CHECK_INTERVAL")]
    pub transaction_check_interval: Option<String>,
    /// Checks of an unresolved half message before it is rolled back.
    #[arg(long, env = "FERROMQ_TRANSACTION_CHECK_MAX")]
    pub transaction_check_max: Option<u32>,
    /// PEM certificate chain: enables TLS on the gRPC port (plaintext stays accepted there).
    #[arg(long, env = "FERROMQ_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "FERROMQ_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

/// The TOML file: the same keys as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    grpc_addr: Option<String>,
    http_addr: Option<String>,
    advertise_addr: Option<String>,
    auto_create_topics: Option<bool>,
    flush: Option<String>,
    max_body_size: Option<toml::Value>,
    segment_size: Option<toml::Value>,
    // Counts accept an integer or a string of digits: the operator renders every `spec.config`
    // value as a string.
    default_queues: Option<toml::Value>,
    max_delivery_attempts: Option<toml::Value>,
    max_delay: Option<String>,
    transaction_check_interval: Option<String>,
    transaction_check_max: Option<toml::Value>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    // Cluster keys, read by `ferromq broker` (cluster::member); listed so one file serves both.
    #[allow(dead_code)]
    addr: Option<toml::Value>,
    #[allow(dead_code)]
    group: Option<toml::Value>,
    #[allow(dead_code)]
    nameservers: Option<toml::Value>,
    #[allow(dead_code)]
    role: Option<toml::Value>,
    #[allow(dead_code)]
    replication_mode: Option<toml::Value>,
}

/// The validated configuration of a standalone process.
#[derive(Debug, Clone)]
pub struct StandaloneConfig {
    pub data_dir: PathBuf,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// host:port used in routes when the client's own access point cannot be echoed.
    pub advertise_addr: String,
    pub auto_create_topics: bool,
    pub flush: FlushMode,
    pub max_body_size: usize,
    pub segment_size: u64,
    pub default_queues: u32,
    pub max_delivery_attempts: u32,
    /// Longest delay of a DELAY message.
    pub max_delay: std::time::Duration,
    /// First transaction check (by default) and the wait between checks.
    pub transaction_check_interval: std::time::Duration,
    /// Checks before an unresolved half message is rolled back.
    pub transaction_check_max: u32,
    /// Loaded TLS configuration when `tls-cert` and `tls-key` are set.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl StandaloneConfig {
    /// Defaults used by tests and by the merge below.
    pub fn defaults() -> StandaloneConfig {
        StandaloneConfig {
            data_dir: PathBuf::from("./data"),
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 8081)),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            advertise_addr: "127.0.0.1:8081".into(),
            auto_create_topics: false,
            flush: FlushMode::Async,
            max_body_size: 4 << 20,
            segment_size: 1 << 30,
            default_queues: 8,
            // RocketMQ's default: 16 retries after the first delivery.
            max_delivery_attempts: 17,
            max_delay: std::time::Duration::from_secs(3 * 86_400),
            transaction_check_interval: std::time::Duration::from_secs(10),
            // RocketMQ's default.
            transaction_check_max: 15,
            tls: None,
        }
    }

    /// Merges flags, file and defaults and validates the result.
    pub fn resolve(args: &StandaloneArgs) -> Result<StandaloneConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let mut c = StandaloneConfig::defaults();
        if let Some(d) = args.data_dir.clone().or(file.data_dir) {
            c.data_dir = d;
        }
        if let Some(a) = args.grpc_addr.as_ref().or(file.grpc_addr.as_ref()) {
            c.grpc_addr = parse_addr("grpc-addr", a)?;
        }
        if let Some(a) = args.http_addr.as_ref().or(file.http_addr.as_ref()) {
            c.http_addr = parse_addr("http-addr", a)?;
        }
        c.auto_create_topics = args.auto_create_topics || file.auto_create_topics.unwrap_or(false);
        if let Some(f) = args.flush.as_ref().or(file.flush.as_ref()) {
            c.flush = f.parse().map_err(|e: String| bad("flush", e))?;
        }
        if let Some(s) = &args.max_body_size {
            c.max_body_size = parse_size("max-body-size", s)? as usize;
        } else if let Some(v) = &file.max_body_size {
            c.max_body_size = size_value("max-body-size", v)? as usize;
        }
        if let Some(s) = &args.segment_size {
            c.segment_size = parse_size("segment-size", s)?;
        } else if let Some(v) = &file.segment_size {
            c.segment_size = size_value("segment-size", v)?;
        }
        if let Some(q) = args.default_queues {
            c.default_queues = q;
        } else if let Some(v) = &file.default_queues {
            c.default_queues = count_value("default-queues", v)?;
        }
        if let Some(m) = args.max_delivery_attempts {
            c.max_delivery_attempts = m;
        } else if let Some(v) = &file.max_delivery_attempts {
            c.max_delivery_attempts = count_value("max-delivery-attempts", v)?;
        }
        if let Some(d) = args.max_delay.as_ref().or(file.max_delay.as_ref()) {
            c.max_delay = crate::cluster::nameserver::parse_duration("max-delay", d)?;
        }
        if let Some(d) = args
            .transaction_check_interval
            .as_ref()
            .or(file.transaction_check_interval.as_ref())
        {
            c.transaction_check_interval =
                crate::cluster::nameserver::parse_duration("transaction-check-interval", d)?;
        }
        if let Some(m) = args.transaction_check_max {
            c.transaction_check_max = m;
        } else if let Some(v) = &file.transaction_check_max {
            c.transaction_check_max = count_value("transaction-check-max", v)?;
        }
        c.advertise_addr = match args
            .advertise_addr
            .as_ref()
            .or(file.advertise_addr.as_ref())
        {
            Some(a) => a.clone(),
            None if c.grpc_addr.ip().is_unspecified() => {
                format!("127.0.0.1:{}", c.grpc_addr.port())
            }
            None => c.grpc_addr.to_string(),
        };
        match (
            args.tls_cert.as_ref().or(file.tls_cert.as_ref()),
            args.tls_key.as_ref().or(file.tls_key.as_ref()),
        ) {
            (Some(cert), Some(key)) => c.tls = Some(crate::tls::load(cert, key)?),
            (Some(_), None) => return Err(bad("tls-key", "tls-cert is set but tls-key is not")),
            (None, Some(_)) => return Err(bad("tls-cert", "tls-key is set but tls-cert is not")),
            (None, None) => {}
        }
        c.validate()?;
        Ok(c)
    }

    /// Cross-field checks, once, naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(bad("data-dir", "must not be empty"));
        }
        if self.max_body_size == 0 || self.max_body_size > (64 << 20) {
            return Err(bad(
                "max-body-size",
                format!("{} bytes is not within 1 B..=64 MiB", self.max_body_size),
            ));
        }
        if self.segment_size < (self.max_body_size as u64 + (64 << 10)) {
            return Err(bad(
                "segment-size",
                format!(
                    "{} bytes cannot hold a message of max-body-size {} bytes",
                    self.segment_size, self.max_body_size
                ),
            ));
        }
        if self.default_queues == 0 || self.default_queues > ferromq_store::metadata::MAX_QUEUES {
            return Err(bad(
                "default-queues",
                format!(
                    "{} is not within 1..={}",
                    self.default_queues,
                    ferromq_store::metadata::MAX_QUEUES
                ),
            ));
        }
        if self.max_delivery_attempts == 0 || self.max_delivery_attempts > 1000 {
            return Err(bad(
                "max-delivery-attempts",
                format!("{} is not within 1..=1000", self.max_delivery_attempts),
            ));
        }
        if self.max_delay > std::time::Duration::from_secs(366 * 86_400) {
            return Err(bad("max-delay", "must be at most 366d"));
        }
        if self.transaction_check_max == 0 || self.transaction_check_max > 1000 {
            return Err(bad(
                "transaction-check-max",
                format!("{} is not within 1..=1000", self.transaction_check_max),
            ));
        }
        let (host, port) = self.advertise_addr.rsplit_once(':').ok_or_else(|| {
            bad(
                "advertise-addr",
                format!("{:?} is not host:port", self.advertise_addr),
            )
        })?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad(
                "advertise-addr",
                format!("{:?} is not host:port", self.advertise_addr),
            ));
        }
        if self.grpc_addr == self.http_addr && self.grpc_addr.port() != 0 {
            return Err(bad(
                "http-addr",
                format!("{} is also the grpc-addr", self.http_addr),
            ));
        }
        Ok(())
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad("config", format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        // toml names the offending key in its message; keep it whole.
        bad(
            "config",
            format!("{}: {}", path.display(), e.to_string().trim()),
        )
    })
}

fn parse_addr(field: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| bad(field, format!("{s:?} is not an address like 0.0.0.0:8081")))
}

/// A count from the file: an integer, or a string of digits.
fn count_value(field: &'static str, v: &toml::Value) -> Result<u32, ConfigError> {
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

fn size_value(field: &'static str, v: &toml::Value) -> Result<u64, ConfigError> {
    match v {
        toml::Value::Integer(i) if *i >= 0 => Ok(*i as u64),
        toml::Value::String(s) => parse_size(field, s),
        other => Err(bad(
            field,
            format!("{other} is not a size like \"4MiB\" or a byte count"),
        )),
    }
}

/// Parses human sizes: `4096`, `64KiB`, `4MiB`, `1GiB`, `10MB` (powers of 1024 for `Ki`/`Mi`/
/// `Gi`, of 1000 for `K`/`M`/`G`), case-insensitive, optional `B`.
pub fn parse_size(field: &'static str, s: &str) -> Result<u64, ConfigError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| bad(field, format!("{s:?} is not a size like \"4MiB\"")))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        _ => {
            return Err(bad(
                field,
                format!("{s:?} has an unknown unit (use B, KiB, MiB, GiB)"),
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| bad(field, format!("{s:?} is too large")))
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
    fn flags_override_file_and_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "grpc-addr = \"127.0.0.1:7000\"\nhttp-addr = \"127.0.0.1:7001\"\nmax-body-size = \"1MiB\"\n").unwrap();
        let args = StandaloneArgs {
            config: Some(f),
            grpc_addr: Some("127.0.0.1:7100".into()),
            ..Default::default()
        };
        let c = StandaloneConfig::resolve(&args).unwrap();
        assert_eq!(c.grpc_addr.port(), 7100);
        assert_eq!(c.http_addr.port(), 7001);
        assert_eq!(c.max_body_size, 1 << 20);
        assert_eq!(c.advertise_addr, "127.0.0.1:7100");
    }

    #[test]
    fn errors_name_the_bad_field() {
        let args = StandaloneArgs {
            grpc_addr: Some("nowhere".into()),
            ..Default::default()
        };
        assert_eq!(
            StandaloneConfig::resolve(&args).unwrap_err().field,
            "grpc-addr"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "max-delivery-attempts = 0\n").unwrap();
        let args = StandaloneArgs {
            config: Some(f.clone()),
            ..Default::default()
        };
        assert_eq!(
            StandaloneConfig::resolve(&args).unwrap_err().field,
            "max-delivery-attempts"
        );
        std::fs::write(&f, "no-such-key = 1\n").unwrap();
        let err = StandaloneConfig::resolve(&args).unwrap_err();
        assert_eq!(err.field, "config");
        assert!(err.reason.contains("no-such-key"), "{}", err.reason);
        std::fs::write(&f, "max-delay = \"3 weeks\"\n").unwrap();
        assert_eq!(
            StandaloneConfig::resolve(&args).unwrap_err().field,
            "max-delay"
        );
        std::fs::write(&f, "transaction-check-max = \"many\"\n").unwrap();
        assert_eq!(
            StandaloneConfig::resolve(&args).unwrap_err().field,
            "transaction-check-max"
        );
    }

    /// The operator renders every `spec.config` value as a TOML string.
    #[test]
    fn delay_and_transaction_settings_read_from_strings_or_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "max-delay = \"1d\"\ntransaction-check-interval = \"30s\"\ntransaction-check-max = \"5\"\nmax-delivery-attempts = \"4\"\ndefault-queues = 2\n",
        )
        .unwrap();
        let args = StandaloneArgs {
            config: Some(f),
            ..Default::default()
        };
        let c = StandaloneConfig::resolve(&args).unwrap();
        assert_eq!(c.max_delay, std::time::Duration::from_secs(86_400));
        assert_eq!(
            c.transaction_check_interval,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(c.transaction_check_max, 5);
        assert_eq!(c.max_delivery_attempts, 4);
        assert_eq!(c.default_queues, 2);
    }
}
