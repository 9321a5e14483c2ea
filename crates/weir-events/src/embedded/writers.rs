//! The embedded queue's writers: the group-commit publisher, the batched acknowledgement
//! remover and the attempt-record writer, each a task that takes everything waiting and
//! commits it as one transaction.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::mpsc;

use super::{Ack, Done, unavailable};
use crate::{ATTEMPT_RETENTION, Attempt, NewEvent, QueueError, Result, now_ms};

/// Most events one commit takes.
const BATCH: usize = 2_000;
/// Rows in one statement (at most 9 parameters each, under SQLite's 32,766).
pub(super) const ROWS_PER_INSERT: usize = 500;

/// A pool on one SQLite file in WAL mode.
pub(super) async fn sqlite(
    file: &Path,
    sync: SqliteSynchronous,
    connections: u32,
) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", file.display()))
        .map_err(unavailable)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sync)
        .busy_timeout(Duration::from_secs(5));
    SqlitePoolOptions::new()
        // A connection to a file in this process cannot go stale; the default check
        // costs a round trip to the connection's thread on every acquire.
        .test_before_acquire(false)
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(unavailable)
}

/// Every write transaction on the queue's file takes this first, so writers wait their
/// turn here, in arrival order. Left to SQLite, a writer that finds another one waits in
/// its busy handler, which sleeps in steps of up to 100 ms: one subscription's retries
/// then delayed another's deliveries by that much.
#[derive(Clone, Default)]
pub(super) struct WriteLock(std::sync::Arc<tokio::sync::Mutex<()>>);

impl WriteLock {
    pub(super) async fn take(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.0.lock().await
    }
}

/// The group-commit writer: every publish waiting goes into one transaction.
pub(super) async fn write_loop(
    pool: SqlitePool,
    write: WriteLock,
    mut rx: mpsc::Receiver<(Vec<NewEvent>, Ack)>,
    committed: std::sync::Arc<tokio::sync::Notify>,
    recent: std::sync::Arc<super::Recent>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut n = batch[0].0.len();
        while n < BATCH {
            match rx.try_recv() {
                Ok(more) => {
                    n += more.0.len();
                    batch.push(more);
                }
                Err(_) => break,
            }
        }
        let result = {
            let _turn = write.take().await;
            commit(&pool, &batch).await
        };
        match result {
            Ok((mut seqs, fresh, at)) => {
                recent.add(fresh_events(&batch, &seqs, &fresh, at));
                committed.notify_waiters();
                for (events, ack) in batch.into_iter().rev() {
                    let mine = seqs.split_off(seqs.len() - events.len());
                    let _ = ack.send(Ok(mine));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (_, ack) in batch {
                    let _ = ack.send(Err(QueueError::Unavailable(msg.clone())));
                }
            }
        }
    }
}

/// Removes finished deliveries in batches: one transaction (one fsync) for every ack that
/// arrived meanwhile; each ack is answered after the commit.
pub(super) async fn ack_loop(
    pool: SqlitePool,
    write: WriteLock,
    mut rx: mpsc::UnboundedReceiver<Done>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let done = async {
            let _turn = write.take().await;
            let mut tx = pool.begin().await?;
            // One statement per subscription and chunk: each statement is a round trip to
            // the database's thread, so one per delivery cost more than the delete.
            let mut by_sub: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
            for (sub, seq, _) in &batch {
                by_sub.entry(sub.as_str()).or_default().push(*seq);
            }
            for (sub, seqs) in by_sub {
                for chunk in seqs.chunks(ROWS_PER_INSERT) {
                    let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                        "DELETE FROM deliveries WHERE subscription = ",
                    );
                    q.push_bind(sub).push(" AND seq IN (");
                    let mut list = q.separated(", ");
                    for seq in chunk {
                        list.push_bind(*seq);
                    }
                    q.push(")");
                    q.build().persistent(false).execute(&mut *tx).await?;
                }
            }
            tx.commit().await
        }
        .await;
        let msg = done.err().map(|e| e.to_string());
        for (_, _, reply) in batch {
            let _ = reply.send(match &msg {
                None => Ok(()),
                // The leases run out and the events are delivered again.
                Some(m) => Err(QueueError::Unavailable(m.clone())),
            });
        }
    }
}

/// Stores the cursors that moved, a few milliseconds after the first move: one
/// transaction for every lease finished meanwhile.
pub(super) async fn flush_loop(
    tracks: std::sync::Arc<super::Tracks>,
    pool: SqlitePool,
    write: WriteLock,
    mut moved: mpsc::Receiver<()>,
) {
    while moved.recv().await.is_some() {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let _turn = write.take().await;
        if let Err(e) = tracks.flush(&pool).await {
            // Tried again with the next finished lease; a restart before that delivers
            // those events again.
            tracing::warn!(error = %e, "cannot store the subscriptions' cursors");
        }
    }
}

