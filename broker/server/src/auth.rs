//! Authentication and authorization of every call a storage node serves, with `ferromq-auth`.
//!
//! Two steps, because they need different things:
//! - [`Authenticated`] wraps each gRPC service (a tower service around tonic's): it sees the
//!   headers, the method path and the peer address of every call, unary or streaming, and
//!   verifies the signature once. It puts the result ([`Caller`]) in the request's extensions.
//!   Admin calls that fail authentication are answered here (`UNAUTHENTICATED`); RocketMQ calls
//!   go on, because their refusal must be written in the RPC's own response type (status
//!   40100 with gRPC OK, as Apache does and as the official clients expect).
//! - Authorization needs the topic and group the request names, so it runs where the message is
//!   decoded: in [`crate::rpc`] for the RocketMQ API (before the handler, so a refused call
//!   changes nothing), in each admin handler ([`admin_access`]), and per Settings command on a
//!   Telemetry stream ([`Caller::check_settings`]).
//!
//! With auth off nothing is wrapped and no [`Caller`] exists: every check is skipped, and the
//! `authorization` header that the Python client always sends is ignored.
//!
//! Services other than the RocketMQ API (admin, replication) are answered in the wrapper when
//! the caller is not authenticated or their rule is for super users only (replication has no
//! row in `ferromq_auth::rpc_rule`, so only super users pass): their handlers need no check of
//! their own to be closed. The proxies' remoting tunnel opens unsigned: each remoting request
//! it carries is signed by the client and checked by the node's remoting service
//! (`crate::remoting::auth`), as on the remoting port.
//!
//! Members of a replicated group ([`Gate::open_replicated`]): the store is a copy of the group's
//! users (`crate::replication::auth`), and the replication stream between members is signed by
//! the bootstrap super user every member is started with, which the leader checks against its
//! own flags as well as its store, so a member can follow before any user is replicated.
//!
//! Every refusal is logged at `info` with the user (or the claimed access key), resource, action
//! and peer, never the header values, and counted in `ferromq_auth_refusals_total{reason}`.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use ferromq_auth::{
    AuthStore, AuthnError, ClockPolicy, Principal, Refusal, RequestCredentials, RpcRule,
    SettingsTargets, Snapshot, Targets,
};
use ferromq_proto::v2::{self, Code};
use tonic::codegen::http;
use tonic::codegen::Service;
use tonic::transport::server::TcpConnectInfo;
use tracing::info;

use crate::config::auth::AuthConfig;
use crate::hook::{Answer, Body, Hook, Hooked};
use crate::metrics::Metrics;

/// What a storage node checks calls against: its user store and clock window.
pub struct Gate {
    store: Arc<AuthStore>,
    clock: ClockPolicy,
    metrics: Arc<Metrics>,
    /// Replicated members: the bootstrap super user alone, for the calls of
    /// [`INTERNAL_SERVICES`] (the replication stream).
    internal: Option<Arc<Snapshot>>,
}

/// Services whose callers are the group's own members: also authenticated against the
/// bootstrap super user of this member's flags (see the module docs).
const INTERNAL_SERVICES: [&str; 1] = ["ferromq.replication.v1.Replication"];

/// The remoting tunnel of proxies (`crate::remoting::tunnel`).
const TUNNEL_SERVICE: &str = "ferromq.remoting.v1.Tunnel";

