//! Validation of names and messages, before anything is stored.
//!
//! The rules are protocol-neutral: they name what is wrong as a [`Violation`], and each front
//! door turns that into its protocol's code in one place (`status.rs` for the RocketMQ 5
//! protocol, `remoting/status.rs` for the classic remoting protocol). The `v2` wrappers below
//! are the RocketMQ 5 service's entry points. A refused request changes nothing. Limits follow
//! RocketMQ: names of 1..=127 characters from letters, digits, `%`, `-`, `_`, `|`; one tag
//! without `|`; properties at most 16 KiB in total.

use ferromq_proto::v2;

use crate::status::RpcError;

/// What is wrong with a request, whatever protocol carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    Topic,
    ConsumerGroup,
    MessageId,
    BodyTooLarge,
    BodyEmpty,
    Tag,
    Key,
    PropertyKey,
    PropertiesTooLarge,
    MessageGroup,
    /// A field the message's type may not carry, or a type without a field it needs.
    TypeConflict,
    /// Anything else malformed.
    Malformed,
}

/// A refused request: what is wrong, and a message for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub violation: Violation,
    pub message: String,
}

fn invalid(violation: Violation, message: impl Into<String>) -> Invalid {
    Invalid {
        violation,
        message: message.into(),
    }
}

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

/// Checks a topic name.
pub fn topic(name: &str) -> Result<&str, Invalid> {
    if name.trim().is_empty() {
        return Err(invalid(Violation::Topic, "topic name is empty"));
    }
    if name.len() > MAX_TOPIC_LEN {
        return Err(invalid(
            Violation::Topic,
            format!(
                "topic name is {} characters, over {MAX_TOPIC_LEN}",
                name.len()
            ),
        ));
    }
    if !name_chars_ok(name) {
        return Err(invalid(
            Violation::Topic,
            format!("topic {name:?} has characters outside letters, digits, %, -, _ and |"),
        ));
    }
    Ok(name)
}

/// Checks a consumer group name.
pub fn group(name: &str) -> Result<&str, Invalid> {
    if name.trim().is_empty() {
        return Err(invalid(
            Violation::ConsumerGroup,
            "consumer group name is empty",
        ));
    }
    if name.len() > MAX_GROUP_LEN {
        return Err(invalid(
            Violation::ConsumerGroup,
            format!(
                "consumer group name is {} characters, over {MAX_GROUP_LEN}",
                name.len()
            ),
        ));
    }
    if !name_chars_ok(name) {
        return Err(invalid(
            Violation::ConsumerGroup,
            format!(
                "consumer group {name:?} has characters outside letters, digits, %, -, _ and |"
            ),
        ));
    }
    Ok(name)
}

/// Checks a topic name from a RocketMQ 5 request.
pub fn topic_name(r: Option<&v2::Resource>) -> Result<&str, RpcError> {
    Ok(topic(r.map(|r| r.name.as_str()).unwrap_or(""))?)
}

/// Checks a consumer group name from a RocketMQ 5 request.
pub fn group_name(r: Option<&v2::Resource>) -> Result<&str, RpcError> {
    Ok(group(r.map(|r| r.name.as_str()).unwrap_or(""))?)
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

/// The fields of one message as any protocol carries them, to be checked.
#[derive(Debug, Clone, Default)]
pub struct MessageFields<'a> {
    pub message_id: &'a str,
    pub body_len: usize,
    pub tag: Option<&'a str>,
    pub keys: &'a [String],
    /// User properties (not the system fields above).
    pub properties: Vec<(&'a str, &'a str)>,
    pub message_group: Option<&'a str>,
}

/// The checked fields of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields<'a> {
    pub message_id: &'a str,
    pub tag: Option<&'a str>,
    pub keys: Vec<&'a str>,
    pub message_group: Option<&'a str>,
}

