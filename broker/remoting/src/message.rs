//! Message encodings of the remoting protocol.
//!
//! **Properties string**: `name \x01 value \x02` repeated (`MessageDecoder.messageProperties2String`).
//! Readers skip entries shorter than 3 characters or without a name.
//!
//! **Stored message** (`MessageDecoder.decode`; what pull, query and view-by-id bodies carry, one
//! message after another, and what a transaction check-back carries), big-endian:
//!
//! ```text
//!  0 total size      i32   whole record
//!  4 magic code      i32   0xDAA320A7 (v1: 1-byte topic length) or 0xDAA320AB (v2: 2-byte)
//!  8 body CRC        i32   CRC-32 (IEEE, java.util.zip.CRC32) of the body as stored, & 0x7FFFFFFF
//! 12 queue id        i32
//! 16 flag            i32   user flag
//! 20 queue offset    i64
//! 28 physical offset i64   commit-log offset
//! 36 sys flag        i32   see [`sys_flag`]
//! 40 born timestamp  i64   ms
//! 48 born host       4+4 (IPv4) or 16+4 (IPv6 when BORNHOST_V6)   address, port (i32)
//! .. store timestamp i64
//! .. store host      4+4 or 16+4 (STOREHOST_V6)
//! .. reconsume times i32
//! .. prepared transaction offset i64
//! .. body            i32 length + bytes (zlib-compressed when COMPRESSED, see below)
//! .. topic           u8 (v1) / i16 (v2) length + UTF-8
//! .. properties      i16 length + UTF-8 properties string
//! ```
//! 4.x clients only know magic v1 (topic ≤ 127 bytes).
//!
//! **Batch send body** (`MessageDecoder.encodeMessages`, SEND_BATCH_MESSAGE): per message
//! `total size i32, magic i32 (0), body CRC i32 (0), flag i32, body i32 length + bytes,
//! properties i16 length + bytes`.
//!
//! **Offset message id**: store host address + port (i32) + commit-log offset (i64) as upper-case
//! hex: 32 characters for IPv4, 56 for IPv6. **Unique id** (`UNIQ_KEY`, made by clients): IP
//! (4 or 16 bytes) + pid (u16) + class-loader hash (i32) + ms since the start of the month (i32)
//! + counter (u16), upper-case hex; the broker only stores and indexes it.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes};

/// Separates a property name from its value.
pub const NAME_VALUE_SEPARATOR: char = '\u{1}';
/// Ends a property.
pub const PROPERTY_SEPARATOR: char = '\u{2}';
/// Magic code of a v1 record (1-byte topic length).
pub const MAGIC_V1: i32 = 0xDAA3_20A7_u32 as i32;
/// Magic code of a v2 record (2-byte topic length; 5.x, for topics over 127 bytes).
pub const MAGIC_V2: i32 = 0xDAA3_20AB_u32 as i32;

/// Bits of a message's sys flag.
pub mod sys_flag {
    /// The body is compressed (zlib unless a compression type says otherwise).
    pub const COMPRESSED: i32 = 0x1;
    pub const MULTI_TAGS: i32 = 0x1 << 1;
    /// Transaction type mask: `0` normal, `4` prepared (half), `8` commit, `12` rollback.
    pub const TRANSACTION_MASK: i32 = 0x3 << 2;
    pub const TRANSACTION_PREPARED: i32 = 0x1 << 2;
    pub const TRANSACTION_COMMIT: i32 = 0x2 << 2;
    pub const TRANSACTION_ROLLBACK: i32 = 0x3 << 2;
    pub const BORNHOST_V6: i32 = 0x1 << 4;
    pub const STOREHOST_V6: i32 = 0x1 << 5;
    pub const NEED_UNWRAP: i32 = 0x1 << 6;
    pub const INNER_BATCH: i32 = 0x1 << 7;
    /// Compression type (5.x): bits 8..10; 0 or 3 = zlib, 1 = LZ4, 2 = ZSTD.
    pub const COMPRESSION_TYPE_MASK: i32 = 0x7 << 8;
}

