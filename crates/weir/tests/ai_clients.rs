//! The official `openai` and `anthropic` Python clients (from PyPI; `scripts/test`
//! installs them) as real clients of Weir, behind key auth: chat whole and streamed, tool
//! calls whole and streamed, Anthropic messages whole and streamed, embeddings, the model
//! list and errors, each against an OpenAI-compatible, an Anthropic and a Gemini provider.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::*;
use weir_testkit::{FakeAnthropic, FakeOpenAi};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_clients_work_against_weir() {
    let (gpt, claude) = (FakeOpenAi::openai().await, FakeAnthropic::anthropic().await);
    let gemini = FakeOpenAi::gemini().await;
    let r = gateway(&format!(
        r#"consumers:
  - {{ name: app, credentials: [ {{ type: key, key: "weir-client-key-0001" }} ] }}
ai:
  providers:
    compat: {{ kind: openai_compatible, base_url: "{}" }}
    anthropic: {{ kind: anthropic, base_url: "{}", api_keys: ["anthropic-key-aaaaaaaaaaaa"] }}
    google: {{ kind: gemini, base_url: "{}", api_keys: ["gemini-key-aaaaaaaaaaaa"] }}
  models:
    - {{ name: gpt, targets: [compat/gpt-4.1] }}
    - {{ name: claude, targets: [anthropic/claude-sonnet-4-5] }}
    - {{ name: gemini, targets: [google/gemini-2.5-flash] }}
    - {{ name: embed, targets: [compat/text-embedding-3-small] }}
routes:
  - {{ name: llm, match: {{ paths: ["/v1/*"] }}, ai: {{}}, policies: [ {{ key_auth: {{}} }} ] }}
"#,
        gpt.base_url(),
        claude.base_url(),
        gemini.gemini_base_url()
    ));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/official_clients.py"
    );
    let base = format!("http://{}", r.proxy_addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(&base)
            .arg("weir-client-key-0001")
            .output()
            .expect("python3 runs (scripts/test installs the openai and anthropic packages)")
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the clients failed:\n{stdout}\n{stderr}"
    );
    for line in [
        "gpt: chat, stream, tools, messages ok",
        "claude: chat, stream, tools, messages ok",
        "embeddings, models, errors ok",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
    // Neither provider ever saw the client's key.
    for call in gpt
        .calls()
        .iter()
        .chain(claude.calls().iter())
        .chain(gemini.calls().iter())
    {
        for v in call.headers.values() {
            assert!(
                !v.to_str().unwrap_or("").contains("weir-client-key"),
                "{:?}",
                call.headers
            );
        }
    }
    r.shutdown().await;
}
