//! Messages between the remoting protocol and the engine: a send's header, properties and body
//! become a [`Publication`], and a stored message becomes the stored-message encoding 4.x
//! clients decode.
//!
//! ## Properties
//! The remoting protocol carries everything in one properties string. FerroMQ splits it:
//! - `UNIQ_KEY`, `TAGS`, `KEYS` are the message id, tag and keys (the store indexes them under
//!   the same names, and the RocketMQ 5 protocol shows them as its own fields);
//! - `DELAY` (a delay level), `TIMER_DELIVER_MS`, `TIMER_DELAY_SEC`, `TIMER_DELAY_MS` become the
//!   delivery time, `TRAN_MSG` the transaction type, `__SHARDINGKEY` the FIFO message group,
//!   `TRACE_CONTEXT` the trace context, `CHECK_IMMUNITY_TIME_IN_SECONDS` the wait before the
//!   first transaction check;
//! - RocketMQ's other system properties (`PGROUP`, `RETRY_TOPIC`, `REAL_TOPIC`, `WAIT`, ...)
//!   are kept under `__FM_RMQ_<name>`: internal to FerroMQ, so RocketMQ 5 consumers do not see
//!   them as user properties, and restored for remoting consumers;
//! - the rest are user properties, checked like the RocketMQ 5 protocol's.
//!
//! Going out, the engine's own fields come back under RocketMQ's names: the message group as
//! `__SHARDINGKEY`, the trace context as `TRACE_CONTEXT`, a retry copy's origin as
//! `RETRY_TOPIC`, a dead letter's origin as `DLQ_ORIGIN_TOPIC`. So a message keeps its id, tag,
//! keys and properties whichever protocol sent it and whichever reads it.
//!
//! ## Bodies
//! 4.x clients zlib-compress bodies over 4 KiB and say so in the sys flag. FerroMQ stores the
//! body decompressed (at most `max-body-size`, so a small compressed body cannot expand into a
//! large one), so RocketMQ 5 consumers and remoting consumers read the same bytes, and delivers
//! it uncompressed (4.x clients accept either).
//!
//! ## Offsets
//! Remoting clients name messages by commit log offset (send-back, end-transaction, offset
//! message ids). A broker in a cluster puts its group's 7-bit tag in the top byte of every
//! offset it shows ([`Offsets`]), so a proxy can tell whose message an offset id names;
//! standalone's tag is 0 and its offsets are the commit log's own.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferromq_engine::props;
use ferromq_engine::time::{now_ms, WallTime};
use ferromq_engine::Publication;
use ferromq_remoting::code::response;
use ferromq_remoting::message::{self as wire, property, sys_flag};
use ferromq_store::{MessageType, RecordView, StoredMessage};

use super::status::RemotingError;
use crate::validate;

/// Prefix under which RocketMQ system properties without an engine field are stored.
pub const RMQ_PREFIX: &str = "__FM_RMQ_";

/// RocketMQ's default delay levels (`messageDelayLevel`): level `n` waits `LEVELS[n - 1]`.
pub const DELAY_LEVELS: [Duration; 18] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(120),
    Duration::from_secs(180),
    Duration::from_secs(240),
    Duration::from_secs(300),
    Duration::from_secs(360),
    Duration::from_secs(420),
    Duration::from_secs(480),
    Duration::from_secs(540),
    Duration::from_secs(600),
    Duration::from_secs(1200),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
    Duration::from_secs(7200),
];

/// The wait of a delay level; levels above the table wait as long as its last (as RocketMQ).
pub fn delay_of_level(level: i32) -> Option<Duration> {
    if level <= 0 {
        return None;
    }
    let i = (level as usize).min(DELAY_LEVELS.len()) - 1;
    Some(DELAY_LEVELS[i])
}

