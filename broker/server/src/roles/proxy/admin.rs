//! The admin API as a proxy serves it: the same RPCs as a standalone server, fanned out to the
//! broker groups and merged, so `ferromq admin --server PROXY` works exactly as against a
//! standalone server.
//!
//! - Topic create: on every writable group (a topic's queue count is per group). Update: on every
//!   group holding it, and created on writable groups that do not hold it yet, which is how a new
//!   group gains queues of existing topics. Delete: everywhere.
//! - Lists and descriptions: the union, each queue tagged with its broker group.
//! - `ListCluster` / `SetGroupState`: the name servers' view of the groups, and draining.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferromq_proto::admin::{self, admin_server::Admin};
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use super::routes::{GroupAdmin, GroupRoute, Routes};

#[derive(Clone)]
pub struct AdminProxy {
    routes: Arc<Routes>,
    /// The replication controller in the name servers (replicated groups' leaders and
    /// in-sync sets, switchovers).
    controller: Option<Arc<ferromq_controller::ControllerClient>>,
}

type Answers<T> = Vec<(GroupRoute, Result<T, Status>)>;

impl AdminProxy {
    pub fn new(routes: Arc<Routes>) -> AdminProxy {
        let controller = ferromq_controller::ControllerClient::new(routes.nameserver_addrs())
            .ok()
            .map(|c| {
                Arc::new(
                    c.with_timeouts(Duration::from_millis(500), Duration::from_secs(1))
                        .with_link(routes.link().clone()),
                )
            });
        AdminProxy { routes, controller }
    }

    /// Every replicated group's state from the controller (none when the name servers run no
    /// controller).
    async fn replication(&self) -> BTreeMap<String, admin::GroupReplication> {
        let Some(c) = &self.controller else {
            return BTreeMap::new();
        };
        match c.get_groups().await {
            Ok(r) => r
                .groups
                .into_iter()
                .map(|g| (g.group.clone(), replication_view(&g)))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "no replication controller answered");
                BTreeMap::new()
            }
        }
    }

    fn live(&self) -> Result<Vec<GroupRoute>, Status> {
        let v = self.routes.view();
        if v.groups.is_empty() {
            return Err(Status::unavailable(
                "no broker group is alive (the name servers know none)",
            ));
        }
        Ok(v.groups.clone())
    }

    /// Calls `f` on each group concurrently.
    async fn each<T, F, Fut>(&self, groups: Vec<GroupRoute>, f: F) -> Answers<T>
    where
        F: Fn(GroupAdmin) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        let calls = groups.into_iter().map(|g| {
            let c = self.routes.admin(&g);
            let fut = c.map(&f);
            async move {
                match fut {
                    Ok(fut) => {
                        let r = fut.await.map(Response::into_inner);
                        (g, r)
                    }
                    Err(e) => (g, Err(Status::internal(e))),
                }
            }
        });
        futures_util::future::join_all(calls).await
    }
}

/// A user or ACL change, sent to every live group ([`AdminProxy::everywhere`]).
macro_rules! to_every_group {
    ($proxy:ident, $req:ident, $method:ident) => {{
        let r = $req.into_inner();
        $proxy
            .everywhere(|mut c| {
                let r = r.clone();
                async move { c.$method(r).await }
            })
            .await
    }};
}

/// A user or ACL read, from the first live group ([`AdminProxy::first_live`]).
macro_rules! to_first_group {
    ($proxy:ident, $req:ident, $method:ident) => {{
        let r = $req.into_inner();
        $proxy
            .first_live(|mut c| async move { c.$method(r).await })
            .await
    }};
}

