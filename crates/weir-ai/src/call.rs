//! One call through the targets of a model: the body each provider gets (the client's
//! own, or a translation), each key of a target in turn, what a status means (next key,
//! next target, or the client's answer), cooldowns, and the answer or stream that goes
//! back, recorded and settled against the route's limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::sync::mpsc;
use weir_config::ai::ProviderKind;

use crate::catalog::{Model, Target};
use crate::errors;
use crate::health::key_slot;
use crate::serve::{AiBody, AiResponse, AiRoute, AnthropicIn, Api};
use crate::tap;
use crate::translate_stream::{AnthropicToOpenAi, OpenAiToAnthropic};
use crate::usage::{CallRecord, Usage};

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
    pub(crate) consumer: Option<Arc<str>>,
    /// The name of the API key the caller used.
    pub(crate) key: Option<Arc<str>>,
    pub(crate) started: Instant,
    /// What the route's limits reserved for the call, settled when it is recorded.
    pub(crate) admission: parking_lot::Mutex<Option<crate::limits::Admission>>,
    /// The size of the prompt or input, for estimates where a provider counts no tokens.
    pub(crate) prompt_bytes: usize,
}

/// What a failed attempt leaves for the client if nothing else answers.
struct Failure {
    status: StatusCode,
    body: Option<Bytes>,
    /// The API whose error shape the body has.
    shape: Wire,
}

