//! An AI route's requests, end to end: which API (`/v1/chat/completions`,
//! `/v1/embeddings`, `/v1/models`, or a prompt template), which model, then the targets in
//! order — each provider key in turn, cooling down what fails — until one answers; its
//! answer (or stream, passed on event by event with usage read on the way) goes back and
//! the call is recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::catalog::{Catalog, Model, Target};
use crate::health::key_slot;
use crate::tap;
use crate::translate_stream::{AnthropicToOpenAi, OpenAiToAnthropic};
use crate::usage::{CallRecord, Usage};
use crate::{AiPlane, errors};
use weir_config::ai::ProviderKind;

/// Who is calling: the consumer's name and groups (from the route's auth policy).
pub type Caller<'a> = Option<(&'a str, &'a [String])>;

/// An AI route, compiled.
pub struct AiRoute {
    pub name: String,
    pub catalog: Arc<Catalog>,
    pub plane: Arc<AiPlane>,
    pub default_model: Option<String>,
    pub template: Option<String>,
    /// The route's `ai_limits`, when it has them.
    pub limits: Option<Arc<crate::limits::Limits>>,
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
    fn endpoint(self) -> &'static str {
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
        return models(&route.catalog);
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
    let sent: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return errors::for_client(
                messages_api,
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object",
            );
        }
    };
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
    let asked = match request["model"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| route.default_model.clone())
    {
        Some(m) => m,
        None => {
            return errors::for_client(
                messages_api,
                StatusCode::BAD_REQUEST,
                "name a model in \"model\" (GET /v1/models lists them)",
            );
        }
    };
    let Some(model) = route.catalog.model(&asked) else {
        if messages_api {
            return errors::for_client(
                true,
                StatusCode::NOT_FOUND,
                &format!("model: {asked} is not served here; GET /v1/models lists the models"),
            );
        }
        return errors::model_not_found(&asked);
    };
    let stream = api == Api::Chat && request["stream"].as_bool() == Some(true);
    let wants_usage =
        anthropic.is_some() || request["stream_options"]["include_usage"].as_bool() == Some(true);
    if stream {
        // Usage is counted on every stream: asked for upstream, passed on only when the
        // client asked for it too.
        request["stream_options"]["include_usage"] = Value::Bool(true);
    }
    let admission = match admit(route, model, &request, consumer).await {
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
        consumer: consumer.map(|(n, _)| n.to_owned()),
        started: Instant::now(),
        admission: parking_lot::Mutex::new(admission),
    };
    call.run(request).await
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

/// Checks the route's limits for this call, reserving its largest likely cost: the
/// prompt (about four bytes a token) plus its output cap, at the dearest of the model's
/// targets.
async fn admit(
    route: &AiRoute,
    model: &Model,
    request: &Value,
    consumer: Caller<'_>,
) -> Result<Option<crate::limits::Admission>, Refused> {
    let Some(limits) = &route.limits else {
        return Ok(None);
    };
    let input =
        (request["messages"].to_string().len() + request["input"].to_string().len()) as u64 / 4;
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
        .admit(consumer, estimate)
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
    let admission = match admit(route, model, &request, consumer).await {
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
        consumer: consumer.map(|(n, _)| n.to_owned()),
        started: Instant::now(),
        admission: parking_lot::Mutex::new(admission),
    }
    .run(request)
    .await
}

/// `GET /v1/models`: the model names clients may ask for.
fn models(catalog: &Catalog) -> AiResponse {
    let data: Vec<Value> = catalog
        .models
        .iter()
        .map(|m| json!({"id": m.name, "object": "model", "created": 0, "owned_by": "weir"}))
        .collect();
    AiResponse::json(StatusCode::OK, &json!({"object": "list", "data": data}))
}

/// One call through the targets of a model.
pub(crate) struct Call<'a> {
    pub(crate) route: &'a AiRoute,
    pub(crate) model: &'a Model,
    pub(crate) api: Api,
    pub(crate) stream: bool,
    /// The client asked for usage on its stream (Anthropic clients always get it).
    pub(crate) wants_usage: bool,
    /// Set when the client called `/v1/messages`.
    pub(crate) anthropic: Option<AnthropicIn>,
    pub(crate) consumer: Option<String>,
    pub(crate) started: Instant,
    /// What the route's limits reserved for the call, settled when it is recorded.
    pub(crate) admission: parking_lot::Mutex<Option<crate::limits::Admission>>,
}

