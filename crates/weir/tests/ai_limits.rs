//! `ai_limits` through the assembled server: requests and tokens per minute and a monthly
//! budget per consumer, answered 429 with Retry-After in the client's API shape; and two
//! Weir nodes sharing one Redis, whose combined spend never passes the budget by more than
//! one request's cost.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use bytes::Bytes;
use common::*;
use http::Method;
use serde_json::json;
use weir_testkit::FakeOpenAi;
use weir_testkit::fake_llm::FAKE_USAGE;

/// USD per million tokens that make each fake call cost (11 + 7) × 1000 / 10⁶ = $0.018.
const PRICE: f64 = 1000.0;

fn config(llm: &FakeOpenAi, consumer: &str, limits: &str) -> String {
    format!(
        r#"consumers:
  - {{ name: {consumer}, credentials: [ {{ type: key, key: "{consumer}-key-0000000" }} ] }}
ai:
  providers:
    compat: {{ kind: openai_compatible, base_url: "{}" }}
  models:
    - {{ name: gpt, targets: [compat/gpt-4.1] }}
  prices:
    compat/gpt-4.1: {{ input: {PRICE}, output: {PRICE} }}
routes:
  - {{ name: llm, match: {{ paths: ["/v1/*"] }}, ai: {{}}, policies: [ {{ key_auth: {{}} }}, {{ ai_limits: {limits} }} ] }}
"#,
        llm.base_url()
    )
}

async fn chat(addr: std::net::SocketAddr, consumer: &str, anthropic: bool) -> weir_testkit::Reply {
    let key = format!("{consumer}-key-0000000");
    let (path, body) = if anthropic {
        (
            "/v1/messages",
            json!({"model": "gpt", "max_tokens": 7, "messages": [{"role": "user", "content": "hi"}]}),
        )
    } else {
        (
            "/v1/chat/completions",
            json!({"model": "gpt", "max_tokens": 7, "messages": [{"role": "user", "content": "hi"}]}),
        )
    };
    HttpClient::new()
        .request(
            Method::POST,
            &format!("http://{addr}{path}"),
            &[("content-type", "application/json"), ("x-api-key", &key)],
            Bytes::from(body.to_string()),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_with_429_in_the_callers_shape() {
    let llm = FakeOpenAi::openai().await;
    let r = gateway(&config(
        &llm,
        "acme",
        "{ requests_per_minute: 3, budget_usd_per_month: 1 }",
    ));
    for _ in 0..3 {
        assert_eq!(chat(r.proxy_addr, "acme", false).await.status, 200);
    }
    let refused = chat(r.proxy_addr, "acme", false).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "rate_limit_exceeded");
    let after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&after));
    let anthropic = chat(r.proxy_addr, "acme", true).await;
    assert_eq!(anthropic.status, 429);
    assert_eq!(anthropic.json()["error"]["type"], "rate_limit_error");
    assert_eq!(
        llm.calls().len(),
        3,
        "refused calls never reach the provider"
    );
    r.shutdown().await;

    // A budget of $0.05 takes two calls of $0.018 (a third's reservation would pass it).
    let llm = FakeOpenAi::openai().await;
    let r = gateway(&config(
        &llm,
        "beta",
        "{ budget_usd_per_month: 0.05, tokens_per_minute: 1000 }",
    ));
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(chat(r.proxy_addr, "beta", false).await.status.as_u16());
        }
        v
    };
    assert_eq!(statuses, [200, 200, 429, 429]);
    let refused = chat(r.proxy_addr, "beta", false).await;
    assert_eq!(refused.json()["error"]["code"], "budget_exceeded");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_limits_give_each_key_of_a_consumer_its_own_allowance() {
    let llm = FakeOpenAi::openai().await;
    let yaml = config(&llm, "acme", "{ requests_per_minute: 2, per: key }").replace(
        r#"credentials: [ { type: key, key: "acme-key-0000000" } ]"#,
        r#"credentials: [ { type: key, key: "acme-key-0000000", name: ci }, { type: key, key: "acme-key-laptop1" } ]"#,
    );
    assert!(yaml.contains("name: ci"));
    let r = gateway(&yaml);
    let call = |key: &'static str| {
        let addr = r.proxy_addr;
        async move {
            HttpClient::new()
                .request(
                    Method::POST,
                    &format!("http://{addr}/v1/chat/completions"),
                    &[
                        ("content-type", "application/json"),
                        ("authorization", &format!("Bearer {key}")),
                    ],
                    Bytes::from(
                        json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]})
                            .to_string(),
                    ),
                )
                .await
                .status
        }
    };
    let ci: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(call("acme-key-0000000").await.as_u16());
        }
        v
    };
    assert_eq!(
        ci,
        [200, 200, 429],
        "the named key has two requests a minute"
    );
    assert_eq!(
        call("acme-key-laptop1").await,
        200,
        "the consumer's other key has its own two"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_redis_never_pass_the_budget_by_more_than_one_call() {
    let llm = FakeOpenAi::openai().await;
    // A consumer of this run's own: its counters are keys no other test touches.
    let consumer = format!("two-nodes-{}", weir_events::now_ms());
    let limits = "{ budget_usd_per_month: 0.2, store: \"redis://127.0.0.1:6379\" }";
    let (a, b) = (
        gateway(&config(&llm, &consumer, limits)),
        gateway(&config(&llm, &consumer, limits)),
    );
    let mut tasks = Vec::new();
    for n in 0..40 {
        let addr = if n % 2 == 0 {
            a.proxy_addr
        } else {
            b.proxy_addr
        };
        let c = consumer.clone();
        tasks.push(tokio::spawn(async move {
            chat(addr, &c, false).await.status.as_u16()
        }));
    }
    let mut ok = 0u32;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => {}
            s => panic!("unexpected status {s}"),
        }
    }
    let per_call = (FAKE_USAGE.0 + FAKE_USAGE.1) as f64 * PRICE / 1e6;
    let spent = f64::from(ok) * per_call;
    assert!(
        spent <= 0.2 + per_call,
        "spent ${spent} over a $0.2 budget ({ok} calls)"
    );
    assert!(ok >= 8, "the budget is used, not refused early: {ok} calls");
    assert_eq!(llm.calls().len(), ok as usize);
    a.shutdown().await;
    b.shutdown().await;
}
