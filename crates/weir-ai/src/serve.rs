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
use crate::sse::Splitter;
use crate::usage::{CallRecord, Usage};
use crate::{AiPlane, errors};

/// An AI route, compiled.
pub struct AiRoute {
    pub name: String,
    pub catalog: Arc<Catalog>,
    pub plane: Arc<AiPlane>,
    pub default_model: Option<String>,
    pub template: Option<String>,
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
enum Api {
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

/// Answers one request of an AI route; `consumer` is who the route's auth found.
pub async fn answer(
    route: &AiRoute,
    method: &Method,
    path: &str,
    body: Bytes,
    consumer: Option<&str>,
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
    let api = if path.ends_with("/chat/completions") {
        Api::Chat
    } else if path.ends_with("/embeddings") {
        Api::Embeddings
    } else if path.ends_with("/models") {
        return models(&route.catalog);
    } else {
        return errors::openai(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "this route serves /v1/chat/completions, /v1/embeddings and /v1/models",
        );
    };
    if method != Method::POST {
        return errors::openai(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "use POST",
        );
    }
    let mut request: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return errors::openai(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "the body must be a JSON object",
            );
        }
    };
    let asked = match request["model"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| route.default_model.clone())
    {
        Some(m) => m,
        None => {
            return errors::openai(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "name a model in \"model\" (GET /v1/models lists them)",
            );
        }
    };
    let Some(model) = route.catalog.model(&asked) else {
        return errors::model_not_found(&asked);
    };
    let stream = api == Api::Chat && request["stream"].as_bool() == Some(true);
    let wants_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
    if stream {
        // Usage is counted on every stream: asked for upstream, passed on only when the
        // client asked for it too.
        request["stream_options"]["include_usage"] = Value::Bool(true);
    }
    let call = Call {
        route,
        model,
        api,
        stream,
        wants_usage,
        consumer: consumer.map(str::to_owned),
        started: Instant::now(),
    };
    call.run(request).await
}

