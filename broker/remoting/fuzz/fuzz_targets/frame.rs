//! The frame codec on arbitrary bytes: never panics, never buffers past the cap, and whatever it
//! decodes re-encodes to a frame that decodes to the same command.
#![no_main]

use bytes::BytesMut;
use ferromq_remoting::frame::{decode_frame, encode_frame, RemotingCodec};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut codec = RemotingCodec::new(MAX);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(cmd)) = codec.decode(&mut buf) {
        if let Ok(frame) = encode_frame(&cmd) {
            let back = decode_frame(&frame).expect("an encoded command decodes");
            assert_eq!(back, cmd);
        }
    }
    assert!(buf.capacity() <= data.len().max(MAX + 8) * 2, "buffer grew past the cap");
});
