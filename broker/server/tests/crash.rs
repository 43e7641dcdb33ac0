//! End to end: kill -9 under load. Every message whose send was acknowledged is delivered
//! after the restart, and acked-and-committed consumption is not lost.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferromq_proto::v2::Code;
use support::*;

#[tokio::test]
async fn acked_sends_survive_sigkill_under_load() {
    let mut s = Server::start(&[]);
    s.create_topic("load", "normal", 4);
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut producers = Vec::new();
    for p in 0..4 {
        let acked = acked.clone();
        let mut c = s.client().await;
        producers.push(tokio::spawn(async move {
            let mut failed = 0u32;
            for i in 0..100_000u32 {
                let id = format!("p{p}-{i}");
                let mut m = message("load", &id, id.as_bytes());
                m.system_properties.as_mut().unwrap().queue_id = (i % 4) as i32;
                match c
                    .send_message(ferromq_proto::v2::SendMessageRequest { messages: vec![m] })
                    .await
                {
                    Ok(r) if code_of(&r.get_ref().status) == Code::Ok => {
                        acked.lock().unwrap().insert(id);
                    }
                    // Indeterminate or refused: not counted; once the server is gone, stop.
                    _ => {
                        failed += 1;
                        if failed > 3 {
                            break;
                        }
                    }
                }
            }
        }));
    }
    // Let load build up, then kill the server without warning.
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.lock().unwrap().len() < 500 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill9();
    for p in producers {
        let _ = p.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 500,
        "too little load before the kill ({} acked): the test would prove nothing",
        acked.len()
    );

    s.spawn();
    let mut c = s.client().await;
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut empty_rounds = 0;
    while Instant::now() < deadline && empty_rounds < 3 {
        let r = receive(&mut c, "drain", "load", 64, 60_000, 1_000).await;
        if r.messages.is_empty() {
            empty_rounds += 1;
            continue;
        }
        empty_rounds = 0;
        for m in &r.messages {
            seen.insert(String::from_utf8_lossy(&m.body).into_owned());
            assert_eq!(ack(&mut c, "drain", "load", m).await, Code::Ok);
        }
    }
    let lost: Vec<&String> = acked.difference(&seen).take(20).collect();
    assert!(
        lost.is_empty(),
        "{} acked, {} consumed, {} missing (first 20: {lost:?})",
        acked.len(),
        seen.len(),
        acked.difference(&seen).count()
    );
}
