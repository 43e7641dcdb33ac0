//! Requests about clients: heartbeats and unregistration (which make consumer groups, see
//! [`super::registry`]), the member list and its change notification, filter checks, orderly
//! consumers' queue locks, and running info relayed from a consumer to tools.

use std::sync::Arc;
use std::time::Duration;

use ferromq_engine::filter::{self, FilterKind};
use ferromq_engine::topics::{ensure_retry_topic, retry_topic};
use ferromq_proto::v2::ClientType;
use ferromq_remoting::body::{
    self, GetConsumerListByGroupResponseBody, HeartbeatData, LockBatchRequestBody,
    LockBatchResponseBody,
};
use ferromq_remoting::code::{request, response};
use ferromq_remoting::custom::{
    ConsumerGroupRequestHeader, GetConsumerRunningInfoRequestHeader, UnregisterClientRequestHeader,
};
use ferromq_remoting::{Command, SerializeType};
use serde::Deserialize;

use super::connection::Peer;
use super::status::RemotingError;
use super::{record, Handled, Remoting};
use crate::validate;

/// How long a consumer gets to answer a relayed request (running info).
pub const CLIENT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A request from the server to a client, in the form every client reads (JSON header).
pub fn server_request(code: i32, header: &impl ferromq_remoting::custom::CustomHeader) -> Command {
    let mut cmd = Command::request(code, 0, header);
    cmd.version = super::VERSION;
    cmd.serialize_type = SerializeType::Json;
    cmd
}

/// Tells each live member of `group` that the membership changed (one-way, best effort).
pub fn notify_ids_changed(r: &Remoting, group: &str) {
    let cmd = server_request(
        request::NOTIFY_CONSUMER_IDS_CHANGED,
        &ConsumerGroupRequestHeader {
            consumer_group: group.to_string(),
        },
    );
    for p in r.clients.consumer_peers(group) {
        p.oneway(cmd.clone());
    }
}

pub(super) fn heartbeat(r: &Arc<Remoting>, peer: &Arc<Peer>, req: &Command) -> Handled {
    let hb: HeartbeatData = body::decode(&req.body)?;
    if hb.client_id.trim().is_empty() {
        return Err(RemotingError::invalid("heartbeat without a clientID"));
    }
    for c in &hb.consumer_data_set {
        validate::group(&c.group_name)?;
    }
    for c in &hb.consumer_data_set {
        // A 4.x consumer subscribes to its group's retry topic itself and asks its route at
        // once; broadcasting consumers have none.
        if c.message_model != "BROADCASTING" {
            let topic = retry_topic(&c.group_name);
            if r.node.engine.store.topics().get(&topic).is_none() {
                ensure_retry_topic(&r.node.engine.store, r.node.engine.journal.as_ref(), &topic)?;
            }
        }
        r.node.clients.heartbeat(
            &hb.client_id,
            req.language.name(),
            Some(&c.group_name),
            ClientType::PushConsumer,
        );
    }
    let changed = r
        .clients
        .heartbeat(peer, &hb, req.language.name(), req.version);
    r.notify(&changed);
    Ok(req.response_to(response::SUCCESS, None))
}

pub(super) fn unregister(r: &Arc<Remoting>, peer: &Arc<Peer>, req: &Command) -> Handled {
    let h: UnregisterClientRequestHeader = req.header()?;
    record(None, h.consumer_group.as_deref());
    let changed = r.clients.unregister(
        peer,
        h.producer_group.as_deref(),
        h.consumer_group.as_deref(),
    );
    r.notify(&changed);
    Ok(req.response_to(response::SUCCESS, None))
}

pub(super) fn consumer_list(r: &Remoting, req: &Command) -> Handled {
    let h: ConsumerGroupRequestHeader = req.header()?;
    record(None, Some(&h.consumer_group));
    let ids = r.clients.consumer_ids(&h.consumer_group);
    if ids.is_empty() {
        return Err(RemotingError::system(format!(
            "no consumer for this group, {}",
            h.consumer_group
        )));
    }
    Ok(req
        .response_to(response::SUCCESS, None)
        .with_body(body::encode(&GetConsumerListByGroupResponseBody {
            consumer_id_list: ids,
        })))
}

