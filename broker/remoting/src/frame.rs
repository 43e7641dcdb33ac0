//! Framing: commands on a byte stream, as a `tokio_util` codec.
//!
//! ```text
//! length        i32 BE  bytes that follow (header-word + header + body)
//! header-word   i32 BE  serialize type in the high byte, header length in the low 3 bytes
//! header        header-length bytes (JSON or ROCKETMQ, see `header`)
//! body          the rest
//! ```
//! Java's decoder (`NettyDecoder`) caps a frame, length field included, at 16 MiB
//! (`com.rocketmq.remoting.frameMaxLength`). [`RemotingCodec`] takes the cap as a parameter and
//! refuses a larger declared length before buffering anything, so a peer cannot make the server
//! allocate what it never sends. A decoding error leaves the stream unusable: the caller closes
//! the connection, as the Java server does.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::command::{Command, SerializeType};
use crate::header::{self, HeaderError};

/// RocketMQ's default cap on one frame, the 4-byte length field included.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// Most buffer a partly received frame reserves ahead of the bytes that arrived.
const RESERVE_STEP: usize = 64 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {length} bytes exceeds the {max}-byte limit")]
    TooLarge { length: u64, max: usize },
    #[error("frame length {length} is too small to hold the header word")]
    TooShort { length: i32 },
    #[error("header length {header_len} does not fit a frame of {frame_len} bytes")]
    HeaderLength { header_len: usize, frame_len: usize },
    #[error("unknown serialize type {0}")]
    UnknownSerializeType(u8),
    #[error("header: {0}")]
    Header(#[from] HeaderError),
    #[error("connection closed inside a frame ({buffered} bytes of it received)")]
    Truncated { buffered: usize },
    #[error("{len} bytes after the end of the frame")]
    Trailing { len: usize },
}

/// Reads and writes [`Command`]s. `Decoder::Item` is a whole command (header parsed, body as
/// received); `Encoder` writes a command in its own serialize type.
#[derive(Debug, Clone)]
pub struct RemotingCodec {
    max_frame: usize,
}

impl RemotingCodec {
    /// A codec refusing frames longer than `max_frame` bytes (length field included).
    pub fn new(max_frame: usize) -> Self {
        RemotingCodec { max_frame }
    }

    /// The cap this codec enforces.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Default for RemotingCodec {
    fn default() -> Self {
        RemotingCodec::new(DEFAULT_MAX_FRAME)
    }
}

/// Decodes one whole frame (length field included) into a command. For tests and fuzzing; the
/// codec uses the same path.
pub fn decode_frame(frame: &[u8]) -> Result<Command, FrameError> {
    decode_frame_bytes(Bytes::copy_from_slice(frame))
}

/// [`decode_frame`] of a frame already in a shared buffer (a tunnel message): the body is a
/// slice of it, not a copy.
pub fn decode_frame_bytes(frame: Bytes) -> Result<Command, FrameError> {
    if frame.len() < 4 {
        return Err(FrameError::Truncated {
            buffered: frame.len(),
        });
    }
    let length = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
    if length < 4 {
        return Err(FrameError::TooShort { length });
    }
    let total = length as u64 + 4;
    if total > frame.len() as u64 {
        return Err(FrameError::Truncated {
            buffered: frame.len(),
        });
    }
    if total < frame.len() as u64 {
        return Err(FrameError::Trailing {
            len: frame.len() - total as usize,
        });
    }
    parse(frame, length)
}

/// Encodes one command into a whole frame.
pub fn encode_frame(cmd: &Command) -> Result<Vec<u8>, FrameError> {
    Ok(encode_frame_bytes(cmd)?.into())
}

/// [`encode_frame`] into a shared buffer (for a tunnel message, without a copy to a vector).
pub fn encode_frame_bytes(cmd: &Command) -> Result<Bytes, FrameError> {
    let mut buf = BytesMut::new();
    RemotingCodec::new(usize::MAX).encode(cmd, &mut buf)?;
    Ok(buf.freeze())
}

/// The command in `frame`, a whole frame whose length field (`length`) is already checked.
fn parse(mut frame: Bytes, length: i32) -> Result<Command, FrameError> {
    frame.advance(4);
    let word = frame.get_u32();
    let type_code = (word >> 24) as u8;
    let header_len = (word & 0x00FF_FFFF) as usize;
    let serialize_type =
        SerializeType::from_code(type_code).ok_or(FrameError::UnknownSerializeType(type_code))?;
    if header_len > frame.len() {
        return Err(FrameError::HeaderLength {
            header_len,
            frame_len: length as usize,
        });
    }
    let header_bytes = frame.split_to(header_len);
    let mut cmd = header::decode(serialize_type, &header_bytes)?;
    cmd.body = frame;
    Ok(cmd)
}

