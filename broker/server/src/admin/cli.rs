//! `ferromq admin --server HOST:PORT ...`: topics, groups and message lookups through the
//! admin API, printed as a table (for people) or JSON / YAML (for scripts).

use anyhow::{bail, Context};
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
    /// gRPC address of a FerroMQ server (host:port).
    #[arg(long, env = "FERROMQ_SERVER", default_value = "127.0.0.1:8081")]
    pub server: String,
    /// Output format.
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
    /// Inspect consumer groups (offsets, lag) and set their retry policy.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Look messages up by id or key.
    #[command(subcommand)]
    Message(MessageCmd),
    /// Broker groups of a cluster: list them, drain one before removing it, or undo a drain.
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCmd {
    /// Each broker group's state, topics, queues and unsettled messages.
    List,
    /// Mark a group read-only: new sends go to other groups, consumers finish what it holds.
    /// Prints how much is left; run it again to follow the drain until nothing remains.
    Drain { group: String },
    /// Make a drained group take new messages again.
    Undrain { group: String },
    /// Move leadership of a replicated group to another in-sync member with nothing
    /// acknowledged lost (before restarting the leader's machine, say).
    Switchover {
        group: String,
        /// Replica id of the new leader [default: the most caught-up in-sync member].
        #[arg(long)]
        to: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TypeArg {
    Normal,
    Fifo,
    Delay,
    Transaction,
    Priority,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PermArg {
    /// read and write
    Rw,
    R,
    W,
}

#[derive(Debug, clap::Subcommand)]
pub enum TopicCmd {
    Create {
        name: String,
        #[arg(long = "type", value_enum, default_value = "normal")]
        message_type: TypeArg,
        #[arg(long, default_value_t = 8)]
        queues: u32,
        #[arg(long, value_enum, default_value = "rw")]
        perm: PermArg,
    },
    Update {
        name: String,
        #[arg(long = "type", value_enum)]
        message_type: Option<TypeArg>,
        /// New queue count (can only grow).
        #[arg(long)]
        queues: Option<u32>,
        #[arg(long, value_enum)]
        perm: Option<PermArg>,
    },
    Delete {
        name: String,
    },
    List,
    Describe {
        name: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum GroupCmd {
    List,
    Describe {
        name: String,
    },
    /// Set a group's maximum deliveries before dead-lettering, or force FIFO on/off.
    Update {
        name: String,
        #[arg(long)]
        max_attempts: Option<u32>,
        #[arg(long)]
        fifo: Option<bool>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum MessageCmd {
    /// A message by its message id.
    Get {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        id: String,
    },
    /// Messages carrying a key.
    Query {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 32)]
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

fn topic_json(t: &admin::Topic) -> Value {
    json!({ "name": t.name, "queues": t.queues, "type": type_name(t.message_type), "perm": perm_name(t.permission), "pending_timers": t.pending_timers, "half_messages": t.half_messages })
}

fn cluster_json(g: &admin::ClusterGroup) -> Value {
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

fn message_json(m: &admin::StoredMessage) -> Value {
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
struct Printable {
    value: Value,
    columns: Vec<&'static str>,
    rows: Vec<Value>,
}

impl Printable {
    /// One object: a table of one row.
    fn one(v: Value, columns: Vec<&'static str>) -> Printable {
        Printable {
            value: v.clone(),
            columns,
            rows: vec![v],
        }
    }

    /// A list of objects: a table of one row each.
    fn list(rows: Vec<Value>, columns: Vec<&'static str>) -> Printable {
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

fn endpoint(server: &str) -> String {
    if server.starts_with("http://") || server.starts_with("https://") {
        server.to_string()
    } else {
        format!("http://{server}")
    }
}

/// `cluster drain` / `cluster undrain`: sets the state and reports what is left to consume.
async fn set_state(
    c: &mut AdminClient<tonic::transport::Channel>,
    group: String,
    state: &str,
) -> anyhow::Result<Printable> {
    let g = c
        .set_group_state(admin::SetGroupStateRequest {
            group,
            state: state.into(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
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
    let mut c = AdminClient::connect(endpoint(&args.server))
        .await
        .with_context(|| format!("cannot connect to {}", args.server))?;
    let fmt = args.output;
    let status = |s: tonic::Status| anyhow::anyhow!("{}", s.message());
    let p = match args.cmd {
        AdminCmd::Topic(TopicCmd::Create {
            name,
            message_type,
            queues,
            perm,
        }) => {
            let t = admin::Topic {
                name,
                queues,
                message_type: type_arg(message_type) as i32,
                permission: perm_arg(perm) as i32,
                ..Default::default()
            };
            let t = c
                .create_topic(admin::CreateTopicRequest { topic: Some(t) })
                .await
                .map_err(status)?
                .into_inner();
            let v = topic_json(&t);
            Printable::one(v, vec!["name", "type", "queues", "perm"])
        }
        AdminCmd::Topic(TopicCmd::Update {
            name,
            message_type,
            queues,
            perm,
        }) => {
            if message_type.is_none() && queues.is_none() && perm.is_none() {
                bail!("nothing to update: give --type, --queues or --perm");
            }
            let t = admin::Topic {
                name,
                queues: queues.unwrap_or(0),
                message_type: message_type.map_or(TopicType::Unspecified, type_arg) as i32,
                permission: perm.map_or(TopicPermission::Unspecified, perm_arg) as i32,
                ..Default::default()
            };
            let t = c
                .update_topic(admin::UpdateTopicRequest { topic: Some(t) })
                .await
                .map_err(status)?
                .into_inner();
            let v = topic_json(&t);
            Printable::one(v, vec!["name", "type", "queues", "perm"])
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
        AdminCmd::Cluster(ClusterCmd::Drain { group }) => {
            set_state(&mut c, group, "read-only").await?
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
    };
    print(p, fmt)
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
