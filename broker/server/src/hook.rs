//! A gRPC service with a hook around each of its calls: the tower plumbing (readiness, the
//! clone-and-swap tower asks for, the service name tonic routes by) written once, for the hooks
//! that need the raw HTTP request: [`crate::auth::Authenticate`] (headers and peer address) and
//! the proxy's credential forwarding ([`crate::roles::proxy::credentials::Forwarding`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use tonic::codegen::http;
use tonic::codegen::{Context, Poll, Service};
use tonic::server::NamedService;

pub type Body = tonic::body::Body;
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub type Answer = BoxFuture<Result<http::Response<Body>, Infallible>>;

/// What runs around each call of the wrapped service `S`.
pub trait Hook<S>: Clone + Send + 'static {
    /// Handles one call: usually adjusts the request and calls `inner`, or answers directly.
    /// `service` is the gRPC service name (`S::NAME`).
    fn call(&self, service: &'static str, req: http::Request<Body>, inner: S) -> Answer;
}

/// The service `inner` with `hook` around each call.
#[derive(Clone)]
pub struct Hooked<S, H> {
    hook: H,
    inner: S,
}

impl<S, H> Hooked<S, H> {
    pub fn new(hook: H, inner: S) -> Self {
        Hooked { hook, inner }
    }
}

impl<S: NamedService, H> NamedService for Hooked<S, H> {
    const NAME: &'static str = S::NAME;
}

impl<S, H> Service<http::Request<Body>> for Hooked<S, H>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    H: Hook<S>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Answer {
        // The ready service is the one to call; a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        self.hook.call(S::NAME, req, inner)
    }
}
