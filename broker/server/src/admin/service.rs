//! Server side of the admin API: topics, groups and message lookups.
//!
//! Errors are gRPC statuses (the admin CLI is ours, so no RocketMQ status codes): a store
//! error maps to INVALID_ARGUMENT, NOT_FOUND or ALREADY_EXISTS with the store's message.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ferromq_proto::admin::{self, admin_server::Admin, TopicPermission, TopicType};
use ferromq_store::{MessageType, Permission, StoreError, StoredMessage, TopicConfig};
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use crate::auth::{admin_access as access, Gate};
use crate::node::Node;
use ferromq_auth::Targets;
use ferromq_engine::groups::GroupConfig;
use ferromq_engine::ParkedQueue as _;

#[derive(Clone)]
pub struct AdminApi {
    node: Arc<Node>,
    /// Users and policies, with auth on.
    auth: Option<Arc<Gate>>,
}

impl AdminApi {
    pub fn new(node: Arc<Node>) -> AdminApi {
        AdminApi { node, auth: None }
    }

    fn users(&self) -> crate::admin::users::Users {
        crate::admin::users::Users::new(self.auth.clone())
    }

    /// Serves user and ACL management from the gate's store (refused while auth is off).
    pub fn with_auth(mut self, gate: Option<Arc<Gate>>) -> AdminApi {
        self.auth = gate;
        self
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Node) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let b = self.node.clone();
        tokio::task::spawn_blocking(move || f(&b))
            .await
            .map_err(|e| Status::internal(format!("worker failed: {e}")))?
    }
}

