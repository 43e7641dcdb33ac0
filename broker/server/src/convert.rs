//! Between protocol and engine types: stored messages to protocol messages (what consumers
//! receive), protocol filters to engine filters, and protocol time types.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferromq_engine::filter::{self, FilterKind};
use ferromq_engine::props;
use ferromq_proto::v2::{self, DigestType, Encoding, FilterType, MessageType};
use ferromq_store::{StoredMessage, TagFilter};
use std::sync::OnceLock;

use md5::Md5;
use sha1::Sha1;

use crate::status::RpcError;

pub use ferromq_engine::time::now_ms;

/// Delivery-specific fields of a pop delivery.
#[derive(Debug, Clone)]
pub struct DeliveryInfo {
    pub receipt_handle: String,
    pub attempt: u32,
    pub invisible: Duration,
}

pub fn timestamp_from_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn ms_from_timestamp(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos) / 1_000_000)
}

/// The store read filter of a subscription's filter expression (absent: everything); a
/// malformed expression is refused with ILLEGAL_FILTER_EXPRESSION.
pub fn read_filter(f: Option<&v2::FilterExpression>) -> Result<TagFilter, RpcError> {
    let f = f.map(|f| {
        let kind = match FilterType::try_from(f.r#type).unwrap_or(FilterType::Unspecified) {
            FilterType::Sql => FilterKind::Sql,
            FilterType::Tag | FilterType::Unspecified => FilterKind::Tag,
        };
        (kind, f.expression.as_str())
    });
    Ok(filter::compile(f)?)
}

pub fn now_timestamp() -> prost_types::Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A protocol duration as a std one; `None` when negative or out of range.
pub fn duration_from_proto(d: &prost_types::Duration) -> Option<Duration> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// Upper-case hex of a digest: the form every official client compares against (they differ
/// only for CRC32, which some format without zero padding and Node as a decimal, so it is
/// never sent).
fn upper_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// MD5 of the body as 32 upper-case hex digits.
pub fn md5_hex(body: &[u8]) -> String {
    upper_hex(&<Md5 as md5::Digest>::digest(body))
}

/// SHA-1 of the body as 40 upper-case hex digits.
pub fn sha1_hex(body: &[u8]) -> String {
    upper_hex(&<Sha1 as sha1::Digest>::digest(body))
}

/// Whether this CPU computes SHA-1 in hardware (x86 SHA extensions, Arm SHA instructions),
/// which the `sha1` crate uses when present. Asked once.
fn sha1_in_hardware() -> bool {
    static HW: OnceLock<bool> = OnceLock::new();
    *HW.get_or_init(|| {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            std::is_x86_feature_detected!("sha")
                && std::is_x86_feature_detected!("sse4.1")
                && std::is_x86_feature_detected!("ssse3")
        }
        #[cfg(target_arch = "aarch64")]
        {
            std::arch::is_aarch64_feature_detected!("sha2")
        }
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
        {
            false
        }
    })
}

/// The body digest a delivery carries. Every official client checks MD5 and SHA-1 the same
/// way (upper-case hex, a mismatch marks the message corrupted), so the cheaper one is sent:
/// SHA-1 where the CPU has instructions for it (a third of MD5's time for 1 KiB here, and the
/// digest is computed for every delivered message), MD5 otherwise.
pub fn body_digest(body: &[u8]) -> v2::Digest {
    if sha1_in_hardware() {
        v2::Digest {
            r#type: DigestType::Sha1 as i32,
            checksum: sha1_hex(body),
        }
    } else {
        v2::Digest {
            r#type: DigestType::Md5 as i32,
            checksum: md5_hex(body),
        }
    }
}

