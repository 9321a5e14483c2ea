//! Call records for analytics: written in batches, read back by time range, pruned by age.

use sqlx::Row;

use crate::{Result, Store};

/// One finished request, as analytics keeps it.
#[derive(Debug, Clone)]
pub struct CallRow {
    pub at_ms: i64,
    pub route: String,
    pub consumer: Option<String>,
    pub upstream: String,
    pub status: i64,
    pub latency_us: i64,
    pub bytes_out: i64,
}

/// Rows per INSERT statement (7 values each, well under SQLite's variable limit).
const CALLS_PER_INSERT: usize = 500;

impl Store {
    /// Writes a batch of call records in one transaction.
    pub async fn insert_calls(&self, rows: &[CallRow]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(CALLS_PER_INSERT) {
            // Placeholders written out: sqlx's `Any` query builder writes `?`, which
            // Postgres refuses.
            let sql = format!(
                "INSERT INTO weir_calls (at_ms, route, consumer, upstream, status, latency_us, bytes_out) VALUES {}",
                crate::ai_calls::value_groups(chunk.len(), 7)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(r.at_ms)
                    .bind(r.route.clone())
                    .bind(r.consumer.clone())
                    .bind(r.upstream.clone())
                    .bind(r.status)
                    .bind(r.latency_us)
                    .bind(r.bytes_out);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Call records from `from_ms` (inclusive) to `to_ms` (exclusive), at most `limit`.
    pub async fn calls(&self, from_ms: i64, to_ms: i64, limit: i64) -> Result<Vec<CallRow>> {
        let rows = sqlx::query(
            "SELECT at_ms, route, consumer, upstream, status, latency_us, bytes_out FROM weir_calls \
             WHERE at_ms >= $1 AND at_ms < $2 ORDER BY at_ms LIMIT $3",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CallRow {
                    at_ms: r.try_get("at_ms")?,
                    route: r.try_get("route")?,
                    consumer: r.try_get("consumer")?,
                    upstream: r.try_get("upstream")?,
                    status: r.try_get("status")?,
                    latency_us: r.try_get("latency_us")?,
                    bytes_out: r.try_get("bytes_out")?,
                })
            })
            .collect()
    }

    /// Drops call records, requests' and AI calls', older than `before_ms`; returns how
    /// many.
    pub async fn prune_calls(&self, before_ms: i64) -> Result<u64> {
        let mut n = 0;
        for sql in [
            "DELETE FROM weir_calls WHERE at_ms < $1",
            "DELETE FROM weir_ai_calls WHERE at_ms < $1",
        ] {
            n += sqlx::query(sql)
                .bind(before_ms)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(n)
    }
}
