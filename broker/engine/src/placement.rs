//! Which queue of a topic a message goes to.
//!
//! Official clients differ: the Java and Rust clients pick a queue from the route and fill
//! `queue_id`, the Python client leaves it at 0 whatever the topic has. Apache RocketMQ's proxy
//! ignores the client's choice and picks itself: the next queue in rotation, or for a message
//! with a message group (FIFO) a stable hash of the group, so one group keeps one queue (its
//! order) while many groups spread over all queues (their parallelism).
//!
//! FerroMQ keeps a client's choice when it makes one and picks the way the proxy does when it
//! does not. The wire cannot tell "queue 0" from "no queue" (proto3 `int32`), so a front door
//! passes 0 as no choice: a client that really chose queue 0 gets a queue of the same kind of
//! choice (rotation, or the same queue for the same message group every time). A queue the topic
//! does not have is refused, never wrapped onto another one.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::error::EngineError;

/// A stable hash of a message group (FNV-1a, 64 bits): the same group maps to the same queue
/// (and, through the proxy, the same broker group) on every node and after every restart.
pub fn key_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The hash a message group's queue is chosen by: [`key_hash`] mixed again (MurmurHash3's
/// 64-bit finalizer), because the proxy picks the broker group from `key_hash` itself and a
/// queue picked from the same bits would leave queues of each broker group unused (FNV-1a's
/// upper bits barely change between names that differ in their last characters, so they are
/// no substitute).
fn queue_hash(group: &str) -> u64 {
    let mut h = key_hash(group);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Per-topic rotation over queues for messages whose producer chose none.
#[derive(Debug, Default)]
pub struct Placement {
    next: Mutex<HashMap<String, u32>>,
}

impl Placement {
    /// The queue (of `queues`, at least 1) a message of `topic` goes to: `requested` when the
    /// producer chose one, else the message group's queue, else the next in rotation.
    pub fn choose(
        &self,
        topic: &str,
        queues: u32,
        requested: Option<u32>,
        message_group: Option<&str>,
    ) -> Result<u32, EngineError> {
        let queues = queues.max(1);
        if let Some(q) = requested {
            if q >= queues {
                return Err(EngineError::bad_request(format!(
                    "queue_id {q} does not exist: topic {topic} has {queues} queue(s), 0 to {}",
                    queues - 1
                )));
            }
            return Ok(q);
        }
        if let Some(g) = message_group.filter(|g| !g.is_empty()) {
            return Ok((queue_hash(g) % u64::from(queues)) as u32);
        }
        let mut next = self.next.lock();
        let n = next.entry(topic.to_string()).or_insert(0);
        let q = *n % queues;
        *n = n.wrapping_add(1);
        Ok(q)
    }

    /// Forgets a deleted topic's rotation.
    pub fn forget(&self, topic: &str) {
        self.next.lock().remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchosen_queues_rotate_per_topic_and_groups_stick() {
        let p = Placement::default();
        let a: Vec<u32> = (0..8)
            .map(|_| p.choose("a", 4, None, None).unwrap())
            .collect();
        assert_eq!(a, [0, 1, 2, 3, 0, 1, 2, 3]);
        // Another topic's sends in between do not skew a topic's rotation.
        let mixed: Vec<u32> = (0..4)
            .map(|_| {
                p.choose("b", 2, None, None).unwrap();
                p.choose("c", 2, None, None).unwrap()
            })
            .collect();
        assert_eq!(mixed, [0, 1, 0, 1]);
        let g = p.choose("a", 16, None, Some("order-7")).unwrap();
        for _ in 0..5 {
            assert_eq!(p.choose("a", 16, None, Some("order-7")).unwrap(), g);
        }
        let used: std::collections::BTreeSet<u32> = (0..200)
            .map(|i| {
                p.choose("f", 16, None, Some(&format!("group-{i}")))
                    .unwrap()
            })
            .collect();
        assert_eq!(used.len(), 16, "200 groups use every queue: {used:?}");
        // Through a proxy over 2 broker groups, each broker group's share still uses every queue.
        let on_first: std::collections::BTreeSet<u32> = (0..400)
            .map(|i| format!("group-{i}"))
            .filter(|g| key_hash(g).is_multiple_of(2))
            .map(|g| p.choose("f", 16, None, Some(&g)).unwrap())
            .collect();
        assert_eq!(on_first.len(), 16, "{on_first:?}");
    }

    #[test]
    fn a_chosen_queue_is_kept_and_one_the_topic_lacks_is_refused() {
        let p = Placement::default();
        assert_eq!(p.choose("a", 4, Some(3), None).unwrap(), 3);
        assert_eq!(p.choose("a", 4, Some(2), Some("g")).unwrap(), 2);
        let e = p.choose("a", 4, Some(4), None).unwrap_err();
        assert!(matches!(e, EngineError::BadRequest(_)), "{e:?}");
        assert!(e.to_string().contains("queue_id 4"), "{e}");
    }

    #[test]
    fn message_groups_hash_the_same_everywhere() {
        assert_eq!(key_hash("order-42"), key_hash("order-42"));
        assert_ne!(key_hash("order-42"), key_hash("order-43"));
    }
}
