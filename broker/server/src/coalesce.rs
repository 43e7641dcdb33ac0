//! gRPC connections whose writes are gathered until their writer is done for the moment, so
//! that what one turn of an HTTP/2 connection writes leaves in one system call.
//!
//! Why: h2 hands a DATA frame's payload over without copying it (a vectored write of the frame
//! header and the payload) when it is larger than 256 bytes, and cannot encode another frame
//! until that write is done, so it writes in between. Every such payload is then a system call
//! of its own: a batched send's answer leaves in two (its HEADERS and DATA, then its trailers),
//! a consumer's receive in about one per four messages (measured: 0.25), an ack's
//! answer in one, a proxy's forwarded batch in one per 16 KiB frame.
//! On loopback, and on a node's own network, each write also runs the receiving side's TCP
//! processing and wake-up.
//!
//! How: a write is copied into a buffer (up to [`GATHER`] bytes) and reported done. A flush
//! first yields to the runtime once, waking its own task, so that what the connection's task
//! buffers on its next turn (the trailers, the next frame, other streams' answers) joins the
//! same write; the next flush writes everything. A flush yields again only while the buffer
//! has grown since the last yield and is still below [`GATHER`], so every flush is followed by
//! the write within a bounded number of turns. h2 flushes at the end of every turn of an open
//! connection (and before closing it), and the yield wakes the task for that turn, so nothing
//! stays behind. A write of [`GATHER`] bytes or more goes through without a copy, after what
//! was gathered before it.
//!
//! What it costs: one more copy of what is written (the kernel copies it anyway), one more
//! turn of the connection's task per flush, and a buffer per connection while it writes (kept
//! up to [`KEEP`] bytes between writes; a connection that is not writing holds at most that).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes gathered before they are written, whatever the writer does next.
pub const GATHER: usize = 64 << 10;

/// The largest buffer a connection keeps once what it gathered is written; a larger one is
/// freed (a consumer's burst or a proxy's batch grows it to [`GATHER`]).
pub const KEEP: usize = 8 << 10;

/// A byte stream whose writes are gathered until a flush (see the module docs).
pub struct Coalesced<T> {
    inner: T,
    /// Bytes accepted and not yet written; `out[sent..]` is what is left of them.
    out: Vec<u8>,
    sent: usize,
    /// How much was gathered when a flush last yielded, if one did since the last write.
    yielded_at: Option<usize>,
}

impl<T> Coalesced<T> {
    pub fn new(inner: T) -> Coalesced<T> {
        Coalesced {
            inner,
            out: Vec::new(),
            sent: 0,
            yielded_at: None,
        }
    }

    fn gathered(&self) -> usize {
        self.out.len() - self.sent
    }
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Writes everything gathered, before anything else may go out.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if self.out.capacity() > KEEP {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        self.sent = 0;
        self.yielded_at = None;
        Poll::Ready(Ok(()))
    }

