//! Configuration of a storage node: `ferromq standalone`, and the storage part of `ferromq
//! broker` (whose own keys are in [`super::broker`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferromq_config::keys::LimitKeys;
pub use ferromq_config::keys::NodeKeys;
use ferromq_engine::EngineConfig;
use ferromq_store::{FlushMode, StoreConfig};

use super::limits::LimitArgs;
use super::{
    advertise_default, bad, check_host_port, count_value, parse_addr, parse_duration, parse_size,
    size_value, ConfigError, ConfigFile, FileRole,
};

/// Flags of `ferromq standalone`. All optional so that the file can supply what they omit.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct NodeArgs {
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
    /// Address of the classic RocketMQ remoting endpoint (4.x clients, mqadmin, dashboards;
    /// name-server and broker requests on one port); "" turns it off
    /// [default: 0.0.0.0:9876 for standalone, off for a broker].
    #[arg(long, env = "FERROMQ_REMOTING_ADDR")]
    pub remoting_addr: Option<String>,
    /// host:port remoting routes and message ids name [default: the host of advertise-addr
    /// with the remoting port].
    #[arg(long, env = "FERROMQ_REMOTING_ADVERTISE_ADDR")]
    pub remoting_advertise_addr: Option<String>,
    /// Commit log segments whose last write is older than this are deleted, e.g. `7d`, whether
    /// or not every consumer group has read them (like Kafka's and RocketMQ's retention); the
    /// segment being written is never deleted, and consumers behind the new start move to it.
    /// It bounds every topic's own retention (`admin topic update T --retention 24h`), which
    /// can only be shorter: the commit log is shared by all topics [default: 72h].
    #[arg(long, env = "FERROMQ_RETENTION")]
    pub retention: Option<String>,
    /// Oldest segments are deleted while the commit log is larger than this, e.g. `50GiB`;
    /// `off` for no size limit [default: off].
    #[arg(long, env = "FERROMQ_RETENTION_BYTES")]
    pub retention_bytes: Option<String>,
    /// Percent of the data directory's file system in use above which appends are refused
    /// (sends fail with a storage-full error until retention or an operator frees space),
    /// e.g. `85` [default: 90].
    #[arg(long, env = "FERROMQ_DISK_HIGH_WATER")]
    pub disk_high_water: Option<String>,
    /// How long a long-polling receive that is woken soon after it started waiting lets more
    /// messages arrive before it answers, so a busy topic is read in fuller batches (fewer
    /// receive and ack calls per message); a receive that waited longer answers at once.
    /// At most the time since its empty look is added; `0ms` turns it off [default: 1ms].
    #[arg(long, env = "FERROMQ_RECEIVE_GATHER")]
    pub receive_gather: Option<String>,
    /// With `--flush sync`: the longest the flusher waits before a flush for as many sends as
    /// recent flushes woke, so many concurrent senders share fewer, fuller flushes. It gathers
    /// only while recent flushes woke 4 or more sends on average, so one or two senders are
    /// never delayed. `0ms` turns it off; at most `10ms` [default: 300us].
    #[arg(long, env = "FERROMQ_FLUSH_GATHER")]
    pub flush_gather: Option<String>,
    #[command(flatten)]
    pub tls: super::tls::TlsArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub auth: super::auth::AuthArgs,
}

/// The validated configuration of a storage node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// host:port used in routes when the client's own access point cannot be echoed.
    pub advertise_addr: String,
    pub flush: FlushMode,
    pub max_body_size: usize,
    pub segment_size: u64,
    /// Segments last written longer ago than this are deleted.
    pub retention: Duration,
    /// Oldest segments are deleted while the log is larger than this (`None`: no limit).
    pub retention_bytes: Option<u64>,
    /// Fraction of the disk in use above which appends are refused.
    pub disk_high_water: f64,
    /// How long a receive woken on a busy topic gathers before it answers (zero: off).
    pub receive_gather: Duration,
    /// How long the sync flusher gathers sends under concurrency (zero: off).
    pub flush_gather: Duration,
    /// Delivery semantics (auto-creation, retries, delays, transaction checks).
    pub engine: EngineConfig,
    /// TLS on the gRPC port (`None`: plaintext only).
    pub tls: Option<crate::tls::Tls>,
    /// Bounds on client connections.
    pub limits: crate::connections::Limits,
    /// Authentication and authorization (off by default).
    pub auth: super::auth::AuthConfig,
    /// The remoting endpoint, when it is on.
    pub remoting: Option<RemotingListen>,
}

