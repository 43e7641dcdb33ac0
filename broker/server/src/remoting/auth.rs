//! Authentication and authorization of remoting requests, with `--auth`: the same users,
//! policies and decisions as the gRPC side (`crate::auth`), over the classic clients' own
//! signature (`ferromq_auth::remoting`: `AccessKey` and `Signature` header fields).
//!
//! Every request is checked before it is routed, so a refused request changes nothing. The
//! answer is `NO_PERMISSION` (16) with a remark saying why (never the secret or signature):
//! 4.x clients raise it to the application as a broker error, and tools print it.
//!
//! What each request code needs is the table in [`rule`], written from what the request does
//! (Apache's ACL 2.0 asks the same of the same requests). Names come from the request's
//! header fields, or from its body where only the body names them (heartbeats, queue locks,
//! group updates). A retry or dead-letter topic (`%RETRY%G`, `%DLQ%G`) is checked as its
//! consumer group `G` with `subscribe`: a consumer that may consume as `G` may retry as `G`.
//! Request codes without a row are for super users only, so a request nobody mapped fails
//! closed.
//!
//! Through a proxy the requests arrive whole on the tunnel and are checked here, on the broker
//! group; the proxy holds no users. The source address a policy's ranges are checked against is
//! then the proxy's (see [`super::connection::Peer::source`]).

use std::sync::Arc;

use ferromq_auth::policy::{Action, Resource};
use ferromq_auth::rpc::{Access, Target};
use ferromq_auth::{AccessError, Principal, Refusal};
use ferromq_remoting::body::{self, HeartbeatData, LockBatchRequestBody, SubscriptionGroupConfig};
use ferromq_remoting::code::{request, response};
use ferromq_remoting::Command;

use super::connection::Peer;
use super::status::RemotingError;
use crate::auth::Gate;

/// Where a request names the resource a check is about.
#[derive(Debug, Clone, Copy)]
enum Name {
    /// The first of these header fields that is present (v2 sends use one-letter names).
    Field(&'static [&'static str]),
    /// Every consumer group of a heartbeat's body.
    HeartbeatGroups,
    /// The `consumerGroup` of a queue-lock body.
    LockGroup,
    /// The `groupName` of a subscription group config body.
    GroupConfig,
}

/// One check: the named resource must allow one of `any_of`.
#[derive(Debug, Clone, Copy)]
struct Need {
    target: Target,
    any_of: &'static [Action],
    name: Name,
    /// When the request does not name it, skip the check instead of refusing the request.
    optional: bool,
}

/// What a request code requires of a normal user.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// A valid signature of any user.
    Authenticated,
    Needs(&'static [Need]),
    SuperUserOnly,
}

const PUB: &[Action] = &[Action::Publish];
const SUB: &[Action] = &[Action::Subscribe];
const PUB_OR_SUB: &[Action] = &[Action::Publish, Action::Subscribe];
const SUB_OR_GET: &[Action] = &[Action::Subscribe, Action::Get];
const GET: &[Action] = &[Action::Get];
const GET_OR_SUB: &[Action] = &[Action::Get, Action::Subscribe];

const TOPIC: Name = Name::Field(&["topic"]);
const SEND_TOPIC: Name = Name::Field(&["topic", "b"]);
const CONSUMER_GROUP: Name = Name::Field(&["consumerGroup"]);
const GROUP: Name = Name::Field(&["group"]);
/// For cluster checks, which name nothing.
const NO_NAME: Name = Name::Field(&[]);

/// `need!(Topic, PUB, TOPIC)` requires the name; `need!(..., if named)` skips when absent.
macro_rules! need {
    ($target:ident, $any_of:expr, $name:expr) => {
        Need {
            target: Target::$target,
            any_of: $any_of,
            name: $name,
            optional: false,
        }
    };
    ($target:ident, $any_of:expr, $name:expr, if named) => {
        Need {
            target: Target::$target,
            any_of: $any_of,
            name: $name,
            optional: true,
        }
    };
}

