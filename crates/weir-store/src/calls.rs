//! Call records for analytics: written in batches, read back by time range, pruned by age.

use sqlx::Row;

use crate::{Backend, Result, Store};

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

/// Rows per INSERT statement.
const ROWS_PER_INSERT: usize = 1000;

/// A column's type in a bulk insert.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Int,
    Text,
}

/// An INSERT of many rows with one bound value, `$1`: the rows as a JSON array of arrays,
/// unpacked by the database itself. (Binding each value costs tens of microseconds a row
/// through sqlx's `Any` driver, and more as statements grow; this costs a few.)
fn bulk_insert(backend: Backend, table: &str, columns: &[(&str, Kind)]) -> String {
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    let values: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| match (backend, kind) {
            (Backend::Sqlite, _) => format!("json_extract(value, '$[{i}]')"),
            (Backend::Postgres, Kind::Int) => format!("(r->>{i})::bigint"),
            (Backend::Postgres, Kind::Text) => format!("r->>{i}"),
        })
        .collect();
    let from = match backend {
        Backend::Sqlite => "json_each($1)",
        Backend::Postgres => "jsonb_array_elements($1::jsonb) AS r",
    };
    format!(
        "INSERT INTO {table} ({}) SELECT {} FROM {from}",
        names.join(", "),
        values.join(", ")
    )
}

const COLUMNS: [(&str, Kind); 7] = [
    ("at_ms", Kind::Int),
    ("route", Kind::Text),
    ("consumer", Kind::Text),
    ("upstream", Kind::Text),
    ("status", Kind::Int),
    ("latency_us", Kind::Int),
    ("bytes_out", Kind::Int),
];

impl Store {
    /// Writes `rows` into `table` in one transaction, each row as the JSON array of its
    /// `columns`' values (in their order) that `row` makes.
    pub(crate) async fn insert_rows<T>(
        &self,
        table: &str,
        columns: &[(&str, Kind)],
        rows: &[T],
        row: impl Fn(&T) -> serde_json::Value,
    ) -> Result<()> {
        let sql = bulk_insert(self.backend, table, columns);
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let json = serde_json::Value::Array(chunk.iter().map(&row).collect());
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(json.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes a batch of call records in one transaction.
    pub async fn insert_calls(&self, rows: &[CallRow]) -> Result<()> {
        self.insert_rows("weir_calls", &COLUMNS, rows, |r| {
            serde_json::json!([
                r.at_ms,
                r.route,
                r.consumer,
                r.upstream,
                r.status,
                r.latency_us,
                r.bytes_out
            ])
        })
        .await
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