impl AdminProxy {
    /// A change of users or policies: every broker group holds its own copy of the auth store
    /// until cluster metadata has one home, so the change goes to each live group and succeeds
    /// only if every one applied it (the failure names the group; the operations are idempotent
    /// enough to retry: a repeated create answers ALREADY_EXISTS on the groups that have it).
    async fn everywhere<T, F, Fut>(&self, f: F) -> Result<Response<T>, Status>
    where
        F: Fn(GroupAdmin) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        let answers = self.each(self.live()?, f).await;
        if let Some(e) = first_error(&answers) {
            return Err(e);
        }
        answers
            .into_iter()
            .find_map(|(_, a)| a.ok())
            .map(Response::new)
            .ok_or_else(|| Status::internal("no answer"))
    }

    /// A read of users or policies, from the first live group.
    async fn first_live<T, F, Fut>(&self, f: F) -> Result<Response<T>, Status>
    where
        F: FnOnce(GroupAdmin) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        let groups = self.live()?;
        let g = &groups[0];
        let c = self.routes.admin(g).map_err(Status::internal)?;
        f(c).await
    }
}

/// The answers of the groups that know the thing asked about: NOT_FOUND answers are left out
/// (a group need not hold every topic or consumer group), any other failure is the error, named
/// after its group, and NOT_FOUND everywhere is NOT_FOUND.
fn found<T>(answers: Answers<T>) -> Result<Vec<T>, Status> {
    let mut out = Vec::new();
    let mut not_found = None;
    for (g, a) in answers {
        match a {
            Ok(v) => out.push(v),
            Err(e) if e.code() == tonic::Code::NotFound => not_found = not_found.or(Some(e)),
            Err(e) => {
                return Err(Status::new(
                    e.code(),
                    format!("broker group {}: {}", g.name, e.message()),
                ))
            }
        }
    }
    match (out.is_empty(), not_found) {
        (true, Some(e)) => Err(e),
        _ => Ok(out),
    }
}

/// The shorter of two brokers' retentions (`node_retention_ms`; 0: not reported): the one
/// that bounds a topic held by both.
fn shortest_known(a: i64, b: i64) -> i64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

/// The first failure, named after its group, unless every answer is fine.
fn first_error<T>(answers: &Answers<T>) -> Option<Status> {
    answers.iter().find_map(|(g, r)| {
        r.as_ref().err().map(|e| {
            Status::new(
                e.code(),
                format!("broker group {}: {}", g.name, e.message()),
            )
        })
    })
}

#[tonic::async_trait]
impl Admin for AdminProxy {
    #[instrument(skip_all, name = "admin_proxy.create_topic")]
    async fn create_topic(
        &self,
        req: Request<admin::CreateTopicRequest>,
    ) -> Result<Response<admin::Topic>, Status> {
        let r = req.into_inner();
        let groups: Vec<GroupRoute> = self.live()?.into_iter().filter(|g| !g.read_only).collect();
        if groups.is_empty() {
            return Err(Status::failed_precondition(
                "every broker group is read-only (draining); nothing can hold a new topic",
            ));
        }
        let answers = self
            .each(groups, |mut c| {
                let r = r.clone();
                async move { c.create_topic(r).await }
            })
            .await;
        let created = answers.iter().filter(|(_, a)| a.is_ok()).count();
        let exists = answers
            .iter()
            .filter(|(_, a)| {
                a.as_ref()
                    .is_err_and(|e| e.code() == tonic::Code::AlreadyExists)
            })
            .count();
        if created == 0 {
            return Err(first_error(&answers).unwrap_or_else(|| Status::internal("no answer")));
        }
        if created + exists < answers.len() {
            return Err(first_error(&answers).unwrap_or_else(|| Status::internal("no answer")));
        }
        self.routes.refresh().await;
        let topic = answers
            .into_iter()
            .find_map(|(_, a)| a.ok())
            .ok_or_else(|| Status::internal("no answer"))?;
        info!(topic = %topic.name, groups = created, "topic created across the cluster");
        Ok(Response::new(topic))
    }