impl Gate {
    /// Opens the store under `data_dir/auth` and makes sure the bootstrap super user exists.
    pub fn open(
        data_dir: &std::path::Path,
        cfg: &AuthConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Gate>> {
        use anyhow::Context as _;
        let store = open_store(data_dir)?;
        if let Some((name, secret)) = &cfg.super_user {
            let wrote = store
                .ensure_super_user(name, secret)
                .with_context(|| format!("cannot store the bootstrap super user {name:?}"))?;
            info!(user = %name, changed = wrote, "bootstrap super user in place");
        }
        let snapshot = store.snapshot();
        if !snapshot
            .users()
            .any(|u| u.kind == ferromq_auth::UserKind::Super)
        {
            tracing::warn!("auth is on but no super user exists: nobody can manage users; start with --auth-super-user and --auth-super-secret-file");
        }
        Ok(Arc::new(Gate {
            store: Arc::new(store),
            clock: cfg.clock,
            metrics,
            internal: None,
        }))
    }

    /// The gate of a member of a replicated group: its store under `data_dir/auth` holds what
    /// the group's journal carried (no bootstrap user is written here: the leader writes it
    /// through the group, [`Gate::ensure_bootstrap_user`]); the bootstrap super user, required,
    /// signs and checks the replication stream.
    pub fn open_replicated(
        data_dir: &std::path::Path,
        cfg: &AuthConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Gate>> {
        let Some((name, secret)) = &cfg.super_user else {
            anyhow::bail!(crate::config::ConfigError {
                field: "auth-super-user",
                reason: "members of a replicated group with --auth sign the replication stream as the bootstrap super user: give every member the same --auth-super-user and --auth-super-secret-file".into(),
            });
        };
        let internal =
            Snapshot::with_super_user(name, secret).map_err(|e| crate::config::ConfigError {
                field: "auth-super-user",
                reason: e.to_string(),
            })?;
        Ok(Arc::new(Gate {
            store: Arc::new(open_store(data_dir)?),
            clock: cfg.clock,
            metrics,
            internal: Some(Arc::new(internal)),
        }))
    }

    pub fn store(&self) -> &AuthStore {
        &self.store
    }

    /// Counts a refusal made outside the gRPC wrapper (the remoting port's checks), by reason.
    pub fn note_refusal(&self, r: &Refusal) {
        self.metrics.auth_refusal(refusal_reason(r));
    }

    /// The store, to share with the replicated group's journal reader.
    pub fn shared_store(&self) -> Arc<AuthStore> {
        self.store.clone()
    }

    /// Authenticates one call from its headers.
    fn caller(
        self: &Arc<Self>,
        service: &str,
        headers: &http::HeaderMap,
        path: &str,
        peer: Option<IpAddr>,
    ) -> Caller {
        let mut snapshot = self.store.snapshot();
        let credentials = RequestCredentials::from_header_values(
            headers
                .get_all(ferromq_auth::signature::AUTHORIZATION_HEADER)
                .iter()
                .map(|v| v.as_bytes()),
            headers
                .get_all(ferromq_auth::signature::DATE_TIME_HEADER)
                .iter()
                .map(|v| v.as_bytes()),
        );
        let now = SystemTime::now();
        let mut who = credentials
            .clone()
            .and_then(|c| snapshot.authenticate(&c, now, &self.clock));
        // A member's call: the store's super users, else the bootstrap super user of the flags.
        if let Some(internal) = self
            .internal
            .as_ref()
            .filter(|_| INTERNAL_SERVICES.contains(&service))
        {
            let store_super = who.as_ref().is_ok_and(|p| {
                snapshot.user(&p.name).map(|u| u.kind) == Some(ferromq_auth::UserKind::Super)
            });
            if !store_super {
                if let Ok(p) = credentials.and_then(|c| internal.authenticate(&c, now, &self.clock))
                {
                    who = Ok(p);
                    snapshot = internal.clone();
                }
            }
        }
        Caller {
            gate: self.clone(),
            snapshot,
            who,
            peer,
            path: Arc::from(path),
        }
    }
}

/// The `reason` label of `ferromq_auth_refusals_total`.
fn refusal_reason(r: &Refusal) -> &'static str {
    match r.code() {
        ferromq_auth::RocketMqCode::Unauthorized => "unauthenticated",
        ferromq_auth::RocketMqCode::Forbidden => "forbidden",
        ferromq_auth::RocketMqCode::BadRequest => "bad_request",
    }
}

fn open_store(data_dir: &std::path::Path) -> anyhow::Result<AuthStore> {
    use anyhow::Context as _;
    AuthStore::open(data_dir.join("auth"))
        .with_context(|| format!("cannot open the auth store in {}", data_dir.display()))
}

impl Gate {
    /// Makes sure the bootstrap super user of `cfg` is in the store, with that secret (through
    /// the group on a replicated member: its leader calls this at the start of each term, so a
    /// rotated secret takes effect once a member started with it leads). Blocks on I/O.
    pub fn ensure_bootstrap_user(&self, cfg: &AuthConfig) -> anyhow::Result<()> {
        let Some((name, secret)) = &cfg.super_user else {
            return Ok(());
        };
        let wrote = self.store.ensure_super_user(name, secret)?;
        info!(user = %name, changed = wrote, "bootstrap super user in place");
        Ok(())
    }
}

/// Who is calling, as the wrapper found out; in the request's extensions when auth is on.
#[derive(Clone)]
pub struct Caller {
    gate: Arc<Gate>,
    snapshot: Arc<Snapshot>,
    who: Result<Principal, AuthnError>,
    peer: Option<IpAddr>,
    path: Arc<str>,
}

impl Caller {
    /// Logs and counts a refusal and gives its RocketMQ status.
    fn refuse(&self, r: Refusal) -> v2::Status {
        self.gate.note_refusal(&r);
        let claimed = match &self.who {
            Ok(p) => Some(p.name.to_string()),
            Err(e) => e.access_key().map(str::to_string),
        };
        info!(user = claimed.as_deref().unwrap_or("-"), peer = ?self.peer, rpc = %self.path, code = r.code().value(), reason = %r, "call refused");
        crate::status::status(code_of(&r), r.client_message())
    }

