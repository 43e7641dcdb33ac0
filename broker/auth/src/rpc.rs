//! Which resources and actions each RPC needs: the one table the server consults, keyed by the
//! gRPC method path, so no wire types are needed here.
//!
//! The MessagingService rows follow what Apache's ACL 2.0 asks of each call
//! (`DefaultAuthorizationContextBuilder`), with the calls it leaves out filled in the way its
//! remoting twins are annotated:
//!
//! | RPC | needs |
//! |---|---|
//! | QueryRoute | topic: publish **or** subscribe |
//! | Heartbeat | group: subscribe (consumers only; a producer's heartbeat names no group) |
//! | SendMessage | topic: publish (of the first message's topic, all messages of a call share it) |
//! | QueryAssignment, ReceiveMessage, AckMessage, ForwardMessageToDeadLetterQueue, PullMessage, UpdateOffset, SyncLiteSubscription | group: subscribe, topic: subscribe |
//! | ChangeInvisibleDuration | group: subscribe |
//! | GetOffset | group: subscribe or get, topic: subscribe or get |
//! | QueryOffset | topic: subscribe or get |
//! | EndTransaction, RecallMessage | topic: publish |
//! | NotifyClientTermination | group: subscribe, when a group is named |
//! | Telemetry | per Settings command, see [`settings_access`]: publish on each publishing topic; subscribe on the group and each subscribed topic |
//!
//! FerroMQ's admin API (`ferromq.admin.v1.Admin`):
//!
//! | RPC | needs |
//! |---|---|
//! | CreateTopic / UpdateTopic / DeleteTopic | topic: create / update / delete |
//! | DescribeTopic, GetMessage | topic: get |
//! | QueryMessages | topic: get or subscribe (Apache's QUERY_MESSAGE takes either) |
//! | ListTopics, ListGroups | cluster: list |
//! | DescribeGroup | group: get |
//! | UpdateGroup, ResetGroupOffset | group: update |
//! | DeleteGroup | group: delete |
//! | ListDeadLetters | group: get |
//! | ResendDeadLetters | group: update (the letters go back to their topics for this group) |
//! | ListCluster | cluster: get |
//! | SetGroupState | cluster: update (draining a broker group affects every topic on it) |
//! | Switchover | cluster: update (moves a replicated group's leadership) |
//! | user and ACL management (CreateUser, UpdateUser, DeleteUser, ListUsers, DescribeUser, CreateAcl, UpdateAcl, DeleteAcl, ListAcls, DescribeAcl) | super user only |
//!
//! User and policy management is reserved to super users, stricter than Apache (which asks for
//! cluster update): a user who may edit policies may grant itself anything, so a separate action
//! would only pretend to be narrower. Any method not in the table (a new RPC nobody mapped yet,
//! gRPC reflection) is also super-user only: forgetting a row fails closed.

use std::net::IpAddr;

use crate::policy::{Action, Resource};

/// Service name of the RocketMQ 5 messaging API.
pub const MESSAGING_SERVICE: &str = "apache.rocketmq.v2.MessagingService";
/// Service name of FerroMQ's admin API.
pub const ADMIN_SERVICE: &str = "ferromq.admin.v1.Admin";

/// Which name of the request a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Topic,
    Group,
    Cluster,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Topic => "topic",
            Target::Group => "group",
            Target::Cluster => "cluster",
        }
    }
}

/// One check of a rule: the request's target must allow one of `any_of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub target: Target,
    pub any_of: &'static [Action],
    /// When the request does not name the target (a producer's Heartbeat has no group), skip the
    /// check instead of refusing the call.
    pub optional: bool,
}

/// What an RPC requires of a normal user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcRule {
    /// Every check must pass.
    Checks(&'static [Check]),
    /// The Telemetry stream: authenticated to open; each Settings command it carries is checked
    /// with [`settings_access`].
    PerSettingsCommand,
    /// Super users only.
    SuperUserOnly,
}

