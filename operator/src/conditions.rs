//! Status conditions (`Ready`, `Progressing`, `Degraded`) following the Kubernetes API
//! conventions: `lastTransitionTime` moves only when `status` flips, and every condition
//! carries the generation it was computed from.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition type: the resource serves as specified.
pub const READY: &str = "Ready";
/// Condition type: the operator is moving the cluster towards the spec.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: something needs a human; the reason and message say what.
pub const DEGRADED: &str = "Degraded";

/// A condition as computed by a reconcile, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Condition type.
    pub type_: &'static str,
    /// `True` / `False`.
    pub status: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message telling the user what to do.
    pub message: String,
}

impl Desired {
    /// Shorthand constructor.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Desired {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The conditions of a resource that needs no human: `ready` and `progressing` as given,
/// `Degraded=False` with reason `AsExpected`.
pub fn not_degraded(ready: Desired, progressing: Desired) -> Vec<Desired> {
    vec![
        ready,
        progressing,
        Desired::new(DEGRADED, false, "AsExpected", ""),
    ]
}

/// Merges `desired` into `existing`: keeps `lastTransitionTime` of conditions whose status did
/// not change, so an unchanged world produces an identical list (and no status write).
pub fn merge(
    existing: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" }.to_string();
            let previous = existing.iter().find(|c| c.type_ == d.type_);
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The current time as a Kubernetes `Time`.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The condition of `type_` in `new` if it is `True` and was not already `True` for the same
/// reason in `old`: what deserves one Warning Event, not one per reconcile.
pub fn newly_true<'a>(
    old: &[Condition],
    new: &'a [Condition],
    type_: &str,
) -> Option<&'a Condition> {
    find(new, type_)
        .filter(|c| c.status == "True")
        .filter(|c| find(old, type_).is_none_or(|o| o.status != "True" || o.reason != c.reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn unchanged_status_keeps_transition_time() {
        let d = vec![Desired::new(READY, true, "Ready", "all good")];
        let first = merge(&[], &d, Some(1), &t(100));
        let second = merge(&first, &d, Some(1), &t(200));
        assert_eq!(first, second);
    }

    #[test]
    fn flipped_status_moves_transition_time_and_generation() {
        let first = merge(
            &[],
            &[Desired::new(READY, true, "Ready", "")],
            Some(1),
            &t(100),
        );
        let second = merge(
            &first,
            &[Desired::new(READY, false, "StorageNotReady", "x")],
            Some(2),
            &t(200),
        );
        assert_eq!(second[0].last_transition_time, t(200));
        assert_eq!(second[0].observed_generation, Some(2));
        assert_eq!(second[0].status, "False");
    }

    #[test]
    fn newly_true_fires_once_per_reason() {
        let degraded = |status, reason| {
            merge(
                &[],
                &[Desired::new(DEGRADED, status, reason, "")],
                Some(1),
                &t(1),
            )
        };
        let fine = degraded(false, "AsExpected");
        let drain = degraded(true, "DrainFailed");
        let volume = degraded(true, "VolumeExpansionNotAllowed");
        assert_eq!(
            newly_true(&fine, &drain, DEGRADED).map(|c| c.reason.as_str()),
            Some("DrainFailed")
        );
        assert_eq!(
            newly_true(&[], &drain, DEGRADED).map(|c| c.reason.as_str()),
            Some("DrainFailed")
        );
        assert!(newly_true(&drain, &drain, DEGRADED).is_none());
        assert!(newly_true(&drain, &volume, DEGRADED).is_some());
        assert!(newly_true(&drain, &fine, DEGRADED).is_none());
    }
}