    /// Authorizes the call for each set of names it carries (a SendMessage may name several
    /// topics); `Err` is the status to answer with.
    pub fn check(&self, targets: &[Targets<'_>]) -> Result<(), v2::Status> {
        let who = match &self.who {
            Ok(p) => p,
            Err(e) => return Err(self.refuse(Refusal::from(e.clone()))),
        };
        let none = [Targets::default()];
        let targets = if targets.is_empty() {
            &none[..]
        } else {
            targets
        };
        for t in targets {
            self.snapshot
                .authorize_rpc(who, &self.path, t, self.peer)
                .map_err(|e| self.refuse(Refusal::from(e)))?;
        }
        Ok(())
    }

    /// The part of a Telemetry Settings command the caller may announce: publishing topics it
    /// may publish to; a subscription only when it may consume with the group, and then only
    /// the topics it may subscribe to. The rest is refused (logged and counted) and never
    /// registered: announcing a topic would route that topic's transaction checks, with their
    /// messages, to this client.
    ///
    /// The stream itself stays open and the answer is the usual Settings: the official clients
    /// wait for it to start, and then meet the refusal with its precise code on the call that
    /// needs the permission (SendMessage, ReceiveMessage), as `ForbiddenException` and the like,
    /// rather than as a start-up timeout.
    pub fn permitted_settings(&self, s: &v2::Settings) -> v2::Settings {
        let mut out = s.clone();
        let Ok(who) = &self.who else {
            // Streams open only authenticated (checked in `rpc::streaming`).
            out.pub_sub = None;
            return out;
        };
        let allowed = |settings: SettingsTargets<'_>| {
            self.snapshot
                .authorize_settings(who, &settings, self.peer)
                .map_err(|e| self.refuse(Refusal::from(e)))
                .is_ok()
        };
        match &mut out.pub_sub {
            Some(v2::settings::PubSub::Publishing(p)) => p.topics.retain(|t| {
                allowed(SettingsTargets {
                    publishing_topics: &[t.name.as_str()],
                    ..Default::default()
                })
            }),
            Some(v2::settings::PubSub::Subscription(sub)) => {
                let group = sub.group.as_ref().map(|g| g.name.as_str());
                let group_ok = allowed(SettingsTargets {
                    subscription_group: group,
                    ..Default::default()
                });
                if !group_ok {
                    sub.subscriptions.clear();
                } else {
                    sub.subscriptions.retain(|e| {
                        let topic = e.topic.as_ref().map_or("", |t| t.name.as_str());
                        allowed(SettingsTargets {
                            subscription_topics: &[topic],
                            ..Default::default()
                        })
                    });
                }
            }
            None => {}
        }
        out
    }