const PUB: &[Action] = &[Action::Publish];
const SUB: &[Action] = &[Action::Subscribe];
const PUB_OR_SUB: &[Action] = &[Action::Publish, Action::Subscribe];
const SUB_OR_GET: &[Action] = &[Action::Subscribe, Action::Get];
const GET_OR_SUB: &[Action] = &[Action::Get, Action::Subscribe];

/// A check as a constant expression (so tables of them are `'static` without a `const` item
/// per row). `need!(Topic, PUB)` requires the name; `need!(Group, SUB, if named)` skips when absent.
macro_rules! need {
    ($target:ident, $any_of:expr) => {
        Check {
            target: Target::$target,
            any_of: $any_of,
            optional: false,
        }
    };
    ($target:ident, $any_of:expr, if named) => {
        Check {
            target: Target::$target,
            any_of: $any_of,
            optional: true,
        }
    };
}

const TOPIC_PUB: &[Check] = &[need!(Topic, PUB)];
const GROUP_AND_TOPIC_SUB: &[Check] = &[need!(Group, SUB), need!(Topic, SUB)];

/// The rule of a gRPC method, by path (`/package.Service/Method`, leading slash optional).
pub fn rpc_rule(path: &str) -> RpcRule {
    let path = path.strip_prefix('/').unwrap_or(path);
    let Some((service, method)) = path.split_once('/') else {
        return RpcRule::SuperUserOnly;
    };
    let checks: &'static [Check] = match (service, method) {
        (MESSAGING_SERVICE, "QueryRoute") => &[need!(Topic, PUB_OR_SUB)],
        (MESSAGING_SERVICE, "Heartbeat") => &[need!(Group, SUB, if named)],
        (MESSAGING_SERVICE, "SendMessage" | "EndTransaction" | "RecallMessage") => TOPIC_PUB,
        (
            MESSAGING_SERVICE,
            "QueryAssignment"
            | "ReceiveMessage"
            | "AckMessage"
            | "ForwardMessageToDeadLetterQueue"
            | "PullMessage"
            | "UpdateOffset"
            | "SyncLiteSubscription",
        ) => GROUP_AND_TOPIC_SUB,
        (MESSAGING_SERVICE, "ChangeInvisibleDuration") => &[need!(Group, SUB)],
        (MESSAGING_SERVICE, "GetOffset") => &[need!(Group, SUB_OR_GET), need!(Topic, SUB_OR_GET)],
        (MESSAGING_SERVICE, "QueryOffset") => &[need!(Topic, SUB_OR_GET)],
        (MESSAGING_SERVICE, "NotifyClientTermination") => &[need!(Group, SUB, if named)],
        (MESSAGING_SERVICE, "Telemetry") => return RpcRule::PerSettingsCommand,
        (ADMIN_SERVICE, "CreateTopic") => &[need!(Topic, &[Action::Create])],
        (ADMIN_SERVICE, "UpdateTopic") => &[need!(Topic, &[Action::Update])],
        (ADMIN_SERVICE, "DeleteTopic") => &[need!(Topic, &[Action::Delete])],
        (ADMIN_SERVICE, "DescribeTopic" | "GetMessage") => &[need!(Topic, &[Action::Get])],
        (ADMIN_SERVICE, "QueryMessages") => &[need!(Topic, GET_OR_SUB)],
        (ADMIN_SERVICE, "ListTopics" | "ListGroups") => &[need!(Cluster, &[Action::List])],
        (ADMIN_SERVICE, "DescribeGroup") => &[need!(Group, &[Action::Get])],
        (ADMIN_SERVICE, "UpdateGroup" | "ResetGroupOffset" | "ResendDeadLetters") => {
            &[need!(Group, &[Action::Update])]
        }
        (ADMIN_SERVICE, "DeleteGroup") => &[need!(Group, &[Action::Delete])],
        (ADMIN_SERVICE, "ListDeadLetters") => &[need!(Group, &[Action::Get])],
        (ADMIN_SERVICE, "ListCluster") => &[need!(Cluster, &[Action::Get])],
        (ADMIN_SERVICE, "SetGroupState") => &[need!(Cluster, &[Action::Update])],
        (ADMIN_SERVICE, "Switchover") => &[need!(Cluster, &[Action::Update])],
        _ => return RpcRule::SuperUserOnly,
    };
    RpcRule::Checks(checks)
}

