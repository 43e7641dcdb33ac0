//! Protocol scenarios driven by the official Apache RocketMQ Rust client (crates.io `rocketmq` 5.0.0).
//!
//! Run by tests/suites/30-clients.sh (ferromq) or tests/clients/run-against-rocketmq.sh (reference);
//! topics and groups come from the environment (see ../lib.sh). Each scenario prints one line
//! `SCENARIO rust <name> PASS|FAIL|SKIP <detail>` and appends it to FERROMQ_RESULTS_FILE.
//! Exit code 0 only if no scenario failed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::error::{ClientError, ErrorKind};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::{MessageBuilder, MessageView};
use rocketmq::model::transaction::{Transaction, TransactionResolution};
use rocketmq::{Producer, SimpleConsumer};

mod auth;

type Outcome = Result<(), String>;

const INVISIBLE: Duration = Duration::from_secs(30);
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Clock granularity allowed when judging "delivered before its delivery timestamp".
const EARLY_SLACK_MS: i64 = 5;
/// How long the transaction scenario receives after commit/rollback.
const TX_WINDOW: Duration = Duration::from_secs(15);
/// Why the rocketmq crate 5.0.0 cannot run some scenarios.
const NO_PUSH: &str = "no PushConsumer in the rocketmq crate 5.0.0";
const NO_RECALL: &str = "the rocketmq crate 5.0.0 has no RecallMessage (its send receipt carries no recall handle)";
const NO_PRIORITY: &str =
    "the rocketmq crate 5.0.0 cannot send PRIORITY messages (no priority setter, no SystemProperties.priority)";

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Receive errors are counted: the Rust 5.0.0 client sets the receive deadline to exactly the long
/// polling timeout, so a server that holds an empty long poll until the very end loses the race.
static RECEIVE_ERRORS: AtomicUsize = AtomicUsize::new(0);

/// Detail a scenario reports with PASS (measured figures); reset before each scenario.
static PASS_DETAIL: Mutex<String> = Mutex::new(String::new());