    /// The admin API's check: gRPC statuses instead of RocketMQ codes.
    pub fn check_admin(&self, targets: Targets<'_>) -> Result<(), tonic::Status> {
        self.check(&[targets]).map_err(|s| match s.code {
            c if c == Code::Unauthorized as i32 => tonic::Status::unauthenticated(s.message),
            c if c == Code::Forbidden as i32 => tonic::Status::permission_denied(s.message),
            _ => tonic::Status::invalid_argument(s.message),
        })
    }
}

fn code_of(r: &Refusal) -> Code {
    match r.code() {
        ferromq_auth::RocketMqCode::Unauthorized => Code::Unauthorized,
        ferromq_auth::RocketMqCode::Forbidden => Code::Forbidden,
        ferromq_auth::RocketMqCode::BadRequest => Code::BadRequest,
    }
}

/// Authorizes an admin call from its request's extensions (nothing to check with auth off).
pub fn admin_access<T>(req: &tonic::Request<T>, targets: Targets<'_>) -> Result<(), tonic::Status> {
    match req.extensions().get::<Caller>() {
        Some(c) => c.check_admin(targets),
        None => Ok(()),
    }
}

/// Authenticates each call of a gRPC service before it reaches it: wrap the service with
/// `Hooked::new(Authenticate(gate), service)`.
#[derive(Clone)]
pub struct Authenticate(pub Arc<Gate>);

/// A service whose calls are authenticated.
pub type Authenticated<S> = Hooked<S, Authenticate>;

impl<S> Hook<S> for Authenticate
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    fn call(&self, service: &'static str, mut req: http::Request<Body>, mut inner: S) -> Answer {
        let peer = req
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(|i| i.remote_addr())
            .map(|a| ferromq_auth::policy::canonical_ip(a.ip()));
        let caller = self
            .0
            .caller(service, req.headers(), req.uri().path(), peer);
        if let Some(status) = refused_early(service, &caller) {
            let resp = status.into_http();
            return Box::pin(async move { Ok(resp) });
        }
        req.extensions_mut().insert(caller);
        Box::pin(async move { inner.call(req).await })
    }
}

/// Calls of every service but the RocketMQ API (admin, remoting tunnel, replication) are
/// refused in the wrapper when unauthenticated, and when their rule is for super users only
/// (user and ACL management, the tunnel, replication, and any RPC nobody mapped yet: fails
/// closed even if a handler forgets its check). They answer gRPC statuses. RocketMQ calls are
/// refused by their handlers, in their own response types.
fn refused_early(service: &str, caller: &Caller) -> Option<tonic::Status> {
    // The tunnel's frames are remoting requests, each checked with its own signature by the
    // node's remoting service (`crate::remoting::auth`): opening it grants nothing.
    if service == ferromq_auth::rpc::MESSAGING_SERVICE || service == TUNNEL_SERVICE {
        return None;
    }
    let check =
        caller.who.is_err() || ferromq_auth::rpc_rule(&caller.path) == RpcRule::SuperUserOnly;
    match check {
        true => caller.check_admin(Targets::default()).err(),
        false => None,
    }
}

/// The names a RocketMQ request carries, for its authorization rule.
pub trait Targeted {
    fn targets(&self) -> Vec<Targets<'_>>;
}

fn name(r: Option<&v2::Resource>) -> Option<&str> {
    r.map(|r| r.name.as_str())
}

fn queue_topic(mq: Option<&v2::MessageQueue>) -> Option<&str> {
    mq.and_then(|m| name(m.topic.as_ref()))
}

macro_rules! targeted {
    ($($t:ty => |$r:ident| ($topic:expr, $group:expr)),* $(,)?) => {
        $(impl Targeted for $t {
            fn targets(&self) -> Vec<Targets<'_>> {
                let $r = self;
                vec![Targets { topic: $topic, group: $group }]
            }
        })*
    };
}

