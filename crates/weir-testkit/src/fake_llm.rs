//! A wire-faithful fake of OpenAI's API (`/v1/chat/completions` whole and streamed, with
//! tool calls and usage; `/v1/embeddings`; `/v1/models`; OpenAI's error shape), for the
//! AI gateway's tests. It records what it was sent and can be told to fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::upstream::{Behavior, Body, MockUpstream, full};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct LlmCall {
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    pub headers: http::HeaderMap,
    pub body: Value,
}

/// A fake provider: a real HTTP server answering in one provider's wire format.
pub struct FakeProvider {
    pub server: MockUpstream,
    pub calls: Arc<Mutex<Vec<LlmCall>>>,
    /// 0: answer; otherwise fail every call with this status, in the provider's error
    /// shape (429 adds `Retry-After: 1`).
    pub fail_with: Arc<AtomicU16>,
}

/// The fake of OpenAI's API.
pub type FakeOpenAi = FakeProvider;

/// How a fake answers a recorded call, given the status it was told to fail with.
pub type Respond = fn(&LlmCall, u16) -> Response<Body>;

/// What the fake's completions say.
pub const FAKE_TEXT: &str = "Hello from the fake model.";
/// Its token counts: input, output.
pub const FAKE_USAGE: (u64, u64) = (11, 7);

impl FakeProvider {
    /// A fake of OpenAI's API.
    pub async fn openai() -> Self {
        Self::start_with(openai_respond).await
    }

    pub async fn start_with(respond: Respond) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let fail_with = Arc::new(AtomicU16::new(0));
        let (c, f) = (Arc::clone(&calls), Arc::clone(&fail_with));
        let handler: crate::upstream::Handler = Arc::new(move |req: Request<Incoming>| {
            let (c, f) = (Arc::clone(&c), Arc::clone(&f));
            Box::pin(async move {
                let (parts, body) = req.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let call = LlmCall {
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    headers: parts.headers,
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                };
                c.lock().push(call.clone());
                respond(&call, f.load(Ordering::SeqCst))
            })
        });
        Self {
            server: MockUpstream::start(Behavior::Custom(handler)).await,
            calls,
            fail_with,
        }
    }

    /// `http://127.0.0.1:PORT/v1`, what a provider's `base_url` is.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.server.address())
    }

    pub fn calls(&self) -> Vec<LlmCall> {
        self.calls.lock().clone()
    }

    pub fn fail(&self, status: u16) {
        self.fail_with.store(status, Ordering::SeqCst);
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn openai_respond(call: &LlmCall, status: u16) -> Response<Body> {
    let (body, path) = (&call.body, &call.path);
    if status != 0 {
        let (kind, code) = match status {
            429 => ("requests", "rate_limit_exceeded"),
            401 => ("invalid_request_error", "invalid_api_key"),
            400 => ("invalid_request_error", "context_length_exceeded"),
            _ => ("server_error", "server_error"),
        };
        let mut r = json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &json!({"error": {"message": format!("fake failure {status}"), "type": kind, "param": null, "code": code}}),
        );
        if status == 429 {
            r.headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("1"));
        }
        return r;
    }
    let model = body["model"].as_str().unwrap_or("unknown").to_owned();
    if path.ends_with("/models") {
        return json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 1700000000, "owned_by": "fake"}]}),
        );
    }
    if path.ends_with("/embeddings") {
        let inputs = match &body["input"] {
            Value::Array(a) => a.len(),
            _ => 1,
        };
        let data: Vec<Value> = (0..inputs)
            .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.1, -0.2, 0.3]}))
            .collect();
        return json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 5 * inputs, "total_tokens": 5 * inputs}}),
        );
    }
    let tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let (input, output) = FAKE_USAGE;
    let usage = json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output,
        "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}});
    if body["stream"].as_bool() != Some(true) {
        let message = if tools {
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]})
        } else {
            json!({"role": "assistant", "content": FAKE_TEXT})
        };
        return json_response(
            StatusCode::OK,
            &json!({"id": "chatcmpl-fake1", "object": "chat.completion", "created": 1700000000, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": if tools { "tool_calls" } else { "stop" }}],
                "usage": usage}),
        );
    }
    let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"id": "chatcmpl-fake1", "object": "chat.completion.chunk", "created": 1700000000,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        format!("data: {c}\n\n")
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if tools {
        events.push(chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            Value::Null,
        ));
        for piece in ["{\"city\"", ":\"Oslo\"}"] {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
        events.push(chunk(json!({}), json!("tool_calls")));
    } else {
        for word in FAKE_TEXT.split_inclusive(' ') {
            events.push(chunk(json!({"content": word}), Value::Null));
        }
        events.push(chunk(json!({}), json!("stop")));
    }
    if include_usage {
        events.push(format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-fake1", "object": "chat.completion.chunk", "created": 1700000000,
                "model": model, "choices": [], "usage": usage})
        ));
    }
    events.push("data: [DONE]\n\n".to_owned());
    sse_response(events)
}

/// A `text/event-stream` answer sending `events` a few milliseconds apart, as a model
/// streams.
pub(crate) fn sse_response(events: Vec<String>) -> Response<Body> {
    let stream = futures_util::stream::unfold(events.into_iter(), |mut it| async move {
        let e = it.next()?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        Some((
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(e))),
            it,
        ))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    r
}
