//! Prometheus metrics of the controllers: one family per measurement, labelled by kind, plus
//! `ferromq_operator_resource_ready`, read at scrape time from the controllers' caches, so an
//! alert can name each Nameserver, Broker or Topic that is not Ready (and a deleted one
//! disappears with its cache entry).

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Mutex;

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

/// The Ready condition of one resource, as the operator last wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub ready: bool,
}

impl Readiness {
    /// The readiness of `obj` from its status conditions (not Ready without a status).
    pub fn of<K: kube::Resource<DynamicType = ()>>(
        kind: &'static str,
        obj: &K,
        conditions: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
    ) -> Readiness {
        Readiness {
            kind,
            namespace: obj.meta().namespace.clone().unwrap_or_default(),
            name: obj.meta().name.clone().unwrap_or_default(),
            ready: conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == crate::conditions::READY && c.status == "True"),
        }
    }
}

/// Lists the resources of one kind at scrape time.
pub type ReadinessSource = Box<dyn Fn() -> Vec<Readiness> + Send + Sync>;

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabel, Counter>,
    errors: Family<ErrorLabel, Counter>,
    durations: Family<KindLabel, Histogram>,
    readiness: Mutex<Vec<ReadinessSource>>,
}

/// `ferromq_operator_resource_ready` for one scrape.
#[derive(Debug)]
struct ReadyCollector(Vec<Readiness>);

impl Collector for ReadyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(0i64);
        let mut metric = encoder.encode_descriptor(
            "ferromq_operator_resource_ready",
            "1 while a FerroMQ resource's Ready condition is True, else 0, by kind, namespace and name.",
            None,
            gauge.metric_type(),
        )?;
        for r in &self.0 {
            let labels = [
                ("kind", r.kind.to_string()),
                ("namespace", r.namespace.clone()),
                ("name", r.name.clone()),
            ];
            ConstGauge::new(i64::from(r.ready)).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
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
            readiness: Mutex::new(Vec::new()),
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

    /// Reports the readiness of what `source` lists in `ferromq_operator_resource_ready`.
    pub fn watch_readiness(&self, source: ReadinessSource) {
        self.readiness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(source);
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut items: Vec<Readiness> = self
            .readiness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|f| f())
            .collect();
        items.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
        let mut scraped = Registry::default();
        if !items.is_empty() {
            scraped.register_collector(Box::new(ReadyCollector(items)));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
            .and_then(|()| prometheus_client::encoding::text::encode_registry(&mut out, &scraped))
            .and_then(|()| prometheus_client::encoding::text::encode_eof(&mut out))
            .is_err()
        {
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

    #[test]
    fn readiness_is_read_at_scrape_time() {
        let m = Metrics::default();
        let state = std::sync::Arc::new(std::sync::Mutex::new(vec![Readiness {
            kind: "Broker",
            namespace: "prod".into(),
            name: "demo".into(),
            ready: false,
        }]));
        let s2 = state.clone();
        m.watch_readiness(Box::new(move || s2.lock().unwrap().clone()));
        let text = m.render();
        assert!(
            text.contains("ferromq_operator_resource_ready{kind=\"Broker\",namespace=\"prod\",name=\"demo\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("# HELP ferromq_operator_resource_ready "),
            "{text}"
        );
        state.lock().unwrap()[0].ready = true;
        assert!(m.render().contains("name=\"demo\"} 1"));
        state.lock().unwrap().clear();
        assert!(
            !m.render().contains("name=\"demo\""),
            "a deleted resource disappears"
        );
        assert!(m.render().ends_with("# EOF\n"));
    }

    /// The chart's alerts and dashboards name only operator families this operator exports.
    #[test]
    fn the_charts_queries_name_families_the_operator_exports() {
        let m = Metrics::default();
        m.observe("Broker", Duration::from_millis(3));
        m.error("Broker", "Test");
        m.watch_readiness(Box::new(|| {
            vec![Readiness {
                kind: "Topic",
                namespace: "n".into(),
                name: "t".into(),
                ready: true,
            }]
        }));
        let text = m.render();
        let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ferromq");
        let mut sources = vec![chart.join("files/prometheus-rules.yaml")];
        for e in std::fs::read_dir(chart.join("dashboards")).expect("dashboards") {
            sources.push(e.expect("entry").path());
        }
        let mut found = 0;
        for path in sources {
            let body = std::fs::read_to_string(&path).expect("readable");
            let mut rest = body.as_str();
            while let Some(at) = rest.find("ferromq_operator_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    text.contains(&format!("\n{name}{{")) || text.contains(&format!("\n{name} ")),
                    "{} queries {name}, which the operator does not export:\n{text}",
                    path.display()
                );
                found += 1;
                rest = &rest[at + name.len()..];
            }
        }
        assert!(
            found >= 2,
            "the rules and the overview use the readiness family"
        );
    }
}