/// A non-streamed chat call of `model` (for prompt templates).
pub(crate) async fn chat_once(
    route: &AiRoute,
    model: &Model,
    request: Value,
    consumer: Option<&str>,
) -> AiResponse {
    Call {
        route,
        model,
        api: Api::Chat,
        stream: false,
        wants_usage: false,
        consumer: consumer.map(str::to_owned),
        started: Instant::now(),
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
    route: &'a AiRoute,
    model: &'a Model,
    api: Api,
    stream: bool,
    wants_usage: bool,
    consumer: Option<String>,
    started: Instant,
}

/// What a failed attempt leaves for the client if nothing else answers.
struct Failure {
    status: StatusCode,
    body: Option<Bytes>,
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
            let mut body = request.clone();
            body["model"] = Value::String(target.model.clone());
            let bytes = Bytes::from(body.to_string());
            match self.try_target(target, bytes, n as u32).await {
                Ok(rsp) => return rsp,
                Err(f) => last = Some(f),
            }
        }
        let f = last.unwrap_or(Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: None,
        });
        self.record(
            self.model.targets.first().map_or("", |t| &t.label),
            f.status.as_u16(),
            Usage::default(),
            true,
            0,
            (ready.len() as u32).saturating_sub(1),
        );
        match f.body {
            Some(b) => {
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                AiResponse {
                    status: f.status,
                    headers,
                    body: AiBody::Full(b),
                }
            }
            None => errors::openai(
                if f.status.is_server_error() {
                    f.status
                } else {
                    StatusCode::BAD_GATEWAY
                },
                "api_error",
                "no provider of this model answered; try again shortly",
            ),
        }
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
        let url = p.url(self.api.endpoint(), &target.model);
        let mut last = Failure {
            status: StatusCode::BAD_GATEWAY,
            body: None,
        };
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
            let Ok(req) = req.body(Full::new(body.clone())) else {
                return Err(Failure {
                    status: StatusCode::BAD_GATEWAY,
                    body: None,
                });
            };
            let sent = tokio::time::timeout(p.timeout, plane.client.send(req)).await;
            let rsp = match sent {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::warn!(target = %target.label, error = %e, "provider unreachable; trying the next target");
                    plane.health.cool_down(&target.label, p.cooldown);
                    return Err(Failure {
                        status: StatusCode::BAD_GATEWAY,
                        body: None,
                    });
                }
                Err(_) => {
                    tracing::warn!(target = %target.label, timeout = ?p.timeout, "provider did not answer in time; trying the next target");
                    plane.health.cool_down(&target.label, p.cooldown);
                    return Err(Failure {
                        status: StatusCode::GATEWAY_TIMEOUT,
                        body: None,
                    });
                }
            };
            let status = rsp.status();
            match verdict(status) {
                Verdict::Ok => {
                    plane.health.recover(&target.label);
                    return Ok(self.success(target, rsp, fallbacks).await);
                }
                Verdict::Final => {
                    let (parts, b) = rsp.into_parts();
                    let bytes = read_capped(b).await.unwrap_or_default();
                    self.record(
                        &target.label,
                        status.as_u16(),
                        Usage::default(),
                        false,
                        0,
                        fallbacks,
                    );
                    let mut headers = HeaderMap::new();
                    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
                        headers.insert(header::CONTENT_TYPE, ct.clone());
                    }
                    return Ok(AiResponse {
                        status,
                        headers,
                        body: AiBody::Full(bytes),
                    });
                }
                v => {
                    let wait = retry_after(rsp.headers()).unwrap_or(p.cooldown);
                    let bytes = read_capped(rsp.into_body()).await.ok();
                    last = Failure {
                        status,
                        body: bytes,
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
        let (parts, body) = rsp.into_parts();
        let mut headers = HeaderMap::new();
        if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
            headers.insert(header::CONTENT_TYPE, ct.clone());
        }
        if !self.stream {
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
                    return errors::openai(
                        StatusCode::BAD_GATEWAY,
                        "api_error",
                        &format!("the provider's answer broke off: {e}"),
                    );
                }
            };
            let usage = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| Usage::from_openai(&v["usage"]));
            self.record(
                &target.label,
                parts.status.as_u16(),
                usage.unwrap_or_default(),
                usage.is_none(),
                ms(ttft),
                fallbacks,
            );
            return AiResponse {
                status: parts.status,
                headers,
                body: AiBody::Full(bytes),
            };
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let (tx, rx) = mpsc::channel(64);
        let tap = StreamTap {
            record: self.record_base(&target.label, parts.status.as_u16(), fallbacks),
            plane: Arc::clone(&self.route.plane),
            prices_label: target.label.clone(),
            catalog: Arc::clone(&self.route.catalog),
            wants_usage: self.wants_usage,
            started: self.started,
        };
        tokio::spawn(tap.run(body, tx));
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
        self.route.plane.recorder.record(r);
    }
}

/// Passes a provider's stream on event by event, reading usage as it goes by.
struct StreamTap {
    record: CallRecord,
    plane: Arc<AiPlane>,
    prices_label: String,
    catalog: Arc<Catalog>,
    wants_usage: bool,
    started: Instant,
}

impl StreamTap {
    async fn run(mut self, mut body: Incoming, tx: mpsc::Sender<Bytes>) {
        let mut split = Splitter::default();
        let mut usage = None;
        let mut first = None;
        'read: while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                self.record.status = 502;
                break;
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let events = match split.push(&data) {
                Ok(e) => e,
                Err(_) => {
                    self.record.status = 502;
                    break;
                }
            };
            for ev in events {
                if ev.data != "[DONE]"
                    && let Ok(v) = serde_json::from_str::<Value>(&ev.data)
                    && let Some(u) = Usage::from_openai(&v["usage"])
                {
                    usage = Some(u);
                    // The usage-only chunk the client did not ask for stays here.
                    if !self.wants_usage && v["choices"].as_array().is_none_or(Vec::is_empty) {
                        continue;
                    }
                }
                if first.is_none() {
                    first = Some(self.started.elapsed());
                }
                if tx.send(ev.raw).await.is_err() {
                    // The client left: dropping the provider's stream stops the generation.
                    self.record.status = 499;
                    break 'read;
                }
            }
        }
        if let Some(rest) = split.finish() {
            let _ = tx.send(rest.raw).await;
        }
        self.record.usage = usage.unwrap_or_default();
        self.record.estimated = usage.is_none();
        self.record.cost_usd = self
            .catalog
            .prices
            .cost(&self.prices_label, &self.record.usage);
        self.record.ttft_ms = first.map_or(0, ms);
        self.record.latency_ms = ms(self.started.elapsed());
        self.plane.recorder.record(self.record);
    }
}

fn ms(d: Duration) -> u64 {
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
