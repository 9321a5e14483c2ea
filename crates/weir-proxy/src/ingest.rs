//! Topic routes: a request becomes an event (or, for a CloudEvents batch, several) and is
//! answered `202 {"id"}` only once the queue holds it durably. CloudEvents binary mode
//! (`ce-*` headers), structured mode (`application/cloudevents+json`) and batch mode
//! (`application/cloudevents-batch+json`) are accepted; anything else is published as is
//! with its content type. An `Idempotency-Key` (IETF draft) makes the event id a function
//! of the route, the caller and the key: the same key and body answer the first `202`
//! again, the same key with another body `422`, and a request while the first is still
//! being published `409`. A `GET` is a stream of the topic (see [`crate::stream`]).

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use parking_lot::Mutex;
use rustc_hash::FxHashSet;
use serde_json::Value;
use weir_core::GatewayError;
use weir_events::{NewEvent, event_id_for_key, new_event_id};

use weir_core::RequestId;

use crate::body::ProxyBody;
use crate::error_response;
use crate::headers::X_REQUEST_ID;
use crate::snapshot::{Route, TopicTarget};

const CE_STRUCTURED: &str = "application/cloudevents+json";
const CE_BATCH: &str = "application/cloudevents-batch+json";

/// Idempotency keys being published right now (the ids they map to).
static IN_FLIGHT: Mutex<Option<FxHashSet<String>>> = Mutex::new(None);

/// Holds an id in [`IN_FLIGHT`] until dropped.
struct Claim(Vec<String>);

impl Claim {
    fn take(ids: &[String]) -> Option<Self> {
        let mut set = IN_FLIGHT.lock();
        let set = set.get_or_insert_with(FxHashSet::default);
        if ids.iter().any(|id| set.contains(id)) {
            return None;
        }
        set.extend(ids.iter().cloned());
        Some(Self(ids.to_vec()))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(set) = IN_FLIGHT.lock().as_mut() {
            for id in &self.0 {
                set.remove(id);
            }
        }
    }
}

/// The `Idempotency-Key`, as a structured-field string (`"…"`) or a bare token.
fn idempotency_key(headers: &http::HeaderMap) -> Result<Option<String>, GatewayError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    if s.is_empty() || s.len() > 255 {
        return Err(GatewayError::BadRequest(
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }
    Ok(Some(s.to_owned()))
}

/// The answer to a request on a topic route: `202` once published, or the error, with the
/// request id.
pub(crate) async fn answer(
    route: &Route,
    parts: &http::request::Parts,
    body: Incoming,
    consumer: Option<&str>,
    request_id: &RequestId,
) -> Response<ProxyBody> {
    // An idempotency key belongs to the route and the caller.
    let scope = format!(
        "{}|{}",
        route.name,
        consumer.map_or("-".to_owned(), |c| format!("c:{c}"))
    );
    let published = match &route.topic {
        Some(target) if parts.method == Method::GET => crate::stream::serve(target, parts).await,
        Some(target) => publish(target, parts, body, &scope).await,
        None => Err(GatewayError::Internal),
    };
    let mut rsp = match published {
        Ok(rsp) => rsp,
        Err(e) => {
            let mut rsp = error_response::render(&e, request_id.as_str());
            match e {
                GatewayError::QueueUnavailable => {
                    rsp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                GatewayError::MethodNotAllowed => {
                    rsp.headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
                }
                _ => {}
            }
            rsp
        }
    };
    rsp.headers_mut()
        .insert(&X_REQUEST_ID, request_id.header_value().clone());
    rsp
}

/// Publishes the request; the answer (202, or the error) for the client. `scope` names the
/// route and the caller an idempotency key belongs to.
async fn publish(
    target: &TopicTarget,
    parts: &http::request::Parts,
    body: Incoming,
    scope: &str,
) -> Result<Response<ProxyBody>, GatewayError> {
    if parts.method != Method::POST {
        return Err(GatewayError::MethodNotAllowed);
    }
    let bytes = read_body(body, target.max_event_size).await?;
    let mut sender_scope = None;
    if let Some(inbound) = &target.inbound {
        let sender_id = inbound
            .verify(&parts.headers, &bytes, weir_events::now_ms() / 1000)
            .map_err(|r| GatewayError::Unauthorized { reason: r.0 })?;
        // The sender's delivery id makes a redelivered webhook the same event.
        sender_scope = sender_id.map(|id| format!("{scope}|inbound|{id}"));
    }
    let (ids, batch) = match sender_scope {
        Some(s) => publish_keyed(target, &parts.headers, bytes, &s).await?,
        None => publish_bytes(target, &parts.headers, bytes, scope).await?,
    };
    Ok(accepted(&ids, batch))
}

/// Publishes a verified webhook under ids derived from the sender's delivery id: the
/// queue keeps the first copy of an id, so a redelivery answers the same id and adds
/// nothing.
async fn publish_keyed(
    target: &TopicTarget,
    headers: &http::HeaderMap,
    bytes: Bytes,
    scope: &str,
) -> Result<(Vec<String>, bool), GatewayError> {
    let mut events = vec![binary(target, headers, bytes)?];
    for (i, e) in events.iter_mut().enumerate() {
        e.id = event_id_for_key(scope, &i.to_string());
        for name in ["x-github-event", "x-github-delivery", "x-github-hook-id"] {
            if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                e.headers.push((name.to_owned(), v.to_owned()));
            }
        }
    }
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    target
        .queue
        .publish(events)
        .await
        .map_err(|_| GatewayError::QueueUnavailable)?;
    Ok((ids, false))
}

/// Publishes one request's body (plain, CloudEvents binary, structured or batch) with its
/// headers; the event ids, and whether it was a batch. Topic routes and the admin API's
/// publish endpoint share it.
pub async fn publish_bytes(
    target: &TopicTarget,
    headers: &http::HeaderMap,
    bytes: Bytes,
    scope: &str,
) -> Result<(Vec<String>, bool), GatewayError> {
    if bytes.len() as u64 > target.max_event_size {
        return Err(GatewayError::PayloadTooLarge {
            limit: target.max_event_size,
        });
    }
    let key = idempotency_key(headers)?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let events = match ctype.as_str() {
        CE_BATCH => {
            let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&bytes) else {
                return Err(GatewayError::BadRequest(
                    "a CloudEvents batch is a JSON array of events",
                ));
            };
            if items.is_empty() {
                return Err(GatewayError::BadRequest("the CloudEvents batch is empty"));
            }
            items
                .iter()
                .map(|item| structured(target, item))
                .collect::<Result<Vec<_>, _>>()?
        }
        CE_STRUCTURED => {
            let item: Value = serde_json::from_slice(&bytes).map_err(|_| {
                GatewayError::BadRequest("a structured CloudEvent is a JSON object")
            })?;
            vec![structured(target, &item)?]
        }
        _ => vec![binary(target, headers, bytes)?],
    };
    let mut events = events;
    let mut _claim = None;
    if let Some(key) = &key {
        for (i, e) in events.iter_mut().enumerate() {
            e.id = event_id_for_key(scope, &format!("{key}#{i}"));
        }
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        _claim = Some(Claim::take(&ids).ok_or(GatewayError::Conflict(
            "a request with this Idempotency-Key is still being published",
        ))?);
        // Published before: the same request gets the first answer again, another one 422.
        let mut seen = 0;
        for e in &events {
            match target.queue.get(&e.id).await {
                Ok(Some(old)) if old.body == e.body && old.headers == e.headers => seen += 1,
                Ok(Some(_)) => {
                    return Err(GatewayError::Unprocessable(
                        "this Idempotency-Key was used with another request",
                    ));
                }
                Ok(None) => {}
                Err(_) => return Err(GatewayError::QueueUnavailable),
            }
        }
        if seen == events.len() {
            return Ok((ids, ctype == CE_BATCH));
        }
    }
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    target
        .queue
        .publish(events)
        .await
        .map_err(|_| GatewayError::QueueUnavailable)?;
    Ok((ids, ctype == CE_BATCH))
}