targeted!(
    v2::QueryRouteRequest => |r| (name(r.topic.as_ref()), None),
    v2::QueryAssignmentRequest => |r| (name(r.topic.as_ref()), name(r.group.as_ref())),
    v2::ReceiveMessageRequest => |r| (queue_topic(r.message_queue.as_ref()), name(r.group.as_ref())),
    v2::AckMessageRequest => |r| (name(r.topic.as_ref()), name(r.group.as_ref())),
    v2::ForwardMessageToDeadLetterQueueRequest => |r| (name(r.topic.as_ref()), name(r.group.as_ref())),
    v2::PullMessageRequest => |r| (queue_topic(r.message_queue.as_ref()), name(r.group.as_ref())),
    v2::UpdateOffsetRequest => |r| (queue_topic(r.message_queue.as_ref()), name(r.group.as_ref())),
    v2::GetOffsetRequest => |r| (queue_topic(r.message_queue.as_ref()), name(r.group.as_ref())),
    v2::QueryOffsetRequest => |r| (queue_topic(r.message_queue.as_ref()), None),
    v2::EndTransactionRequest => |r| (name(r.topic.as_ref()), None),
    v2::RecallMessageRequest => |r| (name(r.topic.as_ref()), None),
    v2::ChangeInvisibleDurationRequest => |r| (name(r.topic.as_ref()), name(r.group.as_ref())),
    v2::NotifyClientTerminationRequest => |r| (None, name(r.group.as_ref())),
    v2::SyncLiteSubscriptionRequest => |r| (name(r.topic.as_ref()), name(r.group.as_ref())),
);

impl Targeted for v2::HeartbeatRequest {
    /// Only a consumer's heartbeat speaks for its group (a producer's names none, or one it does
    /// not consume with).
    fn targets(&self) -> Vec<Targets<'_>> {
        let consumer = !matches!(
            v2::ClientType::try_from(self.client_type),
            Ok(v2::ClientType::Producer | v2::ClientType::Unspecified) | Err(_)
        );
        vec![Targets {
            topic: None,
            group: if consumer {
                name(self.group.as_ref())
            } else {
                None
            },
        }]
    }
}

impl Targeted for v2::SendMessageRequest {
    /// Every distinct topic of the batch is checked.
    fn targets(&self) -> Vec<Targets<'_>> {
        let mut topics: Vec<Option<&str>> = Vec::with_capacity(1);
        for m in &self.messages {
            let t = name(m.topic.as_ref());
            if !topics.contains(&t) {
                topics.push(t);
            }
        }
        if topics.is_empty() {
            topics.push(None);
        }
        topics
            .into_iter()
            .map(|topic| Targets { topic, group: None })
            .collect()
    }
}

impl Targeted for tonic::Streaming<v2::TelemetryCommand> {
    /// Opening a stream needs authentication only; its Settings are checked one by one.
    fn targets(&self) -> Vec<Targets<'_>> {
        Vec::new()
    }
}