/// Well-known property names (`MessageConst`).
pub mod property {
    pub const KEYS: &str = "KEYS";
    pub const TAGS: &str = "TAGS";
    pub const WAIT_STORE_MSG_OK: &str = "WAIT";
    pub const DELAY_TIME_LEVEL: &str = "DELAY";
    pub const RETRY_TOPIC: &str = "RETRY_TOPIC";
    pub const REAL_TOPIC: &str = "REAL_TOPIC";
    pub const REAL_QUEUE_ID: &str = "REAL_QID";
    pub const TRANSACTION_PREPARED: &str = "TRAN_MSG";
    pub const PRODUCER_GROUP: &str = "PGROUP";
    pub const MIN_OFFSET: &str = "MIN_OFFSET";
    pub const MAX_OFFSET: &str = "MAX_OFFSET";
    pub const ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
    pub const RECONSUME_TIME: &str = "RECONSUME_TIME";
    pub const UNIQ_CLIENT_MESSAGE_ID_KEYIDX: &str = "UNIQ_KEY";
    pub const MAX_RECONSUME_TIMES: &str = "MAX_RECONSUME_TIMES";
    pub const CONSUME_START_TIMESTAMP: &str = "CONSUME_START_TIME";
    pub const TRANSACTION_PREPARED_QUEUE_OFFSET: &str = "TRAN_PREPARED_QUEUE_OFFSET";
    pub const TRANSACTION_ID: &str = "__transactionId__";
    pub const TRANSACTION_CHECK_TIMES: &str = "TRANSACTION_CHECK_TIMES";
    pub const CHECK_IMMUNITY_TIME_IN_SECONDS: &str = "CHECK_IMMUNITY_TIME_IN_SECONDS";
    pub const INSTANCE_ID: &str = "INSTANCE_ID";
    pub const CLUSTER: &str = "CLUSTER";
    pub const MESSAGE_TYPE: &str = "MSG_TYPE";
    pub const SHARDING_KEY: &str = "__SHARDINGKEY";
    pub const TRACE_CONTEXT: &str = "TRACE_CONTEXT";
    pub const TIMER_DELAY_SEC: &str = "TIMER_DELAY_SEC";
    pub const TIMER_DELIVER_MS: &str = "TIMER_DELIVER_MS";
    pub const DLQ_ORIGIN_TOPIC: &str = "DLQ_ORIGIN_TOPIC";
    pub const DLQ_ORIGIN_MESSAGE_ID: &str = "DLQ_ORIGIN_MESSAGE_ID";
    pub const INNER_NUM: &str = "INNER_NUM";
    /// Separates keys inside `KEYS`.
    pub const KEY_SEPARATOR: &str = " ";
}

