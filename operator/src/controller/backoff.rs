//! Per-object exponential back-off for failed reconciles: 5s, 10s, 20s ... capped at 5 minutes,
//! reset by the next successful reconcile of the same object. Keeps a broken object from
//! hammering the API server while a healthy one keeps its normal pace.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// First retry delay.
pub const BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const CAP: Duration = Duration::from_secs(300);

/// Consecutive failures per object key (`kind/namespace/name`).
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A panic elsewhere cannot leave the counters inconsistent; keep using them.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a failure of `key` and returns how long to wait before retrying it.
    pub fn failed(&self, key: &str) -> Duration {
        let mut map = self.lock();
        let n = map.entry(key.to_string()).or_insert(0);
        let delay = BASE.saturating_mul(1u32 << (*n).min(16)).min(CAP);
        *n = n.saturating_add(1);
        delay
    }

    /// Forgets the failures of `key` after it reconciled successfully.
    pub fn succeeded(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// The back-off key of an object.
pub fn key<K: kube::Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets_on_success() {
        let b = Backoff::default();
        let delays: Vec<u64> = (0..9).map(|_| b.failed("Broker/ns/a").as_secs()).collect();
        assert_eq!(delays, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(
            b.failed("Broker/ns/other").as_secs(),
            5,
            "objects back off independently"
        );
        b.succeeded("Broker/ns/a");
        assert_eq!(b.failed("Broker/ns/a").as_secs(), 5);
    }
}
