//! Structure-aware fuzzing on stable: request and response translation between the OpenAI,
//! Anthropic and Gemini shapes, fed many random JSON documents built from the words those
//! APIs use (so most reach deep into the translators), must answer or refuse, never panic.
//! The seed is fixed, so a failure is the same on every run; `WEIR_FUZZ_ROUNDS` runs more
//! rounds (a longer hunt) than CI's.

// Tests: a panic is the failure being looked for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use weir_ai::{gemini, translate};

const KEYS: [&str; 24] = [
    "model",
    "messages",
    "role",
    "content",
    "system",
    "tools",
    "tool_calls",
    "tool_choice",
    "type",
    "text",
    "image_url",
    "url",
    "function",
    "name",
    "arguments",
    "input",
    "id",
    "max_tokens",
    "stream",
    "stop",
    "temperature",
    "choices",
    "usage",
    "parts",
];
const WORDS: [&str; 12] = [
    "user",
    "assistant",
    "system",
    "tool",
    "text",
    "image",
    "image_url",
    "tool_use",
    "tool_result",
    "function",
    "auto",
    "data:image/png;base64,AAAA",
];

fn value(rng: &mut fastrand::Rng, depth: u32) -> Value {
    weir_testkit::fuzz::value(rng, depth, &KEYS, &WORDS)
}

/// A request-like document: an object with a model and messages most of the time.
fn request(rng: &mut fastrand::Rng) -> Value {
    let mut v = value(rng, 5);
    if let Value::Object(m) = &mut v
        && rng.u8(0..4) > 0
    {
        let messages: Vec<Value> = (0..rng.usize(0..4))
            .map(|_| {
                let mut msg = value(rng, 4);
                if let Value::Object(mm) = &mut msg {
                    mm.insert("role".into(), json!(WORDS[rng.usize(..4)]));
                }
                msg
            })
            .collect();
        m.insert("messages".into(), Value::Array(messages));
    }
    v
}

#[test]
fn translations_answer_or_refuse_any_document_without_panicking() {
    let mut rng = fastrand::Rng::with_seed(0x5EED_2026_1206);
    let mut refused = 0;
    for _ in 0..weir_testkit::fuzz::rounds(20_000) {
        let doc = request(&mut rng);
        refused += usize::from(translate::anthropic_request_to_openai(&doc).is_err());
        refused += usize::from(translate::openai_request_to_anthropic(&doc, "m").is_err());
        refused += usize::from(gemini::request_from_openai(&doc).is_err());
        refused += usize::from(gemini::embed_request(&doc, "m").is_err());
        let _ = translate::openai_response_to_anthropic(&doc, "m");
        let _ = translate::anthropic_response_to_openai(&doc, "m");
        let _ = gemini::response_to_openai(&doc, "m");
        let _ = gemini::embed_response(&doc, "m", 10);
        let _ = gemini::usage(&doc);
        let _ = translate::error_parts(&doc);
        let mut m = doc.clone();
        translate::to_mistral(&mut m);
    }
    assert!(refused > 0, "the generator reaches the refusals too");
}

/// Documents that once broke a translator, kept as they were found.
#[test]
fn the_kept_corpus_still_translates() {
    let corpus = [
        json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
        json!({"messages": [{"role": "assistant", "tool_calls": [{"function": null}]}]}),
        json!({"system": [{"type": "text"}], "messages": [{"role": "user", "content": []}]}),
        json!({"messages": [{"role": "tool", "content": {"text": 1}}], "tools": [{"function": 7}]}),
        // Mistral's id mapping assigned into whatever stood where a message or a tool call
        // belongs: a string there panicked (found by the test above, 2026-12-06).
        json!({"messages": ["hi", {"role": "assistant", "tool_calls": ["x", {"id": "call_1"}]}], "seed": 1}),
        json!("a whole body that is a string"),
    ];
    for doc in corpus {
        let _ = translate::anthropic_request_to_openai(&doc);
        let _ = translate::openai_request_to_anthropic(&doc, "m");
        let _ = gemini::request_from_openai(&doc);
        let mut m = doc.clone();
        translate::to_mistral(&mut m);
    }
    let mut m =
        json!({"messages": [{"role": "tool", "tool_call_id": "call_abcdefghijkl"}], "seed": 7});
    translate::to_mistral(&mut m);
    assert_eq!(m["messages"][0]["tool_call_id"].as_str().unwrap().len(), 9);
    assert_eq!(m["random_seed"], 7);
}
