//! The chart's alerting rules (`charts/ferromq/files/prometheus-rules.yaml`) and Grafana
//! dashboards (`charts/ferromq/dashboards/*.json`) query only metrics and labels the binaries
//! really export: a standalone server and a small cluster (a name server running the
//! replication controller, a replicated group of two members, a proxy) are started as real
//! processes, given a little traffic of every kind, and scraped; every `rocketmq_*` and
//! `ferromq_*` name an expression uses must be in a scrape, with every label the expression
//! groups, matches or prints. The operator's own families (`ferromq_operator_*`) are checked by
//! the operator's tests and suite 70, which scrape the operator.
//!
//! The exposition is parsed here too: every family has `# HELP` and `# TYPE`, and every
//! sample belongs to a typed family.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferromq_proto::v2::Code;
use support::{
    client, delay_message, free_port, http_get, message, now_ms, receive, send, send_ok,
    tx_message, Server, BIN,
};

/// Labels Prometheus adds to every scraped sample (target labels), or the chart's PodMonitor
/// adds from pod labels; queries may use them whatever the process exports.
const TARGET_LABELS: [&str; 9] = [
    "namespace",
    "pod",
    "job",
    "instance",
    "container",
    "endpoint",
    "service",
    "cluster",
    "node_type",
];

/// Sample name -> label names seen on it, over every scrape.
type Exposed = BTreeMap<String, BTreeSet<String>>;

/// Parses a text exposition; fails on a family without HELP or TYPE or a sample without family.
fn parse_exposition(text: &str, into: &mut Exposed) {
    let (mut helped, mut typed) = (BTreeSet::new(), BTreeMap::new());
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a text");
            assert!(!help.trim().is_empty(), "empty HELP for {name}");
            helped.insert(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            typed.insert(name.to_string(), kind.to_string());
        } else if line.starts_with('#') || line.is_empty() {
            continue;
        } else {
            let (name, labels) = sample(line);
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .find(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                .unwrap_or(&name)
                .to_string();
            assert!(typed.contains_key(&family), "sample {line:?} has no TYPE");
            into.entry(name).or_default().extend(labels);
        }
    }
    let typed: BTreeSet<String> = typed.into_keys().collect();
    assert_eq!(helped, typed, "families with HELP and with TYPE differ");
}

/// A sample line's name and label names (values may hold escaped quotes and commas).
fn sample(line: &str) -> (String, Vec<String>) {
    let Some(open) = line.find('{') else {
        let name = line.split(' ').next().unwrap_or_default();
        return (name.to_string(), Vec::new());
    };
    let name = line[..open].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[open + 1..];
    while let Some(eq) = rest.find("=\"") {
        labels.push(rest[..eq].trim_start_matches(',').to_string());
        let bytes = rest.as_bytes();
        let mut i = eq + 2;
        while bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        rest = &rest[i + 1..];
        if rest.starts_with('}') {
            break;
        }
    }
    (name, labels)
}

