//! Protocol-level validation of names and messages, before anything is stored.
//!
//! Each check answers with the RocketMQ code a client expects for that mistake; a refused
//! request changes nothing. Limits follow RocketMQ: names of 1..=127 characters from letters,
//! digits, `%`, `-`, `_`, `|`; one tag without `|`; properties at most 16 KiB in total.

use ferromq_proto::v2::{self, Code};

use crate::status::RpcError;

/// Longest topic name (RocketMQ's limit, also the store's record layout limit).
pub const MAX_TOPIC_LEN: usize = 127;
/// Longest consumer group name.
pub const MAX_GROUP_LEN: usize = 255;
/// Largest total size of user properties, keys and tag of one message.
pub const MAX_PROPERTIES_SIZE: usize = 16 * 1024;
/// Longest message group (FIFO key).
pub const MAX_MESSAGE_GROUP_LEN: usize = 64;

/// Property names the broker uses itself; user properties may not shadow them.
const RESERVED_PROPERTY_KEYS: &[&str] = &[
    "TAGS",
    "KEYS",
    "UNIQ_KEY",
    "__SHARDINGKEY",
    "DELAY",
    "RETRY_TOPIC",
    "REAL_TOPIC",
    "REAL_QID",
    "TRAN_MSG",
    "PGROUP",
    "MIN_OFFSET",
    "MAX_OFFSET",
    "BORN_HOST",
    "MSG_TYPE",
    "TRACE_CONTEXT",
];

fn name_chars_ok(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '%' | '-' | '_' | '|'))
}

/// Checks a topic name from a client request.
pub fn topic_name(r: Option<&v2::Resource>) -> Result<&str, RpcError> {
    let name = r.map(|r| r.name.as_str()).unwrap_or("");
    if name.trim().is_empty() {
        return Err(RpcError::new(Code::IllegalTopic, "topic name is empty"));
    }
    if name.len() > MAX_TOPIC_LEN {
        return Err(RpcError::new(
            Code::IllegalTopic,
            format!(
                "topic name is {} characters, over {MAX_TOPIC_LEN}",
                name.len()
            ),
        ));
    }
    if !name_chars_ok(name) {
        return Err(RpcError::new(
            Code::IllegalTopic,
            format!("topic {name:?} has characters outside letters, digits, %, -, _ and |"),
        ));
    }
    Ok(name)
}

/// Checks a consumer group name from a client request.
pub fn group_name(r: Option<&v2::Resource>) -> Result<&str, RpcError> {
    let name = r.map(|r| r.name.as_str()).unwrap_or("");
    if name.trim().is_empty() {
        return Err(RpcError::new(
            Code::IllegalConsumerGroup,
            "consumer group name is empty",
        ));
    }
    if name.len() > MAX_GROUP_LEN {
        return Err(RpcError::new(
            Code::IllegalConsumerGroup,
            format!(
                "consumer group name is {} characters, over {MAX_GROUP_LEN}",
                name.len()
            ),
        ));
    }
    if !name_chars_ok(name) {
        return Err(RpcError::new(
            Code::IllegalConsumerGroup,
            format!(
                "consumer group {name:?} has characters outside letters, digits, %, -, _ and |"
            ),
        ));
    }
    Ok(name)
}

/// Topics clients may not publish to directly.
pub fn is_system_topic(name: &str) -> bool {
    name.starts_with("rmq_sys_")
        || name.starts_with("%RETRY%")
        || name.starts_with("%DLQ%")
        || name.starts_with("%SYS%")
}

fn printable(s: &str) -> bool {
    !s.chars().any(|c| c.is_control())
}

/// The fields of one message that passed validation, in the shape the send path needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedMessage<'a> {
    pub message_id: &'a str,
    pub tag: Option<&'a str>,
    pub keys: Vec<&'a str>,
    pub message_group: Option<&'a str>,
    pub message_type: v2::MessageType,
}

