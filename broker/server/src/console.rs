//! `ferromq send` and `ferromq consume`: the console producer and consumer, the way Kafka's
//! `kafka-console-producer` / `kafka-console-consumer` work, speaking the RocketMQ 5 protocol to
//! a standalone server or a proxy like any official client.
//!
//! `send` sends `--body`, or each line of standard input as one message, and prints each
//! message id on stdout. `consume` receives as a consumer group (simple-consumer style:
//! receive, then ack), prints each message (the body, or one JSON object per line), and
//! acknowledges a message only once it was written out: a consumer killed or cut off by a closed
//! pipe leaves the rest to be delivered again.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use ferromq_proto::v2::{self, Code};
use serde_json::json;

use crate::credentials::CredentialArgs;
use crate::dial::{now_ms, resource, Messaging};

/// What both commands need to reach the server.
#[derive(Debug, clap::Args)]
pub struct Connection {
    /// gRPC address of a FerroMQ standalone server or proxy (host:port, or https://host:port
    /// for TLS).
    #[arg(long, env = "FERROMQ_SERVER", default_value = "127.0.0.1:8081")]
    pub server: String,
    #[command(flatten)]
    pub tls: crate::dial::ServerTls,
    /// Topic to send to or consume from.
    #[arg(long, short = 't', value_parser = crate::cli::topic_name)]
    pub topic: String,
    #[command(flatten)]
    pub credentials: CredentialArgs,
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// Send this one message instead of reading standard input.
    #[arg(long)]
    pub body: Option<String>,
    /// Tag of every message (consumers can filter on it).
    #[arg(long)]
    pub tag: Option<String>,
    /// Key of every message (indexed: `ferromq admin message query --key`); repeatable.
    #[arg(long = "key")]
    pub keys: Vec<String>,
    /// Read each line as KEY<SEP>BODY and send KEY as the message's key.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A user property `name=value` of every message; repeatable.
    #[arg(long = "property", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
    /// FIFO message group (the topic must be a FIFO topic): messages of one group are
    /// delivered in order.
    #[arg(long)]
    pub message_group: Option<String>,
    /// Deliver this long after sending (`30s`, `5m`; the topic must be a DELAY topic).
    #[arg(long, value_parser = crate::config::duration)]
    pub delay: Option<Duration>,
    /// Priority of every message (the topic must be a PRIORITY topic; higher first).
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    pub priority: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The body only, one message per line.
    Body,
    /// One JSON object per line: ids, queue, offset, tag, keys, properties, times, body.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// Consumer group to receive as. A group new to the topic starts at the oldest message
    /// still stored; a known one continues where it was.
    #[arg(long, short = 'g', default_value = "ferromq-console", value_parser = crate::cli::group_name)]
    pub group: String,
    /// Tag expression to filter on (`TagA || TagB`, or `*` for everything).
    #[arg(long, default_value = "*")]
    pub tag: String,
    /// How each message is printed.
    #[arg(long, short = 'f', value_enum, default_value = "body")]
    pub format: Format,
    /// Exit after printing this many messages.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_messages: Option<u64>,
    /// Exit when no message arrived for this long (`10s`, `500ms`) [default: wait forever].
    #[arg(long, value_parser = positive_duration)]
    pub timeout: Option<Duration>,
    /// How long a received message stays invisible to the group before it is delivered again
    /// if this consumer does not get to acknowledge it.
    #[arg(long, default_value = "30s", value_parser = invisible_duration)]
    pub invisible: Duration,
}

/// `name=value`.
fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not name=value")),
    }
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match crate::config::duration(s)? {
        d if d.is_zero() => Err(format!("{s:?} is zero; give a positive duration")),
        d => Ok(d),
    }
}

/// What the server accepts as an invisible duration: 1 s to 12 h.
fn invisible_duration(s: &str) -> Result<Duration, String> {
    match crate::config::duration(s)? {
        d if d < Duration::from_secs(1) || d > Duration::from_secs(12 * 3600) => {
            Err(format!("{s:?} is not within 1s..=12h"))
        }
        d => Ok(d),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "ferromq-console".into())
}

fn status_ok(s: Option<&v2::Status>) -> Result<(), anyhow::Error> {
    match s {
        Some(s) if s.code == Code::Ok as i32 => Ok(()),
        Some(s) => Err(anyhow!(
            "{} ({})",
            s.message,
            Code::try_from(s.code).map_or(s.code.to_string(), |c| c.as_str_name().to_string())
        )),
        None => Err(anyhow!("the server answered without a status")),
    }
}

