//! Response codes of the remoting protocol: the one place where an engine, store or validation
//! failure becomes a remoting code and remark (the RocketMQ 5 protocol's mapping is beside it,
//! in `status.rs`).
//!
//! The codes follow what RocketMQ's broker and proxy answer for the same mistake, because 4.x
//! clients act on them: a producer retries another broker on `NO_PERMISSION`,
//! `SERVICE_NOT_AVAILABLE`, `SYSTEM_ERROR` and `TOPIC_NOT_EXIST`; every client shows the remark.

use ferromq_engine::EngineError;
use ferromq_remoting::code::response;
use ferromq_store::StoreError;

use crate::validate::{Invalid, Violation};

/// A refused or failed remoting request, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({code}): {remark}", response::name(*code).unwrap_or("?"))]
pub struct RemotingError {
    pub code: i32,
    pub remark: String,
}

impl RemotingError {
    pub fn new(code: i32, remark: impl Into<String>) -> RemotingError {
        RemotingError {
            code,
            remark: remark.into(),
        }
    }

    /// A malformed request: a header field missing or unreadable, a body that does not parse.
    pub fn invalid(remark: impl Into<String>) -> RemotingError {
        RemotingError::new(response::INVALID_PARAMETER, remark)
    }

    pub fn system(remark: impl Into<String>) -> RemotingError {
        RemotingError::new(response::SYSTEM_ERROR, remark)
    }
}

/// Outcomes that answer a request normally although they are not SUCCESS (a long poll that
/// found nothing, an offset the group never committed): not counted as errors.
pub fn is_normal(code: i32) -> bool {
    matches!(
        code,
        response::SUCCESS
            | response::PULL_NOT_FOUND
            | response::PULL_RETRY_IMMEDIATELY
            | response::PULL_OFFSET_MOVED
            | response::QUERY_NOT_FOUND
            | response::SUBSCRIPTION_NOT_LATEST
    )
}

impl From<StoreError> for RemotingError {
    fn from(e: StoreError) -> RemotingError {
        store_error(&e)
    }
}

fn store_error(e: &StoreError) -> RemotingError {
    let code = match e {
        StoreError::BodyTooLarge { .. } | StoreError::RecordTooLarge { .. } => {
            response::MESSAGE_ILLEGAL
        }
        StoreError::UnknownTopic(_) => response::TOPIC_NOT_EXIST,
        StoreError::TopicExists(_) => response::TOPIC_EXIST_ALREADY,
        StoreError::InvalidField { .. }
        | StoreError::UnknownQueue { .. }
        | StoreError::OffsetOutOfRange { .. } => response::INVALID_PARAMETER,
        // Nothing was written: a producer may retry another broker.
        // Not the group's leader: nothing was written, the producer may retry another broker.
        StoreError::DiskFull { .. } | StoreError::Stopped { .. } | StoreError::NotWritable(_) => {
            response::SERVICE_NOT_AVAILABLE
        }
        // Written by the leader but not yet held by enough in-sync members (sync replication).
        StoreError::NotReplicated(_) => response::FLUSH_SLAVE_TIMEOUT,
        StoreError::Corrupt { .. }
        | StoreError::Malformed { .. }
        | StoreError::Locked(_)
        | StoreError::Config { .. }
        | StoreError::Io { .. } => response::SYSTEM_ERROR,
    };
    RemotingError::new(code, e.to_string())
}