/// Checks one message's fields (everything but topic existence and type agreement, which need
/// the topic's metadata, and the type rules, which depend on how the protocol names types).
pub fn message_fields<'a>(
    m: &MessageFields<'a>,
    max_body_size: usize,
) -> Result<Fields<'a>, Invalid> {
    if m.message_id.trim().is_empty() {
        return Err(invalid(Violation::MessageId, "message_id is empty"));
    }
    if m.message_id.len() > 128 || !printable(m.message_id) {
        return Err(invalid(
            Violation::MessageId,
            format!(
                "message_id {:?} is not a printable id of at most 128 characters",
                m.message_id
            ),
        ));
    }
    if m.body_len > max_body_size {
        return Err(invalid(
            Violation::BodyTooLarge,
            format!(
                "message body is {} bytes, over the limit of {max_body_size} bytes",
                m.body_len
            ),
        ));
    }
    if m.body_len == 0 {
        return Err(invalid(Violation::BodyEmpty, "message body is empty"));
    }
    let tag = match m.tag {
        None => None,
        Some(t) if t.trim().is_empty() => return Err(invalid(Violation::Tag, "tag is blank")),
        Some(t) if t.contains('|') => {
            return Err(invalid(Violation::Tag, format!("tag {t:?} contains '|'")))
        }
        Some(t) if !printable(t) => {
            return Err(invalid(
                Violation::Tag,
                format!("tag {t:?} contains control characters"),
            ))
        }
        Some(t) => Some(t),
    };
    let mut keys = Vec::with_capacity(m.keys.len());
    for k in m.keys {
        if k.trim().is_empty() {
            return Err(invalid(Violation::Key, "a message key is blank"));
        }
        if !printable(k) {
            return Err(invalid(
                Violation::Key,
                format!("key {k:?} contains control characters"),
            ));
        }
        keys.push(k.as_str());
    }
    let mut size = tag.map_or(0, str::len) + keys.iter().map(|k| k.len() + 1).sum::<usize>();
    for (k, v) in &m.properties {
        if k.trim().is_empty() {
            return Err(invalid(
                Violation::PropertyKey,
                "a user property key is blank",
            ));
        }
        if RESERVED_PROPERTY_KEYS.contains(k)
            || k.starts_with(ferromq_engine::props::INTERNAL_PREFIX)
            || !printable(k)
        {
            return Err(invalid(
                Violation::PropertyKey,
                format!("user property key {k:?} is reserved or not printable"),
            ));
        }
        size += k.len() + v.len();
    }
    if size > MAX_PROPERTIES_SIZE {
        return Err(invalid(
            Violation::PropertiesTooLarge,
            format!("tag, keys and properties take {size} bytes, over {MAX_PROPERTIES_SIZE}"),
        ));
    }
    let message_group = match m.message_group {
        None => None,
        Some(g) if g.trim().is_empty() => {
            return Err(invalid(Violation::MessageGroup, "message_group is blank"))
        }
        Some(g) if g.len() > MAX_MESSAGE_GROUP_LEN || !printable(g) => {
            let limit = MAX_MESSAGE_GROUP_LEN;
            return Err(invalid(
                Violation::MessageGroup,
                format!("message_group must be printable and at most {limit} characters"),
            ));
        }
        Some(g) => Some(g),
    };
    Ok(Fields {
        message_id: m.message_id,
        tag,
        keys,
        message_group,
    })
}

/// The fields of one RocketMQ 5 message that passed validation, in the shape the send path
/// needs.
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
    let fields = message_fields(
        &MessageFields {
            message_id: &sp.message_id,
            body_len: m.body.len(),
            tag: sp.tag.as_deref(),
            keys: &sp.keys,
            properties: m
                .user_properties
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            message_group: sp.message_group.as_deref(),
        },
        max_body_size,
    )?;
    let declared =
        v2::MessageType::try_from(sp.message_type).unwrap_or(v2::MessageType::Unspecified);
    // Clients derive the type from the message's shape; when they leave it out, do the same.
    let message_type = match declared {
        v2::MessageType::Unspecified if fields.message_group.is_some() => v2::MessageType::Fifo,
        v2::MessageType::Unspecified if sp.delivery_timestamp.is_some() => v2::MessageType::Delay,
        v2::MessageType::Unspecified => v2::MessageType::Normal,
        t => t,
    };
    match message_type {
        v2::MessageType::Fifo if fields.message_group.is_none() => {
            return Err(invalid(
                Violation::MessageGroup,
                "a FIFO message needs a message_group",
            )
            .into())
        }
        v2::MessageType::Normal if fields.message_group.is_some() => {
            return Err(invalid(
                Violation::TypeConflict,
                "a NORMAL message cannot have a message_group",
            )
            .into())
        }
        v2::MessageType::Normal | v2::MessageType::Fifo if sp.delivery_timestamp.is_some() => {
            return Err(invalid(
                Violation::TypeConflict,
                "only DELAY messages may carry a delivery_timestamp",
            )
            .into())
        }
        _ => {}
    }
    Ok(CheckedMessage {
        message_id: fields.message_id,
        tag: fields.tag,
        keys: fields.keys,
        message_group: fields.message_group,
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
    use ferromq_proto::v2::Code;

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
            body: bytes::Bytes::from_static(b"hello"),
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
            code(&msg(|m| m.body = vec![0; 11].into())),
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
                body: bytes::Bytes::from_static(b"x"),
                ..Default::default()
            };
            let _ = message(&m, 64);
            m.system_properties = None;
            proptest::prop_assert!(message(&m, 64).is_err());
        }
    }
}
