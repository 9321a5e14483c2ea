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
        let (topic, _) = self.topic_of(subscription).await?;
        let now = now_ms();
        let until = now + lease_for.as_millis() as i64;
        let lease_id = self
            .lease_ids
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _turn = self.write.take().await;
        let mut tx = self.quick.begin().await.map_err(unavailable)?;
        let ordered = sqlx::query("SELECT 1 FROM ordered WHERE name = ?1")
            .bind(subscription)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .is_some();
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
            take_ordered(&mut tx, subscription, &topic, room, now, until, lease_id).await?;
        } else if room > 0 {
            // New events past the cursor, in one statement; the cursor is read and moved
            // inside the transaction, so two workers never take the same events.
            let fresh = sqlx::query(
                "INSERT INTO deliveries (subscription, seq, state, attempt, due_ms, lease_until, lease_id) \
                 SELECT ?1, seq, 'leased', 1, ?2, ?3, ?6 FROM events \
                 WHERE topic = ?4 AND seq > (SELECT cursor FROM subscriptions WHERE name = ?1) \
                 ORDER BY seq LIMIT ?5 RETURNING seq",
            )
            .bind(subscription)
            .bind(now)
            .bind(until)
            .bind(&topic)
            .bind(room as i64)
            .bind(lease_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
            let last = fresh
                .iter()
                .filter_map(|r| r.try_get::<i64, _>(0).ok())
                .max();
            if let Some(last) = last {
                sqlx::query("UPDATE subscriptions SET cursor = ?1 WHERE name = ?2")
                    .bind(last)
                    .bind(subscription)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
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

    pub(super) async fn set_state(
        &self,
        subscription: &str,
        seq: i64,
        sql: &'static str,
        arg: Option<String>,
        due: i64,
    ) -> Result<()> {
        let _turn = self.write.take().await;
        sqlx::query(sql)
            .bind(subscription)
            .bind(seq)
            .bind(arg)
            .bind(due)
            .execute(&self.quick)
            .await
            .map_err(unavailable)?;
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
