//! Settling parked messages from the client side: EndTransaction (commit or roll back a half
//! message) and RecallMessage (cancel a pending delay message). The work is in
//! `ferromq_engine::parked`; this file checks the request and answers.

use std::sync::Arc;

use ferromq_engine::Resolution;
use ferromq_proto::v2::{self, Code, TransactionResolution, TransactionSource};
use tracing::{info, instrument};

use super::RequestMeta;
use crate::node::Node;
use crate::status::{self, RpcError};
use crate::validate;

#[instrument(skip_all, fields(topic = req.topic.as_ref().map(|t| t.name.as_str()).unwrap_or(""), message_id = %req.message_id, resolution = req.resolution, source = req.source))]
pub async fn end_transaction(
    node: &Arc<Node>,
    meta: &RequestMeta,
    req: v2::EndTransactionRequest,
) -> v2::EndTransactionResponse {
    let r = async {
        meta.require_client_id()?;
        let topic = validate::topic_name(req.topic.as_ref())?.to_string();
        let resolution = TransactionResolution::try_from(req.resolution).map_err(|_| {
            RpcError::bad_request(format!("unknown transaction resolution {}", req.resolution))
        })?;
        let source =
            TransactionSource::try_from(req.source).unwrap_or(TransactionSource::Unspecified);
        let how = match resolution {
            TransactionResolution::Commit => Resolution::Commit,
            TransactionResolution::Rollback => Resolution::Rollback,
            // Rust and Python checkers send UNSPECIFIED for "still unknown": keep checking.
            TransactionResolution::Unspecified => Resolution::Unknown,
        };
        let (id, tx) = (req.message_id.clone(), req.transaction_id.clone());
        let r = node
            .blocking(move |b| Ok(b.engine.transactions.end(Some(&topic), &id, &tx, how)?))
            .await;
        if r.is_ok() && source == TransactionSource::ServerCheck {
            info!(resolution = ?resolution, "transaction check answered");
        }
        r
    }
    .await;
    v2::EndTransactionResponse {
        status: Some(match r {
            Ok(()) => status::ok(),
            Err(e) => meta.status(&e),
        }),
    }
}

#[instrument(skip_all, fields(topic = req.topic.as_ref().map(|t| t.name.as_str()).unwrap_or("")))]
pub async fn recall_message(
    node: &Arc<Node>,
    meta: &RequestMeta,
    req: v2::RecallMessageRequest,
) -> v2::RecallMessageResponse {
    let r = async {
        meta.require_client_id()?;
        let topic = validate::topic_name(req.topic.as_ref())?.to_string();
        if req.recall_handle.trim().is_empty() {
            return Err(RpcError::new(Code::BadRequest, "recall_handle is empty"));
        }
        let handle = req.recall_handle.clone();
        node.blocking(move |b| Ok(b.engine.timers.recall(&topic, &handle)?))
            .await
    }
    .await;
    match r {
        Ok(message_id) => v2::RecallMessageResponse {
            status: Some(status::ok()),
            message_id,
        },
        Err(e) => v2::RecallMessageResponse {
            status: Some(meta.status(&e)),
            message_id: String::new(),
        },
    }
}
