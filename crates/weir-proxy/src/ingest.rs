//! Topic routes: a request becomes an event (or, for a CloudEvents batch, several) and is
//! answered `202 {"id"}` only once the queue holds it durably. CloudEvents binary mode
//! (`ce-*` headers), structured mode (`application/cloudevents+json`) and batch mode
//! (`application/cloudevents-batch+json`) are accepted; anything else is published as is
//! with its content type.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use weir_core::GatewayError;
use weir_events::{NewEvent, new_event_id};

use crate::body::ProxyBody;
use crate::snapshot::TopicTarget;

const CE_STRUCTURED: &str = "application/cloudevents+json";
const CE_BATCH: &str = "application/cloudevents-batch+json";

/// Publishes the request; the answer (202, or the error) for the client.
pub(crate) async fn publish(
    target: &TopicTarget,
    parts: &http::request::Parts,
    body: Incoming,
) -> Result<Response<ProxyBody>, GatewayError> {
    if parts.method != Method::POST {
        return Err(GatewayError::MethodNotAllowed);
    }
    let bytes = read_body(body, target.max_event_size).await?;
    let ctype = parts
        .headers
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
        _ => vec![binary(target, &parts.headers, bytes)?],
    };
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    target
        .queue
        .publish(events)
        .await
        .map_err(|_| GatewayError::QueueUnavailable)?;
    let body = if ctype == CE_BATCH {
        serde_json::json!({ "ids": ids })
    } else {
        serde_json::json!({ "id": ids[0] })
    };
    let mut rsp = Response::new(ProxyBody::full(Bytes::from(body.to_string())));
    *rsp.status_mut() = StatusCode::ACCEPTED;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(rsp)
}

async fn read_body(mut body: Incoming, limit: u64) -> Result<Bytes, GatewayError> {
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