/// Why a message encoding could not be read or written.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MessageError {
    #[error("message truncated reading {field}: need {need} bytes, {have} left")]
    Truncated {
        field: &'static str,
        need: usize,
        have: usize,
    },
    #[error("bad magic code {0:#x}")]
    BadMagic(i32),
    #[error("{field} length {length} is negative")]
    NegativeLength { field: &'static str, length: i32 },
    #[error("record size {declared} disagrees with its content ({actual} bytes)")]
    SizeMismatch { declared: i32, actual: usize },
    #[error("{field} is not UTF-8")]
    NotUtf8 { field: &'static str },
    #[error("body CRC {stored:#x} does not match the body ({computed:#x})")]
    BadCrc { stored: i32, computed: i32 },
    #[error("compression type {0} is not supported (only zlib)")]
    UnsupportedCompression(i32),
    #[error("body does not decompress: {0}")]
    Decompress(String),
    #[error("{field} is too long for its length field ({len} bytes)")]
    TooLong { field: &'static str, len: usize },
    #[error("message id {0:?} is not 32 or 56 hex characters")]
    BadMessageId(String),
}

/// Parses a properties string (never fails: malformed entries are skipped, as Java does).
pub fn decode_properties(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for entry in text.split(PROPERTY_SEPARATOR) {
        if entry.chars().count() < 3 {
            continue;
        }
        if let Some((k, v)) = entry.split_once(NAME_VALUE_SEPARATOR) {
            if !k.is_empty() && !v.is_empty() {
                map.insert(k.to_string(), v.to_string());
            }
        }
    }
    map
}

/// Writes a properties string.
pub fn encode_properties(props: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (k, v) in props {
        out.push_str(k);
        out.push(NAME_VALUE_SEPARATOR);
        out.push_str(v);
        out.push(PROPERTY_SEPARATOR);
    }
    out
}

/// The body CRC stored messages carry: CRC-32 (IEEE) masked to 31 bits.
pub fn body_crc(body: &[u8]) -> i32 {
    (crc32fast::hash(body) & 0x7FFF_FFFF) as i32
}

/// A message as it is stored and delivered (`MessageExt`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub queue_id: i32,
    pub flag: i32,
    pub queue_offset: i64,
    pub commit_log_offset: i64,
    /// Sys flag; the host-v6 bits follow the addresses when encoding.
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddr,
    pub store_timestamp: i64,
    pub store_host: SocketAddr,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
    /// The body as stored (compressed if `sys_flag` says so; see [`StoredMessage::plain_body`]).
    pub body: Bytes,
    pub topic: String,
    pub properties: BTreeMap<String, String>,
}

impl Default for StoredMessage {
    fn default() -> Self {
        let zero = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        StoredMessage {
            queue_id: 0,
            flag: 0,
            queue_offset: 0,
            commit_log_offset: 0,
            sys_flag: 0,
            born_timestamp: 0,
            born_host: zero,
            store_timestamp: 0,
            store_host: zero,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: Bytes::new(),
            topic: String::new(),
            properties: BTreeMap::new(),
        }
    }
}

impl StoredMessage {
    /// The body, decompressed when the sys flag marks it compressed.
    pub fn plain_body(&self) -> Result<Bytes, MessageError> {
        decompress_body(self.sys_flag, &self.body)
    }

    /// The offset message id of this record (store host + commit-log offset).
    pub fn offset_msg_id(&self) -> String {
        encode_offset_msg_id(self.store_host, self.commit_log_offset)
    }

    /// The client-generated unique id (`UNIQ_KEY`), the id users see.
    pub fn uniq_key(&self) -> Option<&str> {
        self.properties
            .get(property::UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
            .map(String::as_str)
    }

    /// Appends the stored-message encoding (magic v1 unless the topic needs v2) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), MessageError> {
        self.encode_with_properties(&encode_properties(&self.properties), out)
    }

    /// [`StoredMessage::encode_into`] with the properties already written as text (see
    /// [`encode_properties`]); `self.properties` is not read. For a caller that writes the text
    /// straight from its own fields, without building the map first.
    pub fn encode_with_properties(
        &self,
        props: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), MessageError> {
        self.encode_parts(&self.topic, &self.body, props, out)
    }

    /// [`StoredMessage::encode_with_properties`] with the topic and body given apart; only the
    /// fixed fields of `self` are read. For a caller that copies them straight from where they
    /// are kept (a stored record read in place), not into a message first.
    pub fn encode_parts(
        &self,
        topic: &str,
        body: &[u8],
        props: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), MessageError> {
        let props_len = i16::try_from(props.len()).map_err(|_| MessageError::TooLong {
            field: "properties",
            len: props.len(),
        })?;
        let topic = topic.as_bytes();
        let v2 = topic.len() > 127;
        if topic.len() > i16::MAX as usize {
            return Err(MessageError::TooLong {
                field: "topic",
                len: topic.len(),
            });
        }
        let mut sys_flag = self.sys_flag & !(sys_flag::BORNHOST_V6 | sys_flag::STOREHOST_V6);
        if self.born_host.is_ipv6() {
            sys_flag |= sys_flag::BORNHOST_V6;
        }
        if self.store_host.is_ipv6() {
            sys_flag |= sys_flag::STOREHOST_V6;
        }
        let host_len = |a: &SocketAddr| if a.is_ipv6() { 20 } else { 8 };
        let size = 4
            + 4
            + 4
            + 4
            + 4
            + 8
            + 8
            + 4
            + 8
            + host_len(&self.born_host)
            + 8
            + host_len(&self.store_host)
            + 4
            + 8
            + 4
            + body.len()
            + if v2 { 2 } else { 1 }
            + topic.len()
            + 2
            + props.len();
        let size = i32::try_from(size).map_err(|_| MessageError::TooLong {
            field: "message",
            len: size,
        })?;
        out.reserve(size as usize);
        out.put_i32(size);
        out.put_i32(if v2 { MAGIC_V2 } else { MAGIC_V1 });
        out.put_i32(body_crc(body));
        out.put_i32(self.queue_id);
        out.put_i32(self.flag);
        out.put_i64(self.queue_offset);
        out.put_i64(self.commit_log_offset);
        out.put_i32(sys_flag);
        out.put_i64(self.born_timestamp);
        put_host(out, self.born_host);
        out.put_i64(self.store_timestamp);
        put_host(out, self.store_host);
        out.put_i32(self.reconsume_times);
        out.put_i64(self.prepared_transaction_offset);
        out.put_i32(body.len() as i32);
        out.extend_from_slice(body);
        if v2 {
            out.put_i16(topic.len() as i16);
        } else {
            out.put_u8(topic.len() as u8);
        }
        out.extend_from_slice(topic);
        out.put_i16(props_len);
        out.extend_from_slice(props.as_bytes());
        Ok(())
    }

    /// The stored-message encoding of this one message.
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Decodes one record from the front of `buf`, returning it and the bytes it used. With
    /// `check_crc` a body whose CRC does not match is an error (corrupt data is never served).
    pub fn decode(buf: &[u8], check_crc: bool) -> Result<(StoredMessage, usize), MessageError> {
        let mut c = Reader { buf, pos: 0 };
        let size = c.i32("total size")?;
        if size < 0 {
            return Err(MessageError::NegativeLength {
                field: "total size",
                length: size,
            });
        }
        let magic = c.i32("magic code")?;
        let v2 = match magic {
            MAGIC_V1 => false,
            MAGIC_V2 => true,
            other => return Err(MessageError::BadMagic(other)),
        };
        let crc = c.i32("body CRC")?;
        let queue_id = c.i32("queue id")?;
        let flag = c.i32("flag")?;
        let queue_offset = c.i64("queue offset")?;
        let commit_log_offset = c.i64("physical offset")?;
        let sys_flag = c.i32("sys flag")?;
        let born_timestamp = c.i64("born timestamp")?;
        let born_host = c.host(sys_flag & sys_flag::BORNHOST_V6 != 0, "born host")?;
        let store_timestamp = c.i64("store timestamp")?;
        let store_host = c.host(sys_flag & sys_flag::STOREHOST_V6 != 0, "store host")?;
        let reconsume_times = c.i32("reconsume times")?;
        let prepared_transaction_offset = c.i64("prepared transaction offset")?;
        let body = c.body()?;
        if check_crc && body_crc(body) != crc {
            return Err(MessageError::BadCrc {
                stored: crc,
                computed: body_crc(body),
            });
        }
        let topic_len = if v2 {
            c.i16("topic length")? as i32
        } else {
            i32::from(c.take(1, "topic length")?[0] as i8)
        };
        if topic_len < 0 {
            return Err(MessageError::NegativeLength {
                field: "topic",
                length: topic_len,
            });
        }
        let topic = c.utf8(topic_len as usize, "topic")?;
        let props = c.properties()?;
        if c.pos != size as usize {
            return Err(MessageError::SizeMismatch {
                declared: size,
                actual: c.pos,
            });
        }
        let msg = StoredMessage {
            queue_id,
            flag,
            queue_offset,
            commit_log_offset,
            sys_flag,
            born_timestamp,
            born_host,
            store_timestamp,
            store_host,
            reconsume_times,
            prepared_transaction_offset,
            body: Bytes::copy_from_slice(body),
            topic,
            properties: decode_properties(&props),
        };
        Ok((msg, c.pos))
    }

    /// Decodes every record of a pull/query body.
    pub fn decode_all(mut buf: &[u8], check_crc: bool) -> Result<Vec<StoredMessage>, MessageError> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let (msg, used) = StoredMessage::decode(buf, check_crc)?;
            out.push(msg);
            buf = &buf[used..];
        }
        Ok(out)
    }
}

