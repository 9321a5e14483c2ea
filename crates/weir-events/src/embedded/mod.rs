//! The embedded queue: one SQLite file (WAL, `synchronous=FULL`) under `data_dir`. Events
//! are stored once; each subscription has a cursor, leases its first attempts at new events
//! in memory (ADR 0010) and has delivery rows for retries, dead letters and replays
//! (fan-out happens when events are consumed, not by copying them). Publishes are
//! group-committed: one writer takes every publish waiting, writes them in one
//! transaction, and answers each after the fsynced commit.

use std::path::Path;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::sqlite::SqliteSynchronous;
use sqlx::{Row, SqlitePool};
use tokio::sync::{mpsc, oneshot};

mod lease;
use lease::{event_of, retire};
mod recent;
use recent::Recent;
mod track;
use track::Tracks;
mod writers;
use writers::{WriteLock, ack_loop, flush_loop, record_loop, sqlite, write_loop};

use crate::{
    Attempt, DeadLetter, Declaration, Depth, Event, Leased, NewEvent, Queue, QueueError, Result,
    StartAt, Trimmed, now_ms,
};

/// Publishes waiting for the writer; beyond this, publishers wait (backpressure).
const WAITING: usize = 4_096;

type Ack = oneshot::Sender<Result<Vec<i64>>>;

/// A finished delivery, answered after the commit that removes it.
type Done = (String, i64, oneshot::Sender<Result<()>>);

/// The embedded queue. Cheap to clone.
#[derive(Clone)]
pub struct Embedded {
    pool: SqlitePool,
    /// Connections that commit without an fsync: leases, acknowledgements, state.
    quick: SqlitePool,
    /// Taken by every write transaction (see [`WriteLock`]).
    write: WriteLock,
    writer: mpsc::Sender<(Vec<NewEvent>, Ack)>,
    /// Woken after every commit that published events.
    committed: std::sync::Arc<tokio::sync::Notify>,
    /// Finished deliveries, removed in batches (see [`ack_loop`]).
    acks: mpsc::UnboundedSender<Done>,
    /// Attempt records, written in batches to their own file (see [`record_loop`]).
    records: mpsc::UnboundedSender<(String, Attempt)>,
    /// `attempts.db`: records are telemetry, kept apart so their writes never hold up the
    /// queue's fsynced commits.
    attempts: SqlitePool,
    /// Tags the rows of one lease call, so the call reads back exactly its own.
    lease_ids: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Leases of new events, held in memory (see [`track`]).
    tracks: std::sync::Arc<Tracks>,
    /// Told when a cursor may move (see [`flush_loop`]).
    moved: mpsc::Sender<()>,
    /// The newest events, as committed (see [`recent`]).
    recent: std::sync::Arc<Recent>,
}

fn unavailable(e: sqlx::Error) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

