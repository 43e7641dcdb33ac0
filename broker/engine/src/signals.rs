//! Signals for async waiters: a topic got a new message (long polls wake), and how far the
//! commit log is readable (a send waits until its own message is, for read-your-writes).
//! Both are fed from the store's dispatcher thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::Notify;

/// Wakes long-polling receivers of a topic when the store dispatches a message to it.
#[derive(Debug, Default)]
pub struct Wakeups {
    topics: RwLock<HashMap<String, Arc<Notify>>>,
}

impl Wakeups {
    pub fn for_topic(&self, topic: &str) -> Arc<Notify> {
        if let Some(n) = self.topics.read().get(topic) {
            return n.clone();
        }
        self.topics
            .write()
            .entry(topic.to_string())
            .or_default()
            .clone()
    }

    /// Called from the store's dispatcher thread.
    pub fn wake(&self, topic: &str) {
        if let Some(n) = self.topics.read().get(topic) {
            n.notify_waiters();
        }
    }
}

/// How far the store's dispatcher has made the commit log readable, for async waiters.
#[derive(Debug, Default)]
pub struct Dispatched {
    end: AtomicU64,
    notify: Notify,
}

impl Dispatched {
    /// Records that every record below `end` is readable (called from the dispatcher).
    pub fn advance(&self, end: u64) {
        self.end.fetch_max(end, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Waits (without holding a thread) until every record below `end` is readable by
    /// consumers, or `timeout` passes.
    pub async fn wait(&self, end: u64, timeout: Duration) -> bool {
        // Most often the writer dispatched its own records before it asks: then no waiter is
        // registered (a lock on the waiter list, twice) and no clock is read.
        if self.end.load(Ordering::Acquire) >= end {
            return true;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.end.load(Ordering::Acquire) >= end {
                return true;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return self.end.load(Ordering::Acquire) >= end,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_when_its_offset_is_dispatched_or_times_out() {
        let d = Arc::new(Dispatched::default());
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { d2.wait(100, Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        d.advance(100);
        assert!(waiter.await.expect("join"));
        assert!(!d.wait(200, Duration::from_millis(10)).await, "timed out");
    }
}