/// An engine failure as the admin API's status (store refusals keep their precise codes).
fn engine_status(e: ferromq_engine::EngineError) -> Status {
    use ferromq_engine::EngineError as E;
    match e {
        E::Store(s) => store_status(&s),
        E::TopicNotFound(_) | E::GroupNotFound(_) | E::MessageNotFound(_) => {
            Status::not_found(e.to_string())
        }
        E::Draining { .. } | E::TopicPermission { .. } => {
            Status::failed_precondition(e.to_string())
        }
        E::BadRequest(_) | E::SystemTopic(_) => Status::invalid_argument(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

fn store_status(e: &StoreError) -> Status {
    match e {
        StoreError::UnknownTopic(_) => Status::not_found(e.to_string()),
        StoreError::TopicExists(_) => Status::already_exists(e.to_string()),
        StoreError::InvalidField { .. }
        | StoreError::UnknownQueue { .. }
        | StoreError::Config { .. } => Status::invalid_argument(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

pub fn type_to_store(t: TopicType) -> Option<MessageType> {
    match t {
        TopicType::Unspecified => None,
        TopicType::Normal => Some(MessageType::Normal),
        TopicType::Fifo => Some(MessageType::Fifo),
        TopicType::Delay => Some(MessageType::Delay),
        TopicType::Transaction => Some(MessageType::Transaction),
        TopicType::Priority => Some(MessageType::Priority),
    }
}

fn type_from_store(t: MessageType) -> TopicType {
    match t {
        MessageType::Normal => TopicType::Normal,
        MessageType::Priority => TopicType::Priority,
        MessageType::Fifo => TopicType::Fifo,
        MessageType::Delay => TopicType::Delay,
        MessageType::Transaction => TopicType::Transaction,
    }
}

fn perm_to_store(p: TopicPermission) -> Option<Permission> {
    match p {
        TopicPermission::Unspecified => None,
        TopicPermission::Read => Some(Permission::Read),
        TopicPermission::Write => Some(Permission::Write),
        TopicPermission::ReadWrite => Some(Permission::ReadWrite),
    }
}

fn perm_from_store(p: Permission) -> TopicPermission {
    match p {
        Permission::Read => TopicPermission::Read,
        Permission::Write => TopicPermission::Write,
        Permission::ReadWrite => TopicPermission::ReadWrite,
        Permission::None => TopicPermission::Unspecified,
    }
}

/// A topic as the admin API shows it; `node_retention` is this broker's (`--retention`).
fn topic_out(t: &TopicConfig, node_retention: Duration) -> admin::Topic {
    admin::Topic {
        name: t.name.clone(),
        queues: t.queues,
        message_type: type_from_store(t.message_type) as i32,
        permission: perm_from_store(t.permission) as i32,
        pending_timers: 0,
        half_messages: 0,
        retention_ms: t
            .retention_ms
            .map_or(0, |ms| i64::try_from(ms).unwrap_or(i64::MAX)),
        node_retention_ms: i64::try_from(node_retention.as_millis()).unwrap_or(i64::MAX),
    }
}

/// [`topic_out`] with the topic's pending timers and half messages.
fn topic_with_parked(
    t: &TopicConfig,
    node_retention: Duration,
    timers: &std::collections::BTreeMap<String, u64>,
    halves: &std::collections::BTreeMap<String, u64>,
) -> admin::Topic {
    admin::Topic {
        pending_timers: timers.get(&t.name).copied().unwrap_or(0) as i64,
        half_messages: halves.get(&t.name).copied().unwrap_or(0) as i64,
        ..topic_out(t, node_retention)
    }
}

/// A requested topic retention (`retention_ms` of the admin API): `None` for 0 (none given).
/// The commit log is shared by every topic and its segments go after the broker's retention,
/// so a topic cannot keep messages longer than that: such a value is refused rather than
/// promised and silently cut short.
fn requested_retention(ms: i64, node: Duration) -> Result<Option<u64>, Status> {
    use ferromq_config::format_duration as fmt;
    match u64::try_from(ms) {
        Err(_) => Err(Status::invalid_argument(format!(
            "retention_ms: {ms} is negative; give a positive number of milliseconds (0: the broker's retention)"
        ))),
        Ok(0) => Ok(None),
        Ok(ms) if u128::from(ms) > node.as_millis() => Err(Status::invalid_argument(format!(
            "retention_ms: {} is longer than this broker's retention ({}): every topic shares the broker's commit log, whose segments are deleted after its retention; raise the broker's --retention (Broker spec.storage.retention) first",
            fmt(Duration::from_millis(ms)),
            fmt(node)
        ))),
        Ok(ms) => Ok(Some(ms)),
    }
}

fn message_out(m: &StoredMessage) -> admin::StoredMessage {
    admin::StoredMessage {
        topic: m.topic.clone(),
        queue_id: m.queue_id,
        queue_offset: m.queue_offset as i64,
        phys_offset: m.phys_offset as i64,
        message_id: m.msg_id().unwrap_or_default().to_string(),
        tag: m.tag().unwrap_or_default().to_string(),
        keys: m.keys().map(str::to_string).collect(),
        properties: m
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        body: m.body.clone(),
        born_timestamp_ms: m.born_timestamp_ms,
        store_timestamp_ms: m.store_timestamp_ms,
        born_host: m
            .properties
            .get(ferromq_engine::props::BORN_HOST)
            .cloned()
            .or_else(|| m.born_host.map(|a| a.to_string()))
            .unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    #[instrument(skip_all)]
    async fn create_topic(
        &self,
        req: Request<admin::CreateTopicRequest>,
    ) -> Result<Response<admin::Topic>, Status> {
        access(
            &req,
            Targets {
                topic: req.get_ref().topic.as_ref().map(|t| t.name.as_str()),
                ..Default::default()
            },
        )?;
        let t = req
            .into_inner()
            .topic
            .ok_or_else(|| Status::invalid_argument("topic is required"))?;
        let message_type =
            type_to_store(TopicType::try_from(t.message_type).unwrap_or(TopicType::Unspecified))
                .unwrap_or(MessageType::Normal);
        let permission = perm_to_store(
            TopicPermission::try_from(t.permission).unwrap_or(TopicPermission::Unspecified),
        )
        .unwrap_or(Permission::ReadWrite);
        if crate::validate::is_system_topic(&t.name) {
            return Err(Status::invalid_argument(format!(
                "topic {} uses a reserved system prefix",
                t.name
            )));
        }
        let node_retention = self.node.engine.store.config().retention;
        let retention_ms = requested_retention(t.retention_ms, node_retention)?;
        let cfg = TopicConfig {
            name: t.name,
            queues: if t.queues == 0 {
                self.node.engine.config.default_queues
            } else {
                t.queues
            },
            message_type,
            permission,
            retention_ms,
        };
        let created = self
            .blocking(move |b| b.engine.create_topic(cfg).map_err(engine_status))
            .await?;
        info!(topic = %created.name, queues = created.queues, r#type = %created.message_type, retention_ms = ?created.retention_ms, "topic created");
        Ok(Response::new(topic_out(&created, node_retention)))
    }

    #[instrument(skip_all)]
    async fn update_topic(
        &self,
        req: Request<admin::UpdateTopicRequest>,
    ) -> Result<Response<admin::Topic>, Status> {
        access(
            &req,
            Targets {
                topic: req.get_ref().topic.as_ref().map(|t| t.name.as_str()),
                ..Default::default()
            },
        )?;
        let req = req.into_inner();
        let clear_retention = req.clear_retention;
        let t = req
            .topic
            .ok_or_else(|| Status::invalid_argument("topic is required"))?;
        let node_retention = self.node.engine.store.config().retention;
        let retention_ms = requested_retention(t.retention_ms, node_retention)?;
        if clear_retention && retention_ms.is_some() {
            return Err(Status::invalid_argument(
                "clear_retention: set together with retention_ms; give one or the other",
            ));
        }
        let updated = self
            .blocking(move |b| {
                let mut cur = b.engine.store.topics().get(&t.name).ok_or_else(|| Status::not_found(format!("topic {} does not exist", t.name)))?;
                if t.queues != 0 {
                    if t.queues < cur.queues {
                        return Err(Status::invalid_argument(format!(
                            "queues can only grow ({} -> {}): messages in removed queues would be stranded",
                            cur.queues, t.queues
                        )));
                    }
                    cur.queues = t.queues;
                }
                if let Some(mt) = type_to_store(TopicType::try_from(t.message_type).unwrap_or(TopicType::Unspecified)) {
                    cur.message_type = mt;
                }
                if let Some(p) = perm_to_store(TopicPermission::try_from(t.permission).unwrap_or(TopicPermission::Unspecified)) {
                    cur.permission = p;
                }
                if clear_retention {
                    cur.retention_ms = None;
                } else if retention_ms.is_some() {
                    cur.retention_ms = retention_ms;
                }
                b.engine.update_topic(cur).map_err(engine_status)
            })
            .await?;
        info!(topic = %updated.name, retention_ms = ?updated.retention_ms, "topic updated");
        Ok(Response::new(topic_out(&updated, node_retention)))
    }

    #[instrument(skip_all)]
    async fn delete_topic(
        &self,
        req: Request<admin::DeleteTopicRequest>,
    ) -> Result<Response<admin::DeleteTopicResponse>, Status> {
        access(
            &req,
            Targets {
                topic: Some(&req.get_ref().name),
                ..Default::default()
            },
        )?;
        let name = req.into_inner().name;
        self.blocking(move |b| {
            b.engine.delete_topic(&name).map_err(engine_status)?;
            info!(topic = %name, "topic deleted");
            Ok(())
        })
        .await?;
        Ok(Response::new(admin::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        req: Request<admin::ListTopicsRequest>,
    ) -> Result<Response<admin::ListTopicsResponse>, Status> {
        access(&req, Targets::default())?;
        let topics = self
            .blocking(|b| {
                let (timers, halves) = (
                    b.engine.timers.pending_by_topic(),
                    b.engine.transactions.pending_by_topic(),
                );
                Ok(b.engine
                    .store
                    .topics()
                    .list()
                    .iter()
                    .map(|t| {
                        topic_with_parked(t, b.engine.store.config().retention, &timers, &halves)
                    })
                    .collect())
            })
            .await?;
        Ok(Response::new(admin::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        req: Request<admin::DescribeTopicRequest>,
    ) -> Result<Response<admin::TopicDetail>, Status> {
        access(
            &req,
            Targets {
                topic: Some(&req.get_ref().name),
                ..Default::default()
            },
        )?;
        let name = req.into_inner().name;
        self.blocking(move |b| {
            let t = b
                .engine
                .store
                .topics()
                .get(&name)
                .ok_or_else(|| Status::not_found(format!("topic {name} does not exist")))?;
            let queues: Vec<admin::QueueRange> = (0..t.queues)
                .map(|q| {
                    let (min, max) = b.engine.store.queue_range(&name, q);
                    admin::QueueRange {
                        queue_id: q,
                        min_offset: min as i64,
                        max_offset: max as i64,
                        broker_group: b.engine.membership.group(),
                    }
                })
                .collect();
            let total = queues.iter().map(|q| q.max_offset - q.min_offset).sum();
            Ok(Response::new(admin::TopicDetail {
                topic: Some(topic_with_parked(
                    &t,
                    b.engine.store.config().retention,
                    &b.engine.timers.pending_by_topic(),
                    &b.engine.transactions.pending_by_topic(),
                )),
                queues,
                total_messages: total,
            }))
        })
        .await
    }

    async fn list_groups(
        &self,
        req: Request<admin::ListGroupsRequest>,
    ) -> Result<Response<admin::ListGroupsResponse>, Status> {
        access(&req, Targets::default())?;
        let groups = self.blocking(|b| Ok(group_views(b, None))).await?;
        Ok(Response::new(admin::ListGroupsResponse {
            groups: groups.into_iter().map(|(g, _)| g).collect(),
        }))
    }

    async fn describe_group(
        &self,
        req: Request<admin::DescribeGroupRequest>,
    ) -> Result<Response<admin::DescribeGroupResponse>, Status> {
        access(
            &req,
            Targets {
                group: Some(&req.get_ref().name),
                ..Default::default()
            },
        )?;
        let name = req.into_inner().name;
        let mut views = self
            .blocking(move |b| Ok(group_views(b, Some(&name))))
            .await?;
        let (group, queues) = views
            .pop()
            .ok_or_else(|| Status::not_found("group has never consumed and is not configured"))?;
        Ok(Response::new(admin::DescribeGroupResponse {
            group: Some(group),
            queues,
        }))
    }

    #[instrument(skip_all)]
    async fn update_group(
        &self,
        req: Request<admin::UpdateGroupRequest>,
    ) -> Result<Response<admin::Group>, Status> {
        access(
            &req,
            Targets {
                group: Some(&req.get_ref().name),
                ..Default::default()
            },
        )?;
        let r = req.into_inner();
        let name = r.name.clone();
        checked_group_name(&name)?;
        if r.max_delivery_attempts < 0 || r.max_delivery_attempts > 1000 {
            return Err(Status::invalid_argument(format!(
                "max_delivery_attempts {} is not within 1..=1000",
                r.max_delivery_attempts
            )));
        }
        let mut views = self
            .blocking(move |b| {
                let mut cfg = b.engine.groups.get(&r.name);
                if r.max_delivery_attempts > 0 {
                    cfg.max_delivery_attempts = Some(r.max_delivery_attempts as u32);
                }
                if let Some(f) = r.fifo {
                    cfg.fifo = Some(f);
                }
                b.engine
                    .set_group(&r.name, cfg)
                    .map_err(|e| Status::internal(e.to_string()))?;
                // A group given a retry policy gets its dead-letter topic now, so a reader can
                // subscribe to it before the first message is dead-lettered.
                ferromq_engine::topics::ensure_dlq_topic(
                    &b.engine.store,
                    b.engine.journal.as_ref(),
                    &ferromq_engine::topics::dlq_topic(&r.name),
                )
                .map_err(|e| Status::internal(e.to_string()))?;
                Ok(group_views(b, Some(&r.name)))
            })
            .await?;
        info!(group = %name, "group updated");
        let (group, _) = views
            .pop()
            .ok_or_else(|| Status::internal("group vanished"))?;
        Ok(Response::new(group))
    }

    #[instrument(skip_all, name = "admin.reset_group_offset")]
    async fn reset_group_offset(
        &self,
        req: Request<admin::ResetGroupOffsetRequest>,
    ) -> Result<Response<admin::ResetGroupOffsetResponse>, Status> {
        group_call(&req, &req.get_ref().group)?;
        let r = req.into_inner();
        let to = reset_target(r.to)?;
        let topic = (!r.topic.is_empty()).then_some(r.topic);
        let execute = r.execute;
        let (plan, broker_group) = self
            .blocking(move |b| {
                let plan = b
                    .engine
                    .plan_offset_reset(&r.group, topic.as_deref(), to)
                    .map_err(engine_status)?;
                if execute {
                    b.engine
                        .reset_offsets(&r.group, &plan)
                        .map_err(engine_status)?;
                }
                Ok((plan, b.engine.membership.group()))
            })
            .await?;
        Ok(Response::new(admin::ResetGroupOffsetResponse {
            queues: plan
                .into_iter()
                .map(|m| admin::QueueOffsetMove {
                    topic: m.topic,
                    queue_id: m.queue_id,
                    current_offset: m.current as i64,
                    new_offset: m.target as i64,
                    min_offset: m.min as i64,
                    max_offset: m.max as i64,
                    inflight: m.inflight as i64,
                    broker_group: broker_group.clone(),
                })
                .collect(),
            executed: execute,
        }))
    }

    #[instrument(skip_all, name = "admin.delete_group")]
    async fn delete_group(
        &self,
        req: Request<admin::DeleteGroupRequest>,
    ) -> Result<Response<admin::DeleteGroupResponse>, Status> {
        group_call(&req, &req.get_ref().name)?;
        let name = req.into_inner().name;
        self.blocking(move |b| {
            if let Some(n) = b.clients.online_by_group().get(&name) {
                return Err(Status::failed_precondition(format!(
                    "consumer group {name} has {n} online client(s); stop them before deleting it"
                )));
            }
            b.engine.delete_group(&name).map_err(engine_status)
        })
        .await?;
        Ok(Response::new(admin::DeleteGroupResponse {}))
    }

    async fn list_dead_letters(
        &self,
        req: Request<admin::ListDeadLettersRequest>,
    ) -> Result<Response<admin::ListDeadLettersResponse>, Status> {
        group_call(&req, &req.get_ref().group)?;
        let r = req.into_inner();
        if r.from_offset.is_some_and(|o| o < 0) {
            return Err(Status::invalid_argument("from_offset is negative"));
        }
        let max = match r.max {
            0 => 32,
            m => m.min(1000),
        } as usize;
        self.blocking(move |b| {
            let page = b
                .engine
                .dead_letters(&r.group, r.from_offset.map(|o| o as u64), max)
                .map_err(engine_status)?;
            let broker_group = b.engine.membership.group();
            Ok(Response::new(admin::ListDeadLettersResponse {
                letters: page
                    .letters
                    .iter()
                    .map(|l| admin::DeadLetter {
                        message: Some(message_out(&l.message)),
                        origin_topic: l.origin_topic.clone(),
                        attempts: l.attempts as i32,
                        resent: l.resent,
                        broker_group: broker_group.clone(),
                    })
                    .collect(),
                total: page.total as i64,
                pending: page.pending as i64,
            }))
        })
        .await
    }

    #[instrument(skip_all, name = "admin.resend_dead_letters")]
    async fn resend_dead_letters(
        &self,
        req: Request<admin::ResendDeadLettersRequest>,
    ) -> Result<Response<admin::ResendDeadLettersResponse>, Status> {
        group_call(&req, &req.get_ref().group)?;
        let r = req.into_inner();
        self.blocking(move |b| {
            let resent = b
                .engine
                .resend_dead_letters(&r.group, &r.message_ids)
                .map_err(engine_status)?;
            let broker_group = b.engine.membership.group();
            Ok(Response::new(admin::ResendDeadLettersResponse {
                resent: resent
                    .into_iter()
                    .map(|x| admin::ResentLetter {
                        message_id: x.message_id,
                        topic: x.topic,
                        queue_id: x.queue_id,
                        queue_offset: x.queue_offset as i64,
                        broker_group: broker_group.clone(),
                    })
                    .collect(),
            }))
        })
        .await
    }

    async fn get_message(
        &self,
        req: Request<admin::GetMessageRequest>,
    ) -> Result<Response<admin::GetMessageResponse>, Status> {
        access(
            &req,
            Targets {
                topic: Some(&req.get_ref().topic),
                ..Default::default()
            },
        )?;
        let r = req.into_inner();
        let id = r.message_id.clone();
        let m = self
            .blocking(move |b| Ok(b.engine.store.find_id(&r.topic, &r.message_id)))
            .await?;
        // A damaged record is named as such (DATA_LOSS), not reported missing: the operator
        // learns the message was stored and where it is damaged.
        let m = match m {
            Ok(Some(m)) => m,
            Ok(None) => return Err(Status::not_found("no message with this id in this topic")),
            Err(e @ StoreError::Corrupt { .. }) => {
                return Err(Status::data_loss(format!(
                    "message {id} is corrupt and is not served: {e}"
                )))
            }
            Err(e) => return Err(store_status(&e)),
        };
        Ok(Response::new(admin::GetMessageResponse {
            message: Some(message_out(&m)),
        }))
    }

    async fn query_messages(
        &self,
        req: Request<admin::QueryMessagesRequest>,
    ) -> Result<Response<admin::QueryMessagesResponse>, Status> {
        access(
            &req,
            Targets {
                topic: Some(&req.get_ref().topic),
                ..Default::default()
            },
        )?;
        let r = req.into_inner();
        let max = if r.max_results == 0 {
            32
        } else {
            r.max_results.min(1000)
        } as usize;
        let ms = self
            .blocking(move |b| {
                Ok(b.engine
                    .store
                    .lookup_key(&r.topic, &r.key, 0, i64::MAX, max))
            })
            .await?;
        Ok(Response::new(admin::QueryMessagesResponse {
            messages: ms.iter().map(message_out).collect(),
        }))
    }

    #[instrument(skip_all, name = "admin.list_cluster")]
    async fn list_cluster(
        &self,
        req: Request<admin::ListClusterRequest>,
    ) -> Result<Response<admin::ListClusterResponse>, Status> {
        access(&req, Targets::default())?;
        let me = self.blocking(|b| Ok(self_view(b))).await?;
        Ok(Response::new(admin::ListClusterResponse {
            groups: vec![me],
        }))
    }

    #[instrument(skip_all, name = "admin.set_group_state")]
    async fn set_group_state(
        &self,
        req: Request<admin::SetGroupStateRequest>,
    ) -> Result<Response<admin::ClusterGroup>, Status> {
        access(&req, Targets::default())?;
        let r = req.into_inner();
        let ro = parse_group_state(&r.state)?;
        self.blocking(move |b| {
            let me = b.engine.membership.group();
            if r.group != me {
                return Err(Status::not_found(format!(
                    "broker group {} is not this server (this is {me})",
                    r.group
                )));
            }
            b.engine
                .set_read_only(ro)
                .map_err(|e| Status::internal(format!("cannot record the group state: {e}")))?;
            info!(group = %me, state = b.engine.membership.state_name(), "broker group state changed");
            Ok(Response::new(self_view(b)))
        })
        .await
    }

    async fn switchover(
        &self,
        _req: Request<admin::SwitchoverRequest>,
    ) -> Result<Response<admin::SwitchoverResponse>, Status> {
        Err(Status::failed_precondition(
            "a switchover moves the leadership of a replicated broker group: ask a proxy of the cluster (--server PROXY)",
        ))
    }

    async fn create_user(
        &self,
        req: Request<admin::CreateUserRequest>,
    ) -> Result<Response<admin::User>, Status> {
        access(&req, Targets::default())?;
        Ok(Response::new(
            self.users().create_user(req.into_inner()).await?,
        ))
    }

    async fn update_user(
        &self,
        req: Request<admin::UpdateUserRequest>,
    ) -> Result<Response<admin::User>, Status> {
        access(&req, Targets::default())?;
        Ok(Response::new(
            self.users().update_user(req.into_inner()).await?,
        ))
    }

    async fn delete_user(
        &self,
        req: Request<admin::DeleteUserRequest>,
    ) -> Result<Response<admin::DeleteUserResponse>, Status> {
        access(&req, Targets::default())?;
        self.users().delete_user(req.into_inner().name).await?;
        Ok(Response::new(admin::DeleteUserResponse {}))
    }

    async fn list_users(
        &self,
        req: Request<admin::ListUsersRequest>,
    ) -> Result<Response<admin::ListUsersResponse>, Status> {
        access(&req, Targets::default())?;
        let users = self.users().list_users().await?;
        Ok(Response::new(admin::ListUsersResponse { users }))
    }

    async fn describe_user(
        &self,
        req: Request<admin::DescribeUserRequest>,
    ) -> Result<Response<admin::User>, Status> {
        access(&req, Targets::default())?;
        Ok(Response::new(
            self.users().describe_user(req.into_inner().name).await?,
        ))
    }

    async fn create_acl(
        &self,
        req: Request<admin::PutAclRequest>,
    ) -> Result<Response<admin::Acl>, Status> {
        access(&req, Targets::default())?;
        Ok(Response::new(self.users().put_acl(req.into_inner()).await?))
    }

    async fn update_acl(
        &self,
        req: Request<admin::PutAclRequest>,
    ) -> Result<Response<admin::Acl>, Status> {
        access(&req, Targets::default())?;
        Ok(Response::new(self.users().put_acl(req.into_inner()).await?))
    }

    async fn delete_acl(
        &self,
        req: Request<admin::DeleteAclRequest>,
    ) -> Result<Response<admin::DeleteAclResponse>, Status> {
        access(&req, Targets::default())?;
        self.users().delete_acl(req.into_inner()).await?;
        Ok(Response::new(admin::DeleteAclResponse {}))
    }

    async fn list_acls(
        &self,
        req: Request<admin::ListAclsRequest>,
    ) -> Result<Response<admin::ListAclsResponse>, Status> {
        access(&req, Targets::default())?;
        let acls = self.users().list_acls().await?;
        Ok(Response::new(admin::ListAclsResponse { acls }))
    }

    async fn describe_acl(
        &self,
        req: Request<admin::DescribeAclRequest>,
    ) -> Result<Response<admin::Acl>, Status> {
        access(&req, Targets::default())?;
        Ok(Response::new(
            self.users().describe_acl(req.into_inner().user).await?,
        ))
    }
}

/// The checks of a call about one consumer group: authorized for it, and a name the RocketMQ
/// API would accept.
fn group_call<T>(req: &Request<T>, group: &str) -> Result<(), Status> {
    access(
        req,
        Targets {
            group: Some(group),
            ..Default::default()
        },
    )?;
    checked_group_name(group)
}

/// A consumer group name the RocketMQ API would accept, else INVALID_ARGUMENT.
fn checked_group_name(name: &str) -> Result<(), Status> {
    crate::validate::group_name(Some(&ferromq_proto::v2::Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    }))
    .map(|_| ())
    .map_err(|e| Status::invalid_argument(e.message))
}

/// The engine's reset target of a request's `to`.
fn reset_target(
    to: Option<admin::reset_group_offset_request::To>,
) -> Result<ferromq_engine::resets::ResetTo, Status> {
    use admin::reset_group_offset_request::To;
    use ferromq_engine::resets::ResetTo;
    match to {
        Some(To::Earliest(_)) => Ok(ResetTo::Earliest),
        Some(To::Latest(_)) => Ok(ResetTo::Latest),
        Some(To::TimestampMs(ms)) => Ok(ResetTo::Time(ms)),
        Some(To::Offset(o)) if o >= 0 => Ok(ResetTo::Offset(o as u64)),
        Some(To::Offset(o)) => Err(Status::invalid_argument(format!("offset {o} is negative"))),
        None => Err(Status::invalid_argument(
            "say where to reset to: earliest, latest, a time or an offset",
        )),
    }
}

/// Groups known from consumption, offsets, configuration or live clients.
fn group_views(
    b: &Node,
    only: Option<&str>,
) -> Vec<(admin::Group, Vec<admin::GroupQueueProgress>)> {
    let lag = b.lag();
    let configured = b.engine.groups.list();
    let online = b.clients.online_by_group();
    let subs = b.clients.subscriptions();
    let mut names: BTreeSet<String> = lag.iter().map(|l| l.group.clone()).collect();
    names.extend(configured.keys().cloned());
    names.extend(online.keys().cloned());
    let mut per_group: BTreeMap<String, Vec<admin::GroupQueueProgress>> = BTreeMap::new();
    for l in lag {
        let lag = l.lag() as i64;
        per_group
            .entry(l.group)
            .or_default()
            .push(admin::GroupQueueProgress {
                topic: l.topic,
                queue_id: l.queue_id,
                committed_offset: l.committed as i64,
                max_offset: l.max_offset as i64,
                lag,
                inflight: l.inflight as i64,
                broker_group: b.engine.membership.group(),
            });
    }
    names
        .into_iter()
        .filter(|n| {
            only.is_none_or(|o| o == n)
                && !n.is_empty()
                && !ferromq_engine::resets::is_internal_group(n)
        })
        .map(|n| {
            let queues = per_group.remove(&n).unwrap_or_default();
            let mut topics: Vec<String> = queues.iter().map(|q| q.topic.clone()).collect();
            topics.extend(subs.get(&n).cloned().unwrap_or_default());
            topics.sort();
            topics.dedup();
            let cfg: GroupConfig = configured.get(&n).cloned().unwrap_or_default();
            let group = admin::Group {
                fifo: cfg.fifo.unwrap_or(false),
                max_delivery_attempts: b.engine.groups.max_attempts(&n) as i32,
                topics,
                total_lag: queues.iter().map(|q| q.lag).sum(),
                online_clients: online.get(&n).copied().unwrap_or(0) as i32,
                name: n,
            };
            (group, queues)
        })
        .collect()
}

/// `read-write` or `read-only` (also `rw` / `ro`); anything else is INVALID_ARGUMENT.
pub fn parse_group_state(s: &str) -> Result<bool, Status> {
    match s {
        "read-only" | "ro" | "readonly" => Ok(true),
        "read-write" | "rw" | "readwrite" => Ok(false),
        other => Err(Status::invalid_argument(format!(
            "state {other:?} is not read-write or read-only"
        ))),
    }
}

/// This server as one broker group of a cluster: its topics, queues and unsettled messages.
pub fn self_view(b: &Node) -> admin::ClusterGroup {
    self_view_of(b, &b.engine.store.topics().list())
}

/// [`self_view`] for an already read topic list (a broker's report needs the list itself too).
pub fn self_view_of(b: &Node, topics: &[TopicConfig]) -> admin::ClusterGroup {
    let lag = b.lag();
    let mut lagging: BTreeSet<(String, u32)> = BTreeSet::new();
    let mut total = 0i64;
    for l in &lag {
        if l.lag() > 0 {
            lagging.insert((l.topic.clone(), l.queue_id));
            total += l.lag() as i64;
        }
    }
    // Parked messages keep a group from being drained too: pending timers are released into its
    // topics when due, half messages when committed. Each parked queue counts as one queue.
    for (queue, pending) in [
        (
            ferromq_engine::parked::timer::TIMER_TOPIC,
            b.engine.timers.pending_by_topic(),
        ),
        (
            ferromq_engine::parked::transaction::HALF_TOPIC,
            b.engine.transactions.pending_by_topic(),
        ),
    ] {
        let n: u64 = pending.values().sum();
        if n > 0 {
            lagging.insert((queue.to_string(), 0));
            total += n as i64;
        }
    }
    admin::ClusterGroup {
        name: b.engine.membership.group(),
        endpoint: b.settings.advertise_addr.clone(),
        state: b.engine.membership.state_name().to_string(),
        topics: topics.len() as u32,
        queues: topics.iter().map(|t| t.queues).sum(),
        total_lag: total,
        heartbeat_age_ms: 0,
        queues_with_lag: lagging.len() as u32,
        replication: None,
    }
}

/// `TopicType` number of a store message type (carried in name server reports).
pub fn type_number(t: MessageType) -> i32 {
    type_from_store(t) as i32
}

/// `TopicPermission` number of a store permission (carried in name server reports).
pub fn permission_number(p: Permission) -> i32 {
    perm_from_store(p) as i32
}

/// The store message type of a `TopicType` number; unknown numbers read as NORMAL.
pub fn type_from_number(n: i32) -> MessageType {
    TopicType::try_from(n)
        .ok()
        .and_then(type_to_store)
        .unwrap_or(MessageType::Normal)
}

/// The store permission of a `TopicPermission` number; unknown numbers read as read-write.
pub fn permission_from_number(n: i32) -> Permission {
    TopicPermission::try_from(n)
        .ok()
        .and_then(perm_to_store)
        .unwrap_or(Permission::ReadWrite)
}