/// Builds the message a consumer receives. Takes the stored message so its body and
/// properties move into the answer instead of being copied.
pub fn to_proto(
    m: StoredMessage,
    namespace: &str,
    store_host: &str,
    delivery: Option<&DeliveryInfo>,
) -> v2::Message {
    let StoredMessage {
        topic,
        queue_id,
        queue_offset,
        born_timestamp_ms,
        store_timestamp_ms,
        born_host: born_addr,
        mut properties,
        body,
        ..
    } = m;
    let p = &properties;
    let message_type = p
        .get(props::MESSAGE_TYPE)
        .and_then(|t| t.parse::<i32>().ok())
        .and_then(|t| MessageType::try_from(t).ok())
        .unwrap_or(if p.contains_key(props::MESSAGE_GROUP) {
            MessageType::Fifo
        } else {
            MessageType::Normal
        });
    let message_id = p
        .get(ferromq_store::PROP_MSG_ID)
        .cloned()
        .unwrap_or_default();
    let dead_letter_queue = p
        .get(props::DLQ_ORIGIN_TOPIC)
        .map(|origin| v2::DeadLetterQueue {
            topic: origin.clone(),
            message_id: message_id.clone(),
        });
    let keys = p
        .get(ferromq_store::PROP_KEYS)
        .into_iter()
        .flat_map(|k| k.split(ferromq_store::KEY_SEPARATOR))
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
    let delivery_timestamp = p
        .get(props::DELIVER_AT)
        .and_then(|t| t.parse::<i64>().ok())
        .map(timestamp_from_ms);
    let priority = p.get(props::PRIORITY).and_then(|v| v.parse().ok());
    let born_host = properties
        .remove(props::BORN_HOST)
        .or_else(|| born_addr.map(|a| a.to_string()))
        .unwrap_or_default();
    let system_properties = v2::SystemProperties {
        tag: properties.remove(ferromq_store::PROP_TAGS),
        keys,
        message_id,
        body_digest: Some(body_digest(&body)),
        body_encoding: Encoding::Identity as i32,
        message_type: message_type as i32,
        born_timestamp: Some(timestamp_from_ms(born_timestamp_ms)),
        born_host,
        store_timestamp: Some(timestamp_from_ms(store_timestamp_ms)),
        store_host: store_host.to_string(),
        delivery_timestamp,
        receipt_handle: delivery.map(|d| d.receipt_handle.clone()),
        queue_id: queue_id as i32,
        queue_offset: Some(queue_offset as i64),
        invisible_duration: delivery.map(|d| duration_to_proto(d.invisible)),
        delivery_attempt: Some(delivery.map_or(1, |d| d.attempt as i32)),
        message_group: properties.remove(props::MESSAGE_GROUP),
        trace_context: properties.remove(props::TRACE_CONTEXT),
        orphaned_transaction_recovery_duration: None,
        dead_letter_queue,
        lite_topic: None,
        priority,
    };
    v2::Message {
        topic: Some(v2::Resource {
            resource_namespace: namespace.to_string(),
            name: topic,
        }),
        user_properties: properties
            .into_iter()
            .filter(|(k, _)| !props::is_system(k))
            .collect(),
        system_properties: Some(system_properties),
        body: body.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_type_codes_are_the_protocol_numbers() {
        use ferromq_store::MessageType as T;
        for (t, wire) in [
            (T::Normal, MessageType::Normal),
            (T::Fifo, MessageType::Fifo),
            (T::Delay, MessageType::Delay),
            (T::Transaction, MessageType::Transaction),
            (T::Priority, MessageType::Priority),
        ] {
            assert_eq!(props::type_code(t), wire as i32, "{t:?}");
        }
    }

    #[test]
    fn bad_filters_get_the_filter_code() {
        let sql = |e: &str| v2::FilterExpression {
            r#type: FilterType::Sql as i32,
            expression: e.into(),
        };
        let err = read_filter(Some(&sql("a >"))).unwrap_err();
        assert_eq!(err.code, v2::Code::IllegalFilterExpression);
        assert!(read_filter(Some(&sql("a > 1"))).is_ok());
        assert!(read_filter(None).expect("absent").is_all());
    }

    #[test]
    fn digests_are_upper_case_hex() {
        assert_eq!(md5_hex(b""), "D41D8CD98F00B204E9800998ECF8427E");
        assert_eq!(sha1_hex(b"abc"), "A9993E364706816ABA3E25717850C26C9CD0D89D");
        let d = body_digest(b"abc");
        let expected = if d.r#type == DigestType::Sha1 as i32 {
            sha1_hex(b"abc")
        } else {
            assert_eq!(d.r#type, DigestType::Md5 as i32);
            md5_hex(b"abc")
        };
        assert_eq!(d.checksum, expected);
    }

    #[test]
    fn timestamps_round_trip_including_negative() {
        for ms in [0i64, 1, 999, 1_700_000_000_123, -1] {
            assert_eq!(ms_from_timestamp(&timestamp_from_ms(ms)), ms);
        }
    }
}
