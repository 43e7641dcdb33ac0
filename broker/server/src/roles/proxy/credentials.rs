//! The caller's credentials on the admin calls the proxy fans out to the broker groups.
//!
//! The proxy holds no users: each broker group authenticates and authorizes the call itself,
//! from the caller's own signed headers (the signature covers only `x-mq-date-time`, so it stays
//! valid when copied). The RocketMQ API copies them per call ([`super::fanout::outgoing`]); the
//! admin fan-out builds its requests from bare messages, so [`Forwarding`] keeps the
//! incoming call's headers in a task-local for the duration of the call and every admin client
//! of [`super::routes::Routes::admin`] adds them ([`Forward`]).

use std::convert::Infallible;

use tonic::codegen::http::{self, HeaderName, HeaderValue};
use tonic::codegen::Service;
use tonic::service::Interceptor;

use crate::hook::{Answer, Body, Hook};

/// Headers that carry a caller's identity.
const FORWARDED: [&str; 2] = [
    ferromq_auth::signature::AUTHORIZATION_HEADER,
    ferromq_auth::signature::DATE_TIME_HEADER,
];

tokio::task_local! {
    static CREDENTIALS: Vec<(HeaderName, HeaderValue)>;
}

/// Adds the current call's credential headers to an outgoing admin call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Forward;

impl Interceptor for Forward {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let _ = CREDENTIALS.try_with(|headers| {
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    tonic::metadata::MetadataKey::from_bytes(k.as_str().as_bytes()),
                    tonic::metadata::MetadataValue::try_from(v.as_bytes()),
                ) {
                    req.metadata_mut().append(k, v);
                }
            }
        });
        Ok(req)
    }
}

/// Runs each call of a service with its credential headers in the task-local [`Forward`] reads:
/// wrap the service with `Hooked::new(Forwarding, service)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Forwarding;

impl<S> Hook<S> for Forwarding
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    fn call(&self, _service: &'static str, req: http::Request<Body>, mut inner: S) -> Answer {
        let headers: Vec<(HeaderName, HeaderValue)> = FORWARDED
            .iter()
            .flat_map(|name| {
                req.headers()
                    .get_all(*name)
                    .iter()
                    .map(|v| (HeaderName::from_static(name), v.clone()))
            })
            .collect();
        Box::pin(CREDENTIALS.scope(headers, async move { inner.call(req).await }))
    }
}