impl std::fmt::Debug for Caller {
    /// Who and from where; never the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("user", &self.who.as_ref().map(|p| &*p.name).ok())
            .field("peer", &self.peer)
            .field("path", &self.path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferromq_auth::{Secret, UserKind};

    const REPLICATION: &str = "ferromq.replication.v1.Replication";
    const FETCH: &str = "/ferromq.replication.v1.Replication/Fetch";
    const TUNNEL: &str = "ferromq.remoting.v1.Tunnel";

    fn headers(user: Option<(&str, &str)>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some((ak, sk)) = user {
            let signed = ferromq_auth::sign(ak, &Secret::new(sk).unwrap(), SystemTime::now());
            h.insert("authorization", signed.authorization.parse().unwrap());
            h.insert("x-mq-date-time", signed.date_time.parse().unwrap());
        }
        h
    }

    fn gate(dir: &std::path::Path, replicated: bool) -> Arc<Gate> {
        let cfg = AuthConfig {
            enabled: true,
            super_user: Some(("admin".into(), Secret::new("admin-secret-1").unwrap())),
            clock: ClockPolicy::default(),
        };
        let metrics = Arc::new(Metrics::new(crate::metrics::Identity::new(
            crate::metrics::NodeType::Broker,
            None,
        )));
        let g = match replicated {
            true => Gate::open_replicated(dir, &cfg, metrics).unwrap(),
            false => Gate::open(dir, &cfg, metrics).unwrap(),
        };
        g.store()
            .apply_replicated(&ferromq_auth::AuthChange {
                users: vec![ferromq_auth::UserChange {
                    name: "app".into(),
                    user: Some(ferromq_auth::UserState {
                        kind: UserKind::Normal,
                        secret: Secret::new("app-secret-1").unwrap(),
                    }),
                    entries: vec![],
                }],
            })
            .unwrap();
        g
    }

    fn code(
        g: &Arc<Gate>,
        service: &str,
        path: &str,
        user: Option<(&str, &str)>,
    ) -> Option<tonic::Code> {
        let caller = g.caller(service, &headers(user), path, None);
        refused_early(service, &caller).map(|s| s.code())
    }

    /// A replicated member's store has no user yet (nothing replicated): its peers still follow
    /// it, signed as the bootstrap super user of the flags; nobody else is let in.
    #[test]
    fn the_replication_stream_takes_the_bootstrap_super_user_of_the_flags_only() {
        let dir = tempfile::tempdir().unwrap();
        let g = gate(dir.path(), true);
        assert!(
            g.store().snapshot().user("admin").is_none(),
            "nothing written locally"
        );
        assert_eq!(
            code(&g, REPLICATION, FETCH, Some(("admin", "admin-secret-1"))),
            None
        );
        assert_eq!(
            code(&g, REPLICATION, FETCH, Some(("admin", "admin-secret-2"))),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(&g, REPLICATION, FETCH, None),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(&g, REPLICATION, FETCH, Some(("app", "app-secret-1"))),
            Some(tonic::Code::PermissionDenied)
        );
        // The flags' user counts for replication only: the admin API asks the store.
        assert_eq!(
            code(
                &g,
                ferromq_auth::rpc::ADMIN_SERVICE,
                "/ferromq.admin.v1.Admin/ListUsers",
                Some(("admin", "admin-secret-1"))
            ),
            Some(tonic::Code::Unauthenticated)
        );
    }

    /// The brokers' remoting tunnel carries no RocketMQ names: super users only.
    #[test]
    fn the_remoting_tunnel_opens_unsigned_and_admin_calls_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let g = gate(dir.path(), false);
        // Each remoting request on the tunnel carries its own signature, checked by the
        // remoting service; opening the stream grants nothing.
        let open = "/ferromq.remoting.v1.Tunnel/Open";
        for who in [
            None,
            Some(("app", "app-secret-1")),
            Some(("admin", "admin-secret-1")),
        ] {
            assert_eq!(code(&g, TUNNEL, open, who), None);
        }
        // RocketMQ calls go on to their handlers, which answer in their own response types.
        let send = "/apache.rocketmq.v2.MessagingService/SendMessage";
        assert_eq!(
            code(&g, ferromq_auth::rpc::MESSAGING_SERVICE, send, None),
            None
        );
        // Replication stays for super users.
        assert_eq!(
            code(&g, REPLICATION, FETCH, Some(("app", "app-secret-1"))),
            Some(tonic::Code::PermissionDenied)
        );
    }

    fn res(name: &str) -> Option<v2::Resource> {
        Some(v2::Resource {
            name: name.into(),
            ..Default::default()
        })
    }

    #[test]
    fn a_send_names_each_distinct_topic_of_its_batch() {
        let m = |t: &str| v2::Message {
            topic: res(t),
            ..Default::default()
        };
        let req = v2::SendMessageRequest {
            messages: vec![m("a"), m("b"), m("a")],
        };
        let topics: Vec<Option<&str>> = req.targets().iter().map(|t| t.topic).collect();
        assert_eq!(topics, [Some("a"), Some("b")]);
        // An empty batch still gets a check, which then refuses the missing name.
        let empty = v2::SendMessageRequest { messages: vec![] };
        assert_eq!(empty.targets(), vec![Targets::default()]);
    }

    #[test]
    fn only_a_consumers_heartbeat_speaks_for_its_group() {
        let hb = |t: v2::ClientType| v2::HeartbeatRequest {
            group: res("g"),
            client_type: t as i32,
        };
        assert_eq!(hb(v2::ClientType::Producer).targets()[0].group, None);
        assert_eq!(
            hb(v2::ClientType::SimpleConsumer).targets()[0].group,
            Some("g")
        );
        assert_eq!(
            hb(v2::ClientType::PushConsumer).targets()[0].group,
            Some("g")
        );
    }

    #[test]
    fn queue_addressed_requests_name_the_queue_topic() {
        let req = v2::ReceiveMessageRequest {
            group: res("g"),
            message_queue: Some(v2::MessageQueue {
                topic: res("t"),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            req.targets(),
            vec![Targets {
                topic: Some("t"),
                group: Some("g")
            }]
        );
    }
}