/// The names a request carries, as the server reads them from the request message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Targets<'a> {
    pub topic: Option<&'a str>,
    pub group: Option<&'a str>,
}

/// One resource with the actions of which one must be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access<'a> {
    pub resource: Resource<'a>,
    pub any_of: &'static [Action],
}

/// The checks of a rule with the request's names filled in. `Err` names the target a required
/// check found missing (a malformed request: answer `BAD_REQUEST`).
pub fn rule_access<'a>(
    checks: &'static [Check],
    targets: &Targets<'a>,
) -> Result<Vec<Access<'a>>, Target> {
    let mut out = Vec::with_capacity(checks.len());
    for check in checks {
        let resource = match check.target {
            Target::Cluster => Some(Resource::Cluster),
            Target::Topic => targets.topic.filter(|n| !n.is_empty()).map(Resource::Topic),
            Target::Group => targets.group.filter(|n| !n.is_empty()).map(Resource::Group),
        };
        match resource {
            Some(resource) => out.push(Access {
                resource,
                any_of: check.any_of,
            }),
            None if check.optional => {}
            None => return Err(check.target),
        }
    }
    Ok(out)
}

/// The names of a Telemetry `Settings` command: what a client announces it will publish to or
/// consume.
#[derive(Debug, Clone, Copy, Default)]
pub struct SettingsTargets<'a> {
    pub publishing_topics: &'a [&'a str],
    pub subscription_group: Option<&'a str>,
    pub subscription_topics: &'a [&'a str],
}

/// What a Settings command needs: publish on each publishing topic; subscribe on the group and on
/// each subscribed topic (Apache's rule).
pub fn settings_access<'a>(settings: &SettingsTargets<'a>) -> Vec<Access<'a>> {
    let publishing = settings.publishing_topics.iter().map(|t| Access {
        resource: Resource::Topic(t),
        any_of: PUB,
    });
    let group = settings
        .subscription_group
        .filter(|g| !g.is_empty())
        .map(|g| Access {
            resource: Resource::Group(g),
            any_of: SUB,
        });
    let subscribed = settings.subscription_topics.iter().map(|t| Access {
        resource: Resource::Topic(t),
        any_of: SUB,
    });
    publishing.chain(group).chain(subscribed).collect()
}

/// Why a call was refused after authentication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The user may not: RocketMQ `FORBIDDEN` (40300). The message names user, resource, action
    /// and source, never a secret, and is fit for both the log and the caller.
    #[error("user {user:?} may not {action} {resource}{}: {reason}", peer_suffix(.peer))]
    Forbidden {
        user: String,
        resource: String,
        /// The action, or `a|b` when any of several would have done.
        action: String,
        peer: Option<IpAddr>,
        reason: String,
    },
    /// The request lacks a name the rule needs: RocketMQ `BAD_REQUEST` (40000).
    #[error("{rpc} request names no {target}, which authorization needs")]
    MissingTarget { rpc: String, target: &'static str },
}

