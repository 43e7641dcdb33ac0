//! Background upkeep of deliveries, run every second by the server: renewing push consumers'
//! deliveries while their client lives, and dead-lettering expired messages that used up their
//! deliveries even when nobody receives from their queue.

use std::time::Instant;

use tracing::warn;

use super::queue::EntryState;
use super::Deliveries;

impl Deliveries {
    /// One upkeep pass. `alive` says whether a client id still holds a session.
    pub fn reap(&self, alive: &dyn Fn(&str) -> bool) {
        let now = Instant::now();
        for (k, st) in self.all_queues() {
            let mut st = st.lock();
            for e in st.unsettled.values_mut() {
                if let (EntryState::Invisible { until, .. }, Some(r)) = (&mut e.state, &e.renewal) {
                    // Renew once a third of the invisibility is left, so a renewal is never late.
                    if *until > now
                        && *until - now < r.invisible / 3
                        && now < r.give_up_at
                        && alive(&r.client_id)
                    {
                        *until = now + r.invisible;
                    }
                }
            }
            if st.max_attempts == 0 {
                continue;
            }
            let max = st.max_attempts;
            let due: Vec<u64> = st
                .unsettled
                .iter()
                .filter(|(_, e)| e.is_exhausted(now, max))
                .map(|(o, _)| *o)
                .collect();
            if due.is_empty() {
                continue;
            }
            for off in due {
                if let Err(e) = self.dead_letter(&k.group, &k.topic, k.queue_id, off, &mut st) {
                    warn!(group = %k.group, topic = %k.topic, error = %e, "dead-lettering failed; will retry");
                    break;
                }
            }
            if let Err(e) = self.store_low_water(&k.group, &k.topic, k.queue_id, &mut st, true) {
                warn!(group = %k.group, topic = %k.topic, error = %e, "offset commit failed; will retry");
            }
        }
    }
}