    #[instrument(skip_all, name = "admin_proxy.update_topic")]
    async fn update_topic(
        &self,
        req: Request<admin::UpdateTopicRequest>,
    ) -> Result<Response<admin::Topic>, Status> {
        let r = req.into_inner();
        let name = r.topic.as_ref().map(|t| t.name.clone()).unwrap_or_default();
        let groups = self.live()?;
        let (holding, missing): (Vec<_>, Vec<_>) = groups
            .into_iter()
            .partition(|g| g.topics.contains_key(&name));
        if holding.is_empty() {
            return Err(Status::not_found(format!("topic {name} does not exist")));
        }
        let answers = self
            .each(holding.clone(), |mut c| {
                let r = r.clone();
                async move { c.update_topic(r).await }
            })
            .await;
        if let Some(e) = first_error(&answers) {
            return Err(e);
        }
        let updated = answers
            .into_iter()
            .find_map(|(_, a)| a.ok())
            .ok_or_else(|| Status::internal("no answer"))?;
        // Writable groups that do not hold the topic yet get it with the same settings.
        let joiners: Vec<GroupRoute> = missing.into_iter().filter(|g| !g.read_only).collect();
        if !joiners.is_empty() {
            let create = admin::CreateTopicRequest {
                topic: Some(updated.clone()),
            };
            let answers = self
                .each(joiners, |mut c| {
                    let r = create.clone();
                    async move { c.create_topic(r).await }
                })
                .await;
            for (g, a) in &answers {
                if a.is_ok() {
                    info!(topic = %name, group = %g.name, "topic extended to a new broker group");
                }
            }
            if let Some(e) = answers.iter().find_map(|(g, a)| {
                a.as_ref()
                    .err()
                    .filter(|e| e.code() != tonic::Code::AlreadyExists)
                    .map(|e| {
                        Status::new(
                            e.code(),
                            format!("broker group {}: {}", g.name, e.message()),
                        )
                    })
            }) {
                return Err(e);
            }
        }
        self.routes.refresh().await;
        Ok(Response::new(updated))
    }