/// A message id unique to this process and message: the pid, the time and a counter, in hex
/// (the shape of the ids official clients make, which the server only needs to be unique).
fn message_id(seq: u64) -> String {
    format!(
        "FC{:08X}{:012X}{:08X}",
        std::process::id(),
        now_ms() as u64 & 0xFFFF_FFFF_FFFF,
        seq
    )
}

impl SendArgs {
    fn message_type(&self) -> anyhow::Result<v2::MessageType> {
        let kinds = [
            (self.message_group.is_some(), v2::MessageType::Fifo),
            (self.delay.is_some(), v2::MessageType::Delay),
            (self.priority.is_some(), v2::MessageType::Priority),
        ];
        let mut chosen = kinds.iter().filter(|(on, _)| *on).map(|(_, t)| *t);
        let t = chosen.next().unwrap_or(v2::MessageType::Normal);
        if chosen.next().is_some() {
            bail!("--message-group, --delay and --priority each choose a message type; give at most one");
        }
        Ok(t)
    }

    fn message(&self, seq: u64, key: Option<String>, body: Vec<u8>) -> anyhow::Result<v2::Message> {
        let mut keys = self.keys.clone();
        keys.extend(key);
        Ok(v2::Message {
            topic: resource(&self.conn.topic),
            user_properties: self.properties.iter().cloned().collect::<HashMap<_, _>>(),
            system_properties: Some(v2::SystemProperties {
                tag: self.tag.clone(),
                keys,
                message_id: message_id(seq),
                message_type: self.message_type()? as i32,
                body_encoding: v2::Encoding::Identity as i32,
                born_timestamp: Some(crate::convert::timestamp_from_ms(now_ms())),
                born_host: host_name(),
                message_group: self.message_group.clone(),
                delivery_timestamp: self
                    .delay
                    .map(|d| crate::convert::timestamp_from_ms(now_ms() + d.as_millis() as i64)),
                priority: self.priority,
                ..Default::default()
            }),
            body: body.into(),
        })
    }
}

/// `ferromq send`.
pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    args.message_type()?;
    let mut client = crate::dial::messaging(
        &args.conn.server,
        &args.conn.tls,
        "ferromq-send",
        0,
        &args.conn.credentials,
    )
    .await?;
    let lines: Box<dyn Iterator<Item = std::io::Result<String>>> = match &args.body {
        Some(b) => Box::new(std::iter::once(Ok(b.clone()))),
        None => Box::new(std::io::stdin().lock().lines()),
    };
    let mut sent = 0u64;
    let mut out = std::io::stdout().lock();
    for line in lines {
        let line = line.context("cannot read standard input")?;
        let (key, body) = match args
            .key_separator
            .as_deref()
            .and_then(|sep| line.split_once(sep))
        {
            Some((k, b)) => (Some(k.to_string()), b.to_string()),
            None => (None, line),
        };
        let id = send_one(&mut client, args.message(sent, key, body.into_bytes())?).await?;
        sent += 1;
        writeln!(out, "{id}")?;
    }
    out.flush()?;
    eprintln!("sent {sent} message(s) to {}", args.conn.topic);
    Ok(())
}

/// Sends one message; its id once the server stored it.
async fn send_one(client: &mut Messaging, m: v2::Message) -> anyhow::Result<String> {
    let r = client
        .send_message(v2::SendMessageRequest { messages: vec![m] })
        .await
        .map_err(|s| anyhow!("send failed: {}", s.message()))?
        .into_inner();
    status_ok(r.status.as_ref()).context("send refused")?;
    let e = r
        .entries
        .first()
        .ok_or_else(|| anyhow!("the server answered no entry for the message"))?;
    status_ok(e.status.as_ref()).context("send refused")?;
    Ok(e.message_id.clone())
}

/// `ferromq consume`.
pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut client = crate::dial::messaging(
        &args.conn.server,
        &args.conn.tls,
        "ferromq-consume",
        0,
        &args.conn.credentials,
    )
    .await?;
    let (topic, group) = (args.conn.topic.clone(), args.group.clone());
    // Shows the consumer online in `admin group list` while it runs.
    let hb = client
        .heartbeat(v2::HeartbeatRequest {
            group: resource(&group),
            client_type: v2::ClientType::SimpleConsumer as i32,
        })
        .await
        .map_err(|s| anyhow!("heartbeat failed: {}", s.message()))?
        .into_inner();
    status_ok(hb.status.as_ref()).context("heartbeat refused")?;
    let mut receiver = client.clone();
    let mut n = 0u64;
    let result = tokio::select! {
        r = consume_loop(&mut receiver, &args, &mut n) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    // Tells the server this consumer is gone (so `admin group delete` need not wait for it).
    let _ = client
        .notify_client_termination(v2::NotifyClientTerminationRequest {
            group: resource(&group),
        })
        .await;
    result?;
    eprintln!("consumed {n} message(s) from {topic} as {group}");
    Ok(())
}

