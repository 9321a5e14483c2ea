//! An AI route's requests: which API (`/v1/chat/completions`, `/v1/messages`,
//! `/v1/embeddings`, `/v1/models`, or a prompt template), which model, whether the route's
//! limits let the call through; then [`crate::call`] takes it through the model's targets.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::call::Call;
use crate::catalog::{Catalog, Model};
use crate::usage::Usage;
use crate::{AiPlane, errors};

/// Why a body is not JSON Weir takes, for the client: the position of a syntax error, or
/// the nesting limit.
pub(crate) fn not_json(e: &serde_json::Error) -> String {
    if e.to_string().starts_with("recursion limit exceeded") {
        format!(
            "the body nests objects and arrays deeper than {} levels",
            weir_config::ai::MAX_JSON_DEPTH
        )
    } else {
        format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    }
}

/// The body as a JSON object, or why it is not one (for the client).
fn json_object(body: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("the body must be a JSON object".to_owned()),
        Err(e) => Err(not_json(&e)),
    }
}

/// Who is calling, as the route's auth policy found them (with the credential's model
/// scope).
pub type Caller<'a> = Option<&'a weir_policy::Consumer>;

/// Whether `caller`'s key may use `model`.
fn allowed(caller: Caller<'_>, model: &str) -> bool {
    caller
        .and_then(|c| c.models.as_ref())
        .is_none_or(|m| m.iter().any(|x| x == model))
}

/// An AI route, compiled.
pub struct AiRoute {
    pub name: String,
    pub catalog: Arc<Catalog>,
    pub plane: Arc<AiPlane>,
    pub default_model: Option<String>,
    pub template: Option<String>,
    /// The route's `ai_limits`, when it has them.
    pub limits: Option<Arc<crate::limits::Limits>>,
    pub cache: Option<Arc<crate::cache::AiCache>>,
    pub mask: Option<crate::mask::Mask>,
    pub log_bodies: bool,
}

pub enum AiBody {
    Full(Bytes),
    Stream(mpsc::Receiver<Bytes>),
}

pub struct AiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: AiBody,
}

impl AiResponse {
    pub(crate) fn json(status: StatusCode, v: &Value) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Self {
            status,
            headers,
            body: AiBody::Full(Bytes::from(v.to_string())),
        }
    }
}

/// Which API a request is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Api {
    Chat,
    Embeddings,
}

impl Api {
    pub(crate) fn endpoint(self) -> &'static str {
        match self {
            Self::Chat => "chat/completions",
            Self::Embeddings => "embeddings",
        }
    }
}

/// What the client sent, when it spoke Anthropic's Messages API: its body (passed to
/// Anthropic providers as it is, the model swapped) and version headers.
pub(crate) struct AnthropicIn {
    pub body: Value,
    pub version: Option<HeaderValue>,
    pub beta: Option<HeaderValue>,
}