    #[instrument(skip_all, name = "admin_proxy.delete_topic")]
    async fn delete_topic(
        &self,
        req: Request<admin::DeleteTopicRequest>,
    ) -> Result<Response<admin::DeleteTopicResponse>, Status> {
        let r = req.into_inner();
        let answers = self
            .each(self.live()?, |mut c| {
                let r = r.clone();
                async move { c.delete_topic(r).await }
            })
            .await;
        let deleted = answers.iter().filter(|(_, a)| a.is_ok()).count();
        if let Some(e) = answers.iter().find_map(|(g, a)| {
            a.as_ref()
                .err()
                .filter(|e| e.code() != tonic::Code::NotFound)
                .map(|e| {
                    Status::new(
                        e.code(),
                        format!("broker group {}: {}", g.name, e.message()),
                    )
                })
        }) {
            return Err(e);
        }
        if deleted == 0 {
            return Err(Status::not_found(format!(
                "topic {} does not exist",
                r.name
            )));
        }
        self.routes.refresh().await;
        Ok(Response::new(admin::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        req: Request<admin::ListTopicsRequest>,
    ) -> Result<Response<admin::ListTopicsResponse>, Status> {
        let r = req.into_inner();
        let answers = self
            .each(self.live()?, |mut c| async move { c.list_topics(r).await })
            .await;
        if let Some(e) = first_error(&answers) {
            return Err(e);
        }
        // A topic is listed once, with the largest per-group queue count and the sums of
        // pending timers and half messages.
        let mut topics: BTreeMap<String, admin::Topic> = BTreeMap::new();
        for (_, a) in answers {
            for t in a.map(|a| a.topics).unwrap_or_default() {
                match topics.get_mut(&t.name) {
                    Some(cur) => {
                        cur.pending_timers += t.pending_timers;
                        cur.half_messages += t.half_messages;
                        cur.queues = cur.queues.max(t.queues);
                        cur.node_retention_ms =
                            shortest_known(cur.node_retention_ms, t.node_retention_ms);
                    }
                    None => {
                        topics.insert(t.name.clone(), t);
                    }
                }
            }
        }
        Ok(Response::new(admin::ListTopicsResponse {
            topics: topics.into_values().collect(),
        }))
    }

    async fn describe_topic(
        &self,
        req: Request<admin::DescribeTopicRequest>,
    ) -> Result<Response<admin::TopicDetail>, Status> {
        let r = req.into_inner();
        let answers = self
            .each(self.live()?, |mut c| {
                let r = r.clone();
                async move { c.describe_topic(r).await }
            })
            .await;
        let mut out: Option<admin::TopicDetail> = None;
        for (g, a) in answers {
            match a {
                Ok(d) => match out.as_mut() {
                    None => out = Some(d),
                    Some(o) => {
                        o.queues.extend(d.queues);
                        o.total_messages += d.total_messages;
                        if let (Some(ot), Some(dt)) = (o.topic.as_mut(), d.topic.as_ref()) {
                            ot.pending_timers += dt.pending_timers;
                            ot.half_messages += dt.half_messages;
                            ot.node_retention_ms =
                                shortest_known(ot.node_retention_ms, dt.node_retention_ms);
                        }
                    }
                },
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => {
                    return Err(Status::new(
                        e.code(),
                        format!("broker group {}: {}", g.name, e.message()),
                    ))
                }
            }
        }
        out.map(Response::new)
            .ok_or_else(|| Status::not_found(format!("topic {} does not exist", r.name)))
    }

    async fn list_groups(
        &self,
        req: Request<admin::ListGroupsRequest>,
    ) -> Result<Response<admin::ListGroupsResponse>, Status> {
        let r = req.into_inner();
        let answers = self
            .each(self.live()?, |mut c| async move { c.list_groups(r).await })
            .await;
        if let Some(e) = first_error(&answers) {
            return Err(e);
        }
        let mut groups: BTreeMap<String, admin::Group> = BTreeMap::new();
        for (_, a) in answers {
            for g in a.map(|a| a.groups).unwrap_or_default() {
                merge_group(&mut groups, g);
            }
        }
        Ok(Response::new(admin::ListGroupsResponse {
            groups: groups.into_values().collect(),
        }))
    }

    async fn describe_group(
        &self,
        req: Request<admin::DescribeGroupRequest>,
    ) -> Result<Response<admin::DescribeGroupResponse>, Status> {
        let r = req.into_inner();
        let answers = self
            .each(self.live()?, |mut c| {
                let r = r.clone();
                async move { c.describe_group(r).await }
            })
            .await;
        let mut merged: BTreeMap<String, admin::Group> = BTreeMap::new();
        let mut queues = Vec::new();
        for (g, a) in answers {
            match a {
                Ok(d) => {
                    if let Some(grp) = d.group {
                        merge_group(&mut merged, grp);
                    }
                    queues.extend(d.queues);
                }
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => {
                    return Err(Status::new(
                        e.code(),
                        format!("broker group {}: {}", g.name, e.message()),
                    ))
                }
            }
        }
        let group = merged
            .into_values()
            .next()
            .ok_or_else(|| Status::not_found(format!("consumer group {} is not known", r.name)))?;
        Ok(Response::new(admin::DescribeGroupResponse {
            group: Some(group),
            queues,
        }))
    }

    async fn update_group(
        &self,
        req: Request<admin::UpdateGroupRequest>,
    ) -> Result<Response<admin::Group>, Status> {
        let r = req.into_inner();
        let answers = self
            .each(self.live()?, |mut c| {
                let r = r.clone();
                async move { c.update_group(r).await }
            })
            .await;
        if let Some(e) = first_error(&answers) {
            return Err(e);
        }
        let mut merged: BTreeMap<String, admin::Group> = BTreeMap::new();
        for (_, a) in answers {
            if let Ok(g) = a {
                merge_group(&mut merged, g);
            }
        }
        merged
            .into_values()
            .next()
            .map(Response::new)
            .ok_or_else(|| Status::internal("no answer"))
    }

    /// Every broker group plans (and applies) the reset of the queues it holds; the answer is
    /// the union. Executing is per group: one failing group leaves the others reset, and the
    /// error names it (running the same command again is harmless).
    #[instrument(skip_all, name = "admin_proxy.reset_group_offset")]
    async fn reset_group_offset(
        &self,
        req: Request<admin::ResetGroupOffsetRequest>,
    ) -> Result<Response<admin::ResetGroupOffsetResponse>, Status> {
        let r = req.into_inner();
        let execute = r.execute;
        let answers = self
            .each(self.live()?, |mut c| {
                let r = r.clone();
                async move { c.reset_group_offset(r).await }
            })
            .await;
        let queues = found(answers)?.into_iter().flat_map(|a| a.queues).collect();
        Ok(Response::new(admin::ResetGroupOffsetResponse {
            queues,
            executed: execute,
        }))
    }

    #[instrument(skip_all, name = "admin_proxy.delete_group")]
    async fn delete_group(
        &self,
        req: Request<admin::DeleteGroupRequest>,
    ) -> Result<Response<admin::DeleteGroupResponse>, Status> {
        let r = req.into_inner();
        let answers = self
            .each(self.live()?, |mut c| {
                let r = r.clone();
                async move { c.delete_group(r).await }
            })
            .await;
        found(answers)?;
        Ok(Response::new(admin::DeleteGroupResponse {}))
    }

    async fn list_dead_letters(
        &self,
        req: Request<admin::ListDeadLettersRequest>,
    ) -> Result<Response<admin::ListDeadLettersResponse>, Status> {
        let r = req.into_inner();
        let answers = self
            .each(self.live()?, |mut c| {
                let r = r.clone();
                async move { c.list_dead_letters(r).await }
            })
            .await;
        let mut out = admin::ListDeadLettersResponse::default();
        for a in found(answers)? {
            out.letters.extend(a.letters);
            out.total += a.total;
            out.pending += a.pending;
        }
        Ok(Response::new(out))
    }

    #[instrument(skip_all, name = "admin_proxy.resend_dead_letters")]
    async fn resend_dead_letters(
        &self,
        req: Request<admin::ResendDeadLettersRequest>,
    ) -> Result<Response<admin::ResendDeadLettersResponse>, Status> {
        let r = req.into_inner();
        // Named letters live on one group each: every group gets the ids it holds, found by
        // listing first, so an id no group holds is refused before anything is sent.
        let groups = self.live()?;
        let answers = self
            .each(groups, |mut c| {
                let r = r.clone();
                async move {
                    if r.message_ids.is_empty() {
                        return c.resend_dead_letters(r).await;
                    }
                    let held = held_ids(&mut c, &r).await?;
                    if held.is_empty() {
                        return Ok(Response::new(admin::ResendDeadLettersResponse::default()));
                    }
                    c.resend_dead_letters(admin::ResendDeadLettersRequest {
                        group: r.group.clone(),
                        message_ids: held,
                    })
                    .await
                }
            })
            .await;
        let resent: Vec<admin::ResentLetter> =
            found(answers)?.into_iter().flat_map(|a| a.resent).collect();
        if let Some(missing) = r
            .message_ids
            .iter()
            .find(|id| !resent.iter().any(|x| &x.message_id == *id))
        {
            return Err(Status::not_found(format!(
                "no broker group holds a dead letter of {} with message id {missing}",
                r.group
            )));
        }
        Ok(Response::new(admin::ResendDeadLettersResponse { resent }))
    }

    async fn get_message(
        &self,
        req: Request<admin::GetMessageRequest>,
    ) -> Result<Response<admin::GetMessageResponse>, Status> {
        let r = req.into_inner();
        let answers = self
            .each(self.live()?, |mut c| {
                let r = r.clone();
                async move { c.get_message(r).await }
            })
            .await;
        let mut err = None;
        for (g, a) in answers {
            match a {
                Ok(m) => return Ok(Response::new(m)),
                Err(e) if e.code() == tonic::Code::NotFound => {
                    err = err.or(Some(e));
                }
                Err(e) => {
                    return Err(Status::new(
                        e.code(),
                        format!("broker group {}: {}", g.name, e.message()),
                    ))
                }
            }
        }
        Err(err.unwrap_or_else(|| Status::not_found("message not found")))
    }

    async fn query_messages(
        &self,
        req: Request<admin::QueryMessagesRequest>,
    ) -> Result<Response<admin::QueryMessagesResponse>, Status> {
        let r = req.into_inner();
        let answers = self
            .each(self.live()?, |mut c| {
                let r = r.clone();
                async move { c.query_messages(r).await }
            })
            .await;
        let mut messages = Vec::new();
        for (g, a) in answers {
            match a {
                Ok(m) => messages.extend(m.messages),
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => {
                    return Err(Status::new(
                        e.code(),
                        format!("broker group {}: {}", g.name, e.message()),
                    ))
                }
            }
        }
        if r.max_results > 0 {
            messages.truncate(r.max_results as usize);
        }
        Ok(Response::new(admin::QueryMessagesResponse { messages }))
    }

    async fn list_cluster(
        &self,
        _req: Request<admin::ListClusterRequest>,
    ) -> Result<Response<admin::ListClusterResponse>, Status> {
        self.routes.refresh().await;
        let mut replication = self.replication().await;
        let mut groups: Vec<admin::ClusterGroup> = self
            .routes
            .view()
            .groups
            .iter()
            .map(|g| admin::ClusterGroup {
                replication: replication.remove(&g.name),
                ..cluster_group(g)
            })
            .collect();
        // Replicated groups without a leader reporting to the name servers.
        for (name, r) in replication {
            groups.push(admin::ClusterGroup {
                name,
                state: "no-leader".into(),
                replication: Some(r),
                ..Default::default()
            });
        }
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(admin::ListClusterResponse { groups }))
    }

    #[instrument(skip_all, name = "admin_proxy.set_group_state")]
    async fn set_group_state(
        &self,
        req: Request<admin::SetGroupStateRequest>,
    ) -> Result<Response<admin::ClusterGroup>, Status> {
        let r = req.into_inner();
        crate::admin::service::parse_group_state(&r.state)?;
        let view = self.routes.view();
        let g = view.group(&r.group).cloned().ok_or_else(|| {
            Status::not_found(format!(
                "broker group {} is not alive (see `ferromq admin cluster list`)",
                r.group
            ))
        })?;
        let mut c = self.routes.admin(&g).map_err(Status::internal)?;
        let answer = c.set_group_state(r.clone()).await?.into_inner();
        self.routes.refresh().await;
        info!(group = %r.group, state = %answer.state, "broker group state set through the proxy");
        Ok(Response::new(answer))
    }

    #[instrument(skip_all, name = "admin_proxy.switchover", fields(group))]
    async fn switchover(
        &self,
        req: Request<admin::SwitchoverRequest>,
    ) -> Result<Response<admin::SwitchoverResponse>, Status> {
        let r = req.into_inner();
        tracing::Span::current().record("group", r.group.as_str());
        let Some(c) = &self.controller else {
            return Err(Status::failed_precondition(
                "no replication controller configured",
            ));
        };
        // The controller answers once the target leads; give it its own deadline.
        let (leader, st) = c.switchover(&r.group, r.to).await.map_err(|e| {
            Status::failed_precondition(format!("switchover of broker group {}: {e}", r.group))
        })?;
        self.routes.refresh().await;
        info!(group = %r.group, leader, epoch = st.epoch, "switchover done through the proxy");
        Ok(Response::new(admin::SwitchoverResponse {
            group: r.group,
            leader,
            epoch: st.epoch,
        }))
    }
    async fn create_user(
        &self,
        req: Request<admin::CreateUserRequest>,
    ) -> Result<Response<admin::User>, Status> {
        to_every_group!(self, req, create_user)
    }

    async fn update_user(
        &self,
        req: Request<admin::UpdateUserRequest>,
    ) -> Result<Response<admin::User>, Status> {
        to_every_group!(self, req, update_user)
    }

    async fn delete_user(
        &self,
        req: Request<admin::DeleteUserRequest>,
    ) -> Result<Response<admin::DeleteUserResponse>, Status> {
        to_every_group!(self, req, delete_user)
    }

    async fn list_users(
        &self,
        req: Request<admin::ListUsersRequest>,
    ) -> Result<Response<admin::ListUsersResponse>, Status> {
        to_first_group!(self, req, list_users)
    }

    async fn describe_user(
        &self,
        req: Request<admin::DescribeUserRequest>,
    ) -> Result<Response<admin::User>, Status> {
        to_first_group!(self, req, describe_user)
    }

    async fn create_acl(
        &self,
        req: Request<admin::PutAclRequest>,
    ) -> Result<Response<admin::Acl>, Status> {
        to_every_group!(self, req, create_acl)
    }

    async fn update_acl(
        &self,
        req: Request<admin::PutAclRequest>,
    ) -> Result<Response<admin::Acl>, Status> {
        to_every_group!(self, req, update_acl)
    }

    async fn delete_acl(
        &self,
        req: Request<admin::DeleteAclRequest>,
    ) -> Result<Response<admin::DeleteAclResponse>, Status> {
        to_every_group!(self, req, delete_acl)
    }

    async fn list_acls(
        &self,
        req: Request<admin::ListAclsRequest>,
    ) -> Result<Response<admin::ListAclsResponse>, Status> {
        to_first_group!(self, req, list_acls)
    }

    async fn describe_acl(
        &self,
        req: Request<admin::DescribeAclRequest>,
    ) -> Result<Response<admin::Acl>, Status> {
        to_first_group!(self, req, describe_acl)
    }
}

/// Which of the requested dead-letter ids a broker group holds.
async fn held_ids(
    c: &mut GroupAdmin,
    r: &admin::ResendDeadLettersRequest,
) -> Result<Vec<String>, Status> {
    let mut held = Vec::new();
    let mut from = None;
    loop {
        let page = match c
            .list_dead_letters(admin::ListDeadLettersRequest {
                group: r.group.clone(),
                from_offset: from,
                max: 1000,
            })
            .await
        {
            Ok(p) => p.into_inner(),
            Err(e) if e.code() == tonic::Code::NotFound => return Ok(held),
            Err(e) => return Err(e),
        };
        let Some(last) = page.letters.last().and_then(|l| l.message.as_ref()) else {
            return Ok(held);
        };
        from = Some(last.queue_offset + 1);
        for l in &page.letters {
            if let Some(m) = &l.message {
                if r.message_ids.contains(&m.message_id) && !held.contains(&m.message_id) {
                    held.push(m.message_id.clone());
                }
            }
        }
    }
}

/// A replicated group as the controller holds it, with each member's lag behind the leader.
fn replication_view(g: &ferromq_controller::proto::GroupState) -> admin::GroupReplication {
    let leader_end = g
        .members
        .iter()
        .find(|m| Some(m.replica_id) == g.leader)
        .map_or(0, |m| m.log_end_offset);
    admin::GroupReplication {
        leader: g.leader,
        epoch: g.epoch,
        in_sync: g.in_sync.clone(),
        members: g
            .members
            .iter()
            .map(|m| admin::ReplicaMember {
                replica_id: m.replica_id,
                address: m.address.clone(),
                log_end_offset: m.log_end_offset,
                lag_bytes: leader_end.saturating_sub(m.log_end_offset),
                alive: m.alive,
                in_sync: g.in_sync.contains(&m.replica_id),
            })
            .collect(),
    }
}

/// Adds one group's view of a consumer group to the merged view (lags and clients add up).
fn merge_group(into: &mut BTreeMap<String, admin::Group>, g: admin::Group) {
    match into.get_mut(&g.name) {
        None => {
            into.insert(g.name.clone(), g);
        }
        Some(cur) => {
            cur.total_lag += g.total_lag;
            cur.online_clients = cur.online_clients.max(g.online_clients);
            for t in g.topics {
                if !cur.topics.contains(&t) {
                    cur.topics.push(t);
                }
            }
            cur.topics.sort();
        }
    }
}

fn cluster_group(g: &GroupRoute) -> admin::ClusterGroup {
    admin::ClusterGroup {
        name: g.name.clone(),
        endpoint: g.endpoint.clone(),
        state: if g.read_only {
            "read-only"
        } else {
            "read-write"
        }
        .to_string(),
        topics: g.topics.len() as u32,
        queues: g.topics.values().map(|t| t.queues).sum(),
        total_lag: g.total_lag,
        heartbeat_age_ms: g.age_ms,
        queues_with_lag: g.queues_with_lag,
        replication: None,
    }
}
