//! The event endpoints: publish to a topic, and for each subscription its state, dead
//! letters, delivery attempts, replay and re-enabling; an event by id.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

use super::{Ctl, ErrorBody, caller, json_body};
use crate::auth::Role;
use crate::error::{ApiError, ApiResult};
use crate::events::{
    AttemptItem, DeadLetterItem, EventItem, Events, Replay, ReplayRequest, Replayed,
    SubscriptionState,
};

/// Most items one list answers.
const MAX_LIST: usize = 1_000;

fn plane(ctl: &crate::Control) -> ApiResult<&dyn Events> {
    ctl.events.get().map(|e| &**e).ok_or_else(|| {
        ApiError::NotFound(
            "this node has no event queue: declare topics (and subscriptions) in its configuration"
                .to_owned(),
        )
    })
}

fn limit(q: &HashMap<String, String>) -> ApiResult<usize> {
    match q.get("limit") {
        None => Ok(100),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIST).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit: a number from 1 to {MAX_LIST}"))),
    }
}

/// The ids a publish produced.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// The event id (one event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The event ids (a CloudEvents batch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
}

#[utoipa::path(post, path = "/api/v1/topics/{topic}/events", tag = "events",
    params(("topic" = String, Path, description = "The topic")),
    request_body(content = String, description = "The event: any body with its Content-Type; CloudEvents binary (ce-* headers), structured (application/cloudevents+json) and batch (application/cloudevents-batch+json) modes as on topic routes; Idempotency-Key honoured", content_type = "*/*"),
    responses((status = 202, description = "Durably queued", body = Accepted),
              (status = 400, description = "Not a valid event", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 403, description = "Needs the editor role", body = ErrorBody),
              (status = 404, description = "No such topic", body = ErrorBody),
              (status = 409, description = "The same Idempotency-Key is being published", body = ErrorBody),
              (status = 413, description = "Larger than the topic's max_event_size", body = ErrorBody),
              (status = 422, description = "The Idempotency-Key was used with another request", body = ErrorBody)))]
pub async fn publish_event(
    State(ctl): Ctl,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    caller(&ctl, &headers).await?.require(Role::Editor)?;
    let batch = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/cloudevents-batch+json")
        });
    let ids = plane(&ctl)?.publish(topic, headers, body).await?;
    let answer = if batch {
        Accepted {
            id: None,
            ids: Some(ids),
        }
    } else {
        Accepted {
            id: ids.into_iter().next(),
            ids: None,
        }
    };
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events",
    params(("id" = String, Path, description = "The event id (the one a 202 gave)")),
    responses((status = 200, description = "The event as stored", body = EventItem),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 404, description = "No such event (or past its retention)", body = ErrorBody)))]
pub async fn get_event(
    State(ctl): Ctl,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<EventItem>> {
    caller(&ctl, &headers).await?;
    plane(&ctl)?
        .event(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("no such event".to_owned()))
}

#[utoipa::path(get, path = "/api/v1/events/subscriptions", tag = "events",
    responses((status = 200, description = "Every subscription with what it owes, its dead letters and whether it is disabled", body = [SubscriptionState]),
              (status = 401, description = "Not logged in", body = ErrorBody)))]
pub async fn list_subscriptions(
    State(ctl): Ctl,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<SubscriptionState>>> {
    caller(&ctl, &headers).await?;
    Ok(Json(plane(&ctl)?.subscriptions().await?))
}

#[utoipa::path(get, path = "/api/v1/events/subscriptions/{name}", tag = "events",
    params(("name" = String, Path, description = "The subscription")),
    responses((status = 200, description = "The subscription's state: active, disabled or degraded (with the reason), its object in the queue, what it owes and how old the oldest is, deliveries in flight, dead letters, the last delivery and the last failure", body = SubscriptionState),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 404, description = "No subscription of that name on this node", body = ErrorBody)))]
pub async fn get_subscription(
    State(ctl): Ctl,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<SubscriptionState>> {
    caller(&ctl, &headers).await?;
    Ok(Json(plane(&ctl)?.subscription(name).await?))
}

#[utoipa::path(get, path = "/api/v1/events/subscriptions/{name}/dead-letters", tag = "events",
    params(("name" = String, Path, description = "The subscription"),
           ("limit" = Option<usize>, Query, description = "At most this many (default 100, up to 1000)")),
    responses((status = 200, description = "Dead letters, oldest first", body = [DeadLetterItem]),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 404, description = "No such subscription", body = ErrorBody)))]
pub async fn dead_letters(
    State(ctl): Ctl,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<DeadLetterItem>>> {
    caller(&ctl, &headers).await?;
    let limit = limit(&q)?;
    Ok(Json(plane(&ctl)?.dead_letters(name, limit).await?))
}

#[utoipa::path(get, path = "/api/v1/events/subscriptions/{name}/attempts", tag = "events",
    params(("name" = String, Path, description = "The subscription"),
           ("event_id" = Option<String>, Query, description = "Only this event's attempts"),
           ("limit" = Option<usize>, Query, description = "At most this many (default 100, up to 1000)")),
    responses((status = 200, description = "Delivery attempts, newest first", body = [AttemptItem]),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 404, description = "No such subscription", body = ErrorBody)))]
pub async fn attempts(
    State(ctl): Ctl,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<AttemptItem>>> {
    caller(&ctl, &headers).await?;
    let limit = limit(&q)?;
    let event = q.get("event_id").cloned();
    Ok(Json(plane(&ctl)?.attempts(name, event, limit).await?))
}

#[utoipa::path(post, path = "/api/v1/events/subscriptions/{name}/replay", tag = "events",
    params(("name" = String, Path, description = "The subscription")),
    request_body = ReplayRequest,
    responses((status = 200, description = "How many deliveries are due again (same event ids)", body = Replayed),
              (status = 400, description = "Not exactly one of seq, dead_letters, since", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 403, description = "Needs the editor role", body = ErrorBody),
              (status = 404, description = "No such subscription", body = ErrorBody)))]
pub async fn replay(
    State(ctl): Ctl,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Replayed>> {
    caller(&ctl, &headers).await?.require(Role::Editor)?;
    let r: ReplayRequest = json_body(&headers, &body)?;
    let what = match (r.seq, r.dead_letters, r.since) {
        (Some(seq), None, None) => Replay::One(seq),
        (None, Some(true), None) => Replay::AllDead,
        (None, None, Some(s)) if (0..=i64::MAX / 1000).contains(&s) => {
            Replay::Since { unix_ms: s * 1000 }
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of {\"seq\": N} (one dead letter), {\"dead_letters\": true} or {\"since\": UNIX_SECONDS}".to_owned(),
            ));
        }
    };
    let replayed = plane(&ctl)?.replay(name, what).await?;
    Ok(Json(Replayed { replayed }))
}

#[utoipa::path(post, path = "/api/v1/events/subscriptions/{name}/enable", tag = "events",
    params(("name" = String, Path, description = "The subscription")),
    responses((status = 204, description = "Enabled; delivery resumes"),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 403, description = "Needs the editor role", body = ErrorBody),
              (status = 404, description = "No such subscription", body = ErrorBody)))]
pub async fn enable(
    State(ctl): Ctl,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    caller(&ctl, &headers).await?.require(Role::Editor)?;
    plane(&ctl)?.enable(name).await?;
    Ok(StatusCode::NO_CONTENT)
}