/// Where a role serves the classic remoting protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotingListen {
    pub addr: SocketAddr,
    /// host:port routes and message ids name; `None`: derived from the role's advertised host
    /// and the bound port.
    pub advertise: Option<String>,
}

/// How long commit log segments are kept by default: three days, RocketMQ's `fileReservedTime`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(72 * 3600);
/// Fraction of the disk above which appends are refused by default.
pub const DEFAULT_DISK_HIGH_WATER: f64 = 0.90;
/// A receive's gather by default: with a consumer reading along a 5 000 msg/s producer, a
/// millisecond took receive calls from 0.22-0.31 to 0.19-0.21 per message sent (BENCHMARKS.md).
pub const DEFAULT_RECEIVE_GATHER: Duration = Duration::from_millis(1);

/// Standalone's remoting port: RocketMQ's name-server port, since standalone is its own name
/// server and 4.x clients' `namesrvAddr` points there.
pub const STANDALONE_REMOTING_ADDR: &str = "0.0.0.0:9876";

/// Parses `remoting-addr` (`""`, `off` or `none` turn it off) and `remoting-advertise-addr`.
pub fn remoting_listen(
    addr: Option<&str>,
    advertise: Option<&str>,
    default: Option<&str>,
) -> Result<Option<RemotingListen>, ConfigError> {
    let Some(a) = addr.or(default) else {
        return Ok(None);
    };
    if matches!(a.trim(), "" | "off" | "none") {
        return Ok(None);
    }
    let advertise = advertise.map(str::to_string);
    if let Some(adv) = &advertise {
        check_host_port("remoting-advertise-addr", adv)?;
    }
    Ok(Some(RemotingListen {
        addr: parse_addr("remoting-addr", a.trim())?,
        advertise,
    }))
}