/// The rule of a request code.
fn rule(code: i32) -> Rule {
    use request::*;
    let needs: &'static [Need] = match code {
        // What the name-server side tells: routes need a right on the topic; the cluster's
        // shape and the (no-op) name-server registrations any user may see or send.
        GET_ROUTEINFO_BY_TOPIC => &[need!(Topic, PUB_OR_SUB, TOPIC)],
        GET_BROKER_CLUSTER_INFO
        | DELETE_TOPIC_IN_NAMESRV
        | REGISTER_TOPIC_IN_NAMESRV
        | GET_KV_CONFIG => return Rule::Authenticated,
        GET_ALL_TOPIC_LIST_FROM_NAMESERVER
        | GET_TOPICS_BY_CLUSTER
        | GET_TOPIC_NAME_LIST
        | GET_SYSTEM_TOPIC_LIST_FROM_NS
        | GET_SYSTEM_TOPIC_LIST_FROM_BROKER
        | GET_ALL_TOPIC_CONFIG
        | GET_ALL_SUBSCRIPTIONGROUP_CONFIG => &[need!(Cluster, &[Action::List], NO_NAME)],
        PUT_KV_CONFIG | DELETE_KV_CONFIG => &[need!(Cluster, &[Action::Update], NO_NAME)],
        // Clients.
        HEART_BEAT => &[need!(Group, SUB, Name::HeartbeatGroups, if named)],
        UNREGISTER_CLIENT => &[need!(Group, SUB, CONSUMER_GROUP, if named)],
        CHECK_CLIENT_CONFIG => return Rule::Authenticated,
        GET_CONSUMER_LIST_BY_GROUP => &[need!(Group, SUB, CONSUMER_GROUP)],
        LOCK_BATCH_MQ | UNLOCK_BATCH_MQ => &[need!(Group, SUB, Name::LockGroup)],
        SEND_MESSAGE | SEND_MESSAGE_V2 | SEND_BATCH_MESSAGE => &[need!(Topic, PUB, SEND_TOPIC)],
        PULL_MESSAGE | QUERY_CONSUMER_OFFSET | UPDATE_CONSUMER_OFFSET => {
            &[need!(Group, SUB, CONSUMER_GROUP), need!(Topic, SUB, TOPIC)]
        }
        GET_MAX_OFFSET
        | GET_MIN_OFFSET
        | GET_EARLIEST_MSG_STORETIME
        | SEARCH_OFFSET_BY_TIMESTAMP => &[need!(Topic, SUB_OR_GET, TOPIC)],
        CONSUMER_SEND_MSG_BACK => &[need!(Group, SUB, GROUP)],
        // 4.9.8's END_TRANSACTION names no topic (5.x clients do).
        END_TRANSACTION => &[need!(Topic, PUB, TOPIC, if named)],
        // Administration.
        UPDATE_AND_CREATE_TOPIC => &[need!(Topic, &[Action::Create, Action::Update], TOPIC)],
        DELETE_TOPIC_IN_BROKER => &[need!(Topic, &[Action::Delete], TOPIC)],
        GET_TOPIC_STATS_INFO | GET_TOPIC_CONFIG | QUERY_TOPIC_CONSUME_BY_WHO => {
            &[need!(Topic, GET, TOPIC)]
        }
        GET_CONSUME_STATS => &[
            need!(Group, GET, CONSUMER_GROUP),
            need!(Topic, GET, TOPIC, if named),
        ],
        GET_CONSUMER_CONNECTION_LIST | GET_CONSUMER_RUNNING_INFO => {
            &[need!(Group, GET, CONSUMER_GROUP)]
        }
        GET_PRODUCER_CONNECTION_LIST | GET_BROKER_RUNTIME_INFO | GET_BROKER_CONFIG => {
            &[need!(Cluster, GET, NO_NAME)]
        }
        UPDATE_AND_CREATE_SUBSCRIPTIONGROUP => &[need!(
            Group,
            &[Action::Create, Action::Update],
            Name::GroupConfig
        )],
        GET_SUBSCRIPTIONGROUP_CONFIG => &[need!(Group, GET, GROUP)],
        DELETE_SUBSCRIPTIONGROUP => &[need!(Group, &[Action::Delete], Name::Field(&["groupName"]))],
        QUERY_MESSAGE => &[need!(Topic, GET_OR_SUB, TOPIC)],
        // A message is looked up by offset: its topic is named by 5.x tools only.
        VIEW_MESSAGE_BY_ID => &[
            need!(Topic, GET, TOPIC, if named),
            need!(Cluster, GET, NO_NAME),
        ],
        INVOKE_BROKER_TO_RESET_OFFSET => &[
            need!(Group, &[Action::Update], GROUP),
            need!(Topic, SUB_OR_GET, TOPIC),
        ],
        _ => return Rule::SuperUserOnly,
    };
    Rule::Needs(needs)
}

