//! Consumer offsets written by offset-based consumers (4.x remoting clients keep their own
//! position per queue and commit it) and by administrators (reset), kept consistent with pop
//! delivery, which uses the same stored offset as its committed position.
//!
//! ## One offset per (group, topic, queue)
//! The store holds one offset per queue and group: every message below it was consumed by some
//! member of the group. A 4.x consumer and a 5.x (pop) consumer using the same group name share
//! it. A commit from an offset-based consumer means the messages below it are consumed, so pop
//! delivery skips them too (its unsettled entries below the offset are dropped, its read
//! position moves up). A commit below where pop delivery already is does not send pop delivery
//! back (its consumers would get messages again for nothing); the stored offset then reads what
//! was written last, and a restart resumes from there, which can deliver messages again but
//! never skips one that no member consumed. A reset (an administrator's) moves both styles.

use super::queue::QueueState;
use super::Deliveries;
use crate::error::EngineError;

impl Deliveries {
    /// Records an offset-based consumer's commit: messages of the queue below `offset` are
    /// consumed by `group`. In memory at once; durable within a second (the store's flusher),
    /// or now with `durable`.
    pub fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
        durable: bool,
    ) -> Result<(), EngineError> {
        if let Some(st) = self.known_queue(group, topic, queue_id) {
            let mut st = st.lock();
            skip_below(&mut st, offset);
            st.committed = offset;
        }
        self.write_offset(group, topic, queue_id, offset, durable)
    }

    /// Moves `group`'s position in a queue to `offset`, backwards or forwards, for every member
    /// (an administrator's reset): pop delivery forgets what it handed out there and reads on
    /// from `offset`. Durable when it returns.
    pub fn reset_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<(), EngineError> {
        if let Some(st) = self.known_queue(group, topic, queue_id) {
            let mut st = st.lock();
            st.unsettled.clear();
            st.next_offset = offset;
            st.committed = offset;
        }
        self.write_offset(group, topic, queue_id, offset, true)
    }

    fn write_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
        durable: bool,
    ) -> Result<(), EngineError> {
        if self.journal.is_some() {
            self.moved
                .lock()
                .insert((group.to_string(), topic.to_string(), queue_id), offset);
        }
        if durable {
            self.store
                .offsets()
                .commit(group, topic, queue_id, offset)?;
            self.journal_offsets()?;
        } else {
            self.store.offsets().set(group, topic, queue_id, offset);
        }
        Ok(())
    }
}

/// Drops what lies below `offset` from a pop queue state: consumed by the group already.
fn skip_below(st: &mut QueueState, offset: u64) {
    st.unsettled.retain(|off, _| *off >= offset);
    if st.next_offset < offset {
        st.next_offset = offset;
    }
}

#[cfg(test)]
mod tests {
    use super::super::ReceiveSpec;
    use super::*;
    use ferromq_store::{
        MessageType, NewMessage, Permission, Store, StoreConfig, TagFilter, TopicConfig,
    };
    use std::sync::Arc;
    use std::time::Duration;

    fn store(dir: &std::path::Path) -> Arc<Store> {
        let s = Store::open(StoreConfig::new(dir)).expect("open");
        s.topics()
            .create(TopicConfig {
                name: "t".into(),
                queues: 1,
                message_type: MessageType::Normal,
                permission: Permission::ReadWrite,
                retention_ms: None,
            })
            .expect("topic");
        for i in 0..4 {
            let mut m = NewMessage {
                topic: "t".into(),
                body: vec![b'a' + i].into(),
                ..Default::default()
            };
            m.properties
                .insert(ferromq_store::PROP_MSG_ID.into(), format!("m{i}"));
            let r = s.append(&m).expect("append");
            assert!(s.wait_dispatched(r.phys_offset + u64::from(r.size), Duration::from_secs(5)));
        }
        s
    }

    fn receive(d: &Deliveries, filter: &TagFilter) -> Vec<u64> {
        d.receive(&ReceiveSpec {
            group: "g",
            topic: "t",
            queues: vec![0],
            batch: 10,
            invisible: Duration::from_secs(30),
            filter,
            fifo: false,
            priority: false,
            max_attempts: 5,
            renew_for: None,
            attempt: None,
        })
        .expect("receive")
        .deliveries
        .iter()
        .map(|d| d.message.queue_offset)
        .collect()
    }

    #[test]
    fn a_pull_commit_is_the_groups_offset_and_pop_delivery_skips_below_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let d = Deliveries::new(s.clone(), None);
        d.commit_offset("g", "t", 0, 2, true).expect("commit");
        assert_eq!(s.offsets().get("g", "t", 0), Some(2));
        let all = TagFilter::parse("*");
        assert_eq!(
            receive(&d, &all),
            vec![2, 3],
            "a new pop state starts there"
        );
        // Pop delivery holds 2 and 3; a pull consumer commits 3: message 2 is consumed.
        d.commit_offset("g", "t", 0, 3, false).expect("commit");
        assert_eq!(s.offsets().get("g", "t", 0), Some(3));
    }

    #[test]
    fn a_reset_sends_pop_delivery_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        let d = Deliveries::new(s.clone(), None);
        let all = TagFilter::parse("*");
        assert_eq!(receive(&d, &all), vec![0, 1, 2, 3]);
        d.reset_offset("g", "t", 0, 1).expect("reset");
        assert_eq!(s.offsets().get("g", "t", 0), Some(1));
        assert_eq!(
            receive(&d, &all),
            vec![1, 2, 3],
            "delivered again from the reset offset"
        );
    }
}
