//! In-memory leases of the embedded queue (ADR 0010): a first attempt at a new event is
//! leased in memory, and only the cursor is stored — in batches, after the deliveries below
//! it are finished. Rows exist only for what needs one: retries, dead letters, replays,
//! ordered subscriptions, and leases that a change of declaration or retention made
//! durable ([`Tracks::materialize`]).

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use sqlx::{Row, Sqlite, Transaction};

use super::unavailable;
use crate::{QueueError, Result, now_ms};

/// An event handed out from the topic and not finished yet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Open {
    /// Unix milliseconds when the lease runs out (then it is handed out again).
    pub until: i64,
    pub attempt: u32,
}

/// One subscription's reading of its topic.
#[derive(Debug)]
pub(super) struct Track {
    pub topic: String,
    pub ordered: bool,
    /// Every event of the topic up to here has been handed out.
    pub taken: i64,
    /// Events up to here were handed out before the last stop without their outcome being
    /// stored: handed out again, they count as second attempts.
    pub crashed: i64,
    pub open: BTreeMap<i64, Open>,
    /// Earliest time a delivery row may fall due or its lease run out (0: look now).
    pub next_due: i64,
    /// (cursor, taken) as last stored.
    pub stored: (i64, i64),
    /// Told apart from a track made after it (a lease that read under an older one drops
    /// what it read).
    pub epoch: u64,
}

impl Track {
    /// Everything up to here is finished (or has a row of its own).
    pub fn cursor(&self) -> i64 {
        self.open
            .keys()
            .next()
            .map_or(self.taken, |first| first - 1)
    }

    fn dirty(&self) -> bool {
        self.stored != (self.cursor(), self.taken)
    }
}

/// The tracks of the subscriptions leased since the queue opened.
#[derive(Default)]
pub(super) struct Tracks {
    map: Mutex<HashMap<String, Track>>,
    epochs: std::sync::atomic::AtomicU64,
}

impl Tracks {
    pub fn with<R>(&self, name: &str, f: impl FnOnce(&mut Track) -> R) -> Option<R> {
        self.map.lock().get_mut(name).map(f)
    }

    /// Loads the subscription's track from its stored cursor unless it is loaded.
    pub async fn load(&self, pool: &sqlx::SqlitePool, name: &str) -> Result<()> {
        if self.map.lock().contains_key(name) {
            return Ok(());
        }
        let row = sqlx::query(
            "SELECT topic, cursor, taken, EXISTS (SELECT 1 FROM ordered WHERE name = ?1) \
             FROM subscriptions WHERE name = ?1",
        )
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| QueueError::NoSubscription(name.to_owned()))?;
        let cursor: i64 = row.try_get(1).map_err(unavailable)?;
        let taken: i64 = row.try_get(2).map_err(unavailable)?;
        let track = Track {
            topic: row.try_get(0).map_err(unavailable)?,
            ordered: row.try_get(3).map_err(unavailable)?,
            taken: cursor,
            crashed: taken,
            open: BTreeMap::new(),
            next_due: 0,
            stored: (cursor, cursor),
            epoch: self
                .epochs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        // Another lease may have loaded it meanwhile: that one stays.
        self.map.lock().entry(name.to_owned()).or_insert(track);
        Ok(())
    }

    /// Marks a delivery row written: the next lease looks for due rows from `at` on.
    pub fn due(&self, name: &str, at: i64) {
        self.with(name, |t| t.next_due = t.next_due.min(at));
    }