impl Embedded {
    /// Opens (creating) `DIR/events.db`. Must run inside a Tokio runtime: the writer task
    /// is spawned on it.
    pub async fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            QueueError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let pool = sqlite(&dir.join("events.db"), SqliteSynchronous::Full, 4).await?;
        for ddl in [
            "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
             id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL, key TEXT, headers TEXT NOT NULL, \
             body BLOB NOT NULL, created_ms INTEGER NOT NULL)",
            "CREATE INDEX IF NOT EXISTS events_topic_seq ON events (topic, seq)",
            "CREATE TABLE IF NOT EXISTS subscriptions (name TEXT PRIMARY KEY, \
             topic TEXT NOT NULL, cursor INTEGER NOT NULL, generation INTEGER NOT NULL DEFAULT 0, \
             taken INTEGER NOT NULL DEFAULT 0)",
            "CREATE TABLE IF NOT EXISTS deliveries (subscription TEXT NOT NULL, \
             seq INTEGER NOT NULL, state TEXT NOT NULL, attempt INTEGER NOT NULL, \
             due_ms INTEGER NOT NULL, lease_until INTEGER NOT NULL, reason TEXT, \
             lease_id INTEGER NOT NULL DEFAULT 0, \
             PRIMARY KEY (subscription, seq))",
            "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (subscription, state, due_ms)",
            "CREATE TABLE IF NOT EXISTS disabled (name TEXT PRIMARY KEY, reason TEXT NOT NULL, \
             at_ms INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS ordered (name TEXT PRIMARY KEY)",
            "CREATE INDEX IF NOT EXISTS events_key ON events (key, seq) WHERE key IS NOT NULL",
        ] {
            sqlx::query(ddl).execute(&pool).await.map_err(unavailable)?;
        }
        // Files made before declarations had generations, or before leases were held in
        // memory: the columns are added (an error here only says one is there already).
        for ddl in [
            "ALTER TABLE subscriptions ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE subscriptions ADD COLUMN taken INTEGER NOT NULL DEFAULT 0",
        ] {
            let _ = sqlx::query(ddl).execute(&pool).await;
        }
        let (tx, rx) = mpsc::channel(WAITING);
        let committed = std::sync::Arc::new(tokio::sync::Notify::new());
        let write = WriteLock::default();
        let recent = std::sync::Arc::new(Recent::default());
        tokio::spawn(write_loop(
            pool.clone(),
            write.clone(),
            rx,
            std::sync::Arc::clone(&committed),
            std::sync::Arc::clone(&recent),
        ));
        let (acks, ack_rx) = mpsc::unbounded_channel();
        // Leases, acknowledgements and state changes commit without an fsync of their own:
        // the next publish's fsync makes them durable (the log is written in order), so
        // an event is never acknowledged before the cursor that must get it is on disk,
        // and a crash loses at most a lease or an acknowledgement (a redelivery).
        let quick = sqlite(&dir.join("events.db"), SqliteSynchronous::Normal, 4).await?;
        tokio::spawn(ack_loop(quick.clone(), write.clone(), ack_rx));
        let tracks = std::sync::Arc::new(Tracks::default());
        let (moved, moved_rx) = mpsc::channel(1);
        tokio::spawn(flush_loop(
            std::sync::Arc::clone(&tracks),
            quick.clone(),
            write.clone(),
            moved_rx,
        ));
        // Attempt records: WAL without an fsync per commit (a crash of the machine may lose
        // the last records, never the queue's state).
        let attempts = sqlite(&dir.join("attempts.db"), SqliteSynchronous::Normal, 2).await?;
        for ddl in [
            "CREATE TABLE IF NOT EXISTS attempts (subscription TEXT NOT NULL, seq INTEGER NOT NULL, \
             event_id TEXT NOT NULL, attempt INTEGER NOT NULL, at_ms INTEGER NOT NULL, \
             status INTEGER, latency_ms INTEGER NOT NULL, outcome TEXT NOT NULL, \
             answer TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS attempts_event ON attempts (subscription, event_id)",
        ] {
            sqlx::query(ddl)
                .execute(&attempts)
                .await
                .map_err(unavailable)?;
        }
        let (records, record_rx) = mpsc::unbounded_channel();
        tokio::spawn(record_loop(attempts.clone(), record_rx));
        Ok(Self {
            pool,
            quick,
            write,
            writer: tx,
            committed,
            acks,
            records,
            attempts,
            // Microseconds at open: later than any id an earlier run handed out.
            lease_ids: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(now_ms() * 1000)),
            tracks,
            moved,
            recent,
        })
    }

    /// A lease finished: its subscription's cursor may move (stored in a moment).
    fn cursor_moved(&self) {
        // Full: a store is due already and takes this one too.
        let _ = self.moved.try_send(());
    }
}