/// Validates one message of a SendMessage request (everything but topic existence and type
/// agreement, which need the topic's metadata).
pub fn message<'a>(
    m: &'a v2::Message,
    max_body_size: usize,
) -> Result<CheckedMessage<'a>, RpcError> {
    let sp = m
        .system_properties
        .as_ref()
        .ok_or_else(|| RpcError::bad_request("message has no system_properties"))?;
    if sp.message_id.trim().is_empty() {
        return Err(RpcError::new(Code::IllegalMessageId, "message_id is empty"));
    }
    if sp.message_id.len() > 128 || !printable(&sp.message_id) {
        return Err(RpcError::new(
            Code::IllegalMessageId,
            format!(
                "message_id {:?} is not a printable id of at most 128 characters",
                sp.message_id
            ),
        ));
    }
    if m.body.len() > max_body_size {
        return Err(RpcError::new(
            Code::MessageBodyTooLarge,
            format!(
                "message body is {} bytes, over the limit of {max_body_size} bytes",
                m.body.len()
            ),
        ));
    }
    if m.body.is_empty() {
        return Err(RpcError::new(
            Code::MessageBodyEmpty,
            "message body is empty",
        ));
    }
    let tag = match sp.tag.as_deref() {
        None => None,
        Some(t) if t.trim().is_empty() => {
            return Err(RpcError::new(Code::IllegalMessageTag, "tag is blank"))
        }
        Some(t) if t.contains('|') => {
            return Err(RpcError::new(
                Code::IllegalMessageTag,
                format!("tag {t:?} contains '|'"),
            ))
        }
        Some(t) if !printable(t) => {
            return Err(RpcError::new(
                Code::IllegalMessageTag,
                format!("tag {t:?} contains control characters"),
            ))
        }
        Some(t) => Some(t),
    };
    let mut keys = Vec::with_capacity(sp.keys.len());
    for k in &sp.keys {
        if k.trim().is_empty() {
            return Err(RpcError::new(
                Code::IllegalMessageKey,
                "a message key is blank",
            ));
        }
        if !printable(k) {
            return Err(RpcError::new(
                Code::IllegalMessageKey,
                format!("key {k:?} contains control characters"),
            ));
        }
        keys.push(k.as_str());
    }
    let mut size = tag.map_or(0, str::len) + keys.iter().map(|k| k.len() + 1).sum::<usize>();
    for (k, v) in &m.user_properties {
        if k.trim().is_empty() {
            return Err(RpcError::new(
                Code::IllegalMessagePropertyKey,
                "a user property key is blank",
            ));
        }
        if RESERVED_PROPERTY_KEYS.contains(&k.as_str())
            || k.starts_with(ferromq_engine::props::INTERNAL_PREFIX)
            || !printable(k)
        {
            return Err(RpcError::new(
                Code::IllegalMessagePropertyKey,
                format!("user property key {k:?} is reserved or not printable"),
            ));
        }
        size += k.len() + v.len();
    }
    if size > MAX_PROPERTIES_SIZE {
        return Err(RpcError::new(
            Code::MessagePropertiesTooLarge,
            format!("tag, keys and properties take {size} bytes, over {MAX_PROPERTIES_SIZE}"),
        ));
    }
    let message_group = match sp.message_group.as_deref() {
        None => None,
        Some(g) if g.trim().is_empty() => {
            return Err(RpcError::new(
                Code::IllegalMessageGroup,
                "message_group is blank",
            ))
        }
        Some(g) if g.len() > MAX_MESSAGE_GROUP_LEN || !printable(g) => {
            let limit = MAX_MESSAGE_GROUP_LEN;
            return Err(RpcError::new(
                Code::IllegalMessageGroup,
                format!("message_group must be printable and at most {limit} characters"),
            ));
        }
        Some(g) => Some(g),
    };
    let declared =
        v2::MessageType::try_from(sp.message_type).unwrap_or(v2::MessageType::Unspecified);
    // Clients derive the type from the message's shape; when they leave it out, do the same.
    let message_type = match declared {
        v2::MessageType::Unspecified if message_group.is_some() => v2::MessageType::Fifo,
        v2::MessageType::Unspecified if sp.delivery_timestamp.is_some() => v2::MessageType::Delay,
        v2::MessageType::Unspecified => v2::MessageType::Normal,
        t => t,
    };
    match message_type {
        v2::MessageType::Fifo if message_group.is_none() => {
            return Err(RpcError::new(
                Code::IllegalMessageGroup,
                "a FIFO message needs a message_group",
            ))
        }
        v2::MessageType::Normal if message_group.is_some() => {
            return Err(RpcError::new(
                Code::MessagePropertyConflictWithType,
                "a NORMAL message cannot have a message_group",
            ))
        }
        v2::MessageType::Normal | v2::MessageType::Fifo if sp.delivery_timestamp.is_some() => {
            return Err(RpcError::new(
                Code::MessagePropertyConflictWithType,
                "only DELAY messages may carry a delivery_timestamp",
            ))
        }
        _ => {}
    }
    Ok(CheckedMessage {
        message_id: &sp.message_id,
        tag,
        keys,
        message_group,
        message_type,
    })
}

/// Longest broker group name: it becomes part of Kubernetes object names and receipt handles.
pub const MAX_BROKER_GROUP_LEN: usize = 63;

