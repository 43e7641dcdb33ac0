//! The commit log record: how one message is laid out on disk.
//!
//! All integers are little-endian. A record is self-delimiting and self-checking:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 4  | `total_len`: length of the whole record, this field included |
//! | 4  | 4  | `crc`: CRC32C over bytes `8..total_len` (everything after these two fields) |
//! | 8  | 2  | `magic` = `0xF3A1` (a message record) or `0xF3EE` (end-of-segment filler) |
//! | 10 | 1  | `version` = 1 |
//! | 11 | 1  | reserved: written as 0, ignored when read (see below) |
//! | 12 | 4  | `queue_id` |
//! | 16 | 8  | `queue_offset`: position in the (topic, queue) consume queue |
//! | 24 | 8  | `phys_offset`: position of this record in the commit log |
//! | 32 | 8  | `born_timestamp` (ms since the epoch, set by the producer) |
//! | 40 | 8  | `store_timestamp` (ms since the epoch, set by the store) |
//! | 48 | 18 | `born_host`: IPv6 address (IPv4 mapped) + port |
//! | 66 | 18 | `store_host`: same encoding |
//! | 84 | 4  | `flags` (opaque to the store) |
//! | 88 | 4  | `reconsume_times` |
//! | 92 | 8  | reserved: written as 0, ignored when read (see below) |
//! | 100 | 2 | `topic_len`, then `topic_len` bytes of UTF-8 topic |
//! | .. | 4  | `props_len`, then properties: repeated (`u16` key length, key, `u32` value length, value) |
//! | .. | 4  | `body_len`, then the body |
//!
//! The two reserved fields once held a transaction kind and the offset of a prepared (half)
//! message, copied from RocketMQ's record. FerroMQ never used them: transactions keep their half
//! messages in the system topic `%SYS%FM_HALF` with mark files, so a record carries no
//! transaction state. They stay in the layout so that version 1 is read and written unchanged in
//! both directions (a store written before they were reserved opens, and an older binary reads a
//! store written now); the CRC still covers them. A future version 2 may drop them.
//!
//! Unlike RocketMQ, which checks only the body, the CRC covers every field after itself, so a
//! flipped bit in a queue offset or a property is caught as surely as one in the body. Because
//! `phys_offset` is inside the checked bytes, a valid record copied to the wrong place (a
//! misdirected write) is detected too.
//!
//! The end of a segment that cannot hold the next record is filled with an end marker: a
//! 12-byte header (`total_len` = the bytes left, `crc` over bytes 8..12, magic `0xF3EE`). When
//! fewer than [`MIN_FILLER`] bytes remain, the end is implicit. A `total_len` of zero means
//! "nothing written here yet".

use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::error::{Result, StoreError};

/// Magic of a message record.
pub const MAGIC_MESSAGE: u16 = 0xF3A1;
/// Magic of the filler that pads the end of a segment.
pub const MAGIC_FILLER: u16 = 0xF3EE;
/// Record layout version written by this code.
pub const VERSION: u8 = 1;
/// Bytes before the variable part (up to and including the reserved bytes 92..100).
pub const FIXED_LEN: usize = 100;
/// Smallest possible message record: fixed part plus the three length fields.
pub const MIN_RECORD_LEN: usize = FIXED_LEN + 2 + 4 + 4;
/// Size of the end-of-segment filler header; a smaller tail is implicitly the end.
pub const MIN_FILLER: usize = 12;
/// Longest topic name the layout accepts (RocketMQ's limit).
pub const MAX_TOPIC_LEN: usize = 127;
/// Upper bound on the encoded properties, so a corrupt length cannot make us allocate much.
pub const MAX_PROPERTIES_LEN: usize = 1 << 20;

/// A message as a producer hands it to the store. The store fills in offsets, the store
/// timestamp and the store host.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewMessage {
    pub topic: String,
    pub queue_id: u32,
    pub born_timestamp_ms: i64,
    pub born_host: Option<SocketAddr>,
    pub flags: u32,
    pub reconsume_times: u32,
    /// Properties, including the well-known ones (`PROP_TAGS`, `PROP_KEYS`, `PROP_MSG_ID`).
    pub properties: BTreeMap<String, String>,
    /// Shared with the request that carried it: encoding the record is the one copy.
    pub body: Bytes,
}