fn peer_suffix(peer: &Option<IpAddr>) -> String {
    peer.map(|s| format!(" from {s}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(service: &str, method: &str) -> String {
        format!("/{service}/{method}")
    }

    #[test]
    fn every_messaging_rpc_is_mapped() {
        for method in [
            "QueryRoute",
            "Heartbeat",
            "SendMessage",
            "QueryAssignment",
            "ReceiveMessage",
            "AckMessage",
            "ForwardMessageToDeadLetterQueue",
            "PullMessage",
            "UpdateOffset",
            "GetOffset",
            "QueryOffset",
            "EndTransaction",
            "Telemetry",
            "NotifyClientTermination",
            "ChangeInvisibleDuration",
            "RecallMessage",
            "SyncLiteSubscription",
        ] {
            assert_ne!(
                rpc_rule(&path(MESSAGING_SERVICE, method)),
                RpcRule::SuperUserOnly,
                "{method}"
            );
        }
    }

    #[test]
    fn every_admin_rpc_of_admin_proto_is_mapped() {
        // The service block of broker/proto/proto/ferromq/admin/v1/admin.proto.
        let proto = include_str!("../../proto/proto/ferromq/admin/v1/admin.proto");
        let service = proto.split("service Admin").nth(1).unwrap();
        let methods: Vec<&str> = service
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .map(|l| l.split('(').next().unwrap().trim())
            .collect();
        assert!(methods.len() >= 12, "{methods:?}");
        for method in methods {
            let expected_super_only = method.ends_with("User")
                || method.ends_with("Users")
                || method.ends_with("Acl")
                || method.ends_with("Acls");
            let rule = rpc_rule(&path(ADMIN_SERVICE, method));
            if expected_super_only {
                assert_eq!(rule, RpcRule::SuperUserOnly, "{method}");
            } else {
                assert!(
                    matches!(rule, RpcRule::Checks(_)),
                    "admin RPC {method} has no row in rpc_rule: add one"
                );
            }
        }
    }

    #[test]
    fn unknown_methods_and_user_management_are_super_user_only() {
        for p in [
            "/ferromq.admin.v1.Admin/CreateUser",
            "/ferromq.admin.v1.Admin/ListAcls",
            "/apache.rocketmq.v2.MessagingService/Teleport",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "garbage",
            "",
        ] {
            assert_eq!(rpc_rule(p), RpcRule::SuperUserOnly, "{p}");
        }
    }

    #[test]
    fn rules_fill_in_the_request_names() {
        let RpcRule::Checks(checks) =
            rpc_rule("/apache.rocketmq.v2.MessagingService/ReceiveMessage")
        else {
            panic!()
        };
        let t = Targets {
            topic: Some("orders"),
            group: Some("billing"),
        };
        assert_eq!(
            rule_access(checks, &t).unwrap(),
            vec![
                Access {
                    resource: Resource::Group("billing"),
                    any_of: SUB
                },
                Access {
                    resource: Resource::Topic("orders"),
                    any_of: SUB
                },
            ]
        );
        assert_eq!(
            rule_access(
                checks,
                &Targets {
                    topic: Some("orders"),
                    group: Some("")
                }
            ),
            Err(Target::Group)
        );
        // A producer's heartbeat names no group: nothing to check.
        let RpcRule::Checks(hb) = rpc_rule("apache.rocketmq.v2.MessagingService/Heartbeat") else {
            panic!()
        };
        assert_eq!(rule_access(hb, &Targets::default()).unwrap(), vec![]);
    }

    #[test]
    fn group_operations_need_the_group_action_they_change() {
        for (method, action) in [
            ("ResetGroupOffset", &[Action::Update] as &'static [Action]),
            ("ResendDeadLetters", &[Action::Update]),
            ("DeleteGroup", &[Action::Delete]),
            ("ListDeadLetters", &[Action::Get]),
        ] {
            let RpcRule::Checks(checks) = rpc_rule(&path(ADMIN_SERVICE, method)) else {
                panic!("{method}")
            };
            let t = Targets {
                topic: None,
                group: Some("billing"),
            };
            assert_eq!(
                rule_access(checks, &t).unwrap(),
                vec![Access {
                    resource: Resource::Group("billing"),
                    any_of: action
                }],
                "{method}"
            );
        }
    }

    #[test]
    fn settings_need_publish_and_subscribe_where_announced() {
        let acc = settings_access(&SettingsTargets {
            publishing_topics: &["a", "b"],
            subscription_group: Some("g"),
            subscription_topics: &["c"],
        });
        let shown: Vec<String> = acc
            .iter()
            .map(|a| format!("{}={}", a.resource, a.any_of[0]))
            .collect();
        assert_eq!(
            shown,
            [
                "topic:a=publish",
                "topic:b=publish",
                "group:g=subscribe",
                "topic:c=subscribe"
            ]
        );
    }
}
