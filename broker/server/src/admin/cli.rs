//! `ferromq admin --server HOST:PORT ...`: topics, groups and message lookups through the
//! admin API, printed as a table (for people) or JSON / YAML (for scripts).

use anyhow::bail;
use ferromq_proto::admin::{self, admin_client::AdminClient, TopicPermission, TopicType};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// gRPC address of a FerroMQ standalone server or proxy (host:port, or https://host:port
    /// for TLS).
    #[arg(
        long,
        env = "FERROMQ_SERVER",
        default_value = "127.0.0.1:8081",
        global = true
    )]
    pub server: String,
    #[command(flatten)]
    pub tls: crate::dial::ServerTls,
    #[command(flatten)]
    pub credentials: crate::credentials::CredentialArgs,
    /// Output format: a table for people, JSON or YAML for scripts.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "table",
        global = true
    )]
    pub output: OutputFormat,
    #[command(subcommand)]
    pub cmd: AdminCmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCmd {
    /// Create, change, delete and inspect topics.
    #[command(subcommand)]
    Topic(TopicCmd),
    /// Consumer groups: offsets and lag, retry policy, offset resets, deletion.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Dead letters of a consumer group: list them, send them back to their topic.
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// Look messages up by id or key.
    #[command(subcommand)]
    Message(MessageCmd),
    /// Broker groups of a cluster: list them, drain one before removing it, or undo a drain.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Users (access keys) of a server running with --auth. Super users only.
    #[command(subcommand)]
    User(UserCmd),
    /// ACL policies of users: which topics, groups and cluster actions each may use.
    #[command(subcommand)]
    Acl(AclCmd),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    Super,
    Normal,
}

