//! Authentication and authorization scenarios (`FERROMQ_MODE=auth`, run by tests/suites/35-auth.sh against
//! `ferromq standalone --auth`): the official Rust client with right, wrong and absent credentials, and
//! against a topic or group its user's policy does not cover. Env: FERROMQ_AUTH_AK / FERROMQ_AUTH_SK (a
//! normal user), FERROMQ_AUTH_TOPIC_{OK,DENIED,OTHER}, FERROMQ_AUTH_GROUP_{OK,OTHER}.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::error::ClientError;
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};

use super::{all, err, report, server_code, Ctx, Outcome};

const SENT_OK: usize = 3;

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_default()
}

fn option(ctx: &Ctx, creds: Option<(&str, &str)>) -> ClientOption {
    let mut o = ctx.client_option();
    if let Some((ak, sk)) = creds {
        o.set_access_key(ak);
        o.set_secret_key(sk);
    }
    o
}

async fn send_with(ctx: &Ctx, creds: Option<(&str, &str)>, topic: &str) -> Result<String, ClientError> {
    let mut popt = ProducerOption::default();
    popt.set_topics(vec![topic.to_string()]);
    let mut p = Producer::new(popt, option(ctx, creds))?;
    p.start().await?;
    let msg = MessageBuilder::builder()
        .set_topic(topic)
        .set_body(b"should not be stored".to_vec())
        .set_tag("auth")
        .build()?;
    let r = p.send(msg).await.map(|r| r.message_id().to_string());
    let _ = p.shutdown().await;
    r
}

/// The call must be refused with `code` (the Rust client names the server's code, e.g. `UNAUTHORIZED`).
fn expect(code: &str, r: Result<String, ClientError>) -> Outcome {
    match r {
        Ok(id) => Err(format!("not refused: stored as {id}")),
        Err(e) => match server_code(&e) {
            Some(c) if c == code => Ok(()),
            other => Err(format!("refused with {other:?}, want {code}: {e}")),
        },
    }
}

async fn right_credentials(ctx: &Ctx, creds: (&str, &str), topic: &str, group: &str) -> Outcome {
    let mut popt = ProducerOption::default();
    popt.set_topics(vec![topic.to_string()]);
    let mut p = Producer::new(popt, option(ctx, Some(creds))).map_err(err)?;
    p.start().await.map_err(err)?;
    let mut ids = HashSet::new();
    for i in 0..SENT_OK {
        let msg = MessageBuilder::builder()
            .set_topic(topic)
            .set_body(format!("auth {i}").into_bytes())
            .set_tag("auth")
            .build()
            .map_err(err)?;
        ids.insert(p.send(msg).await.map_err(err)?.message_id().to_string());
    }
    let _ = p.shutdown().await;
    let mut copt = SimpleConsumerOption::default();
    copt.set_consumer_group(group);
    copt.set_topics(vec![topic.to_string()]);
    let mut c = SimpleConsumer::new(copt, option(ctx, Some(creds))).map_err(err)?;
    c.start().await.map_err(err)?;
    let mut got = HashSet::new();
    let end = Instant::now() + Duration::from_secs(30);
    while got != ids && Instant::now() < end {
        let batch = super::receive(&c, topic, &all(), 16, Duration::from_secs(30)).await;
        for m in batch {
            c.ack(&m).await.map_err(err)?;
            got.insert(m.message_id().to_string());
        }
    }
    let _ = c.shutdown().await;
    if got == ids {
        Ok(())
    } else {
        Err(format!("sent {}, received and acked {}", ids.len(), got.intersection(&ids).count()))
    }
}

async fn forbidden_group(ctx: &Ctx, creds: (&str, &str), topic: &str, group: &str) -> Outcome {
    let mut copt = SimpleConsumerOption::default();
    copt.set_consumer_group(group);
    copt.set_topics(vec![topic.to_string()]);
    let mut c = SimpleConsumer::new(copt, option(ctx, Some(creds))).map_err(err)?;
    let r = match c.start().await {
        Err(e) => Err(e),
        Ok(()) => c
            .receive_with(topic, &all(), 16, Duration::from_secs(30))
            .await
            .map(|v| format!("{} messages", v.len())),
    };
    let _ = c.shutdown().await;
    expect("FORBIDDEN", r)
}

pub async fn run(ctx: &Ctx) -> i32 {
    let (ak, sk) = (env("FERROMQ_AUTH_AK"), env("FERROMQ_AUTH_SK"));
    let wrong = format!("{sk}x");
    let topic = |k: &str| env(&format!("FERROMQ_AUTH_TOPIC_{k}"));
    let group = |k: &str| env(&format!("FERROMQ_AUTH_GROUP_{k}"));
    let creds = (ak.as_str(), sk.as_str());
    let mut failures = 0;
    let mut verdict = |name: &str, o: Outcome| match o {
        Ok(()) => report(name, "PASS", "", &mut failures),
        Err(e) => report(name, "FAIL", &e, &mut failures),
    };
    verdict("auth_right_credentials", right_credentials(ctx, creds, &topic("OK"), &group("OK")).await);
    verdict("auth_wrong_secret", expect("UNAUTHORIZED", send_with(ctx, Some((&ak, &wrong)), &topic("OK")).await));
    verdict("auth_unknown_user", expect("UNAUTHORIZED", send_with(ctx, Some(("nobody", &sk)), &topic("OK")).await));
    verdict("auth_no_credentials", expect("UNAUTHORIZED", send_with(ctx, None, &topic("OK")).await));
    verdict("auth_forbidden_topic", expect("FORBIDDEN", send_with(ctx, Some(creds), &topic("OTHER")).await));
    verdict("auth_deny_beats_allow", expect("FORBIDDEN", send_with(ctx, Some(creds), &topic("DENIED")).await));
    verdict("auth_forbidden_group", forbidden_group(ctx, creds, &topic("OK"), &group("OTHER")).await);
    if failures == 0 { 0 } else { 1 }
}