impl Decoder for RemotingCodec {
    type Item = Command;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Command>, FrameError> {
        if src.len() < 4 {
            src.reserve(4);
            return Ok(None);
        }
        let length = i32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        if length < 4 {
            return Err(FrameError::TooShort { length });
        }
        let total = length as u64 + 4;
        if total > self.max_frame as u64 {
            return Err(FrameError::TooLarge {
                length: total,
                max: self.max_frame,
            });
        }
        let total = total as usize;
        if src.len() < total {
            // Grow with what arrives, never by the declared length alone: a peer that announces
            // a large frame and sends nothing must not make us allocate it.
            src.reserve((total - src.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        parse(src.split_to(total).freeze(), length).map(Some)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Command>, FrameError> {
        match self.decode(src)? {
            Some(cmd) => Ok(Some(cmd)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<&Command> for RemotingCodec {
    type Error = FrameError;

    fn encode(&mut self, cmd: &Command, dst: &mut BytesMut) -> Result<(), FrameError> {
        let header = header::encode(cmd)?;
        if header.len() > 0x00FF_FFFF {
            return Err(FrameError::HeaderLength {
                header_len: header.len(),
                frame_len: header.len(),
            });
        }
        let length = 4 + header.len() as u64 + cmd.body.len() as u64;
        if length > i32::MAX as u64 {
            return Err(FrameError::TooLarge {
                length: length + 4,
                max: i32::MAX as usize,
            });
        }
        dst.reserve(4 + length as usize);
        dst.put_i32(length as i32);
        dst.put_u32((u32::from(cmd.serialize_type.code()) << 24) | header.len() as u32);
        dst.extend_from_slice(&header);
        dst.extend_from_slice(&cmd.body);
        Ok(())
    }
}

impl Encoder<Command> for RemotingCodec {
    type Error = FrameError;

    fn encode(&mut self, cmd: Command, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&cmd, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::LanguageCode;
    use proptest::prelude::*;

    fn heartbeat() -> Command {
        Command {
            code: 34,
            language: LanguageCode::Java,
            version: 409,
            opaque: 9,
            body: bytes::Bytes::from_static(b"{}"),
            ..Command::default()
        }
    }

    #[test]
    fn frame_vector() {
        let frame = encode_frame(&heartbeat()).unwrap();
        let header = br#"{"code":34,"flag":0,"language":"JAVA","opaque":9,"serializeTypeCurrentRPC":"JSON","version":409}"#;
        let mut expected = Vec::new();
        expected.extend_from_slice(&((4 + header.len() + 2) as i32).to_be_bytes());
        expected.extend_from_slice(&(header.len() as i32).to_be_bytes()); // type 0 in the high byte
        expected.extend_from_slice(header);
        expected.extend_from_slice(b"{}");
        assert_eq!(frame, expected);
        assert_eq!(decode_frame(&frame).unwrap(), heartbeat());
    }

    #[test]
    fn binary_frames_mark_the_type() {
        let cmd = Command {
            serialize_type: SerializeType::RocketMq,
            ..heartbeat()
        };
        let frame = encode_frame(&cmd).unwrap();
        assert_eq!(frame[4], 1);
        assert_eq!(decode_frame(&frame).unwrap(), cmd);
    }

    #[test]
    fn partial_input_waits_and_split_input_completes() {
        let frame = encode_frame(&heartbeat()).unwrap();
        let mut codec = RemotingCodec::default();
        let mut buf = BytesMut::new();
        for (i, b) in frame.iter().enumerate() {
            buf.put_u8(*b);
            let got = codec.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == frame.len() - 1);
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_declared_length_is_refused_before_buffering() {
        let mut codec = RemotingCodec::new(1024);
        let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(
            buf.capacity() < 1024,
            "nothing reserved for the declared length"
        );
        let mut neg = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0][..]);
        assert!(matches!(
            codec.decode(&mut neg),
            Err(FrameError::TooShort { .. })
        ));
    }

    #[test]
    fn a_large_announced_frame_reserves_only_a_step_until_its_bytes_arrive() {
        let mut codec = RemotingCodec::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::from(&(8 * 1024 * 1024_i32).to_be_bytes()[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() <= RESERVE_STEP + 64,
            "reserved {} bytes for a frame whose bytes have not arrived",
            buf.capacity()
        );
    }

    #[test]
    fn bad_frames_get_typed_errors() {
        // header length larger than the frame
        let bad_len = [0, 0, 0, 6, 0, 0, 0, 9, b'{', b'}'];
        assert!(matches!(
            decode_frame(&bad_len),
            Err(FrameError::HeaderLength { .. })
        ));
        // unknown serialize type 7
        let bad_type = [0, 0, 0, 6, 7, 0, 0, 2, b'{', b'}'];
        assert!(matches!(
            decode_frame(&bad_type),
            Err(FrameError::UnknownSerializeType(7))
        ));
        // bad JSON
        let bad_json = [0, 0, 0, 6, 0, 0, 0, 2, b'{', b'x'];
        assert!(matches!(
            decode_frame(&bad_json),
            Err(FrameError::Header(_))
        ));
        // truncated at end of stream
        let frame = encode_frame(&heartbeat()).unwrap();
        assert!(matches!(
            decode_frame(&frame[..frame.len() - 1]),
            Err(FrameError::Truncated { .. })
        ));
        let two = [frame.clone(), frame].concat();
        assert!(matches!(
            decode_frame(&two),
            Err(FrameError::Trailing { .. })
        ));
    }

    proptest! {
        #[test]
        fn codec_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut codec = RemotingCodec::new(4096);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }

        #[test]
        fn frames_round_trip(body in proptest::collection::vec(any::<u8>(), 0..512), opaque in any::<i32>(), binary in any::<bool>()) {
            let cmd = Command {
                opaque,
                body: body.into(),
                serialize_type: if binary { SerializeType::RocketMq } else { SerializeType::Json },
                ..heartbeat()
            };
            prop_assert_eq!(decode_frame(&encode_frame(&cmd).unwrap()).unwrap(), cmd);
        }
    }
}
