//! AI call records for the AI gateway's analytics: written in batches off the request
//! path, read back newest first with filters, summed by any of their dimensions in the
//! database (pruned by age with the other call records).

use sqlx::Row;

use crate::calls::Kind::{self, Int, Text};
use crate::{Result, Store};

/// One AI call, as analytics keeps it. Costs are micro-USD so sums stay exact.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AiCallRow {
    pub at_ms: i64,
    pub route: String,
    pub consumer: Option<String>,
    /// The name of the API key used.
    pub key: Option<String>,
    pub model: String,
    pub target: String,
    pub status: i64,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
    /// The provider counted nothing; the tokens are Weir's estimate.
    pub estimated: bool,
    pub cost_micro_usd: i64,
    pub latency_ms: i64,
    pub ttft_ms: i64,
    pub stream: bool,
    pub fallbacks: i64,
}

/// Which calls a read wants: a time range and, optionally, one consumer, key or model.
#[derive(Debug, Clone, Default)]
pub struct AiCallFilter {
    pub from_ms: i64,
    pub to_ms: i64,
    pub consumer: Option<String>,
    pub key: Option<String>,
    pub model: Option<String>,
}

/// The dimensions usage can be summed by (column names, so only these are ever put in
/// a statement).
pub const AI_DIMENSIONS: [&str; 5] = ["route", "consumer", "key", "model", "target"];

/// Sums over a group of calls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AiUsage {
    /// The group's value of each dimension asked for, in the order asked (`None` where
    /// calls had none, as calls without a consumer).
    pub group: Vec<Option<String>>,
    pub requests: i64,
    /// Answers with status 400 or above.
    pub errors: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micro_usd: i64,
    pub avg_latency_ms: f64,
    pub avg_ttft_ms: f64,
}

/// The table's columns, in the order rows are written and read.
const COLUMNS: [(&str, Kind); 16] = [
    ("at_ms", Int),
    ("route", Text),
    ("consumer", Text),
    ("api_key", Text),
    ("model", Text),
    ("target", Text),
    ("status", Int),
    ("input_tokens", Int),
    ("cached_tokens", Int),
    ("output_tokens", Int),
    ("estimated", Int),
    ("cost_micro_usd", Int),
    ("latency_ms", Int),
    ("ttft_ms", Int),
    ("stream", Int),
    ("fallbacks", Int),
];

fn column(dimension: &str) -> Option<&'static str> {
    Some(match dimension {
        "route" => "route",
        "consumer" => "consumer",
        // `key` is a reserved word in some SQL dialects.
        "key" => "api_key",
        "model" => "model",
        "target" => "target",
        _ => return None,
    })
}

/// A value bound to a statement.
enum Bind {
    Int(i64),
    Text(String),
}

/// The filter's WHERE clause, its placeholders numbered from `$1`, and its values.
/// (Placeholders are written out: sqlx's `Any` query builder writes `?`, which Postgres
/// refuses.)
fn where_clause(f: &AiCallFilter) -> (String, Vec<Bind>) {
    let mut sql = " WHERE at_ms >= $1 AND at_ms < $2".to_owned();
    let mut binds = vec![Bind::Int(f.from_ms), Bind::Int(f.to_ms)];
    for (col, v) in [
        ("consumer", &f.consumer),
        ("api_key", &f.key),
        ("model", &f.model),
    ] {
        if let Some(v) = v {
            binds.push(Bind::Text(v.clone()));
            sql.push_str(&format!(" AND {col} = ${}", binds.len()));
        }
    }
    (sql, binds)
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for b in binds {
        q = match b {
            Bind::Int(v) => q.bind(v),
            Bind::Text(v) => q.bind(v),
        };
    }
    q
}

impl Store {
    /// Writes a batch of AI call records in one transaction.
    pub async fn insert_ai_calls(&self, rows: &[AiCallRow]) -> Result<()> {
        self.insert_rows("weir_ai_calls", &COLUMNS, rows, |r| {
            serde_json::json!([
                r.at_ms,
                r.route,
                r.consumer,
                r.key,
                r.model,
                r.target,
                r.status,
                r.input_tokens,
                r.cached_tokens,
                r.output_tokens,
                i64::from(r.estimated),
                r.cost_micro_usd,
                r.latency_ms,
                r.ttft_ms,
                i64::from(r.stream),
                r.fallbacks
            ])
        })
        .await
    }