/// What a failed attempt leaves for the client if nothing else answers.
struct Failure {
    status: StatusCode,
    body: Option<Bytes>,
    /// The body is an Anthropic error (else OpenAI's).
    anthropic_shape: bool,
}

/// How a provider's answer counts.
enum Verdict {
    Ok,
    /// This key is out (rate limited, refused): the next key of the same target.
    NextKey,
    /// The target is out (overloaded, down): the next target.
    NextTarget,
    /// The request itself is wrong: the client gets the answer.
    Final,
}

fn verdict(status: StatusCode) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Ok,
        429 | 401 | 403 => Verdict::NextKey,
        408 | 500..=599 => Verdict::NextTarget,
        _ => Verdict::Final,
    }
}

/// Answers up to this size are read whole (larger ones fail the call).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

impl Call<'_> {
    async fn run(self, request: Value) -> AiResponse {
        let plane = &self.route.plane;
        let plan = self.model.plan();
        // Targets sitting out a cooldown go last, so they are still tried when all are.
        let (mut ready, cooling): (Vec<&Target>, Vec<&Target>) = plan
            .into_iter()
            .partition(|t| !plane.health.cooling(&t.label));
        ready.extend(cooling);
        let mut last: Option<Failure> = None;
        for (n, target) in ready.iter().enumerate() {
            let body = match self.provider_body(target, &request) {
                Ok(b) => b,
                Err(Skip::Unsupported(why)) => {
                    tracing::debug!(target = %target.label, why, "target skipped");
                    continue;
                }
                Err(Skip::Refused(why)) => {
                    return errors::for_client(
                        self.anthropic.is_some(),
                        StatusCode::BAD_REQUEST,
                        &why,
                    );
                }
            };
            match self.try_target(target, body, n as u32).await {
                Ok(rsp) => return rsp,
                Err(f) => last = Some(f),
            }
        }
        let f = last.unwrap_or(Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: None,
            anthropic_shape: false,
        });
        let fallbacks = (ready.len() as u32).saturating_sub(1);
        let label = self.model.targets.first().map_or("", |t| &t.label);
        self.record(
            label,
            f.status.as_u16(),
            Usage::default(),
            true,
            0,
            fallbacks,
        );
        match f.body {
            Some(b) => self.provider_error(f.status, b, f.anthropic_shape),
            None => errors::for_client(
                self.anthropic.is_some(),
                if f.status.is_server_error() {
                    f.status
                } else {
                    StatusCode::BAD_GATEWAY
                },
                "no provider of this model answered; try again shortly",
            ),
        }
    }

    /// The body `target`'s provider gets: the client's own when it speaks the same API
    /// (the model swapped), a translation otherwise.
    fn provider_body(&self, target: &Target, request: &Value) -> Result<Bytes, Skip> {
        let p = &target.provider;
        if p.kind == ProviderKind::Anthropic {
            if self.api == Api::Embeddings {
                return Err(Skip::Unsupported("Anthropic has no embeddings API"));
            }
            let mut body = match &self.anthropic {
                Some(a) => a.body.clone(),
                None => crate::translate::openai_request_to_anthropic(request, &target.model)
                    .map_err(Skip::Refused)?,
            };
            body["model"] = Value::String(target.model.clone());
            return Ok(Bytes::from(body.to_string()));
        }
        let mut body = request.clone();
        body["model"] = Value::String(target.model.clone());
        Ok(Bytes::from(body.to_string()))
    }

    /// A provider's error as the client's API shapes errors (status kept).
    fn provider_error(&self, status: StatusCode, body: Bytes, anthropic_shape: bool) -> AiResponse {
        let client_anthropic = self.anthropic.is_some();
        if client_anthropic == anthropic_shape {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return AiResponse {
                status,
                headers,
                body: AiBody::Full(body),
            };
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let message = v["error"]["message"]
            .as_str()
            .unwrap_or("the provider refused the request");
        errors::for_client(client_anthropic, status, message)
    }

    /// Tries each key of one target; the answer, or why the next target should be tried.
    async fn try_target(
        &self,
        target: &Target,
        body: Bytes,
        fallbacks: u32,
    ) -> Result<AiResponse, Failure> {
        let plane = &self.route.plane;
        let p = &target.provider;
        let to_anthropic = p.kind == ProviderKind::Anthropic;
        let keys: Vec<Option<(usize, &HeaderValue)>> = if p.keys.is_empty() {
            vec![None]
        } else {
            let start = fastrand::usize(0..p.keys.len());
            let mut order: Vec<usize> = (0..p.keys.len())
                .map(|i| (start + i) % p.keys.len())
                .collect();
            order.sort_by_key(|&i| plane.health.cooling(&key_slot(&p.name, i)));
            order.into_iter().map(|i| Some((i, &p.keys[i]))).collect()
        };
        let endpoint = match (to_anthropic, self.api) {
            (true, _) => "messages",
            (false, api) => api.endpoint(),
        };
        let url = p.url(endpoint, &target.model);
        let failure = |status| Failure {
            status,
            body: None,
            anthropic_shape: to_anthropic,
        };
        let mut last = failure(StatusCode::BAD_GATEWAY);
        for key in keys {
            let mut req = Request::post(url.as_str())
                .header(header::CONTENT_TYPE, "application/json")
                .header(
                    header::ACCEPT,
                    if self.stream {
                        "text/event-stream"
                    } else {
                        "application/json"
                    },
                );
            if let Some((_, k)) = key
                && let Some((name, value)) = p.auth(k)
            {
                req = req.header(name, value);
            }
            if to_anthropic {
                let a = self.anthropic.as_ref();
                let version = a
                    .and_then(|a| a.version.clone())
                    .unwrap_or(HeaderValue::from_static(ANTHROPIC_VERSION));
                req = req.header("anthropic-version", version);
                if let Some(beta) = a.and_then(|a| a.beta.clone()) {
                    req = req.header("anthropic-beta", beta);
                }
            }
            let Ok(req) = req.body(Full::new(body.clone())) else {
                return Err(failure(StatusCode::BAD_GATEWAY));
            };
            let rsp = match tokio::time::timeout(p.timeout, plane.client.send(req)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::warn!(target = %target.label, error = %e, "provider unreachable; trying the next target");
                    plane.health.cool_down(&target.label, p.cooldown);
                    return Err(failure(StatusCode::BAD_GATEWAY));
                }
                Err(_) => {
                    tracing::warn!(target = %target.label, timeout = ?p.timeout, "provider did not answer in time; trying the next target");
                    plane.health.cool_down(&target.label, p.cooldown);
                    return Err(failure(StatusCode::GATEWAY_TIMEOUT));
                }
            };
            let status = rsp.status();
            match verdict(status) {
                Verdict::Ok => {
                    plane.health.recover(&target.label);
                    return Ok(self.success(target, rsp, fallbacks).await);
                }
                Verdict::Final => {
                    let bytes = read_capped(rsp.into_body()).await.unwrap_or_default();
                    self.record(
                        &target.label,
                        status.as_u16(),
                        Usage::default(),
                        false,
                        0,
                        fallbacks,
                    );
                    return Ok(self.provider_error(status, bytes, to_anthropic));
                }
                v => {
                    let wait = retry_after(rsp.headers()).unwrap_or(p.cooldown);
                    let bytes = read_capped(rsp.into_body()).await.ok();
                    last = Failure {
                        status,
                        body: bytes,
                        anthropic_shape: to_anthropic,
                    };
                    match (v, key) {
                        (Verdict::NextKey, Some((i, _))) => {
                            tracing::warn!(target = %target.label, key = i, status = status.as_u16(), "provider key refused or rate limited; it cools down");
                            plane.health.cool_down(&key_slot(&p.name, i), wait);
                        }
                        _ => {
                            tracing::warn!(target = %target.label, status = status.as_u16(), "provider failed; trying the next target");
                            plane.health.cool_down(&target.label, wait);
                            return Err(last);
                        }
                    }
                }
            }
        }
        Err(last)
    }

    async fn success(
        &self,
        target: &Target,
        rsp: http::Response<Incoming>,
        fallbacks: u32,
    ) -> AiResponse {
        let ttft = self.started.elapsed();
        let from_anthropic = target.provider.kind == ProviderKind::Anthropic;
        let to_anthropic = self.anthropic.is_some();
        let (parts, body) = rsp.into_parts();
        let mut headers = HeaderMap::new();
        if !self.stream {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let bytes = match read_capped(body).await {
                Ok(b) => b,
                Err(e) => {
                    self.record(
                        &target.label,
                        502,
                        Usage::default(),
                        true,
                        ms(ttft),
                        fallbacks,
                    );
                    return errors::for_client(
                        to_anthropic,
                        StatusCode::BAD_GATEWAY,
                        &format!("the provider's answer broke off: {e}"),
                    );
                }
            };
            let v = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
            let usage = if from_anthropic {
                Usage::from_anthropic(&v["usage"])
            } else {
                Usage::from_openai(&v["usage"])
            };
            self.record(
                &target.label,
                parts.status.as_u16(),
                usage.unwrap_or_default(),
                usage.is_none(),
                ms(ttft),
                fallbacks,
            );
            let out = match (from_anthropic, to_anthropic) {
                (true, true) | (false, false) => bytes,
                (true, false) => Bytes::from(
                    crate::translate::anthropic_response_to_openai(&v, &self.model.name)
                        .to_string(),
                ),
                (false, true) => {
                    match crate::translate::openai_response_to_anthropic(&v, &self.model.name) {
                        Ok(a) => Bytes::from(a.to_string()),
                        Err(e) => return errors::for_client(true, StatusCode::BAD_GATEWAY, &e),
                    }
                }
            };
            return AiResponse {
                status: parts.status,
                headers,
                body: AiBody::Full(out),
            };
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let (tx, rx) = mpsc::channel(64);
        let mode = match (from_anthropic, to_anthropic) {
            (false, false) => tap::Mode::OpenAi {
                wants_usage: self.wants_usage,
            },
            (true, true) => tap::Mode::Anthropic,
            (false, true) => {
                tap::Mode::ToAnthropic(Box::new(OpenAiToAnthropic::new(&self.model.name)))
            }
            (true, false) => tap::Mode::ToOpenAi(Box::new(AnthropicToOpenAi::new(
                &self.model.name,
                self.wants_usage,
            ))),
        };
        let t = tap::StreamTap {
            record: self.record_base(&target.label, parts.status.as_u16(), fallbacks),
            plane: Arc::clone(&self.route.plane),
            catalog: Arc::clone(&self.route.catalog),
            mode,
            started: self.started,
            admission: self.admission.lock().take(),
        };
        tokio::spawn(t.run(body, tx));
        AiResponse {
            status: parts.status,
            headers,
            body: AiBody::Stream(rx),
        }
    }

    fn record_base(&self, label: &str, status: u16, fallbacks: u32) -> CallRecord {
        CallRecord {
            route: self.route.name.clone(),
            consumer: self.consumer.clone(),
            model: self.model.name.clone(),
            target: label.to_owned(),
            status,
            usage: Usage::default(),
            estimated: true,
            cost_usd: 0.0,
            latency_ms: 0,
            ttft_ms: 0,
            stream: self.stream,
            fallbacks,
        }
    }

    fn record(
        &self,
        label: &str,
        status: u16,
        usage: Usage,
        estimated: bool,
        ttft_ms: u64,
        fallbacks: u32,
    ) {
        let mut r = self.record_base(label, status, fallbacks);
        r.usage = usage;
        r.estimated = estimated;
        r.cost_usd = self.route.catalog.prices.cost(label, &usage);
        r.latency_ms = ms(self.started.elapsed());
        r.ttft_ms = ttft_ms;
        if let Some(a) = self.admission.lock().take() {
            a.settle(usage.input + usage.output, r.cost_usd);
        }
        self.route.plane.recorder.record(r);
    }
}

/// Why a target is not tried for this request.
enum Skip {
    /// The provider cannot serve this API (the next target may).
    Unsupported(&'static str),
    /// The request cannot be put to this provider: the client's to fix.
    Refused(String),
}

/// The `anthropic-version` sent when the client gave none (it called the OpenAI API).
const ANTHROPIC_VERSION: &str = "2023-06-01";

pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

pub(crate) async fn read_capped(mut body: Incoming) -> Result<Bytes, String> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(d) = frame.into_data() {
            if out.len() + d.len() > MAX_ANSWER {
                return Err("the answer is larger than 64 MiB".to_owned());
            }
            out.extend_from_slice(&d);
        }
    }
    Ok(out.freeze())
}

/// `Retry-After` in seconds (capped at 10 minutes).
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let s: u64 = h
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(s.min(600)))
}
