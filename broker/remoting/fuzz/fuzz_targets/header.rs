//! Both header serializations and the fastjson reader on arbitrary bytes: never panic; a decoded
//! header re-encodes and decodes to itself.
#![no_main]

use ferromq_remoting::{fastjson, header, SerializeType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for st in [SerializeType::Json, SerializeType::RocketMq] {
        if let Ok(cmd) = header::decode(st, data) {
            if let Ok(bytes) = header::encode(&cmd) {
                assert_eq!(header::decode(st, &bytes).expect("re-decodes"), cmd);
            }
        }
    }
    if let Ok(v) = fastjson::parse(data) {
        let _ = v.into_serde();
    }
    let _ = ferromq_remoting::body::decode::<ferromq_remoting::body::TopicRouteData>(data);
    let _ = ferromq_remoting::body::decode::<ferromq_remoting::body::ConsumeStats>(data);
});
