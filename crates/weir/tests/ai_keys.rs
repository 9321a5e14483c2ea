//! Virtual keys for the AI gateway: issued to a consumer by `weir keys issue` (the real
//! binary) and by the admin API, shown once and kept only as digests, each optionally
//! scoped to models — a scoped key calls only its models and lists only them; every call's
//! record (consumer, key, model, target, tokens, cost, latency) written to the store in
//! batches and read back through the admin API, also after a restart.

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
            .args([
                "keys", "issue", "acme", "--models", "gpt", "--name", "ci-bot",
            ])
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

    // Every call left a record in the store, read back through the admin API (written
    // off the request path in batches once a second, so they may take a moment).
    let calls = read_calls(&api, 2).await;
    let newest = &calls[0];
    assert_eq!(
        (newest["consumer"].as_str(), newest["model"].as_str()),
        (Some("acme"), Some("big"))
    );
    let unnamed = newest["key"].as_str().unwrap();
    assert!(
        unnamed.starts_with("sha256:") && unnamed.len() == 19 && !open.contains(&unnamed[7..]),
        "an unnamed key is known by a digest prefix, never by itself: {unnamed}"
    );
    assert_eq!(calls[1]["key"], "ci-bot");
    assert_eq!(newest["target"], "compat/gpt-5");
    assert_eq!(newest["status"], 200);
    assert_eq!(
        newest["usage"]["input"],
        weir_testkit::fake_llm::FAKE_USAGE.0
    );
    assert!(newest["latency_ms"].is_u64() && newest["ttft_ms"].is_u64());
    assert!(newest["at_ms"].as_i64().unwrap() > 1_700_000_000_000);
    let usage = api.call(Method::GET, "/api/v1/ai/usage").await.json();
    assert_eq!(usage["source"], "store");
    let gpt = usage["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == "gpt")
        .unwrap();
    assert_eq!(
        (gpt["consumer"].as_str(), gpt["requests"].as_u64()),
        (Some("acme"), Some(1))
    );
    let by_key = api
        .call(Method::GET, "/api/v1/ai/usage?by=key&consumer=acme")
        .await
        .json();
    assert_eq!(by_key["rows"].as_array().unwrap().len(), 2, "{by_key}");
    let one = api
        .call(Method::GET, "/api/v1/ai/calls?key=ci-bot")
        .await
        .json();
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(
        api.call(Method::GET, "/api/v1/ai/usage?by=prompt")
            .await
            .status,
        400
    );
    assert_eq!(
        api.call(Method::GET, "/api/v1/ai/calls?limit=0")
            .await
            .status,
        400
    );
    node.shutdown().await;

    // The records are the store's: a restarted node reads them back.
    let (again, base) =
        common::admin::node(&format!("{}{ai}", sqlite_store(&dir)), first_admin()).await;
    let api = api_as(&base, "admin", PASSWORD).await;
    assert_eq!(read_calls(&api, 2).await.len(), 2);
    again.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Polls the AI call records until there are at least `n`.
async fn read_calls(api: &common::admin::Api, n: usize) -> Vec<serde_json::Value> {
    let mut calls = Vec::new();
    for _ in 0..250 {
        calls = api
            .call(Method::GET, "/api/v1/ai/calls?limit=10")
            .await
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default();
        if calls.len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    calls
}
