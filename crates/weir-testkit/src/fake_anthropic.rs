//! A wire-faithful fake of Anthropic's Messages API (`POST /v1/messages`, whole and
//! streamed with `event:` names, `ping`s, text and `tool_use` blocks with
//! `input_json_delta`s; usage in `message_start` and `message_delta`; Anthropic's error
//! shape with a `request-id` header). It records what it was sent and can be told to fail.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::fake_llm::{FakeProvider, LlmCall, sse_response};
use crate::upstream::{Body, full};

/// What the fake says, and its token counts (input, output, cache reads).
pub const CLAUDE_TEXT: &str = "Hello from the fake Claude.";
pub const CLAUDE_USAGE: (u64, u64, u64) = (21, 9, 3);

/// The fake of Anthropic's API.
pub type FakeAnthropic = FakeProvider;

impl FakeProvider {
    /// A fake of Anthropic's Messages API.
    pub async fn anthropic() -> Self {
        Self::start_with(anthropic_respond).await
    }
}

fn reply(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert("request-id", http::HeaderValue::from_static("req_fake"));
    r
}

fn sse(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn anthropic_respond(call: &LlmCall, status: u16) -> Response<Body> {
    let (body, parts) = (&call.body, call);
    let kind = |s: u16| match s {
        400 => "invalid_request_error",
        401 => "authentication_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    if status != 0 {
        return reply(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &json!({"type": "error", "error": {"type": kind(status), "message": format!("fake failure {status}")}, "request_id": "req_fake"}),
        );
    }
    if parts.headers.get("anthropic-version").is_none() || body["max_tokens"].as_u64().is_none() {
        return reply(
            StatusCode::BAD_REQUEST,
            &json!({"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version and max_tokens are required"}}),
        );
    }
    let model = body["model"].as_str().unwrap_or("claude").to_owned();
    let tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let (input, output, cached) = CLAUDE_USAGE;
    let usage = json!({"input_tokens": input, "output_tokens": output, "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0});
    if body["stream"].as_bool() != Some(true) {
        let mut content = vec![json!({"type": "text", "text": CLAUDE_TEXT})];
        if tools {
            content.push(json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}));
        }
        return reply(
            StatusCode::OK,
            &json!({"id": "msg_fake1", "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": if tools { "tool_use" } else { "end_turn" }, "stop_sequence": null, "usage": usage}),
        );
    }
    let mut events = vec![
        sse(
            "message_start",
            &json!({"type": "message_start", "message": {"id": "msg_fake1", "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": 1, "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0}}}),
        ),
        sse(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        sse("ping", &json!({"type": "ping"})),
    ];
    for word in CLAUDE_TEXT.split_inclusive(' ') {
        events.push(sse("content_block_delta", &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}})));
    }
    events.push(sse(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    if tools {
        events.push(sse("content_block_start", &json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}})));
        for piece in ["{\"city\": ", "\"Oslo\"}"] {
            events.push(sse(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        events.push(sse(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 1}),
        ));
    }
    events.push(sse("message_delta", &json!({"type": "message_delta",
        "delta": {"stop_reason": if tools { "tool_use" } else { "end_turn" }, "stop_sequence": null}, "usage": {"output_tokens": output}})));
    events.push(sse("message_stop", &json!({"type": "message_stop"})));
    sse_response(events)
}