/// A message read back from the commit log, every field verified by its CRC.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub phys_offset: u64,
    /// Length of the whole record on disk.
    pub size: u32,
    pub born_timestamp_ms: i64,
    pub store_timestamp_ms: i64,
    pub born_host: Option<SocketAddr>,
    pub store_host: Option<SocketAddr>,
    pub flags: u32,
    pub reconsume_times: u32,
    pub properties: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl StoredMessage {
    /// The message's tag (property `TAGS`), if any.
    pub fn tag(&self) -> Option<&str> {
        self.properties.get(crate::PROP_TAGS).map(String::as_str)
    }

    /// The message's index keys (property `KEYS`, space separated).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.properties
            .get(crate::PROP_KEYS)
            .into_iter()
            .flat_map(|k| k.split(crate::KEY_SEPARATOR))
            .filter(|k| !k.is_empty())
    }

    /// The producer-assigned message id (property `UNIQ_KEY`), if any.
    pub fn msg_id(&self) -> Option<&str> {
        self.properties.get(crate::PROP_MSG_ID).map(String::as_str)
    }
}

/// The fields of a record header that the dispatcher needs, without decoding the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub total_len: u32,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub phys_offset: u64,
    pub store_timestamp_ms: i64,
}

/// What lies at a position of a segment.
#[derive(Debug, PartialEq)]
pub enum Slot {
    /// A complete, checksum-valid message record of this many bytes.
    Message(u32),
    /// A valid end-of-segment filler: the rest of the segment is unused.
    Filler,
    /// Zeros: nothing was ever written here.
    Empty,
}

/// Computes the encoded length of `msg`, checking every length field fits its width.
pub fn encoded_len(msg: &NewMessage) -> Result<usize> {
    if msg.topic.is_empty() || msg.topic.len() > MAX_TOPIC_LEN {
        return Err(StoreError::InvalidField {
            field: "topic",
            reason: format!(
                "length {} is not within 1..={MAX_TOPIC_LEN}",
                msg.topic.len()
            ),
        });
    }
    let props = properties_len(&msg.properties)?;
    Ok(FIXED_LEN + 2 + msg.topic.len() + 4 + props + 4 + msg.body.len())
}

fn properties_len(props: &BTreeMap<String, String>) -> Result<usize> {
    let mut len = 0usize;
    for (k, v) in props {
        if k.is_empty() || k.len() > u16::MAX as usize {
            return Err(StoreError::InvalidField {
                field: "properties",
                reason: format!("key of length {}", k.len()),
            });
        }
        len += 2 + k.len() + 4 + v.len();
    }
    if len > MAX_PROPERTIES_LEN {
        return Err(StoreError::InvalidField {
            field: "properties",
            reason: format!("{len} bytes encoded, over the limit of {MAX_PROPERTIES_LEN}"),
        });
    }
    Ok(len)
}

fn encode_host(out: &mut [u8], host: Option<SocketAddr>) {
    let (ip, port) = match host {
        Some(SocketAddr::V4(a)) => (a.ip().to_ipv6_mapped(), a.port()),
        Some(SocketAddr::V6(a)) => (*a.ip(), a.port()),
        None => (Ipv6Addr::UNSPECIFIED, 0),
    };
    out[..16].copy_from_slice(&ip.octets());
    out[16..18].copy_from_slice(&port.to_le_bytes());
}

fn decode_host(b: &[u8]) -> Option<SocketAddr> {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&b[..16]);
    let ip = Ipv6Addr::from(octets);
    let port = u16::from_le_bytes([b[16], b[17]]);
    if ip.is_unspecified() && port == 0 {
        return None;
    }
    let ip = match ip.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ip),
    };
    Some(SocketAddr::new(ip, port))
}

