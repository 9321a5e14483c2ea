//! Ingest: a request's body becomes one event or several (a CloudEvents batch) and is
//! acknowledged only once the queue holds it durably and every subscription of its topic
//! has its cursor in the queue. An `Idempotency-Key` (IETF draft) makes the event id a
//! function of the scope (route and caller) and the key: the same key and body answer the
//! first ids again, the same key with another body `422`, and a request while the first
//! is still being published `409`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header;
use parking_lot::{Mutex, RwLock};
use weir_core::GatewayError;

use crate::cloudevents::{self, Stored};
use crate::{NewEvent, Queue, event_id_for_key, new_event_id};

/// How long a publish waits for its topic's subscriptions to be declared (at start, or
/// after a change that added or moved one) before it answers `503`.
const DECLARE_WAIT: Duration = Duration::from_secs(5);

/// A topic as one configuration serves it.
#[derive(Debug, Clone)]
pub struct Topic {
    pub name: String,
    /// The largest event body accepted (`413` beyond it).
    pub max_event_size: u64,
    /// The subscriptions that read it: each must have its cursor before an event is
    /// acknowledged.
    pub subscriptions: Arc<[String]>,
}

/// The node's ingest: the queue, the idempotency keys being published, and which
/// subscriptions the queue has been told of.
pub struct Ingest {
    queue: Arc<dyn Queue>,
    /// Ids of idempotency keys being published right now.
    in_flight: Mutex<HashSet<String>>,
    /// Subscription name → the topic its cursor was declared on.
    declared: RwLock<HashMap<String, String>>,
    declared_changed: tokio::sync::Notify,
}

/// Holds ids in [`Ingest::in_flight`] until dropped.
struct Claim<'a> {
    ingest: &'a Ingest,
    ids: Vec<String>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut set = self.ingest.in_flight.lock();
        for id in &self.ids {
            set.remove(id);
        }
    }
}

impl Ingest {
    pub fn new(queue: Arc<dyn Queue>) -> Arc<Self> {
        Arc::new(Self {
            queue,
            in_flight: Mutex::new(HashSet::new()),
            declared: RwLock::new(HashMap::new()),
            declared_changed: tokio::sync::Notify::new(),
        })
    }

    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    /// The queue holds `subscription`'s cursor on `topic`: events of that topic may be
    /// acknowledged for it.
    pub fn mark_declared(&self, subscription: &str, topic: &str) {
        self.declared
            .write()
            .insert(subscription.to_owned(), topic.to_owned());
        self.declared_changed.notify_waiters();
    }

    /// `subscription` is being (re)declared: publishes to its topic wait for it.
    pub fn mark_pending(&self, subscription: &str) {
        self.declared.write().remove(subscription);
    }

    fn all_declared(&self, topic: &Topic) -> bool {
        let declared = self.declared.read();
        topic
            .subscriptions
            .iter()
            .all(|s| declared.get(s).is_some_and(|t| *t == topic.name))
    }

    /// Waits until every subscription of `topic` has its cursor, or answers `503`.
    async fn ready(&self, topic: &Topic) -> Result<(), GatewayError> {
        if self.all_declared(topic) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + DECLARE_WAIT;
        loop {
            let changed = self.declared_changed.notified();
            if self.all_declared(topic) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                tracing::warn!(topic = %topic.name, "an event was refused: a subscription of its topic has no cursor in the queue yet");
                return Err(GatewayError::QueueUnavailable);
            }
        }
    }

    /// Publishes one request's body (plain, CloudEvents binary, structured or batch) with
    /// its headers; the event ids, and whether it was a batch. `scope` names the route and
    /// the caller an idempotency key belongs to.
    pub async fn publish(
        &self,
        topic: &Topic,
        headers: &http::HeaderMap,
        bytes: Bytes,
        scope: &str,
    ) -> Result<(Vec<String>, bool), GatewayError> {
        if bytes.len() as u64 > topic.max_event_size {
            return Err(GatewayError::PayloadTooLarge {
                limit: topic.max_event_size,
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
        let batch = ctype == cloudevents::BATCH;
        let stored = match ctype.as_str() {
            cloudevents::BATCH | cloudevents::STRUCTURED => cloudevents::from_json(&bytes, batch),
            _ => cloudevents::from_binary(headers, bytes).map(|s| vec![s]),
        }
        .map_err(GatewayError::BadRequest)?;
        let mut events: Vec<NewEvent> = stored.into_iter().map(|s| new_event(topic, s)).collect();
        let mut _claim = None;
        if let Some(key) = &key {
            for (i, e) in events.iter_mut().enumerate() {
                e.id = event_id_for_key(scope, &format!("{key}#{i}"));
            }
            _claim = Some(self.claim(&events)?);
            if self.published_before(&events).await? {
                return Ok((events.into_iter().map(|e| e.id).collect(), batch));
            }
        }
        let ids = events.iter().map(|e| e.id.clone()).collect();
        self.store(topic, events).await?;
        Ok((ids, batch))
    }

    /// Publishes a verified webhook under an id derived from the sender's delivery id
    /// (`scope`): the queue keeps the first copy of an id, so a redelivery answers the
    /// same id and adds nothing. `extra` headers (the sender's event name) are kept.
    pub async fn publish_keyed(
        &self,
        topic: &Topic,
        headers: &http::HeaderMap,
        bytes: Bytes,
        scope: &str,
        extra: Vec<(String, String)>,
    ) -> Result<String, GatewayError> {
        let stored = cloudevents::from_binary(headers, bytes).map_err(GatewayError::BadRequest)?;
        let mut e = new_event(topic, stored);
        e.id = event_id_for_key(scope, "0");
        e.headers.extend(extra);
        let id = e.id.clone();
        self.store(topic, vec![e]).await?;
        Ok(id)
    }

    async fn store(&self, topic: &Topic, events: Vec<NewEvent>) -> Result<(), GatewayError> {
        self.ready(topic).await?;
        self.queue
            .publish(events)
            .await
            .map(|_| ())
            .map_err(|_| GatewayError::QueueUnavailable)
    }

    fn claim(&self, events: &[NewEvent]) -> Result<Claim<'_>, GatewayError> {
        let mut set = self.in_flight.lock();
        if events.iter().any(|e| set.contains(&e.id)) {
            return Err(GatewayError::Conflict(
                "a request with this Idempotency-Key is still being published",
            ));
        }
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        set.extend(ids.iter().cloned());
        Ok(Claim { ingest: self, ids })
    }

    /// Whether every event was published before with the same content (the same request
    /// again); `422` when one was published with other content.
    async fn published_before(&self, events: &[NewEvent]) -> Result<bool, GatewayError> {
        let mut seen = 0;
        for e in events {
            match self.queue.get(&e.id).await {
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
        Ok(seen == events.len())
    }
}

fn new_event(topic: &Topic, s: Stored) -> NewEvent {
    NewEvent {
        id: new_event_id(),
        topic: topic.name.clone(),
        key: s.partition_key(),
        headers: s.headers,
        body: s.body,
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
