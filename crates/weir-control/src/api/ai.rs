//! The AI gateway's endpoints: call records newest first, and usage (requests, tokens,
//! spend, latency) summed by route, consumer, key, model or target over a time range.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weir_store::{AI_DIMENSIONS, AiCallFilter, AiCallRow};

use super::{Ctl, ErrorBody, caller};
use crate::Mode;
use crate::ai::{UsageRow, call_json, matches, summarize};
use crate::error::{ApiError, ApiResult};

/// Most records one answer lists (and what a node keeps in memory).
const MOST: usize = 10_000;

#[derive(Deserialize, IntoParams)]
#[allow(dead_code)]
pub struct AiQuery {
    /// How far back, in seconds (default 86400, at most 31 days).
    pub since: Option<i64>,
    /// Only this consumer's calls.
    pub consumer: Option<String>,
    /// Only calls with this API key (its name, or `sha256:` and twelve hex digits).
    pub key: Option<String>,
    /// Only calls of this model (the name clients ask for).
    pub model: Option<String>,
    /// `/ai/calls`: how many, newest first (1 to 10000; default 100).
    pub limit: Option<usize>,
    /// `/ai/usage`: comma-separated dimensions to sum by, from route, consumer, key,
    /// model, target (default `consumer,model`; empty for one total).
    pub by: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AiUsageAnswer {
    /// Unix seconds.
    pub from: i64,
    pub to: i64,
    pub by: Vec<String>,
    /// `store` (every node's calls, kept for the analytics retention) or `node` (this
    /// node's newest calls in memory, when analytics is off or in file mode).
    pub source: String,
    pub rows: Vec<UsageRow>,
}

/// Whether records come from the store: database mode with analytics on.
fn from_store(ctl: &crate::Control) -> bool {
    ctl.mode == Mode::Database && ctl.base().analytics.enabled
}

fn filter(q: &HashMap<String, String>) -> ApiResult<(AiCallFilter, i64)> {
    let since = match q.get("since") {
        None => 86_400,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=31 * 86_400).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest("since: a number of seconds from 1 to 2678400".to_owned())
            })?,
    };
    let to = weir_store::now() + 1;
    let text = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    Ok((
        AiCallFilter {
            from_ms: (to - since) * 1000,
            to_ms: to * 1000,
            consumer: text("consumer"),
            key: text("key"),
            model: text("model"),
        },
        to,
    ))
}

/// This node's records in memory that `f` asks for, newest first.
fn in_memory(ctl: &crate::Control, f: &AiCallFilter, limit: usize) -> Vec<AiCallRow> {
    let all = ctl.ai.get().map(|a| a.recent(MOST)).unwrap_or_default();
    all.into_iter()
        .filter(|r| matches(r, f))
        .take(limit)
        .collect()
}

#[utoipa::path(get, path = "/api/v1/ai/calls", tag = "ai", params(AiQuery),
    responses((status = 200, description = "AI calls, newest first: time, route, consumer, key, model, target, status, tokens, cost, latency, time to first token, fallbacks (never prompts or answers)", body = [Object]),
              (status = 400, description = "A bad limit, range or filter", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 503, description = "The store is unavailable", body = ErrorBody)))]
pub async fn ai_calls(
    State(ctl): Ctl,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    caller(&ctl, &headers).await?;
    let limit = match q.get("limit") {
        None => 100,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MOST).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit: a number from 1 to {MOST}")))?,
    };
    let (f, _) = filter(&q)?;
    let rows = if from_store(&ctl) {
        ctl.store.ai_calls(&f, limit as i64).await?
    } else {
        in_memory(&ctl, &f, limit)
    };
    Ok(Json(rows.iter().map(call_json).collect()))
}

#[utoipa::path(get, path = "/api/v1/ai/usage", tag = "ai", params(AiQuery),
    responses((status = 200, description = "Requests, errors, tokens, spend and average latency and time to first token, summed by the dimensions asked for, largest spend first", body = AiUsageAnswer),
              (status = 400, description = "A bad range, dimension or filter", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 503, description = "The store is unavailable", body = ErrorBody)))]
pub async fn ai_usage(
    State(ctl): Ctl,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<AiUsageAnswer>> {
    caller(&ctl, &headers).await?;
    let by: Vec<&str> = q
        .get("by")
        .map_or("consumer,model", String::as_str)
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if let Some(bad) = by.iter().find(|d| !AI_DIMENSIONS.contains(d)) {
        return Err(ApiError::BadRequest(format!(
            "by: {bad:?} is not one of {}",
            AI_DIMENSIONS.join(", ")
        )));
    }
    let (f, to) = filter(&q)?;
    let store = from_store(&ctl);
    let sums = if store {
        ctl.store.ai_usage(&f, &by).await?
    } else {
        summarize(&in_memory(&ctl, &f, MOST), &by)
    };
    Ok(Json(AiUsageAnswer {
        from: f.from_ms / 1000,
        to,
        by: by.iter().map(|d| (*d).to_owned()).collect(),
        source: if store { "store" } else { "node" }.to_owned(),
        rows: sums.into_iter().map(|u| UsageRow::new(&by, u)).collect(),
    }))
}