/// Encodes `msg` into `out` (which must be exactly [`encoded_len`] bytes) with placeholder
/// offsets; [`seal`] fills in the offsets and the CRC once the writer has chosen them.
pub fn encode(msg: &NewMessage, store_host: Option<SocketAddr>, out: &mut [u8]) -> Result<()> {
    let total = encoded_len(msg)?;
    if out.len() != total {
        return Err(StoreError::malformed(
            "record buffer",
            format!("{} bytes for a {total}-byte record", out.len()),
        ));
    }
    let total_u32 = u32::try_from(total).map_err(|_| StoreError::InvalidField {
        field: "body",
        reason: format!("record of {total} bytes"),
    })?;
    out[0..4].copy_from_slice(&total_u32.to_le_bytes());
    out[4..8].fill(0);
    out[8..10].copy_from_slice(&MAGIC_MESSAGE.to_le_bytes());
    out[10] = VERSION;
    out[11] = 0; // reserved
    out[12..16].copy_from_slice(&msg.queue_id.to_le_bytes());
    out[16..40].fill(0); // queue offset, phys offset, born ts set below
    out[32..40].copy_from_slice(&msg.born_timestamp_ms.to_le_bytes());
    out[40..48].fill(0);
    encode_host(&mut out[48..66], msg.born_host);
    encode_host(&mut out[66..84], store_host);
    out[84..88].copy_from_slice(&msg.flags.to_le_bytes());
    out[88..92].copy_from_slice(&msg.reconsume_times.to_le_bytes());
    out[92..100].fill(0); // reserved
    let mut p = FIXED_LEN;
    out[p..p + 2].copy_from_slice(&(msg.topic.len() as u16).to_le_bytes());
    p += 2;
    out[p..p + msg.topic.len()].copy_from_slice(msg.topic.as_bytes());
    p += msg.topic.len();
    let props_len = properties_len(&msg.properties)?;
    out[p..p + 4].copy_from_slice(&(props_len as u32).to_le_bytes());
    p += 4;
    for (k, v) in &msg.properties {
        out[p..p + 2].copy_from_slice(&(k.len() as u16).to_le_bytes());
        p += 2;
        out[p..p + k.len()].copy_from_slice(k.as_bytes());
        p += k.len();
        out[p..p + 4].copy_from_slice(&(v.len() as u32).to_le_bytes());
        p += 4;
        out[p..p + v.len()].copy_from_slice(v.as_bytes());
        p += v.len();
    }
    out[p..p + 4].copy_from_slice(&(msg.body.len() as u32).to_le_bytes());
    p += 4;
    out[p..p + msg.body.len()].copy_from_slice(&msg.body);
    Ok(())
}

