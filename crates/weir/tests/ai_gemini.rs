//! Gemini's native API behind the OpenAI and Anthropic APIs, through the assembled
//! server against a fake Gemini: chat whole and streamed (alt=sse, no `[DONE]`), tool
//! calls that end with `STOP`, thoughts counted as output, embeddings, Google's errors in
//! the caller's shape, and fallback from Gemini to the next target.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::*;
use serde_json::{Value, json};
use weir_testkit::FakeOpenAi;
use weir_testkit::fake_gemini::{GEMINI_TEXT, GEMINI_USAGE};
use weir_testkit::fake_llm::{FAKE_TEXT, FakeProvider};

async fn post(r: &weir_proxy::app::Running, path: &str, body: Value) -> weir_testkit::Reply {
    common::ai::post_json(r, path, &[("anthropic-version", "2023-06-01")], &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_answers_the_openai_and_anthropic_apis() {
    let (gemini, backup) = (FakeProvider::gemini().await, FakeOpenAi::openai().await);
    let r = gateway(&format!(
        r#"ai:
  providers:
    google: {{ kind: gemini, base_url: "{}", api_keys: ["gemini-key-aaaaaaaaaaaa"] }}
    compat: {{ kind: openai_compatible, base_url: "{}" }}
  models:
    - {{ name: flash, targets: [google/gemini-2.5-flash, compat/backup] }}
    - {{ name: embed, targets: [google/text-embedding-004] }}
routes:
  - {{ name: llm, match: {{ paths: ["/v1/*"] }}, ai: {{}} }}
"#,
        gemini.gemini_base_url(),
        backup.base_url()
    ));
    let rsp = post(&r, "/v1/chat/completions", json!({"model": "flash", "max_tokens": 20,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]})).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let v = rsp.json();
    assert_eq!(v["choices"][0]["message"]["content"], GEMINI_TEXT);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Oslo\"}"
    );
    let (prompt, out, thoughts) = GEMINI_USAGE;
    assert_eq!(v["usage"]["prompt_tokens"], prompt);
    assert_eq!(v["usage"]["completion_tokens"], out + thoughts);
    let sent = &gemini.calls()[0];
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(sent.headers["x-goog-api-key"], "gemini-key-aaaaaaaaaaaa");
    assert!(!sent.path.contains("key="), "the key never goes in the URL");
    assert_eq!(
        sent.body["systemInstruction"]["parts"][0]["text"],
        "Be brief."
    );
    assert_eq!(sent.body["generationConfig"]["maxOutputTokens"], 20);

    // Streamed to an OpenAI client: chunks, then usage and [DONE] that Gemini never sends.
    let rsp = post(&r, "/v1/chat/completions", json!({"model": "flash", "stream": true,
        "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]})).await;
    let (chunks, said) = common::ai::openai_stream(&rsp.text());
    assert_eq!(said, GEMINI_TEXT);
    assert_eq!(
        chunks.last().unwrap()["usage"]["completion_tokens"],
        out + thoughts
    );
    assert!(
        gemini
            .calls()
            .last()
            .unwrap()
            .path
            .ends_with(":streamGenerateContent")
    );

    // Streamed to an Anthropic client.
    let rsp = post(
        &r,
        "/v1/messages",
        json!({"model": "flash", "max_tokens": 20, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let text = rsp.text();
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(
        text.trim_end()
            .ends_with("data: {\"type\":\"message_stop\"}"),
        "{text}"
    );

    let emb = post(
        &r,
        "/v1/embeddings",
        json!({"model": "embed", "input": ["a", "b", "c"]}),
    )
    .await;
    assert_eq!(emb.status, 200, "{}", emb.text());
    assert_eq!(emb.json()["data"][2]["embedding"], json!([0.5, 0.25]));
    assert_eq!(
        gemini.calls().last().unwrap().body["requests"][0]["model"],
        "models/text-embedding-004"
    );

    // Gemini rate limited: the next target answers; with none left, Google's error comes
    // back in OpenAI's shape with its status.
    gemini.fail(429);
    let rsp = post(
        &r,
        "/v1/chat/completions",
        json!({"model": "flash", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.json()["choices"][0]["message"]["content"], FAKE_TEXT);
    let rsp = post(
        &r,
        "/v1/embeddings",
        json!({"model": "embed", "input": "a"}),
    )
    .await;
    assert_eq!(rsp.status, 429, "{}", rsp.text());
    assert_eq!(rsp.json()["error"]["message"], "fake failure 429");
    assert!(
        rsp.json()["error"]["type"].is_string(),
        "OpenAI's error shape: {}",
        rsp.text()
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_urls_reach_gemini_inline_only_through_the_ssrf_guard() {
    use base64::Engine as _;
    let gemini = FakeProvider::gemini().await;
    // An image a prompt links to.
    let image = weir_testkit::MockUpstream::start(weir_testkit::Behavior::Fixed {
        content_type: "image/png",
        body: b"\x89PNG\r\n\x1a\nfake-image",
    })
    .await;
    let url = format!("http://{}/cat.png", image.address());
    let config = |images: &str| {
        format!(
            r#"ai:
  providers:
    google: {{ kind: gemini, base_url: "{}", api_keys: ["gemini-key-aaaaaaaaaaaa"] }}
  models:
    - {{ name: flash, targets: [google/gemini-2.5-flash] }}
  prices:
    google/gemini-2.5-flash: {{ input: 1000, output: 1000 }}
{images}routes:
  - {{ name: llm, match: {{ paths: ["/v1/*"] }}, ai: {{}}, policies: [ {{ ai_limits: {{ budget_usd_per_month: 0.1, per: route }} }} ] }}
"#,
            gemini.gemini_base_url()
        )
    };
    let openai = json!({"model": "flash", "max_tokens": 20, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url}}]}]});

    // By default only public addresses may be fetched: a link to this machine is refused
    // before Gemini is called, and the refused calls spend nothing (each reserves about
    // $0.07 of the $0.10 budget, so a leaked reservation would make the next one a 429).
    let r = gateway(&config(""));
    for _ in 0..3 {
        let rsp = post(&r, "/v1/chat/completions", openai.clone()).await;
        assert_eq!(rsp.status, 400, "{}", rsp.text());
        let msg = rsp.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            msg.starts_with("messages[0].content[1].image_url: cannot download the image")
                && msg.contains("outside the allowed networks"),
            "{msg}"
        );
    }
    assert!(gemini.calls().is_empty());
    r.shutdown().await;

    // Allowed: the image goes to Gemini inline, from the OpenAI and the Anthropic API.
    let r = gateway(&config(
        "  images: { allowed_networks: [127.0.0.0/8], max_size: 1MB }\n",
    ));
    let rsp = post(&r, "/v1/chat/completions", openai).await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let inline = json!({"inlineData": {"mimeType": "image/png",
        "data": base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\nfake-image")}});
    assert_eq!(gemini.calls()[0].body["contents"][0]["parts"][1], inline);
    let rsp = post(
        &r,
        "/v1/messages",
        json!({"model": "flash", "max_tokens": 20, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "url", "url": url}}]}]}),
    )
    .await;
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(gemini.calls()[1].body["contents"][0]["parts"][1], inline);
    r.shutdown().await;
}
