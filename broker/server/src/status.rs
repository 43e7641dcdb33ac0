//! Application statuses of the RocketMQ protocol: the one place where a failure becomes a
//! `Code` and a message.
//!
//! Every RPC answers with gRPC OK and puts its outcome in a `Status{code, message}`; an
//! [`RpcError`] is that pair before it is written. Engine and store errors and validation
//! rules map to codes here and nowhere else, so one failure always reads the same to every
//! client. The classic remoting protocol has its own codes; its one mapping is beside this
//! one, in `remoting/status.rs`.

use ferromq_engine::EngineError;
use ferromq_proto::v2::{self, Code};
use ferromq_store::StoreError;

/// A refused or failed request, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> RpcError {
        RpcError::new(Code::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> RpcError {
        RpcError::new(Code::InternalServerError, message)
    }

    /// The wire form, adjusted for what the client can decode.
    pub fn to_status(&self, client: &ClientLanguage) -> v2::Status {
        v2::Status {
            code: client.compatible(self.code) as i32,
            message: self.message.clone(),
        }
    }
}

/// The OK status every successful answer carries.
pub fn ok() -> v2::Status {
    v2::Status {
        code: Code::Ok as i32,
        message: "OK".into(),
    }
}

/// Builds a status from a code and message.
pub fn status(code: Code, message: impl Into<String>) -> v2::Status {
    v2::Status {
        code: code as i32,
        message: message.into(),
    }
}

/// The language a client announced in `x-mq-language`.
///
/// Why it matters: the Rust client 5.0.0 decodes `Code` with an unwrap, so codes added to the
/// protocol after it was released crash it. For that client we answer with the nearest older
/// code instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientLanguage(pub String);

impl ClientLanguage {
    pub fn is_rust(&self) -> bool {
        self.0.eq_ignore_ascii_case("RUST")
    }

    /// The code to put on the wire for this client.
    pub fn compatible(&self, code: Code) -> Code {
        if !self.is_rust() {
            return code;
        }
        match code {
            Code::IllegalOffset
            | Code::IllegalLiteTopic
            | Code::InvalidClientProperties
            | Code::MessageBodyEmpty => Code::BadRequest,
            Code::OffsetNotFound => Code::NotFound,
            Code::LiteTopicQuotaExceeded | Code::LiteSubscriptionQuotaExceeded => {
                Code::TooManyRequests
            }
            other => other,
        }
    }
}

impl From<StoreError> for RpcError {
    fn from(e: StoreError) -> RpcError {
        store_error(&e)
    }
}

/// The single mapping from storage failures to protocol codes.
fn store_error(e: &StoreError) -> RpcError {
    let code = match e {
        StoreError::BodyTooLarge { .. } => Code::MessageBodyTooLarge,
        StoreError::RecordTooLarge { .. } => Code::MessagePropertiesTooLarge,
        StoreError::InvalidField { field, .. } if *field == "topic" => Code::IllegalTopic,
        StoreError::InvalidField { .. }
        | StoreError::TopicExists(_)
        | StoreError::UnknownQueue { .. } => Code::BadRequest,
        StoreError::UnknownTopic(_) => Code::TopicNotFound,
        StoreError::OffsetOutOfRange { .. } => Code::IllegalOffset,
        // A replica that does not lead (or has lost its lease or in-sync members): nothing was
        // written, the client or proxy retries on the group's leader.
        StoreError::NotWritable(_) => Code::HaNotAvailable,
        // Written but not confirmed by the group in time: not acknowledged.
        StoreError::NotReplicated(_) => Code::SlavePersistenceTimeout,
        // A full disk: the client may retry elsewhere; nothing was written.
        StoreError::DiskFull { .. }
        | StoreError::Stopped { .. }
        | StoreError::Corrupt { .. }
        | StoreError::Malformed { .. }
        | StoreError::Locked(_)
        | StoreError::Config { .. }
        | StoreError::Io { .. } => Code::InternalServerError,
    };
    RpcError::new(code, e.to_string())
}

impl From<crate::validate::Invalid> for RpcError {
    /// The RocketMQ 5 code of each validation rule.
    fn from(e: crate::validate::Invalid) -> RpcError {
        use crate::validate::Violation;
        let code = match e.violation {
            Violation::Topic => Code::IllegalTopic,
            Violation::ConsumerGroup => Code::IllegalConsumerGroup,
            Violation::MessageId => Code::IllegalMessageId,
            Violation::BodyTooLarge => Code::MessageBodyTooLarge,
            Violation::BodyEmpty => Code::MessageBodyEmpty,
            Violation::Tag => Code::IllegalMessageTag,
            Violation::Key => Code::IllegalMessageKey,
            Violation::PropertyKey => Code::IllegalMessagePropertyKey,
            Violation::PropertiesTooLarge => Code::MessagePropertiesTooLarge,
            Violation::MessageGroup => Code::IllegalMessageGroup,
            Violation::TypeConflict => Code::MessagePropertyConflictWithType,
            Violation::Malformed => Code::BadRequest,
        };
        RpcError::new(code, e.message)
    }
}