/// Stores attempt records in batches (one transaction for all that arrived meanwhile);
/// now and then drops those past their retention.
pub(super) async fn record_loop(
    pool: SqlitePool,
    mut rx: mpsc::UnboundedReceiver<(String, Attempt)>,
) {
    let mut pruned = tokio::time::Instant::now();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let prune = pruned.elapsed() >= Duration::from_secs(600);
        let done = async {
            let mut tx = pool.begin().await?;
            // Many rows per statement, in a few fixed sizes (see `cuts`).
            for chunk in cut(&batch) {
                let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT INTO attempts (subscription, seq, event_id, attempt, at_ms, \
                     status, latency_ms, outcome, answer) ",
                );
                q.push_values(chunk, |mut row, (sub, a)| {
                    row.push_bind(sub.as_str())
                        .push_bind(a.seq)
                        .push_bind(a.event_id.as_str())
                        .push_bind(i64::from(a.attempt))
                        .push_bind(a.at_ms)
                        .push_bind(a.status.map(i64::from))
                        .push_bind(a.latency_ms as i64)
                        .push_bind(a.outcome.as_str())
                        .push_bind(a.answer.as_str());
                });
                q.build().execute(&mut *tx).await?;
            }
            if prune {
                sqlx::query("DELETE FROM attempts WHERE at_ms < ?1")
                    .bind(now_ms() - ATTEMPT_RETENTION.as_millis() as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
        .await;
        if prune {
            pruned = tokio::time::Instant::now();
        }
        if let Err(e) = done {
            tracing::warn!(error = %e, lost = batch.len(), "cannot store delivery attempt records");
        }
    }
}

/// The events a commit stored for the first time (not those whose id was known), as
/// stored.
fn fresh_events(
    batch: &[(Vec<NewEvent>, Ack)],
    seqs: &[i64],
    fresh: &[bool],
    at: i64,
) -> Vec<crate::Event> {
    batch
        .iter()
        .flat_map(|(events, _)| events)
        .zip(seqs.iter().zip(fresh))
        .filter(|(_, (_, new))| **new)
        .map(|(e, (seq, _))| crate::Event {
            seq: *seq,
            id: e.id.clone(),
            topic: e.topic.clone(),
            key: e.key.clone(),
            headers: e.headers.clone(),
            body: e.body.clone(),
            created_ms: at,
        })
        .collect()
}

/// Row counts of the statements a batch is cut into: a few fixed sizes, so each is parsed
/// once per connection and then reused from its statement cache.
pub(super) fn cuts(mut n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for size in [256, 64, 16, 4, 1] {
        while n >= size {
            out.push(size);
            n -= size;
        }
    }
    out
}

/// Splits `items` into slices of the sizes [`cuts`] gives.
pub(super) fn cut<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    cuts(items.len()).into_iter().map(move |n| {
        let (head, tail) = rest.split_at(n);
        rest = tail;
        head
    })
}

/// Stores a batch of publishes in one transaction: the position of each event, whether
/// it was new (an id published before keeps its first position), and the time stored.
pub(super) async fn commit(
    pool: &SqlitePool,
    batch: &[(Vec<NewEvent>, Ack)],
) -> Result<(Vec<i64>, Vec<bool>, i64)> {
    let mut tx = pool.begin().await.map_err(unavailable)?;
    let now = now_ms();
    let events: Vec<&NewEvent> = batch.iter().flat_map(|(events, _)| events).collect();
    let mut seq_of: std::collections::HashMap<String, i64> =
        std::collections::HashMap::with_capacity(events.len());
    for chunk in cut(&events) {
        let mut headers = Vec::with_capacity(chunk.len());
        for e in chunk {
            headers.push(
                serde_json::to_string(&e.headers)
                    .map_err(|err| QueueError::Corrupt(err.to_string()))?,
            );
        }
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO events (id, topic, key, headers, body, created_ms) ",
        );
        q.push_values(chunk.iter().zip(headers), |mut row, (e, h)| {
            row.push_bind(e.id.as_str())
                .push_bind(e.topic.as_str())
                .push_bind(e.key.as_deref())
                .push_bind(h)
                .push_bind(e.body.as_ref())
                .push_bind(now);
        });
        // A known id keeps its first copy: publishing is idempotent by id.
        q.push(" ON CONFLICT (id) DO NOTHING RETURNING id, seq");
        for r in q.build().fetch_all(&mut *tx).await.map_err(unavailable)? {
            seq_of.insert(
                r.try_get("id").map_err(unavailable)?,
                r.try_get("seq").map_err(unavailable)?,
            );
        }
    }
    let mut fresh = Vec::with_capacity(events.len());
    // Ids published before this batch: their first position.
    for e in &events {
        let new = seq_of.contains_key(&e.id);
        fresh.push(new);
        if !new {
            let seq = sqlx::query("SELECT seq FROM events WHERE id = ?1")
                .bind(&e.id)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?
                .try_get::<i64, _>(0)
                .map_err(unavailable)?;
            seq_of.insert(e.id.clone(), seq);
        }
    }
    tx.commit().await.map_err(unavailable)?;
    let seqs = events
        .iter()
        .map(|e| {
            seq_of
                .get(&e.id)
                .copied()
                .ok_or_else(|| QueueError::Corrupt(format!("event {} has no position", e.id)))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((seqs, fresh, now))
}
