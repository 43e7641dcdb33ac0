//! The caller's credentials on the admin calls the proxy fans out to the broker groups.
//!
//! The proxy holds no users: each broker group authenticates and authorizes the call itself,
//! from the caller's own signed headers (the signature covers only `x-mq-date-time`, so it stays
//! valid when copied). The RocketMQ API copies them per call ([`super::fanout::outgoing`]); the
//! admin fan-out builds its requests from bare messages, so [`WithCredentials`] keeps the
//! incoming call's headers in a task-local for the duration of the call and every admin client
//! of [`super::routes::Routes::admin`] adds them ([`Forward`]).

use std::convert::Infallible;

use tonic::codegen::http::{self, HeaderName, HeaderValue};
use tonic::codegen::{Context, Poll, Service};
use tonic::server::NamedService;
use tonic::service::Interceptor;

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

/// A service whose calls run with their credential headers in the task-local [`Forward`] reads.
#[derive(Clone)]
pub struct WithCredentials<S> {
    inner: S,
}

impl<S> WithCredentials<S> {
    pub fn new(inner: S) -> Self {
        WithCredentials { inner }
    }
}

impl<S: NamedService> NamedService for WithCredentials<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S> Service<http::Request<tonic::body::Body>> for WithCredentials<S>
where
    S: Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let headers: Vec<(HeaderName, HeaderValue)> = FORWARDED
            .iter()
            .flat_map(|name| {
                req.headers()
                    .get_all(*name)
                    .iter()
                    .map(|v| (HeaderName::from_static(name), v.clone()))
            })
            .collect();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(CREDENTIALS.scope(headers, async move { inner.call(req).await }))
    }
}