    /// The newest calls matching `filter`, at most `limit`.
    pub async fn ai_calls(&self, filter: &AiCallFilter, limit: i64) -> Result<Vec<AiCallRow>> {
        let (clause, mut binds) = where_clause(filter);
        binds.push(Bind::Int(limit));
        let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
        let sql = format!(
            "SELECT {} FROM weir_ai_calls{clause} ORDER BY at_ms DESC LIMIT ${}",
            names.join(", "),
            binds.len()
        );
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), binds)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AiCallRow {
                    at_ms: r.try_get("at_ms")?,
                    route: r.try_get("route")?,
                    consumer: r.try_get("consumer")?,
                    key: r.try_get("api_key")?,
                    model: r.try_get("model")?,
                    target: r.try_get("target")?,
                    status: r.try_get("status")?,
                    input_tokens: r.try_get("input_tokens")?,
                    cached_tokens: r.try_get("cached_tokens")?,
                    output_tokens: r.try_get("output_tokens")?,
                    estimated: r.try_get::<i64, _>("estimated")? != 0,
                    cost_micro_usd: r.try_get("cost_micro_usd")?,
                    latency_ms: r.try_get("latency_ms")?,
                    ttft_ms: r.try_get("ttft_ms")?,
                    stream: r.try_get::<i64, _>("stream")? != 0,
                    fallbacks: r.try_get("fallbacks")?,
                })
            })
            .collect()
    }

    /// Calls matching `filter` summed by `by` (names from [`AI_DIMENSIONS`]; an unknown
    /// name is refused), largest spend first.
    pub async fn ai_usage(&self, filter: &AiCallFilter, by: &[&str]) -> Result<Vec<AiUsage>> {
        let cols = by
            .iter()
            .map(|d| {
                column(d).ok_or_else(|| {
                    crate::StoreError::Invalid(vec![format!(
                        "{d:?} is not one of {}",
                        AI_DIMENSIONS.join(", ")
                    )])
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut sql = "SELECT ".to_owned();
        for (i, c) in cols.iter().enumerate() {
            sql.push_str(&format!("{c} AS g{i}, "));
        }
        // Sums are cast so both databases hand back 64-bit integers and doubles (Postgres
        // sums BIGINTs as NUMERIC), and are 0 rather than NULL over no calls.
        sql.push_str(
            "CAST(COUNT(*) AS BIGINT) AS requests, \
             CAST(COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT) AS errors, \
             CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
             CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
             CAST(COALESCE(SUM(cost_micro_usd), 0) AS BIGINT) AS cost, \
             CAST(COALESCE(AVG(latency_ms), 0) AS DOUBLE PRECISION) AS latency, \
             CAST(COALESCE(AVG(ttft_ms), 0) AS DOUBLE PRECISION) AS ttft FROM weir_ai_calls",
        );
        let (clause, binds) = where_clause(filter);
        sql.push_str(&clause);
        if !cols.is_empty() {
            sql.push_str(&format!(" GROUP BY {}", cols.join(", ")));
        }
        sql.push_str(" ORDER BY cost DESC, requests DESC");
        // Only fixed column names from `column` are put in the text; values are bound.
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), binds)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let group = (0..cols.len())
                    .map(|i| r.try_get::<Option<String>, _>(i))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(AiUsage {
                    group,
                    requests: r.try_get("requests")?,
                    errors: r.try_get("errors")?,
                    input_tokens: r.try_get("input_tokens")?,
                    output_tokens: r.try_get("output_tokens")?,
                    cost_micro_usd: r.try_get("cost")?,
                    avg_latency_ms: r.try_get("latency")?,
                    avg_ttft_ms: r.try_get("ttft")?,
                })
            })
            .collect()
    }
}