/// Writes the offsets and store timestamp chosen by the writer, then the CRC.
pub fn seal(rec: &mut [u8], queue_offset: u64, phys_offset: u64, store_timestamp_ms: i64) {
    rec[16..24].copy_from_slice(&queue_offset.to_le_bytes());
    rec[24..32].copy_from_slice(&phys_offset.to_le_bytes());
    rec[40..48].copy_from_slice(&store_timestamp_ms.to_le_bytes());
    let crc = crc32c::crc32c(&rec[8..]);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Writes an end-of-segment filler into `out` (the whole rest of the segment, at least
/// [`MIN_FILLER`] bytes). Only the header is written; the rest is left as it is.
pub fn write_filler(out: &mut [u8]) {
    let len = out.len() as u32;
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[8..10].copy_from_slice(&MAGIC_FILLER.to_le_bytes());
    out[10] = VERSION;
    out[11] = 0;
    let crc = crc32c::crc32c(&out[8..12]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Classifies the bytes at the start of `buf` (the rest of a segment from some position),
/// checking length, magic, version and CRC. `expected_phys` is where `buf` starts in the
/// commit log: a record claiming another position is corrupt.
pub fn probe(buf: &[u8], expected_phys: u64) -> Result<Slot> {
    probe_checked(buf, expected_phys, true)
}

/// [`probe`] without the message record's checksum, for a record this process checked
/// already: one it sealed itself, or one a replica verified when it received it. Its length,
/// magic, version and position are still checked, so a walk never leaves the record chain.
/// Whoever serves the record checks its checksum again ([`view`], [`decode`]).
pub fn probe_framing(buf: &[u8], expected_phys: u64) -> Result<Slot> {
    probe_checked(buf, expected_phys, false)
}

fn probe_checked(buf: &[u8], expected_phys: u64, checksum: bool) -> Result<Slot> {
    if buf.len() < MIN_FILLER {
        return Ok(Slot::Filler);
    }
    let total = u32_at(buf, 0) as usize;
    if total == 0 {
        // Only a fully-zero header is "never written"; anything else is a torn write.
        if buf[..MIN_FILLER].iter().all(|b| *b == 0) {
            return Ok(Slot::Empty);
        }
        return Err(StoreError::Corrupt {
            offset: expected_phys,
            reason: "zero length with non-zero header".into(),
        });
    }
    let magic = u16_at(buf, 8);
    let corrupt = |reason: String| StoreError::Corrupt {
        offset: expected_phys,
        reason,
    };
    if magic == MAGIC_FILLER {
        if total != buf.len() {
            return Err(corrupt(format!(
                "filler of {total} bytes where {} remain",
                buf.len()
            )));
        }
        if crc32c::crc32c(&buf[8..12]) != u32_at(buf, 4) {
            return Err(corrupt("filler checksum mismatch".into()));
        }
        return Ok(Slot::Filler);
    }
    if magic != MAGIC_MESSAGE {
        return Err(corrupt(format!("bad magic {magic:#06x}")));
    }
    if buf[10] != VERSION {
        return Err(corrupt(format!("unknown record version {}", buf[10])));
    }
    if total < MIN_RECORD_LEN || total > buf.len() {
        return Err(corrupt(format!(
            "length {total} outside {MIN_RECORD_LEN}..={}",
            buf.len()
        )));
    }
    let crc = u32_at(buf, 4);
    if checksum && crc32c::crc32c(&buf[8..total]) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    if u64_at(buf, 24) != expected_phys {
        return Err(corrupt(format!(
            "record says it lives at offset {}",
            u64_at(buf, 24)
        )));
    }
    Ok(Slot::Message(total as u32))
}

/// Reads the header of a record already validated by [`probe`].
pub fn header(rec: &[u8]) -> Result<RecordHeader> {
    if rec.len() < FIXED_LEN {
        return Err(StoreError::malformed(
            "record header",
            format!("{} bytes", rec.len()),
        ));
    }
    Ok(RecordHeader {
        total_len: u32_at(rec, 0),
        queue_id: u32_at(rec, 12),
        queue_offset: u64_at(rec, 16),
        phys_offset: u64_at(rec, 24),
        store_timestamp_ms: u64_at(rec, 40) as i64,
    })
}

/// A cursor over a byte slice that never reads past its end.
#[derive(Debug, Clone)]
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| {
                StoreError::malformed(
                    "record",
                    format!(
                        "{what} of {n} bytes overruns the record at byte {}",
                        self.pos
                    ),
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16> {
        let s = self.take(2, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
}

/// A verified record, read in place: its fields are borrowed from the bytes it was checked in
/// (a mapped segment), so a reader that only copies them out again (a pull writing its answer)
/// allocates nothing per message. [`decode`] is [`view`] followed by [`RecordView::to_message`].
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    rec: &'a [u8],
    topic: &'a str,
    /// The encoded properties, every key and value already checked to be UTF-8.
    props: &'a [u8],
    body: &'a [u8],
}

impl<'a> RecordView<'a> {
    pub fn topic(&self) -> &'a str {
        self.topic
    }
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
    /// Length of the whole record on disk.
    pub fn size(&self) -> u32 {
        u32_at(self.rec, 0)
    }
    pub fn queue_id(&self) -> u32 {
        u32_at(self.rec, 12)
    }
    pub fn queue_offset(&self) -> u64 {
        u64_at(self.rec, 16)
    }
    pub fn phys_offset(&self) -> u64 {
        u64_at(self.rec, 24)
    }
    pub fn born_timestamp_ms(&self) -> i64 {
        u64_at(self.rec, 32) as i64
    }
    pub fn store_timestamp_ms(&self) -> i64 {
        u64_at(self.rec, 40) as i64
    }
    pub fn born_host(&self) -> Option<SocketAddr> {
        decode_host(&self.rec[48..66])
    }
    pub fn store_host(&self) -> Option<SocketAddr> {
        decode_host(&self.rec[66..84])
    }
    pub fn flags(&self) -> u32 {
        u32_at(self.rec, 84)
    }
    pub fn reconsume_times(&self) -> u32 {
        u32_at(self.rec, 88)
    }

    /// The properties in stored order (by name: they are written from a sorted map).
    pub fn properties(&self) -> Properties<'a> {
        Properties {
            r: Reader {
                buf: self.props,
                pos: 0,
            },
        }
    }

    /// The value of property `key`, if set.
    pub fn property(&self, key: &str) -> Option<&'a str> {
        self.properties().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The message's tag (property `TAGS`), if any.
    pub fn tag(&self) -> Option<&'a str> {
        self.property(crate::PROP_TAGS)
    }

    /// An owned copy of every field.
    pub fn to_message(&self) -> StoredMessage {
        StoredMessage {
            topic: self.topic.to_string(),
            queue_id: self.queue_id(),
            queue_offset: self.queue_offset(),
            phys_offset: self.phys_offset(),
            size: self.size(),
            born_timestamp_ms: self.born_timestamp_ms(),
            store_timestamp_ms: self.store_timestamp_ms(),
            born_host: self.born_host(),
            store_host: self.store_host(),
            flags: self.flags(),
            reconsume_times: self.reconsume_times(),
            properties: self
                .properties()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: self.body.to_vec(),
        }
    }
}

/// The properties of a [`RecordView`], as `(key, value)` pairs.
#[derive(Debug, Clone)]
pub struct Properties<'a> {
    r: Reader<'a>,
}

impl<'a> Iterator for Properties<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        // Checked by `view`: every entry is whole and UTF-8, so nothing here fails.
        let (k, v) = next_property(&mut self.r).ok()??;
        Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?))
    }
}