impl From<EngineError> for RpcError {
    /// The single mapping from engine refusals and failures to protocol codes.
    fn from(e: EngineError) -> RpcError {
        let code = match &e {
            EngineError::SystemTopic(_) => Code::IllegalTopic,
            EngineError::TopicNotFound(_) => Code::TopicNotFound,
            EngineError::GroupNotFound(_) => Code::ConsumerGroupNotFound,
            EngineError::TopicPermission { .. } | EngineError::Draining { .. } => Code::Forbidden,
            EngineError::TypeMismatch { .. } | EngineError::PropertyConflict(_) => {
                Code::MessagePropertyConflictWithType
            }
            EngineError::IllegalDeliveryTime(_) => Code::IllegalDeliveryTime,
            EngineError::BadRequest(_) => Code::BadRequest,
            EngineError::ForeignHandle(_)
            | EngineError::HandleFromBeforeRestart
            | EngineError::StaleHandle
            | EngineError::UnknownDelivery { .. } => Code::InvalidReceiptHandle,
            EngineError::InvalidTransactionId(_) => Code::InvalidTransactionId,
            EngineError::AlreadySettled(_) => Code::PreconditionFailed,
            EngineError::MessageNotFound(_) => Code::MessageNotFound,
            EngineError::Corrupt(_) => Code::MessageCorrupted,
            EngineError::IllegalFilter(_) => Code::IllegalFilterExpression,
            EngineError::Store(s) => return store_error(s),
            EngineError::Io(_) | EngineError::Internal(_) => Code::InternalServerError,
        };
        RpcError::new(code, e.to_string())
    }
}

/// Folds per-entry statuses into the response status: OK when all are OK, the entry's own
/// status when there is one entry (clients read the top-level code), MULTIPLE_RESULTS otherwise.
pub fn summarize<'a>(entries: impl IntoIterator<Item = &'a v2::Status>) -> v2::Status {
    let all: Vec<&v2::Status> = entries.into_iter().collect();
    if all.iter().all(|s| s.code == Code::Ok as i32) {
        return ok();
    }
    if all.len() == 1 {
        return all[0].clone();
    }
    if all.windows(2).all(|w| w[0].code == w[1].code) {
        return all[0].clone();
    }
    status(
        Code::MultipleResults,
        "entries have different results; see each entry",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_clients_never_get_codes_they_cannot_decode() {
        let rust = ClientLanguage("RUST".into());
        assert_eq!(rust.compatible(Code::MessageBodyEmpty), Code::BadRequest);
        assert_eq!(rust.compatible(Code::OffsetNotFound), Code::NotFound);
        assert_eq!(rust.compatible(Code::TopicNotFound), Code::TopicNotFound);
        let java = ClientLanguage("JAVA".into());
        assert_eq!(
            java.compatible(Code::MessageBodyEmpty),
            Code::MessageBodyEmpty
        );
    }

    #[test]
    fn summary_reports_the_single_failure_or_multiple_results() {
        let okay = ok();
        let nf = status(Code::TopicNotFound, "x");
        assert_eq!(summarize([&okay, &okay]).code, Code::Ok as i32);
        assert_eq!(summarize([&nf]).code, Code::TopicNotFound as i32);
        assert_eq!(summarize([&okay, &nf]).code, Code::MultipleResults as i32);
    }

    #[test]
    fn engine_errors_map_to_protocol_codes() {
        use ferromq_store::MessageType;
        let cases = [
            (
                EngineError::SystemTopic("%DLQ%g".into()),
                Code::IllegalTopic,
            ),
            (EngineError::TopicNotFound("t".into()), Code::TopicNotFound),
            (EngineError::Draining { group: "g".into() }, Code::Forbidden),
            (
                EngineError::TypeMismatch {
                    topic: "t".into(),
                    accepts: MessageType::Normal,
                    sent: MessageType::Fifo,
                },
                Code::MessagePropertyConflictWithType,
            ),
            (EngineError::StaleHandle, Code::InvalidReceiptHandle),
            (
                EngineError::HandleFromBeforeRestart,
                Code::InvalidReceiptHandle,
            ),
            (
                EngineError::ForeignHandle("x".into()),
                Code::InvalidReceiptHandle,
            ),
            (
                EngineError::InvalidTransactionId("x".into()),
                Code::InvalidTransactionId,
            ),
            (
                EngineError::AlreadySettled("x".into()),
                Code::PreconditionFailed,
            ),
            (
                EngineError::MessageNotFound("x".into()),
                Code::MessageNotFound,
            ),
            (EngineError::Corrupt("x".into()), Code::MessageCorrupted),
            (
                EngineError::IllegalFilter("x".into()),
                Code::IllegalFilterExpression,
            ),
            (
                EngineError::IllegalDeliveryTime("x".into()),
                Code::IllegalDeliveryTime,
            ),
            (
                StoreError::UnknownTopic("t".into()).into(),
                Code::TopicNotFound,
            ),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            let r = RpcError::from(e);
            assert_eq!(r.code, code, "{text}");
            assert_eq!(r.message, text, "the engine's words reach the client");
        }
        let drain = RpcError::from(EngineError::Draining { group: "g".into() });
        assert!(drain.message.contains(ferromq_engine::DRAINING));
    }

    #[test]
    fn store_errors_map_to_protocol_codes() {
        let e: RpcError = StoreError::BodyTooLarge { size: 10, limit: 5 }.into();
        assert_eq!(e.code, Code::MessageBodyTooLarge);
        let e: RpcError = StoreError::UnknownTopic("t".into()).into();
        assert_eq!(e.code, Code::TopicNotFound);
        let e: RpcError = StoreError::NotWritable("not the leader".into()).into();
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::HaNotAvailable, "not the leader")
        );
        let e: RpcError = EngineError::Store(std::sync::Arc::new(StoreError::NotReplicated(
            "late".into(),
        )))
        .into();
        assert_eq!(e.code, Code::SlavePersistenceTimeout);
    }
}