fn pass_detail(text: String) {
    *PASS_DETAIL.lock().unwrap() = text;
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

struct Ctx {
    endpoint: String,
    group_prefix: String,
    run: String,
    retry_invisible: Duration,
    poll: Duration,
    dlq_max_attempts: i32,
}

impl Ctx {
    fn topic(kind: &str) -> String {
        std::env::var(format!("FERROMQ_TOPIC_{}", kind.to_uppercase()))
            .unwrap_or_else(|_| format!("rust_{kind}"))
    }

    fn group(&self, kind: &str) -> String {
        format!("{}_{}", self.group_prefix, kind)
    }

    fn client_option(&self) -> ClientOption {
        let mut o = ClientOption::default();
        // TLS stays at the crate's default (off; its TLS path is unfinished in 5.0.0): plaintext on
        // ferromq's mixed port, as a user with default settings connects.
        o.set_access_url(self.endpoint.clone());
        o.set_timeout(Duration::from_secs(10));
        o.set_long_polling_timeout(self.poll);
        o
    }

    async fn simple(&self, kind: &str, topic: &str) -> Result<SimpleConsumer, String> {
        let mut opt = SimpleConsumerOption::default();
        opt.set_consumer_group(self.group(kind));
        opt.set_topics(vec![topic.to_string()]);
        let mut c = SimpleConsumer::new(opt, self.client_option()).map_err(err)?;
        c.start().await.map_err(err)?;
        Ok(c)
    }
}

fn err(e: ClientError) -> String {
    format!("{e}")
}

fn server_code(e: &ClientError) -> Option<String> {
    e.context().iter().find(|(k, _)| *k == "code").map(|(_, v)| v.clone())
}

fn body_for(run: &str, i: usize, scenario: &str) -> Vec<u8> {
    let mut b = format!("{scenario}:{run}:{i}:").into_bytes();
    let n = (i * 131) % 3000 + 1;
    b.extend((0..n).map(|j| ((i * 7 + j) % 256) as u8));
    b
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn receive(
    c: &SimpleConsumer,
    topic: &str,
    expr: &FilterExpression,
    max: i32,
    invisible: Duration,
) -> Vec<MessageView> {
    match c.receive_with(topic, expr, max, invisible).await {
        Ok(v) => v,
        Err(e) => {
            RECEIVE_ERRORS.fetch_add(1, Ordering::Relaxed);
            println!("  receive error (counted, treated as empty): {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            Vec::new()
        }
    }
}

fn all() -> FilterExpression {
    FilterExpression::new(FilterType::Tag, "*")
}

struct Expected {
    body: Vec<u8>,
    tag: String,
    keys: BTreeSet<String>,
    props: HashMap<String, String>,
}

async fn send_receive_ack(ctx: &Ctx, p: &Producer) -> Outcome {
    let t = Ctx::topic("normal");
    let n = 20;
    let mut expected: HashMap<String, Expected> = HashMap::new();
    for i in 0..n {
        let tag = if i % 2 == 0 { "TagA" } else { "TagB" };
        let keys: BTreeSet<String> = [format!("key-{}-{i}", ctx.run), format!("order-{i}")].into();
        let props: HashMap<String, String> = [
            ("seq".to_string(), i.to_string()),
            ("origin".to_string(), "rust".to_string()),
            ("text".to_string(), "héllo wörld ✓".to_string()),
        ]
        .into();
        let body = if i != n - 1 { body_for(&ctx.run, i, "sra") } else { pseudo_random(256 * 1024, i as u64 + 7) };
        let msg = MessageBuilder::builder()
            .set_topic(t.clone())
            .set_body(body.clone())
            .set_tag(tag)
            .set_keys(keys.iter().cloned().collect())
            .set_properties(props.clone())
            .build()
            .map_err(err)?;
        let r = p.send(msg).await.map_err(err)?;
        ensure!(!r.message_id().is_empty(), "send receipt without message id");
        expected.insert(r.message_id().to_string(), Expected { body, tag: tag.into(), keys, props });
    }
    ensure!(expected.len() == n, "duplicate message ids in send receipts");
    let c = ctx.simple("normal", &t).await?;
    let mut acked = HashSet::new();
    let mut problems = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    while acked.len() < n && Instant::now() < end {
        for m in receive(&c, &t, &all(), 32, INVISIBLE).await {
            let id = m.message_id().to_string();
            let Some(e) = expected.get(&id) else {
                problems.push(format!("unexpected message {id}"));
                continue;
            };
            if acked.contains(&id) {
                problems.push(format!("acked message {id} delivered again"));
                continue;
            }
            if m.topic() != t {
                problems.push(format!("{id}: topic {}", m.topic()));
            }
            if m.body() != e.body.as_slice() {
                problems.push(format!("{id}: body differs (len {} vs {})", m.body().len(), e.body.len()));
            }
            if m.tag() != Some(e.tag.as_str()) {
                problems.push(format!("{id}: tag {:?} != {}", m.tag(), e.tag));
            }
            let keys: BTreeSet<String> = m.keys().iter().cloned().collect();
            if keys != e.keys {
                problems.push(format!("{id}: keys {keys:?} != {:?}", e.keys));
            }
            for (k, v) in &e.props {
                if m.properties().get(k) != Some(v) {
                    problems.push(format!("{id}: property {k}={:?}", m.properties().get(k)));
                }
            }
            if m.delivery_attempt() != 1 {
                problems.push(format!("{id}: delivery attempt {} on first delivery", m.delivery_attempt()));
            }
            c.ack(&m).await.map_err(err)?;
            acked.insert(id);
        }
    }
    let result = (|| {
        ensure!(problems.is_empty(), "{}", problems.iter().take(10).cloned().collect::<Vec<_>>().join("; "));
        ensure!(acked.len() == n, "received+acked {} of {n} sent (lost {})", acked.len(), n - acked.len());
        Ok(())
    })();
    if result.is_ok() {
        // Acked messages never come back: further rounds stay empty.
        for _ in 0..2 {
            let again = receive(&c, &t, &all(), 32, INVISIBLE).await;
            if !again.is_empty() {
                let _ = c.shutdown().await;
                return Err(format!("{} message(s) delivered after everything was acked", again.len()));
            }
        }
    }
    c.shutdown().await.map_err(|e| format!("consumer shutdown: {e}"))?;
    result
}

async fn tag_filter(ctx: &Ctx, p: &Producer) -> Outcome {
    let t = Ctx::topic("filter");
    let mut sent: HashMap<&str, HashSet<String>> = HashMap::new();
    for i in 0..15 {
        let tag = ["A", "B", "C"][i % 3];
        let msg = MessageBuilder::builder()
            .set_topic(t.clone())
            .set_body(format!("filter {} {i} {tag}", ctx.run).into_bytes())
            .set_tag(tag)
            .build()
            .map_err(err)?;
        let r = p.send(msg).await.map_err(err)?;
        sent.entry(tag).or_default().insert(r.message_id().to_string());
    }
    let c = ctx.simple("filter", &t).await?;
    let expr = FilterExpression::new(FilterType::Tag, "A || B");
    let mut got: HashMap<String, String> = HashMap::new();
    let end = Instant::now() + Duration::from_secs(60);
    let mut extra_rounds = 0;
    // Until all A/B arrived, then two more rounds in which a C must not show up.
    while Instant::now() < end && extra_rounds < 2 {
        if got.len() >= 10 {
            extra_rounds += 1;
        }
        for m in receive(&c, &t, &expr, 32, INVISIBLE).await {
            got.insert(m.message_id().to_string(), m.tag().unwrap_or("").to_string());
            c.ack(&m).await.map_err(err)?;
        }
    }
    c.shutdown().await.map_err(|e| format!("consumer shutdown: {e}"))?;
    let wrong: Vec<String> =
        got.iter().filter(|(_, tag)| *tag != "A" && *tag != "B").map(|(id, tag)| format!("{id} tag {tag}")).collect();
    ensure!(wrong.is_empty(), "filter 'A || B' delivered: {wrong:?}");
    let missing = sent["A"].iter().chain(sent["B"].iter()).filter(|id| !got.contains_key(*id)).count();
    ensure!(missing == 0, "{missing} A/B message(s) never delivered");
    Ok(())
}

async fn sql_filter(ctx: &Ctx, p: &Producer) -> Outcome {
    let t = Ctx::topic("filter");
    // `run` keeps other scenarios' messages out of the expression.
    let expression = format!(
        "run = '{}' AND region IS NOT NULL AND ((amount >= 100 AND region = 'eu') OR amount BETWEEN 10 AND 30)",
        ctx.run
    );
    let mut want: HashSet<String> = HashSet::new();
    for i in 0..30usize {
        let region = if i % 5 == 0 { None } else if i % 2 == 0 { Some("eu") } else { Some("us") };
        let mut props: HashMap<String, String> =
            [("run".to_string(), ctx.run.clone()), ("amount".to_string(), (i * 10).to_string())].into();
        if let Some(r) = region {
            props.insert("region".into(), r.into());
        }
        let msg = MessageBuilder::builder()
            .set_topic(t.clone())
            .set_body(format!("sql {} {i}", ctx.run).into_bytes())
            .set_tag("S")
            .set_properties(props)
            .build()
            .map_err(err)?;
        let r = p.send(msg).await.map_err(err)?;
        if region.is_some() && ((i * 10 >= 100 && region == Some("eu")) || (10..=30).contains(&(i * 10))) {
            want.insert(r.message_id().to_string());
        }
    }
    let c = ctx.simple("sql", &t).await?;
    let expr = FilterExpression::new(FilterType::Sql, expression);
    let mut got: HashSet<String> = HashSet::new();
    let end = Instant::now() + Duration::from_secs(60);
    let mut extra_rounds = 0;
    while Instant::now() < end && extra_rounds < 2 {
        if got.len() >= want.len() {
            extra_rounds += 1;
        }
        for m in receive(&c, &t, &expr, 32, INVISIBLE).await {
            got.insert(m.message_id().to_string());
            c.ack(&m).await.map_err(err)?;
        }
    }
    let missing = want.difference(&got).count();
    let extra = got.difference(&want).count();
    ensure!(missing == 0 && extra == 0, "SQL filter: {missing} matching message(s) missing, {extra} non-matching delivered");
    // A malformed expression is refused (ILLEGAL_FILTER_EXPRESSION), never silently matched.
    let bad = FilterExpression::new(FilterType::Sql, "amount >>> 5");
    let refused = c.receive_with(&t, &bad, 8, INVISIBLE).await;
    c.shutdown().await.map_err(|e| format!("consumer shutdown: {e}"))?;
    match refused {
        Ok(v) => return Err(format!("a malformed SQL expression was accepted ({} message(s))", v.len())),
        Err(e) => {
            let code = server_code(&e).unwrap_or_default();
            let text = format!("{e} {code}");
            ensure!(text.contains("40010") || text.to_uppercase().contains("FILTER"), "unexpected refusal: {text}");
        }
    }
    Ok(())
}

async fn redelivery(ctx: &Ctx, p: &Producer) -> Outcome {
    let t = Ctx::topic("retry");
    let body = format!("redeliver me {}", ctx.run).into_bytes();
    let msg = MessageBuilder::builder()
        .set_topic(t.clone())
        .set_body(body.clone())
        .set_tag("retry")
        .set_keys(vec![format!("rk-{}", ctx.run)])
        .build()
        .map_err(err)?;
    let id = p.send(msg).await.map_err(err)?.message_id().to_string();
    let c = ctx.simple("retry", &t).await?;
    let r = async {
        let mut first = None;
        let end = Instant::now() + Duration::from_secs(60);
        while first.is_none() && Instant::now() < end {
            first = receive(&c, &t, &all(), 1, ctx.retry_invisible).await.into_iter().next();
        }
        let first = first.ok_or("message never delivered")?;
        let t_first = Instant::now();
        ensure!(first.message_id() == id, "unexpected message {}", first.message_id());
        ensure!(first.delivery_attempt() == 1, "first delivery attempt {}", first.delivery_attempt());
        let mut second = None;
        let end = Instant::now() + ctx.retry_invisible + Duration::from_secs(40);
        while second.is_none() && Instant::now() < end {
            for m in receive(&c, &t, &all(), 1, INVISIBLE).await {
                ensure!(m.message_id() == id, "unexpected message {}", m.message_id());
                second = Some(m);
            }
        }
        let second = second.ok_or(format!("not redelivered within {:?} + 40 s", ctx.retry_invisible))?;
        let waited = t_first.elapsed().as_secs_f64();
        ensure!(
            waited >= ctx.retry_invisible.as_secs_f64() - 1.5,
            "redelivered after {waited:.1} s < invisible {:?}",
            ctx.retry_invisible
        );
        ensure!(second.delivery_attempt() == 2, "redelivery has delivery attempt {}, want 2", second.delivery_attempt());
        ensure!(second.body() == body.as_slice(), "redelivered body differs");
        c.ack(&second).await.map_err(err)?;
        let end = Instant::now() + ctx.retry_invisible + Duration::from_secs(2);
        while Instant::now() < end {
            let again = receive(&c, &t, &all(), 1, ctx.retry_invisible).await;
            ensure!(again.is_empty(), "acked message came back (attempt {})", again[0].delivery_attempt());
        }
        Ok(())
    }
    .await;
    c.shutdown().await.map_err(|e| format!("consumer shutdown: {e}"))?;
    r
}

fn fifo_valid(
    m: &MessageView,
    held_group: Option<&str>,
    next: &HashMap<String, usize>,
    problems: &mut Vec<String>,
) -> bool {
    let g = m.message_group().unwrap_or("").to_string();
    let s: i64 = m.properties().get("seq").and_then(|v| v.parse().ok()).unwrap_or(-1);
    let Some(&want) = next.get(&g) else {
        problems.push(format!("message with group {g:?}"));
        return false;
    };
    if Some(g.as_str()) == held_group {
        problems.push(format!("{g} seq {s} delivered while seq {want} is unacked"));
        return false;
    }
    if s != want as i64 {
        problems.push(format!("{g}: got seq {s}, expected {want}"));
        return false;
    }
    if m.body() != format!("{g}|{s}").as_bytes() {
        problems.push(format!("{g} seq {s}: body differs"));
    }
    true
}

async fn fifo_order(ctx: &Ctx, p: &Producer) -> Outcome {
    let t = Ctx::topic("fifo");
    let per_group = 6;
    let groups: Vec<String> = (0..4).map(|g| format!("mg{g}-{}", ctx.run)).collect();
    for s in 0..per_group {
        for g in &groups {
            let msg = MessageBuilder::fifo_message_builder(t.clone(), format!("{g}|{s}").into_bytes(), g.clone())
                .set_tag("fifo")
                .set_properties(HashMap::from([("seq", s.to_string())]))
                .build()
                .map_err(err)?;
            p.send(msg).await.map_err(err)?;
        }
    }
    let c = ctx.simple("fifo", &t).await?;
    let r = async {
        let mut next: HashMap<String, usize> = groups.iter().map(|g| (g.clone(), 0)).collect();
        let mut problems = Vec::new();
        let mut held = None;
        let end = Instant::now() + Duration::from_secs(60);
        while held.is_none() && Instant::now() < end {
            held = receive(&c, &t, &all(), 1, INVISIBLE).await.into_iter().next();
        }
        let held = held.ok_or("no FIFO message delivered")?;
        ensure!(fifo_valid(&held, None, &next, &mut problems), "{}", problems.join("; "));
        let hg = held.message_group().unwrap_or("").to_string();
        // While it is held, nothing later of its message group may be delivered (one round per queue).
        for _ in 0..2 {
            for m in receive(&c, &t, &all(), 32, INVISIBLE).await {
                if fifo_valid(&m, Some(&hg), &next, &mut problems) {
                    c.ack(&m).await.map_err(err)?;
                    *next.get_mut(m.message_group().unwrap()).unwrap() += 1;
                }
            }
        }
        ensure!(problems.is_empty(), "{}", problems.iter().take(10).cloned().collect::<Vec<_>>().join("; "));
        c.ack(&held).await.map_err(err)?;
        *next.get_mut(&hg).unwrap() += 1;
        let end = Instant::now() + Duration::from_secs(90);
        while next.values().sum::<usize>() < groups.len() * per_group && Instant::now() < end && problems.is_empty() {
            for m in receive(&c, &t, &all(), 32, INVISIBLE).await {
                if fifo_valid(&m, None, &next, &mut problems) {
                    c.ack(&m).await.map_err(err)?;
                    *next.get_mut(m.message_group().unwrap()).unwrap() += 1;
                }
            }
        }
        ensure!(problems.is_empty(), "{}", problems.iter().take(10).cloned().collect::<Vec<_>>().join("; "));
        ensure!(next.values().all(|v| *v == per_group), "incomplete: {next:?}");
        Ok(())
    }
    .await;
    c.shutdown().await.map_err(|e| format!("consumer shutdown: {e}"))?;
    r
}

/// The dlq group allows `dlq_max_attempts` deliveries; a message never acked then moves to %DLQ%<group>,
/// where another group can read it, intact and with the same message id.
async fn dead_letter(ctx: &Ctx, p: &Producer) -> Outcome {
    let t = Ctx::topic("dlq");
    let body = format!("dead letter {}", ctx.run).into_bytes();
    let msg = MessageBuilder::builder()
        .set_topic(t.clone())
        .set_body(body.clone())
        .set_tag("dlq")
        .set_keys(vec![format!("dk-{}", ctx.run)])
        .set_properties(HashMap::from([("origin", "rust")]))
        .build()
        .map_err(err)?;
    let id = p.send(msg).await.map_err(err)?.message_id().to_string();
    let c = ctx.simple("dlq", &t).await?;
    let r = async {
        let mut attempts = Vec::new();
        let end = Instant::now() + ctx.retry_invisible * ctx.dlq_max_attempts as u32 + Duration::from_secs(60);
        while (attempts.len() as i32) < ctx.dlq_max_attempts && Instant::now() < end {
            for m in receive(&c, &t, &all(), 1, ctx.retry_invisible).await {
                ensure!(m.message_id() == id, "unexpected message {}", m.message_id());
                attempts.push(m.delivery_attempt());
            }
        }
        ensure!(attempts == (1..=ctx.dlq_max_attempts).collect::<Vec<_>>(), "delivery attempts {attempts:?}");
        let dlq_topic = format!("%DLQ%{}", ctx.group("dlq"));
        let mut found = None;
        let mut reader: Option<SimpleConsumer> = None;
        let end = Instant::now() + ctx.retry_invisible + Duration::from_secs(60);
        let mut again_err = None;
        while found.is_none() && Instant::now() < end {
            // Keep polling the source group: it must not get the message a further time (and the reference
            // moves a message to the DLQ when it is due again, i.e. on a later receive).
            let again = receive(&c, &t, &all(), 1, ctx.retry_invisible).await;
            if let Some(m) = again.first() {
                again_err = Some(format!(
                    "delivered again after {} attempts (attempt {})",
                    ctx.dlq_max_attempts,
                    m.delivery_attempt()
                ));
                break;
            }
            if reader.is_none() {
                match ctx.simple("dlqreader", &dlq_topic).await {
                    Ok(r) => reader = Some(r),
                    Err(_) => {
                        // the DLQ topic may not exist before the first dead letter
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let rd = reader.as_ref().unwrap();
            for m in receive(rd, &dlq_topic, &all(), 32, INVISIBLE).await {
                rd.ack(&m).await.map_err(err)?;
                if m.message_id() == id || m.body() == body.as_slice() {
                    found = Some(m);
                }
            }
        }
        if let Some(rd) = reader {
            let _ = rd.shutdown().await;
        }
        if let Some(e) = again_err {
            return Err(e);
        }
        let found = found.ok_or(format!("not found in {dlq_topic}"))?;
        ensure!(found.message_id() == id, "DLQ copy has message id {}, sent {id}", found.message_id());
        ensure!(
            found.body() == body.as_slice()
                && found.tag() == Some("dlq")
                && found.keys().contains(&format!("dk-{}", ctx.run)),
            "DLQ copy differs"
        );
        ensure!(
            found.properties().get("origin").map(String::as_str) == Some("rust"),
            "DLQ copy lost user properties: {:?}",
            found.properties()
        );
        Ok(())
    }
    .await;
    c.shutdown().await.map_err(|e| format!("consumer shutdown: {e}"))?;
    r
}

async fn unknown_topic(_ctx: &Ctx, p: &Producer) -> Outcome {
    let msg = MessageBuilder::builder()
        .set_topic(Ctx::topic("missing"))
        .set_body(b"nobody home".to_vec())
        .set_tag("x")
        .build()
        .map_err(err)?;
    match p.send(msg).await {
        Ok(r) => Err(format!("send to an unknown topic succeeded (id {})", r.message_id())),
        Err(e) => {
            ensure!(
                *e.kind() == ErrorKind::Server && server_code(&e).as_deref() == Some("TOPIC_NOT_FOUND"),
                "expected a server error with code TOPIC_NOT_FOUND, got: {e}"
            );
            Ok(())
        }
    }
}

async fn oversized_body(_ctx: &Ctx, p: &Producer) -> Outcome {
    // The Rust client has no client-side size check: the server itself must refuse the body.
    let msg = MessageBuilder::builder()
        .set_topic(Ctx::topic("normal"))
        .set_body(vec![b'x'; MAX_BODY + 1])
        .set_tag("big")
        .build()
        .map_err(err)?;
    match p.send(msg).await {
        Ok(r) => return Err(format!("a {}-byte body was accepted (id {})", MAX_BODY + 1, r.message_id())),
        Err(e) => {
            let code = server_code(&e);
            println!("  oversized send refused with: {e}");
            ensure!(
                *e.kind() == ErrorKind::Server
                    && matches!(code.as_deref(), Some("MESSAGE_BODY_TOO_LARGE") | Some("PAYLOAD_TOO_LARGE")),
                "expected a server error MESSAGE_BODY_TOO_LARGE (or PAYLOAD_TOO_LARGE), got: {e}"
            );
        }
    }
    let msg = MessageBuilder::builder()
        .set_topic(Ctx::topic("normal"))
        .set_body(b"small after big".to_vec())
        .set_tag("small")
        .build()
        .map_err(err)?;
    p.send(msg).await.map_err(|e| format!("producer broken after the oversized send: {e}"))?;
    Ok(())
}

fn quantiles(values: &[i64]) -> String {
    let mut v = values.to_vec();
    v.sort_unstable();
    format!("min {} p50 {} max {}", v[0], v[v.len() / 2], v[v.len() - 1])
}

/// DELAY messages due 1..4 s after sending (in a mixed order) must never be delivered before their delivery
/// timestamp, and all must arrive. The 5.0.0 crate takes the delivery timestamp in epoch *seconds*.
async fn delay(ctx: &Ctx, p: &Producer) -> Outcome {
    let t = Ctx::topic("delay");
    let n = 10;
    let c = ctx.simple("delay", &t).await?;
    let expr = FilterExpression::new(FilterType::Tag, "delay");
    let r = async {
        let mut due: HashMap<String, i64> = HashMap::new();
        let base = now_ms() / 1000 + 1;
        for i in 0..n {
            let at = base + ((i * 3) % 4 + 1) as i64;
            let msg = MessageBuilder::delay_message_builder(t.clone(), format!("delay {} {i}", ctx.run).into_bytes(), at)
                .set_tag("delay")
                .set_properties(HashMap::from([("seq", i.to_string())]))
                .build()
                .map_err(err)?;
            due.insert(p.send(msg).await.map_err(err)?.message_id().to_string(), at * 1000);
        }
        ensure!(due.len() == n, "duplicate message ids in send receipts");
        let mut late: HashMap<String, i64> = HashMap::new();
        let mut problems = Vec::new();
        let end = *due.values().max().unwrap() + 30_000;
        while late.len() < n && now_ms() < end {
            let got = receive(&c, &t, &expr, 32, INVISIBLE).await;
            let now = now_ms();
            for m in got {
                c.ack(&m).await.map_err(err)?;
                let id = m.message_id().to_string();
                let seq = m.properties().get("seq").cloned().unwrap_or_default();
                match due.get(&id) {
                    None => problems.push(format!("unexpected message {id}")),
                    Some(_) if late.contains_key(&id) => problems.push(format!("{id} delivered twice")),
                    Some(at) => {
                        let l = now - at;
                        late.insert(id, l);
                        if l < -EARLY_SLACK_MS {
                            problems.push(format!("seq {seq} delivered {} ms before its delivery timestamp", -l));
                        }
                    }
                }
            }
        }
        ensure!(problems.is_empty(), "{}", problems.iter().take(10).cloned().collect::<Vec<_>>().join("; "));
        ensure!(late.len() == n, "{} of {n} DELAY messages never delivered (30 s past the last due time)", n - late.len());
        pass_detail(format!("lateness ms {} (n={n})", quantiles(&late.values().copied().collect::<Vec<_>>())));
        Ok(())
    }
    .await;
    c.shutdown().await.map_err(|e| format!("consumer shutdown: {e}"))?;
    r
}

#[derive(Default)]
struct TxState {
    roles: HashMap<String, &'static str>,
    /// (message id, role, time ms) of every checker call
    calls: Vec<(String, Option<&'static str>, i64)>,
}

fn tx_take(
    m: &MessageView,
    committed: bool,
    state: &Mutex<TxState>,
    seen: &mut HashMap<String, usize>,
    problems: &mut Vec<String>,
) {
    let id = m.message_id().to_string();
    *seen.entry(id.clone()).or_default() += 1;
    let st = state.lock().unwrap();
    match st.roles.get(&id).copied() {
        None => problems.push(format!("unexpected message {id}")),
        Some("rollback") => problems.push("the rolled-back half message was delivered".into()),
        Some("commit") if !committed => problems.push("the half message was delivered before commit()".into()),
        Some("unresolved") if !st.calls.iter().any(|(cid, _, _)| *cid == id) => {
            problems.push("the unresolved half message was delivered before the checker was asked".into())
        }
        _ => {}
    }
}

/// Three half messages: one committed by the client, one rolled back, one left for the server's check-back
/// (the checker commits it). Nothing is visible before its commit; the committed and the checked-back one
/// arrive exactly once; the rolled-back one never does. The checker answers COMMIT the first time it is asked
/// about the unresolved one and UNKNOWN (sent as resolution 0 by this client) otherwise: the scenario resolves
/// the other two itself, and the reference broker asks again about a message already committed through a
/// check-back and would deliver it once per COMMIT. PASS detail: check-back latency.
async fn transaction(ctx: &Ctx, _p: &Producer) -> Outcome {
    let t = Ctx::topic("tx");
    let state = Arc::new(Mutex::new(TxState::default()));
    let checker_state = state.clone();
    let mut popt = ProducerOption::default();
    popt.set_topics(vec![t.clone()]);
    let mut txp = Producer::new_transaction_producer(
        popt,
        ctx.client_option(),
        Box::new(move |_txid, view: MessageView| {
            let mut st = checker_state.lock().unwrap();
            let role = st.roles.get(view.message_id()).copied();
            let first = !st.calls.iter().any(|(id, _, _)| id == view.message_id());
            st.calls.push((view.message_id().to_string(), role, now_ms()));
            if role == Some("unresolved") && first {
                TransactionResolution::COMMIT
            } else {
                TransactionResolution::UNKNOWN
            }
        }),
    )
    .map_err(err)?;
    txp.start().await.map_err(err)?;
    let c = match ctx.simple("tx", &t).await {
        Ok(c) => c,
        Err(e) => {
            let _ = txp.shutdown().await;
            return Err(e);
        }
    };
    let r = async {
        let mut sent_at: HashMap<&str, i64> = HashMap::new();
        let mut ids: HashMap<&str, String> = HashMap::new();
        let mut commit_tx = None;
        let mut rollback_tx = None;
        for role in ["commit", "rollback", "unresolved"] {
            let msg = MessageBuilder::transaction_message_builder(t.clone(), format!("tx {} {role}", ctx.run).into_bytes())
                .set_tag("tx")
                .set_properties(HashMap::from([("role", role)]))
                .build()
                .map_err(err)?;
            let tx = txp.send_transaction_message(msg).await.map_err(err)?;
            ensure!(!tx.transaction_id().is_empty(), "send receipt of the {role} half message has no transaction id");
            let id = tx.message_id().to_string();
            state.lock().unwrap().roles.insert(id.clone(), role);
            ids.insert(role, id);
            sent_at.insert(role, now_ms());
            match role {
                "commit" => commit_tx = Some(tx),
                "rollback" => rollback_tx = Some(tx),
                _ => drop(tx), // left for the server's check-back
            }
        }
        let all = all();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut problems = Vec::new();
        // Before anything is committed: at least one full receive and 3 s, nothing but a checked-back message.
        let t0 = Instant::now();
        let mut rounds = 0;
        while rounds == 0 || t0.elapsed() < Duration::from_secs(3) {
            rounds += 1;
            for m in receive(&c, &t, &all, 32, INVISIBLE).await {
                c.ack(&m).await.map_err(err)?;
                tx_take(&m, false, &state, &mut seen, &mut problems);
            }
        }
        ensure!(problems.is_empty(), "{}", problems.iter().take(10).cloned().collect::<Vec<_>>().join("; "));
        commit_tx.unwrap().commit().await.map_err(|e| format!("commit: {e}"))?;
        rollback_tx.unwrap().rollback().await.map_err(|e| format!("rollback: {e}"))?;
        let end = Instant::now() + TX_WINDOW;
        while Instant::now() < end {
            for m in receive(&c, &t, &all, 32, INVISIBLE).await {
                c.ack(&m).await.map_err(err)?;
                tx_take(&m, true, &state, &mut seen, &mut problems);
            }
        }
        ensure!(problems.is_empty(), "{}", problems.iter().take(10).cloned().collect::<Vec<_>>().join("; "));
        let st = state.lock().unwrap();
        let asked_times = st.calls.iter().filter(|(_, r, _)| *r == Some("unresolved")).count();
        let asked = st.calls.iter().filter(|(_, r, _)| *r == Some("unresolved")).map(|(_, _, t)| *t).min();
        let others: BTreeSet<String> = st
            .calls
            .iter()
            .filter(|(_, r, _)| *r != Some("unresolved"))
            .map(|(_, r, _)| r.unwrap_or("unknown message").to_string())
            .collect();
        let Some(asked) = asked else {
            return Err(format!(
                "the checker was never asked about the unresolved half message (calls: {})",
                st.calls.len()
            ));
        };
        let counts: Vec<(&str, usize)> =
            ["commit", "rollback", "unresolved"].iter().map(|r| (*r, seen.get(&ids[r]).copied().unwrap_or(0))).collect();
        ensure!(
            counts == vec![("commit", 1), ("rollback", 0), ("unresolved", 1)],
            "deliveries per half message: {counts:?}"
        );
        let also = if others.is_empty() {
            String::new()
        } else {
            format!(", also about {} (answered unknown)", others.into_iter().collect::<Vec<_>>().join(","))
        };
        pass_detail(format!(
            "check-back after {} ms; asked {asked_times}x about the unresolved one{also}",
            asked - sent_at["unresolved"]
        ));
        Ok(())
    }
    .await;
    c.shutdown().await.map_err(|e| format!("consumer shutdown: {e}"))?;
    txp.shutdown().await.map_err(|e| format!("transaction producer shutdown: {e}"))?;
    r
}

fn report(name: &str, verdict: &str, detail: &str, failures: &mut usize) {
    let mut d = detail.split_whitespace().collect::<Vec<_>>().join(" ");
    d.truncate(300);
    let line = format!("rust {name} {verdict} {d}").trim_end().to_string();
    println!("SCENARIO {line}");
    if verdict == "FAIL" {
        *failures += 1;
    }
    if let Ok(path) = std::env::var("FERROMQ_RESULTS_FILE") {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

async fn run<'a, F, Fut>(name: &str, ctx: &'a Ctx, p: &'a Producer, f: F, failures: &mut usize)
where
    F: FnOnce(&'a Ctx, &'a Producer) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let t0 = Instant::now();
    // Bound every scenario so a wedged server turns into a failure instead of a hang.
    PASS_DETAIL.lock().unwrap().clear();
    match tokio::time::timeout(Duration::from_secs(150), f(ctx, p)).await {
        Ok(Ok(())) => {
            let detail = PASS_DETAIL.lock().unwrap().clone();
            report(name, "PASS", &detail, failures)
        }
        Ok(Err(e)) => report(name, "FAIL", &e, failures),
        Err(_) => report(name, "FAIL", "timed out after 150 s", failures),
    }
    println!("  {name} took {:.1} s", t0.elapsed().as_secs_f64());
}

/// Cluster suite helper (`FERROMQ_MODE=load`): one producer configured with every endpoint in
/// FERROMQ_ENDPOINT (comma separated) sends one message at a time to FERROMQ_LOAD_TOPIC until the
/// file FERROMQ_LOAD_STOP exists. Prints `ACK <message id> <i>` for each acknowledged send (body:
/// `<tag>:<run>:<i>:` then 200 + i % 800 bytes of `(i * 31 + j) % 256`, as the suite recomputes it)
/// and `ERR <i> <error>` for each send that failed.
async fn load(ctx: &Ctx) -> i32 {
    let topic = std::env::var("FERROMQ_LOAD_TOPIC").unwrap_or_default();
    let tag = std::env::var("FERROMQ_LOAD_TAG").unwrap_or_else(|_| "rust-load".into());
    let run = std::env::var("FERROMQ_LOAD_RUN").unwrap_or_else(|_| ctx.run.clone());
    let stop = std::env::var("FERROMQ_LOAD_STOP").unwrap_or_default();
    let mut popt = ProducerOption::default();
    popt.set_topics(vec![topic.clone()]);
    let mut p = match Producer::new(popt, ctx.client_option()) {
        Ok(p) => p,
        Err(e) => {
            println!("FATAL producer: {e}");
            return 1;
        }
    };
    if let Err(e) = p.start().await {
        println!("FATAL start: {e}");
        return 1;
    }
    let mut out = std::io::stdout();
    let mut i: usize = 0;
    while !std::path::Path::new(&stop).exists() {
        let mut body = format!("{tag}:{run}:{i}:").into_bytes();
        body.extend((0..200 + i % 800).map(|j| ((i * 31 + j) % 256) as u8));
        let msg = match MessageBuilder::builder().set_topic(topic.clone()).set_body(body).build() {
            Ok(m) => m,
            Err(e) => {
                println!("FATAL message: {e}");
                return 1;
            }
        };
        match p.send(msg).await {
            Ok(r) => {
                let _ = writeln!(out, "ACK {} {i}", r.message_id());
            }
            Err(e) => {
                let _ = writeln!(out, "ERR {i} {}", e.to_string().replace('\n', " "));
            }
        }
        let _ = out.flush();
        i += 1;
    }
    let _ = p.shutdown().await;
    0
}

#[tokio::main]
async fn main() {
    let secs = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let run_id = format!("{:x}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() % 0xffff_ffff);
    let ctx = Ctx {
        endpoint: std::env::var("FERROMQ_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".into()),
        group_prefix: std::env::var("FERROMQ_GROUP_PREFIX").unwrap_or_else(|_| "rust_g".into()),
        run: run_id,
        retry_invisible: Duration::from_secs(secs("FERROMQ_RETRY_INVISIBLE_SECS", 10)),
        poll: Duration::from_secs(secs("FERROMQ_RUST_POLL_SECS", 7)),
        dlq_max_attempts: secs("FERROMQ_DLQ_MAX_ATTEMPTS", 2) as i32,
    };
    if std::env::var("FERROMQ_MODE").as_deref() == Ok("load") {
        std::process::exit(load(&ctx).await);
    }
    if std::env::var("FERROMQ_MODE").as_deref() == Ok("auth") {
        std::process::exit(auth::run(&ctx).await);
    }
    println!("rust client scenarios against {} (run {})", ctx.endpoint, ctx.run);
    let mut failures = 0;
    let mut popt = ProducerOption::default();
    popt.set_topics(["normal", "filter", "retry", "fifo", "dlq", "delay"].iter().map(|k| Ctx::topic(k)).collect());
    let producer = match Producer::new(popt, ctx.client_option()) {
        Ok(mut p) => match p.start().await {
            Ok(()) => p,
            Err(e) => {
                for s in ["send_receive_ack", "tag_filter", "sql_filter", "redelivery", "fifo_order", "dead_letter", "unknown_topic", "oversized_body", "delay", "transaction"] {
                    report(s, "FAIL", &format!("producer start failed: {e}"), &mut failures);
                }
                for (s, why) in [("push_consume", NO_PUSH), ("push_retry", NO_PUSH), ("recall", NO_RECALL), ("priority", NO_PRIORITY)] {
                    report(s, "SKIP", why, &mut failures);
                }
                std::process::exit(1);
            }
        },
        Err(e) => {
            println!("producer creation failed: {e}");
            std::process::exit(1);
        }
    };
    run("send_receive_ack", &ctx, &producer, send_receive_ack, &mut failures).await;
    run("tag_filter", &ctx, &producer, tag_filter, &mut failures).await;
    run("sql_filter", &ctx, &producer, sql_filter, &mut failures).await;
    run("redelivery", &ctx, &producer, redelivery, &mut failures).await;
    run("fifo_order", &ctx, &producer, fifo_order, &mut failures).await;
    run("dead_letter", &ctx, &producer, dead_letter, &mut failures).await;
    report("push_consume", "SKIP", NO_PUSH, &mut failures);
    report("push_retry", "SKIP", NO_PUSH, &mut failures);
    run("unknown_topic", &ctx, &producer, unknown_topic, &mut failures).await;
    run("oversized_body", &ctx, &producer, oversized_body, &mut failures).await;
    run("delay", &ctx, &producer, delay, &mut failures).await;
    report("recall", "SKIP", NO_RECALL, &mut failures);
    run("transaction", &ctx, &producer, transaction, &mut failures).await;
    report("priority", "SKIP", NO_PRIORITY, &mut failures);
    if let Err(e) = producer.shutdown().await {
        println!("producer shutdown failed: {e}");
        failures += 1;
    }
    println!("  receive errors (counted as empty receives): {}", RECEIVE_ERRORS.load(Ordering::Relaxed));
    println!("rust: {} failed", failures);
    std::process::exit(if failures == 0 { 0 } else { 1 });
}