/// What one query needs: the metric names it reads and every label it names.
#[derive(Debug, Default)]
struct Needs {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// Reads the names of a PromQL expression (or a Grafana `label_values(...)` query): metric
/// names, label names in matchers, in `by`/`without`/`on`/`ignoring`/`group_*` lists and the
/// label argument of `label_values`. String literals and range durations are skipped.
fn promql_needs(expr: &str, needs: &mut Needs) {
    let b = expr.as_bytes();
    let mut i = 0;
    let mut pending_list = false;
    let mut label_values_depth: Option<usize> = None;
    let mut depth = 0usize;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'[' {
            while i < b.len() && b[i] != b']' {
                i += 1;
            }
            i += 1;
        } else if c == b'{' {
            // Matchers: label names before =, !=, =~, !~.
            i += 1;
            while i < b.len() && b[i] != b'}' {
                if b[i] == b'"' {
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                    continue;
                }
                if ident_char(b[i]) {
                    let start = i;
                    while i < b.len() && ident_char(b[i]) {
                        i += 1;
                    }
                    needs.labels.insert(expr[start..i].to_string());
                    continue;
                }
                i += 1;
            }
            i += 1;
        } else if c == b'(' {
            depth += 1;
            if pending_list {
                pending_list = false;
                let end = expr[i..].find(')').map_or(b.len(), |e| i + e);
                for l in expr[i + 1..end].split(',') {
                    let l = l.trim();
                    if !l.is_empty() {
                        needs.labels.insert(l.to_string());
                    }
                }
                depth -= 1;
                i = end + 1;
            } else {
                i += 1;
            }
        } else if c == b')' {
            depth = depth.saturating_sub(1);
            i += 1;
        } else if c == b',' && label_values_depth == Some(depth) {
            // label_values(metric{...}, label): the second argument is a label.
            let end = expr[i..].find(')').map_or(b.len(), |e| i + e);
            needs.labels.insert(expr[i + 1..end].trim().to_string());
            label_values_depth = None;
            i = end;
        } else if ident_char(c) && !c.is_ascii_digit() {
            let start = i;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            match word {
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right" => {
                    // A list follows, unless group_left/right stands alone.
                    pending_list = expr[i..].trim_start().starts_with('(');
                }
                "label_values" => label_values_depth = Some(depth + 1),
                w if w.starts_with("rocketmq_") || w.starts_with("ferromq_") => {
                    needs.metrics.insert(w.to_string());
                }
                _ => {}
            }
        } else {
            i += 1;
        }
    }
}

/// Labels a template prints: `{{ $labels.x }}` (rules) and `{{x}}` (legends).
fn template_labels(text: &str, needs: &mut Needs) {
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}") else {
            break;
        };
        let inner = rest[open + 2..open + close].trim();
        let name = inner.strip_prefix("$labels.").unwrap_or(inner);
        if !name.is_empty() && name.bytes().all(ident_char) {
            needs.labels.insert(name.to_string());
        }
        rest = &rest[open + close + 2..];
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every query of the rules and the dashboards: (where it is, what it needs).
fn queries() -> Vec<(String, Needs)> {
    let mut out = Vec::new();
    let rules_path = repo().join("charts/ferromq/files/prometheus-rules.yaml");
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&rules_path).expect("rules file"))
            .expect("rules are YAML");
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("named rule");
            let mut needs = Needs::default();
            promql_needs(rule["expr"].as_str().expect("expr"), &mut needs);
            if let Some(annotations) = rule["annotations"].as_mapping() {
                for v in annotations.values() {
                    template_labels(v.as_str().unwrap_or_default(), &mut needs);
                }
            }
            out.push((format!("rule {name}"), needs));
        }
    }
    let dir = repo().join("charts/ferromq/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dashboards dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "four dashboards: {files:?}");
    for f in files {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).expect("dashboard")).expect("JSON");
        let file = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        for v in d["templating"]["list"].as_array().expect("templating") {
            if let Some(q) = v["query"]["query"].as_str().or(v["query"].as_str()) {
                if v["type"] == "query" {
                    let mut needs = Needs::default();
                    promql_needs(q, &mut needs);
                    out.push((format!("{file} variable {}", v["name"]), needs));
                }
            }
        }
        for p in d["panels"].as_array().expect("panels") {
            for t in p["targets"].as_array().into_iter().flatten() {
                let mut needs = Needs::default();
                promql_needs(t["expr"].as_str().expect("expr"), &mut needs);
                template_labels(t["legendFormat"].as_str().unwrap_or_default(), &mut needs);
                out.push((format!("{file} panel {}", p["title"]), needs));
            }
        }
    }
    out
}

/// A real `ferromq` process of the cluster, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[String], log: &Path) -> Proc {
    let log = std::fs::File::create(log).expect("log file");
    Proc(
        Command::new(BIN)
            .args(args)
            .env("FERROMQ_LOG", "info")
            .env("FERROMQ_CLUSTER_NAME", "contract")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ferromq"),
    )
}

fn wait_ready(http_port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if http_get(http_port, "/readyz").is_some_and(|(code, _)| code == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} not ready within 60s");
}

fn scrape(http_port: u16, into: &mut Exposed) -> String {
    let (code, text) = http_get(http_port, "/metrics").expect("metrics answer");
    assert_eq!(code, 200);
    parse_exposition(&text, into);
    text
}