    fn poll_gather(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum::<usize>();
        if self.gathered() + len > GATHER {
            ready!(self.poll_drain(cx))?;
        }
        if len >= GATHER {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        self.out.reserve(len);
        for b in bufs {
            self.out.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_gather(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_gather(cx, bufs)
    }

    /// Vectored writes are gathered by copying, so they cost no more than one slice.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let gathered = me.gathered();
        let grew = me.yielded_at.is_none_or(|at| gathered > at);
        if gathered > 0 && gathered < GATHER && grew {
            me.yielded_at = Some(gathered);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.inner).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Coalesced<T> {
    type ConnectInfo = T::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// A connector for tonic channels (`Endpoint::connect_with_connector_lazy`): hyper's own
/// [`HttpConnector`] (name resolution, Nagle's algorithm off), its TCP stream then gathering
/// its writes ([`Coalesced`]). tonic lays the endpoint's TLS, when it has one, over the gathered
/// stream, and applies its connect timeout.
#[derive(Debug, Clone)]
pub struct Connector(HttpConnector);

impl Default for Connector {
    fn default() -> Connector {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        Connector(http)
    }
}

impl tonic::codegen::Service<tonic::codegen::http::Uri> for Connector {
    type Response = TokioIo<Coalesced<tokio::net::TcpStream>>;
    type Error = <HttpConnector as tonic::codegen::Service<tonic::codegen::http::Uri>>::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            let stream = connecting.await?.into_inner();
            Ok(TokioIo::new(Coalesced::new(stream)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::future::poll_fn;
    use std::task::Waker;

    /// A writer that takes at most `step` bytes per write and, when `stall` says so, answers
    /// Pending once before taking any; it records every write it took.
    struct Wire {
        writes: Vec<Vec<u8>>,
        step: usize,
        stalls: Vec<bool>,
        flushes: usize,
        shut: bool,
    }

    impl Wire {
        fn new(step: usize, stalls: Vec<bool>) -> Wire {
            Wire {
                writes: Vec::new(),
                step,
                stalls,
                flushes: 0,
                shut: false,
            }
        }
        fn bytes(&self) -> Vec<u8> {
            self.writes.concat()
        }
    }

    impl AsyncWrite for Wire {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let me = self.get_mut();
            if me.stalls.pop().unwrap_or(false) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(me.step);
            me.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().shut = true;
            Poll::Ready(Ok(()))
        }
    }

    fn poll<R>(f: impl FnOnce(&mut Context<'_>) -> Poll<R>) -> Poll<R> {
        let mut cx = Context::from_waker(Waker::noop());
        f(&mut cx)
    }

    #[test]
    fn a_flush_yields_once_and_then_writes_what_the_next_turn_added_in_one_write() {
        let mut c = Coalesced::new(Wire::new(usize::MAX, Vec::new()));
        let head = [io::IoSlice::new(b"headers+"), io::IoSlice::new(b"data")];
        assert!(matches!(
            poll(|cx| Pin::new(&mut c).poll_write_vectored(cx, &head)),
            Poll::Ready(Ok(12))
        ));
        assert!(
            poll(|cx| Pin::new(&mut c).poll_flush(cx)).is_pending(),
            "the first flush yields"
        );
        assert!(c.inner.writes.is_empty());
        // The connection's next turn adds the trailers and flushes again.
        assert!(matches!(
            poll(|cx| Pin::new(&mut c).poll_write(cx, b"+trailers")),
            Poll::Ready(Ok(9))
        ));
        assert!(
            poll(|cx| Pin::new(&mut c).poll_flush(cx)).is_pending(),
            "it grew: one more turn"
        );
        assert!(matches!(
            poll(|cx| Pin::new(&mut c).poll_flush(cx)),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(c.inner.writes, vec![b"headers+data+trailers".to_vec()]);
        assert_eq!(c.inner.flushes, 1);
        // Nothing gathered: a flush goes straight through.
        assert!(matches!(
            poll(|cx| Pin::new(&mut c).poll_flush(cx)),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(c.inner.writes.len(), 1);
    }

    #[test]
    fn a_large_write_goes_through_after_what_was_gathered_and_big_buffers_are_freed() {
        let mut c = Coalesced::new(Wire::new(usize::MAX, Vec::new()));
        assert!(poll(|cx| Pin::new(&mut c).poll_write(cx, &[1u8; KEEP * 2])).is_ready());
        let big = vec![2u8; GATHER];
        assert!(matches!(
            poll(|cx| Pin::new(&mut c).poll_write(cx, &big)),
            Poll::Ready(Ok(n)) if n == GATHER
        ));
        let w = c.inner;
        assert_eq!(
            w.writes.len(),
            2,
            "the gathered bytes, then the large write"
        );
        assert_eq!(w.writes[0], vec![1u8; KEEP * 2]);
        assert_eq!(w.writes[1], big);
        assert_eq!(c.out.capacity(), 0, "a buffer over KEEP is not kept");
    }

    #[test]
    fn shutting_down_writes_what_was_gathered_first() {
        let mut c = Coalesced::new(Wire::new(3, vec![true, false, true]));
        assert!(poll(|cx| Pin::new(&mut c).poll_write(cx, b"goaway frame")).is_ready());
        let mut polls = 0;
        while poll(|cx| Pin::new(&mut c).poll_shutdown(cx)).is_pending() {
            polls += 1;
            assert!(polls < 10);
        }
        assert_eq!(c.inner.bytes(), b"goaway frame");
        assert!(c.inner.shut);
    }

    proptest! {
        /// Whatever the sizes of the writes, where the flushes fall and how little the wire
        /// takes per write, the wire gets exactly the bytes written, in order, and a flush
        /// polled to completion leaves nothing behind.
        #[test]
        fn every_byte_arrives_in_order(
            ops in proptest::collection::vec((0usize..3 * GATHER / 2, any::<bool>()), 1..40),
            step in 1usize..70_000,
            stalls in proptest::collection::vec(any::<bool>(), 0..200),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut c = Coalesced::new(Wire::new(step, stalls));
                let mut want = Vec::new();
                for (i, (len, flush)) in ops.into_iter().enumerate() {
                    let data: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
                    let mut at = 0;
                    while at < data.len() {
                        let n = poll_fn(|cx| Pin::new(&mut c).poll_write(cx, &data[at..])).await.unwrap();
                        at += n;
                    }
                    want.extend_from_slice(&data);
                    if flush {
                        poll_fn(|cx| Pin::new(&mut c).poll_flush(cx)).await.unwrap();
                        prop_assert_eq!(c.gathered(), 0);
                        prop_assert_eq!(c.inner.bytes(), want.clone());
                    }
                }
                poll_fn(|cx| Pin::new(&mut c).poll_flush(cx)).await.unwrap();
                prop_assert_eq!(c.inner.bytes(), want);
                Ok(())
            })?;
        }
    }
}
