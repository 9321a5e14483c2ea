//! The event plane's queue: one trait every backend implements (publish durably; give each
//! subscription its own cursor; lease, acknowledge, retry later or dead-letter what it
//! delivers; replay), event ids, and the embedded backend (SQLite in WAL mode with group
//! commit, see ADR 0005). Ingest routes and the delivery workers build on this.

pub mod cloudevents;
pub mod delivery;
mod embedded;
pub mod health;
mod held;
mod id;
pub mod inbound;
pub mod ingest;
pub mod nats_jetstream;
pub mod rabbitmq;
pub mod redis_streams;

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

pub use embedded::Embedded;
pub use id::{event_id_for_key, new_event_id};
pub use nats_jetstream::NatsJetStream;
pub use rabbitmq::RabbitMq;
pub use redis_streams::RedisStreams;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The backend cannot take or give events now; nothing was acknowledged.
    #[error("the queue is unavailable: {0}")]
    Unavailable(String),
    #[error("no subscription named {0:?}")]
    NoSubscription(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, QueueError>;

/// An event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique per event (UUIDv7 by default); publishing an id again is a no-op.
    pub id: String,
    pub topic: String,
    /// For per-key ordering (optional).
    pub key: Option<String>,
    /// Headers kept with the event (CloudEvents attributes, content type).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Position in the queue, increasing with publish order.
    pub seq: i64,
    pub id: String,
    pub topic: String,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Unix milliseconds when it was published.
    pub created_ms: i64,
}

/// An event leased to one subscription's delivery worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Leased {
    pub event: Event,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// A dead-lettered delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub seq: i64,
    pub id: String,
    pub attempts: u32,
    pub reason: String,
}

/// One delivery attempt, as recorded for the admin API.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    pub seq: i64,
    pub event_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Unix milliseconds when it was sent.
    pub at_ms: i64,
    /// The endpoint's status; none when it gave no answer.
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// `delivered`, `retry`, `dead` or `gone`.
    pub outcome: String,
    /// The start of the answer (at most 256 bytes), or why there was none.
    pub answer: String,
}

/// What a subscription has not yet had delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    /// Events waiting (new, due for retry, or leased).
    pub pending: u64,
    /// Unix milliseconds of the oldest of them.
    pub oldest_ms: Option<i64>,
    pub dead: u64,
}

/// One declaration of a subscription: its name, its topic, where a new cursor starts, and
/// when it was written (Unix milliseconds: the file's modification time, or the time the
/// admin API stored it). Of two declarations that disagree, the newer holds everywhere.
#[derive(Debug, Clone, Copy)]
pub struct Declaration<'a> {
    pub name: &'a str,
    pub topic: &'a str,
    pub start: StartAt,
    pub generation: i64,
}

/// Where a new subscription starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Only events published from now on.
    Now,
    /// Every event the queue still holds for the topic.
    Beginning,
    /// The events the queue still holds that were published from this time (Unix
    /// milliseconds) on.
    Since(i64),
}

impl From<weir_config::Start> for StartAt {
    fn from(s: weir_config::Start) -> Self {
        match s {
            weir_config::Start::New => Self::Now,
            weir_config::Start::Earliest => Self::Beginning,
            weir_config::Start::At(ms) => Self::Since(ms),
        }
    }
}