/// Receives, prints and acks until `--max-messages` or `--timeout`, counting what it printed.
async fn consume_loop(
    client: &mut Messaging,
    args: &ConsumeArgs,
    printed: &mut u64,
) -> anyhow::Result<()> {
    let (topic, group) = (&args.conn.topic, &args.group);
    let mut last_message = Instant::now();
    let mut out = std::io::stdout();
    let filter = v2::FilterExpression {
        r#type: v2::FilterType::Tag as i32,
        expression: args.tag.clone(),
    };
    loop {
        let left = args.max_messages.map(|m| m - *printed);
        if left == Some(0) {
            return Ok(());
        }
        let poll = match args.timeout {
            Some(t) => {
                let remaining = t.saturating_sub(last_message.elapsed());
                if remaining.is_zero() {
                    return Ok(());
                }
                remaining.min(Duration::from_secs(20))
            }
            None => Duration::from_secs(20),
        };
        let req = v2::ReceiveMessageRequest {
            group: resource(group),
            message_queue: Some(v2::MessageQueue {
                topic: resource(topic),
                id: -1,
                ..Default::default()
            }),
            filter_expression: Some(filter.clone()),
            batch_size: left.map_or(32, |l| l.min(32) as i32),
            invisible_duration: Some(proto_duration(args.invisible)),
            auto_renew: false,
            long_polling_timeout: Some(proto_duration(poll)),
            attempt_id: None,
        };
        let mut stream = client
            .receive_message(req)
            .await
            .map_err(|s| anyhow!("receive failed: {}", s.message()))?
            .into_inner();
        let mut batch = Vec::new();
        while let Some(item) = stream
            .message()
            .await
            .map_err(|s| anyhow!("receive failed: {}", s.message()))?
        {
            match item.content {
                Some(v2::receive_message_response::Content::Message(m)) => batch.push(m),
                Some(v2::receive_message_response::Content::Status(s))
                    if s.code != Code::Ok as i32 && s.code != Code::MessageNotFound as i32 =>
                {
                    status_ok(Some(&s)).context("receive refused")?;
                }
                _ => {}
            }
        }
        if batch.is_empty() {
            continue;
        }
        last_message = Instant::now();
        let mut entries = Vec::new();
        for m in &batch {
            let line = match args.format {
                Format::Body => String::from_utf8_lossy(&m.body).into_owned(),
                Format::Json => message_json(m).to_string(),
            };
            // A closed stdout (`| head -3`) ends the run: what was not written is not acked.
            if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                ack(client, group, topic, entries).await?;
                return Ok(());
            }
            *printed += 1;
            let sp = m.system_properties.clone().unwrap_or_default();
            entries.push(v2::AckMessageEntry {
                message_id: sp.message_id,
                receipt_handle: sp.receipt_handle.unwrap_or_default(),
                lite_topic: None,
            });
        }
        ack(client, group, topic, entries).await?;
    }
}

/// Acks `entries` (none: nothing to do); an error names the refusal, the whole call's or an
/// entry's. Shared with `bench consume`.
pub(crate) async fn ack(
    client: &mut Messaging,
    group: &str,
    topic: &str,
    entries: Vec<v2::AckMessageEntry>,
) -> anyhow::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let r = client
        .ack_message(v2::AckMessageRequest {
            group: resource(group),
            topic: resource(topic),
            entries,
        })
        .await
        .map_err(|s| anyhow!("ack failed: {}", s.message()))?
        .into_inner();
    status_ok(r.status.as_ref()).context("ack refused")?;
    for e in &r.entries {
        status_ok(e.status.as_ref())
            .with_context(|| format!("ack of message {} refused", e.message_id))?;
    }
    Ok(())
}

fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A received message as one JSON object.
fn message_json(m: &v2::Message) -> serde_json::Value {
    let sp = m.system_properties.clone().unwrap_or_default();
    let ms = |t: &Option<prost_types::Timestamp>| t.as_ref().map(crate::convert::ms_from_timestamp);
    json!({
        "topic": m.topic.as_ref().map(|t| t.name.as_str()),
        "message_id": sp.message_id,
        "queue_id": sp.queue_id,
        "queue_offset": sp.queue_offset,
        "tag": sp.tag,
        "keys": sp.keys,
        "message_group": sp.message_group,
        "properties": m.user_properties,
        "delivery_attempt": sp.delivery_attempt,
        "born_host": sp.born_host,
        "born_timestamp_ms": ms(&sp.born_timestamp),
        "store_timestamp_ms": ms(&sp.store_timestamp),
        "body": String::from_utf8_lossy(&m.body),
    })
}