fn put_host(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.put_i32(i32::from(addr.port()));
}

/// Decompresses a body according to its sys flag (zlib only; 4.x clients compress bodies over
/// `compressMsgBodyOverHowmuch`, 4 KiB by default, with zlib level 5).
pub fn decompress_body(sys_flag: i32, body: &[u8]) -> Result<Bytes, MessageError> {
    if sys_flag & sys_flag::COMPRESSED == 0 {
        return Ok(Bytes::copy_from_slice(body));
    }
    let kind = (sys_flag & sys_flag::COMPRESSION_TYPE_MASK) >> 8;
    if kind != 0 && kind != 3 {
        return Err(MessageError::UnsupportedCompression(kind));
    }
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(body)
        .read_to_end(&mut out)
        .map_err(|e| MessageError::Decompress(e.to_string()))?;
    Ok(out.into())
}

/// One message of a batch-send body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchEntry {
    pub flag: i32,
    pub body: Bytes,
    pub properties: BTreeMap<String, String>,
}

/// Decodes a SEND_BATCH_MESSAGE body. Each entry's body is a slice of `frame` (no copy): it
/// keeps the request's buffer alive until the entry is stored.
pub fn decode_batch(frame: &Bytes) -> Result<Vec<BatchEntry>, MessageError> {
    let mut buf: &[u8] = frame;
    let mut out = Vec::new();
    while !buf.is_empty() {
        let mut c = Reader { buf, pos: 0 };
        let size = c.i32("total size")?;
        let _magic = c.i32("magic code")?;
        let _crc = c.i32("body CRC")?;
        let flag = c.i32("flag")?;
        let body = frame.slice_ref(c.body()?);
        let props = c.properties()?;
        if size < 0 || c.pos != size as usize {
            return Err(MessageError::SizeMismatch {
                declared: size,
                actual: c.pos,
            });
        }
        out.push(BatchEntry {
            flag,
            body,
            properties: decode_properties(&props),
        });
        buf = &buf[c.pos..];
    }
    Ok(out)
}

