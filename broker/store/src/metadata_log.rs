//! The metadata log: topics and consumer offsets as an append-only file of small checksummed
//! frames, so that creating a topic or committing an offset writes a few dozen bytes whatever
//! the number of topics and groups (rewriting whole JSON files cost 110 KiB per ack with 2 000
//! groups).
//!
//! ## On disk
//! `config/metadata.log` is a sequence of frames (integers little-endian):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 4 | `magic` = `0xF3DA_0001` (the low half is the format version) |
//! | 4  | 4 | `payload_len` (at most [`MAX_PAYLOAD`]) |
//! | 8  | 4 | `crc`: CRC32C over bytes 4..8 and the payload |
//! | 12 | `payload_len` | one or more operations |
//!
//! A frame is the unit of atomicity: its operations apply together or not at all. An operation
//! is a tag byte and its fields; a string is a `u16` length and UTF-8 bytes:
//!
//! | tag | operation | fields |
//! |----:|-----------|--------|
//! | 1 | topic put | name, `queues` u32, `message_type` u8, `permission` u8 |
//! | 2 | topic delete | name, `fence` u64: removes the topic and every offset on it |
//! | 3 | topic fence | name, `fence` u64: removes every offset on the topic |
//! | 4 | offset set | group, topic, `queue_id` u32, `offset` u64 |
//! | 5 | offset remove | group, `has_topic` u8, then the topic if 1 |
//! | 6 | topic put with retention | the fields of tag 1, then `retention_ms` u64 (more than 0) |
//!
//! A topic without a retention of its own is written with tag 1, so a log that uses no
//! per-topic retention stays readable by binaries older than tag 6.
//!
//! A fence is the commit log offset below which records of that topic name belong to an
//! earlier incarnation of the topic and are never served again (see [`crate::metadata`]).
//! Message types are 0 normal, 1 fifo, 2 delay, 3 transaction, 4 priority; permissions 0
//! read-write, 1 read, 2 write, 3 none.
//!
//! ## Recovery
//! Frames are applied in order. The first frame that fails its checks (magic, a length past
//! the end of the file, CRC, an operation that does not decode) ends the log when no valid frame
//! follows it anywhere after: that is a torn tail (a write cut by a crash), cut off with one log
//! line naming the file and the bytes dropped. The file's length is not trusted, so zeros left
//! by a filesystem after a crash are a torn tail too. A valid frame after a damaged one means
//! damage inside the log: the store refuses to open rather than guess at metadata.
//!
//! ## Compaction
//! Once the log is larger than `metadata_compact_bytes` and twice its last snapshot, the whole
//! state is written as frames to `metadata.log.tmp`, fsynced, renamed over `metadata.log`, and
//! the directory fsynced: a crash leaves the old log or the new one, whole. The amortised cost
//! per operation stays a few bytes.
//!
//! ## Space
//! Room for the next appends is reserved beyond the end of the file (`fallocate` with
//! `FALLOC_FL_KEEP_SIZE`: the length stays the data's length), so offset commits and the
//! shutdown's last writes keep working for a while on a disk that has just filled.
//!
//! ## Migration
//! A data directory without `metadata.log` but with the JSON files written before it
//! (`topics.json`, `offsets.json`) is migrated at open: their content becomes the first
//! snapshot, and they are renamed `*.json.migrated`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use crate::error::{Result, StoreError};
use crate::metadata::{MessageType, OffsetKey, Permission, TopicConfig};

/// Magic of a frame; the low half is the format version.
pub const MAGIC: u32 = 0xF3DA_0001;
/// Frame header size.
pub const HEADER_LEN: usize = 12;
/// Largest payload a frame may declare, so a damaged length cannot make us allocate much.
pub const MAX_PAYLOAD: usize = 16 << 20;
/// Snapshots are written in frames of about this many bytes.
const SNAPSHOT_FRAME: usize = 1 << 20;
/// Room kept reserved beyond the end of the log.
const RESERVE: u64 = 512 << 10;

/// The file name of the log inside the metadata directory.
pub const FILE_NAME: &str = "metadata.log";

