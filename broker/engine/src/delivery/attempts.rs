//! Receive attempts of push consumers: a retry of a receive whose answer was lost carries the
//! same attempt id, and must get the same messages back (under the same handles) instead of new
//! ones, or those would stay invisible to everybody until their time ran out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Delivery;

/// How long the messages of a receive attempt are remembered for a retry.
const ATTEMPT_MEMORY: Duration = Duration::from_secs(120);

/// (group, topic, client id + attempt id) of a push consumer's receive.
type AttemptKey = (String, String, String);

/// A delivery remembered for a retried receive attempt.
#[derive(Debug, Clone, Copy)]
pub(super) struct Remembered {
    pub queue_id: u32,
    pub offset: u64,
    pub epoch: u64,
}

/// Recent receive attempts: (group, topic, attempt) -> what they got.
#[derive(Debug, Default)]
pub(super) struct Attempts {
    map: Mutex<HashMap<AttemptKey, (Instant, Vec<Remembered>)>>,
}

impl Attempts {
    /// Remembers what attempt `attempt` handed out (forgetting attempts that are too old).
    pub fn remember(&self, group: &str, topic: &str, attempt: &str, deliveries: &[Delivery]) {
        let now = Instant::now();
        let mut map = self.map.lock();
        map.retain(|_, (at, _)| now.duration_since(*at) < ATTEMPT_MEMORY);
        let remembered = deliveries
            .iter()
            .map(|d| Remembered {
                queue_id: d.handle.queue_id,
                offset: d.handle.offset,
                epoch: d.handle.epoch,
            })
            .collect();
        map.insert(
            (group.to_string(), topic.to_string(), attempt.to_string()),
            (now, remembered),
        );
    }

    /// What a recent attempt with this id handed out, if any.
    pub fn recall(&self, group: &str, topic: &str, attempt: &str) -> Option<Vec<Remembered>> {
        let map = self.map.lock();
        let (at, remembered) =
            map.get(&(group.to_string(), topic.to_string(), attempt.to_string()))?;
        (at.elapsed() < ATTEMPT_MEMORY).then(|| remembered.clone())
    }
}
