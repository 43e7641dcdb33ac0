//! End to end: `ferromq admin` against the real server, and the configuration contract of
//! `ferromq standalone` (exit 2 naming the bad field).

mod support;

use std::process::Command;

use ferromq_proto::v2::Code;
use support::*;

#[test]
fn topics_can_be_created_updated_listed_described_and_deleted() {
    let s = Server::start(&[]);
    for (name, kind) in [
        ("n1", "normal"),
        ("f1", "fifo"),
        ("d1", "delay"),
        ("x1", "transaction"),
    ] {
        let t = s.admin_json(&["topic", "create", name, "--type", kind, "--queues", "3"]);
        assert_eq!(t["type"], kind);
        assert_eq!(t["queues"], 3);
    }
    let dup = s.admin(&["topic", "create", "n1", "--queues", "3"]);
    assert!(!dup.status.success(), "creating an existing topic fails");
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let bad = s.admin(&["topic", "create", "bad name", "--queues", "3"]);
    assert!(!bad.status.success());

    let list = s.admin_json(&["topic", "list"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["d1", "f1", "n1", "x1"]);

    let t = s.admin_json(&["topic", "update", "n1", "--queues", "5", "--perm", "r"]);
    assert_eq!(t["queues"], 5);
    assert_eq!(t["perm"], "r");
    let shrink = s.admin(&["topic", "update", "n1", "--queues", "2"]);
    assert!(!shrink.status.success(), "queues never shrink");
    let d = s.admin_json(&["topic", "describe", "n1"]);
    assert_eq!(d["queue_offsets"].as_array().map(Vec::len), Some(5));

    let yaml = s.admin(&["topic", "describe", "f1", "-o", "yaml"]);
    assert!(String::from_utf8_lossy(&yaml.stdout).contains("type: fifo"));
    let table = s.admin(&["topic", "list"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("x1") && l.contains("transaction")),
        "{text}"
    );

    s.admin_json(&["topic", "delete", "d1"]);
    let gone = s.admin(&["topic", "describe", "d1"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"));
}

#[tokio::test]
async fn groups_show_offsets_lag_and_accept_settings() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 2);
    let mut c = s.client().await;
    for i in 0..4 {
        let mut m = message("t", &format!("G{i}"), b"x");
        m.system_properties.as_mut().unwrap().queue_id = i % 2;
        send_ok(&mut c, m).await;
    }
    let got = receive_n(&mut c, receive_request("g", "t", 1, 60_000, 2_000, "*"), 1).await;
    assert_eq!(ack(&mut c, "g", "t", &got[0]).await, Code::Ok);
    let d = s.admin_json(&["group", "describe", "g"]);
    let queues = d["queues"].as_array().expect("queues");
    assert_eq!(queues.len(), 2, "{d}");
    let max: i64 = queues
        .iter()
        .map(|q| q["max_offset"].as_i64().unwrap())
        .sum();
    assert_eq!(max, 4);
    assert_eq!(d["lag"], 3, "four sent, one acked: {d}");
    let g = s.admin_json(&["group", "update", "g", "--max-attempts", "5"]);
    assert_eq!(g["max_attempts"], 5);
    let dlq = s.admin_json(&["topic", "describe", "%DLQ%g"]);
    assert_eq!(
        dlq["queues"], 1,
        "a retry policy brings its dead-letter topic: {dlq}"
    );
    let list = s.admin_json(&["group", "list"]);
    assert_eq!(list[0]["name"], "g");
    assert_eq!(list[0]["max_attempts"], 5);
    assert!(!s
        .admin(&["group", "describe", "never-seen"])
        .status
        .success());
    // Metrics carry the lag and the traffic.
    let (code, body) = http_get(s.http_port, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains("ferromq_consumer_lag_messages{group=\"g\",topic=\"t\"} 3"),
        "{body}"
    );
    assert!(
        body.contains("ferromq_messages_in_total{topic=\"t\"} 4"),
        "{body}"
    );
    assert!(body.contains("ferromq_rpc_duration_seconds_count{method=\"SendMessage\"}"));
    assert_eq!(http_get(s.http_port, "/healthz").map(|r| r.0), Some(200));
}

#[test]
fn bad_configuration_exits_2_naming_the_field() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("standalone")
            .arg("--data-dir")
            .arg(dir.path())
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--grpc-addr", "not-an-address"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("grpc-addr"), "{err}");
    let (code, err) = run(
        &[],
        &[
            ("FERROMQ_HTTP_ADDR", "nope"),
            ("FERROMQ_GRPC_ADDR", "127.0.0.1:0"),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("http-addr"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferromq.toml");
    std::fs::write(&file, "max-body-size = \"lots\"\n").unwrap();
    let (code, err) = run(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("max-body-size"), "{err}");
}

#[test]
fn config_file_and_environment_are_honoured() {
    let grpc = free_port();
    let http = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ferromq.toml");
    std::fs::write(
        &file,
        format!("grpc-addr = \"127.0.0.1:{grpc}\"\nauto-create-topics = true\n"),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("standalone")
        .arg("--config")
        .arg(&file)
        .env("FERROMQ_DATA_DIR", dir.path().join("data"))
        .env("FERROMQ_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("FERROMQ_REMOTING_ADDR", "off")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while http_get(http, "/readyz").map(|r| r.0) != Some(200) {
        assert!(std::time::Instant::now() < deadline, "not ready");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(dir.path().join("data").exists(), "FERROMQ_DATA_DIR used");
    let out = Command::new(BIN)
        .args([
            "admin",
            "--server",
            &format!("127.0.0.1:{grpc}"),
            "topic",
            "list",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "grpc-addr from the file used");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