/// One change to the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    TopicPut(TopicConfig),
    TopicDelete {
        name: String,
        fence: u64,
    },
    TopicFence {
        name: String,
        fence: u64,
    },
    OffsetSet {
        key: OffsetKey,
        offset: u64,
    },
    OffsetRemove {
        group: String,
        topic: Option<String>,
    },
}

fn type_byte(t: MessageType) -> u8 {
    match t {
        MessageType::Normal => 0,
        MessageType::Fifo => 1,
        MessageType::Delay => 2,
        MessageType::Transaction => 3,
        MessageType::Priority => 4,
    }
}

fn type_from(b: u8) -> Option<MessageType> {
    Some(match b {
        0 => MessageType::Normal,
        1 => MessageType::Fifo,
        2 => MessageType::Delay,
        3 => MessageType::Transaction,
        4 => MessageType::Priority,
        _ => return None,
    })
}

fn perm_byte(p: Permission) -> u8 {
    match p {
        Permission::ReadWrite => 0,
        Permission::Read => 1,
        Permission::Write => 2,
        Permission::None => 3,
    }
}

fn perm_from(b: u8) -> Option<Permission> {
    Some(match b {
        0 => Permission::ReadWrite,
        1 => Permission::Read,
        2 => Permission::Write,
        3 => Permission::None,
        _ => return None,
    })
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<()> {
    let len = u16::try_from(s.len()).map_err(|_| StoreError::InvalidField {
        field: "metadata",
        reason: format!("a name of {} bytes does not fit the metadata log", s.len()),
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Appends the encoding of `op` to `out`.
pub fn encode_op(op: &Op, out: &mut Vec<u8>) -> Result<()> {
    match op {
        Op::TopicPut(t) => {
            out.push(if t.retention_ms.is_some() { 6 } else { 1 });
            put_str(out, &t.name)?;
            out.extend_from_slice(&t.queues.to_le_bytes());
            out.push(type_byte(t.message_type));
            out.push(perm_byte(t.permission));
            if let Some(ms) = t.retention_ms {
                out.extend_from_slice(&ms.to_le_bytes());
            }
        }
        Op::TopicDelete { name, fence } | Op::TopicFence { name, fence } => {
            out.push(if matches!(op, Op::TopicDelete { .. }) {
                2
            } else {
                3
            });
            put_str(out, name)?;
            out.extend_from_slice(&fence.to_le_bytes());
        }
        Op::OffsetSet { key, offset } => {
            out.push(4);
            put_str(out, &key.group)?;
            put_str(out, &key.topic)?;
            out.extend_from_slice(&key.queue_id.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        Op::OffsetRemove { group, topic } => {
            out.push(5);
            put_str(out, group)?;
            match topic {
                None => out.push(0),
                Some(t) => {
                    out.push(1);
                    put_str(out, t)?;
                }
            }
        }
    }
    Ok(())
}

/// Appends one frame holding `ops` to `out`.
pub fn encode_frame(ops: &[Op], out: &mut Vec<u8>) -> Result<()> {
    let mut payload = Vec::new();
    for op in ops {
        encode_op(op, &mut payload)?;
    }
    wrap(&payload, out)
}

/// Appends a frame around the encoded operations in `payload` to `out`.
fn wrap(payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    if payload.len() > MAX_PAYLOAD {
        return Err(StoreError::InvalidField {
            field: "metadata",
            reason: format!(
                "a frame of {} bytes is over the limit of {MAX_PAYLOAD}",
                payload.len()
            ),
        });
    }
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&len);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// A cursor that never reads past its slice.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| format!("operation overruns the frame at byte {}", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        let mut x = [0u8; 8];
        x.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(x))
    }
    fn str(&mut self) -> std::result::Result<String, String> {
        let s = self.take(2)?;
        let n = u16::from_le_bytes([s[0], s[1]]) as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }
}

fn decode_op(r: &mut Reader<'_>) -> std::result::Result<Op, String> {
    Ok(match r.u8()? {
        tag @ (1 | 6) => {
            let name = r.str()?;
            let queues = r.u32()?;
            let t = r.u8()?;
            let p = r.u8()?;
            let retention_ms = match tag {
                6 => match r.u64()? {
                    0 => return Err("a topic retention of 0 ms".into()),
                    ms => Some(ms),
                },
                _ => None,
            };
            Op::TopicPut(TopicConfig {
                name,
                queues,
                message_type: type_from(t).ok_or_else(|| format!("message type {t}"))?,
                permission: perm_from(p).ok_or_else(|| format!("permission {p}"))?,
                retention_ms,
            })
        }
        2 => Op::TopicDelete {
            name: r.str()?,
            fence: r.u64()?,
        },
        3 => Op::TopicFence {
            name: r.str()?,
            fence: r.u64()?,
        },
        4 => {
            let group = r.str()?;
            let topic = r.str()?;
            let queue_id = r.u32()?;
            Op::OffsetSet {
                key: OffsetKey {
                    group,
                    topic,
                    queue_id,
                },
                offset: r.u64()?,
            }
        }
        5 => {
            let group = r.str()?;
            let topic = match r.u8()? {
                0 => None,
                1 => Some(r.str()?),
                b => return Err(format!("topic flag {b}")),
            };
            Op::OffsetRemove { group, topic }
        }
        tag => return Err(format!("unknown operation {tag}")),
    })
}

/// Decodes the frame at the start of `buf`: its operations and its length on disk. Any damage
/// is an error with the reason; never panics and never allocates beyond the frame's bytes.
pub fn decode_frame(buf: &[u8]) -> std::result::Result<(Vec<Op>, usize), String> {
    if buf.len() < HEADER_LEN {
        return Err(format!("{} bytes, shorter than a frame header", buf.len()));
    }
    let magic = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if magic != MAGIC {
        return Err(format!("bad magic {magic:#010x}"));
    }
    let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(format!("payload length {len} over the limit"));
    }
    if HEADER_LEN + len > buf.len() {
        return Err(format!(
            "frame of {len} bytes runs past the end ({} left)",
            buf.len() - HEADER_LEN
        ));
    }
    let payload = &buf[HEADER_LEN..HEADER_LEN + len];
    let crc = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if crc32c::crc32c_append(crc32c::crc32c(&buf[4..8]), payload) != crc {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let mut ops = Vec::new();
    while r.pos < payload.len() {
        ops.push(decode_op(&mut r)?);
    }
    Ok((ops, HEADER_LEN + len))
}

/// What a scan of a whole log found.
#[derive(Debug, Default, PartialEq)]
pub struct Scan {
    /// The operations of every valid frame, frame by frame, in order.
    pub frames: Vec<Vec<Op>>,
    /// Bytes of valid frames: the log continues here.
    pub valid_len: usize,
    /// A torn tail after them: its reason (bytes dropped = file length - `valid_len`).
    pub torn: Option<String>,
}

/// Interior damage: a frame that fails its checks with a valid frame after it.
#[derive(Debug, PartialEq)]
pub struct Damage {
    pub offset: usize,
    pub reason: String,
    pub next_valid: usize,
}

/// Reads every frame of a log (see the module docs for how damage is told from a torn tail).
pub fn scan(buf: &[u8]) -> std::result::Result<Scan, Damage> {
    let mut out = Scan::default();
    let mut pos = 0;
    while pos < buf.len() {
        match decode_frame(&buf[pos..]) {
            Ok((ops, len)) => {
                out.frames.push(ops);
                pos += len;
            }
            Err(reason) => {
                if let Some(next_valid) = next_valid_frame(buf, pos + 1) {
                    return Err(Damage {
                        offset: pos,
                        reason,
                        next_valid,
                    });
                }
                out.torn = Some(reason);
                break;
            }
        }
    }
    out.valid_len = pos;
    Ok(out)
}

/// The first position at or after `from` where a valid frame starts.
fn next_valid_frame(buf: &[u8], from: usize) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    (from..buf.len().saturating_sub(HEADER_LEN - 1))
        .find(|&at| buf[at..at + 4] == magic && decode_frame(&buf[at..]).is_ok())
}

/// The open log file, positioned for appends.
#[derive(Debug)]
pub struct LogFile {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Bytes of valid frames: the next frame goes here.
    len: u64,
    /// The file is allocated up to here.
    reserved_to: u64,
    /// Length right after the last snapshot (compaction waits for twice this).
    snapshot_len: u64,
    /// A failed append left bytes after `len` that could not be cut: appends wait for the cut.
    needs_cut: bool,
    /// Frames were appended after the last fdatasync.
    unsynced: bool,
}

fn disk_full_or(e: std::io::Error, what: String) -> StoreError {
    if crate::mapped_file::is_disk_full(&e) {
        StoreError::DiskFull { detail: what }
    } else {
        StoreError::io(what, e)
    }
}

impl LogFile {
    /// Opens the log in `dir` and returns it with the operations it holds, frame by frame.
    /// A torn tail is cut; a log that does not exist yet starts empty (see [`LogFile::create`]
    /// for the first snapshot).
    pub fn open(dir: &Path) -> Result<Option<(LogFile, Vec<Vec<Op>>)>> {
        let path = dir.join(FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(format!("read {}", path.display()), e)),
        };
        let scan = scan(&bytes).map_err(|d| {
            StoreError::malformed(
                "metadata log",
                format!(
                    "{}: damaged frame at byte {} ({}) with valid frames after it (at byte {}); \
                     refusing to guess at topics and offsets: restore the file from a backup",
                    path.display(),
                    d.offset,
                    d.reason,
                    d.next_valid
                ),
            )
        })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
        let valid = scan.valid_len as u64;
        if let Some(reason) = &scan.torn {
            warn!(
                file = %path.display(),
                offset = valid,
                bytes_dropped = bytes.len() as u64 - valid,
                %reason,
                "torn tail in the metadata log: dropped"
            );
            file.set_len(valid)
                .map_err(|e| StoreError::io(format!("cut {}", path.display()), e))?;
            file.sync_all()
                .map_err(|e| StoreError::io(format!("fsync {}", path.display()), e))?;
        }
        let mut log = LogFile {
            dir: dir.to_path_buf(),
            path,
            file,
            len: valid,
            reserved_to: valid,
            snapshot_len: valid,
            needs_cut: false,
            unsynced: false,
        };
        log.reserve_ahead();
        Ok(Some((log, scan.frames)))
    }

    /// Writes a new log holding `ops` (a snapshot) and returns it open for appends.
    pub fn create(dir: &Path, ops: &[Op]) -> Result<LogFile> {
        let path = dir.join(FILE_NAME);
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        let mut bytes = Vec::new();
        let mut chunk = Vec::new();
        for op in ops {
            encode_op(op, &mut chunk)?;
            if chunk.len() >= SNAPSHOT_FRAME {
                Self::flush_chunk(&mut chunk, &mut bytes)?;
            }
        }
        Self::flush_chunk(&mut chunk, &mut bytes)?;
        let written = (|| -> Result<File> {
            let mut f = File::create(&tmp)
                .map_err(|e| StoreError::io(format!("create {}", tmp.display()), e))?;
            f.write_all(&bytes)
                .map_err(|e| disk_full_or(e, format!("write {}", tmp.display())))?;
            f.sync_all()
                .map_err(|e| StoreError::io(format!("fsync {}", tmp.display()), e))?;
            std::fs::rename(&tmp, &path)
                .map_err(|e| StoreError::io(format!("rename {}", tmp.display()), e))?;
            crate::checkpoint::sync_dir(dir)?;
            Ok(f)
        })();
        let file = match written {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let len = bytes.len() as u64;
        let mut log = LogFile {
            dir: dir.to_path_buf(),
            path,
            file,
            len,
            reserved_to: len,
            snapshot_len: len,
            needs_cut: false,
            unsynced: false,
        };
        log.reserve_ahead();
        Ok(log)
    }

    /// Wraps the encoded operations in `chunk` (if any) into a frame appended to `out`.
    fn flush_chunk(chunk: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<()> {
        if !chunk.is_empty() {
            wrap(chunk, out)?;
            chunk.clear();
        }
        Ok(())
    }

    /// Bytes of valid frames in the log.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the log has grown enough since its last snapshot to be rewritten.
    pub fn wants_compaction(&self, compact_bytes: u64) -> bool {
        self.len > compact_bytes.max(2 * self.snapshot_len)
    }

    /// Appends one frame of `ops` and returns once it is on disk (fdatasync), with every
    /// frame appended before it. On failure the log is cut back to where it was, so a
    /// half-written frame never sits before a later one.
    pub fn append(&mut self, ops: &[Op]) -> Result<u64> {
        self.append_with(ops, true)
    }

    /// Appends one frame of `ops` to the page cache only: it survives the process being killed
    /// but not a power loss until the next [`LogFile::sync`] or synced append. A torn or lost
    /// tail is cut on open like any other.
    pub fn append_unsynced(&mut self, ops: &[Op]) -> Result<u64> {
        self.append_with(ops, false)
    }

    /// Whether frames were appended after the last fdatasync.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced
    }

    /// Puts the frames appended without a sync on disk (nothing to do when there are none).
    pub fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            self.file
                .sync_data()
                .map_err(|e| StoreError::io(format!("fsync {}", self.path.display()), e))?;
            self.unsynced = false;
        }
        Ok(())
    }

    fn append_with(&mut self, ops: &[Op], sync: bool) -> Result<u64> {
        if ops.is_empty() {
            if sync {
                self.sync()?;
            }
            return Ok(0);
        }
        if self.needs_cut {
            self.file
                .set_len(self.len)
                .map_err(|e| StoreError::io(format!("cut {}", self.path.display()), e))?;
            self.needs_cut = false;
        }
        let mut frame = Vec::new();
        encode_frame(ops, &mut frame)?;
        let r = self
            .file
            .write_all_at(&frame, self.len)
            .map_err(|e| disk_full_or(e, format!("append to {}", self.path.display())))
            .and_then(|()| {
                if sync {
                    self.file
                        .sync_data()
                        .map_err(|e| StoreError::io(format!("fsync {}", self.path.display()), e))
                } else {
                    Ok(())
                }
            });
        if let Err(e) = r {
            if self.file.set_len(self.len).is_err() {
                self.needs_cut = true;
            }
            return Err(e);
        }
        self.unsynced = !sync;
        self.len += frame.len() as u64;
        self.reserve_ahead();
        Ok(frame.len() as u64)
    }

    /// Keeps [`RESERVE`] bytes allocated past the end, without changing the file's length.
    fn reserve_ahead(&mut self) {
        if self.reserved_to >= self.len + RESERVE / 4 {
            return;
        }
        // SAFETY: plain syscall on a descriptor we own.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                self.len as libc::off_t,
                RESERVE as libc::off_t,
            )
        };
        if rc == 0 {
            self.reserved_to = self.len + RESERVE;
        } else {
            debug!(file = %self.path.display(), error = %std::io::Error::last_os_error(), "cannot reserve room for the metadata log");
        }
    }

    /// Replaces the log with a snapshot holding `ops`.
    pub fn rewrite(&mut self, ops: &[Op]) -> Result<()> {
        *self = LogFile::create(&self.dir, ops)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topic(name: &str, queues: u32) -> TopicConfig {
        TopicConfig {
            name: name.into(),
            queues,
            message_type: MessageType::Fifo,
            permission: Permission::Read,
            retention_ms: None,
        }
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9%|_-]{1,40}"
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let ty = prop_oneof![
            Just(MessageType::Normal),
            Just(MessageType::Fifo),
            Just(MessageType::Delay),
            Just(MessageType::Transaction),
            Just(MessageType::Priority)
        ];
        let perm = prop_oneof![
            Just(Permission::ReadWrite),
            Just(Permission::Read),
            Just(Permission::Write),
            Just(Permission::None)
        ];
        prop_oneof![
            (
                arb_name(),
                any::<u32>(),
                ty,
                perm,
                proptest::option::of(1..=u64::MAX)
            )
                .prop_map(|(name, queues, message_type, permission, retention_ms)| {
                    Op::TopicPut(TopicConfig {
                        name,
                        queues,
                        message_type,
                        permission,
                        retention_ms,
                    })
                }),
            (arb_name(), any::<u64>()).prop_map(|(name, fence)| Op::TopicDelete { name, fence }),
            (arb_name(), any::<u64>()).prop_map(|(name, fence)| Op::TopicFence { name, fence }),
            (arb_name(), arb_name(), any::<u32>(), any::<u64>()).prop_map(
                |(group, topic, queue_id, offset)| {
                    Op::OffsetSet {
                        key: OffsetKey {
                            group,
                            topic,
                            queue_id,
                        },
                        offset,
                    }
                }
            ),
            (arb_name(), proptest::option::of(arb_name()))
                .prop_map(|(group, topic)| Op::OffsetRemove { group, topic }),
        ]
    }

    fn frames_bytes(frames: &[Vec<Op>]) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut ends = Vec::new();
        for f in frames {
            encode_frame(f, &mut out).unwrap();
            ends.push(out.len());
        }
        (out, ends)
    }

    #[test]
    fn a_topic_without_its_own_retention_keeps_the_old_encoding() {
        let mut plain = Vec::new();
        encode_op(&Op::TopicPut(topic("orders", 8)), &mut plain).unwrap();
        assert_eq!(plain[0], 1, "tag 1, readable by binaries older than tag 6");
        let kept = TopicConfig {
            retention_ms: Some(86_400_000),
            ..topic("orders", 8)
        };
        let mut with = Vec::new();
        encode_op(&Op::TopicPut(kept.clone()), &mut with).unwrap();
        assert_eq!(with[0], 6);
        assert_eq!(with.len(), plain.len() + 8);
        let mut r = Reader { buf: &with, pos: 0 };
        assert_eq!(decode_op(&mut r).unwrap(), Op::TopicPut(kept));
        // A zero retention cannot be written by the store: reading one is damage.
        let zero = with.len() - 8;
        with[zero..].copy_from_slice(&0u64.to_le_bytes());
        let mut r = Reader { buf: &with, pos: 0 };
        assert!(decode_op(&mut r).unwrap_err().contains("retention"));
    }

    #[test]
    fn a_frame_round_trips_every_operation() {
        let ops = vec![
            Op::TopicPut(topic("orders", 8)),
            Op::TopicPut(TopicConfig {
                retention_ms: Some(3_600_000),
                ..topic("short", 2)
            }),
            Op::TopicDelete {
                name: "old".into(),
                fence: 1 << 40,
            },
            Op::TopicFence {
                name: "x".into(),
                fence: 7,
            },
            Op::OffsetSet {
                key: OffsetKey {
                    group: "g".into(),
                    topic: "orders".into(),
                    queue_id: 3,
                },
                offset: 99,
            },
            Op::OffsetRemove {
                group: "g".into(),
                topic: None,
            },
            Op::OffsetRemove {
                group: "g".into(),
                topic: Some("orders".into()),
            },
        ];
        let mut b = Vec::new();
        encode_frame(&ops, &mut b).unwrap();
        assert_eq!(decode_frame(&b).unwrap(), (ops, b.len()));
    }

    #[test]
    fn an_offset_commit_is_a_few_dozen_bytes() {
        let mut b = Vec::new();
        encode_frame(
            &[Op::OffsetSet {
                key: OffsetKey {
                    group: "group-1999".into(),
                    topic: "topic-0042".into(),
                    queue_id: 7,
                },
                offset: 123_456,
            }],
            &mut b,
        )
        .unwrap();
        assert_eq!(b.len(), HEADER_LEN + 1 + 12 + 12 + 4 + 8);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut b = Vec::new();
        encode_frame(&[Op::TopicPut(topic("orders", 8))], &mut b).unwrap();
        for i in 0..b.len() * 8 {
            let mut c = b.clone();
            c[i / 8] ^= 1 << (i % 8);
            assert!(decode_frame(&c).is_err(), "flip of bit {i} went unnoticed");
        }
    }

    #[test]
    fn damage_before_a_valid_frame_is_refused_not_cut() {
        let frames = vec![
            vec![Op::TopicPut(topic("a", 1))],
            vec![Op::TopicPut(topic("b", 2))],
            vec![Op::TopicPut(topic("c", 3))],
        ];
        let (mut b, ends) = frames_bytes(&frames);
        b[ends[0] + HEADER_LEN + 2] ^= 0x40;
        let d = scan(&b).unwrap_err();
        assert_eq!((d.offset, d.next_valid), (ends[0], ends[1]));
    }

    #[test]
    fn zeros_after_the_log_are_a_torn_tail() {
        let frames = vec![vec![Op::TopicPut(topic("a", 1))]];
        let (mut b, ends) = frames_bytes(&frames);
        b.extend_from_slice(&[0u8; 4096]);
        let s = scan(&b).unwrap();
        assert_eq!((s.frames, s.valid_len), (frames, ends[0]));
        assert!(s.torn.is_some());
    }

    #[test]
    fn appends_survive_reopen_and_a_torn_tail_is_cut_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::create(dir.path(), &[Op::TopicPut(topic("a", 1))]).unwrap();
        log.append(&[Op::TopicPut(topic("b", 2))]).unwrap();
        let good = log.len();
        drop(log);
        let path = dir.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&MAGIC.to_le_bytes()).unwrap();
        f.write_all(&[9, 0, 0, 0, 1]).unwrap();
        drop(f);
        let (mut log, frames) = LogFile::open(dir.path()).unwrap().unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(log.len(), good);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        log.append(&[Op::TopicPut(topic("c", 3))]).unwrap();
        drop(log);
        let (_, frames) = LogFile::open(dir.path()).unwrap().unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2], vec![Op::TopicPut(topic("c", 3))]);
    }

    proptest! {
        #[test]
        fn frames_round_trip(frames in proptest::collection::vec(proptest::collection::vec(arb_op(), 1..6), 0..12)) {
            let (b, ends) = frames_bytes(&frames);
            let s = scan(&b).unwrap();
            prop_assert_eq!(s.frames, frames);
            prop_assert_eq!(s.valid_len, ends.last().copied().unwrap_or(0));
            prop_assert_eq!(s.torn, None);
        }

        /// A log cut at any byte recovers exactly the frames that were whole before the cut.
        #[test]
        fn a_cut_anywhere_keeps_exactly_the_whole_frames(
            frames in proptest::collection::vec(proptest::collection::vec(arb_op(), 1..4), 1..8),
            cut in any::<proptest::sample::Index>(),
        ) {
            let (b, ends) = frames_bytes(&frames);
            let at = cut.index(b.len() + 1);
            let s = scan(&b[..at]).unwrap();
            let whole = ends.iter().filter(|e| **e <= at).count();
            prop_assert_eq!(&s.frames[..], &frames[..whole]);
            prop_assert_eq!(s.valid_len, if whole == 0 { 0 } else { ends[whole - 1] });
            prop_assert_eq!(s.torn.is_some(), at != s.valid_len);
        }

        /// Garbage written over the tail (a torn write that left junk) is cut, never applied,
        /// and never mistaken for damage inside the log.
        #[test]
        fn junk_after_the_last_frame_is_a_torn_tail(
            frames in proptest::collection::vec(proptest::collection::vec(arb_op(), 1..4), 1..6),
            junk in proptest::collection::vec(any::<u8>(), 1..300),
        ) {
            let (mut b, ends) = frames_bytes(&frames);
            b.extend_from_slice(&junk);
            match scan(&b) {
                Ok(s) => {
                    prop_assert!(s.frames.len() >= frames.len());
                    prop_assert_eq!(&s.frames[..frames.len()], &frames[..]);
                    prop_assert!(s.valid_len >= *ends.last().unwrap());
                }
                // Only possible if the junk happens to hold a valid frame: it does not.
                Err(d) => prop_assert!(false, "junk taken for interior damage: {:?}", d),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_frame(&b);
            let _ = scan(&b);
        }
    }
}