/// RocketMQ system properties (`MessageConst`'s reserved names) that are not user properties.
/// Those FerroMQ maps to fields of its own are handled before this list is consulted.
const SYSTEM_PROPERTIES: &[&str] = &[
    "TRACE_ON",
    "MSG_REGION",
    "WAIT",
    "RETRY_TOPIC",
    "REAL_TOPIC",
    "REAL_QID",
    "PGROUP",
    "MIN_OFFSET",
    "MAX_OFFSET",
    "BUYER_ID",
    "ORIGIN_MESSAGE_ID",
    "TRANSFER_FLAG",
    "CORRECTION_FLAG",
    "MQ2_FLAG",
    "RECONSUME_TIME",
    "MAX_RECONSUME_TIMES",
    "CONSUME_START_TIME",
    "TRAN_PREPARED_QUEUE_OFFSET",
    "TRANSACTION_CHECK_TIMES",
    "INSTANCE_ID",
    "CORRELATION_ID",
    "REPLY_TO_CLIENT",
    "TTL",
    "ARRIVE_TIME",
    "PUSH_REPLY_TIME",
    "CLUSTER",
    "MSG_TYPE",
    "INNER_MULTI_DISPATCH",
    "INNER_MULTI_QUEUE_OFFSET",
    "__transactionId__",
    "BORNHOST",
    "INNER_NUM",
    "INNER_BASE",
    "DLQ_ORIGIN_TOPIC",
    "DLQ_ORIGIN_MESSAGE_ID",
    "__STARTDELIVERTIME",
    "TIMER_OUT_MS",
    "TIMER_ENQUEUE_MS",
    "TIMER_DEQUEUE_MS",
    "TIMER_ROLL_TIMES",
    "TIMER_DEL_UNIQKEY",
    "TIMER_DELAY_LEVEL",
    "__RECALL_HANDLE",
    "PROBE",
    "UNIQ_KEY",
    "TAGS",
    "KEYS",
];

/// How a broker shows commit log offsets to remoting clients (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offsets {
    /// 0 for standalone, 1..=127 for a broker group.
    pub tag: u8,
}

/// Bits of a shown offset that hold the commit log offset.
const OFFSET_MASK: u64 = (1 << 56) - 1;

impl Offsets {
    /// The tag of broker group `group`: a stable hash, so every proxy computes the same one.
    pub fn for_group(group: &str) -> Offsets {
        let mut h: u32 = 0x811c_9dc5;
        for b in group.as_bytes() {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
        Offsets {
            tag: 1 + (h % 127) as u8,
        }
    }

    /// The offset a client sees for commit log offset `phys`.
    pub fn show(self, phys: u64) -> i64 {
        ((u64::from(self.tag) << 56) | (phys & OFFSET_MASK)) as i64
    }

    /// The commit log offset of an offset a client sent back; `None` when it is not one this
    /// broker showed.
    pub fn read(self, shown: i64) -> Option<u64> {
        let v = u64::try_from(shown).ok()?;
        (tag_of(shown) == Some(self.tag)).then_some(v & OFFSET_MASK)
    }
}

/// The broker tag inside a shown offset.
pub fn tag_of(shown: i64) -> Option<u8> {
    u64::try_from(shown).ok().map(|v| (v >> 56) as u8)
}

/// A send's parameters, whichever of the three send codes carried them.
#[derive(Debug, Clone, Default)]
pub struct SendParams {
    pub topic: String,
    pub queue_id: i32,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub flag: i32,
    pub properties: BTreeMap<String, String>,
    /// A slice of the request's frame (shared, not copied), a single send's or a batch
    /// entry's alike; a compressed one is decompressed anew.
    pub body: Bytes,
}

/// A message id for a sent message that carries none (UNIQ_KEY is optional on the wire).
fn generated_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "FE{:014X}{:016X}",
        now_ms() as u64 & 0xFF_FFFF_FFFF_FFFF,
        (u64::from(std::process::id()) << 40) | (n & 0xFF_FFFF_FFFF)
    )
}

/// Decompresses a 4.x client's body, refusing one that expands beyond `max`.
fn plain_body(sys_flag: i32, body: Bytes, max: usize) -> Result<Bytes, RemotingError> {
    if sys_flag & sys_flag::COMPRESSED == 0 {
        return Ok(body);
    }
    let kind = (sys_flag & sys_flag::COMPRESSION_TYPE_MASK) >> 8;
    if kind != 0 && kind != 3 {
        return Err(RemotingError::new(
            response::MESSAGE_ILLEGAL,
            format!("compression type {kind} is not supported (only zlib)"),
        ));
    }
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(&body[..])
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            RemotingError::new(
                response::MESSAGE_ILLEGAL,
                format!("body does not decompress: {e}"),
            )
        })?;
    if out.len() > max {
        return Err(RemotingError::new(
            response::MESSAGE_ILLEGAL,
            format!("message body decompresses to over the limit of {max} bytes"),
        ));
    }
    Ok(out.into())
}