/// Checks a broker group name (`--group`): 1..=63 of letters, digits, `-` and `_`, so that it
/// can be embedded in receipt handles and transaction ids that proxies route by.
pub fn broker_group_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_BROKER_GROUP_LEN {
        return Err(format!(
            "broker group {name:?} must have 1..={MAX_BROKER_GROUP_LEN} characters"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        return Err(format!(
            "broker group {name:?} may only hold letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(f: impl FnOnce(&mut v2::Message)) -> v2::Message {
        let mut m = v2::Message {
            topic: Some(v2::Resource {
                resource_namespace: String::new(),
                name: "t".into(),
            }),
            user_properties: Default::default(),
            system_properties: Some(v2::SystemProperties {
                message_id: "01AB".into(),
                message_type: v2::MessageType::Normal as i32,
                ..Default::default()
            }),
            body: b"hello".to_vec(),
        };
        f(&mut m);
        m
    }

    fn code(m: &v2::Message) -> Code {
        message(m, 10).map(|_| Code::Ok).unwrap_or_else(|e| e.code)
    }

    #[test]
    fn a_plain_message_passes() {
        let m = msg(|_| {});
        let c = message(&m, 10).unwrap();
        assert_eq!(c.message_type, v2::MessageType::Normal);
    }

    #[test]
    fn each_mistake_gets_its_own_code() {
        assert_eq!(
            code(&msg(|m| m
                .system_properties
                .as_mut()
                .unwrap()
                .message_id
                .clear())),
            Code::IllegalMessageId
        );
        assert_eq!(
            code(&msg(|m| m.body = vec![0; 11])),
            Code::MessageBodyTooLarge
        );
        assert_eq!(code(&msg(|m| m.body.clear())), Code::MessageBodyEmpty);
        assert_eq!(
            code(&msg(
                |m| m.system_properties.as_mut().unwrap().tag = Some("a|b".into())
            )),
            Code::IllegalMessageTag
        );
        assert_eq!(
            code(&msg(
                |m| m.system_properties.as_mut().unwrap().keys = vec![" ".into()]
            )),
            Code::IllegalMessageKey
        );
        assert_eq!(
            code(&msg(|m| {
                m.user_properties.insert("TAGS".into(), "x".into());
            })),
            Code::IllegalMessagePropertyKey
        );
        assert_eq!(
            code(&msg(|m| m
                .system_properties
                .as_mut()
                .unwrap()
                .message_type = v2::MessageType::Fifo as i32)),
            Code::IllegalMessageGroup
        );
        assert_eq!(
            code(&msg(|m| m
                .system_properties
                .as_mut()
                .unwrap()
                .message_group = Some("g".into()))),
            Code::MessagePropertyConflictWithType
        );
        assert_eq!(code(&msg(|m| m.system_properties = None)), Code::BadRequest);
    }

    #[test]
    fn names_follow_rocketmq_rules() {
        let r = |n: &str| v2::Resource {
            resource_namespace: String::new(),
            name: n.into(),
        };
        assert!(topic_name(Some(&r("Topic_1-a%b|c"))).is_ok());
        assert_eq!(
            topic_name(Some(&r("bad topic"))).unwrap_err().code,
            Code::IllegalTopic
        );
        assert_eq!(topic_name(None).unwrap_err().code, Code::IllegalTopic);
        assert_eq!(
            topic_name(Some(&r(&"x".repeat(128)))).unwrap_err().code,
            Code::IllegalTopic
        );
        assert_eq!(
            group_name(Some(&r(""))).unwrap_err().code,
            Code::IllegalConsumerGroup
        );
        assert!(is_system_topic("%DLQ%g"));
    }

    proptest::proptest! {
        /// Whatever bytes a client sends, decoding and validating them answers, never panics.
        #[test]
        fn arbitrary_messages_are_answered_not_crashed_on(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            use prost::Message as _;
            if let Ok(m) = v2::Message::decode(bytes.as_slice()) {
                let _ = message(&m, 64);
                let _ = topic_name(m.topic.as_ref());
            }
        }

        #[test]
        fn names_and_tags_of_any_text_are_answered(name in ".{0,200}", tag in proptest::option::of(".{0,40}")) {
            let r = v2::Resource { resource_namespace: String::new(), name: name.clone() };
            let _ = topic_name(Some(&r));
            let _ = group_name(Some(&r));
            let mut m = v2::Message {
                topic: Some(r),
                system_properties: Some(v2::SystemProperties { message_id: name, tag, ..Default::default() }),
                body: b"x".to_vec(),
                ..Default::default()
            };
            let _ = message(&m, 64);
            m.system_properties = None;
            proptest::prop_assert!(message(&m, 64).is_err());
        }
    }
}
