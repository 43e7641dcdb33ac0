//! Prometheus metrics of the controllers: one family per measurement, labelled by kind.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set: the custom resource kind a reconcile handled.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `Nameserver`, `Broker` or `Topic`.
    pub kind: String,
}

/// Label set: kind plus the error's condition reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// `Nameserver`, `Broker` or `Topic`.
    pub kind: String,
    /// [`crate::Error::reason`].
    pub reason: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabel, Counter>,
    errors: Family<ErrorLabel, Counter>,
    durations: Family<KindLabel, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ferromq_operator");
        let reconciles = Family::<KindLabel, Counter>::default();
        let errors = Family::<ErrorLabel, Counter>::default();
        let durations = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        registry.register(
            "reconciliations",
            "Reconciliations started",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            durations.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            durations,
        }
    }
}

impl Metrics {
    /// Counts a reconcile of `kind` that took `elapsed`.
    pub fn observe(&self, kind: &str, elapsed: Duration) {
        let l = KindLabel {
            kind: kind.to_string(),
        };
        self.reconciles.get_or_create(&l).inc();
        self.durations
            .get_or_create(&l)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a failed reconcile.
    pub fn error(&self, kind: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabel {
                kind: kind.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_families() {
        let m = Metrics::default();
        m.observe("Broker", Duration::from_millis(20));
        m.error("Broker", "KubernetesApiError");
        let text = m.render();
        assert!(
            text.contains("ferromq_operator_reconciliations_total{kind=\"Broker\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferromq_operator_reconcile_errors_total"),
            "{text}"
        );
        assert!(
            text.contains("ferromq_operator_reconcile_duration_seconds_bucket"),
            "{text}"
        );
    }
}