/// The names a check is about, as the request carries them.
fn names(need: &Need, req: &Command) -> Result<Vec<String>, RemotingError> {
    let bad_body = |what: &str, e: ferromq_remoting::fastjson::JsonError| {
        RemotingError::invalid(format!("{what} body does not parse: {e}"))
    };
    Ok(match need.name {
        Name::Field(fields) => fields
            .iter()
            .find_map(|f| req.ext_fields.get(*f))
            .filter(|n| !n.is_empty())
            .cloned()
            .into_iter()
            .collect(),
        Name::HeartbeatGroups => {
            let hb: HeartbeatData =
                body::decode(&req.body).map_err(|e| bad_body("heartbeat", e))?;
            hb.consumer_data_set
                .into_iter()
                .map(|c| c.group_name)
                .collect()
        }
        Name::LockGroup => {
            let b: LockBatchRequestBody =
                body::decode(&req.body).map_err(|e| bad_body("queue lock", e))?;
            vec![b.consumer_group]
        }
        Name::GroupConfig => {
            let b: SubscriptionGroupConfig =
                body::decode(&req.body).map_err(|e| bad_body("subscription group", e))?;
            vec![b.group_name]
        }
    })
}

/// Prefix of a group's dead-letter topic (`ferromq_engine::topics::dlq_topic`).
const DLQ_PREFIX: &str = "%DLQ%";

/// The resource a name is checked as: retry and dead-letter topics as their group.
fn resource<'a>(target: Target, name: &'a str, any_of: &'static [Action]) -> Access<'a> {
    let group_topic = name
        .strip_prefix(ferromq_engine::topics::RETRY_PREFIX)
        .or_else(|| name.strip_prefix(DLQ_PREFIX))
        .filter(|g| !g.is_empty());
    match (target, group_topic) {
        (Target::Topic, Some(group)) => Access {
            resource: Resource::Group(group),
            any_of: SUB,
        },
        (Target::Topic, None) => Access {
            resource: Resource::Topic(name),
            any_of,
        },
        (Target::Group, _) => Access {
            resource: Resource::Group(name),
            any_of,
        },
        (Target::Cluster, _) => Access {
            resource: Resource::Cluster,
            any_of,
        },
    }
}