    /// Makes the track's open leases rows (leased, with their expiry and attempt), stores
    /// its cursor at `taken`, and forgets the track: what changes a subscription's reading
    /// (a new declaration, ordering, retention, replay) then works on rows alone. Run
    /// while holding the write lock, inside the transaction that makes the change.
    pub async fn materialize(&self, tx: &mut Transaction<'_, Sqlite>, name: &str) -> Result<()> {
        // An ordered subscription's cursor and leases are rows already.
        let Some(track) = self.map.lock().remove(name).filter(|t| !t.ordered) else {
            return Ok(());
        };
        let now = now_ms();
        let open: Vec<(i64, Open)> = track.open.into_iter().collect();
        for chunk in open.chunks(super::writers::ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO deliveries (subscription, seq, state, attempt, due_ms, lease_until) ",
            );
            q.push_values(chunk, |mut row, (seq, o)| {
                row.push_bind(name)
                    .push_bind(*seq)
                    .push_bind("leased")
                    .push_bind(i64::from(o.attempt))
                    .push_bind(now)
                    .push_bind(o.until);
            });
            q.push(" ON CONFLICT DO NOTHING");
            q.build()
                .persistent(false)
                .execute(&mut **tx)
                .await
                .map_err(unavailable)?;
        }
        sqlx::query("UPDATE subscriptions SET cursor = ?2, taken = ?2 WHERE name = ?1")
            .bind(name)
            .bind(track.taken)
            .execute(&mut **tx)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The names of the loaded tracks reading `topic`.
    pub fn reading(&self, topic: &str) -> Vec<String> {
        let map = self.map.lock();
        map.iter()
            .filter(|(_, t)| t.topic == topic)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Stores every cursor that moved, in one transaction. Run while holding the write
    /// lock: a cursor read here is never older than one a change wrote meanwhile.
    pub async fn flush(&self, pool: &sqlx::SqlitePool) -> Result<()> {
        let dirty: Vec<(String, String, i64, i64, u64)> = {
            let map = self.map.lock();
            map.iter()
                .filter(|(_, t)| t.dirty())
                .map(|(n, t)| (n.clone(), t.topic.clone(), t.cursor(), t.taken, t.epoch))
                .collect()
        };
        if dirty.is_empty() {
            return Ok(());
        }
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let mut gone = Vec::new();
        for (name, topic, cursor, taken, epoch) in &dirty {
            let n = sqlx::query(
                "UPDATE subscriptions SET cursor = ?2, taken = ?3 WHERE name = ?1 AND topic = ?4",
            )
            .bind(name)
            .bind(cursor)
            .bind(taken)
            .bind(topic)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected();
            if n == 0 {
                gone.push((name.clone(), *epoch));
            }
        }
        tx.commit().await.map_err(unavailable)?;
        let mut map = self.map.lock();
        // Removed (or moved) outside this track: the next lease reads what is stored.
        for (name, epoch) in gone {
            if map.get(&name).is_some_and(|t| t.epoch == epoch) {
                map.remove(&name);
            }
        }
        for (name, _, cursor, taken, epoch) in dirty {
            if let Some(t) = map.get_mut(&name).filter(|t| t.epoch == epoch) {
                t.stored = (cursor, taken);
            }
        }
        Ok(())
    }

    /// What a lease read past `taken` under track `epoch`, handed out: the events not
    /// handed out meanwhile, each with its attempt. `None` when the track changed.
    pub fn hand_out(
        &self,
        name: &str,
        epoch: u64,
        seqs: &[i64],
        until: i64,
    ) -> Option<Vec<(i64, u32)>> {
        let mut map = self.map.lock();
        let t = map.get_mut(name).filter(|t| t.epoch == epoch)?;
        let mut out = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            if seq <= t.taken {
                continue;
            }
            let attempt = if seq <= t.crashed { 2 } else { 1 };
            t.open.insert(seq, Open { until, attempt });
            t.taken = seq;
            out.push((seq, attempt));
        }
        Some(out)
    }

    /// Open leases that ran out (a delivery that never finished), leased again until
    /// `until`, with their attempt counted: up to `max` of them.
    pub fn expired(&self, name: &str, max: usize, until: i64) -> Vec<(i64, u32)> {
        let now = now_ms();
        self.with(name, |t| {
            t.open
                .iter_mut()
                .filter(|(_, o)| o.until <= now)
                .take(max)
                .map(|(seq, o)| {
                    o.until = until;
                    o.attempt += 1;
                    (*seq, o.attempt)
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// The open lease of `seq`, finished: true when it was one (its outcome needs no row).
    pub fn finish(&self, name: &str, seq: i64) -> bool {
        self.with(name, |t| t.open.remove(&seq).is_some())
            .unwrap_or(false)
    }

    /// The attempt of the open lease of `seq`, if it is one.
    pub fn attempt(&self, name: &str, seq: i64) -> Option<u32> {
        self.with(name, |t| t.open.get(&seq).map(|o| o.attempt))
            .flatten()
    }
}