impl NodeConfig {
    /// Defaults used by tests and by the merge below.
    pub fn defaults() -> NodeConfig {
        let data_dir = PathBuf::from("./data");
        NodeConfig {
            engine: EngineConfig::new(&data_dir),
            data_dir,
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 8081)),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            advertise_addr: "127.0.0.1:8081".into(),
            flush: FlushMode::Async,
            max_body_size: 4 << 20,
            segment_size: 1 << 30,
            retention: DEFAULT_RETENTION,
            retention_bytes: None,
            disk_high_water: DEFAULT_DISK_HIGH_WATER,
            receive_gather: DEFAULT_RECEIVE_GATHER,
            flush_gather: ferromq_store::DEFAULT_FLUSH_GATHER,
            tls: None,
            limits: Default::default(),
            auth: Default::default(),
            remoting: None,
        }
    }

    /// Merges flags, the file and defaults and validates the result. `file` is the role's
    /// file, read once; the caller has refused keys of other roles.
    pub fn resolve(args: &NodeArgs, config: &ConfigFile) -> Result<NodeConfig, ConfigError> {
        Self::resolve_with(args, config, Some(STANDALONE_REMOTING_ADDR))
    }

    /// [`NodeConfig::resolve`] with the role's own default remoting address (`None`: off).
    pub fn resolve_with(
        args: &NodeArgs,
        config: &ConfigFile,
        remoting_default: Option<&str>,
    ) -> Result<NodeConfig, ConfigError> {
        let limits: LimitKeys = config.section()?;
        let file: NodeKeys = config.section()?;
        let mut c = NodeConfig::defaults();
        c.limits = args.limits.resolve(limits)?;
        if let Some(d) = args.data_dir.clone().or(file.data_dir) {
            c.engine.data_dir = d.clone();
            c.data_dir = d;
        }
        if let Some(a) = args.grpc_addr.as_ref().or(file.grpc_addr.as_ref()) {
            c.grpc_addr = parse_addr("grpc-addr", a)?;
        }
        if let Some(a) = args.http_addr.as_ref().or(file.http_addr.as_ref()) {
            c.http_addr = parse_addr("http-addr", a)?;
        }
        c.engine.auto_create_topics = args.auto_create_topics
            || match &file.auto_create_topics {
                Some(v) => ferromq_config::switch_value("auto-create-topics", v)?,
                None => false,
            };
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
        if let Some(r) = args.retention.as_ref().or(file.retention.as_ref()) {
            c.retention = parse_duration("retention", r)?;
        }
        if let Some(s) = &args.retention_bytes {
            c.retention_bytes = ferromq_config::parse_limit("retention-bytes", s)?;
        } else if let Some(v) = &file.retention_bytes {
            c.retention_bytes = ferromq_config::limit_value("retention-bytes", v)?;
        }
        if let Some(s) = &args.disk_high_water {
            let p = ferromq_config::parse_percent("disk-high-water", s)?;
            c.disk_high_water = ferromq_config::percent_fraction("disk-high-water", p)?;
        } else if let Some(v) = &file.disk_high_water {
            c.disk_high_water = ferromq_config::percent_value("disk-high-water", v)?;
        }
        if let Some(d) = args
            .receive_gather
            .as_ref()
            .or(file.receive_gather.as_ref())
        {
            c.receive_gather = ferromq_config::parse_receive_gather("receive-gather", d)?;
        }
        if let Some(d) = args.flush_gather.as_ref().or(file.flush_gather.as_ref()) {
            c.flush_gather = ferromq_config::parse_flush_gather("flush-gather", d)?;
        }
        if let Some(q) = args.default_queues {
            c.engine.default_queues = q;
        } else if let Some(v) = &file.default_queues {
            c.engine.default_queues = count_value("default-queues", v)?;
        }
        if let Some(m) = args.max_delivery_attempts {
            c.engine.max_delivery_attempts = m;
        } else if let Some(v) = &file.max_delivery_attempts {
            c.engine.max_delivery_attempts = count_value("max-delivery-attempts", v)?;
        }
        if let Some(d) = args.max_delay.as_ref().or(file.max_delay.as_ref()) {
            c.engine.max_delay = parse_duration("max-delay", d)?;
        }
        if let Some(d) = args
            .transaction_check_interval
            .as_ref()
            .or(file.transaction_check_interval.as_ref())
        {
            c.engine.transaction_check_interval = parse_duration("transaction-check-interval", d)?;
        }
        if let Some(m) = args.transaction_check_max {
            c.engine.transaction_check_max = m;
        } else if let Some(v) = &file.transaction_check_max {
            c.engine.transaction_check_max = count_value("transaction-check-max", v)?;
        }
        c.advertise_addr = match args
            .advertise_addr
            .as_ref()
            .or(file.advertise_addr.as_ref())
        {
            Some(a) => a.clone(),
            None => advertise_default(c.grpc_addr),
        };
        c.tls = args.tls.resolve(config, &c.advertise_addr)?;
        c.auth = super::auth::AuthConfig::resolve(&args.auth, config)?;
        let remoting_addr = args
            .remoting_addr
            .as_deref()
            .or(file.remoting_addr.as_deref());
        // With authentication on, the remoting port checks every request's signature
        // (`crate::remoting::auth`), but that signature carries no time, so a captured request
        // can be replayed: the port is served when asked for, not by default.
        c.remoting = remoting_listen(
            remoting_addr,
            args.remoting_advertise_addr
                .as_deref()
                .or(file.remoting_advertise_addr.as_deref()),
            remoting_default.filter(|_| !c.auth.enabled),
        )?;
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
        if let Some(b) = self.retention_bytes {
            if b < self.segment_size {
                return Err(bad(
                    "retention-bytes",
                    format!(
                        "{b} bytes is less than one segment ({} bytes); retention deletes whole \
                         segments and never the one being written",
                        self.segment_size
                    ),
                ));
            }
        }
        if self.engine.default_queues == 0
            || self.engine.default_queues > ferromq_store::metadata::MAX_QUEUES
        {
            return Err(bad(
                "default-queues",
                format!(
                    "{} is not within 1..={}",
                    self.engine.default_queues,
                    ferromq_store::metadata::MAX_QUEUES
                ),
            ));
        }
        if self.engine.max_delivery_attempts == 0 || self.engine.max_delivery_attempts > 1000 {
            return Err(bad(
                "max-delivery-attempts",
                format!(
                    "{} is not within 1..=1000",
                    self.engine.max_delivery_attempts
                ),
            ));
        }
        if self.engine.max_delay > Duration::from_secs(366 * 86_400) {
            return Err(bad("max-delay", "must be at most 366d"));
        }
        if self.engine.transaction_check_max == 0 || self.engine.transaction_check_max > 1000 {
            return Err(bad(
                "transaction-check-max",
                format!(
                    "{} is not within 1..=1000",
                    self.engine.transaction_check_max
                ),
            ));
        }
        check_host_port("advertise-addr", &self.advertise_addr)?;
        if self.grpc_addr == self.http_addr && self.grpc_addr.port() != 0 {
            return Err(bad(
                "http-addr",
                format!("{} is also the grpc-addr", self.http_addr),
            ));
        }
        if let Some(r) = &self.remoting {
            if r.addr.port() != 0 && (r.addr == self.grpc_addr || r.addr == self.http_addr) {
                return Err(bad(
                    "remoting-addr",
                    format!("{} is also the grpc-addr or the http-addr", r.addr),
                ));
            }
        }
        Ok(())
    }
}

