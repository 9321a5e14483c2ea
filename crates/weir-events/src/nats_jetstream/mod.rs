//! The NATS JetStream queue. One stream holds the events (`P.ev.TOPIC.ID`; the stream
//! sequence is the event's position; `Nats-Msg-Id` makes publishing idempotent within the
//! stream's duplicate window); each subscription is a durable pull consumer (its cursor),
//! whose ack wait is the lease, `Nak` with a delay the retry and `Term` the end of a dead
//! letter. Replays go through a second consumer per subscription (`P.re.SUB.ID`). Dead
//! letters, attempt records and per-subscription state are small streams beside it.
//! Per-key ordering holds later events of a key in the node that leased them (keeping
//! their leases alive) until the one before is done.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::message::{AckKind, Message};
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;

mod retention;
mod support;
use crate::held::{Held, Holds};
use support::{event_of, header, missing, next_by_subject, one_line};

use crate::{
    Attempt, DeadLetter, Declaration, Depth, Event, Leased, NewEvent, Queue, QueueError, Result,
    StartAt, Trimmed, now_ms,
};

/// How long an ack wait is until a lease sets it.
const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

/// Durable consumer names may not hold `.`; names are letters, digits, `-`, `_`, `.`.
fn consumer_name(sub: &str) -> String {
    sub.replace('.', "_dot_")
}

/// Held messages tell the broker they are still being worked on this often (well inside
/// the shortest ack wait, which is never below [`DEFAULT_ACK_WAIT`]).
const PROGRESS_EVERY_MS: i64 = 10_000;
/// The replay consumer is asked this often (at once after a replay made here).
const REPLAY_POLL_MS: i64 = 1_000;
/// How long a subscription's ordering flag read from the broker is trusted.
const STATE_TTL_MS: i64 = 5_000;

pub struct NatsJetStream {
    js: Context,
    prefix: String,
    events: Stream,
    dead: Stream,
    attempts: Stream,
    state: Stream,
    holds: Holds<Message>,
    /// Messages handed back with a delay (`Nak`), until they come again: a new retry time
    /// is a new `Nak`.
    retrying: Mutex<HashMap<(String, i64), Message>>,
    /// The ack wait each consumer was last set to.
    ack_waits: Mutex<HashMap<String, Duration>>,
    /// When each subscription's replay consumer was last asked.
    replay_polled: Mutex<HashMap<String, i64>>,
    /// Messages being delivered here when their subscription moved to another topic
    /// (their consumer is gone): acknowledging them is a no-op, a retry a replay copy.
    moved: Mutex<std::collections::HashSet<(String, i64)>>,
    /// Each subscription's ordering flag and when it was read, so a lease asks the broker
    /// at most every [`STATE_TTL_MS`].
    ordered_seen: Mutex<HashMap<String, (bool, i64)>>,
    /// Each subscription's retention boundary (see `retention.rs`) and when it was read.
    retired_seen: Mutex<HashMap<String, (u64, i64)>>,
    published: tokio::sync::Notify,
    pub display: String,
}

