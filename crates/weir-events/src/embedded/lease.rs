//! The embedded queue's lease path: due retries and expired leases first, then new events
//! past the cursor (or, for an ordered subscription, the first open event of each key), in
//! one write transaction; and the state changes of a leased delivery.

use std::time::Duration;

use bytes::Bytes;
use sqlx::Row;

use super::{Embedded, unavailable};
use crate::{Event, Leased, QueueError, Result, now_ms};

/// New events for an ordered subscription: each gets a delivery row, leased when its key
/// has no open delivery before it, else waiting (pending) behind it.
async fn take_ordered(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    subscription: &str,
    topic: &str,
    room: usize,
    now: i64,
    until: i64,
    lease_id: i64,
) -> Result<()> {
    let fresh = sqlx::query(
        "SELECT seq, key FROM events WHERE topic = ?1 \
         AND seq > (SELECT cursor FROM subscriptions WHERE name = ?2) ORDER BY seq LIMIT ?3",
    )
    .bind(topic)
    .bind(subscription)
    .bind(room as i64)
    .fetch_all(&mut **tx)
    .await
    .map_err(unavailable)?;
    let mut busy = std::collections::HashSet::new();
    let mut last = None;
    for r in &fresh {
        let seq: i64 = r.try_get("seq").map_err(unavailable)?;
        let key: Option<String> = r.try_get("key").map_err(unavailable)?;
        let waits = match &key {
            None => false,
            Some(k) if busy.contains(k) => true,
            Some(k) => {
                let open = sqlx::query(
                    "SELECT 1 FROM deliveries d JOIN events e ON e.seq = d.seq \
                     WHERE d.subscription = ?1 AND d.state IN ('pending', 'leased') \
                     AND e.key = ?2 LIMIT 1",
                )
                .bind(subscription)
                .bind(k)
                .fetch_optional(&mut **tx)
                .await
                .map_err(unavailable)?
                .is_some();
                busy.insert(k.clone());
                open
            }
        };
        let (state, attempt) = if waits { ("pending", 0) } else { ("leased", 1) };
        sqlx::query(
            "INSERT INTO deliveries (subscription, seq, state, attempt, due_ms, lease_until, lease_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(subscription)
        .bind(seq)
        .bind(state)
        .bind(attempt)
        .bind(now)
        .bind(if waits { 0 } else { until })
        .bind(if waits { 0 } else { lease_id })
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
        last = Some(seq);
    }
    if let Some(last) = last {
        sqlx::query("UPDATE subscriptions SET cursor = ?1 WHERE name = ?2")
            .bind(last)
            .bind(subscription)
            .execute(&mut **tx)
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

pub(super) fn event_of(r: &sqlx::sqlite::SqliteRow) -> Result<Event> {
    let headers: String = r.try_get("headers").map_err(unavailable)?;
    let body: Vec<u8> = r.try_get("body").map_err(unavailable)?;
    Ok(Event {
        seq: r.try_get("seq").map_err(unavailable)?,
        id: r.try_get("id").map_err(unavailable)?,
        topic: r.try_get("topic").map_err(unavailable)?,
        key: r.try_get("key").map_err(unavailable)?,
        headers: serde_json::from_str(&headers).map_err(|e| QueueError::Corrupt(e.to_string()))?,
        body: Bytes::from(body),
        created_ms: r.try_get("created_ms").map_err(unavailable)?,
    })
}

impl Embedded {
    pub(super) async fn topic_of(&self, subscription: &str) -> Result<(String, i64)> {
        let row = sqlx::query("SELECT topic, cursor FROM subscriptions WHERE name = ?1")
            .bind(subscription)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| QueueError::NoSubscription(subscription.to_owned()))?;
        Ok((
            row.try_get("topic").map_err(unavailable)?,
            row.try_get("cursor").map_err(unavailable)?,
        ))
    }

    pub(super) async fn lease_now(
        &self,
        subscription: &str,
        max: usize,
        lease_for: Duration,
    ) -> Result<Vec<Leased>> {
        self.tracks.load(&self.pool, subscription).await?;
        let now = now_ms();
        let until = now + lease_for.as_millis() as i64;
        let Some((topic, ordered, due)) = self.tracks.with(subscription, |t| {
            (t.topic.clone(), t.ordered, t.next_due <= now)
        }) else {
            // A declaration made it rows meanwhile: the next lease loads it again.
            return Ok(Vec::new());
        };
        if ordered {
            return self
                .lease_rows(subscription, &topic, max, now, until, true)
                .await;
        }
        let mut out = if due {
            self.lease_due(subscription, &topic, max, now, until)
                .await?
        } else {
            Vec::new()
        };
        let again = self.tracks.expired(subscription, max - out.len(), until);
        out.extend(self.events_of(&again).await?);
        if out.len() < max {
            out.extend(
                self.lease_fresh(subscription, max - out.len(), until)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Rows that fell due (retries, leases that ran out), leased; then when the next one
    /// may.
    async fn lease_due(
        &self,
        subscription: &str,
        topic: &str,
        max: usize,
        now: i64,
        until: i64,
    ) -> Result<Vec<Leased>> {
        // Taken before the look: a row written meanwhile lowers it again.
        self.tracks.with(subscription, |t| t.next_due = i64::MAX);
        let got = self
            .lease_rows(subscription, topic, max, now, until, false)
            .await;
        let next = match &got {
            Ok(_) => sqlx::query(
                "SELECT MIN(CASE state WHEN 'pending' THEN due_ms ELSE lease_until END) \
                 FROM deliveries WHERE subscription = ?1 AND state IN ('pending', 'leased')",
            )
            .bind(subscription)
            .fetch_one(&self.pool)
            .await
            .ok()
            .and_then(|r| r.try_get::<Option<i64>, _>(0).ok())
            .map_or(0, |min| min.unwrap_or(i64::MAX)),
            Err(_) => 0,
        };
        self.tracks.due(subscription, next);
        got
    }

    /// New events past what the subscription has taken, leased in memory.
    async fn lease_fresh(
        &self,
        subscription: &str,
        room: usize,
        until: i64,
    ) -> Result<Vec<Leased>> {
        let Some((topic, after, epoch)) = self
            .tracks
            .with(subscription, |t| (t.topic.clone(), t.taken, t.epoch))
        else {
            return Ok(Vec::new());
        };
        let events = match self.recent.after(&topic, after, room) {
            Some(events) => events,
            None => sqlx::query(
                "SELECT seq, id, topic, key, headers, body, created_ms FROM events \
                 WHERE topic = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .bind(&topic)
            .bind(after)
            .bind(room as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?
            .iter()
            .map(event_of)
            .collect::<Result<Vec<_>>>()?,
        };
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        let Some(handed) = self.tracks.hand_out(subscription, epoch, &seqs, until) else {
            return Ok(Vec::new());
        };
        // What another lease handed out meanwhile is a prefix of what was read.
        let skip = events.len() - handed.len();
        Ok(events
            .into_iter()
            .skip(skip)
            .zip(handed)
            .map(|(event, (_, attempt))| Leased { event, attempt })
            .collect())
    }

    /// The events of open leases handed out again, with their attempts.
    async fn events_of(&self, again: &[(i64, u32)]) -> Result<Vec<Leased>> {
        if again.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT seq, id, topic, key, headers, body, created_ms FROM events WHERE seq IN (",
        );
        let mut list = q.separated(", ");
        for (seq, _) in again {
            list.push_bind(*seq);
        }
        q.push(") ORDER BY seq");
        let rows = q
            .build()
            .persistent(false)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let attempts: std::collections::HashMap<i64, u32> = again.iter().copied().collect();
        rows.iter()
            .map(|r| {
                let event = event_of(r)?;
                let attempt = attempts.get(&event.seq).copied().unwrap_or(2);
                Ok(Leased { event, attempt })
            })
            .collect()
    }

    /// Leases from delivery rows: due retries and leases that ran out, and for an ordered
    /// subscription new events too, each given a row.
    async fn lease_rows(
        &self,
        subscription: &str,
        topic: &str,
        max: usize,
        now: i64,
        until: i64,
        ordered: bool,
    ) -> Result<Vec<Leased>> {
        let lease_id = self
            .lease_ids
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _turn = self.write.take().await;
        let mut tx = self.quick.begin().await.map_err(unavailable)?;
        // Due retries, and leases that ran out (a worker that crashed or hung), first.
        // Ordered: only the first open delivery of each key.
        let again_sql = if ordered {
            "UPDATE deliveries SET state = 'leased', attempt = attempt + 1, lease_until = ?1, \
             lease_id = ?5 WHERE subscription = ?2 AND seq IN (SELECT d.seq FROM deliveries d \
               JOIN events e ON e.seq = d.seq \
               WHERE d.subscription = ?2 AND ((d.state = 'pending' AND d.due_ms <= ?3) \
                  OR (d.state = 'leased' AND d.lease_until <= ?3)) \
                 AND (e.key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries d2 \
                   JOIN events e2 ON e2.seq = d2.seq WHERE d2.subscription = ?2 \
                   AND d2.state IN ('pending', 'leased') AND e2.key = e.key AND d2.seq < d.seq)) \
               ORDER BY d.seq LIMIT ?4)"
        } else {
            "UPDATE deliveries SET state = 'leased', attempt = attempt + 1, lease_until = ?1, \
             lease_id = ?5 WHERE subscription = ?2 AND seq IN (SELECT seq FROM deliveries \
               WHERE subscription = ?2 AND ((state = 'pending' AND due_ms <= ?3) \
                  OR (state = 'leased' AND lease_until <= ?3)) ORDER BY seq LIMIT ?4)"
        };
        let again = sqlx::query(again_sql)
            .bind(until)
            .bind(subscription)
            .bind(now)
            .bind(max as i64)
            .bind(lease_id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected() as usize;
        let room = max.saturating_sub(again);
        if room > 0 && ordered {
            take_ordered(&mut tx, subscription, topic, room, now, until, lease_id).await?;
        }
        let rows = sqlx::query(
            "SELECT e.seq, e.id, e.topic, e.key, e.headers, e.body, e.created_ms, d.attempt \
             FROM deliveries d JOIN events e ON e.seq = d.seq \
             WHERE d.subscription = ?1 AND d.state = 'leased' AND d.lease_id = ?2 \
             ORDER BY e.seq",
        )
        .bind(subscription)
        .bind(lease_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let out = rows
            .iter()
            .map(|r| {
                Ok(Leased {
                    event: event_of(r)?,
                    attempt: r.try_get::<i64, _>("attempt").map_err(unavailable)?.max(1) as u32,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        tx.commit().await.map_err(unavailable)?;
        Ok(out)
    }

    /// A delivery that did not succeed: due again at `due` (`pending`) or a dead letter.
    /// An open lease in memory becomes a row first; the cursor passes it only after.
    pub(super) async fn settle(
        &self,
        subscription: &str,
        seq: i64,
        state: &'static str,
        reason: Option<String>,
        due: i64,
    ) -> Result<()> {
        let attempt = self.tracks.attempt(subscription, seq);
        let q = match attempt {
            Some(_) => sqlx::query(
                "INSERT INTO deliveries (subscription, seq, state, attempt, due_ms, lease_until, reason) \
                 VALUES (?1, ?2, ?3, ?6, ?5, 0, ?4) ON CONFLICT (subscription, seq) DO UPDATE \
                 SET state = excluded.state, reason = excluded.reason, due_ms = excluded.due_ms",
            ),
            None => sqlx::query(
                "UPDATE deliveries SET state = ?3, reason = ?4, due_ms = ?5 \
                 WHERE subscription = ?1 AND seq = ?2",
            ),
        };
        {
            let _turn = self.write.take().await;
            q.bind(subscription)
                .bind(seq)
                .bind(state)
                .bind(reason)
                .bind(due)
                .bind(i64::from(attempt.unwrap_or(1)))
                .execute(&self.quick)
                .await
                .map_err(unavailable)?;
        }
        if attempt.is_some() && self.tracks.finish(subscription, seq) {
            self.cursor_moved();
        }
        if state == "pending" {
            self.tracks.due(subscription, due);
        }
        Ok(())
    }
}

/// Retention reached the topic's events in `(from, last]`: what a subscription still owes
/// of them (open deliveries, and events past the cursor of a subscription reading the
/// topic) becomes a dead letter, and the cursors move past them. The subscription of each
/// new dead letter, once per letter.
pub(super) async fn retire(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    topic: &str,
    from: i64,
    last: i64,
) -> Result<Vec<String>> {
    let mut subs = Vec::new();
    for sql in [
        "UPDATE deliveries SET state = 'dead', reason = ?4 \
         WHERE state IN ('pending', 'leased') AND seq IN \
         (SELECT seq FROM events WHERE topic = ?1 AND seq > ?2 AND seq <= ?3) \
         RETURNING subscription",
        "INSERT INTO deliveries (subscription, seq, state, attempt, due_ms, lease_until, reason) \
         SELECT s.name, e.seq, 'dead', 0, 0, 0, ?4 FROM subscriptions s \
         JOIN events e ON e.topic = s.topic AND e.seq > s.cursor \
         WHERE s.topic = ?1 AND e.seq > ?2 AND e.seq <= ?3 \
         ON CONFLICT DO NOTHING RETURNING subscription",
    ] {
        let rows = sqlx::query(sql)
            .bind(topic)
            .bind(from)
            .bind(last)
            .bind(crate::RETAINED_PAST)
            .fetch_all(&mut **tx)
            .await
            .map_err(unavailable)?;
        subs.extend(rows.iter().filter_map(|r| r.try_get::<String, _>(0).ok()));
    }
    sqlx::query("UPDATE subscriptions SET cursor = ?2 WHERE topic = ?1 AND cursor < ?2")
        .bind(topic)
        .bind(last)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    Ok(subs)
}