/// Encodes a SEND_BATCH_MESSAGE body (what a 4.x client's `MessageBatch` sends).
pub fn encode_batch(entries: &[BatchEntry]) -> Result<Vec<u8>, MessageError> {
    let mut out = Vec::new();
    for e in entries {
        let props = encode_properties(&e.properties);
        let props_len = i16::try_from(props.len()).map_err(|_| MessageError::TooLong {
            field: "properties",
            len: props.len(),
        })?;
        let size = 4 + 4 + 4 + 4 + 4 + e.body.len() + 2 + props.len();
        out.put_i32(size as i32);
        out.put_i32(0);
        out.put_i32(0);
        out.put_i32(e.flag);
        out.put_i32(e.body.len() as i32);
        out.extend_from_slice(&e.body);
        out.put_i16(props_len);
        out.extend_from_slice(props.as_bytes());
    }
    Ok(out)
}

/// The offset message id: store host + commit-log offset as upper-case hex.
pub fn encode_offset_msg_id(store_host: SocketAddr, commit_log_offset: i64) -> String {
    let mut bytes = Vec::with_capacity(28);
    put_host(&mut bytes, store_host);
    bytes.put_i64(commit_log_offset);
    hex_upper(&bytes)
}

/// Reads an offset message id back into store host and commit-log offset.
pub fn decode_offset_msg_id(id: &str) -> Result<(SocketAddr, i64), MessageError> {
    let bytes = hex_decode(id).ok_or_else(|| MessageError::BadMessageId(id.to_string()))?;
    let ip_len = match bytes.len() {
        16 => 4,
        28 => 16,
        _ => return Err(MessageError::BadMessageId(id.to_string())),
    };
    let mut c = Reader {
        buf: &bytes,
        pos: 0,
    };
    let addr = c.host(ip_len == 16, "store host")?;
    let offset = c.i64("offset")?;
    Ok((addr, offset))
}

/// The parts of a client-generated unique id (`UNIQ_KEY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueId {
    pub ip: IpAddr,
    pub pid: u16,
    pub class_loader_hash: i32,
    /// Milliseconds since the start of the month (client local time) the id was made in.
    pub millis_in_month: i32,
    pub counter: u16,
}

