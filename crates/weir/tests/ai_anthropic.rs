//! The AI gateway between the two APIs, through the assembled server: Anthropic clients
//! on `/v1/messages` reach OpenAI-compatible providers (and Anthropic ones byte for byte,
//! their version headers passed on), OpenAI clients reach Anthropic providers; whole
//! answers, streams with tool calls, usage and errors translated both ways.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::*;
use serde_json::{Value, json};
use weir_testkit::fake_anthropic::{CLAUDE_TEXT, CLAUDE_USAGE};
use weir_testkit::fake_llm::FAKE_TEXT;
use weir_testkit::{FakeAnthropic, FakeOpenAi};

fn config(claude: &FakeAnthropic, gpt: &FakeOpenAi) -> String {
    format!(
        r#"ai:
  providers:
    anthropic: {{ kind: anthropic, base_url: "{}", api_keys: ["anthropic-key-aaaaaaaaaaaa"] }}
    compat: {{ kind: openai_compatible, base_url: "{}" }}
  models:
    - {{ name: claude, targets: [anthropic/claude-sonnet-4-5] }}
    - {{ name: gpt, targets: [compat/gpt-4.1] }}
    - {{ name: claude-then-gpt, targets: [anthropic/claude-sonnet-4-5, compat/gpt-4.1] }}
routes:
  - {{ name: llm, match: {{ paths: [/v1/*] }}, ai: {{}} }}
"#,
        claude.base_url(),
        gpt.base_url()
    )
}

async fn post(
    r: &weir_proxy::app::Running,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> weir_testkit::Reply {
    common::ai::post_json(r, path, headers, &body).await
}

/// The `data:` payloads of an SSE body with their event names.
fn sse(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_owned();
            let data = e
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("")
                .to_owned();
            (name, data)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_clients_reach_anthropic_as_is_and_openai_providers_translated() {
    let (claude, gpt) = (FakeAnthropic::anthropic().await, FakeOpenAi::openai().await);
    let r = gateway(&config(&claude, &gpt));
    let ask = json!({"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]});
    let headers = [
        ("x-api-key", "client-key"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "tools-2024-04-04"),
    ];
    let rsp = post(&r, "/v1/messages", &headers, ask.clone()).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let v = rsp.json();
    assert_eq!(v["content"][0]["text"], CLAUDE_TEXT);
    let sent = &claude.calls()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.body["model"], "claude-sonnet-4-5");
    assert_eq!(
        sent.headers["x-api-key"], "anthropic-key-aaaaaaaaaaaa",
        "the provider's key, not the client's"
    );
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert_eq!(sent.headers["anthropic-beta"], "tools-2024-04-04");

    // The same Anthropic request to an OpenAI-compatible provider.
    let mut to_gpt = ask.clone();
    to_gpt["model"] = json!("gpt");
    to_gpt["system"] = json!("Be brief.");
    let rsp = post(&r, "/v1/messages", &headers, to_gpt).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let v = rsp.json();
    assert_eq!(
        (v["type"].as_str(), v["role"].as_str()),
        (Some("message"), Some("assistant"))
    );
    assert_eq!(v["content"][0], json!({"type": "text", "text": FAKE_TEXT}));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["output_tokens"], 7);
    let sent = &gpt.calls()[0].body;
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(sent["max_tokens"], 64);

    // Streamed, with a tool: Anthropic's event sequence, built from OpenAI chunks.
    let rsp = post(
        &r,
        "/v1/messages",
        &headers,
        json!({"model": "gpt", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}),
    )
    .await;
    assert_eq!(rsp.status, 200);
    let events = sse(&rsp.text());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    let tool_start = events
        .iter()
        .find(|(n, d)| n == "content_block_start" && d.contains("tool_use"))
        .unwrap();
    assert!(tool_start.1.contains("get_weather"));
    let json_parts: String = events
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["delta"]["partial_json"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json_parts).unwrap(),
        json!({"city": "Oslo"})
    );
    let delta: Value = serde_json::from_str(&events[names.len() - 2].1).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        delta["usage"]["output_tokens"], 7,
        "usage counted from the provider's usage chunk"
    );

    // Errors in Anthropic's shape, status kept, whichever provider failed.
    gpt.fail(429);
    let rsp = post(
        &r,
        "/v1/messages",
        &headers,
        json!({"model": "gpt", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(rsp.status, 429);
    assert_eq!(rsp.json()["type"], "error");
    assert_eq!(rsp.json()["error"]["type"], "rate_limit_error");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_clients_reach_anthropic_providers_whole_and_streamed() {
    let (claude, gpt) = (FakeAnthropic::anthropic().await, FakeOpenAi::openai().await);
    let r = gateway(&config(&claude, &gpt));
    let auth = [("authorization", "Bearer client-key")];
    let rsp = post(&r, "/v1/chat/completions", &auth, json!({"model": "claude",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]})).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let v = rsp.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], CLAUDE_TEXT);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Oslo\"}"
    );
    let (input, output, cached) = CLAUDE_USAGE;
    assert_eq!(
        v["usage"]["prompt_tokens"],
        input + cached,
        "cache reads are input too"
    );
    assert_eq!(v["usage"]["completion_tokens"], output);
    let sent = &claude.calls()[0];
    assert_eq!(sent.body["system"], "Be brief.");
    assert_eq!(
        sent.body["max_tokens"], 4096,
        "Anthropic needs a cap: the default one"
    );
    assert_eq!(
        sent.body["tools"][0]["input_schema"],
        json!({"type": "object"})
    );
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");

    let rsp = post(&r, "/v1/chat/completions", &auth, json!({"model": "claude", "stream": true,
        "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(rsp.status, 200);
    let text = rsp.text();
    let (chunks, said) = common::ai::openai_stream(&text);
    assert_eq!(said, CLAUDE_TEXT);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], output);
    assert!(
        text.lines().all(|l| !l.starts_with("event:")),
        "OpenAI streams have no event names"
    );

    // Anthropic overloaded (529): the next target, an OpenAI one, answers.
    claude.fail(529);
    let rsp = post(
        &r,
        "/v1/chat/completions",
        &auth,
        json!({"model": "claude-then-gpt", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.json()["choices"][0]["message"]["content"], FAKE_TEXT);
    r.shutdown().await;
}

/// Masking an Anthropic request that has no system prompt adds none: an Anthropic
/// provider refuses `"system": null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masking_sends_anthropic_no_field_the_client_did_not() {
    let (claude, gpt) = (FakeAnthropic::anthropic().await, FakeOpenAi::openai().await);
    let cfg = config(&claude, &gpt).replace("ai: {}", "ai: { mask: [email] }");
    let r = gateway(&cfg);
    let rsp = post(
        &r,
        "/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        json!({"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "I am jane@example.com"}]}),
    )
    .await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let sent = &claude.calls()[0].body;
    assert_eq!(sent["messages"][0]["content"], "I am [EMAIL]");
    assert!(sent.get("system").is_none(), "{sent}");
    r.shutdown().await;
}