/// Traffic of every kind on a standalone server: sends of each type, an error, deliveries
/// left unsettled, an ack, a dead letter.
async fn standalone_traffic(s: &Server) {
    s.create_topic("orders", "normal", 1);
    s.create_topic("reminders", "delay", 1);
    s.create_topic("payments", "transaction", 1);
    let mut c = s.client().await;
    for i in 0..5 {
        send_ok(&mut c, message("orders", &format!("M{i}"), b"order")).await;
    }
    send_ok(&mut c, delay_message("reminders", "D1", now_ms() + 600_000)).await;
    send_ok(&mut c, tx_message("payments", "T1")).await;
    let (code, _) = send(&mut c, message("no-such-topic", "X", b"x")).await;
    assert_ne!(code, Code::Ok, "a send to a missing topic is refused");
    let r = receive(&mut c, "billing", "orders", 3, 60_000, 2_000).await;
    assert_eq!(r.messages.len(), 3, "{r:?}");
    assert_eq!(
        support::ack(&mut c, "billing", "orders", &r.messages[0]).await,
        Code::Ok
    );
    assert_eq!(
        support::forward_to_dlq(&mut c, "billing", "orders", &r.messages[1]).await,
        Code::Ok
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_rules_and_dashboards_query_is_exported() {
    let mut exposed = Exposed::new();

    // A standalone server.
    let s = Server::start(&[]);
    standalone_traffic(&s).await;
    let standalone = scrape(s.http_port, &mut exposed);
    for want in [
        "rocketmq_messages_in_total{cluster=\"ferromq\",node_type=\"broker\"",
        "topic=\"orders\",message_type=\"normal\"} 5",
        "message_type=\"delay\"",
        "rocketmq_send_to_dlq_messages_total{cluster=\"ferromq\",node_type=\"broker\"",
        "response_code=\"topic_not_found\"",
        "ferromq_build_info{version=",
    ] {
        assert!(standalone.contains(want), "{want:?} missing:\n{standalone}");
    }

    // A cluster: name server with the replication controller, a group of two members, a proxy.
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let (ns_port, ns_http) = (free_port(), free_port());
    let ns_addr = format!("127.0.0.1:{ns_port}");
    let ns_data = d.join("ns");
    let _ns = spawn(
        &[
            "nameserver".into(),
            "--addr".into(),
            ns_addr.clone(),
            "--http-addr".into(),
            format!("127.0.0.1:{ns_http}"),
            "--controller-peers".into(),
            ns_addr.clone(),
            "--data-dir".into(),
            ns_data.display().to_string(),
        ],
        &d.join("ns.log"),
    );
    wait_ready(ns_http, "name server");
    let mut members = Vec::new();
    let mut member_http = Vec::new();
    for replica in 1..=2 {
        let (port, http) = (free_port(), free_port());
        members.push(spawn(
            &[
                "broker".into(),
                "--group".into(),
                "g1".into(),
                "--replica-id".into(),
                replica.to_string(),
                "--nameservers".into(),
                ns_addr.clone(),
                "--addr".into(),
                format!("127.0.0.1:{port}"),
                "--http-addr".into(),
                format!("127.0.0.1:{http}"),
                "--data-dir".into(),
                d.join(format!("g1-{replica}")).display().to_string(),
            ],
            &d.join(format!("g1-{replica}.log")),
        ));
        member_http.push(http);
    }
    let (proxy_port, proxy_http) = (free_port(), free_port());
    let _proxy = spawn(
        &[
            "proxy".into(),
            "--nameservers".into(),
            ns_addr.clone(),
            "--grpc-addr".into(),
            format!("127.0.0.1:{proxy_port}"),
            "--http-addr".into(),
            format!("127.0.0.1:{proxy_http}"),
        ],
        &d.join("proxy.log"),
    );
    wait_ready(proxy_http, "proxy");
    // A ready proxy may not have heard of the group's leader yet (the election and the next
    // route refresh take a moment): the topic is created once it has.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let topic = Command::new(BIN)
            .args(["admin", "--server", &format!("127.0.0.1:{proxy_port}")])
            .args([
                "topic", "create", "orders", "--type", "normal", "--queues", "1",
            ])
            .output()
            .expect("admin");
        // An earlier attempt may have created it before its answer was lost.
        if topic.status.success() || String::from_utf8_lossy(&topic.stderr).contains("exists") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&topic.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut c = client(proxy_port, "contract@1").await;
    // The group elects its leader and the follower joins the in-sync set within seconds.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, _) = send(&mut c, message("orders", "C1", b"through the proxy")).await;
        if code == Code::Ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no send through the proxy: {code:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = receive(&mut c, "billing", "orders", 1, 60_000, 2_000).await;
    assert_eq!(r.messages.len(), 1, "{r:?}");
    let proxy = scrape(proxy_http, &mut exposed);
    assert!(
        proxy.contains("rocketmq_rpc_latency_count{cluster=\"contract\",node_type=\"proxy\""),
        "{proxy}"
    );
    let nameserver = scrape(ns_http, &mut exposed);
    assert!(
        nameserver.contains("ferromq_controller_is_leader 1"),
        "{nameserver}"
    );
    // The leader reports its follower once the follower has fetched.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut round = Exposed::new();
        let texts: Vec<String> = member_http.iter().map(|p| scrape(*p, &mut round)).collect();
        if texts
            .iter()
            .any(|t| t.contains("ferromq_replication_follower_held_bytes{"))
        {
            for (k, v) in round {
                exposed.entry(k).or_default().extend(v);
            }
            assert!(
                texts.iter().any(|t| t.contains("node_id=\"g1\"")),
                "members are known by their group: {texts:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no follower progress: {texts:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Every query against what the processes exported.
    let mut problems = Vec::new();
    let queries = queries();
    assert!(
        queries.len() > 40,
        "rules and dashboards hold {} queries",
        queries.len()
    );
    for (place, needs) in &queries {
        let names: Vec<&String> = needs
            .metrics
            .iter()
            .filter(|m| !m.starts_with("ferromq_operator_"))
            .collect();
        for m in &names {
            if !exposed.contains_key(*m) {
                problems.push(format!("{place}: {m} is not exported"));
            }
        }
        if names.is_empty() {
            continue;
        }
        for l in &needs.labels {
            let on_one = names
                .iter()
                .any(|m| exposed.get(*m).is_some_and(|ls| ls.contains(l)));
            if !on_one && !TARGET_LABELS.contains(&l.as_str()) {
                problems.push(format!("{place}: no metric of {names:?} has label {l}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn queries_are_read_the_way_prometheus_reads_them() {
    let mut n = Needs::default();
    promql_needs(
        r#"sum by (namespace, consumer_group) (rate(rocketmq_send_to_dlq_messages_total{topic=~"a|b",x!="}"}[5m])) / on (pod) group_left ferromq_build_info"#,
        &mut n,
    );
    assert_eq!(
        n.metrics,
        BTreeSet::from([
            "rocketmq_send_to_dlq_messages_total".into(),
            "ferromq_build_info".into()
        ])
    );
    assert_eq!(
        n.labels,
        BTreeSet::from([
            "namespace".into(),
            "consumer_group".into(),
            "topic".into(),
            "x".into(),
            "pod".into()
        ])
    );
    let mut n = Needs::default();
    promql_needs(
        r#"label_values(rocketmq_consumer_lag_messages{cluster=~"$cluster"}, consumer_group)"#,
        &mut n,
    );
    assert!(n.labels.contains("consumer_group") && n.labels.contains("cluster"));
    template_labels(
        "{{ $labels.topic }} on {{node_id}} ({{ $value | humanize }})",
        &mut n,
    );
    assert!(n.labels.contains("topic") && n.labels.contains("node_id"));
    assert!(!n.labels.iter().any(|l| l.contains("value")));
    let (name, labels) = sample(r#"m_total{a="x\"},y",b="2"} 3"#);
    assert_eq!(
        (name.as_str(), labels),
        ("m_total", vec!["a".into(), "b".into()])
    );
}