/// Parses a 4.x/5.x remoting client's `UNIQ_KEY` (32 or 56 hex characters).
pub fn parse_unique_id(id: &str) -> Option<UniqueId> {
    let bytes = hex_decode(id)?;
    let ip_len = match bytes.len() {
        16 => 4,
        28 => 16,
        _ => return None,
    };
    let ip = if ip_len == 4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        let mut o = [0u8; 16];
        o.copy_from_slice(&bytes[..16]);
        IpAddr::V6(Ipv6Addr::from(o))
    };
    let r = &bytes[ip_len..];
    Some(UniqueId {
        ip,
        pid: u16::from_be_bytes([r[0], r[1]]),
        class_loader_hash: i32::from_be_bytes([r[2], r[3], r[4], r[5]]),
        millis_in_month: i32::from_be_bytes([r[6], r[7], r[8], r[9]]),
        counter: u16::from_be_bytes([r[10], r[11]]),
    })
}

fn hex_upper(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xF) as usize] as char);
    }
    s
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], MessageError> {
        let have = self.buf.len() - self.pos;
        if have < n {
            return Err(MessageError::Truncated {
                field,
                need: n,
                have,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, MessageError> {
        let b = self.take(2, field)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, MessageError> {
        let b = self.take(4, field)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, MessageError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    fn utf8(&mut self, n: usize, field: &'static str) -> Result<String, MessageError> {
        let b = self.take(n, field)?;
        String::from_utf8(b.to_vec()).map_err(|_| MessageError::NotUtf8 { field })
    }

    /// A body: i32 length, then the bytes (length checked against what is left).
    fn body(&mut self) -> Result<&'a [u8], MessageError> {
        let len = self.i32("body length")?;
        if len < 0 {
            return Err(MessageError::NegativeLength {
                field: "body",
                length: len,
            });
        }
        self.take(len as usize, "body")
    }

    /// A properties string: i16 length, then UTF-8.
    fn properties(&mut self) -> Result<String, MessageError> {
        let len = self.i16("properties length")?;
        if len < 0 {
            return Err(MessageError::NegativeLength {
                field: "properties",
                length: len.into(),
            });
        }
        self.utf8(len as usize, "properties")
    }

    fn host(&mut self, v6: bool, field: &'static str) -> Result<SocketAddr, MessageError> {
        let ip = if v6 {
            let mut o = [0u8; 16];
            o.copy_from_slice(self.take(16, field)?);
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            let b = self.take(4, field)?;
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        };
        // Java writes the port as an int; only the low 16 bits can be a port.
        let port = self.i32(field)?;
        Ok(SocketAddr::new(ip, port as u16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn properties_string_vector() {
        let p = props(&[
            ("KEYS", "k1 k2"),
            ("TAGS", "TagA"),
            ("UNIQ_KEY", "7F0000010001"),
        ]);
        let s = encode_properties(&p);
        assert_eq!(
            s,
            "KEYS\u{1}k1 k2\u{2}TAGS\u{1}TagA\u{2}UNIQ_KEY\u{1}7F0000010001\u{2}"
        );
        assert_eq!(decode_properties(&s), p);
        // Java skips short and nameless entries, and takes a missing final separator.
        assert_eq!(
            decode_properties("a\u{1}\u{2}\u{1}bc\u{2}K\u{1}v"),
            props(&[("K", "v")])
        );
    }

    fn sample() -> StoredMessage {
        StoredMessage {
            queue_id: 1,
            flag: 0,
            queue_offset: 5,
            commit_log_offset: 0x1234,
            sys_flag: 0,
            born_timestamp: 1_700_000_000_000,
            born_host: "127.0.0.1:50000".parse().unwrap(),
            store_timestamp: 1_700_000_000_123,
            store_host: "127.0.0.1:10911".parse().unwrap(),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
            body: Bytes::from_static(b"hi"),
            topic: "T".into(),
            properties: props(&[("TAGS", "a")]),
        }
    }

    /// Written out field by field from the layout in the module docs.
    #[test]
    fn stored_message_vector() {
        let bytes = sample().encode().unwrap();
        let mut expected = Vec::new();
        let props = b"TAGS\x01a\x02";
        let size =
            4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 8 + 8 + 8 + 4 + 8 + 4 + 2 + 1 + 1 + 2 + props.len();
        expected.extend_from_slice(&(size as i32).to_be_bytes());
        expected.extend_from_slice(&[0xDA, 0xA3, 0x20, 0xA7]);
        // crc32("hi") = 0xD8932AAC, masked to 31 bits
        expected.extend_from_slice(&(0xD893_2AAC_u32 & 0x7FFF_FFFF).to_be_bytes());
        expected.extend_from_slice(&1i32.to_be_bytes());
        expected.extend_from_slice(&0i32.to_be_bytes());
        expected.extend_from_slice(&5i64.to_be_bytes());
        expected.extend_from_slice(&0x1234i64.to_be_bytes());
        expected.extend_from_slice(&0i32.to_be_bytes());
        expected.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        expected.extend_from_slice(&[127, 0, 0, 1, 0, 0, 0xC3, 0x50]);
        expected.extend_from_slice(&1_700_000_000_123i64.to_be_bytes());
        expected.extend_from_slice(&[127, 0, 0, 1, 0, 0, 0x2A, 0x9F]);
        expected.extend_from_slice(&0i32.to_be_bytes());
        expected.extend_from_slice(&0i64.to_be_bytes());
        expected.extend_from_slice(&2i32.to_be_bytes());
        expected.extend_from_slice(b"hi");
        expected.push(1);
        expected.extend_from_slice(b"T");
        expected.extend_from_slice(&(props.len() as i16).to_be_bytes());
        expected.extend_from_slice(props);
        assert_eq!(bytes, expected);
        let (back, used) = StoredMessage::decode(&bytes, true).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(back, sample());
        assert_eq!(back.offset_msg_id(), "7F00000100002A9F0000000000001234");
    }

    #[test]
    fn corrupt_records_are_refused() {
        let good = sample().encode().unwrap();
        for cut in 0..good.len() {
            assert!(
                StoredMessage::decode(&good[..cut], true).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad_crc = good.clone();
        let body_at = good.len() - (2 + 1 + 1 + 2 + 7);
        bad_crc[body_at] ^= 1;
        assert!(matches!(
            StoredMessage::decode(&bad_crc, true),
            Err(MessageError::BadCrc { .. })
        ));
        assert!(StoredMessage::decode(&bad_crc, false).is_ok());
        let mut bad_magic = good.clone();
        bad_magic[4] = 0;
        assert!(matches!(
            StoredMessage::decode(&bad_magic, true),
            Err(MessageError::BadMagic(_))
        ));
        let mut huge_body = good;
        let len_at = body_at - 4;
        huge_body[len_at..len_at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            StoredMessage::decode(&huge_body, true),
            Err(MessageError::Truncated { field: "body", .. })
        ));
    }

    #[test]
    fn ipv6_hosts_and_long_topics() {
        let m = StoredMessage {
            born_host: "[::1]:1234".parse().unwrap(),
            store_host: "[fe80::1]:10911".parse().unwrap(),
            topic: "t".repeat(200),
            ..sample()
        };
        let bytes = m.encode().unwrap();
        assert_eq!(&bytes[4..8], &MAGIC_V2.to_be_bytes());
        let (back, _) = StoredMessage::decode(&bytes, true).unwrap();
        assert_eq!(
            back.sys_flag & (sys_flag::BORNHOST_V6 | sys_flag::STOREHOST_V6),
            0x30
        );
        assert_eq!(back.topic, m.topic);
        assert_eq!(back.store_host, m.store_host);
        assert_eq!(back.offset_msg_id().len(), 56);
        assert_eq!(
            decode_offset_msg_id(&back.offset_msg_id()).unwrap(),
            (m.store_host, m.commit_log_offset)
        );
    }

    #[test]
    fn compressed_bodies_inflate() {
        use std::io::Write;
        let plain = vec![b'x'; 10_000];
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(5));
        z.write_all(&plain).unwrap();
        let m = StoredMessage {
            sys_flag: sys_flag::COMPRESSED,
            body: z.finish().unwrap().into(),
            ..sample()
        };
        assert_eq!(m.plain_body().unwrap(), plain);
        let lz4 = StoredMessage {
            sys_flag: sys_flag::COMPRESSED | (1 << 8),
            ..m.clone()
        };
        assert_eq!(
            lz4.plain_body(),
            Err(MessageError::UnsupportedCompression(1))
        );
        let junk = StoredMessage {
            sys_flag: sys_flag::COMPRESSED,
            body: Bytes::from_static(b"nope"),
            ..m
        };
        assert!(matches!(
            junk.plain_body(),
            Err(MessageError::Decompress(_))
        ));
    }

    #[test]
    fn batch_body_vector() {
        let entries = vec![
            BatchEntry {
                flag: 0,
                body: Bytes::from_static(b"a"),
                properties: props(&[("UNIQ_KEY", "X")]),
            },
            BatchEntry {
                flag: 7,
                body: Bytes::from_static(b""),
                properties: BTreeMap::new(),
            },
        ];
        let bytes = encode_batch(&entries).unwrap();
        // 4 size + 4 magic + 4 crc + 4 flag + 4 body length + 1 body + 2 properties length + 11 properties = 34
        let first = [
            &[0, 0, 0, 34][..],
            &[0; 8],
            &[0, 0, 0, 0],
            &[0, 0, 0, 1],
            b"a",
            &[0, 11],
            b"UNIQ_KEY\x01X\x02",
        ]
        .concat();
        assert_eq!(&bytes[..first.len()], &first[..]);
        let frame = Bytes::from(bytes);
        let decoded = decode_batch(&frame).unwrap();
        assert_eq!(decoded, entries);
        // Each body is a view of the frame, not a copy.
        let inside = frame.as_ptr_range();
        for e in decoded.iter().filter(|e| !e.body.is_empty()) {
            assert!(
                inside.contains(&e.body.as_ptr()),
                "body copied out of the frame"
            );
        }
        assert!(decode_batch(&frame.slice(..frame.len() - 1)).is_err());
    }

    #[test]
    fn unique_id_parts() {
        // ip 192.168.0.10, pid 0x1F40, class loader hash 0x12345678, 0x00ABCDEF ms, counter 3
        let id = "C0A8000A1F401234567800ABCDEF0003";
        let u = parse_unique_id(id).unwrap();
        assert_eq!(u.ip, "192.168.0.10".parse::<IpAddr>().unwrap());
        assert_eq!(u.pid, 0x1F40);
        assert_eq!(u.class_loader_hash, 0x1234_5678);
        assert_eq!(u.millis_in_month, 0x00AB_CDEF);
        assert_eq!(u.counter, 3);
        assert_eq!(parse_unique_id("XYZ"), None);
        assert!(decode_offset_msg_id("00").is_err());
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V4(ip.into()), p)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V6(ip.into()), p)),
        ]
    }

    proptest! {
        #[test]
        fn stored_messages_round_trip(queue_id in any::<i32>(), offset in any::<i64>(), flag in any::<i32>(),
                                      born in arb_addr(), store in arb_addr(), body in proptest::collection::vec(any::<u8>(), 0..300),
                                      topic in "[a-zA-Z0-9_%-]{1,200}",
                                      props in proptest::collection::btree_map("[A-Za-z_]{1,10}", "[^\u{1}\u{2}]{1,20}", 0..5)) {
            let m = StoredMessage {
                queue_id, flag, queue_offset: offset, commit_log_offset: offset, sys_flag: 0,
                born_host: born, store_host: store, body: body.into(), topic, properties: props,
                ..sample()
            };
            let mut sys = 0;
            if born.is_ipv6() { sys |= sys_flag::BORNHOST_V6; }
            if store.is_ipv6() { sys |= sys_flag::STOREHOST_V6; }
            let bytes = m.encode().unwrap();
            let two = [bytes.clone(), bytes].concat();
            let all = StoredMessage::decode_all(&two, true).unwrap();
            prop_assert_eq!(all.len(), 2);
            prop_assert_eq!(&all[0], &StoredMessage { sys_flag: sys, ..m });
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = StoredMessage::decode_all(&bytes, true);
            let _ = decode_batch(&Bytes::from(bytes));
        }

        #[test]
        fn offset_ids_round_trip(addr in arb_addr(), offset in any::<i64>()) {
            prop_assert_eq!(decode_offset_msg_id(&encode_offset_msg_id(addr, offset)).unwrap(), (addr, offset));
        }
    }
}
