//! Topic routes: a request becomes an event (or, for a CloudEvents batch, several) through
//! the node's [`weir_events::ingest::Ingest`] and is answered `202 {"id"}` only once the
//! queue holds it durably. Inbound webhooks are verified here first. A `GET` is a stream
//! of the topic (see [`crate::stream`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use weir_core::GatewayError;
use weir_core::RequestId;
use weir_core::overload::{Held, Overload};

use crate::body::ProxyBody;
use crate::error_response;
use crate::headers::X_REQUEST_ID;
use crate::snapshot::{Route, TopicTarget};

/// The answer to a request on a topic route: `202` once published, or the error, with the
/// request id.
pub(crate) async fn answer(
    route: &Route,
    parts: &http::request::Parts,
    body: Incoming,
    consumer: Option<&str>,
    request_id: &RequestId,
    idle: Duration,
) -> Response<ProxyBody> {
    // An idempotency key belongs to the route and the caller.
    let scope = format!(
        "{}|{}",
        route.name,
        consumer.map_or("-".to_owned(), |c| format!("c:{c}"))
    );
    let published = match &route.topic {
        Some(target) if parts.method == Method::GET => crate::stream::serve(target, parts).await,
        Some(target) => publish(target, parts, body, &scope, idle).await,
        None => Err(GatewayError::Internal),
    };
    let mut rsp = match published {
        Ok(rsp) => rsp,
        Err(e) => {
            let mut rsp = error_response::render(&e, request_id.as_str());
            if matches!(e, GatewayError::MethodNotAllowed) {
                rsp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
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
    idle: Duration,
) -> Result<Response<ProxyBody>, GatewayError> {
    if parts.method != Method::POST {
        return Err(GatewayError::MethodNotAllowed);
    }
    let (bytes, _held) =
        read_body(body, target.topic.max_event_size, &target.overload, idle).await?;
    if let Some(inbound) = &target.inbound {
        let sender_id = inbound
            .verify(&parts.headers, &bytes, weir_events::now_ms() / 1000)
            .map_err(|r| GatewayError::Unauthorized { reason: r.0 })?;
        // The sender's delivery id makes a redelivered webhook the same event.
        if let Some(id) = sender_id {
            let extra = ["x-github-event", "x-github-delivery", "x-github-hook-id"]
                .into_iter()
                .filter_map(|n| {
                    let v = parts.headers.get(n)?.to_str().ok()?;
                    Some((n.to_owned(), v.to_owned()))
                })
                .collect();
            let id = target
                .ingest
                .publish_keyed(
                    &target.topic,
                    &parts.headers,
                    bytes,
                    &format!("{scope}|inbound|{id}"),
                    extra,
                )
                .await?;
            return Ok(accepted(&[id], false));
        }
    }
    let (ids, batch) = target
        .ingest
        .publish(&target.topic, &parts.headers, bytes, scope)
        .await?;
    Ok(accepted(&ids, batch))
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

/// Reads a body to hold whole, within the route's `limit` and the node's budget for
/// buffered bodies; the bytes stay counted against the budget while the returned
/// [`Held`] lives, so callers keep it until they are done with the body.
pub(crate) async fn read_body(
    mut body: Incoming,
    limit: u64,
    node: &Arc<Overload>,
    idle: Duration,
) -> Result<(Bytes, Held), GatewayError> {
    // A Content-Length past the limit is refused before a byte is read; otherwise the
    // buffer is sized from it: a growing one would hold its old and new copies at once on
    // every doubling.
    let expected = hyper::body::Body::size_hint(&body).lower();
    if expected > limit {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    let mut held = node.hold(expected).map_err(GatewayError::NodeOverloaded)?;
    let mut buf = BytesMut::with_capacity(usize::try_from(expected).unwrap_or(0));
    // A client trickling its body would otherwise hold the buffer (and its share of the
    // budget) for as long as it likes.
    while let Some(frame) = tokio::time::timeout(idle, body.frame())
        .await
        .map_err(|_| GatewayError::RequestTimeout)?
    {
        let frame = frame
            .map_err(|_| GatewayError::BadRequest("the request body was malformed or cut short"))?;
        if let Ok(data) = frame.into_data() {
            let len = (buf.len() + data.len()) as u64;
            if len > limit {
                return Err(GatewayError::PayloadTooLarge { limit });
            }
            if len > held.bytes() {
                held.grow(len - held.bytes())
                    .map_err(GatewayError::NodeOverloaded)?;
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok((buf.freeze(), held))
}
