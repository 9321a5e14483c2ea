//! Virtual keys for the AI gateway: issued to a consumer by `weir keys issue` (the real
//! binary) and by the admin API, shown once and kept only as digests, each optionally
//! scoped to models — a scoped key calls only its models and lists only them; every call's
//! record (consumer, model, target, tokens, cost, latency) read back through the admin API.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::admin::{PASSWORD, api_as, first_admin, node, sqlite_store};
use common::*;
use http::Method;
use serde_json::json;
use weir_testkit::FakeOpenAi;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_issued_by_the_cli_and_the_api_reach_only_their_models() {
    let llm = FakeOpenAi::openai().await;
    let dir = temp_dir("ai-keys");
    let ai = format!(
        r#"ai:
  providers:
    compat: {{ kind: openai_compatible, base_url: "{}" }}
  models:
    - {{ name: gpt, targets: [compat/gpt-4.1] }}
    - {{ name: big, targets: [compat/gpt-5] }}
consumers:
  - {{ name: acme }}
routes:
  - {{ name: llm, match: {{ paths: ["/v1/*"] }}, ai: {{}}, policies: [ {{ key_auth: {{}} }} ] }}
"#,
        llm.base_url()
    );
    let (node, base) = node(&format!("{}{ai}", sqlite_store(&dir)), first_admin()).await;
    let api = api_as(&base, "admin", PASSWORD).await;

    let (b, t) = (base.clone(), api.token.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["keys", "issue", "acme", "--models", "gpt"])
            .env("WEIR_API_URL", &b)
            .env("WEIR_API_TOKEN", &t)
            .env_remove("WEIR_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scoped = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        scoped.starts_with("sk-weir-") && scoped.len() > 40,
        "{scoped}"
    );

    let r = api
        .send(
            Method::POST,
            "/api/v1/consumers/acme/credentials",
            json!({"type": "key"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let open = r.json()["issued_key"].as_str().unwrap().to_owned();
    let listed = api
        .call(Method::GET, "/api/v1/consumers/acme/credentials")
        .await
        .text();
    assert!(
        !listed.contains(&scoped) && !listed.contains(&open),
        "keys are kept as digests only: {listed}"
    );
    assert!(listed.contains("\"models\":[\"gpt\"]"), "{listed}");

    let ask = |key: String, model: &str| {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        let addr = node.running.proxy_addr;
        async move {
            common::ai::post_json_to(
                addr,
                "/v1/chat/completions",
                &[("authorization", &format!("Bearer {key}"))],
                &body,
            )
            .await
        }
    };
    assert_eq!(ask(scoped.clone(), "gpt").await.status, 200);
    let denied = ask(scoped.clone(), "big").await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert!(
        denied.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may not use")
    );
    assert_eq!(
        ask(open.clone(), "big").await.status,
        200,
        "an unscoped key reaches every model"
    );
    assert_eq!(
        ask("sk-weir-not-a-key-000000000000".into(), "gpt")
            .await
            .status,
        401
    );

    let models = HttpClient::new()
        .request(
            Method::GET,
            &format!("http://{}/v1/models", node.running.proxy_addr),
            &[("x-api-key", &scoped)],
            bytes::Bytes::new(),
        )
        .await;
    let ids = common::ai::model_ids(&models);
    assert_eq!(ids, ["gpt"], "a scoped key lists only its models");
    assert_eq!(
        llm.calls().len(),
        2,
        "refused calls never reach the provider"
    );

    // Every call left a record, read back through the admin API (written off the request
    // path, so they may take a moment).
    let mut calls = serde_json::Value::Null;
    for _ in 0..100 {
        calls = api
            .call(Method::GET, "/api/v1/ai/calls?limit=10")
            .await
            .json();
        if calls.as_array().is_some_and(|c| c.len() >= 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let newest = &calls[0];
    assert_eq!(
        (newest["consumer"].as_str(), newest["model"].as_str()),
        (Some("acme"), Some("big"))
    );
    assert_eq!(newest["target"], "compat/gpt-5");
    assert_eq!(newest["status"], 200);
    assert_eq!(
        newest["usage"]["input"],
        weir_testkit::fake_llm::FAKE_USAGE.0
    );
    assert!(newest["latency_ms"].is_u64() && newest["ttft_ms"].is_u64());
    let usage = api.call(Method::GET, "/api/v1/ai/usage").await.json();
    let gpt = usage
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == "gpt")
        .unwrap();
    assert_eq!(
        (gpt["consumer"].as_str(), gpt["requests"].as_u64()),
        (Some("acme"), Some(1))
    );
    assert_eq!(
        api.call(Method::GET, "/api/v1/ai/calls?limit=0")
            .await
            .status,
        400
    );
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