/// Checks one request; `Err` is the answer to give instead of handling it.
pub(super) fn check(gate: &Arc<Gate>, peer: &Peer, req: &Command) -> Result<(), RemotingError> {
    let snapshot = gate.store().snapshot();
    let who = match snapshot.authenticate_remoting(&req.ext_fields, &req.body) {
        Ok(who) => who,
        Err(e) => {
            let claimed = e.access_key().map(str::to_string);
            return Err(refuse(
                gate,
                peer,
                req,
                claimed.as_deref(),
                Refusal::from(e),
            ));
        }
    };
    let denied = |e: AccessError| refuse(gate, peer, req, Some(&who.name), Refusal::from(e));
    let needs = match rule(req.code) {
        Rule::Authenticated => return Ok(()),
        _ if who.is_super() => return Ok(()),
        Rule::SuperUserOnly => {
            return Err(denied(super_only(&who, req.code, peer)));
        }
        Rule::Needs(needs) => needs,
    };
    for need in needs {
        let names = names(need, req)?;
        if names.is_empty() && need.target != Target::Cluster {
            if need.optional {
                continue;
            }
            return Err(denied(AccessError::MissingTarget {
                rpc: code_name(req.code).to_string(),
                target: need.target.as_str(),
            }));
        }
        let accesses: Vec<Access<'_>> = match need.target {
            Target::Cluster => vec![resource(Target::Cluster, "", need.any_of)],
            t => names.iter().map(|n| resource(t, n, need.any_of)).collect(),
        };
        snapshot
            .check_all(&who, &accesses, peer.source)
            .map_err(denied)?;
    }
    Ok(())
}

fn super_only(who: &Principal, code: i32, peer: &Peer) -> AccessError {
    AccessError::Forbidden {
        user: who.name.to_string(),
        resource: "cluster".into(),
        action: code_name(code).to_string(),
        peer: peer.source,
        reason: "only super users may send this request".into(),
    }
}

fn code_name(code: i32) -> &'static str {
    request::name(code).unwrap_or("UNKNOWN_REQUEST")
}

/// Logs and counts a refusal (never a header value) and gives the answer.
fn refuse(
    gate: &Gate,
    peer: &Peer,
    req: &Command,
    claimed: Option<&str>,
    refusal: Refusal,
) -> RemotingError {
    gate.note_refusal(&refusal);
    tracing::info!(
        user = claimed.unwrap_or("-"),
        peer = %peer.addr,
        code = code_name(req.code),
        reason = %refusal,
        "remoting request refused"
    );
    RemotingError::new(response::NO_PERMISSION, refusal.client_message())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request code FerroMQ routes has a row: none is left super-user only by omission
    /// except those meant to be.
    #[test]
    fn every_client_request_has_a_rule() {
        use request::*;
        for code in [
            GET_ROUTEINFO_BY_TOPIC,
            HEART_BEAT,
            SEND_MESSAGE,
            SEND_MESSAGE_V2,
            SEND_BATCH_MESSAGE,
            PULL_MESSAGE,
            QUERY_CONSUMER_OFFSET,
            UPDATE_CONSUMER_OFFSET,
            CONSUMER_SEND_MSG_BACK,
            END_TRANSACTION,
            LOCK_BATCH_MQ,
            UNLOCK_BATCH_MQ,
            GET_CONSUMER_LIST_BY_GROUP,
            UNREGISTER_CLIENT,
            GET_MAX_OFFSET,
        ] {
            assert!(
                !matches!(rule(code), Rule::SuperUserOnly),
                "{} has no rule",
                code_name(code)
            );
        }
        assert!(matches!(rule(99_999), Rule::SuperUserOnly));
    }

    #[test]
    fn retry_and_dead_letter_topics_are_checked_as_their_group() {
        let a = resource(Target::Topic, "%RETRY%billing", PUB);
        assert_eq!(a.resource, Resource::Group("billing"));
        assert_eq!(a.any_of, SUB);
        let a = resource(Target::Topic, "%DLQ%billing", PUB);
        assert_eq!(a.resource, Resource::Group("billing"));
        let a = resource(Target::Topic, "orders", PUB);
        assert_eq!(a.resource, Resource::Topic("orders"));
        assert_eq!(a.any_of, PUB);
    }

    #[test]
    fn v2_sends_name_their_topic_in_field_b() {
        let mut req = Command {
            code: request::SEND_MESSAGE_V2,
            ..Default::default()
        };
        req.ext_fields.insert("b".into(), "orders".into());
        let need = need!(Topic, PUB, SEND_TOPIC);
        assert_eq!(names(&need, &req).unwrap(), vec!["orders".to_string()]);
    }
}
