//! Transactions of 4.x producers: END_TRANSACTION, and the broker's check-back
//! (CHECK_TRANSACTION_STATE) on a producer's own connection.
//!
//! A 4.x producer's half message is a TRANSACTION publication (see [`super::send`]); the send
//! answers the engine's transaction id, which the producer echoes in END_TRANSACTION together
//! with the half message's commit log offset and message id. 4.9.8 sends no topic, so the
//! transaction is found by its id, else by that offset, never by topic. END_TRANSACTION is
//! one-way from 4.x producers; its errors are only logged.
//!
//! Check-backs: the engine asks once the check interval passes without an outcome. A half
//! message from a remoting producer carries its producer group (`PGROUP`), so the check goes
//! to the producer that sent it if it is still connected, else to any live producer of that
//! group, on its own connection: the header names the transaction and the body is the half
//! message, as sent, in the stored-message encoding. The producer's checker answers with
//! END_TRANSACTION (`fromTransactionCheck`).

use std::sync::Arc;

use ferromq_engine::{props, EngineError, Resolution};
use ferromq_remoting::code::{request, response};
use ferromq_remoting::custom::{
    transaction_type, CheckTransactionStateRequestHeader, EndTransactionRequestHeader,
};
use ferromq_remoting::message::{encode_offset_msg_id, property, sys_flag};
use ferromq_remoting::Command;
use ferromq_store::StoredMessage;
use tracing::{debug, info, warn};

use super::client::server_request;
use super::message::{to_wire, RMQ_PREFIX};
use super::status::RemotingError;
use super::{record, Handled, Remoting};

pub(super) async fn end(r: &Arc<Remoting>, req: &Command) -> Handled {
    let h: EndTransactionRequestHeader = req.header()?;
    record(h.topic.as_deref(), Some(&h.producer_group));
    let how = match h.commit_or_rollback {
        transaction_type::COMMIT => Resolution::Commit,
        transaction_type::ROLLBACK => Resolution::Rollback,
        transaction_type::NOT_TYPE => Resolution::Unknown,
        other => {
            return Err(RemotingError::invalid(format!(
                "commitOrRollback {other} is not 0, 8 or 12"
            )))
        }
    };
    let phys = r.offsets.read(h.commit_log_offset);
    let from_check = h.from_transaction_check == Some(true);
    // Named on the warning below: the request's span is off at the default level.
    let (topic_name, msg_id) = (h.topic.clone().unwrap_or_default(), h.msg_id.clone());
    let result = r
        .blocking(move |r| {
            let tx = &r.node.engine.transactions;
            let topic = h.topic.as_deref().filter(|t| !t.is_empty());
            let by_id = match h.transaction_id.as_deref().filter(|t| !t.is_empty()) {
                Some(id) => tx.end(topic, &h.msg_id, id, how),
                None => Err(EngineError::InvalidTransactionId("no transactionId".into())),
            };
            match (by_id, phys) {
                (Err(EngineError::InvalidTransactionId(_)), Some(phys)) => {
                    let id = tx.id_at_offset(phys)?;
                    Ok(tx.end(topic, &h.msg_id, &id, how)?)
                }
                (r, _) => Ok(r?),
            }
        })
        .await;
    match &result {
        Ok(()) if from_check => info!(resolution = ?how, "transaction check answered"),
        Ok(()) => debug!(resolution = ?how, "transaction ended"),
        Err(e) => warn!(topic = %topic_name, %msg_id, error = %e, "END_TRANSACTION refused"),
    }
    result.map(|()| req.response_to(response::SUCCESS, None))
}

/// Lets the engine's transaction checks reach remoting producers (see the module docs).
pub(super) fn install_checks(r: &Arc<Remoting>) {
    let weak = Arc::downgrade(r);
    let _ = r.node.other_checks.set(Box::new(move |m, tx_id| {
        weak.upgrade()
            .is_some_and(|r| r.check_transaction(m, tx_id))
    }));
}

impl Remoting {
    /// Sends CHECK_TRANSACTION_STATE for half message `m` (as sent) to one of its producers;
    /// says whether one was reached.
    fn check_transaction(&self, m: &StoredMessage, tx_id: &str) -> bool {
        let key = format!("{RMQ_PREFIX}{}", property::PRODUCER_GROUP);
        let Some(group) = m.properties.get(&key) else {
            return false;
        };
        let preferred = m.properties.get(props::TX_PRODUCER).map(String::as_str);
        let Some(peer) = self.clients.producer_peer(group, preferred) else {
            debug!(group = %group, topic = %m.topic, "no producer of the group online for a transaction check");
            return false;
        };
        let shown = self.offsets.show(m.phys_offset);
        let mut wire = to_wire(m, peer.front.store_host, self.offsets);
        wire.sys_flag = sys_flag::TRANSACTION_PREPARED;
        wire.properties
            .insert(property::TRANSACTION_PREPARED.into(), "true".into());
        wire.properties
            .insert(property::TRANSACTION_ID.into(), tx_id.to_string());
        let mut body = Vec::new();
        if let Err(e) = wire.encode_into(&mut body) {
            warn!(error = %e, "half message cannot be encoded for its check");
            return false;
        }
        let header = CheckTransactionStateRequestHeader {
            topic: Some(m.topic.clone()),
            tran_state_table_offset: m.queue_offset as i64,
            commit_log_offset: shown,
            msg_id: m.msg_id().map(str::to_string),
            transaction_id: Some(tx_id.to_string()),
            offset_msg_id: Some(encode_offset_msg_id(peer.front.store_host, shown)),
        };
        peer.oneway(server_request(request::CHECK_TRANSACTION_STATE, &header).with_body(body))
    }
}