impl KindArg {
    fn as_str(self) -> &'static str {
        match self {
            KindArg::Super => "super",
            KindArg::Normal => "normal",
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCmd {
    /// Create a user. Without --secret-file a secret is generated and printed once.
    Create {
        /// User name (the access key clients sign with).
        name: String,
        /// A super user may do everything, including managing users and ACLs.
        #[arg(long = "super")]
        super_user: bool,
        /// File holding the user's secret (8..=256 printable ASCII characters).
        #[arg(long = "user-secret-file")]
        user_secret_file: Option<std::path::PathBuf>,
    },
    /// Change a user's secret or kind.
    Update {
        /// The user to change.
        name: String,
        /// File holding the new secret (8..=256 printable ASCII characters).
        #[arg(long = "user-secret-file")]
        user_secret_file: Option<std::path::PathBuf>,
        /// The user's new kind.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
    },
    /// Delete a user and its policy: its next call is refused.
    Delete {
        /// The user to delete.
        name: String,
    },
    /// Every user and its kind.
    List,
    /// One user.
    Describe {
        /// The user to show.
        name: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct AclEntryArgs {
    /// The user whose policy changes.
    #[arg(long)]
    user: String,
    /// `topic:NAME`, `group:NAME` (a trailing `*` matches a prefix), `topic:*`, `cluster` or `*`.
    #[arg(long)]
    resource: String,
    /// Comma separated: publish, subscribe, create, update, delete, get, list, all.
    #[arg(long, value_delimiter = ',', required = true)]
    actions: Vec<String>,
    /// `allow` or `deny` (a deny wins over any allow).
    #[arg(long, default_value = "allow")]
    effect: String,
    /// Limit the entry to a source address range (CIDR); repeatable.
    #[arg(long = "source")]
    sources: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum AclCmd {
    /// Add an entry to a user's policy (replacing the one with the same resource and effect).
    Create(AclEntryArgs),
    /// Same as create.
    Update(AclEntryArgs),
    /// Remove a user's entries for a resource (of one effect), or its whole policy.
    Delete {
        /// The user whose policy changes.
        #[arg(long)]
        user: String,
        /// Remove only the entries for this resource [default: the whole policy].
        #[arg(long)]
        resource: Option<String>,
        /// Remove only the entry of this effect (`allow` or `deny`).
        #[arg(long, requires = "resource")]
        effect: Option<String>,
    },
    /// Every user's policy entries.
    List,
    /// One user's policy.
    Describe {
        /// The user whose policy to show.
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCmd {
    /// Each broker group's state, topics, queues and unsettled messages.
    List,
    /// Mark a group read-only: new sends go to other groups, consumers finish what it holds.
    /// Prints how much is left; with --wait follows the drain until nothing remains.
    Drain {
        /// The broker group to drain (`standalone` for a standalone server).
        group: String,
        /// Wait until every message the group holds is settled, showing progress.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (`30s`, `10m`) [default: wait as long as it takes].
        #[arg(long, requires = "wait", value_parser = crate::config::duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Make a drained group take new messages again.
    Undrain {
        /// The broker group to reopen.
        group: String,
    },
    /// Move leadership of a replicated group to another in-sync member with nothing
    /// acknowledged lost (before restarting the leader's machine, say).
    Switchover {
        /// The replicated broker group.
        group: String,
        /// Replica id of the new leader [default: the most caught-up in-sync member].
        #[arg(long)]
        to: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TypeArg {
    /// Plain messages.
    Normal,
    /// Ordered per message group.
    Fifo,
    /// Delivered at a time the producer chose.
    Delay,
    /// Held until the producer commits them.
    Transaction,
    /// Higher priority delivered first.
    Priority,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PermArg {
    /// Read and write.
    Rw,
    /// Read only: consumers drain it, sends are refused.
    R,
    /// Write only.
    W,
}

#[derive(Debug, clap::Subcommand)]
pub enum TopicCmd {
    /// Create a topic (on every writable broker group, through a proxy).
    Create {
        /// Topic name: letters, digits, `%`, `-`, `_` and `|`, up to 127 characters.
        #[arg(value_parser = crate::cli::topic_name)]
        name: String,
        /// Message type the topic accepts.
        #[arg(long = "type", value_enum, default_value = "normal")]
        message_type: TypeArg,
        /// Queues of the topic (per broker group), 1 to 1024.
        #[arg(long, default_value_t = 8, value_parser = queue_count())]
        queues: u32,
        /// Permission: rw, r (read only) or w (write only).
        #[arg(long, value_enum, default_value = "rw")]
        perm: PermArg,
        /// Succeed without changing anything when the topic exists already.
        #[arg(long)]
        if_not_exists: bool,
        /// How long the topic's messages are served (`24h`, `7d`, `90m`), at most the
        /// broker's `--retention` [default: the broker's retention]. The commit log is shared
        /// by all topics: older messages of this topic are no longer delivered, and their
        /// disk space is freed when the broker's retention deletes their segment.
        #[arg(long, value_parser = retention_arg, allow_hyphen_values = true, value_name = "DURATION")]
        retention: Option<RetentionArg>,
    },
    /// Change a topic's type, queue count, permission or retention.
    Update {
        /// The topic to change.
        #[arg(value_parser = crate::cli::topic_name)]
        name: String,
        /// New message type.
        #[arg(long = "type", value_enum)]
        message_type: Option<TypeArg>,
        /// New queue count (can only grow), up to 1024.
        #[arg(long, value_parser = queue_count())]
        queues: Option<u32>,
        /// New permission.
        #[arg(long, value_enum)]
        perm: Option<PermArg>,
        /// New retention (`24h`, `7d`, `90m`, at most the broker's `--retention`), or
        /// `default` to go back to the broker's retention. Messages older than it stop being
        /// delivered at once.
        #[arg(long, value_parser = retention_arg, allow_hyphen_values = true, value_name = "DURATION|default")]
        retention: Option<RetentionArg>,
    },
    /// Delete a topic, its messages and every group's offsets on it.
    Delete {
        /// The topic to delete.
        name: String,
    },
    /// Every topic with its type, queues and parked messages.
    List,
    /// One topic with each queue's offsets.
    Describe {
        /// The topic to show.
        name: String,
    },
}

/// `--retention` of a topic: a duration, or the broker's retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionArg {
    /// `default`: the broker's `--retention`.
    Broker,
    /// A retention of its own, in milliseconds.
    Millis(u64),
}

/// Reads `--retention`: `default`, or a duration of at least a millisecond.
fn retention_arg(s: &str) -> Result<RetentionArg, String> {
    if s.trim().eq_ignore_ascii_case("default") {
        return Ok(RetentionArg::Broker);
    }
    ferromq_config::parse_retention_ms("retention", s)
        .map(RetentionArg::Millis)
        .map_err(|e| format!("{} (or `default` for the broker's retention)", e.reason))
}

/// A retention in milliseconds as the CLI prints it (`24h`); `None` for 0 (not set).
fn retention_text(ms: i64) -> Option<String> {
    u64::try_from(ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map(|ms| ferromq_config::format_duration(std::time::Duration::from_millis(ms)))
}

/// Table columns of one topic (`create`, `update`, the head of `describe`). `retention` shows
/// `-` when the topic uses the broker's.
const TOPIC_COLUMNS: &[&str] = &[
    "name",
    "type",
    "queues",
    "perm",
    "retention",
    "node_retention",
];

/// Queue counts a topic may have.
fn queue_count() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=i64::from(ferromq_store::metadata::MAX_QUEUES))
}

#[derive(Debug, clap::Subcommand)]
pub enum GroupCmd {
    /// Every consumer group with its topics, lag and online clients.
    List,
    /// One group's committed offset, lag and messages in flight per queue.
    Describe {
        /// The consumer group to show.
        name: String,
    },
    /// Set a group's maximum deliveries before dead-lettering, or force FIFO on/off.
    Update {
        /// The consumer group to change.
        #[arg(value_parser = crate::cli::group_name)]
        name: String,
        /// Deliveries before a message goes to the dead-letter topic, 1 to 1000.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        max_attempts: Option<u32>,
        /// Consume FIFO topics in message-group order (true) or not (false).
        #[arg(long)]
        fifo: Option<bool>,
    },
    /// Move a group's offsets, like `kafka-consumer-groups --reset-offsets`. Prints the plan
    /// per queue and changes nothing unless --execute is given. Live consumers continue from
    /// the new offsets; messages they hold unacknowledged are forgotten.
    ResetOffset(ResetOffsetArgs),
    /// Forget a group: its offsets and settings (its dead-letter topic stays). Refused while
    /// the group has online consumers.
    Delete {
        /// The consumer group to delete.
        #[arg(value_parser = crate::cli::group_name)]
        name: String,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_datetime", "to_offset"])))]
pub struct ResetOffsetArgs {
    /// The consumer group whose offsets move.
    #[arg(value_parser = crate::cli::group_name)]
    pub group: String,
    /// Only this topic [default: every topic the group has a position on].
    #[arg(long, value_parser = crate::cli::topic_name)]
    pub topic: Option<String>,
    /// To the oldest message still stored.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the end: only messages sent from now on.
    #[arg(long)]
    pub to_latest: bool,
    /// To the first message stored at or after this time: RFC 3339 (`2026-12-02T07:00:00Z`,
    /// `2026-12-02 07:00:00` as UTC) or milliseconds since the epoch.
    #[arg(long, value_parser = parse_datetime)]
    pub to_datetime: Option<i64>,
    /// To this queue offset on every queue (clamped into what each queue holds).
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    pub to_offset: Option<i64>,
    /// Only print the plan (the default).
    #[arg(long, conflicts_with = "execute")]
    pub dry_run: bool,
    /// Apply the plan.
    #[arg(long)]
    pub execute: bool,
}

/// `--to-datetime`: RFC 3339 (or its space-separated form, read as UTC) or epoch milliseconds.
pub fn parse_datetime(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).map_err(|e| {
        format!("{s:?} is not a time like 2026-12-02T07:00:00Z or epoch milliseconds: {e}")
    })?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("{s:?} is before 1970"))
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCmd {
    /// Letters of a group's dead-letter topic: id, origin topic, deliveries, whether resent.
    List {
        /// The consumer group whose dead letters to list.
        #[arg(value_parser = crate::cli::group_name)]
        group: String,
        /// Most letters to show (per broker group), 1 to 1000.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
        max: u32,
        /// Start at this offset of the dead-letter topic [default: the oldest stored].
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
        from: Option<i64>,
    },
    /// Send dead letters back to the topic they came from, to be delivered to this group again
    /// (other groups of the topic do not see them twice).
    Resend {
        /// The consumer group whose dead letters go back.
        #[arg(value_parser = crate::cli::group_name)]
        group: String,
        /// Only the letter with this message id (repeatable) [default: every letter not resent
        /// yet].
        #[arg(long = "id")]
        ids: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum MessageCmd {
    /// A message by its message id.
    Get {
        /// The topic the message was sent to.
        #[arg(long)]
        topic: String,
        /// The message id (as `ferromq send` prints it).
        #[arg(long)]
        id: String,
    },
    /// Messages carrying a key.
    Query {
        /// The topic to search.
        #[arg(long)]
        topic: String,
        /// The key to look for.
        #[arg(long)]
        key: String,
        /// Most messages to show, 1 to 1000.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
        max: u32,
    },
}

fn type_arg(t: TypeArg) -> TopicType {
    match t {
        TypeArg::Normal => TopicType::Normal,
        TypeArg::Fifo => TopicType::Fifo,
        TypeArg::Delay => TopicType::Delay,
        TypeArg::Transaction => TopicType::Transaction,
        TypeArg::Priority => TopicType::Priority,
    }
}

fn perm_arg(p: PermArg) -> TopicPermission {
    match p {
        PermArg::Rw => TopicPermission::ReadWrite,
        PermArg::R => TopicPermission::Read,
        PermArg::W => TopicPermission::Write,
    }
}

fn type_name(t: i32) -> &'static str {
    match TopicType::try_from(t).unwrap_or(TopicType::Unspecified) {
        TopicType::Normal => "normal",
        TopicType::Fifo => "fifo",
        TopicType::Delay => "delay",
        TopicType::Transaction => "transaction",
        TopicType::Priority => "priority",
        TopicType::Unspecified => "unspecified",
    }
}

fn perm_name(p: i32) -> &'static str {
    match TopicPermission::try_from(p).unwrap_or(TopicPermission::Unspecified) {
        TopicPermission::ReadWrite => "rw",
        TopicPermission::Read => "r",
        TopicPermission::Write => "w",
        TopicPermission::Unspecified => "none",
    }
}

/// A topic as the CLI prints it. `retention` is the topic's own (null: the broker's, which
/// `node_retention` gives); `effective_retention` is the one in force.
fn topic_json(t: &admin::Topic) -> Value {
    let own = retention_text(t.retention_ms);
    let node = retention_text(t.node_retention_ms);
    let effective = own.clone().or_else(|| node.clone());
    json!({ "name": t.name, "queues": t.queues, "type": type_name(t.message_type), "perm": perm_name(t.permission), "retention": own, "node_retention": node, "effective_retention": effective, "pending_timers": t.pending_timers, "half_messages": t.half_messages })
}

pub(super) fn cluster_json(g: &admin::ClusterGroup) -> Value {
    let mut v = json!({
        "name": g.name,
        "state": g.state,
        "endpoint": g.endpoint,
        "topics": g.topics,
        "queues": g.queues,
        "lag": g.total_lag,
        "queues_with_lag": g.queues_with_lag,
        "heartbeat_age_ms": g.heartbeat_age_ms,
    });
    if let Some(r) = &g.replication {
        let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        v["leader"] = r.leader.map_or(Value::Null, |l| json!(l));
        v["epoch"] = json!(r.epoch);
        v["in_sync"] = json!(ids(&r.in_sync));
        // Compact per-member view for the table: id:lag-bytes, '!' for a dead member.
        v["replicas"] = json!(r
            .members
            .iter()
            .map(|m| format!(
                "{}:{}{}",
                m.replica_id,
                m.lag_bytes,
                if m.alive { "" } else { "!" }
            ))
            .collect::<Vec<_>>()
            .join(" "));
        v["members"] = json!(r
            .members
            .iter()
            .map(|m| json!({
                "replica_id": m.replica_id,
                "address": m.address,
                "log_end_offset": m.log_end_offset,
                "lag_bytes": m.lag_bytes,
                "alive": m.alive,
                "in_sync": m.in_sync,
            }))
            .collect::<Vec<_>>());
    }
    v
}

pub(super) fn message_json(m: &admin::StoredMessage) -> Value {
    let user: serde_json::Map<String, Value> = m
        .properties
        .iter()
        .filter(|(k, _)| !ferromq_engine::props::is_system(k))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "message_id": m.message_id,
        "topic": m.topic,
        "queue_id": m.queue_id,
        "queue_offset": m.queue_offset,
        "commit_log_offset": m.phys_offset,
        "tag": m.tag,
        "keys": m.keys,
        "message_group": m.properties.get(ferromq_engine::props::MESSAGE_GROUP),
        "properties": user,
        "born_host": m.born_host,
        "born_timestamp_ms": m.born_timestamp_ms,
        "store_timestamp_ms": m.store_timestamp_ms,
        "body_size": m.body.len(),
        "body": String::from_utf8_lossy(&m.body),
    })
}

/// What a command prints: the structured value, and its table form.
pub(super) struct Printable {
    pub value: Value,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Value>,
}

impl Printable {
    /// One object: a table of one row.
    pub fn one(v: Value, columns: Vec<&'static str>) -> Printable {
        Printable {
            value: v.clone(),
            columns,
            rows: vec![v],
        }
    }

    /// A list of objects: a table of one row each.
    pub fn list(rows: Vec<Value>, columns: Vec<&'static str>) -> Printable {
        Printable {
            value: Value::Array(rows.clone()),
            columns,
            rows,
        }
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn render_table(columns: &[&str], rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let mut out = String::new();
    let line = |vals: Vec<String>| -> String {
        vals.iter()
            .enumerate()
            .map(|(i, v)| format!("{v:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    out.push_str(&line(columns.iter().map(|c| c.to_uppercase()).collect()));
    out.push('\n');
    for r in cells {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

fn print(p: Printable, fmt: OutputFormat) -> anyhow::Result<()> {
    match fmt {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&p.value)?),
        OutputFormat::Yaml => print!("{}", serde_yaml::to_string(&p.value)?),
        OutputFormat::Table => print!("{}", render_table(&p.columns, &p.rows)),
    }
    Ok(())
}

/// The admin client, signing its calls when credentials are given.
pub(super) type Client = AdminClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        crate::credentials::Signer,
    >,
>;

/// `cluster drain` / `cluster undrain`: sets the state and reports what is left to consume.
pub(super) async fn set_state(
    c: &mut Client,
    group: String,
    state: &str,
) -> anyhow::Result<Printable> {
    let g = c
        .set_group_state(admin::SetGroupStateRequest {
            group,
            state: state.into(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut v = cluster_json(&g);
    // What the operator's drain waits on: queues still holding unsettled messages.
    v["remaining_queues"] = json!(g.queues_with_lag);
    v["remaining_messages"] = json!(g.total_lag);
    v["drained"] = json!(g.state == "read-only" && g.total_lag == 0);
    Ok(Printable::one(
        v,
        vec![
            "name",
            "state",
            "remaining_queues",
            "remaining_messages",
            "drained",
        ],
    ))
}

/// Runs one admin command; errors carry the server's message.
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let signer = args.credentials.signer()?;
    let channel = crate::dial::connect(&args.server, &args.tls).await?;
    let mut c: Client = AdminClient::with_interceptor(channel, signer);
    let fmt = args.output;
    let p = match args.cmd {
        AdminCmd::Topic(TopicCmd::Create {
            name,
            message_type,
            queues,
            perm,
            if_not_exists,
            retention,
        }) => {
            let t = admin::Topic {
                name: name.clone(),
                queues,
                message_type: type_arg(message_type) as i32,
                permission: perm_arg(perm) as i32,
                retention_ms: match retention {
                    Some(RetentionArg::Millis(ms)) => i64::try_from(ms).unwrap_or(i64::MAX),
                    Some(RetentionArg::Broker) | None => 0,
                },
                ..Default::default()
            };
            let t = match c
                .create_topic(admin::CreateTopicRequest { topic: Some(t) })
                .await
            {
                Ok(t) => t.into_inner(),
                Err(e) if if_not_exists && e.code() == tonic::Code::AlreadyExists => c
                    .describe_topic(admin::DescribeTopicRequest { name })
                    .await
                    .map_err(status)?
                    .into_inner()
                    .topic
                    .unwrap_or_default(),
                Err(e) => return Err(status(e)),
            };
            let v = topic_json(&t);
            Printable::one(v, TOPIC_COLUMNS.to_vec())
        }
        AdminCmd::Topic(TopicCmd::Update {
            name,
            message_type,
            queues,
            perm,
            retention,
        }) => {
            if message_type.is_none() && queues.is_none() && perm.is_none() && retention.is_none() {
                bail!("nothing to update: give --type, --queues, --perm or --retention");
            }
            let t = admin::Topic {
                name,
                queues: queues.unwrap_or(0),
                message_type: message_type.map_or(TopicType::Unspecified, type_arg) as i32,
                permission: perm.map_or(TopicPermission::Unspecified, perm_arg) as i32,
                retention_ms: match retention {
                    Some(RetentionArg::Millis(ms)) => i64::try_from(ms).unwrap_or(i64::MAX),
                    Some(RetentionArg::Broker) | None => 0,
                },
                ..Default::default()
            };
            let t = c
                .update_topic(admin::UpdateTopicRequest {
                    topic: Some(t),
                    clear_retention: retention == Some(RetentionArg::Broker),
                })
                .await
                .map_err(status)?
                .into_inner();
            let v = topic_json(&t);
            Printable::one(v, TOPIC_COLUMNS.to_vec())
        }
        AdminCmd::Topic(TopicCmd::Delete { name }) => {
            c.delete_topic(admin::DeleteTopicRequest { name: name.clone() })
                .await
                .map_err(status)?;
            let v = json!({ "name": name, "deleted": true });
            Printable::one(v, vec!["name", "deleted"])
        }
        AdminCmd::Topic(TopicCmd::List) => {
            let r = c
                .list_topics(admin::ListTopicsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Value> = r.topics.iter().map(topic_json).collect();
            Printable::list(
                rows,
                vec![
                    "name",
                    "type",
                    "queues",
                    "perm",
                    "retention",
                    "pending_timers",
                    "half_messages",
                ],
            )
        }
        AdminCmd::Topic(TopicCmd::Describe { name }) => {
            let d = c
                .describe_topic(admin::DescribeTopicRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            let t = d.topic.unwrap_or_default();
            let rows: Vec<Value> = d
                .queues
                .iter()
                .map(|q| json!({ "broker_group": q.broker_group, "queue": q.queue_id, "min_offset": q.min_offset, "max_offset": q.max_offset, "messages": q.max_offset - q.min_offset }))
                .collect();
            let mut v = topic_json(&t);
            if fmt == OutputFormat::Table {
                // The topic's own settings first, then its queues.
                println!("{}", render_table(TOPIC_COLUMNS, std::slice::from_ref(&v)));
            }
            v["total_messages"] = json!(d.total_messages);
            v["queue_offsets"] = Value::Array(rows.clone());
            Printable {
                value: v,
                columns: vec![
                    "broker_group",
                    "queue",
                    "min_offset",
                    "max_offset",
                    "messages",
                ],
                rows,
            }
        }
        AdminCmd::Group(GroupCmd::List) => {
            let r = c
                .list_groups(admin::ListGroupsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Value> = r.groups.iter().map(group_json).collect();
            Printable::list(
                rows,
                vec!["name", "topics", "lag", "online", "max_attempts", "fifo"],
            )
        }
        AdminCmd::Group(GroupCmd::Describe { name }) => {
            let d = c
                .describe_group(admin::DescribeGroupRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Value> = d
                .queues
                .iter()
                .map(|q| {
                    json!({ "broker_group": q.broker_group, "topic": q.topic, "queue": q.queue_id, "committed": q.committed_offset, "max_offset": q.max_offset, "lag": q.lag, "inflight": q.inflight })
                })
                .collect();
            let mut v = d.group.as_ref().map(group_json).unwrap_or(Value::Null);
            v["queues"] = Value::Array(rows.clone());
            Printable {
                value: v,
                columns: vec![
                    "broker_group",
                    "topic",
                    "queue",
                    "committed",
                    "max_offset",
                    "lag",
                    "inflight",
                ],
                rows,
            }
        }
        AdminCmd::Group(GroupCmd::Update {
            name,
            max_attempts,
            fifo,
        }) => {
            if max_attempts.is_none() && fifo.is_none() {
                bail!("nothing to update: give --max-attempts or --fifo");
            }
            let g = c
                .update_group(admin::UpdateGroupRequest {
                    name,
                    max_delivery_attempts: max_attempts.unwrap_or(0) as i32,
                    fifo,
                })
                .await
                .map_err(status)?
                .into_inner();
            let v = group_json(&g);
            Printable::one(v, vec!["name", "max_attempts", "fifo"])
        }
        AdminCmd::Cluster(ClusterCmd::List) => {
            let r = c
                .list_cluster(admin::ListClusterRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Value> = r.groups.iter().map(cluster_json).collect();
            Printable::list(
                rows,
                vec![
                    "name",
                    "state",
                    "endpoint",
                    "topics",
                    "queues",
                    "lag",
                    "queues_with_lag",
                    "heartbeat_age_ms",
                    "leader",
                    "epoch",
                    "in_sync",
                    "replicas",
                ],
            )
        }
        AdminCmd::Cluster(ClusterCmd::Switchover { group, to }) => {
            let r = c
                .switchover(admin::SwitchoverRequest { group, to })
                .await
                .map_err(status)?
                .into_inner();
            Printable::one(
                json!({ "group": r.group, "leader": r.leader, "epoch": r.epoch }),
                vec!["group", "leader", "epoch"],
            )
        }
        AdminCmd::Cluster(ClusterCmd::Drain {
            group,
            wait,
            timeout,
        }) => {
            let p = set_state(&mut c, group.clone(), "read-only").await?;
            if wait {
                super::ops::wait_drained(&mut c, &group, timeout).await?
            } else {
                p
            }
        }
        AdminCmd::Cluster(ClusterCmd::Undrain { group }) => {
            set_state(&mut c, group, "read-write").await?
        }
        AdminCmd::Message(MessageCmd::Get { topic, id }) => {
            let r = c
                .get_message(admin::GetMessageRequest {
                    topic,
                    message_id: id,
                })
                .await
                .map_err(status)?
                .into_inner();
            let m = r.message.map(|m| message_json(&m)).unwrap_or(Value::Null);
            Printable::one(
                m,
                vec![
                    "message_id",
                    "queue_id",
                    "queue_offset",
                    "tag",
                    "keys",
                    "body_size",
                ],
            )
        }
        AdminCmd::Message(MessageCmd::Query { topic, key, max }) => {
            let r = c
                .query_messages(admin::QueryMessagesRequest {
                    topic,
                    key,
                    max_results: max,
                })
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Value> = r.messages.iter().map(message_json).collect();
            Printable::list(
                rows,
                vec![
                    "message_id",
                    "queue_id",
                    "queue_offset",
                    "tag",
                    "keys",
                    "body_size",
                ],
            )
        }
        AdminCmd::Group(GroupCmd::ResetOffset(a)) => super::ops::reset_offset(&mut c, a).await?,
        AdminCmd::Group(GroupCmd::Delete { name }) => {
            c.delete_group(admin::DeleteGroupRequest { name: name.clone() })
                .await
                .map_err(status)?;
            Printable::one(
                json!({ "name": name, "deleted": true }),
                vec!["name", "deleted"],
            )
        }
        AdminCmd::Dlq(cmd) => super::ops::dlq(&mut c, cmd).await?,
        AdminCmd::User(cmd) => user_command(&mut c, cmd).await?,
        AdminCmd::Acl(cmd) => acl_command(&mut c, cmd).await?,
    };
    print(p, fmt)
}

fn user_json(u: &admin::User) -> Value {
    json!({ "name": u.name, "kind": u.kind })
}

fn acl_rows(a: &admin::Acl) -> Vec<Value> {
    a.entries
        .iter()
        .map(|e| {
            json!({
                "user": a.user,
                "resource": e.resource,
                "actions": e.actions,
                "effect": e.effect,
                "sources": e.sources,
            })
        })
        .collect()
}

const ACL_COLUMNS: [&str; 5] = ["user", "resource", "actions", "effect", "sources"];

pub(super) fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

async fn user_command(c: &mut Client, cmd: UserCmd) -> anyhow::Result<Printable> {
    use crate::credentials::read_secret_file;
    Ok(match cmd {
        UserCmd::Create {
            name,
            super_user,
            user_secret_file,
        } => {
            // Generated here rather than on the server, so that a proxy hands every broker
            // group the same secret.
            let (secret, generated) = match user_secret_file {
                Some(f) => (read_secret_file(&f)?, false),
                None => (ferromq_auth::Secret::generate()?, true),
            };
            let kind = if super_user { "super" } else { "normal" };
            let u = c
                .create_user(admin::CreateUserRequest {
                    name,
                    secret: secret.expose().to_string(),
                    kind: kind.into(),
                })
                .await
                .map_err(status)?
                .into_inner();
            let mut v = user_json(&u);
            if generated {
                // Shown this once: the server never answers it again.
                v["secret"] = json!(secret.expose());
                Printable::one(v, vec!["name", "kind", "secret"])
            } else {
                Printable::one(v, vec!["name", "kind"])
            }
        }
        UserCmd::Update {
            name,
            user_secret_file,
            kind,
        } => {
            let secret = match user_secret_file {
                Some(f) => read_secret_file(&f)?.expose().to_string(),
                None => String::new(),
            };
            if secret.is_empty() && kind.is_none() {
                bail!("nothing to change: give --user-secret-file or --kind");
            }
            let u = c
                .update_user(admin::UpdateUserRequest {
                    name,
                    secret,
                    kind: kind.map(|k| k.as_str().to_string()).unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            Printable::one(user_json(&u), vec!["name", "kind"])
        }
        UserCmd::Delete { name } => {
            c.delete_user(admin::DeleteUserRequest { name: name.clone() })
                .await
                .map_err(status)?;
            Printable::one(
                json!({ "name": name, "deleted": true }),
                vec!["name", "deleted"],
            )
        }
        UserCmd::List => {
            let r = c
                .list_users(admin::ListUsersRequest {})
                .await
                .map_err(status)?
                .into_inner();
            Printable::list(
                r.users.iter().map(user_json).collect(),
                vec!["name", "kind"],
            )
        }
        UserCmd::Describe { name } => {
            let u = c
                .describe_user(admin::DescribeUserRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            Printable::one(user_json(&u), vec!["name", "kind"])
        }
    })
}

async fn acl_command(c: &mut Client, cmd: AclCmd) -> anyhow::Result<Printable> {
    let put = |a: AclEntryArgs| admin::PutAclRequest {
        user: a.user,
        entry: Some(admin::AclEntry {
            resource: a.resource,
            actions: a.actions,
            effect: a.effect,
            sources: a.sources,
        }),
    };
    let acl = match cmd {
        AclCmd::Create(a) => c.create_acl(put(a)).await.map_err(status)?.into_inner(),
        AclCmd::Update(a) => c.update_acl(put(a)).await.map_err(status)?.into_inner(),
        AclCmd::Describe { user } => c
            .describe_acl(admin::DescribeAclRequest { user })
            .await
            .map_err(status)?
            .into_inner(),
        AclCmd::Delete {
            user,
            resource,
            effect,
        } => {
            c.delete_acl(admin::DeleteAclRequest {
                user: user.clone(),
                resource: resource.clone().unwrap_or_default(),
                effect: effect.unwrap_or_default(),
            })
            .await
            .map_err(status)?;
            let v = json!({ "user": user, "resource": resource.unwrap_or_else(|| "(whole policy)".into()), "deleted": true });
            return Ok(Printable::one(v, vec!["user", "resource", "deleted"]));
        }
        AclCmd::List => {
            let r = c
                .list_acls(admin::ListAclsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let rows = r.acls.iter().flat_map(acl_rows).collect();
            return Ok(Printable::list(rows, ACL_COLUMNS.to_vec()));
        }
    };
    Ok(Printable::list(acl_rows(&acl), ACL_COLUMNS.to_vec()))
}

fn group_json(g: &admin::Group) -> Value {
    json!({
        "name": g.name,
        "topics": g.topics,
        "lag": g.total_lag,
        "online": g.online_clients,
        "max_attempts": g.max_delivery_attempts,
        "fifo": g.fifo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_show_missing_values_as_dash() {
        let rows = vec![
            json!({"name": "orders", "queues": 8}),
            json!({"name": "a", "queues": null}),
        ];
        let t = render_table(&["name", "queues"], &rows);
        assert_eq!(t, "NAME    QUEUES\norders  8\na       -\n");
    }
}
