//! End to end: SQL92 subscriptions select exactly the matching messages, through the real
//! binary; malformed or unsupported expressions are refused when the consumer asks.

mod support;

use ferromq_proto::v2::{self, Code};
use support::*;

fn sql(mut req: v2::ReceiveMessageRequest, expr: &str) -> v2::ReceiveMessageRequest {
    req.filter_expression = Some(v2::FilterExpression {
        r#type: v2::FilterType::Sql as i32,
        expression: expr.into(),
    });
    req
}

#[tokio::test]
async fn sql_subscriptions_select_exactly_the_matching_messages() {
    let s = Server::start(&[]);
    s.create_topic("orders", "normal", 2);
    let mut c = s.client().await;
    // 20 orders: amount i*10, region alternating, every fifth without a region, tag by parity.
    for i in 0..20 {
        let mut m = message(
            "orders",
            &format!("O{i:02}"),
            format!("order-{i}").as_bytes(),
        );
        m.user_properties
            .insert("amount".into(), (i * 10).to_string());
        if i % 5 != 0 {
            let region = if i % 2 == 0 { "eu" } else { "us" };
            m.user_properties.insert("region".into(), region.into());
        }
        m.system_properties.as_mut().unwrap().tag =
            Some(if i % 2 == 0 { "even" } else { "odd" }.into());
        send_ok(&mut c, m).await;
    }
    let cases: [(&str, &str, Vec<i32>); 5] = [
        (
            "g-big-eu",
            "amount >= 100 AND region = 'eu'",
            vec![12, 14, 16, 18],
        ),
        (
            "g-between",
            // 30 is 'us'; 50 has no region, so NOT (NULL IN ...) is unknown and does not match.
            "amount BETWEEN 30 AND 60 AND NOT (region IN ('us'))",
            vec![40, 60],
        ),
        ("g-null", "region IS NULL", vec![0, 50, 100, 150]),
        ("g-tag", "TAGS = 'odd' AND amount < 50", vec![1, 3]),
        ("g-or", "amount > 170 OR region = 'nowhere'", vec![18, 19]),
    ];
    for (group, expr, want) in cases {
        let want: Vec<i32> = if group == "g-between" || group == "g-null" {
            want.iter().map(|a| a / 10).collect()
        } else {
            want
        };
        let got = receive_n(
            &mut c,
            sql(
                receive_request(group, "orders", 32, 30_000, 3_000, "*"),
                expr,
            ),
            want.len(),
        )
        .await;
        let mut ids: Vec<i32> = got
            .iter()
            .map(|m| {
                let body = String::from_utf8_lossy(&m.body).into_owned();
                body.trim_start_matches("order-")
                    .parse::<i32>()
                    .unwrap_or(-1)
            })
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, want, "{expr}");
        for m in &got {
            assert_eq!(ack(&mut c, group, "orders", m).await, Code::Ok);
        }
        // Nothing else matches: the non-matching messages are never handed out.
        let rest = receive_with(
            &mut c,
            sql(
                receive_request(group, "orders", 32, 1_000, 1_500, "*"),
                expr,
            ),
        )
        .await;
        assert_eq!(
            rest.code(),
            Code::MessageNotFound,
            "{expr}: {:?}",
            rest.bodies()
        );
    }
}

#[tokio::test]
async fn bad_sql_is_refused_with_illegal_filter_expression() {
    let s = Server::start(&[]);
    s.create_topic("t", "normal", 1);
    let mut c = s.client().await;
    for expr in [
        "amount >",
        "region LIKE 'e%'",
        "amount > 'x'",
        "a IN (1, 2)",
    ] {
        let r = receive_with(
            &mut c,
            sql(receive_request("g", "t", 1, 1_000, 500, "*"), expr),
        )
        .await;
        assert_eq!(r.code(), Code::IllegalFilterExpression, "{expr}");
    }
}