/// The API a provider speaks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Wire {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Wire {
    fn of(kind: ProviderKind) -> Self {
        match kind {
            ProviderKind::Anthropic => Self::Anthropic,
            ProviderKind::Gemini => Self::Gemini,
            _ => Self::OpenAi,
        }
    }
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
    pub(crate) async fn run(self, request: Value) -> AiResponse {
        let plane = &self.route.plane;
        let plan = self.model.plan();
        // Targets sitting out a cooldown go last, so they are still tried when all are.
        let (mut ready, cooling): (Vec<&Target>, Vec<&Target>) = plan
            .into_iter()
            .partition(|t| !plane.health.cooling(&t.label));
        ready.extend(cooling);
        let mut last: Option<Failure> = None;
        // Gemini takes images only inline: URLs are downloaded once, when a Gemini target
        // is first tried (other providers get the URLs as they are).
        let mut inlined: Option<Option<Value>> = None;
        for (n, target) in ready.iter().enumerate() {
            let request = if target.provider.kind == ProviderKind::Gemini && self.api == Api::Chat {
                if inlined.is_none() {
                    match self.route.catalog.images.inline(&request).await {
                        Ok(v) => inlined = Some(v),
                        Err(why) => return self.refuse(&why),
                    }
                }
                inlined
                    .as_ref()
                    .and_then(Option::as_ref)
                    .unwrap_or(&request)
            } else {
                &request
            };
            let body = match self.provider_body(target, request) {
                Ok(b) => b,
                Err(Skip::Unsupported(why)) => {
                    tracing::debug!(target = %target.label, why, "target skipped");
                    continue;
                }
                Err(Skip::Refused(why)) => return self.refuse(&why),
            };
            match self.try_target(target, body, n as u32).await {
                Ok(rsp) => return rsp,
                Err(f) => last = Some(f),
            }
        }
        let f = last.unwrap_or(Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: None,
            shape: Wire::OpenAi,
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
            Some(b) => self.provider_error(f.status, b, f.shape),
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
        if p.kind == ProviderKind::Gemini {
            let body = match self.api {
                Api::Chat => crate::gemini::request_from_openai(request),
                Api::Embeddings => crate::gemini::embed_request(request, &target.model),
            }
            .map_err(Skip::Refused)?;
            return Ok(Bytes::from(body.to_string()));
        }
        if p.kind == ProviderKind::Anthropic {
            if self.api == Api::Embeddings {
                return Err(Skip::Unsupported("Anthropic has no embeddings API"));
            }
            let hint = self.prompt_bytes + self.prompt_bytes / 8 + 4096;
            return match &self.anthropic {
                // The client's own Messages request, passed on without a copy.
                Some(a) => with_model(&a.body, &target.model, hint),
                None => {
                    let body =
                        crate::translate::openai_request_to_anthropic(request, &target.model)
                            .map_err(Skip::Refused)?;
                    with_model(&body, &target.model, hint)
                }
            }
            .map_err(Skip::Refused);
        }
        if p.kind == ProviderKind::Mistral {
            let mut body = request.clone();
            body["model"] = Value::String(target.model.clone());
            crate::translate::to_mistral(&mut body);
            return Ok(Bytes::from(body.to_string()));
        }
        // The client's request with the model swapped, written straight into a buffer of
        // about its size: a large prompt is not copied again first.
        let hint = self.prompt_bytes + self.prompt_bytes / 8 + 4096;
        with_model(request, &target.model, hint).map_err(Skip::Refused)
    }

    /// A provider's error as the client's API shapes errors (status kept).
    fn provider_error(&self, status: StatusCode, body: Bytes, shape: Wire) -> AiResponse {
        let client_anthropic = self.anthropic.is_some();
        let client = if client_anthropic {
            Wire::Anthropic
        } else {
            Wire::OpenAi
        };
        if client == shape {
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
        let wire = Wire::of(p.kind);
        let to_anthropic = wire == Wire::Anthropic;
        let keys: Vec<Option<(usize, &(http::HeaderName, HeaderValue))>> = if p.keys.is_empty() {
            vec![None]
        } else {
            let start = fastrand::usize(0..p.keys.len());
            let mut order: Vec<usize> = (0..p.keys.len())
                .map(|i| (start + i) % p.keys.len())
                .collect();
            order.sort_by_key(|&i| plane.health.cooling(&key_slot(&p.name, i)));
            order.into_iter().map(|i| Some((i, &p.keys[i]))).collect()
        };
        let url = match (wire, self.api) {
            (Wire::Anthropic, _) => p.url("messages", &target.model),
            (Wire::Gemini, Api::Embeddings) => {
                format!("{}/models/{}:batchEmbedContents", p.base, target.model)
            }
            (Wire::Gemini, Api::Chat) if self.stream => {
                format!(
                    "{}/models/{}:streamGenerateContent?alt=sse",
                    p.base, target.model
                )
            }
            (Wire::Gemini, Api::Chat) => {
                format!("{}/models/{}:generateContent", p.base, target.model)
            }
            (Wire::OpenAi, api) => p.url(api.endpoint(), &target.model),
        };
        let failure = |status| Failure {
            status,
            body: None,
            shape: wire,
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
            if let Some((_, (name, value))) = key {
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
                    let bytes = read_capped(rsp.into_body(), &plane.overload)
                        .await
                        .map(|(b, _)| b)
                        .unwrap_or_default();
                    self.record(
                        &target.label,
                        status.as_u16(),
                        Usage::default(),
                        false,
                        0,
                        fallbacks,
                    );
                    return Ok(self.provider_error(status, bytes, wire));
                }
                v => {
                    let wait = retry_after(rsp.headers()).unwrap_or(p.cooldown);
                    let bytes = read_capped(rsp.into_body(), &plane.overload)
                        .await
                        .ok()
                        .map(|(b, _)| b);
                    last = Failure {
                        status,
                        body: bytes,
                        shape: wire,
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
        let from = Wire::of(target.provider.kind);
        let to_anthropic = self.anthropic.is_some();
        let (parts, body) = rsp.into_parts();
        let mut headers = HeaderMap::new();
        if !self.stream {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            // Held against the node's budget for buffered bodies while it is translated.
            let (bytes, _held) = match read_capped(body, &self.route.plane.overload).await {
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
            let mut v = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
            let mut usage = match from {
                Wire::Anthropic => Usage::from_anthropic(&v["usage"]),
                Wire::OpenAi => Usage::from_openai(&v["usage"]),
                Wire::Gemini => crate::gemini::usage(&v["usageMetadata"]),
            };
            // Gemini answers become OpenAI's first; from there, Anthropic's if need be.
            let mut from = from;
            if from == Wire::Gemini {
                v = match self.api {
                    Api::Chat => crate::gemini::response_to_openai(&v, &self.model.name),
                    Api::Embeddings => {
                        let (o, u) =
                            crate::gemini::embed_response(&v, &self.model.name, self.prompt_bytes);
                        usage = Some(u);
                        o
                    }
                };
                from = Wire::OpenAi;
            }
            let counted = usage.unwrap_or_else(|| {
                Usage::estimate(self.prompt_bytes, crate::usage::generated_bytes(&v))
            });
            self.record(
                &target.label,
                parts.status.as_u16(),
                counted,
                usage.is_none(),
                ms(ttft),
                fallbacks,
            );
            let out = match (from == Wire::Anthropic, to_anthropic) {
                (false, false) if target.provider.kind == ProviderKind::Gemini => {
                    Bytes::from(v.to_string())
                }
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
        let mode = match (from, to_anthropic) {
            (Wire::Gemini, to_anthropic) => tap::Mode::FromGemini(
                Box::new(crate::gemini::GeminiToOpenAi::new(
                    &self.model.name,
                    self.wants_usage,
                )),
                to_anthropic.then(|| Box::new(OpenAiToAnthropic::new(&self.model.name))),
            ),
            (Wire::OpenAi, false) => tap::Mode::OpenAi {
                wants_usage: self.wants_usage,
            },
            (Wire::Anthropic, true) => tap::Mode::Anthropic,
            (Wire::OpenAi, true) => {
                tap::Mode::ToAnthropic(Box::new(OpenAiToAnthropic::new(&self.model.name)))
            }
            (Wire::Anthropic, false) => tap::Mode::ToOpenAi(Box::new(AnthropicToOpenAi::new(
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
            prompt_bytes: self.prompt_bytes,
        };
        tokio::spawn(t.run(body, tx));
        AiResponse {
            status: parts.status,
            headers,
            body: AiBody::Stream(rx),
        }
    }

    /// A `400` for a request no provider is called with: its reservation against the
    /// limits is released (nothing was spent).
    fn refuse(&self, why: &str) -> AiResponse {
        if let Some(a) = self.admission.lock().take() {
            a.settle(0, 0.0);
        }
        errors::for_client(self.anthropic.is_some(), StatusCode::BAD_REQUEST, why)
    }

    fn record_base(&self, label: &str, status: u16, fallbacks: u32) -> CallRecord {
        CallRecord {
            at_ms: crate::unix_now_ms(),
            route: self.route.name.clone(),
            consumer: self.consumer.clone(),
            key: self.key.clone(),
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

/// `request` (a JSON object) serialized with `model` as its model, without copying the
/// object first; keys in the order `Value` keeps them (sorted).
fn with_model(request: &Value, model: &str, capacity: usize) -> Result<Bytes, String> {
    struct WithModel<'a>(&'a serde_json::Map<String, Value>, &'a str);
    impl serde::Serialize for WithModel<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let absent = !self.0.contains_key("model");
            let mut m = s.serialize_map(Some(self.0.len() + usize::from(absent)))?;
            let mut pending = absent;
            for (k, v) in self.0 {
                if pending && k.as_str() > "model" {
                    m.serialize_entry("model", self.1)?;
                    pending = false;
                }
                if k == "model" {
                    m.serialize_entry(k, self.1)?;
                } else {
                    m.serialize_entry(k, v)?;
                }
            }
            if pending {
                m.serialize_entry("model", self.1)?;
            }
            m.end()
        }
    }
    let map = request
        .as_object()
        .ok_or_else(|| "the body must be a JSON object".to_owned())?;
    let mut out = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut out, &WithModel(map, model)).map_err(|e| e.to_string())?;
    Ok(Bytes::from(out))
}

pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// A provider's whole answer, within 64 MiB and the node's budget for buffered bodies
/// (counted while the returned hold lives).
pub(crate) async fn read_capped(
    mut body: Incoming,
    node: &Arc<weir_core::overload::Overload>,
) -> Result<(Bytes, weir_core::overload::Held), String> {
    // Sized from the provider's Content-Length (within the cap): a buffer grown by
    // doubling holds its old and new copies at once.
    let expected = hyper::body::Body::size_hint(&body).lower();
    let expected = usize::try_from(expected).map_or(MAX_ANSWER, |n| n.min(MAX_ANSWER));
    let short = |_| "the gateway is short of memory for the provider's answer".to_owned();
    let mut held = node.hold(expected as u64).map_err(short)?;
    let mut out = bytes::BytesMut::with_capacity(expected);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(d) = frame.into_data() {
            let len = out.len() + d.len();
            if len > MAX_ANSWER {
                return Err("the answer is larger than 64 MiB".to_owned());
            }
            if len as u64 > held.bytes() {
                held.grow(len as u64 - held.bytes()).map_err(short)?;
            }
            out.extend_from_slice(&d);
        }
    }
    Ok((out.freeze(), held))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_swapped_or_added_in_key_order() {
        for (request, want) in [
            (
                serde_json::json!({"model": "a", "messages": [], "stream": false}),
                serde_json::json!({"model": "b", "messages": [], "stream": false}),
            ),
            (
                serde_json::json!({"messages": [{"role": "user"}], "temperature": 0.5}),
                serde_json::json!({"model": "b", "messages": [{"role": "user"}], "temperature": 0.5}),
            ),
            (
                serde_json::json!({"a": 1}),
                serde_json::json!({"a": 1, "model": "b"}),
            ),
        ] {
            let got = with_model(&request, "b", 0).unwrap();
            assert_eq!(got, Bytes::from(want.to_string()), "{request}");
        }
        assert!(with_model(&serde_json::json!(["x"]), "b", 0).is_err());
    }
}
