//! Prometheus metrics of the server, rendered in the text exposition format by `/metrics`.
//!
//! Families: `ferromq_messages_in_total` / `ferromq_messages_out_total` and the matching
//! `_bytes_total` per topic, `ferromq_rpc_duration_seconds` per RPC (histogram; requests of the
//! remoting protocol as `remoting/<REQUEST_CODE>`), `ferromq_rpc_errors_total` per RPC and code
//! (the code of the protocol that answered), plus gauges computed at scrape time by the
//! caller (consumer lag, store size).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// A family computed at scrape time (a gauge, or a counter when named `_total`): (name, help, [(labels, value)]).
pub type Gauge<'a> = (&'a str, &'a str, Vec<(String, f64)>);

/// A gauge family whose name and help are computed: name, help, labelled values.
pub type OwnedGauge = (&'static str, &'static str, Vec<(String, f64)>);

/// Borrows owned families for [`Metrics::render`].
pub fn borrow_gauges(g: &[OwnedGauge]) -> Vec<Gauge<'_>> {
    g.iter().map(|(n, h, v)| (*n, *h, v.clone())).collect()
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// (family, label string) -> value
    counters: BTreeMap<(&'static str, String), u64>,
    rpc: BTreeMap<&'static str, Histogram>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    fn add(&self, family: &'static str, labels: String, v: u64) {
        *self.lock().counters.entry((family, labels)).or_insert(0) += v;
    }

    pub fn message_in(&self, topic: &str, bytes: usize) {
        let l = format!("topic=\"{}\"", escape(topic));
        self.add("ferromq_messages_in_total", l.clone(), 1);
        self.add("ferromq_message_bytes_in_total", l, bytes as u64);
    }

    pub fn message_out(&self, topic: &str, group: &str, bytes: usize) {
        let l = format!("topic=\"{}\",group=\"{}\"", escape(topic), escape(group));
        self.add("ferromq_messages_out_total", l.clone(), 1);
        self.add("ferromq_message_bytes_out_total", l, bytes as u64);
    }

    /// A call refused by authentication or authorization (`unauthenticated`, `forbidden`,
    /// `bad_request`).
    pub fn auth_refusal(&self, reason: &'static str) {
        self.add(
            "ferromq_auth_refusals_total",
            format!("reason=\"{reason}\""),
            1,
        );
    }

    /// Records one RocketMQ 5 RPC: OK and the empty receive's MESSAGE_NOT_FOUND are not errors.
    pub fn rpc(&self, method: &'static str, elapsed: Duration, code: i32) {
        let failed = code != ferromq_proto::v2::Code::Ok as i32
            && code != ferromq_proto::v2::Code::MessageNotFound as i32;
        self.call(method, elapsed, failed.then_some(code));
    }

    /// Records one request of any protocol (remoting methods are named `remoting/<CODE>`): its
    /// time, and its protocol's code when it failed.
    pub fn call(&self, method: &'static str, elapsed: Duration, error: Option<i32>) {
        let secs = elapsed.as_secs_f64();
        {
            let mut g = self.lock();
            let h = g.rpc.entry(method).or_default();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
        if let Some(code) = error {
            self.add(
                "ferromq_rpc_errors_total",
                format!("method=\"{method}\",code=\"{code}\""),
                1,
            );
        }
    }

    /// Renders every family; `gauges` are (family, help, [(labels, value)]) computed by the caller.
    pub fn render(&self, gauges: &[Gauge<'_>]) -> String {
        let g = self.lock();
        let mut out = String::new();
        let mut last = "";
        for ((family, labels), v) in &g.counters {
            if *family != last {
                let _ = writeln!(out, "# TYPE {family} counter");
                last = family;
            }
            let _ = writeln!(out, "{family}{{{labels}}} {v}");
        }
        if !g.rpc.is_empty() {
            let _ = writeln!(out, "# HELP ferromq_rpc_duration_seconds Time to answer a client RPC (streams: until the answer is complete).");
            let _ = writeln!(out, "# TYPE ferromq_rpc_duration_seconds histogram");
        }
        for (method, h) in &g.rpc {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ferromq_rpc_duration_seconds_bucket{{method=\"{method}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "ferromq_rpc_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "ferromq_rpc_duration_seconds_sum{{method=\"{method}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "ferromq_rpc_duration_seconds_count{{method=\"{method}\"}} {}",
                h.count
            );
        }
        for (family, help, values) in gauges {
            let _ = writeln!(out, "# HELP {family} {help}");
            // Families computed at scrape time may still be counters (a `_total` since start).
            let kind = if family.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# TYPE {family} {kind}");
            for (labels, v) in values {
                if labels.is_empty() {
                    let _ = writeln!(out, "{family} {v}");
                } else {
                    let _ = writeln!(out, "{family}{{{labels}}} {v}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.message_in("t", 10);
        m.message_in("t", 5);
        m.rpc("SendMessage", Duration::from_millis(3), 20000);
        let text = m.render(&[(
            "ferromq_store_size_bytes",
            "Bytes of commit log on disk.",
            vec![(String::new(), 42.0)],
        )]);
        assert!(
            text.contains("ferromq_messages_in_total{topic=\"t\"} 2"),
            "{text}"
        );
        assert!(text.contains("ferromq_message_bytes_in_total{topic=\"t\"} 15"));
        assert!(text.contains("ferromq_rpc_duration_seconds_count{method=\"SendMessage\"} 1"));
        assert!(text.contains("ferromq_store_size_bytes 42"));
    }
}
