//! The proxy's RocketMQ service as tonic serves it: SendMessage, the hot path, is taken from the
//! raw request bytes ([`super::raw`]), ReceiveMessage answers with the broker's raw answer
//! bytes ([`super::raw_receive`]), AckMessage goes both ways as bytes ([`super::raw_ack`]);
//! every other method goes to the generated server.
//!
//! [`Front`] sits where the generated `MessagingServiceServer` would, under the same service
//! name, so the router, the serve loop and every connection setting stay the ones all roles
//! share. A send still runs in the same [`crate::rpc::unary`] wrapper as every other call (span,
//! metrics), and a request that does not decode gets tonic's own answer, as before.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use ferromq_proto::v2::messaging_service_server::MessagingServiceServer;
use tonic::codegen::http;
use tonic::codegen::{BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use super::raw::{PeekedSend, RawCodec, ACK_PATH, SEND_PATH};
use super::raw_ack::PeekedAck;
use super::raw_receive::{RawReceived, ServeCodec, RECEIVE_PATH};
use super::ProxyApi;
use crate::hook::Body;
use crate::rpc::BoxStream;

/// The proxy's messaging service: raw SendMessage in front of the generated server.
#[derive(Clone)]
pub struct Front {
    api: Arc<ProxyApi>,
    generated: MessagingServiceServer<ProxyApi>,
    max_message: usize,
}

impl Front {
    pub fn new(api: ProxyApi, max_message: usize) -> Front {
        let generated = MessagingServiceServer::new(api.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        Front {
            api: Arc::new(api),
            generated,
            max_message,
        }
    }
}

impl NamedService for Front {
    const NAME: &'static str = <MessagingServiceServer<ProxyApi> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for Front {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The generated server is always ready, and so is the send path.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let max = self.max_message;
        let raw = match req.uri().path() {
            SEND_PATH => Some(RawMethod::Send),
            ACK_PATH => Some(RawMethod::Ack),
            _ => None,
        };
        if let Some(method) = raw {
            let unary = RawUnary(self.api.clone(), method);
            return Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(RawCodec)
                    .apply_max_message_size_config(Some(max), Some(max));
                Ok(grpc.unary(unary, req).await)
            });
        }
        match req.uri().path() {
            RECEIVE_PATH => {
                let receive = RawReceive(self.api.clone());
                Box::pin(async move {
                    let mut grpc = tonic::server::Grpc::new(ServeCodec)
                        .apply_max_message_size_config(Some(max), Some(max));
                    Ok(grpc.server_streaming(receive, req).await)
                })
            }
            _ => self.generated.call(req),
        }
    }
}

/// The unary methods served from raw bytes.
#[derive(Debug, Clone, Copy)]
enum RawMethod {
    /// SendMessage ([`super::raw`]).
    Send,
    /// AckMessage ([`super::raw_ack`]).
    Ack,
}

/// A raw unary method of the proxy's API.
struct RawUnary(Arc<ProxyApi>, RawMethod);

impl tonic::server::UnaryService<Bytes> for RawUnary {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let (api, method) = (self.0.clone(), self.1);
        Box::pin(async move {
            let (md, ext, raw) = req.into_parts();
            let metrics = api.metrics.clone();
            // Each request is read before the wrapper, like the generated server's decoding:
            // no span, no metrics for one that does not decode.
            let bytes = match method {
                RawMethod::Send => {
                    let req = Request::from_parts(md, ext, PeekedSend::read(raw)?);
                    crate::rpc::unary(&metrics, "SendMessage", req, |md, r| async move {
                        api.send_raw(&md, r).await
                    })
                    .await?
                    .map(|a| a.bytes)
                }
                RawMethod::Ack => {
                    let req = Request::from_parts(md, ext, PeekedAck::read(raw)?);
                    crate::rpc::unary(&metrics, "AckMessage", req, |md, r| async move {
                        api.ack_raw(&md, r).await
                    })
                    .await?
                    .map(|a| a.bytes)
                }
            };
            Ok(bytes)
        })
    }
}

/// ReceiveMessage with the answer's messages passed through undecoded.
struct RawReceive(Arc<ProxyApi>);

impl tonic::server::ServerStreamingService<ferromq_proto::v2::ReceiveMessageRequest>
    for RawReceive
{
    type Response = RawReceived;
    type ResponseStream = BoxStream<RawReceived>;
    type Future = BoxFuture<Response<BoxStream<RawReceived>>, Status>;

    fn call(&mut self, req: Request<ferromq_proto::v2::ReceiveMessageRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move {
            let metrics = api.metrics.clone();
            crate::rpc::streaming(metrics, "ReceiveMessage", req, |md, r| async move {
                api.receive_message(&md, r).await
            })
            .await
        })
    }
}