impl Queue for Embedded {
    fn publish(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<i64>>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(Vec::new());
            }
            let (tx, rx) = oneshot::channel();
            self.writer
                .send((events, tx))
                .await
                .map_err(|_| QueueError::Unavailable("the queue writer has stopped".to_owned()))?;
            rx.await
                .map_err(|_| QueueError::Unavailable("the queue writer has stopped".to_owned()))?
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
            let _turn = self.write.take().await;
            let mut tx = self.quick.begin().await.map_err(unavailable)?;
            self.tracks.materialize(&mut tx, name).await?;
            let newest: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM events")
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?
                .try_get(0)
                .map_err(unavailable)?;
            let before =
                sqlx::query("SELECT topic, cursor, generation FROM subscriptions WHERE name = ?1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            let Some(row) = before else {
                let cursor = match start {
                    StartAt::Beginning => 0,
                    StartAt::Now => newest,
                    StartAt::Since(ms) => sqlx::query(
                        "SELECT COALESCE(MAX(seq), 0) FROM events WHERE topic = ?1 AND created_ms < ?2",
                    )
                    .bind(topic)
                    .bind(ms)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?
                    .try_get(0)
                    .map_err(unavailable)?,
                };
                sqlx::query(
                    "INSERT INTO subscriptions (name, topic, cursor, generation) VALUES (?1, ?2, ?3, ?4)",
                )
                .bind(name)
                .bind(topic)
                .bind(cursor)
                .bind(generation)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                tx.commit().await.map_err(unavailable)?;
                return Ok(None);
            };
            let old: String = row.try_get("topic").map_err(unavailable)?;
            let cursor: i64 = row.try_get("cursor").map_err(unavailable)?;
            let held: i64 = row.try_get("generation").map_err(unavailable)?;
            if old != topic && generation < held {
                return Ok(Some(old));
            }
            if old != topic {
                // Moved: what it still owes of the old topic becomes open deliveries
                // (delivered as usual), and it reads the new topic from now on.
                sqlx::query(
                    "INSERT INTO deliveries (subscription, seq, state, attempt, due_ms, lease_until) \
                     SELECT ?1, seq, 'pending', 0, ?2, 0 FROM events \
                     WHERE topic = ?3 AND seq > ?4 ON CONFLICT DO NOTHING",
                )
                .bind(name)
                .bind(now_ms())
                .bind(&old)
                .bind(cursor)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                sqlx::query("UPDATE subscriptions SET topic = ?2, cursor = ?3 WHERE name = ?1")
                    .bind(name)
                    .bind(topic)
                    .bind(newest)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
            sqlx::query(
                "UPDATE subscriptions SET generation = MAX(generation, ?2) WHERE name = ?1",
            )
            .bind(name)
            .bind(generation)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(None)
        })
    }

    fn object(&self, subscription: &str, _topic: &str) -> String {
        format!("cursor {subscription:?} in the embedded queue (data_dir/events/events.db)")
    }

    fn lease<'a>(
        &'a self,
        subscription: &'a str,
        max: usize,
        lease_for: Duration,
    ) -> BoxFuture<'a, Result<Vec<Leased>>> {
        Box::pin(self.lease_now(subscription, max, lease_for))
    }

    fn ack<'a>(&'a self, subscription: &'a str, seq: i64) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.tracks.finish(subscription, seq) {
                // Held in memory: done, and the cursor passes it with the next store.
                self.cursor_moved();
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            self.acks
                .send((subscription.to_owned(), seq, tx))
                .map_err(|_| QueueError::Unavailable("the queue has stopped".to_owned()))?;
            rx.await
                .map_err(|_| QueueError::Unavailable("the queue has stopped".to_owned()))?
        })
    }

    fn retry_at<'a>(
        &'a self,
        subscription: &'a str,
        seq: i64,
        at_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.settle(subscription, seq, "pending", None, at_ms))
    }

    fn dead<'a>(
        &'a self,
        subscription: &'a str,
        seq: i64,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.settle(subscription, seq, "dead", Some(reason.to_owned()), now_ms()))
    }

    fn dead_letters<'a>(
        &'a self,
        subscription: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT d.seq, e.id, d.attempt, COALESCE(d.reason, '') AS reason \
                 FROM deliveries d JOIN events e ON e.seq = d.seq \
                 WHERE d.subscription = ?1 AND d.state = 'dead' ORDER BY d.seq LIMIT ?2",
            )
            .bind(subscription)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
            rows.iter()
                .map(|r| {
                    Ok(DeadLetter {
                        seq: r.try_get("seq").map_err(unavailable)?,
                        id: r.try_get("id").map_err(unavailable)?,
                        attempts: r.try_get::<i64, _>("attempt").map_err(unavailable)? as u32,
                        reason: r.try_get("reason").map_err(unavailable)?,
                    })
                })
                .collect()
        })
    }

    fn replay_dead<'a>(
        &'a self,
        subscription: &'a str,
        seq: Option<i64>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let _turn = self.write.take().await;
            let n = sqlx::query(
                "UPDATE deliveries SET state = 'pending', attempt = 0, due_ms = ?1 \
                 WHERE subscription = ?2 AND state = 'dead' AND (?3 IS NULL OR seq = ?3)",
            )
            .bind(now_ms())
            .bind(subscription)
            .bind(seq)
            .execute(&self.quick)
            .await
            .map_err(unavailable)?
            .rows_affected();
            self.tracks.due(subscription, 0);
            Ok(n)
        })
    }

    fn replay_since<'a>(
        &'a self,
        subscription: &'a str,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let _turn = self.write.take().await;
            let mut tx = self.quick.begin().await.map_err(unavailable)?;
            self.tracks.materialize(&mut tx, subscription).await?;
            let row = sqlx::query("SELECT topic, cursor FROM subscriptions WHERE name = ?1")
                .bind(subscription)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| QueueError::NoSubscription(subscription.to_owned()))?;
            let topic: String = row.try_get(0).map_err(unavailable)?;
            let cursor: i64 = row.try_get(1).map_err(unavailable)?;
            // Events already past the cursor get a fresh pending delivery (same event id);
            // the cursor itself is untouched, so nothing is skipped or taken twice.
            let n = sqlx::query(
                "INSERT INTO deliveries (subscription, seq, state, attempt, due_ms, lease_until) \
                 SELECT ?1, seq, 'pending', 0, ?2, 0 FROM events \
                 WHERE topic = ?3 AND created_ms >= ?4 AND seq <= ?5 \
                 ON CONFLICT (subscription, seq) DO UPDATE SET state = 'pending', due_ms = excluded.due_ms \
                 WHERE deliveries.state <> 'leased'",
            )
            .bind(subscription)
            .bind(now_ms())
            .bind(&topic)
            .bind(since_ms)
            .bind(cursor)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected();
            tx.commit().await.map_err(unavailable)?;
            Ok(n)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            {
                let _turn = self.write.take().await;
                if let Err(e) = self.tracks.flush(&self.quick).await {
                    tracing::warn!(error = %e, "cannot store the subscriptions' cursors; what they delivered since the last store is delivered again after the restart");
                }
            }
            // Quick commits first, then the fsynced pool: its close makes them durable.
            self.quick.close().await;
            self.pool.close().await;
            self.attempts.close().await;
        })
    }

    fn record<'a>(&'a self, subscription: &'a str, attempt: Attempt) -> BoxFuture<'a, Result<()>> {
        let sent = self
            .records
            .send((subscription.to_owned(), attempt))
            .map_err(|_| QueueError::Unavailable("the queue has stopped".to_owned()));
        Box::pin(async move { sent })
    }

    fn attempts<'a>(
        &'a self,
        subscription: &'a str,
        event_id: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Attempt>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT seq, event_id, attempt, at_ms, status, latency_ms, outcome, answer \
                 FROM attempts WHERE subscription = ?1 AND (?2 IS NULL OR event_id = ?2) \
                 ORDER BY at_ms DESC, rowid DESC LIMIT ?3",
            )
            .bind(subscription)
            .bind(event_id)
            .bind(limit as i64)
            .fetch_all(&self.attempts)
            .await
            .map_err(unavailable)?;
            rows.iter()
                .map(|r| {
                    Ok(Attempt {
                        seq: r.try_get("seq").map_err(unavailable)?,
                        event_id: r.try_get("event_id").map_err(unavailable)?,
                        attempt: r.try_get::<i64, _>("attempt").map_err(unavailable)? as u32,
                        at_ms: r.try_get("at_ms").map_err(unavailable)?,
                        status: r
                            .try_get::<Option<i64>, _>("status")
                            .map_err(unavailable)?
                            .map(|s| s as u16),
                        latency_ms: r.try_get::<i64, _>("latency_ms").map_err(unavailable)? as u64,
                        outcome: r.try_get("outcome").map_err(unavailable)?,
                        answer: r.try_get("answer").map_err(unavailable)?,
                    })
                })
                .collect()
        })
    }

    fn set_ordered<'a>(
        &'a self,
        subscription: &'a str,
        ordered: bool,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let q = if ordered {
                sqlx::query("INSERT INTO ordered (name) VALUES (?1) ON CONFLICT (name) DO NOTHING")
            } else {
                sqlx::query("DELETE FROM ordered WHERE name = ?1")
            };
            let _turn = self.write.take().await;
            let mut tx = self.quick.begin().await.map_err(unavailable)?;
            // Ordered subscriptions lease from rows: the track becomes rows first.
            self.tracks.materialize(&mut tx, subscription).await?;
            q.bind(subscription)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(())
        })
    }

    fn set_disabled<'a>(
        &'a self,
        subscription: &'a str,
        reason: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let q = match reason {
                Some(r) => sqlx::query(
                    "INSERT INTO disabled (name, reason, at_ms) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name) DO UPDATE SET reason = excluded.reason, at_ms = excluded.at_ms",
                )
                .bind(subscription)
                .bind(r)
                .bind(now_ms()),
                None => sqlx::query("DELETE FROM disabled WHERE name = ?1").bind(subscription),
            };
            let _turn = self.write.take().await;
            q.execute(&self.quick).await.map_err(unavailable)?;
            Ok(())
        })
    }

    fn disabled<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            sqlx::query("SELECT reason FROM disabled WHERE name = ?1")
                .bind(subscription)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
                .map(|r| r.try_get::<String, _>(0).map_err(unavailable))
                .transpose()
        })
    }

    fn published(&self, max_wait: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // The timeout also wakes workers for retries that fall due.
            let _ = tokio::time::timeout(max_wait, self.committed.notified()).await;
        })
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        after: i64,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT seq, id, topic, key, headers, body, created_ms FROM events \
                 WHERE topic = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .bind(topic)
            .bind(after)
            .bind(max as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
            rows.iter().map(event_of).collect()
        })
    }

    fn trim<'a>(&'a self, topic: &'a str, before_ms: i64) -> BoxFuture<'a, Result<Trimmed>> {
        Box::pin(async move {
            let mut out = Trimmed::default();
            let mut owed: std::collections::BTreeMap<String, u64> = Default::default();
            let mut from = 0;
            // Oldest first, a batch at a time, along the (topic, seq) index: only old
            // events and one batch past them are read.
            loop {
                let rows = sqlx::query(
                    "SELECT seq, created_ms FROM events WHERE topic = ?1 AND seq > ?2 \
                     ORDER BY seq LIMIT 1000",
                )
                .bind(topic)
                .bind(from)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
                let old: Vec<i64> = rows
                    .iter()
                    .take_while(|r| r.try_get::<i64, _>(1).is_ok_and(|c| c < before_ms))
                    .filter_map(|r| r.try_get::<i64, _>(0).ok())
                    .collect();
                let Some(&last) = old.last() else { break };
                let _turn = self.write.take().await;
                let mut tx = self.quick.begin().await.map_err(unavailable)?;
                for name in self.tracks.reading(topic) {
                    self.tracks.materialize(&mut tx, &name).await?;
                }
                for sub in retire(&mut tx, topic, from, last).await? {
                    *owed.entry(sub).or_default() += 1;
                }
                out.dropped += sqlx::query(
                    "DELETE FROM events WHERE topic = ?1 AND seq > ?2 AND seq <= ?3 \
                     AND seq NOT IN (SELECT seq FROM deliveries)",
                )
                .bind(topic)
                .bind(from)
                .bind(last)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected();
                tx.commit().await.map_err(unavailable)?;
                from = last;
                if old.len() < rows.len() {
                    break;
                }
            }
            out.dead_lettered = owed.into_iter().collect();
            Ok(out)
        })
    }

    fn latest<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async move {
            sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM events WHERE topic = ?1")
                .bind(topic)
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)?
                .try_get::<i64, _>(0)
                .map_err(unavailable)
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Event>>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT seq, id, topic, key, headers, body, created_ms FROM events WHERE id = ?1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
            row.as_ref().map(event_of).transpose()
        })
    }

    fn depth<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Depth>> {
        Box::pin(async move {
            let (topic, stored) = self.topic_of(subscription).await?;
            // Leases held in memory are ahead of the stored cursor: what is past the
            // first open one and not handed out, and what is open.
            let (cursor, taken, open) = self
                .tracks
                .with(subscription, |t| {
                    (!t.ordered && t.topic == topic).then(|| (t.cursor(), t.taken, t.open.len()))
                })
                .flatten()
                .unwrap_or((stored, stored, 0));
            let new = sqlx::query(
                "SELECT COALESCE(SUM(seq > ?4), 0) + ?5, MIN(created_ms) FROM events e \
                 WHERE topic = ?1 AND seq > ?2 AND NOT EXISTS (SELECT 1 FROM deliveries d \
                 WHERE d.subscription = ?3 AND d.seq = e.seq)",
            )
            .bind(&topic)
            .bind(cursor)
            .bind(subscription)
            .bind(taken)
            .bind(open as i64)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
            let owed = sqlx::query(
                "SELECT COUNT(*), MIN(e.created_ms) FROM deliveries d JOIN events e ON e.seq = d.seq \
                 WHERE d.subscription = ?1 AND d.state <> 'dead'",
            )
            .bind(subscription)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
            let dead: i64 = sqlx::query(
                "SELECT COUNT(*) FROM deliveries WHERE subscription = ?1 AND state = 'dead'",
            )
            .bind(subscription)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?
            .try_get(0)
            .map_err(unavailable)?;
            let count = |r: &sqlx::sqlite::SqliteRow| r.try_get::<i64, _>(0).unwrap_or(0) as u64;
            let oldest =
                |r: &sqlx::sqlite::SqliteRow| r.try_get::<Option<i64>, _>(1).ok().flatten();
            Ok(Depth {
                pending: count(&new) + count(&owed),
                oldest_ms: match (oldest(&new), oldest(&owed)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
                dead: dead as u64,
            })
        })
    }
}
