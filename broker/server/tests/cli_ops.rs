//! End to end with the real binary: `ferromq send` and `ferromq consume`, and the day-two admin
//! commands (offset resets, group deletion, dead letters) moving what a real consumer receives
//! next. The consumer is a RocketMQ 5 client speaking gRPC to the real server.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ferromq_proto::v2::{self, Code};
use support::*;

/// Runs `ferromq ARGS` against `s` (FERROMQ_SERVER), with `stdin` as its standard input.
fn run(s: &Server, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("FERROMQ_SERVER", s.addr())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferromq");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("ferromq runs")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "ferromq failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect()
}

#[test]
fn send_and_consume_round_trip_and_ack_what_was_printed() {
    let s = Server::start(&[]);
    s.create_topic("orders", "normal", 2);
    let ids = ok(run(
        &s,
        &[
            "send",
            "--topic",
            "orders",
            "--tag",
            "new",
            "--key",
            "batch-7",
            "--property",
            "region=eu",
        ],
        Some("first\nsecond\nthird\n"),
    ));
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 3, "one id per line sent: {ids:?}");
    ok(run(
        &s,
        &[
            "send",
            "-t",
            "orders",
            "--key-separator",
            ":",
            "--body",
            "cust-9:fourth",
        ],
        None,
    ));

    // Two of four, then the rest: what was printed was acked and never comes back.
    let first = ok(run(
        &s,
        &[
            "consume",
            "-t",
            "orders",
            "-g",
            "console",
            "--max-messages",
            "2",
        ],
        None,
    ));
    assert_eq!(first.lines().count(), 2, "{first}");
    let rest = ok(run(
        &s,
        &[
            "consume",
            "-t",
            "orders",
            "-g",
            "console",
            "--timeout",
            "2s",
            "--format",
            "json",
        ],
        None,
    ));
    let rest = json_lines(&rest);
    assert_eq!(rest.len(), 2, "{rest:?}");
    let mut bodies: Vec<String> = first.lines().map(str::to_string).collect();
    bodies.extend(rest.iter().map(|m| m["body"].as_str().unwrap().to_string()));
    bodies.sort();
    assert_eq!(bodies, ["first", "fourth", "second", "third"]);
    for m in &rest {
        assert_eq!(m["topic"], "orders");
        assert_eq!(m["delivery_attempt"], 1);
        if m["body"] == "fourth" {
            assert_eq!(m["keys"], serde_json::json!(["cust-9"]));
        } else {
            assert_eq!(m["tag"], "new");
            assert_eq!(m["keys"], serde_json::json!(["batch-7"]));
            assert_eq!(m["properties"]["region"], "eu");
            assert!(ids.contains(&m["message_id"].as_str().unwrap()));
        }
    }
    let again = ok(run(
        &s,
        &[
            "consume",
            "-t",
            "orders",
            "-g",
            "console",
            "--timeout",
            "1s",
        ],
        None,
    ));
    assert!(again.is_empty(), "every printed message was acked: {again}");
    let g = s.admin_json(&["group", "describe", "console"]);
    assert_eq!(g["lag"], 0, "{g}");
    assert_eq!(g["online"], 0, "the consumer said goodbye: {g}");

    // A tag filter: only matching messages are printed.
    ok(run(
        &s,
        &["send", "-t", "orders", "--tag", "a", "--body", "A"],
        None,
    ));
    ok(run(
        &s,
        &["send", "-t", "orders", "--tag", "b", "--body", "B"],
        None,
    ));
    let only_b = ok(run(
        &s,
        &[
            "consume",
            "-t",
            "orders",
            "-g",
            "only-b",
            "--tag",
            "b",
            "--timeout",
            "2s",
        ],
        None,
    ));
    assert_eq!(only_b.trim(), "B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_offset_moves_a_live_consumers_next_delivery() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 1);
    let mut c = s.client().await;
    for i in 0..5 {
        send_ok(
            &mut c,
            message("t", &format!("M{i}"), format!("m{i}").as_bytes()),
        )
        .await;
    }
    // A gap in store time between m4 and m5 for --to-datetime.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let between = now_ms();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 5..7 {
        send_ok(
            &mut c,
            message("t", &format!("M{i}"), format!("m{i}").as_bytes()),
        )
        .await;
    }
    let all = drain_all(&mut c, "g", "t").await;
    assert_eq!(all.len(), 7);

    let next = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            receive(&mut c, "g", "t", 1, 30_000, 300)
                .await
                .bodies()
                .into_iter()
                .next()
        }
    };
    let admin = |args: &[&str]| {
        let mut a = vec!["admin", "group", "reset-offset", "g"];
        a.extend_from_slice(args);
        a.extend(["-o", "json"]);
        serde_json::from_str::<serde_json::Value>(&ok(run(&s, &a, None))).expect("json")
    };

    // The default is a dry run: the plan, and nothing moves.
    let plan = admin(&["--to-offset", "2"]);
    assert_eq!(plan["executed"], false, "{plan}");
    assert_eq!(plan["queues"][0]["current"], 7);
    assert_eq!(plan["queues"][0]["new"], 2);
    assert_eq!(next(&mut c).await, None, "a dry run changes nothing");

    let done = admin(&["--to-offset", "2", "--execute"]);
    assert_eq!(done["executed"], true, "{done}");
    let m = receive(&mut c, "g", "t", 1, 30_000, 2_000).await;
    assert_eq!(
        m.bodies(),
        ["m2"],
        "the live consumer continues at offset 2"
    );
    assert_eq!(attempt(&m.messages[0]), 1);
    assert_eq!(ack(&mut c, "g", "t", &m.messages[0]).await, Code::Ok);

    // In flight across a reset: the old handle is stale, the message comes again.
    let held = receive(&mut c, "g", "t", 1, 30_000, 2_000).await;
    assert_eq!(held.bodies(), ["m3"]);
    admin(&["--to-datetime", &between.to_string(), "--execute"]);
    assert_eq!(
        ack(&mut c, "g", "t", &held.messages[0]).await,
        Code::InvalidReceiptHandle,
        "a delivery from before the reset cannot be acked"
    );
    assert_eq!(
        next(&mut c).await.as_deref(),
        Some("m5"),
        "first message after the time"
    );

    admin(&["--to-earliest", "--execute", "--topic", "t"]);
    assert_eq!(next(&mut c).await.as_deref(), Some("m0"));

    admin(&["--to-latest", "--execute"]);
    assert_eq!(next(&mut c).await, None, "nothing left after --to-latest");
    send_ok(&mut c, message("t", "M7", b"m7")).await;
    assert_eq!(
        next(&mut c).await.as_deref(),
        Some("m7"),
        "only new messages"
    );

    let unknown = run(
        &s,
        &["admin", "group", "reset-offset", "never", "--to-earliest"],
        None,
    );
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("never"), "{}", stderr(&unknown));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_resend_makes_a_dead_letter_deliverable_again_for_its_group_only() {
    let s = Server::start(&[]);
    s.create_topic("jobs", "normal", 1);
    s.admin_json(&["group", "update", "workers", "--max-attempts", "1"]);
    let mut c = s.client().await;
    send_ok(&mut c, message("jobs", "J1", b"poison")).await;
    send_ok(&mut c, message("jobs", "J2", b"fine")).await;
    // Another group consumed both long ago.
    let audit = receive_n(
        &mut c,
        receive_request("audit", "jobs", 2, 30_000, 1_000, "*"),
        2,
    )
    .await;
    assert_eq!(audit.len(), 2);
    for m in &audit {
        assert_eq!(ack(&mut c, "audit", "jobs", m).await, Code::Ok);
    }

    // "workers" fails J1 once (its only attempt) and acks J2.
    let got = receive_n(
        &mut c,
        receive_request("workers", "jobs", 2, 1_000, 1_000, "*"),
        2,
    )
    .await;
    assert_eq!(got.len(), 2);
    let fine = got.iter().find(|m| m.body == b"fine"[..]).expect("J2");
    assert_eq!(ack(&mut c, "workers", "jobs", fine).await, Code::Ok);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // The next receive finds J1 exhausted and dead-letters it.
    assert!(receive(&mut c, "workers", "jobs", 2, 1_000, 500)
        .await
        .messages
        .is_empty());

    let list = s.admin_json(&["dlq", "list", "workers"]);
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["pending"], 1, "{list}");
    let letter = &list["letters"][0];
    assert_eq!(letter["message_id"], "J1");
    assert_eq!(letter["origin_topic"], "jobs");
    assert_eq!(letter["attempts"], 1);
    assert_eq!(letter["resent"], false);

    let bad = s.admin(&["dlq", "resend", "workers", "--id", "NOPE"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("NOPE"), "{}", stderr(&bad));

    let resent = s.admin_json(&["dlq", "resend", "workers"]);
    assert_eq!(resent.as_array().map(Vec::len), Some(1), "{resent}");
    assert_eq!(resent[0]["topic"], "jobs");

    // Deliverable again to "workers", as a first attempt with its id and body.
    let again = receive(&mut c, "workers", "jobs", 4, 30_000, 2_000).await;
    assert_eq!(again.bodies(), ["poison"]);
    let sp = again.messages[0].system_properties.as_ref().unwrap();
    assert_eq!(sp.message_id, "J1");
    assert_eq!(attempt(&again.messages[0]), 1);
    assert_eq!(
        ack(&mut c, "workers", "jobs", &again.messages[0]).await,
        Code::Ok
    );
    // The group that had it already does not get it twice.
    assert!(drain_all(&mut c, "audit", "jobs").await.is_empty());

    let list = s.admin_json(&["dlq", "list", "workers"]);
    assert_eq!(list["letters"][0]["resent"], true, "{list}");
    assert_eq!(list["pending"], 0);
    let twice = s.admin_json(&["dlq", "resend", "workers"]);
    assert_eq!(twice.as_array().map(Vec::len), Some(0), "resent once only");
    // By id, explicitly, it goes again.
    let by_id = s.admin_json(&["dlq", "resend", "workers", "--id", "J1"]);
    assert_eq!(by_id[0]["message_id"], "J1");
    assert_eq!(
        receive(&mut c, "workers", "jobs", 4, 30_000, 2_000)
            .await
            .bodies(),
        ["poison"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_delete_forgets_offsets_and_waits_for_consumers_to_leave() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 1);
    let mut c = s.client().await;
    send_ok(&mut c, message("t", "A", b"a")).await;
    assert_eq!(drain_all(&mut c, "g", "t").await, ["a"]);
    let hb = c
        .heartbeat(v2::HeartbeatRequest {
            group: res("g"),
            client_type: v2::ClientType::SimpleConsumer as i32,
        })
        .await
        .expect("heartbeat")
        .into_inner();
    assert_eq!(code_of(&hb.status), Code::Ok);
    let busy = s.admin(&["group", "delete", "g"]);
    assert!(!busy.status.success());
    assert!(stderr(&busy).contains("online"), "{}", stderr(&busy));

    c.notify_client_termination(v2::NotifyClientTerminationRequest { group: res("g") })
        .await
        .expect("goodbye");
    s.admin_json(&["group", "delete", "g"]);
    let groups = s.admin_json(&["group", "list"]);
    assert_eq!(groups, serde_json::json!([]), "{groups}");
    // Without its offset the group starts over at the oldest message.
    assert_eq!(drain_all(&mut c, "g", "t").await, ["a"]);
    let gone = s.admin(&["group", "delete", "nobody"]);
    assert!(!gone.status.success());
}

#[test]
fn nonsensical_values_are_refused_before_anything_is_sent() {
    let s = Server::start(&[]);
    for (args, names) in [
        (
            &["admin", "topic", "create", "t", "--queues", "0"][..],
            "--queues",
        ),
        (
            &["admin", "topic", "create", "t", "--queues", "5000"],
            "--queues",
        ),
        (&["admin", "topic", "create", "bad name"], "bad name"),
        (
            &["admin", "group", "update", "g", "--max-attempts", "0"],
            "--max-attempts",
        ),
        (&["admin", "group", "reset-offset", "g"], "--to-earliest"),
        (
            &[
                "admin",
                "group",
                "reset-offset",
                "g",
                "--to-datetime",
                "soon",
            ],
            "--to-datetime",
        ),
        (
            &["admin", "group", "reset-offset", "g", "--to-offset", "-1"],
            "--to-offset",
        ),
        (
            &[
                "admin",
                "group",
                "reset-offset",
                "g",
                "--to-latest",
                "--dry-run",
                "--execute",
            ],
            "--execute",
        ),
        (
            &["consume", "-t", "t", "--max-messages", "0"],
            "--max-messages",
        ),
        (&["consume", "-t", "t", "--timeout", "0s"], "--timeout"),
        (&["send", "-t", "t", "--property", "novalue"], "--property"),
        (
            &["bench", "produce", "--topic", "t", "--queues", "0"],
            "--queues",
        ),
        (
            &["bench", "produce", "--topic", "t", "--rate", "0"],
            "--rate",
        ),
        (
            &["bench", "consume", "--topic", "t", "--clients", "0"],
            "--clients",
        ),
    ] {
        let out = run(&s, args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(names), "{args:?}: {}", stderr(&out));
    }
    // Refused by ferromq itself (two message types), also before anything is sent.
    let both = run(
        &s,
        &[
            "send",
            "-t",
            "t",
            "--message-group",
            "g",
            "--priority",
            "1",
            "--body",
            "x",
        ],
        None,
    );
    assert!(!both.status.success());
    assert_eq!(s.admin_json(&["topic", "list"]), serde_json::json!([]));

    // --server and -o anywhere on the line; an unreachable server is one clear sentence.
    let list = Command::new(BIN)
        .args([
            "admin",
            "topic",
            "list",
            "-o",
            "json",
            "--server",
            &s.addr(),
        ])
        .output()
        .unwrap();
    assert_eq!(ok(list).trim(), "[]");
    let down = Command::new(BIN)
        .args(["admin", "topic", "list", "--server", "127.0.0.1:1"])
        .output()
        .unwrap();
    let err = stderr(&down);
    assert_eq!(down.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot connect to 127.0.0.1:1"), "{err}");
    assert_eq!(err.matches("tcp connect error").count(), 0, "{err}");

    // topic create --if-not-exists.
    s.create_topic("t", "normal", 2);
    let again = s.admin_json(&["topic", "create", "t", "--if-not-exists"]);
    assert_eq!(again["queues"], 2, "the existing topic, unchanged: {again}");
}

#[test]
fn completions_and_man_pages_are_generated() {
    let bash = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bash.stdout).contains("reset-offset"));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["man", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let page = std::fs::read_to_string(dir.path().join("ferromq-admin-group-reset-offset.1"))
        .expect("a page per command");
    assert!(page.contains("to\\-datetime"), "{page}");
}

#[test]
fn drain_wait_follows_the_group_until_nothing_is_left() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 1);
    ok(run(&s, &["send", "-t", "t", "--body", "x"], None));
    ok(run(
        &s,
        &["consume", "-t", "t", "-g", "g", "--max-messages", "1"],
        None,
    ));
    // Group g has one message left to consume: the drain waits for it.
    ok(run(&s, &["send", "-t", "t", "--body", "y"], None));
    let mut drain = Command::new(BIN)
        .args([
            "admin",
            "cluster",
            "drain",
            "standalone",
            "--wait",
            "--timeout",
            "60s",
        ])
        .args(["-o", "json", "--server", &s.addr()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.admin_json(&["cluster", "list"])[0]["state"] != "read-only" {
        assert!(std::time::Instant::now() < deadline, "the drain starts");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        drain.try_wait().unwrap().is_none(),
        "one message is left: still waiting"
    );
    let send = run(&s, &["send", "-t", "t", "--body", "z"], None);
    assert!(!send.status.success(), "a draining server takes no sends");
    let y = ok(run(
        &s,
        &["consume", "-t", "t", "-g", "g", "--max-messages", "1"],
        None,
    ));
    assert_eq!(y.trim(), "y");
    let out = drain.wait_with_output().unwrap();
    let d: serde_json::Value = serde_json::from_str(&ok(out)).expect("json");
    assert_eq!(d["drained"], true, "{d}");
    assert_eq!(d["remaining_messages"], 0);
    s.admin_json(&["cluster", "undrain", "standalone"]);
}
