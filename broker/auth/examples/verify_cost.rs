//! What authentication and authorization cost per call, on one core:
//! `cargo run --release -p ferromq-auth --example verify_cost`.
//!
//! Times the server's work for one SendMessage (read the two headers, check the signature and
//! the clock window, evaluate the policy of a normal user with a few entries) and the client's
//! (sign a call). A measurement, not a test: nothing is asserted.

use std::time::{Duration, Instant, SystemTime};

use ferromq_auth::*;

fn per_call(n: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = AuthStore::open(dir.path()).expect("store");
    let secret = Secret::new("app-secret-of-the-bench").expect("secret");
    store
        .create_user("app", secret.clone(), UserKind::Normal)
        .expect("user");
    for (resource, actions, effect) in [
        ("topic:orders-*", "publish,subscribe", "allow"),
        ("topic:orders-internal", "publish", "deny"),
        ("group:billing", "subscribe", "allow"),
        ("topic:audit", "subscribe", "allow"),
    ] {
        store
            .put_entry(
                "app",
                PolicyEntry::parse(resource, actions, effect, &[]).expect("entry"),
            )
            .expect("put");
    }
    let clock = ClockPolicy::default();
    let send = "/apache.rocketmq.v2.MessagingService/SendMessage";
    let peer = Some("10.1.2.3".parse().expect("ip"));
    let n = 200_000;

    let sign_cost = per_call(n, || {
        std::hint::black_box(sign("app", &secret, SystemTime::now()));
    });
    let h = sign("app", &secret, SystemTime::now());
    let authn_cost = per_call(n, || {
        let snapshot = store.snapshot();
        let creds = RequestCredentials::from_header_values(
            [h.authorization.as_bytes()],
            [h.date_time.as_bytes()],
        )
        .expect("one of each");
        std::hint::black_box(
            snapshot
                .authenticate(&creds, SystemTime::now(), &clock)
                .expect("authenticated"),
        );
    });
    let snapshot = store.snapshot();
    let creds = RequestCredentials::from_header_values(
        [h.authorization.as_bytes()],
        [h.date_time.as_bytes()],
    )
    .expect("creds");
    let who = snapshot
        .authenticate(&creds, SystemTime::now(), &clock)
        .expect("authenticated");
    let targets = Targets {
        topic: Some("orders-eu"),
        group: None,
    };
    let authz_cost = per_call(n, || {
        snapshot
            .authorize_rpc(&who, send, &targets, peer)
            .expect("allowed");
    });
    println!("client: sign one call                     {sign_cost:?}");
    println!("server: authenticate one call             {authn_cost:?}");
    println!("server: authorize SendMessage (4 entries) {authz_cost:?}");
}
