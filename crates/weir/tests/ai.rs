//! The AI gateway through the assembled server with a real HTTP client, against fake
//! OpenAI-compatible providers: chat whole and streamed (usage counted, the usage chunk
//! passed on only when asked for), tool calls, embeddings, model listing, fallback to the
//! next target on 429/5xx and refused connections, key balancing with cooldown, prompt
//! templates, and errors in OpenAI's shape.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::*;
use serde_json::{Value, json};
use weir_testkit::FakeOpenAi;
use weir_testkit::fake_llm::{FAKE_TEXT, FAKE_USAGE};

fn config(primary: &FakeOpenAi, backup: &FakeOpenAi, extra: &str) -> String {
    format!(
        r#"ai:
  providers:
    primary: {{ kind: openai_compatible, base_url: "{}", api_keys: ["primary-key-aaaaaaaaaaaa", "primary-key-bbbbbbbbbbbb"], cooldown: 30s }}
    backup: {{ kind: openai_compatible, base_url: "{}" }}
  models:
    - {{ name: smart, targets: [primary/big-model, backup/small-model] }}
    - {{ name: embed, targets: [primary/embed-model] }}
routes:
  - {{ name: llm, match: {{ paths: [/v1/*] }}, ai: {{}} }}
  - name: summarize
    match: {{ paths: [/ai/summarize], methods: [POST] }}
    ai: {{ model: smart, prompt_template: "Summarize in {{{{max_words}}}} words:\n{{{{text}}}}" }}
{extra}"#,
        primary.base_url(),
        backup.base_url()
    )
}

async fn post(r: &weir_proxy::app::Running, path: &str, body: Value) -> weir_testkit::Reply {
    common::ai::post_json(r, path, &[("authorization", "Bearer client-key")], &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_embeddings_and_models_reach_the_provider_with_its_key_and_model() {
    let (primary, backup) = (FakeOpenAi::openai().await, FakeOpenAi::openai().await);
    let r = gateway(&config(&primary, &backup, ""));

    let chat = post(
        &r,
        "/v1/chat/completions",
        json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(chat.status, 200, "{}", chat.text());
    let v = chat.json();
    assert_eq!(v["choices"][0]["message"]["content"], FAKE_TEXT);
    assert_eq!(v["usage"]["prompt_tokens"], FAKE_USAGE.0);
    let sent = &primary.calls()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.body["model"], "big-model",
        "the part after provider/ is sent"
    );
    let auth = sent.headers["authorization"].to_str().unwrap();
    assert!(auth.starts_with("Bearer primary-key-"), "{auth}");
    assert!(
        !auth.contains("client-key"),
        "the client's key never reaches the provider"
    );

    let tools = post(&r, "/v1/chat/completions", json!({"model": "smart", "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]})).await;
    let v = tools.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Oslo\"}"
    );

    let emb = post(
        &r,
        "/v1/embeddings",
        json!({"model": "embed", "input": ["a", "b"]}),
    )
    .await;
    assert_eq!(emb.status, 200, "{}", emb.text());
    assert_eq!(emb.json()["data"].as_array().unwrap().len(), 2);
    assert_eq!(primary.calls().last().unwrap().body["model"], "embed-model");

    let models = HttpClient::new().get(&url(&r, "/v1/models")).await;
    let ids = common::ai::model_ids(&models);
    assert_eq!(ids, ["smart", "embed"]);

    let unknown = post(
        &r,
        "/v1/chat/completions",
        json!({"model": "gpt-9", "messages": []}),
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["code"], "model_not_found");
    assert_eq!(backup.calls().len(), 0);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_pass_chunk_by_chunk_and_usage_is_counted_but_only_shown_when_asked() {
    let (primary, backup) = (FakeOpenAi::openai().await, FakeOpenAi::openai().await);
    let r = gateway(&config(&primary, &backup, ""));
    for asked in [false, true] {
        let mut body = json!({"model": "smart", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        if asked {
            body["stream_options"] = json!({"include_usage": true});
        }
        let rsp = post(&r, "/v1/chat/completions", body).await;
        assert_eq!(rsp.status, 200);
        assert_eq!(rsp.headers["content-type"], "text/event-stream");
        let text = rsp.text();
        let (chunks, said) = common::ai::openai_stream(&text);
        assert_eq!(said, FAKE_TEXT);
        let usage_chunks = chunks
            .iter()
            .filter(|c| c["usage"]["completion_tokens"].is_u64())
            .count();
        assert_eq!(usage_chunks, usize::from(asked), "asked for usage: {asked}");
        // Weir always asks the provider for usage, to count it.
        assert_eq!(
            primary.calls().last().unwrap().body["stream_options"]["include_usage"],
            true
        );
    }
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_targets_and_keys_fall_back_and_cool_down() {
    let (primary, backup) = (FakeOpenAi::openai().await, FakeOpenAi::openai().await);
    let r = gateway(&config(&primary, &backup, ""));
    let ask = || {
        post(
            &r,
            "/v1/chat/completions",
            json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}),
        )
    };

    // 503 from the first target: the second answers, in the same request.
    primary.fail(503);
    let rsp = ask().await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(backup.calls().len(), 1);
    assert_eq!(backup.calls()[0].body["model"], "small-model");
    // The failed target cools down: the next call goes straight to the backup.
    let before = primary.calls().len();
    assert_eq!(ask().await.status, 200);
    assert_eq!(
        primary.calls().len(),
        before,
        "the cooling target is skipped"
    );

    // Both failing: the client gets the last provider error, status kept (the cooling
    // target is tried last: its 503).
    backup.fail(500);
    let rsp = ask().await;
    assert_eq!(rsp.status, 503, "{}", rsp.text());
    assert_eq!(backup.calls().len(), 3);
    assert!(rsp.json()["error"]["message"].is_string());

    // A 400 is the client's own fault: no fallback, the answer as the provider gave it.
    primary.fail(400);
    backup.fail(0);
    r.shutdown().await;

    let (primary, backup) = (FakeOpenAi::openai().await, FakeOpenAi::openai().await);
    let r = gateway(&config(&primary, &backup, ""));
    primary.fail(400);
    let rsp = post(
        &r,
        "/v1/chat/completions",
        json!({"model": "smart", "messages": []}),
    )
    .await;
    assert_eq!(rsp.status, 400);
    assert_eq!(rsp.json()["error"]["code"], "context_length_exceeded");
    assert_eq!(backup.calls().len(), 0, "no fallback on a 400");

    // 429 on one key: the other key of the same provider is tried next.
    primary.fail(429);
    let rsp = post(
        &r,
        "/v1/chat/completions",
        json!({"model": "smart", "messages": []}),
    )
    .await;
    let keys: std::collections::HashSet<String> = primary.calls()[1..]
        .iter()
        .map(|c| c.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 2, "both keys tried before falling back");
    assert_eq!(rsp.status, 200, "then the backup target");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_falls_back_and_a_template_route_answers_json() {
    let (mut primary, backup) = (FakeOpenAi::openai().await, FakeOpenAi::openai().await);
    let r = gateway(&config(&primary, &backup, ""));
    primary.server.stop();
    let rsp = post(
        &r,
        "/ai/summarize",
        json!({"max_words": 12, "text": "Long text."}),
    )
    .await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let v = rsp.json();
    assert_eq!(v["output"], FAKE_TEXT);
    assert_eq!(v["model"], "smart");
    let sent = &backup.calls()[0].body;
    assert_eq!(
        sent["messages"][0]["content"],
        "Summarize in 12 words:\nLong text."
    );

    let missing = post(&r, "/ai/summarize", json!({"text": "x"})).await;
    assert_eq!(missing.status, 400);
    assert!(
        missing.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_words")
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_may_cache_whole_answers_and_mask_personal_data() {
    let llm = FakeOpenAi::openai().await;
    let r = gateway(&format!(
        r#"ai:
  providers:
    compat: {{ kind: openai_compatible, base_url: "{}" }}
  models:
    - {{ name: smart, targets: [compat/m] }}
routes:
  - {{ name: llm, match: {{ paths: [/v1/*] }}, ai: {{ cache: {{ ttl: 60s }}, mask: [email, card] }} }}
"#,
        llm.base_url()
    ));
    let ask = r#"{"model":"smart","messages":[{"role":"user","content":"mail me at jane@example.com, card 4111 1111 1111 1111"}]}"#;
    let first = post(
        &r,
        "/v1/chat/completions",
        serde_json::from_str(ask).unwrap(),
    )
    .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["x-weir-cache"], "miss");
    let sent = llm.calls()[0].body["messages"][0]["content"].clone();
    assert_eq!(
        sent, "mail me at [EMAIL], card [CARD]",
        "masked before it left"
    );
    let mut fields: Vec<String> = llm.calls()[0]
        .body
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    fields.sort();
    assert_eq!(fields, ["messages", "model"], "masking adds no field");
    // The same request, its keys in another order: answered from the cache.
    let again = post(&r, "/v1/chat/completions", json!({"messages": [{"content": "mail me at jane@example.com, card 4111 1111 1111 1111", "role": "user"}], "model": "smart"})).await;
    assert_eq!(again.headers["x-weir-cache"], "hit");
    assert_eq!(again.body, first.body);
    assert_eq!(llm.calls().len(), 1);
    // Streams and other requests go to the provider.
    let mut stream: Value = serde_json::from_str(ask).unwrap();
    stream["stream"] = json!(true);
    post(&r, "/v1/chat/completions", stream).await;
    post(
        &r,
        "/v1/chat/completions",
        json!({"model": "smart", "messages": [{"role": "user", "content": "other"}]}),
    )
    .await;
    assert_eq!(llm.calls().len(), 3);
    r.shutdown().await;
}

/// A prompt-template route masks and caches like any AI route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_route_masks_and_caches() {
    let llm = FakeOpenAi::openai().await;
    let r = gateway(&format!(
        r#"ai:
  providers:
    compat: {{ kind: openai_compatible, base_url: "{}" }}
  models:
    - {{ name: smart, targets: [compat/m] }}
routes:
  - name: summarize
    match: {{ paths: [/ai/summarize], methods: [POST] }}
    ai: {{ model: smart, prompt_template: "Summarize: {{{{text}}}}", cache: {{ ttl: 60s }}, mask: [email] }}
"#,
        llm.base_url()
    ));
    let ask = json!({"text": "write to jane@example.com"});
    let first = post(&r, "/ai/summarize", ask.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["output"], weir_testkit::fake_llm::FAKE_TEXT);
    assert_eq!(first.headers["x-weir-cache"], "miss");
    assert_eq!(
        llm.calls()[0].body["messages"][0]["content"],
        "Summarize: write to [EMAIL]",
        "masked before it left"
    );
    let again = post(&r, "/ai/summarize", ask).await;
    assert_eq!(again.headers["x-weir-cache"], "hit");
    assert_eq!(again.body, first.body);
    assert_eq!(
        llm.calls().len(),
        1,
        "the second answer came from the cache"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_openai_gets_its_deployment_path_version_and_key_header() {
    let azure = FakeOpenAi::openai().await;
    let r = gateway(&format!(
        r#"ai:
  providers:
    azure: {{ kind: azure_openai, base_url: "http://{}/openai", api_version: "2024-10-21", api_keys: ["azure-key-aaaaaaaaaaaa"] }}
  models:
    - {{ name: smart, targets: [azure/gpt-4o-prod] }}
routes:
  - {{ name: llm, match: {{ paths: [/v1/*] }}, ai: {{}} }}
"#,
        azure.server.address()
    ));
    let rsp = post(
        &r,
        "/v1/chat/completions",
        json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let sent = &azure.calls()[0];
    assert_eq!(
        sent.path,
        "/openai/deployments/gpt-4o-prod/chat/completions"
    );
    assert_eq!(sent.query, "api-version=2024-10-21");
    assert_eq!(sent.headers["api-key"], "azure-key-aaaaaaaaaaaa");
    assert!(sent.headers.get("authorization").is_none());
    r.shutdown().await;
}

/// An AI route parses its body whole, so it takes 32 MiB unless the route says otherwise
/// (a larger prompt is refused before it is read), and JSON nested deeper than 128 levels
/// gets a clear 400 instead of a parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_routes_take_32_mib_by_default_and_json_nested_128_deep() {
    let (primary, backup) = (FakeOpenAi::openai().await, FakeOpenAi::openai().await);
    let chat = |size: usize| json!({"model": "smart", "messages": [{"role": "user", "content": "x".repeat(size)}]});
    let r = gateway(&config(&primary, &backup, ""));
    // Refused on its Content-Length, before a byte of the body is read (a client still
    // sending 33 MiB would see the connection close under it).
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{{",
        33 << 20
    );
    let big = weir_testkit::raw_request(
        &r.proxy_addr.to_string(),
        head.as_bytes(),
        std::time::Duration::from_millis(500),
    )
    .await;
    assert!(big.starts_with("HTTP/1.1 413"), "{big}");
    assert!(big.contains("payload_too_large"), "{big}");
    let fits = post(&r, "/v1/chat/completions", chat(31 << 20)).await;
    assert_eq!(fits.status, 200, "{}", fits.text());
    assert_eq!(primary.calls().len(), 1, "only the one that fits was sent");

    let nested = |depth: usize| {
        let mut v = json!("deep");
        for _ in 0..depth {
            v = json!([v]);
        }
        json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}], "metadata": {"x": v}})
    };
    let deep = post(&r, "/v1/chat/completions", nested(130)).await;
    assert_eq!(deep.status, 400, "{}", deep.text());
    assert!(
        deep.text().contains("deeper than 128 levels"),
        "{}",
        deep.text()
    );
    let fine = post(&r, "/v1/chat/completions", nested(100)).await;
    assert_eq!(fine.status, 200, "{}", fine.text());
    let broken = common::ai::post_raw(&r, "/v1/chat/completions", "{\"model\": ").await;
    assert_eq!(broken.status, 400);
    assert!(
        broken.text().contains("not valid JSON (line 1"),
        "{}",
        broken.text()
    );
    r.shutdown().await;

    // A route that needs more says so.
    let r = gateway(
        &config(&primary, &backup, "").replace("ai: {} }", "ai: {}, max_body_size: 40MiB }"),
    );
    let big = post(&r, "/v1/chat/completions", chat(33 << 20)).await;
    assert_eq!(big.status, 200, "{}", big.text());
    r.shutdown().await;
}
