//! The queue trait over RabbitMQ: publish through the exchange with confirms, lease with
//! `basic.get`, retry through the ladder, dead letters and state in streams.

use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::protocol::AMQPSoftError;
use lapin::types::AMQPValue;

use super::events::{event_of, id_time_ms, props};
use super::link::{self, args, durable, header_i64, quorum_args, soft, text, unavailable};
use super::{HEAD_GRACE_MS, Msg, RabbitMq, bounded};
use crate::held::Held;
use crate::{
    Attempt, DeadLetter, Declaration, Depth, Event, Leased, NewEvent, Queue, QueueError, Result,
    StartAt, Trimmed, now_ms,
};

/// A lease looks at most this many messages past `max` (ladder returns not yet due,
/// superseded copies) before it answers.
const LOOK_PAST: usize = 256;
/// Unacknowledged messages the broker pushes to a subscription's consumer on this node:
/// the most a subscription holds in flight (1,000) and the most a lease looks past.
pub(super) const PREFETCH: u16 = 1_000 + LOOK_PAST as u16;
/// How long an empty lease waits for a message the broker is pushing.
const FIRST_WAIT: Duration = Duration::from_millis(5);
/// How long a lease waits for the next message of a backlog being pushed.
const NEXT_WAIT: Duration = Duration::from_millis(1);