fn accepted(ids: &[String], batch: bool) -> Response<ProxyBody> {
    let body = if batch {
        serde_json::json!({ "ids": ids })
    } else {
        serde_json::json!({ "id": ids.first() })
    };
    let mut rsp = Response::new(ProxyBody::full(Bytes::from(body.to_string())));
    *rsp.status_mut() = StatusCode::ACCEPTED;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rsp
}

pub(crate) async fn read_body(mut body: Incoming, limit: u64) -> Result<Bytes, GatewayError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|_| GatewayError::BadRequest("the request body was malformed or cut short"))?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(GatewayError::PayloadTooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// A plain or binary-mode request: the body is the data; `ce-*` headers (all of `ce-id`,
/// `ce-source`, `ce-type` once `ce-specversion` is there) and the content type are kept.
fn binary(
    target: &TopicTarget,
    headers: &http::HeaderMap,
    body: Bytes,
) -> Result<NewEvent, GatewayError> {
    let mut kept = Vec::new();
    for (name, value) in headers {
        let n = name.as_str();
        if n.starts_with("ce-") || name == header::CONTENT_TYPE {
            let Ok(v) = value.to_str() else {
                return Err(GatewayError::BadRequest(
                    "CloudEvents headers must be printable ASCII (percent-encode the rest)",
                ));
            };
            kept.push((n.to_owned(), v.to_owned()));
        }
    }
    let has = |n: &str| kept.iter().any(|(k, _)| k == n);
    if has("ce-specversion") {
        if kept
            .iter()
            .any(|(k, v)| k == "ce-specversion" && v != "1.0")
        {
            return Err(GatewayError::BadRequest("ce-specversion must be 1.0"));
        }
        if !(has("ce-id") && has("ce-source") && has("ce-type")) {
            return Err(GatewayError::BadRequest(
                "a binary-mode CloudEvent needs ce-id, ce-source and ce-type",
            ));
        }
    }
    let key = kept
        .iter()
        .find(|(k, _)| k == "ce-partitionkey")
        .map(|(_, v)| v.clone());
    Ok(NewEvent {
        id: new_event_id(),
        topic: target.name.clone(),
        key,
        headers: kept,
        body,
    })
}

/// One structured CloudEvent (alone or from a batch), kept whole as the event body.
fn structured(target: &TopicTarget, item: &Value) -> Result<NewEvent, GatewayError> {
    let Some(obj) = item.as_object() else {
        return Err(GatewayError::BadRequest("each CloudEvent is a JSON object"));
    };
    if obj.get("specversion").and_then(Value::as_str) != Some("1.0") {
        return Err(GatewayError::BadRequest(
            "a CloudEvent needs specversion \"1.0\"",
        ));
    }
    let attr = |k: &str| obj.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let (Some(id), Some(source), Some(kind)) = (attr("id"), attr("source"), attr("type")) else {
        return Err(GatewayError::BadRequest(
            "a CloudEvent needs id, source and type",
        ));
    };
    let headers = vec![
        ("content-type".to_owned(), CE_STRUCTURED.to_owned()),
        ("ce-id".to_owned(), id.to_owned()),
        ("ce-source".to_owned(), source.to_owned()),
        ("ce-type".to_owned(), kind.to_owned()),
    ];
    Ok(NewEvent {
        id: new_event_id(),
        topic: target.name.clone(),
        key: attr("partitionkey").map(str::to_owned),
        headers,
        body: Bytes::from(item.to_string()),
    })
}