/// The queue every backend implements. "Durable" means what the backend promises (for the
/// embedded one, an fsynced commit); `publish` returns only after it.
pub trait Queue: Send + Sync + 'static {
    /// Stores events durably; returns their sequence numbers (an id published before
    /// returns its first sequence number).
    fn publish(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<i64>>>;

    /// Declares a subscription: makes its cursor (from `start`) if it has none; moves it
    /// to `topic` if it reads another one (what it owed there is still delivered) — unless
    /// the declaration in force is newer (a greater generation), which stays. Returns the
    /// topic of that newer declaration when it stays, else `None`.
    fn declare<'a>(&'a self, d: &'a Declaration<'a>) -> BoxFuture<'a, Result<Option<String>>>;

    /// [`Queue::declare`] with generation 0 (a declaration that always holds).
    fn subscribe<'a>(
        &'a self,
        name: &'a str,
        topic: &'a str,
        start: StartAt,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let d = Declaration {
                name,
                topic,
                start,
                generation: 0,
            };
            self.declare(&d).await.map(drop)
        })
    }

    /// Leases up to `max` events due for `subscription` (retries that are due, leases that
    /// ran out — a crashed worker's — then new events) for `lease_for`.
    fn lease<'a>(
        &'a self,
        subscription: &'a str,
        max: usize,
        lease_for: Duration,
    ) -> BoxFuture<'a, Result<Vec<Leased>>>;

    /// The delivery succeeded: it is done.
    fn ack<'a>(&'a self, subscription: &'a str, seq: i64) -> BoxFuture<'a, Result<()>>;

    /// The delivery failed: try again at `at_ms` (Unix milliseconds).
    fn retry_at<'a>(
        &'a self,
        subscription: &'a str,
        seq: i64,
        at_ms: i64,
    ) -> BoxFuture<'a, Result<()>>;

    /// The delivery will not be retried: keep it as a dead letter with its reason.
    fn dead<'a>(
        &'a self,
        subscription: &'a str,
        seq: i64,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>>;

    fn dead_letters<'a>(
        &'a self,
        subscription: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>>;

    /// Makes dead letters due again (all, or the one with `seq`); returns how many.
    fn replay_dead<'a>(
        &'a self,
        subscription: &'a str,
        seq: Option<i64>,
    ) -> BoxFuture<'a, Result<u64>>;

    /// Delivers again everything published since `since_ms`; returns how many.
    fn replay_since<'a>(
        &'a self,
        subscription: &'a str,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<u64>>;

    fn depth<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Depth>>;

    /// Up to `max` events of `topic` after position `after`, in order (for streams to
    /// clients, which keep their own position).
    fn read<'a>(
        &'a self,
        topic: &'a str,
        after: i64,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Event>>>;

    /// Retention: drops the topic's events published before `before_ms`. What a
    /// subscription still owed of them becomes its dead letter (reason [`RETAINED_PAST`]),
    /// and such an event is kept for as long as a dead letter needs it.
    fn trim<'a>(&'a self, topic: &'a str, before_ms: i64) -> BoxFuture<'a, Result<Trimmed>>;

    /// The position of the topic's newest event (0 when it has none).
    fn latest<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<i64>>;

    /// The event with this id, if the queue still holds it.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Event>>>;

    /// Per-key ordering on or off: when on, at most one event per ordering key is leased
    /// at a time, in publish order; a later event of the key waits until the one before
    /// it is delivered or dead. Applies to events leased from then on. Kept across
    /// restarts.
    fn set_ordered<'a>(&'a self, subscription: &'a str, ordered: bool)
    -> BoxFuture<'a, Result<()>>;

    /// Records an attempt (kept for [`ATTEMPT_RETENTION`], and at most
    /// [`ATTEMPTS_KEPT`] per subscription by backends that cap by count). Recording may be
    /// batched: it never waits for a commit of its own.
    fn record<'a>(&'a self, subscription: &'a str, attempt: Attempt) -> BoxFuture<'a, Result<()>>;

    /// The newest attempts first, of one event (by id) or of every event.
    fn attempts<'a>(
        &'a self,
        subscription: &'a str,
        event_id: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Attempt>>>;

    /// Disables the subscription with a reason (`410 Gone`, an operator), or enables it
    /// again with `None`. Kept across restarts; delivery workers read it.
    fn set_disabled<'a>(
        &'a self,
        subscription: &'a str,
        reason: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Why the subscription is disabled, if it is.
    fn disabled<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Option<String>>>;

    /// The backend object that is `subscription`'s cursor on `topic`, named for people
    /// (the admin API and `weir events status` show it).
    fn object(&self, subscription: &str, topic: &str) -> String;

    /// Finishes what the backend holds (the embedded writer's last commits) and closes it.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Resolves when this node may have published events since the call, or after
    /// `max_wait` anyway (which is how other nodes' publishes and due retries are found):
    /// idle delivery workers and streams wait on it instead of polling.
    fn published(&self, max_wait: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(max_wait))
    }
}

/// What one retention pass did to a topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Events dropped.
    pub dropped: u64,
    /// Per subscription, events it still owed that became dead letters instead.
    pub dead_lettered: Vec<(String, u64)>,
}

/// Events a subscription still owed when its topic's retention ran out (they became its
/// dead letters).
pub const RETENTION_DEAD_LETTERS: &str = "weir_event_retention_dead_letters_total";

impl Trimmed {
    /// Logs what a retention pass over `topic` did, and counts its dead letters: never
    /// silent about what a subscription had not received.
    pub fn report(&self, topic: &str) {
        if self.dropped > 0 {
            tracing::info!(
                topic,
                events = self.dropped,
                "events past retention dropped"
            );
        }
        for (sub, n) in &self.dead_lettered {
            tracing::warn!(topic, subscription = %sub, events = n, "retention ran out before these events were delivered; they are dead letters now (replay them to deliver them)");
            metrics::counter!(RETENTION_DEAD_LETTERS, "subscription" => sub.clone()).increment(*n);
        }
    }
}

/// The reason of a dead letter made by retention.
pub const RETAINED_PAST: &str = "the topic's retention ran out before this event was delivered (kept as a dead letter; replay it to deliver it)";

/// How long attempt records are kept.
pub const ATTEMPT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Attempt records kept per subscription by backends that cap by count.
pub const ATTEMPTS_KEPT: usize = 10_000;

/// Attempt records read in the order they were written, kept when they are of
/// `event_id` (or of any event), then the newest `limit` first: for backends whose records
/// are a log.
#[derive(Default)]
pub(crate) struct AttemptLog {
    all: Vec<Attempt>,
}

impl AttemptLog {
    pub fn push(&mut self, record: &[u8], event_id: Option<&str>) {
        if let Ok(a) = serde_json::from_slice::<Attempt>(record)
            && event_id.is_none_or(|id| a.event_id == id)
        {
            self.all.push(a);
        }
    }

    pub fn newest(mut self, limit: usize) -> Vec<Attempt> {
        self.all.reverse();
        self.all.truncate(limit);
        self.all
    }
}

/// Unix milliseconds now.
pub use weir_core::time::unix_ms as now_ms;

pub(crate) use weir_config::rfc3339;
