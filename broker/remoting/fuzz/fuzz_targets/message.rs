//! Stored-message and batch-send decoders on arbitrary bytes: never panic, and a decoded record
//! re-encodes to one that decodes to the same message.
#![no_main]

use ferromq_remoting::message::{decode_batch, StoredMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msgs) = StoredMessage::decode_all(data, false) {
        for m in msgs {
            if let Ok(bytes) = m.encode() {
                let (back, _) = StoredMessage::decode(&bytes, true).expect("re-decodes");
                assert_eq!(back, m);
            }
            let _ = m.plain_body();
        }
    }
    let _ = decode_batch(&bytes::Bytes::copy_from_slice(data));
});