impl Queue for RabbitMq {
    fn publish(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<i64>>> {
        Box::pin(bounded(async move {
            let l = self.link().await?;
            let now = now_ms();
            let mut seqs = Vec::with_capacity(events.len());
            let mut pending = Vec::new();
            let mut fresh: Vec<(String, i64)> = Vec::new();
            for e in events {
                let known = self
                    .ids
                    .lock()
                    .get(&e.id)
                    .or_else(|| fresh.iter().find(|(id, _)| *id == e.id).map(|(_, s)| *s));
                if let Some(seq) = known {
                    seqs.push(seq);
                    continue;
                }
                self.ensure_topic(&l, &e.topic).await?;
                let event = Event {
                    seq: self.next_seq(l.node),
                    id: e.id,
                    topic: e.topic,
                    key: e.key,
                    headers: e.headers,
                    body: e.body,
                    created_ms: now,
                };
                let confirm = l
                    .publish
                    .basic_publish(
                        self.names.exchange().as_str().into(),
                        event.topic.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &event.body,
                        props(&event, 1, 0),
                    )
                    .await
                    .map_err(unavailable)?;
                seqs.push(event.seq);
                fresh.push((event.id.clone(), event.seq));
                pending.push((confirm, event.topic));
            }
            for (confirm, topic) in pending {
                let c = tokio::time::timeout(link::CONFIRM_TIMEOUT, confirm)
                    .await
                    .map_err(|_| unavailable("RabbitMQ did not confirm the event in time"))?;
                link::check(c.map_err(unavailable)?, &topic)?;
            }
            let mut ids = self.ids.lock();
            for (id, seq) in fresh {
                ids.insert(id, seq);
            }
            drop(ids);
            self.published.notify_waiters();
            Ok(seqs)
        }))
    }

    fn declare<'a>(&'a self, d: &'a Declaration<'a>) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(bounded(async move {
            let Declaration {
                name,
                topic,
                start,
                generation,
            } = *d;
            let l = self.link().await?;
            let before = self.state_of("topic-of", name).await?;
            let held: i64 = self
                .state_of("gen-of", name)
                .await?
                .and_then(|g| g.parse().ok())
                .unwrap_or(0);
            if let Some(old) = before.as_deref().filter(|old| *old != topic)
                && generation < held
            {
                return Ok(Some(old.to_owned()));
            }
            self.ensure_topic(&l, topic).await?;
            let queue = self.names.sub(name);
            let existed = l.count(&queue).await.is_ok();
            l.declare(&queue, durable(), quorum_args())
                .await
                .map_err(unavailable)?;
            if let Some(old) = before.as_deref().filter(|old| *old != topic) {
                // The subscription moved to another topic: it stops taking the old one's.
                l.publish
                    .queue_unbind(
                        queue.as_str().into(),
                        self.names.exchange().as_str().into(),
                        old.into(),
                        Default::default(),
                    )
                    .await
                    .map_err(unavailable)?;
            }
            l.bind(&queue, &self.names.exchange(), topic).await?;
            for (stream, age, bytes) in [
                // Dead letters go with their events, past the longest retention.
                (self.names.dead(name), self.retention, None),
                (
                    self.names.attempts(name),
                    crate::ATTEMPT_RETENTION,
                    Some(super::ATTEMPT_BYTES),
                ),
            ] {
                if let Err(e) = l
                    .declare(&stream, durable(), link::stream_args(age, bytes))
                    .await
                    && soft(&e) != Some(AMQPSoftError::PRECONDITIONFAILED)
                {
                    return Err(unavailable(e));
                }
            }
            if before.as_deref() != Some(topic) {
                self.append_state(&l, "topic-of", name, topic).await?;
            }
            if generation > held {
                self.append_state(&l, "gen-of", name, &generation.to_string())
                    .await?;
            }
            let history = match start {
                StartAt::Now => None,
                StartAt::Beginning => Some(0),
                StartAt::Since(ms) => Some(ms),
            };
            if let (false, Some(since)) = (existed, history) {
                // Bound first, then copied up to a marker: an event published meanwhile may
                // come twice, none is missed.
                for e in self.log_since(&l, topic, since).await? {
                    l.confirmed("", &queue, &e.body, props(&e, 1, 0)).await?;
                }
            }
            Ok(None)
        }))
    }

    fn object(&self, subscription: &str, _topic: &str) -> String {
        format!("quorum queue {}", self.names.sub(subscription))
    }

    fn lease<'a>(
        &'a self,
        subscription: &'a str,
        max: usize,
        lease_for: Duration,
    ) -> BoxFuture<'a, Result<Vec<Leased>>> {
        Box::pin(bounded(async move {
            let l = self.link().await?;
            let ordered = self.ordered(subscription).await?;
            let mut consumer = self.lease_consumer(&l, subscription, PREFETCH).await?;
            let now = now_ms();
            let until = now + lease_for.as_millis() as i64;
            self.unblock_heads(subscription, now);
            let mut out = self.holds.due(subscription, max, now, until, |_, h| {
                Ok(Leased {
                    event: h.msg.event.clone(),
                    attempt: h.attempt,
                })
            })?;
            let mut looked = 0;
            while out.len() < max && looked < max + LOOK_PAST {
                looked += 1;
                // What the broker pushed already; else what it is pushing now (a backlog
                // arrives message by message): the lease ends after a quiet moment.
                let quiet = if looked == 1 { FIRST_WAIT } else { NEXT_WAIT };
                if let Err(e) = self.pull(subscription, &mut consumer) {
                    self.end_lease_consumer(&l, subscription);
                    return Err(e);
                }
                let first = self
                    .buffered
                    .lock()
                    .get_mut(subscription)
                    .and_then(std::collections::VecDeque::pop_front);
                let got = match first {
                    Some(d) => d,
                    None => match tokio::time::timeout(quiet, consumer.next()).await {
                        Err(_) => break,
                        Ok(Some(Ok(d))) => d,
                        // The consumer ended (its queue was deleted, or the channel
                        // closed): the next lease makes another, and the broker takes back
                        // what this node held on it.
                        Ok(other) => {
                            self.end_lease_consumer(&l, subscription);
                            return Err(match other {
                                Some(Err(e)) if soft(&e) == Some(AMQPSoftError::NOTFOUND) => {
                                    QueueError::NoSubscription(subscription.to_owned())
                                }
                                Some(Err(e)) => unavailable(e),
                                _ => QueueError::Unavailable(
                                    "the broker ended the subscription's consumer".to_owned(),
                                ),
                            });
                        }
                    },
                };
                let event = match event_of(&got) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(subscription = %subscription, error = %e, "a message that is not a Weir event was dropped from the subscription queue");
                        let _ = got.acker.ack(BasicAckOptions::default()).await;
                        continue;
                    }
                };
                let attempt = header_i64(&got, "weir-attempt").unwrap_or(1).max(1) as u32;
                let due = header_i64(&got, "weir-due").unwrap_or(0);
                let slot = (subscription.to_owned(), event.seq);
                if self
                    .superseded
                    .lock()
                    .remove(&(slot.0.clone(), slot.1, due))
                {
                    got.acker
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(unavailable)?;
                    continue;
                }
                if due > now_ms() {
                    // Back from a ladder level with time still to wait: the next level.
                    self.send(&l, subscription, &event, attempt, due).await?;
                    got.acker
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(unavailable)?;
                    continue;
                }
                {
                    let mut retrying = self.retrying.lock();
                    if retrying.get(&slot).is_some_and(|r| r.due == due) {
                        retrying.remove(&slot);
                    }
                }
                let seq = event.seq;
                let key = if ordered { event.key.clone() } else { None };
                let created_ms = event.created_ms;
                let give = self.holds.admit(
                    subscription,
                    seq,
                    Held {
                        msg: Msg {
                            acker: got.acker,
                            event: event.clone(),
                        },
                        key,
                        given: false,
                        until,
                        attempt,
                        progressed: now,
                        created_ms,
                    },
                );
                if give {
                    out.push(Leased { event, attempt });
                }
            }
            out.sort_by_key(|l| l.event.seq);
            Ok(out)
        }))
    }

    fn ack<'a>(&'a self, subscription: &'a str, seq: i64) -> BoxFuture<'a, Result<()>> {
        Box::pin(bounded(async move {
            if let Some(h) = self.holds.take(subscription, seq) {
                h.msg
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(unavailable)?;
                self.holds.release(subscription, h.key.as_deref(), seq);
            }
            Ok(())
        }))
    }

    fn retry_at<'a>(
        &'a self,
        subscription: &'a str,
        seq: i64,
        at_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(bounded(async move {
            let l = self.link().await?;
            if let Some(h) = self.holds.take(subscription, seq) {
                // The copy first, then the original goes: a crash between them sends it
                // twice, never loses it. Still the first of its key: nothing after it goes
                // meanwhile.
                self.send(&l, subscription, &h.msg.event, h.attempt + 1, at_ms)
                    .await?;
                let _ = h.msg.acker.ack(BasicAckOptions::default()).await;
                return Ok(());
            }
            // Waiting in the ladder: a new copy replaces it.
            let waiting = self
                .retrying
                .lock()
                .get(&(subscription.to_owned(), seq))
                .copied();
            let Some(super::Waiting { due, attempt, .. }) = waiting else {
                return Ok(());
            };
            let topic = self.topic_of(subscription).await?;
            let Some(event) = self.logged_event(&l, &topic, seq).await? else {
                return Ok(());
            };
            self.send(&l, subscription, &event, attempt, at_ms).await?;
            self.superseded
                .lock()
                .insert((subscription.to_owned(), seq, due));
            Ok(())
        }))
    }

    fn dead<'a>(
        &'a self,
        subscription: &'a str,
        seq: i64,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(bounded(async move {
            let Some(h) = self.holds.take(subscription, seq) else {
                return Ok(());
            };
            let l = self.link().await?;
            let e = &h.msg.event;
            let mut p = props(e, 1, 0);
            if let Some(t) = p.headers().clone() {
                let mut t = t;
                t.insert("weir-kind".into(), text("dead"));
                t.insert("weir-reason".into(), text(reason));
                t.insert(
                    "weir-attempts".into(),
                    AMQPValue::LongLongInt(i64::from(h.attempt)),
                );
                p = p.with_headers(t);
            }
            l.confirmed("", &self.names.dead(subscription), &e.body, p)
                .await?;
            h.msg
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(unavailable)?;
            self.holds.release(subscription, h.key.as_deref(), seq);
            self.dead_counts.lock().remove(subscription);
            Ok(())
        }))
    }

    fn dead_letters<'a>(
        &'a self,
        subscription: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>> {
        Box::pin(bounded(async move {
            let mut all = self.dead_records(subscription).await?;
            all.truncate(limit);
            Ok(all.into_iter().map(|(d, _)| d).collect())
        }))
    }

    fn replay_dead<'a>(
        &'a self,
        subscription: &'a str,
        seq: Option<i64>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(bounded(async move {
            let l = self.link().await?;
            let mut n = 0;
            for (d, e) in self.dead_records(subscription).await? {
                if seq.is_some_and(|s| s != d.seq) {
                    continue;
                }
                self.send(&l, subscription, &e, 1, 0).await?;
                let p = lapin::BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_headers(args(&[
                        ("weir-kind", text("replayed")),
                        ("weir-seq", AMQPValue::LongLongInt(d.seq)),
                    ]));
                l.confirmed("", &self.names.dead(subscription), b"", p)
                    .await?;
                n += 1;
            }
            if n > 0 {
                self.dead_counts.lock().remove(subscription);
                self.published.notify_waiters();
            }
            Ok(n)
        }))
    }

    fn replay_since<'a>(
        &'a self,
        subscription: &'a str,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(bounded(async move {
            let l = self.link().await?;
            let topic = self.topic_of(subscription).await?;
            let mut n = 0;
            for e in self.log_since(&l, &topic, since_ms).await? {
                // Being delivered here right now: not taken twice.
                if self.holds.contains(subscription, e.seq) {
                    continue;
                }
                self.send(&l, subscription, &e, 1, 0).await?;
                n += 1;
            }
            if n > 0 {
                self.published.notify_waiters();
            }
            Ok(n)
        }))
    }

    fn depth<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Depth>> {
        Box::pin(bounded(async move {
            let l = self.link().await?;
            let ready = match l.count(&self.names.sub(subscription)).await {
                Ok(n) => u64::from(n),
                Err(e) if soft(&e) == Some(AMQPSoftError::NOTFOUND) => {
                    return Err(QueueError::NoSubscription(subscription.to_owned()));
                }
                Err(e) => return Err(unavailable(e)),
            };
            let ready = ready + self.buffered_count(&l, subscription);
            let (held, mut oldest) = self.holds.count(subscription);
            let mut waiting = 0u64;
            {
                let superseded = self.superseded.lock();
                for ((s, seq), w) in self.retrying.lock().iter() {
                    // Copies back in the queue are counted there.
                    if s == subscription
                        && w.laddered
                        && !superseded.contains(&(s.clone(), *seq, w.due))
                    {
                        waiting += 1;
                        oldest = Some(oldest.map_or(w.created_ms, |o| o.min(w.created_ms)));
                    }
                }
            }
            let cached = self
                .dead_counts
                .lock()
                .get(subscription)
                .filter(|(_, at)| now_ms() - at < super::DEAD_COUNT_TTL_MS)
                .map(|(n, _)| *n);
            let dead = match cached {
                Some(n) => n,
                None => {
                    let n = self.dead_records(subscription).await?.len() as u64;
                    self.dead_counts
                        .lock()
                        .insert(subscription.to_owned(), (n, now_ms()));
                    n
                }
            };
            Ok(Depth {
                pending: ready + held + waiting,
                oldest_ms: oldest,
                dead,
            })
        }))
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        after: i64,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(bounded(async move {
            let l = self.link().await?;
            if !self.has_log(&l, topic).await {
                return Ok(Vec::new());
            }
            let known = self.offsets.lock().get(&(topic.to_owned(), after)).copied();
            let offset = match known {
                Some(o) => AMQPValue::LongLongInt(o as i64),
                None if after <= 0 => text("first"),
                // Positions of other nodes may run up to a few seconds behind this one's.
                None => AMQPValue::Timestamp(
                    ((super::events::seq_time_ms(after) - 5_000).max(0) / 1000) as u64,
                ),
            };
            let mut out: Vec<(Event, i64)> = Vec::new();
            l.scan(
                &self.names.log(topic),
                offset,
                false,
                Duration::from_millis(40),
                |d| {
                    if let Ok(e) = event_of(d)
                        && e.seq > after
                    {
                        let at = header_i64(d, "x-stream-offset").unwrap_or(-1);
                        out.push((e, at));
                    }
                    out.len() < max
                },
            )
            .await?;
            if let Some((last, at)) = out.last()
                && *at >= 0
            {
                let mut offsets = self.offsets.lock();
                if offsets.len() > 10_000 {
                    offsets.clear();
                }
                offsets.insert((topic.to_owned(), last.seq), (*at + 1) as u64);
            }
            let mut events: Vec<Event> = out.into_iter().map(|(e, _)| e).collect();
            events.sort_by_key(|e| e.seq);
            Ok(events)
        }))
    }

    fn trim<'a>(&'a self, _topic: &'a str, _before_ms: i64) -> BoxFuture<'a, Result<Trimmed>> {
        // The topic streams' own max-age (the longest topic retention) drops old events.
        Box::pin(async { Ok(Trimmed::default()) })
    }

    fn latest<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<i64>> {
        Box::pin(bounded(async move {
            let l = self.link().await?;
            if !self.has_log(&l, topic).await {
                return Ok(0);
            }
            // The last chunk holds the newest event, unless it holds only a marker (a
            // replay or a new subscription read the log since): then further back.
            let recent = ((now_ms() - 600_000).max(0) / 1000) as u64;
            let mut last = 0;
            for from in [text("last"), AMQPValue::Timestamp(recent), text("first")] {
                l.scan(
                    &self.names.log(topic),
                    from,
                    false,
                    Duration::from_millis(40),
                    |d| {
                        if let Some(seq) = header_i64(d, "weir-seq") {
                            last = last.max(seq);
                        }
                        true
                    },
                )
                .await?;
                if last > 0 {
                    break;
                }
            }
            Ok(last)
        }))
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Event>>> {
        Box::pin(bounded(async move {
            let l = self.link().await?;
            self.state_of("topic", "").await?;
            let topics: Vec<String> = self
                .state
                .lock()
                .0
                .keys()
                .filter(|(k, _)| k == "topic")
                .map(|(_, t)| t.clone())
                .collect();
            let at = id_time_ms(id);
            for topic in topics {
                let offset = match at {
                    Some(t) => AMQPValue::Timestamp(((t - 5_000).max(0) / 1000) as u64),
                    None => text("first"),
                };
                let mut found = None;
                l.scan(
                    &self.names.log(&topic),
                    offset,
                    false,
                    Duration::from_millis(200),
                    |d| match event_of(d) {
                        Ok(e) if e.id == id => {
                            found = Some(e);
                            false
                        }
                        // Past the id's time (with room for clocks apart): not here.
                        Ok(e) => at.is_none_or(|t| e.created_ms <= t + 60_000),
                        Err(_) => true,
                    },
                )
                .await?;
                if found.is_some() {
                    return Ok(found);
                }
            }
            Ok(None)
        }))
    }

    fn set_ordered<'a>(
        &'a self,
        subscription: &'a str,
        ordered: bool,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(bounded(async move {
            let l = self.link().await?;
            self.append_state(&l, "ordered", subscription, if ordered { "1" } else { "" })
                .await
        }))
    }

    fn record<'a>(&'a self, subscription: &'a str, attempt: Attempt) -> BoxFuture<'a, Result<()>> {
        Box::pin(bounded(async move {
            let l = self.link().await?;
            let json =
                serde_json::to_vec(&attempt).map_err(|e| QueueError::Corrupt(e.to_string()))?;
            // Not waited for: records never hold up a delivery.
            let _confirm = l
                .publish
                .basic_publish(
                    "".into(),
                    self.names.attempts(subscription).as_str().into(),
                    BasicPublishOptions::default(),
                    &json,
                    lapin::BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .map_err(unavailable)?;
            Ok(())
        }))
    }

    fn attempts<'a>(
        &'a self,
        subscription: &'a str,
        event_id: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Attempt>>> {
        Box::pin(bounded(async move {
            let l = self.link().await?;
            let mut log = crate::AttemptLog::default();
            l.scan(
                &self.names.attempts(subscription),
                text("first"),
                true,
                Duration::ZERO,
                |d| {
                    log.push(&d.data, event_id);
                    true
                },
            )
            .await?;
            Ok(log.newest(limit))
        }))
    }

    fn set_disabled<'a>(
        &'a self,
        subscription: &'a str,
        reason: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(bounded(async move {
            let l = self.link().await?;
            self.append_state(&l, "disabled", subscription, reason.unwrap_or(""))
                .await
        }))
    }

    fn disabled<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(self.state_soon("disabled", subscription))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(l) = self.link.lock().await.take() {
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    l.conn.close(200, "closing".into()),
                )
                .await;
            }
        })
    }

    fn published(&self, max_wait: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = tokio::time::timeout(max_wait, self.published.notified()).await;
        })
    }
}

impl RabbitMq {
    /// Whether `topic` has a log: known when this connection declared it, else asked (a
    /// stream client's poll costs no broker round trip once the topic is known).
    async fn has_log(&self, l: &super::link::Link, topic: &str) -> bool {
        self.topics.lock().contains(topic) || l.count(&self.names.log(topic)).await.is_ok()
    }

    async fn ordered(&self, sub: &str) -> Result<bool> {
        Ok(self.state_soon("ordered", sub).await?.is_some())
    }

    /// Ordered keys whose head is neither held here nor due back from the ladder (another
    /// node took it after it was due) stop waiting for it.
    fn unblock_heads(&self, sub: &str, now: i64) {
        for (key, seq) in self.holds.heads_elsewhere(sub) {
            let slot = (sub.to_owned(), seq);
            let back_soon = self
                .retrying
                .lock()
                .get(&slot)
                .is_some_and(|w| now < w.due + HEAD_GRACE_MS);
            if !back_soon {
                self.holds.release(sub, Some(&key), seq);
            }
        }
    }
}
