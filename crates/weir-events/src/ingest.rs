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

/// How long a publish waits for its topic's workers to match the configuration (at start,
/// or after a change to one of its subscriptions) before it answers `503`.
const DECLARE_WAIT: Duration = Duration::from_secs(5);

/// A topic as one configuration serves it.
#[derive(Debug, Clone)]
pub struct Topic {
    pub name: String,
    /// The largest event body accepted (`413` beyond it).
    pub max_event_size: u64,
    /// The subscriptions that read it, by name and [`fingerprint`]: an event is
    /// acknowledged only while exactly these have workers on the topic (each with its
    /// cursor in the queue), so it is delivered under the declaration it was accepted
    /// under.
    pub subscriptions: Arc<[(String, u64)]>,
}

/// The node's ingest: the queue, the idempotency keys being published, and the delivery
/// workers running on each topic.
pub struct Ingest {
    queue: Arc<dyn Queue>,
    /// Ids of idempotency keys being published right now.
    in_flight: Mutex<HashSet<String>>,
    /// Topic → each worker reading it now; a worker being replaced is here beside its
    /// successor until it ends.
    workers: RwLock<HashMap<String, Vec<Worker>>>,
    next_worker: std::sync::atomic::AtomicU64,
    workers_changed: tokio::sync::Notify,
}

/// A delivery worker reading a topic.
struct Worker {
    sub: String,
    /// The [`fingerprint`] of the declaration it runs.
    fingerprint: u64,
    /// Tells it from a worker of the same declaration starting or ending beside it.
    id: u64,
}

/// A delivery worker's place in [`Ingest::workers`], held while it runs.
pub struct Running<'a> {
    ingest: &'a Ingest,
    topic: String,
    id: u64,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut workers = self.ingest.workers.write();
        if let Some(list) = workers.get_mut(&self.topic) {
            list.retain(|w| w.id != self.id);
            if list.is_empty() {
                workers.remove(&self.topic);
            }
        }
        drop(workers);
        self.ingest.workers_changed.notify_waiters();
    }
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
            workers: RwLock::new(HashMap::new()),
            next_worker: std::sync::atomic::AtomicU64::new(1),
            workers_changed: tokio::sync::Notify::new(),
        })
    }

    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    /// A worker of `sub` (declared as `fingerprint`) reads `topic` from now until the
    /// returned guard is dropped; its cursor is in the queue.
    pub fn running(&self, sub: &str, topic: &str, fingerprint: u64) -> Running<'_> {
        let id = self
            .next_worker
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.workers
            .write()
            .entry(topic.to_owned())
            .or_default()
            .push(Worker {
                sub: sub.to_owned(),
                fingerprint,
                id,
            });
        self.workers_changed.notify_waiters();
        Running {
            ingest: self,
            topic: topic.to_owned(),
            id,
        }
    }

    /// Whether the workers reading `topic` are exactly those its configuration declares.
    fn in_step(&self, topic: &Topic) -> bool {
        let workers = self.workers.read();
        let running = workers.get(&topic.name).map_or(&[][..], Vec::as_slice);
        running.len() == topic.subscriptions.len()
            && topic
                .subscriptions
                .iter()
                .all(|(s, f)| running.iter().any(|w| w.sub == *s && w.fingerprint == *f))
    }

    /// Waits until the topic's workers are those of its configuration (new ones started
    /// with their cursors, replaced and removed ones ended), or answers `503`.
    async fn ready(&self, topic: &Topic) -> Result<(), GatewayError> {
        if self.in_step(topic) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + DECLARE_WAIT;
        loop {
            let changed = self.workers_changed.notified();
            if self.in_step(topic) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                tracing::warn!(topic = %topic.name, "an event was refused: the topic's subscriptions have not taken the last change yet (a cursor the queue has not made?)");
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

/// Identifies one declaration of a subscription (all of its settings): a publish after a
/// change waits for the worker started from the new one, so an event acknowledged after a
/// change is delivered under it (its topic, filter, endpoint).
pub fn fingerprint(sub: &weir_config::SubscriptionConfig) -> u64 {
    use std::hash::{Hash, Hasher};
    // When it was written is not part of what it declares.
    let settings = weir_config::SubscriptionConfig {
        generation: weir_config::Generation(0),
        ..sub.clone()
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{settings:?}").hash(&mut h);
    h.finish()
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
