//! [`Durable`]: the async wait for a flush, for appends made on an async worker
//! ([`super::Store::try_append`]). In sync mode the waiter joins the flusher's list like a
//! blocked thread does, so one flush wakes every waiter it covers (group commit) and no thread
//! is held meanwhile.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{FlushWaiter, FlushWake, Inner};
use crate::config::FlushMode;
use crate::error::{Result, StoreError};

/// Completes once the log below `end` is as durable as the flush mode promises (see
/// [`super::Store::durable`]).
pub struct Durable {
    pub(super) inner: Arc<Inner>,
    pub(super) end: u64,
}

impl Durable {
    fn done(&self) -> Option<Result<()>> {
        let i = &self.inner;
        if i.cfg.flush != FlushMode::Sync || i.log.flushed_pos() >= self.end {
            return Some(Ok(()));
        }
        if let Some(e) = i.stopped_error() {
            return Some(Err(e));
        }
        if i.shutdown.load(Ordering::Acquire) {
            // The flusher is gone or going; it flushed what it could on the way out.
            return Some(Err(StoreError::Stopped {
                cause: "store closed before the record was flushed".into(),
            }));
        }
        None
    }
}

impl Future for Durable {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Some(r) = self.done() {
            return Poll::Ready(r);
        }
        // Registered before the second check: a flush that completes in between either sees
        // this waiter in its list or is seen by the check (the list's mutex orders the two).
        self.inner.add_flush_waiter(FlushWaiter {
            end: self.end,
            wake: FlushWake::Task(cx.waker().clone()),
        });
        match self.done() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}