impl Queue for NatsJetStream {
    fn publish(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<i64>>> {
        Box::pin(async move {
            let now = now_ms().to_string();
            let mut acks = Vec::with_capacity(events.len());
            for e in &events {
                let mut h = HeaderMap::new();
                h.insert("Nats-Msg-Id", e.id.as_str());
                h.insert("Weir-Topic", e.topic.as_str());
                h.insert("Weir-Created", now.as_str());
                if let Some(k) = &e.key {
                    h.insert("Weir-Key", one_line(k).as_str());
                }
                let stored = serde_json::to_string(&e.headers)
                    .map_err(|err| QueueError::Corrupt(err.to_string()))?;
                h.insert("Weir-Headers", stored.as_str());
                let subject = format!("{}.ev.{}.{}", self.prefix, e.topic, e.id);
                acks.push(
                    self.js
                        .publish_with_headers(subject, h, e.body.clone())
                        .await
                        .map_err(unavailable)?,
                );
            }
            let mut seqs = Vec::with_capacity(acks.len());
            for a in acks {
                seqs.push(a.await.map_err(unavailable)?.sequence as i64);
            }
            self.published.notify_waiters();
            Ok(seqs)
        })
    }

    fn declare<'a>(&'a self, d: &'a Declaration<'a>) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            let Declaration {
                name,
                topic,
                start,
                generation,
            } = *d;
            let held: i64 = self
                .state_of("gen", name)
                .await?
                .and_then(|g| g.parse().ok())
                .unwrap_or(0);
            let durable = consumer_name(name);
            let wanted = self.topic_filter(topic);
            let mut start = match start {
                StartAt::Now => DeliverPolicy::New,
                StartAt::Beginning => DeliverPolicy::All,
                StartAt::Since(ms) => DeliverPolicy::ByStartTime {
                    start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                        i128::from(ms) * 1_000_000,
                    )
                    .map_err(unavailable)?,
                },
            };
            match self.events.get_consumer::<pull::Config>(&durable).await {
                Ok(mut c) => {
                    let info = c.info().await.map_err(unavailable)?.clone();
                    if info.config.filter_subject != wanted {
                        if generation < held {
                            let old = self.topic_of_filter(&info.config.filter_subject);
                            return Ok(Some(old));
                        }
                        // The newer generation is known before the consumer goes, so an
                        // older node that finds it missing meanwhile does not make it again
                        // on its own topic.
                        if generation > held {
                            self.set_state("gen", name, &generation.to_string()).await?;
                        }
                        start = self.move_to(name, &info, topic).await?;
                    }
                }
                // Missing, and a newer declaration is known: that node makes it (a move in
                // progress, or its own re-declaration).
                Err(e) if missing(&e) && generation < held => {
                    return Ok(Some("the topic of a newer declaration".to_owned()));
                }
                Err(e) if missing(&e) => {}
                Err(e) => return Err(unavailable(e)),
            }
            for (consumer, filter, policy) in [
                (durable.clone(), wanted.clone(), start),
                (
                    format!("{durable}_re"),
                    self.replay_filter(name),
                    DeliverPolicy::All,
                ),
            ] {
                self.events
                    .get_or_create_consumer(
                        &consumer,
                        pull::Config {
                            durable_name: Some(consumer.clone()),
                            deliver_policy: policy,
                            ack_policy: AckPolicy::Explicit,
                            ack_wait: DEFAULT_ACK_WAIT,
                            filter_subject: filter,
                            max_ack_pending: 100_000,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(unavailable)?;
            }
            if generation > held {
                self.set_state("gen", name, &generation.to_string()).await?;
            }
            Ok(None)
        })
    }

    fn object(&self, subscription: &str, _topic: &str) -> String {
        let c = consumer_name(subscription);
        format!(
            "durable consumers {c} and {c}_re on stream {}",
            self.events.cached_info().config.name
        )
    }

    fn lease<'a>(
        &'a self,
        subscription: &'a str,
        max: usize,
        lease_for: Duration,
    ) -> BoxFuture<'a, Result<Vec<Leased>>> {
        Box::pin(async move {
            self.set_ack_wait(subscription, lease_for).await?;
            let ordered = self.ordered(subscription).await?;
            let retired = self.retired(subscription).await?;
            if retired > 0 {
                self.drop_retired(subscription, retired).await;
            }
            let now = now_ms();
            let until = now + lease_for.as_millis() as i64;
            // Held here: leases that ran out (handed out again), and events whose turn
            // has come (ordered keys released meanwhile).
            let mut out = self.holds.due(subscription, max, now, until, |seq, h| {
                let m = &h.msg;
                Ok(Leased {
                    event: event_of(&m.subject, seq, m.headers.as_ref(), m.payload.clone())?,
                    attempt: h.attempt,
                })
            })?;
            let poll_replays = {
                let mut polled = self.replay_polled.lock();
                let last = polled.entry(subscription.to_owned()).or_insert(0);
                let due = now - *last >= REPLAY_POLL_MS;
                if due {
                    *last = now;
                }
                due
            };
            for replay in [true, false] {
                let room = max.saturating_sub(out.len());
                if room == 0 {
                    break;
                }
                if replay && !poll_replays {
                    continue;
                }
                for m in self.fetch(subscription, replay, room).await? {
                    let info = m.info().map_err(unavailable)?;
                    let (stream_seq, delivered) = (info.stream_sequence as i64, info.delivered);
                    if !replay && (stream_seq as u64) < retired {
                        // Retention made it a dead letter already: it comes only by replay.
                        let _ = m.double_ack_with(AckKind::Term).await;
                        continue;
                    }
                    let event = event_of(
                        &m.subject,
                        stream_seq,
                        m.headers.as_ref(),
                        m.payload.clone(),
                    )?;
                    let seq = event.seq;
                    self.retrying.lock().remove(&(subscription.to_owned(), seq));
                    let key = if ordered { event.key.clone() } else { None };
                    let attempt = delivered.max(1) as u32;
                    let give = self.holds.admit(
                        subscription,
                        seq,
                        Held {
                            msg: m,
                            key,
                            given: false,
                            until,
                            attempt,
                            progressed: now,
                            created_ms: event.created_ms,
                        },
                    );
                    if give {
                        out.push(Leased { event, attempt });
                    }
                }
            }
            // Events held here keep their broker leases while they wait or are re-leased.
            for m in self.holds.stale(subscription, now, PROGRESS_EVERY_MS) {
                let _ = m.ack_with(AckKind::Progress).await;
            }
            out.sort_by_key(|l| l.event.seq);
            Ok(out)
        })
    }

    fn ack<'a>(&'a self, subscription: &'a str, seq: i64) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if let Some(h) = self.holds.take(subscription, seq) {
                let acked = h.msg.double_ack().await;
                // A message of a consumer removed by a move: delivered, nothing to tell.
                if !self.was_moved(subscription, seq) {
                    acked.map_err(unavailable)?;
                }
                self.holds.release(subscription, h.key.as_deref(), seq);
            }
            Ok(())
        })
    }

    fn retry_at<'a>(
        &'a self,
        subscription: &'a str,
        seq: i64,
        at_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.was_moved(subscription, seq) {
                // Its consumer went with a move: it comes back through the replay consumer.
                if let Some(h) = self.holds.take(subscription, seq) {
                    self.holds.release(subscription, h.key.as_deref(), seq);
                }
                self.replay_one(subscription, seq).await?;
                self.replay_polled.lock().remove(subscription);
                return Ok(());
            }
            let msg = match self.holds.take(subscription, seq) {
                Some(h) => Some(h.msg),
                None => self.retrying.lock().remove(&(subscription.to_owned(), seq)),
            };
            if let Some(m) = msg {
                let delay = Duration::from_millis((at_ms - now_ms()).max(0) as u64);
                m.double_ack_with(AckKind::Nak(Some(delay)))
                    .await
                    .map_err(unavailable)?;
                // Still the first of its key: nothing after it goes meanwhile.
                self.retrying
                    .lock()
                    .insert((subscription.to_owned(), seq), m);
            }
            Ok(())
        })
    }

    fn dead<'a>(
        &'a self,
        subscription: &'a str,
        seq: i64,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let Some(h) = self.holds.take(subscription, seq) else {
                return Ok(());
            };
            let event = event_of(&h.msg.subject, seq, h.msg.headers.as_ref(), Bytes::new())?;
            self.dead_record(subscription, seq as u64, &event.id, h.attempt, reason)
                .await?;
            let termed = h.msg.double_ack_with(AckKind::Term).await;
            if !self.was_moved(subscription, seq) {
                termed.map_err(unavailable)?;
            }
            self.holds.release(subscription, h.key.as_deref(), seq);
            Ok(())
        })
    }

    fn dead_letters<'a>(
        &'a self,
        subscription: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>> {
        Box::pin(async move {
            Ok(self
                .dead_records(subscription, limit)
                .await?
                .into_iter()
                .map(|(_, d)| d)
                .collect())
        })
    }

    fn replay_dead<'a>(
        &'a self,
        subscription: &'a str,
        seq: Option<i64>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            self.consumer(subscription, false).await?;
            let mut n = 0;
            for (record, d) in self.dead_records(subscription, usize::MAX).await? {
                if seq.is_some_and(|s| s != d.seq) {
                    continue;
                }
                if self.replay_one(subscription, d.seq).await? {
                    n += 1;
                }
                self.replay_polled.lock().remove(subscription);
                self.dead
                    .delete_message(record)
                    .await
                    .map_err(unavailable)?;
            }
            Ok(n)
        })
    }

    fn replay_since<'a>(
        &'a self,
        subscription: &'a str,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let mut c = self.consumer(subscription, false).await?;
            let info = c.info().await.map_err(unavailable)?;
            let last = info.delivered.stream_sequence as i64;
            let filter = info.config.filter_subject.clone();
            let start =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(since_ms) * 1_000_000)
                    .map_err(unavailable)?;
            let mut due = Vec::new();
            self.scan(
                &self.events,
                filter,
                DeliverPolicy::ByStartTime { start_time: start },
                |m| {
                    let Ok(i) = m.info() else { return false };
                    let seq = i.stream_sequence as i64;
                    if seq > last {
                        return false;
                    }
                    due.push(seq);
                    true
                },
            )
            .await?;
            let mut n = 0;
            for seq in due {
                // Being delivered right now: not taken twice.
                if self.holds.contains(subscription, seq) {
                    continue;
                }
                if self.replay_one(subscription, seq).await? {
                    n += 1;
                }
                self.replay_polled.lock().remove(subscription);
            }
            Ok(n)
        })
    }

    fn depth<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Depth>> {
        Box::pin(async move {
            let mut pending = 0u64;
            let mut oldest: Option<i64> = None;
            for replay in [false, true] {
                let mut c = self.consumer(subscription, replay).await?;
                let info = c.info().await.map_err(unavailable)?;
                let owed = info.num_pending + info.num_ack_pending as u64;
                pending += owed;
                if owed > 0 {
                    let filter = info.config.filter_subject.clone();
                    if let Ok(m) = self
                        .events
                        .raw_message_builder()
                        .sequence(info.ack_floor.stream_sequence + 1)
                        .next_by_subject(filter)
                        .send()
                        .await
                    {
                        let t =
                            header(Some(&m.headers), "Weir-Created").and_then(|s| s.parse().ok());
                        oldest = match (oldest, t) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                    }
                }
            }
            let subject = format!("{}.dead.{subscription}", self.prefix);
            let dead = self
                .dead
                .info_with_subjects(&subject)
                .await
                .map_err(unavailable)?
                .next()
                .await
                .transpose()
                .map_err(unavailable)?
                .map_or(0, |(_, n)| n as u64);
            Ok(Depth {
                pending,
                oldest_ms: oldest,
                dead,
            })
        })
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        after: i64,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(async move {
            let filter = self.topic_filter(topic);
            let mut out = Vec::new();
            let mut from = (after.max(0) + 1) as u64;
            while out.len() < max {
                match next_by_subject(&self.events, &filter, from).await {
                    Ok(m) => {
                        from = m.sequence + 1;
                        out.push(event_of(
                            &m.subject,
                            m.sequence as i64,
                            Some(&m.headers),
                            m.payload,
                        )?);
                    }
                    Err(e) if missing(&e) => break,
                    Err(e) => return Err(unavailable(e)),
                }
            }
            Ok(out)
        })
    }

    fn trim<'a>(&'a self, topic: &'a str, before_ms: i64) -> BoxFuture<'a, Result<Trimmed>> {
        Box::pin(self.trim_topic(topic, before_ms))
    }

    fn latest<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async move {
            match self
                .events
                .get_last_raw_message_by_subject(&self.topic_filter(topic))
                .await
            {
                Ok(m) => Ok(m.sequence as i64),
                Err(e) if missing(&e) => Ok(0),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Event>>> {
        Box::pin(async move {
            if id.is_empty() || id.contains(['.', '*', '>', ' ']) {
                return Ok(None);
            }
            let subject = format!("{}.ev.*.{id}", self.prefix);
            match self.events.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => Ok(Some(event_of(
                    &m.subject,
                    m.sequence as i64,
                    Some(&m.headers),
                    m.payload,
                )?)),
                Err(e) if missing(&e) => Ok(None),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn set_ordered<'a>(
        &'a self,
        subscription: &'a str,
        ordered: bool,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.set_state("ordered", subscription, if ordered { "1" } else { "" })
                .await?;
            self.ordered_seen
                .lock()
                .insert(subscription.to_owned(), (ordered, now_ms()));
            Ok(())
        })
    }

    fn record<'a>(&'a self, subscription: &'a str, attempt: Attempt) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let json =
                serde_json::to_vec(&attempt).map_err(|e| QueueError::Corrupt(e.to_string()))?;
            self.js
                .publish(
                    format!("{}.att.{subscription}", self.prefix),
                    Bytes::from(json),
                )
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn attempts<'a>(
        &'a self,
        subscription: &'a str,
        event_id: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Attempt>>> {
        Box::pin(async move {
            let mut log = crate::AttemptLog::default();
            self.scan(
                &self.attempts,
                format!("{}.att.{subscription}", self.prefix),
                DeliverPolicy::All,
                |m| {
                    log.push(&m.payload, event_id);
                    true
                },
            )
            .await?;
            Ok(log.newest(limit))
        })
    }

    fn set_disabled<'a>(
        &'a self,
        subscription: &'a str,
        reason: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.set_state("disabled", subscription, reason.unwrap_or("")))
    }

    fn disabled<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(self.state_of("disabled", subscription))
    }

    fn published(&self, max_wait: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = tokio::time::timeout(max_wait, self.published.notified()).await;
        })
    }
}
