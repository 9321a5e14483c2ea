//! A wire-faithful fake of Google Gemini's native API: `models/M:generateContent`,
//! `:streamGenerateContent?alt=sse` (each `data:` a whole answer with only the new parts,
//! no `[DONE]`), `:batchEmbedContents`; function calls without ids that end with `STOP`;
//! `usageMetadata`; Google's error shape. It records what it was sent.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::fake_llm::{FakeProvider, LlmCall, sse_response};
use crate::upstream::{Body, full};

pub const GEMINI_TEXT: &str = "Hello from the fake Gemini.";
/// Prompt, candidates and thoughts tokens.
pub const GEMINI_USAGE: (u64, u64, u64) = (15, 6, 2);

impl FakeProvider {
    /// A fake of Gemini's API; its `base_url` ends in `/v1beta`.
    pub async fn gemini() -> Self {
        Self::start_with(gemini_respond).await
    }

    pub fn gemini_base_url(&self) -> String {
        format!("http://{}/v1beta", self.server.address())
    }
}

fn reply(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn gemini_respond(call: &LlmCall, status: u16) -> Response<Body> {
    if status != 0 {
        let name = match status {
            429 => "RESOURCE_EXHAUSTED",
            400 => "INVALID_ARGUMENT",
            403 => "PERMISSION_DENIED",
            503 => "UNAVAILABLE",
            _ => "INTERNAL",
        };
        return reply(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &json!({"error": {"code": status, "message": format!("fake failure {status}"), "status": name, "details": []}}),
        );
    }
    if call.headers.get("x-goog-api-key").is_none() {
        return reply(
            StatusCode::FORBIDDEN,
            &json!({"error": {"code": 403, "message": "API key missing", "status": "PERMISSION_DENIED"}}),
        );
    }
    let body = &call.body;
    if call.path.ends_with(":batchEmbedContents") {
        let n = body["requests"].as_array().map_or(0, Vec::len);
        let embeddings: Vec<Value> = (0..n).map(|_| json!({"values": [0.5, 0.25]})).collect();
        return reply(StatusCode::OK, &json!({"embeddings": embeddings}));
    }
    let tools = body["tools"][0]["functionDeclarations"]
        .as_array()
        .is_some_and(|t| !t.is_empty());
    let (prompt, out, thoughts) = GEMINI_USAGE;
    let usage = json!({"promptTokenCount": prompt, "candidatesTokenCount": out, "thoughtsTokenCount": thoughts,
        "totalTokenCount": prompt + out + thoughts});
    let call_part = json!({"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}});
    if !call.path.contains(":streamGenerateContent") {
        let mut parts = vec![json!({"text": GEMINI_TEXT})];
        if tools {
            parts.push(call_part);
        }
        return reply(
            StatusCode::OK,
            &json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage, "modelVersion": "gemini-fake"}),
        );
    }
    let words: Vec<&str> = GEMINI_TEXT.split_inclusive(' ').collect();
    let mut events = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let last = i + 1 == words.len() && !tools;
        let mut c = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": w}]}, "index": 0}],
            "usageMetadata": {"promptTokenCount": prompt}});
        if last {
            c["candidates"][0]["finishReason"] = json!("STOP");
            c["usageMetadata"] = usage.clone();
        }
        events.push(format!("data: {c}\r\n\r\n"));
    }
    if tools {
        events.push(format!("data: {}\r\n\r\n", json!({"candidates": [{"content": {"role": "model", "parts": [call_part]}, "finishReason": "STOP", "index": 0}], "usageMetadata": usage})));
    }
    sse_response(events)
}
