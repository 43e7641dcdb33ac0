//! Calls from the proxy to broker groups: the headers each forwarded call carries, asking every
//! group that holds a topic and merging their answers, and asking every live group.

use ferromq_proto::v2::messaging_service_client::MessagingServiceClient;
use ferromq_proto::v2::{self, Code};
use tonic::metadata::{KeyAndValueRef, MetadataMap};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::routes::{GroupRoute, Routes};
use super::ProxyApi;
use crate::service::parse_grpc_timeout;
use crate::status::{self, ClientLanguage, RpcError};

/// Whether a client's request header goes along to the broker group: the RocketMQ ones
/// (`x-mq-*`) and the credentials.
pub fn forwarded_header(name: &str) -> bool {
    name.starts_with("x-mq-") || name == "authorization"
}

/// Copies what a broker needs from the client's request: the `x-mq-*` identity headers, the
/// authorization header and what is left of the deadline.
pub fn outgoing<T>(from: &MetadataMap, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    for kv in from.iter() {
        if let KeyAndValueRef::Ascii(k, v) = kv {
            if forwarded_header(k.as_str()) {
                r.metadata_mut().insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(t) = from
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
    {
        r.set_timeout(t);
    }
    r
}

fn language(md: &MetadataMap) -> ClientLanguage {
    ClientLanguage(
        md.get("x-mq-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    )
}

/// A status for a request the proxy could not complete.
pub fn fail(md: &MetadataMap, code: Code, msg: impl Into<String>) -> v2::Status {
    RpcError::new(code, msg).to_status(&language(md))
}

/// The status of a call a group did not answer.
pub fn unreachable_status(md: &MetadataMap, g: &str, e: &Status) -> v2::Status {
    fail(
        md,
        Code::InternalServerError,
        format!("broker group {g} did not answer: {}", e.message()),
    )
}

pub fn topic_of(r: Option<&v2::Resource>) -> String {
    r.map(|t| t.name.clone()).unwrap_or_default()
}

/// Merges the answers of several groups to one question: OK with every OK group's items (each
/// relabelled for its group) when any group answered OK, else the first refusal.
pub fn merge_answers<A, I>(
    answers: Vec<(GroupRoute, A)>,
    split: impl Fn(A) -> (Option<v2::Status>, Vec<I>),
    relabel: impl Fn(&mut I, &GroupRoute),
) -> (v2::Status, Vec<I>) {
    let mut items = Vec::new();
    let mut first_err = None;
    for (g, a) in answers {
        let (st, got) = split(a);
        if st.as_ref().is_some_and(|s| s.code == Code::Ok as i32) {
            for mut i in got {
                relabel(&mut i, &g);
                items.push(i);
            }
        } else if first_err.is_none() {
            first_err = st;
        }
    }
    if items.is_empty() {
        (first_err.unwrap_or_else(status::ok), items)
    } else {
        (status::ok(), items)
    }
}

impl ProxyApi {
    /// Asks every group holding the topic (or the first live group when none does, so that the
    /// broker answers TOPIC_NOT_FOUND or auto-creates) and gathers the answers.
    pub(super) async fn ask_holders<Req, Resp, F, Fut>(
        &self,
        md: &MetadataMap,
        topic: &str,
        req: Req,
        call: F,
    ) -> Result<Vec<(GroupRoute, Resp)>, v2::Status>
    where
        Req: Clone,
        F: Fn(MessagingServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
    {
        let view = self.routes.view();
        let mut targets: Vec<GroupRoute> = view.holding(topic).cloned().collect();
        if targets.is_empty() {
            match view
                .groups
                .iter()
                .find(|g| !g.read_only)
                .or(view.groups.first())
            {
                Some(g) => targets.push(g.clone()),
                None => {
                    return Err(fail(
                        md,
                        Code::InternalServerError,
                        "no broker group is alive (the name servers know none)",
                    ))
                }
            }
        }
        let calls = targets.into_iter().map(|g| {
            let c = self.client(&g);
            let r = outgoing(md, req.clone());
            let fut = c.map(|c| call(c, r));
            async move {
                match fut {
                    Ok(f) => (g, f.await.map(Response::into_inner)),
                    Err(e) => (g, Err(e)),
                }
            }
        });
        let answers = futures_util::future::join_all(calls).await;
        let mut out = Vec::new();
        let mut last_err = None;
        for (g, r) in answers {
            match r {
                Ok(v) => {
                    self.routes.broker_ok(&g);
                    out.push((g, v))
                }
                Err(e) => {
                    self.routes
                        .broker_failed(&g, &e, "broker group did not answer");
                    last_err = Some(unreachable_status(md, &g.name, &e));
                }
            }
        }
        if out.is_empty() {
            return Err(last_err.unwrap_or_else(|| {
                fail(md, Code::InternalServerError, "no broker group answered")
            }));
        }
        Ok(out)
    }
}

/// Sends a request to every live group; OK when any answered OK.
pub async fn broadcast<Req, F, Fut>(
    routes: &Routes,
    md: &MetadataMap,
    req: Req,
    call: F,
) -> v2::Status
where
    Req: Clone,
    F: Fn(MessagingServiceClient<Channel>, Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<Option<v2::Status>, Status>>,
{
    let view = routes.view();
    let calls = view.groups.iter().filter_map(|g| {
        let c = routes.messaging(g).ok()?;
        let answer = call(c, outgoing(md, req.clone()));
        Some(async move { (g, answer.await) })
    });
    let answers = futures_util::future::join_all(calls).await;
    // Every answer is looked at (not only up to the first OK) so that each unreachable group
    // is logged.
    let (mut ok, mut first) = (None, None);
    for (g, a) in answers {
        match a {
            Ok(s) => {
                routes.broker_ok(g);
                match s {
                    Some(s) if s.code == Code::Ok as i32 => ok = ok.or(Some(s)),
                    Some(s) => first = first.or(Some(s)),
                    None => ok = ok.or_else(|| Some(status::ok())),
                }
            }
            Err(e) => {
                routes.broker_failed(g, &e, "broker group did not answer");
                first = first
                    .or_else(|| Some(fail(md, Code::InternalServerError, e.message().to_string())))
            }
        }
    }
    ok.or(first)
        .unwrap_or_else(|| fail(md, Code::InternalServerError, "no broker group is alive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> GroupRoute {
        GroupRoute {
            name: name.into(),
            endpoint: "127.0.0.1:1".into(),
            read_only: false,
            topics: Default::default(),
            total_lag: 0,
            queues_with_lag: 0,
            age_ms: 0,
            epoch: 0,
        }
    }

    #[test]
    fn merged_answers_keep_every_ok_group_and_report_a_refusal_only_when_none_is_ok() {
        let refused = status::status(Code::TopicNotFound, "no");
        let answers = vec![
            (group("a"), (Some(refused.clone()), vec![1])),
            (group("b"), (Some(status::ok()), vec![2, 3])),
        ];
        let (st, items) = merge_answers(
            answers,
            |a| a,
            |i: &mut i32, g| {
                if g.name == "b" {
                    *i *= 10
                }
            },
        );
        assert_eq!(st.code, Code::Ok as i32);
        assert_eq!(items, vec![20, 30]);
        let (st, items) = merge_answers(
            vec![(group("a"), (Some(refused), vec![1]))],
            |a| a,
            |_: &mut i32, _| {},
        );
        assert_eq!(st.code, Code::TopicNotFound as i32);
        assert!(items.is_empty());
    }
}
