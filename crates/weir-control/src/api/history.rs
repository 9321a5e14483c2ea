//! What happened: the audit log of changes, and traffic analytics from call records.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Ctl, ErrorBody, caller, page_params};
use crate::assemble;
use crate::auth::Role;
use crate::error::{ApiError, ApiResult};

#[derive(Serialize, ToSchema)]
pub struct AuditItem {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub kind: String,
    pub name: String,
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    pub version: i64,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditItem>,
    /// Pass as `before` for older entries; absent on the last page.
    pub next: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Stats {
    pub requests: u64,
    /// Answers with status 500 or above.
    pub errors: u64,
    /// Answers with status 400 to 499.
    pub client_errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Serialize, ToSchema)]
pub struct Bucket {
    /// Unix seconds where the bucket starts.
    pub start: i64,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Serialize, ToSchema)]
pub struct Group {
    /// The route, consumer or upstream name (`-` for requests without a consumer).
    pub key: String,
    #[serde(flatten)]
    pub total: Stats,
    pub buckets: Vec<Bucket>,
}

#[derive(Serialize, ToSchema)]
pub struct Analytics {
    /// `route`, `consumer` or `upstream`.
    pub by: String,
    /// Unix seconds.
    pub from: i64,
    pub to: i64,
    pub bucket_seconds: i64,
    pub groups: Vec<Group>,
}

#[derive(Deserialize, IntoParams)]
#[allow(dead_code)]
pub struct AnalyticsQuery {
    /// `route` (default), `consumer` or `upstream`.
    pub by: Option<String>,
    /// How far back, in seconds (default 3600, at most 31 days).
    pub since: Option<i64>,
    /// Bucket width in seconds (default 60).
    pub bucket: Option<i64>,
}

/// Most call records one analytics query reads.
const MAX_CALLS: i64 = 2_000_000;

fn stats(mut lat_us: Vec<i64>, statuses: &[i64]) -> Stats {
    lat_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat_us.is_empty() {
            return 0.0;
        }
        // Nearest rank.
        let rank = ((p / 100.0) * lat_us.len() as f64).ceil() as usize;
        lat_us[rank.clamp(1, lat_us.len()) - 1] as f64 / 1000.0
    };
    Stats {
        requests: lat_us.len() as u64,
        errors: statuses.iter().filter(|s| **s >= 500).count() as u64,
        client_errors: statuses.iter().filter(|s| (400..500).contains(*s)).count() as u64,
        p50_ms: pct(50.0),
        p95_ms: pct(95.0),
        p99_ms: pct(99.0),
    }
}

#[utoipa::path(get, path = "/api/v1/analytics", tag = "analytics", params(AnalyticsQuery),
    responses((status = 200, description = "Requests, errors and latency percentiles per group, in total and per time bucket", body = Analytics),
              (status = 400, description = "Bad parameters, or a range too large to read", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody)))]
pub async fn analytics(
    State(ctl): Ctl,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Json<Analytics>> {
    caller(&ctl, &headers).await?;
    let by = q.get("by").map_or("route", String::as_str).to_owned();
    if !matches!(by.as_str(), "route" | "consumer" | "upstream") {
        return Err(ApiError::BadRequest(
            "by: route, consumer or upstream".to_owned(),
        ));
    }
    let num = |k: &str, default: i64, max: i64| -> ApiResult<i64> {
        match q.get(k) {
            None => Ok(default),
            Some(s) => s
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("{k}: a number of seconds from 1 to {max}"))
                }),
        }
    };
    let since = num("since", 3600, 31 * 86_400)?;
    let bucket = num("bucket", 60, 31 * 86_400)?;
    if since / bucket > 10_000 {
        return Err(ApiError::BadRequest(
            "bucket: at most 10,000 buckets; widen it".to_owned(),
        ));
    }
    let to = weir_store::now() + 1;
    let from = to - since;
    let rows = ctl
        .store
        .calls(from * 1000, to * 1000, MAX_CALLS + 1)
        .await?;
    if rows.len() as i64 > MAX_CALLS {
        return Err(ApiError::BadRequest(format!(
            "more than {MAX_CALLS} calls in this range; shorten since"
        )));
    }
    // key → bucket start → (latencies, statuses)
    type Series = std::collections::BTreeMap<i64, (Vec<i64>, Vec<i64>)>;
    let mut groups: std::collections::BTreeMap<String, Series> = Default::default();
    for r in rows {
        let key = match by.as_str() {
            "consumer" => r.consumer.unwrap_or_else(|| "-".to_owned()),
            "upstream" => r.upstream,
            _ => r.route,
        };
        let start = from + ((r.at_ms / 1000 - from) / bucket) * bucket;
        let e = groups.entry(key).or_default().entry(start).or_default();
        e.0.push(r.latency_us);
        e.1.push(r.status);
    }
    let groups = groups
        .into_iter()
        .map(|(key, series)| {
            let mut all_lat = Vec::new();
            let mut all_st = Vec::new();
            let buckets = series
                .into_iter()
                .map(|(start, (lat, st))| {
                    all_lat.extend_from_slice(&lat);
                    all_st.extend_from_slice(&st);
                    Bucket {
                        start,
                        stats: stats(lat, &st),
                    }
                })
                .collect();
            Group {
                key,
                total: stats(all_lat, &all_st),
                buckets,
            }
        })
        .collect();
    Ok(Json(Analytics {
        by,
        from,
        to,
        bucket_seconds: bucket,
        groups,
    }))
}

#[derive(Deserialize, IntoParams)]
#[allow(dead_code)]
pub struct AuditQuery {
    pub limit: Option<i64>,
    /// The `next` of the previous page.
    pub before: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "Changes, newest first: who, when, what, before and after", body = AuditPage),
              (status = 400, description = "Bad paging parameters", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 403, description = "Needs the editor role", body = ErrorBody)))]
pub async fn audit(
    State(ctl): Ctl,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Json<AuditPage>> {
    let who = caller(&ctl, &headers).await?;
    who.require(Role::Editor)?;
    let (limit, _) = page_params(&q)?;
    let before = match q.get("before") {
        None => None,
        Some(s) => Some(
            s.parse::<i64>()
                .map_err(|_| ApiError::BadRequest("before: an audit entry id".to_owned()))?,
        ),
    };
    let entries = ctl.store.audit(before, limit + 1).await?;
    let more = entries.len() as i64 > limit;
    let items: Vec<AuditItem> = entries
        .into_iter()
        .take(limit as usize)
        .map(|e| {
            let kind = e.kind.clone();
            AuditItem {
                id: e.id,
                at: e.at,
                actor: e.actor,
                action: e.action,
                kind: e.kind,
                name: e.name,
                before: e.before.map(|b| assemble::shown(&kind, b)),
                after: e.after.map(|b| assemble::shown(&kind, b)),
                version: e.version,
            }
        })
        .collect();
    let next = more.then(|| items.last().map(|i| i.id)).flatten();
    Ok(Json(AuditPage { items, next }))
}
