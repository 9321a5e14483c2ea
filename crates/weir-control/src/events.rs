//! The event plane as the control plane sees it: a trait the node implements over its queue
//! and delivery workers (publish, subscription state, dead letters, replay, attempts), and
//! the shapes the admin API answers with. The control plane never touches a queue itself.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an event operation failed.
#[derive(Debug)]
pub enum EventsError {
    /// No such topic, subscription or event.
    NotFound(String),
    /// The request was refused as a topic route would refuse it.
    Refused {
        status: u16,
        kind: &'static str,
        message: String,
    },
    /// The queue cannot answer now; nothing was changed.
    Unavailable(String),
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionState {
    pub name: String,
    pub topic: String,
    pub endpoint: String,
    /// `active`; `disabled` (a `410 Gone` or an operator; enable it with POST …/enable);
    /// or `degraded`: it cannot read its object in the queue (`reason` says why) and its
    /// events wait there.
    pub state: String,
    /// Why it is disabled or degraded.
    pub reason: Option<String>,
    /// The queue's object that is its cursor (a row, a consumer group, a durable
    /// consumer, a quorum queue).
    pub backend_object: String,
    /// Events it still owes (its lag): new, due for retry, or being delivered.
    pub pending: u64,
    /// Age of the oldest of them.
    pub oldest_age_seconds: f64,
    /// Deliveries this node is sending right now.
    pub in_flight: u64,
    pub dead_letters: u64,
    /// The last delivery this node made (2xx).
    pub last_delivery: Option<DeliveryNote>,
    /// The last failed attempt this node made, with what went wrong.
    pub last_error: Option<DeliveryNote>,
    /// Kept for clients of earlier versions: the reason when `state` is `disabled`.
    pub disabled: Option<String>,
}

/// One delivery attempt, as last seen.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct DeliveryNote {
    /// Unix milliseconds.
    pub at_ms: i64,
    pub event_id: String,
    /// The endpoint's status; none when it gave no answer.
    pub status: Option<u16>,
    /// What went wrong (empty for a delivery).
    pub detail: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetterItem {
    /// The event's position in the queue; replay one dead letter by it.
    pub seq: i64,
    pub event_id: String,
    pub attempts: u32,
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptItem {
    pub seq: i64,
    pub event_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Unix milliseconds when it was sent.
    pub at_ms: i64,
    /// The endpoint's status; absent when it gave no answer.
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// `delivered`, `retry`, `dead` or `gone`.
    pub outcome: String,
    /// The start of the answer (at most 256 bytes), or why there was none.
    pub answer: String,
}

#[derive(Serialize, ToSchema)]
pub struct EventItem {
    pub id: String,
    pub seq: i64,
    pub topic: String,
    /// The ordering key, if any.
    pub key: Option<String>,
    /// Stored headers (content type, CloudEvents attributes) as `[name, value]` pairs.
    pub headers: Vec<(String, String)>,
    /// The body: text when it is UTF-8, else base64 (see `body_encoding`).
    pub body: String,
    /// `utf-8` or `base64`.
    pub body_encoding: String,
    /// Unix milliseconds when it was published.
    pub created_ms: i64,
}

/// What to deliver again: exactly one of the three.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// One dead letter, by its `seq`.
    pub seq: Option<i64>,
    /// `true`: every dead letter.
    pub dead_letters: Option<bool>,
    /// Every event published since this Unix time (seconds), delivered or not.
    pub since: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    One(i64),
    AllDead,
    Since { unix_ms: i64 },
}

#[derive(Serialize, ToSchema)]
pub struct Replayed {
    /// How many deliveries were made due again.
    pub replayed: u64,
}

/// The node's event plane.
pub trait Events: Send + Sync + 'static {
    /// Publishes as a topic route would (plain, CloudEvents binary, structured or batch;
    /// `Idempotency-Key` honoured); the ids of the events.
    fn publish(
        &self,
        topic: String,
        headers: HeaderMap,
        body: Bytes,
    ) -> BoxFuture<'_, Result<Vec<String>, EventsError>>;

    fn subscriptions(&self) -> BoxFuture<'_, Result<Vec<SubscriptionState>, EventsError>>;

    /// One subscription's state (`NotFound` when this node runs none of that name).
    fn subscription(&self, name: String) -> BoxFuture<'_, Result<SubscriptionState, EventsError>>;

    fn dead_letters(
        &self,
        subscription: String,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetterItem>, EventsError>>;

    fn replay(&self, subscription: String, what: Replay)
    -> BoxFuture<'_, Result<u64, EventsError>>;

    fn attempts(
        &self,
        subscription: String,
        event_id: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AttemptItem>, EventsError>>;

    /// Enables a subscription a `410 Gone` disabled.
    fn enable(&self, subscription: String) -> BoxFuture<'_, Result<(), EventsError>>;

    fn event(&self, id: String) -> BoxFuture<'_, Result<Option<EventItem>, EventsError>>;
}