fn parse_ms(props: &BTreeMap<String, String>, key: &str) -> Result<Option<i64>, RemotingError> {
    match props.get(key) {
        None => Ok(None),
        Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
            RemotingError::new(
                response::MESSAGE_ILLEGAL,
                format!("property {key}={v:?} is not a number"),
            )
        }),
    }
}

/// Turns a remoting send into the engine's publication (see the module docs).
pub fn publication(
    p: SendParams,
    born_host: &str,
    producer: Option<String>,
    max_body: usize,
) -> Result<Publication, RemotingError> {
    let topic = validate::topic(&p.topic)?.to_string();
    let mut props = p.properties;
    let message_id = props
        .remove(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(generated_id);
    let tag = props.remove(property::TAGS).filter(|t| !t.is_empty());
    let keys: Vec<String> = props
        .remove(property::KEYS)
        .map(|k| {
            k.split(property::KEY_SEPARATOR)
                .filter(|s| !s.trim().is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let now = now_ms();
    let mut deliver_at: Option<i64> = None;
    if let Some(level) = props.remove(property::DELAY_TIME_LEVEL) {
        let level: i32 = level.trim().parse().map_err(|_| {
            RemotingError::new(
                response::MESSAGE_ILLEGAL,
                format!("delay level {level:?} is not a number"),
            )
        })?;
        deliver_at = delay_of_level(level).map(|d| now + d.as_millis() as i64);
    }
    if let Some(at) = parse_ms(&props, property::TIMER_DELIVER_MS)? {
        deliver_at = Some(at);
    }
    if let Some(s) = parse_ms(&props, property::TIMER_DELAY_SEC)? {
        deliver_at = Some(now + s.saturating_mul(1000));
    }
    if let Some(ms) = parse_ms(&props, "TIMER_DELAY_MS")? {
        deliver_at = Some(now + ms);
    }
    for k in [
        property::TIMER_DELIVER_MS,
        property::TIMER_DELAY_SEC,
        "TIMER_DELAY_MS",
    ] {
        props.remove(k);
    }
    let prepared = props
        .remove(property::TRANSACTION_PREPARED)
        .is_some_and(|v| v == "true")
        || p.sys_flag & sys_flag::TRANSACTION_MASK == sys_flag::TRANSACTION_PREPARED;
    let transaction_recovery = props
        .remove(property::CHECK_IMMUNITY_TIME_IN_SECONDS)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let message_group = props
        .remove(property::SHARDING_KEY)
        .filter(|g| !g.is_empty());
    let trace_context = props.remove(property::TRACE_CONTEXT);
    let mut user = BTreeMap::new();
    let mut system = BTreeMap::new();
    for (k, v) in props {
        if SYSTEM_PROPERTIES.contains(&k.as_str()) {
            system.insert(format!("{RMQ_PREFIX}{k}"), v);
        } else {
            user.insert(k, v);
        }
    }
    let body = plain_body(p.sys_flag, p.body, max_body)?;
    let fields = validate::message_fields(
        &validate::MessageFields {
            message_id: &message_id,
            body_len: body.len(),
            tag: tag.as_deref(),
            keys: &keys,
            properties: user.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            message_group: message_group.as_deref(),
        },
        max_body,
    )?;
    let message_type = if prepared {
        MessageType::Transaction
    } else if deliver_at.is_some() {
        MessageType::Delay
    } else if fields.message_group.is_some() {
        MessageType::Fifo
    } else {
        MessageType::Normal
    };
    user.extend(system);
    Ok(Publication {
        topic,
        queue_id: u32::try_from(p.queue_id).ok(),
        message_type,
        message_id,
        tag,
        keys,
        message_group,
        delivery_time: deliver_at.map(|ms| WallTime {
            seconds: ms.div_euclid(1000),
            nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
        }),
        priority: None,
        transaction_recovery,
        producer,
        born_timestamp_ms: p.born_timestamp,
        born_host: born_host.to_string(),
        trace_context,
        user_properties: user,
        body,
    })
}

/// A stored message's properties as remoting clients know them (see the module docs).
pub fn wire_properties(m: &StoredMessage) -> BTreeMap<String, String> {
    wire_property_pairs(m)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// [`wire_properties`] borrowed from `m`.
fn wire_property_pairs(m: &StoredMessage) -> Vec<(&str, &str)> {
    let stored: Vec<(&str, &str)> = m
        .properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    wire_pairs(&stored)
}

/// The properties remoting clients see, from the stored ones (`stored`, in any order), sorted by
/// name, each name once (of one stored several times, the last; of a mapped field and a
/// RocketMQ name kept for it, the mapped field).
fn wire_pairs<'a>(stored: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let get = |key: &str| {
        stored
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    };
    let mut out: Vec<(&str, &str)> = Vec::with_capacity(stored.len() + 1);
    for &(k, v) in stored {
        if let Some(name) = k.strip_prefix(RMQ_PREFIX) {
            out.push((name, v));
        } else if !k.starts_with(props::INTERNAL_PREFIX) {
            out.push((k, v));
        }
    }
    for (name, key) in [
        (property::SHARDING_KEY, props::MESSAGE_GROUP),
        (property::TRACE_CONTEXT, props::TRACE_CONTEXT),
        (property::RETRY_TOPIC, props::RETRY_ORIGIN_TOPIC),
        (property::DLQ_ORIGIN_TOPIC, props::DLQ_ORIGIN_TOPIC),
    ] {
        if let Some(v) = get(key) {
            out.push((name, v));
        }
    }
    if get(props::DLQ_ORIGIN_TOPIC).is_some() {
        if let Some(id) = get(ferromq_store::PROP_MSG_ID) {
            out.push((property::DLQ_ORIGIN_MESSAGE_ID, id));
        }
    }
    // Stable: of equal names, the one pushed last stays last, and is the one kept.
    out.sort_by(|a, b| a.0.cmp(b.0));
    let mut kept: Vec<(&str, &str)> = Vec::with_capacity(out.len());
    for p in out {
        match kept.last_mut() {
            Some(last) if last.0 == p.0 => *last = p,
            _ => kept.push(p),
        }
    }
    kept
}

/// The properties text of `pairs`, written into `text` (cleared first).
fn write_wire_properties<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    text: &mut String,
) {
    text.clear();
    for (k, v) in pairs {
        text.push_str(k);
        text.push(wire::NAME_VALUE_SEPARATOR);
        text.push_str(v);
        text.push(wire::PROPERTY_SEPARATOR);
    }
}

/// A stored message in the remoting encoding, as a connection presenting the broker at
/// `store_host` with `offsets` shows it.
pub fn to_wire(m: &StoredMessage, store_host: SocketAddr, offsets: Offsets) -> wire::StoredMessage {
    let mut w = header_fields(m, store_host, offsets);
    w.body = bytes::Bytes::copy_from_slice(&m.body);
    w.topic = m.topic.clone();
    w.properties = wire_properties(m);
    w
}

/// [`to_wire`]'s fixed fields only (no body, topic or properties): for a caller that moves
/// or writes those itself.
fn header_fields(
    m: &StoredMessage,
    store_host: SocketAddr,
    offsets: Offsets,
) -> wire::StoredMessage {
    wire::StoredMessage {
        queue_id: m.queue_id as i32,
        flag: m.flags as i32,
        queue_offset: m.queue_offset as i64,
        commit_log_offset: offsets.show(m.phys_offset),
        sys_flag: 0,
        born_timestamp: m.born_timestamp_ms,
        born_host: m
            .born_host
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        store_timestamp: m.store_timestamp_ms,
        store_host,
        reconsume_times: m.reconsume_times as i32,
        prepared_transaction_offset: 0,
        body: bytes::Bytes::new(),
        topic: String::new(),
        properties: BTreeMap::new(),
    }
}

/// Messages in the remoting encoding, one after another (pull, query and view bodies). A
/// message that cannot be encoded (properties over 32 KiB) is left out and logged.
pub fn encode_all<'a>(
    ms: impl IntoIterator<Item = &'a StoredMessage>,
    store_host: SocketAddr,
    offsets: Offsets,
) -> Vec<u8> {
    let mut out = Vec::new();
    for m in ms {
        if let Err(e) = to_wire(m, store_host, offsets).encode_into(&mut out) {
            tracing::warn!(topic = %m.topic, offset = m.queue_offset, error = %e, "message cannot be encoded for remoting clients; left out");
        }
    }
    out
}

/// Writes a pull's answer straight from the stored records read in place (see
/// [`ferromq_store::Store::read_each`]): the same bytes as [`encode_all`] of the messages, with
/// no copy of a record made first.
pub struct PullWriter {
    store_host: SocketAddr,
    offsets: Offsets,
    /// The properties text of the record being written (reused).
    text: String,
    pub out: Vec<u8>,
}

impl PullWriter {
    pub fn new(store_host: SocketAddr, offsets: Offsets, capacity: usize) -> PullWriter {
        PullWriter {
            store_host,
            offsets,
            text: String::new(),
            out: Vec::with_capacity(capacity),
        }
    }

    /// Appends one record; one that cannot be encoded (properties over 32 KiB) is left out and
    /// logged, as [`encode_all`] does.
    pub fn push(&mut self, v: &RecordView<'_>) {
        let stored: Vec<(&str, &str)> = v.properties().collect();
        write_wire_properties(wire_pairs(&stored), &mut self.text);
        let w = wire::StoredMessage {
            queue_id: v.queue_id() as i32,
            flag: v.flags() as i32,
            queue_offset: v.queue_offset() as i64,
            commit_log_offset: self.offsets.show(v.phys_offset()),
            born_timestamp: v.born_timestamp_ms(),
            born_host: v
                .born_host()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            store_timestamp: v.store_timestamp_ms(),
            store_host: self.store_host,
            reconsume_times: v.reconsume_times() as i32,
            ..Default::default()
        };
        if let Err(e) = w.encode_parts(v.topic(), v.body(), &self.text, &mut self.out) {
            tracing::warn!(topic = %v.topic(), offset = v.queue_offset(), error = %e, "message cannot be encoded for remoting clients; left out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferromq_store::record;

    fn params(props: &[(&str, &str)]) -> SendParams {
        SendParams {
            topic: "t".into(),
            queue_id: 1,
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: b"hello".to_vec().into(),
            born_timestamp: 5,
            ..Default::default()
        }
    }

    #[test]
    fn system_fields_become_engine_fields_and_the_rest_survive() {
        let p = publication(
            params(&[
                ("UNIQ_KEY", "AB01"),
                ("TAGS", "TagA"),
                ("KEYS", "k1 k2"),
                ("WAIT", "true"),
                ("PGROUP", "pg"),
                ("color", "ünï"),
            ]),
            "127.0.0.1:5555",
            Some("client-1".into()),
            1024,
        )
        .unwrap();
        assert_eq!(p.message_id, "AB01");
        assert_eq!(p.tag.as_deref(), Some("TagA"));
        assert_eq!(p.keys, vec!["k1", "k2"]);
        assert_eq!(p.message_type, MessageType::Normal);
        assert_eq!(p.queue_id, Some(1));
        assert_eq!(
            p.user_properties.get("color").map(String::as_str),
            Some("ünï")
        );
        assert_eq!(
            p.user_properties.get("__FM_RMQ_PGROUP").map(String::as_str),
            Some("pg")
        );
        assert!(!p.user_properties.contains_key("WAIT"));
    }

    #[test]
    fn delay_levels_transactions_and_sharding_keys_set_the_type() {
        let d = publication(params(&[("DELAY", "2")]), "", None, 1024).unwrap();
        assert_eq!(d.message_type, MessageType::Delay);
        let due = d.delivery_time.unwrap().floor_ms();
        assert!((due - now_ms() - 5_000).abs() < 1_000, "level 2 is 5 s");
        let t = publication(params(&[("TRAN_MSG", "true")]), "", None, 1024).unwrap();
        assert_eq!(t.message_type, MessageType::Transaction);
        let f = publication(params(&[("__SHARDINGKEY", "order-1")]), "", None, 1024).unwrap();
        assert_eq!(f.message_type, MessageType::Fifo);
        assert_eq!(f.message_group.as_deref(), Some("order-1"));
        assert_eq!(delay_of_level(99), Some(Duration::from_secs(7200)));
        assert_eq!(delay_of_level(0), None);
    }

    #[test]
    fn compressed_bodies_are_stored_plain_and_bombs_refused() {
        use flate2::write::ZlibEncoder;
        use std::io::Write;
        let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&[b'x'; 4000]).unwrap();
        let mut p = params(&[]);
        p.body = z.finish().unwrap().into();
        p.sys_flag = sys_flag::COMPRESSED;
        let ok = publication(p.clone(), "", None, 4096).unwrap();
        assert_eq!(ok.body, vec![b'x'; 4000]);
        let err = publication(p, "", None, 1000).unwrap_err();
        assert_eq!(err.code, response::MESSAGE_ILLEGAL);
    }

    #[test]
    fn bad_fields_are_refused_with_message_illegal() {
        let mut p = params(&[]);
        p.body.clear();
        assert_eq!(
            publication(p, "", None, 10).unwrap_err().code,
            response::MESSAGE_ILLEGAL
        );
        let mut p = params(&[]);
        p.topic = "bad topic".into();
        assert_eq!(
            publication(p, "", None, 10).unwrap_err().code,
            response::INVALID_PARAMETER
        );
    }

    #[test]
    fn stored_messages_show_rocketmq_names_and_hide_internal_ones() {
        let mut properties = BTreeMap::new();
        properties.insert("UNIQ_KEY".to_string(), "ID1".to_string());
        properties.insert("__FM_RMQ_PGROUP".to_string(), "pg".to_string());
        properties.insert(props::MESSAGE_TYPE.to_string(), "1".to_string());
        properties.insert(props::RETRY_ORIGIN_TOPIC.to_string(), "orders".to_string());
        properties.insert("color".to_string(), "red".to_string());
        let m = StoredMessage {
            topic: "%RETRY%g".into(),
            queue_id: 0,
            queue_offset: 3,
            phys_offset: 1234,
            size: 0,
            born_timestamp_ms: 1,
            store_timestamp_ms: 2,
            born_host: None,
            store_host: None,
            flags: 7,
            reconsume_times: 1,
            properties,
            body: b"b".to_vec(),
        };
        let w = to_wire(
            &m,
            "127.0.0.1:9876".parse().unwrap(),
            Offsets::for_group("g1"),
        );
        assert_eq!(w.properties.get("PGROUP").map(String::as_str), Some("pg"));
        assert_eq!(
            w.properties.get("RETRY_TOPIC").map(String::as_str),
            Some("orders")
        );
        assert!(!w.properties.keys().any(|k| k.starts_with("__FM_")));
        assert_eq!(w.reconsume_times, 1);
        assert_eq!(w.flag, 7);
        let tag = Offsets::for_group("g1");
        assert_eq!(tag.read(w.commit_log_offset), Some(1234));
        assert_eq!(Offsets::default().read(w.commit_log_offset), None);
        assert_eq!(tag_of(w.commit_log_offset), Some(tag.tag));
        assert!(w.commit_log_offset > 0, "shown offsets stay positive");
        // A pull's answer moves the bodies in: the same bytes as encoding from borrowed ones.
        let host = "127.0.0.1:9876".parse().unwrap();
        let mut other = m.clone();
        other.body = vec![9u8; 3000];
        other.queue_offset = 8;
        // A RocketMQ name stored both ways: the mapped field is set last and wins, as in the map.
        other.properties.insert(
            format!("{RMQ_PREFIX}{}", property::SHARDING_KEY),
            "stale".into(),
        );
        other
            .properties
            .insert(props::MESSAGE_GROUP.to_string(), "grp".into());
        assert_eq!(
            wire_properties(&other)
                .get(property::SHARDING_KEY)
                .map(String::as_str),
            Some("grp")
        );
        let borrowed = encode_all([&m, &other], host, tag);
        // A pull's answer, written from the records read in place: the same bytes.
        let mut pull = PullWriter::new(host, tag, 0);
        for sm in [&m, &other] {
            let nm = ferromq_store::NewMessage {
                topic: sm.topic.clone(),
                queue_id: sm.queue_id,
                born_timestamp_ms: sm.born_timestamp_ms,
                born_host: sm.born_host,
                flags: sm.flags,
                reconsume_times: sm.reconsume_times,
                properties: sm.properties.clone(),
                body: sm.body.clone().into(),
            };
            let mut rec = vec![0u8; record::encoded_len(&nm).unwrap()];
            record::encode(&nm, None, &mut rec).unwrap();
            record::seal(
                &mut rec,
                sm.queue_offset,
                sm.phys_offset,
                sm.store_timestamp_ms,
            );
            pull.push(&record::view(&rec, sm.phys_offset).unwrap());
        }
        assert_eq!(pull.out, borrowed);
        let back = wire::StoredMessage::decode_all(&borrowed, true).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(&back[1].body[..], &[9u8; 3000][..]);
    }
}