impl NodeArgs {
    /// `ferromq standalone`: reads the file once, refuses keys that are not a storage node's,
    /// and merges flags, file and defaults.
    pub fn resolve(&self) -> Result<NodeConfig, ConfigError> {
        let file = ConfigFile::load(self.config.as_deref())?;
        FileRole::Standalone.check(&file)?;
        NodeConfig::resolve(self, &file)
    }
}

impl NodeConfig {
    /// The store's settings.
    pub fn store_config(&self) -> StoreConfig {
        let mut s = StoreConfig::new(&self.data_dir);
        s.segment_size = self.segment_size;
        s.flush = self.flush;
        s.max_body_size = self.max_body_size;
        s.retention = self.retention;
        s.retention_bytes = self.retention_bytes;
        s.disk_high_water = self.disk_high_water;
        s.store_host = self.advertise_addr.parse().ok();
        s.flush_gather = self.flush_gather;
        s
    }

    /// The protocol-side settings of the node.
    pub fn node_settings(&self) -> crate::node::NodeSettings {
        crate::node::NodeSettings {
            advertise_addr: self.advertise_addr.clone(),
            max_body_size: self.max_body_size,
            receive_gather: self.receive_gather,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &NodeArgs) -> Result<NodeConfig, ConfigError> {
        args.resolve()
    }

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "grpc-addr = \"127.0.0.1:7000\"\nhttp-addr = \"127.0.0.1:7001\"\nmax-body-size = \"1MiB\"\n").unwrap();
        let args = NodeArgs {
            config: Some(f),
            grpc_addr: Some("127.0.0.1:7100".into()),
            ..Default::default()
        };
        let c = resolve(&args).unwrap();
        assert_eq!(c.grpc_addr.port(), 7100);
        assert_eq!(c.http_addr.port(), 7001);
        assert_eq!(c.max_body_size, 1 << 20);
        assert_eq!(c.advertise_addr, "127.0.0.1:7100");
    }

    #[test]
    fn remoting_is_on_at_9876_unless_turned_off() {
        let c = resolve(&NodeArgs::default()).unwrap();
        assert_eq!(c.remoting.map(|r| r.addr.port()), Some(9876));
        let off = NodeArgs {
            remoting_addr: Some(String::new()),
            ..Default::default()
        };
        assert!(resolve(&off).unwrap().remoting.is_none());
        let clash = NodeArgs {
            remoting_addr: Some("0.0.0.0:8081".into()),
            ..Default::default()
        };
        assert_eq!(resolve(&clash).unwrap_err().field, "remoting-addr");
        let bad = NodeArgs {
            remoting_advertise_addr: Some("nowhere".into()),
            ..Default::default()
        };
        assert_eq!(resolve(&bad).unwrap_err().field, "remoting-advertise-addr");
    }

    #[test]
    fn errors_name_the_bad_field() {
        let args = NodeArgs {
            grpc_addr: Some("nowhere".into()),
            ..Default::default()
        };
        assert_eq!(resolve(&args).unwrap_err().field, "grpc-addr");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "max-delivery-attempts = 0\n").unwrap();
        let args = NodeArgs {
            config: Some(f.clone()),
            ..Default::default()
        };
        assert_eq!(resolve(&args).unwrap_err().field, "max-delivery-attempts");
        std::fs::write(&f, "no-such-key = 1\n").unwrap();
        let err = resolve(&args).unwrap_err();
        assert_eq!(err.field, "config");
        assert!(err.reason.contains("no-such-key"), "{}", err.reason);
        std::fs::write(&f, "max-delay = \"3 fortnights\"\n").unwrap();
        assert_eq!(resolve(&args).unwrap_err().field, "max-delay");
        std::fs::write(&f, "transaction-check-max = \"many\"\n").unwrap();
        assert_eq!(resolve(&args).unwrap_err().field, "transaction-check-max");
    }

    /// With `--auth` the remoting port is off by default (its signature has no replay window)
    /// and served when asked for.
    #[test]
    fn auth_serves_the_remoting_port_only_when_asked() {
        let auth = super::super::auth::AuthArgs {
            auth: true,
            ..Default::default()
        };
        let args = NodeArgs {
            auth: auth.clone(),
            ..Default::default()
        };
        assert_eq!(resolve(&args).unwrap().remoting, None);
        let args = NodeArgs {
            auth,
            remoting_addr: Some("127.0.0.1:9876".into()),
            ..Default::default()
        };
        assert!(resolve(&args).unwrap().remoting.is_some());
        let open = resolve(&NodeArgs::default()).unwrap();
        assert!(
            open.remoting.is_some(),
            "without auth standalone serves remoting"
        );
    }

    #[test]
    fn retention_and_the_disk_mark_come_from_flags_or_the_file() {
        let c = resolve(&NodeArgs::default()).unwrap();
        let s = c.store_config();
        assert_eq!(s.retention, DEFAULT_RETENTION);
        assert_eq!(s.retention_bytes, None);
        assert_eq!(s.disk_high_water, 0.90);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "retention = \"7d\"\nretention-bytes = \"8GiB\"\ndisk-high-water = \"80%\"\n",
        )
        .unwrap();
        let args = NodeArgs {
            config: Some(f.clone()),
            disk_high_water: Some("95".into()),
            ..Default::default()
        };
        let s = resolve(&args).unwrap().store_config();
        assert_eq!(s.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(s.retention_bytes, Some(8 << 30));
        assert_eq!(s.disk_high_water, 0.95, "the flag wins over the file");
        let field = |args: NodeArgs| resolve(&args).unwrap_err().field;
        assert_eq!(
            field(NodeArgs {
                retention_bytes: Some("1MiB".into()),
                ..Default::default()
            }),
            "retention-bytes"
        );
        assert_eq!(
            field(NodeArgs {
                disk_high_water: Some("0".into()),
                ..Default::default()
            }),
            "disk-high-water"
        );
        assert_eq!(
            field(NodeArgs {
                retention: Some("forever".into()),
                ..Default::default()
            }),
            "retention"
        );
        let off = NodeArgs {
            retention_bytes: Some("off".into()),
            ..Default::default()
        };
        assert_eq!(resolve(&off).unwrap().retention_bytes, None);
    }

    #[test]
    fn flush_gather_from_flag_file_or_default() {
        let gather = |args: &NodeArgs| resolve(args).map(|c| c.store_config().flush_gather);
        assert_eq!(
            gather(&NodeArgs::default()).unwrap(),
            ferromq_store::DEFAULT_FLUSH_GATHER
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "flush-gather = \"1ms\"\n").unwrap();
        let mut args = NodeArgs {
            config: Some(f),
            ..Default::default()
        };
        assert_eq!(gather(&args).unwrap(), Duration::from_millis(1));
        args.flush_gather = Some("250us".into());
        assert_eq!(
            gather(&args).unwrap(),
            Duration::from_micros(250),
            "the flag wins"
        );
        args.flush_gather = Some("0ms".into());
        assert_eq!(gather(&args).unwrap(), Duration::ZERO);
        args.flush_gather = Some("20ms".into());
        assert_eq!(gather(&args).unwrap_err().field, "flush-gather");
    }

    #[test]
    fn receive_gather_from_flag_file_or_default() {
        let gather = |args: &NodeArgs| resolve(args).map(|c| c.node_settings().receive_gather);
        assert_eq!(
            gather(&NodeArgs::default()).unwrap(),
            DEFAULT_RECEIVE_GATHER
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "receive-gather = \"5ms\"\n").unwrap();
        let mut args = NodeArgs {
            config: Some(f),
            ..Default::default()
        };
        assert_eq!(gather(&args).unwrap(), Duration::from_millis(5));
        args.receive_gather = Some("0ms".into());
        assert_eq!(gather(&args).unwrap(), Duration::ZERO, "the flag wins");
        args.receive_gather = Some("2s".into());
        assert_eq!(gather(&args).unwrap_err().field, "receive-gather");
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
        let args = NodeArgs {
            config: Some(f),
            ..Default::default()
        };
        let c = resolve(&args).unwrap();
        assert_eq!(c.engine.max_delay, std::time::Duration::from_secs(86_400));
        assert_eq!(
            c.engine.transaction_check_interval,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(c.engine.transaction_check_max, 5);
        assert_eq!(c.engine.max_delivery_attempts, 4);
        assert_eq!(c.engine.default_queues, 2);
    }
}