/// CHECK_CLIENT_CONFIG's body: the subscription a consumer is about to use.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct CheckClientConfigBody {
    group: String,
    subscription_data: body::SubscriptionData,
}

/// Checks the filter a consumer is about to subscribe with (SQL92 filters are supported).
pub fn check_config(req: &Command) -> Handled {
    let b: CheckClientConfigBody = body::decode(&req.body)?;
    record(Some(&b.subscription_data.topic), Some(&b.group));
    compile(
        &b.subscription_data.expression_type,
        &b.subscription_data.sub_string,
    )?;
    Ok(req.response_to(response::SUCCESS, None))
}

/// A subscription's filter (`TAG` by default, or `SQL92`) compiled for the store.
pub fn compile(
    expression_type: &str,
    expression: &str,
) -> Result<ferromq_store::TagFilter, RemotingError> {
    let kind = match expression_type {
        "" | "TAG" => FilterKind::Tag,
        "SQL92" => FilterKind::Sql,
        other => {
            return Err(RemotingError::new(
                response::SUBSCRIPTION_PARSE_FAILED,
                format!("expression type {other:?} is not supported (TAG or SQL92)"),
            ))
        }
    };
    Ok(filter::compile(Some((kind, expression)))?)
}

pub(super) fn lock(r: &Remoting, req: &Command) -> Handled {
    let b: LockBatchRequestBody = body::decode(&req.body)?;
    record(None, Some(&b.consumer_group));
    let locked = r.locks.lock(&b.consumer_group, &b.client_id, &b.mq_set);
    Ok(req
        .response_to(response::SUCCESS, None)
        .with_body(body::encode(&LockBatchResponseBody {
            lock_ok_mq_set: locked,
        })))
}

pub(super) fn unlock(r: &Remoting, req: &Command) -> Handled {
    let b: LockBatchRequestBody = body::decode(&req.body)?;
    record(None, Some(&b.consumer_group));
    r.locks.unlock(&b.consumer_group, &b.client_id, &b.mq_set);
    Ok(req.response_to(response::SUCCESS, None))
}

/// GET_CONSUMER_RUNNING_INFO from tools: asked of the consumer on its own connection, its answer
/// relayed as it came.
pub(super) async fn running_info(r: &Arc<Remoting>, req: &Command) -> Handled {
    let h: GetConsumerRunningInfoRequestHeader = req.header()?;
    record(None, Some(&h.consumer_group));
    let peer = r.clients.peer_of(&h.client_id).ok_or_else(|| {
        RemotingError::system(format!("The Consumer <{}> not online", h.client_id))
    })?;
    relay(&peer, req, &h).await
}

/// Asks a client what a tool asked us and answers with the client's answer.
pub async fn relay(
    peer: &Peer,
    req: &Command,
    header: &impl ferromq_remoting::custom::CustomHeader,
) -> Handled {
    let call = server_request(req.code, header);
    let answer = peer
        .invoke(call, CLIENT_CALL_TIMEOUT)
        .await
        .map_err(|e| RemotingError::system(format!("the client did not answer: {e}")))?;
    let mut out = req.response_to(answer.code, answer.remark.clone());
    out.ext_fields = answer.ext_fields;
    out.body = answer.body;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_before_consumers_start() {
        assert!(compile("TAG", "TagA || TagB").is_ok());
        assert!(compile("SQL92", "n >= 5").is_ok());
        assert_eq!(
            compile("SQL92", "n >=").unwrap_err().code,
            response::SUBSCRIPTION_PARSE_FAILED
        );
        assert_eq!(
            compile("CLASS", "x").unwrap_err().code,
            response::SUBSCRIPTION_PARSE_FAILED
        );
        let req = Command {
            body: br#"{"clientId":"c","group":"g","subscriptionData":{"expressionType":"SQL92","subString":"a > "}}"#
                .to_vec()
                .into(),
            ..Command::default()
        };
        assert_eq!(
            check_config(&req).unwrap_err().code,
            response::SUBSCRIPTION_PARSE_FAILED
        );
    }
}