/// Answers one request of an AI route; `consumer` is who the route's auth found.
pub async fn answer(
    route: &AiRoute,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
    consumer: Caller<'_>,
) -> AiResponse {
    if let Some(t) = &route.template {
        if method != Method::POST {
            return errors::openai(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "POST a JSON object of the template's variables",
            );
        }
        return crate::template::answer(route, t, body, consumer).await;
    }
    let messages_api = path.ends_with("/messages");
    let api = if path.ends_with("/chat/completions") || messages_api {
        Api::Chat
    } else if path.ends_with("/embeddings") {
        Api::Embeddings
    } else if path.ends_with("/models") {
        return models(&route.catalog, consumer);
    } else {
        return errors::openai(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "this route serves /v1/chat/completions, /v1/messages, /v1/embeddings and /v1/models",
        );
    };
    if method != Method::POST {
        return errors::for_client(messages_api, StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    let mut sent = match json_object(&body) {
        Ok(v) => v,
        Err(why) => return errors::for_client(messages_api, StatusCode::BAD_REQUEST, &why),
    };
    // Parsed: the bytes are not needed again, and a large prompt should not be held twice
    // while the provider answers.
    drop(body);
    // Personal data is masked before anything is translated, cached or sent.
    if let Some(m) = &route.mask {
        if messages_api {
            m.anthropic(&mut sent);
        } else {
            m.request(&mut sent);
        }
    }
    let cache_key = route
        .cache
        .as_ref()
        .filter(|_| sent["stream"].as_bool() != Some(true))
        .map(|_| {
            let who = consumer.map_or("-", |c| &*c.name);
            let api_name = if messages_api {
                "messages"
            } else {
                api.endpoint()
            };
            crate::cache::AiCache::key(who, api_name, &sent)
        });
    if let (Some(c), Some(k)) = (&route.cache, &cache_key)
        && let Some(hit) = c.get(k)
    {
        let mut rsp = AiResponse::json(StatusCode::OK, &Value::Null);
        rsp.body = AiBody::Full(hit);
        rsp.headers
            .insert("x-weir-cache", HeaderValue::from_static("hit"));
        return rsp;
    }
    let logged = route.log_bodies.then(|| sent.clone());
    let (mut request, anthropic) = if messages_api {
        match crate::translate::anthropic_request_to_openai(&sent) {
            Ok(o) => (
                o,
                Some(AnthropicIn {
                    body: sent,
                    version: headers.get("anthropic-version").cloned(),
                    beta: headers.get("anthropic-beta").cloned(),
                }),
            ),
            Err(e) => return errors::for_client(true, StatusCode::BAD_REQUEST, &e),
        }
    } else {
        (sent, None)
    };
    let (asked, model) = match resolve_model(route, consumer, messages_api, &request) {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let stream = api == Api::Chat && request["stream"].as_bool() == Some(true);
    let wants_usage =
        anthropic.is_some() || request["stream_options"]["include_usage"].as_bool() == Some(true);
    if stream {
        // Usage is counted on every stream: asked for upstream, passed on only when the
        // client asked for it too.
        request["stream_options"]["include_usage"] = Value::Bool(true);
    }
    let prompt_bytes = prompt_size(&request);
    let admission = match admit(route, model, &request, prompt_bytes, consumer).await {
        Ok(a) => a,
        Err(refused) => return refused.for_client(anthropic.is_some()),
    };
    let call = Call {
        route,
        model,
        api,
        stream,
        wants_usage,
        anthropic,
        consumer: consumer.map(|c| Arc::clone(&c.name)),
        key: consumer.and_then(|c| c.key.clone()),
        started: Instant::now(),
        admission: parking_lot::Mutex::new(admission),
        prompt_bytes,
    };
    let mut rsp = call.run(request).await;
    if let AiBody::Full(b) = &rsp.body
        && rsp.status == StatusCode::OK
    {
        if let (Some(c), Some(k)) = (&route.cache, cache_key) {
            c.put(k, b.clone());
            rsp.headers
                .insert("x-weir-cache", HeaderValue::from_static("miss"));
        }
        // Only when the route opted in: prompts and completions are not logged otherwise.
        if let Some(prompt) = logged {
            tracing::info!(route = %route.name, model = %asked, prompt = %prompt, completion = %String::from_utf8_lossy(b), "AI call");
        }
    }
    rsp
}

/// A call the route's limits refused.
struct Refused(crate::limits::Refusal);

impl Refused {
    fn for_client(&self, anthropic: bool) -> AiResponse {
        let status = if self.0 == crate::limits::Refusal::StoreDown {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        let mut rsp = if anthropic {
            errors::for_client(true, status, self.0.message())
        } else {
            AiResponse::json(
                status,
                &serde_json::json!({"error": {"message": self.0.message(), "type": "rate_limit_error", "param": null, "code": self.0.code()}}),
            )
        };
        let after = crate::limits::Limits::retry_after(self.0);
        rsp.headers
            .insert(header::RETRY_AFTER, HeaderValue::from(after));
        rsp
    }
}

/// The size of a request's prompt as sent (messages and embedding input), measured once
/// for the limits' estimate and for calls a provider counts no tokens of.
/// The model the request names (or the route's default), if the caller's key may use it
/// and the route serves it; else the answer that says why not.
fn resolve_model<'r>(
    route: &'r AiRoute,
    consumer: Caller<'_>,
    messages_api: bool,
    request: &Value,
) -> Result<(String, &'r Model), Box<AiResponse>> {
    let Some(asked) = request["model"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| route.default_model.clone())
    else {
        return Err(Box::new(errors::for_client(
            messages_api,
            StatusCode::BAD_REQUEST,
            "name a model in \"model\" (GET /v1/models lists them)",
        )));
    };
    if !allowed(consumer, &asked) {
        return Err(Box::new(errors::for_client(
            messages_api,
            StatusCode::FORBIDDEN,
            &format!(
                "this key may not use the model {asked:?}; GET /v1/models lists the ones it may"
            ),
        )));
    }
    let Some(model) = route.catalog.model(&asked) else {
        if messages_api {
            return Err(Box::new(errors::for_client(
                true,
                StatusCode::NOT_FOUND,
                &format!("model: {asked} is not served here; GET /v1/models lists the models"),
            )));
        }
        return Err(Box::new(errors::model_not_found(&asked)));
    };
    Ok((asked, model))
}

fn prompt_size(request: &Value) -> usize {
    json_len(&request["messages"]) + json_len(&request["input"])
}

/// The length of `v` written as JSON, counted without writing it anywhere (a large prompt
/// is not copied to be measured).
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Writing to a counter cannot fail, and a Value always serializes.
    let _ = serde_json::to_writer(&mut n, v);
    n.0
}

/// Checks the route's limits for this call, reserving its largest likely cost: the
/// prompt (about four bytes a token) plus its output cap, at the dearest of the model's
/// targets.
async fn admit(
    route: &AiRoute,
    model: &Model,
    request: &Value,
    prompt_bytes: usize,
    consumer: Caller<'_>,
) -> Result<Option<crate::limits::Admission>, Refused> {
    let Some(limits) = &route.limits else {
        return Ok(None);
    };
    let input = prompt_bytes as u64 / 4;
    let output = request["max_completion_tokens"]
        .as_u64()
        .or(request["max_tokens"].as_u64())
        .unwrap_or(limits.default_max_tokens);
    let estimate = model
        .targets
        .iter()
        .map(|t| {
            route.catalog.prices.cost(
                &t.label,
                &Usage {
                    input,
                    cached_input: 0,
                    output,
                },
            )
        })
        .fold(0.0, f64::max);
    limits
        .admit(
            consumer.map(|c| crate::limits::Who {
                consumer: &c.name,
                key: c.key.as_deref(),
                groups: &c.groups,
            }),
            estimate,
        )
        .await
        .map(Some)
        .map_err(Refused)
}

/// A non-streamed chat call of `model` (for prompt templates).
pub(crate) async fn chat_once(
    route: &AiRoute,
    model: &Model,
    request: Value,
    consumer: Caller<'_>,
) -> AiResponse {
    let prompt_bytes = prompt_size(&request);
    let admission = match admit(route, model, &request, prompt_bytes, consumer).await {
        Ok(a) => a,
        Err(refused) => return refused.for_client(false),
    };
    Call {
        route,
        model,
        api: Api::Chat,
        stream: false,
        wants_usage: false,
        anthropic: None,
        consumer: consumer.map(|c| Arc::clone(&c.name)),
        key: consumer.and_then(|c| c.key.clone()),
        started: Instant::now(),
        admission: parking_lot::Mutex::new(admission),
        prompt_bytes,
    }
    .run(request)
    .await
}

/// `GET /v1/models`: the model names clients may ask for.
fn models(catalog: &Catalog, caller: Caller<'_>) -> AiResponse {
    let data: Vec<Value> = catalog
        .models
        .iter()
        .filter(|m| allowed(caller, &m.name))
        .map(|m| json!({"id": m.name, "object": "model", "created": 0, "owned_by": "weir"}))
        .collect();
    AiResponse::json(StatusCode::OK, &json!({"object": "list", "data": data}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_length_is_counted_as_written() {
        let v = json!({"messages": [{"role": "user", "content": "hé \"x\"\n"}]});
        assert_eq!(json_len(&v["messages"]), v["messages"].to_string().len());
        assert_eq!(json_len(&v["input"]), "null".len());
    }
}