/// The next raw property of `r` (`None` at its end).
fn next_property<'a>(r: &mut Reader<'a>) -> Result<Option<(&'a [u8], &'a [u8])>> {
    if r.pos >= r.buf.len() {
        return Ok(None);
    }
    let kl = r.u16("property key length")? as usize;
    let k = r.take(kl, "property key")?;
    let vl = r.u32("property value length")? as usize;
    let v = r.take(vl, "property value")?;
    Ok(Some((k, v)))
}

/// Verifies the record at the start of `buf` (its checksum, position and every length) and
/// returns it in place. `buf` may be longer than the record. Never panics and never allocates.
pub fn view(buf: &[u8], expected_phys: u64) -> Result<RecordView<'_>> {
    let len = match probe(buf, expected_phys)? {
        Slot::Message(len) => len as usize,
        Slot::Filler | Slot::Empty => {
            return Err(StoreError::Corrupt {
                offset: expected_phys,
                reason: "no message record here".into(),
            })
        }
    };
    // `probe` checked `len` >= MIN_RECORD_LEN, so the fixed part is whole.
    let rec = &buf[..len];
    let mut r = Reader {
        buf: rec,
        pos: FIXED_LEN,
    };
    let topic_len = r.u16("topic length")? as usize;
    let topic = std::str::from_utf8(r.take(topic_len, "topic")?)
        .map_err(|_| StoreError::malformed("record", "topic is not UTF-8"))?;
    let props_len = r.u32("properties length")? as usize;
    if props_len > MAX_PROPERTIES_LEN {
        return Err(StoreError::malformed(
            "record",
            format!("properties length {props_len}"),
        ));
    }
    let props = r.take(props_len, "properties")?;
    let mut pr = Reader { buf: props, pos: 0 };
    while let Some((k, v)) = next_property(&mut pr)? {
        if std::str::from_utf8(k).is_err() {
            return Err(StoreError::malformed("record", "property key is not UTF-8"));
        }
        if std::str::from_utf8(v).is_err() {
            return Err(StoreError::malformed(
                "record",
                "property value is not UTF-8",
            ));
        }
    }
    let body_len = r.u32("body length")? as usize;
    let body = r.take(body_len, "body")?;
    if r.pos != rec.len() {
        return Err(StoreError::malformed(
            "record",
            format!("{} trailing bytes", rec.len() - r.pos),
        ));
    }
    Ok(RecordView {
        rec,
        topic,
        props,
        body,
    })
}