impl From<EngineError> for RemotingError {
    /// The single mapping from engine refusals and failures to remoting codes.
    fn from(e: EngineError) -> RemotingError {
        let code = match &e {
            EngineError::SystemTopic(_)
            | EngineError::TopicPermission { .. }
            | EngineError::Draining { .. } => response::NO_PERMISSION,
            EngineError::TopicNotFound(_) => response::TOPIC_NOT_EXIST,
            EngineError::GroupNotFound(_) => response::SUBSCRIPTION_GROUP_NOT_EXIST,
            // What RocketMQ 5's proxy answers for a message its topic's type refuses.
            EngineError::TypeMismatch { .. }
            | EngineError::PropertyConflict(_)
            | EngineError::IllegalDeliveryTime(_) => response::MESSAGE_ILLEGAL,
            EngineError::BadRequest(_)
            | EngineError::ForeignHandle(_)
            | EngineError::HandleFromBeforeRestart
            | EngineError::StaleHandle
            | EngineError::UnknownDelivery { .. } => response::INVALID_PARAMETER,
            EngineError::AlreadySettled(_) => response::TRANSACTION_FAILED,
            EngineError::IllegalFilter(_) => response::SUBSCRIPTION_PARSE_FAILED,
            EngineError::Store(s) => return store_error(s),
            EngineError::InvalidTransactionId(_)
            | EngineError::MessageNotFound(_)
            | EngineError::Corrupt(_)
            | EngineError::Io(_)
            | EngineError::Internal(_) => response::SYSTEM_ERROR,
        };
        RemotingError::new(code, e.to_string())
    }
}

impl From<Invalid> for RemotingError {
    /// The remoting code of each validation rule.
    fn from(e: Invalid) -> RemotingError {
        let code = match e.violation {
            Violation::Topic | Violation::ConsumerGroup | Violation::Malformed => {
                response::INVALID_PARAMETER
            }
            Violation::MessageId
            | Violation::BodyTooLarge
            | Violation::BodyEmpty
            | Violation::Tag
            | Violation::Key
            | Violation::PropertyKey
            | Violation::PropertiesTooLarge
            | Violation::MessageGroup
            | Violation::TypeConflict => response::MESSAGE_ILLEGAL,
        };
        RemotingError::new(code, e.message)
    }
}

impl From<ferromq_remoting::custom::FieldError> for RemotingError {
    fn from(e: ferromq_remoting::custom::FieldError) -> RemotingError {
        RemotingError::invalid(format!("request header: {e}"))
    }
}

impl From<ferromq_remoting::fastjson::JsonError> for RemotingError {
    fn from(e: ferromq_remoting::fastjson::JsonError) -> RemotingError {
        RemotingError::invalid(format!("request body: {e}"))
    }
}

impl From<ferromq_remoting::message::MessageError> for RemotingError {
    fn from(e: ferromq_remoting::message::MessageError) -> RemotingError {
        RemotingError::new(response::MESSAGE_ILLEGAL, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferromq_store::MessageType;

    #[test]
    fn engine_errors_map_to_the_codes_4x_clients_act_on() {
        let cases = [
            (
                EngineError::TopicNotFound("t".into()),
                response::TOPIC_NOT_EXIST,
            ),
            (
                EngineError::Draining { group: "g".into() },
                response::NO_PERMISSION,
            ),
            (
                EngineError::TypeMismatch {
                    topic: "t".into(),
                    accepts: MessageType::Normal,
                    sent: MessageType::Delay,
                },
                response::MESSAGE_ILLEGAL,
            ),
            (
                EngineError::IllegalFilter("x".into()),
                response::SUBSCRIPTION_PARSE_FAILED,
            ),
            (
                StoreError::DiskFull {
                    detail: "95% used".into(),
                }
                .into(),
                response::SERVICE_NOT_AVAILABLE,
            ),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            let r = RemotingError::from(e);
            assert_eq!(r.code, code, "{text}");
            assert_eq!(r.remark, text, "the engine's words reach the client");
        }
    }

    #[test]
    fn validation_rules_map_to_message_illegal_or_invalid_parameter() {
        let e = crate::validate::topic("bad topic").unwrap_err();
        assert_eq!(RemotingError::from(e).code, response::INVALID_PARAMETER);
        let m = crate::validate::message_fields(
            &crate::validate::MessageFields {
                message_id: "id",
                body_len: 0,
                ..Default::default()
            },
            10,
        )
        .unwrap_err();
        assert_eq!(RemotingError::from(m).code, response::MESSAGE_ILLEGAL);
        assert!(is_normal(response::PULL_NOT_FOUND));
        assert!(!is_normal(response::SYSTEM_ERROR));
    }
}