/// Decodes a whole record, verifying its checksum. `buf` may be longer than the record.
/// Never panics and never allocates more than the record's own length.
pub fn decode(buf: &[u8], expected_phys: u64) -> Result<StoredMessage> {
    view(buf, expected_phys).map(|v| v.to_message())
}

/// Reads only the topic of a validated record (the dispatcher's hot path).
pub fn topic_of(rec: &[u8]) -> Result<&str> {
    let mut r = Reader {
        buf: rec,
        pos: FIXED_LEN,
    };
    let n = r.u16("topic length")? as usize;
    let t = r.take(n, "topic")?;
    std::str::from_utf8(t).map_err(|_| StoreError::malformed("record", "topic is not UTF-8"))
}

/// Calls `f` for every property of a validated record without copying anything.
pub fn for_each_property<'a>(rec: &'a [u8], mut f: impl FnMut(&'a str, &'a str)) -> Result<()> {
    let mut r = Reader {
        buf: rec,
        pos: FIXED_LEN,
    };
    let n = r.u16("topic length")? as usize;
    r.take(n, "topic")?;
    let props_len = r.u32("properties length")? as usize;
    let props = r.take(props_len, "properties")?;
    let mut pr = Reader { buf: props, pos: 0 };
    while let Some((k, v)) = next_property(&mut pr)? {
        if let (Ok(k), Ok(v)) = (std::str::from_utf8(k), std::str::from_utf8(v)) {
            f(k, v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> NewMessage {
        let mut properties = BTreeMap::new();
        properties.insert(crate::PROP_TAGS.to_string(), "TagA".to_string());
        properties.insert(crate::PROP_KEYS.to_string(), "k1 k2".to_string());
        NewMessage {
            topic: "orders".into(),
            queue_id: 3,
            born_timestamp_ms: 1_700_000_000_000,
            born_host: Some("10.1.2.3:4567".parse().unwrap()),
            flags: 7,
            reconsume_times: 2,
            properties,
            body: b"hello".to_vec().into(),
        }
    }

    fn encode_sealed(m: &NewMessage, qo: u64, po: u64) -> Vec<u8> {
        let mut buf = vec![0u8; encoded_len(m).unwrap()];
        encode(m, Some("[::1]:10911".parse().unwrap()), &mut buf).unwrap();
        seal(&mut buf, qo, po, 1_700_000_000_123);
        buf
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let m = sample();
        let buf = encode_sealed(&m, 41, 4096);
        let d = decode(&buf, 4096).unwrap();
        assert_eq!(d.topic, m.topic);
        assert_eq!(d.queue_id, 3);
        assert_eq!(d.queue_offset, 41);
        assert_eq!(d.phys_offset, 4096);
        assert_eq!(d.size as usize, buf.len());
        assert_eq!(d.born_timestamp_ms, m.born_timestamp_ms);
        assert_eq!(d.store_timestamp_ms, 1_700_000_000_123);
        assert_eq!(d.born_host, m.born_host);
        assert_eq!(d.store_host, Some("[::1]:10911".parse().unwrap()));
        assert_eq!(d.flags, 7);
        assert_eq!(d.reconsume_times, 2);
        assert_eq!(d.properties, m.properties);
        assert_eq!(d.body, m.body);
        assert_eq!(d.tag(), Some("TagA"));
        assert_eq!(d.keys().collect::<Vec<_>>(), vec!["k1", "k2"]);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let buf = encode_sealed(&sample(), 1, 0);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(
                    decode(&b, 0).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    /// Records written before the transaction fields were reserved may carry values there (a
    /// transaction kind, a prepared offset): they still decode, and the values are ignored.
    #[test]
    fn values_in_the_reserved_fields_are_read_and_ignored() {
        let m = sample();
        let mut buf = encode_sealed(&m, 41, 4096);
        assert_eq!(buf[11], 0);
        assert!(buf[92..100].iter().all(|b| *b == 0));
        buf[11] = 2;
        buf[92..100].copy_from_slice(&99u64.to_le_bytes());
        let crc = crc32c::crc32c(&buf[8..]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let d = decode(&buf, 4096).unwrap();
        assert_eq!(
            (d.body, d.properties, d.queue_offset),
            (m.body.to_vec(), m.properties, 41)
        );
    }

    #[test]
    fn record_at_the_wrong_place_is_refused() {
        let buf = encode_sealed(&sample(), 1, 100);
        assert!(matches!(
            decode(&buf, 200),
            Err(StoreError::Corrupt { offset: 200, .. })
        ));
    }

    /// The framing-only probe skips the body's checksum (the record was checked when this
    /// process wrote or received it) but nothing that keeps a walk on the record chain.
    #[test]
    fn the_framing_probe_skips_only_the_checksum() {
        let mut buf = encode_sealed(&sample(), 1, 100);
        let len = buf.len();
        buf[len - 1] ^= 0x55;
        assert!(matches!(
            probe(&buf, 100),
            Err(StoreError::Corrupt { offset: 100, .. })
        ));
        assert_eq!(probe_framing(&buf, 100).unwrap(), Slot::Message(len as u32));
        assert!(
            view(&buf, 100).is_err(),
            "whoever serves it checks the checksum again"
        );
        assert!(probe_framing(&buf, 200).is_err(), "position still checked");
        buf[8] ^= 0xff;
        assert!(probe_framing(&buf, 100).is_err(), "magic still checked");
    }

    #[test]
    fn filler_and_empty_are_recognised() {
        let mut seg = vec![0u8; 64];
        assert_eq!(probe(&seg, 0).unwrap(), Slot::Empty);
        write_filler(&mut seg);
        assert_eq!(probe(&seg, 0).unwrap(), Slot::Filler);
        assert_eq!(probe(&seg[..5], 0).unwrap(), Slot::Filler);
    }

    #[test]
    fn oversized_topic_is_refused() {
        let mut m = sample();
        m.topic = "t".repeat(MAX_TOPIC_LEN + 1);
        assert!(matches!(
            encoded_len(&m),
            Err(StoreError::InvalidField { field: "topic", .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_messages_round_trip(
            topic in "[a-zA-Z0-9_%|-]{1,127}",
            queue_id in any::<u32>(),
            qo in any::<u64>(),
            po in any::<u64>(),
            props in proptest::collection::btree_map("[a-zA-Z_]{1,16}", ".{0,40}", 0..6),
            body in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let m = NewMessage { topic, queue_id, properties: props, body: body.into(), ..Default::default() };
            let buf = encode_sealed(&m, qo, po);
            let d = decode(&buf, po).unwrap();
            prop_assert_eq!(d.topic, m.topic);
            prop_assert_eq!(d.queue_offset, qo);
            prop_assert_eq!(d.properties, m.properties);
            prop_assert_eq!(d.body, m.body);
        }

        /// The decoder takes any bytes: it returns an error or a message, never panics.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), phys in any::<u64>()) {
            let _ = decode(&bytes, phys);
            let _ = probe(&bytes, phys);
        }

        /// Valid headers with random payloads and a fixed-up CRC exercise the inner decoder.
        #[test]
        fn arbitrary_payload_with_valid_crc_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..400)) {
            let total = FIXED_LEN + payload.len();
            let mut b = vec![0u8; total];
            b[0..4].copy_from_slice(&(total as u32).to_le_bytes());
            b[8..10].copy_from_slice(&MAGIC_MESSAGE.to_le_bytes());
            b[10] = VERSION;
            b[FIXED_LEN..].copy_from_slice(&payload);
            let crc = crc32c::crc32c(&b[8..]);
            b[4..8].copy_from_slice(&crc.to_le_bytes());
            let _ = decode(&b, 0);
        }
    }
}
