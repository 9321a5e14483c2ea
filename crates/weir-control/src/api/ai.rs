//! The AI gateway's endpoints: recent call records and usage by consumer and model.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;

use super::{Ctl, ErrorBody, caller};
use crate::ai::{UsageRow, summarize};
use crate::error::{ApiError, ApiResult};

/// Records the node keeps (and at most what one answer lists).
const KEPT: usize = 10_000;

fn records(ctl: &crate::Control, limit: usize) -> Vec<serde_json::Value> {
    ctl.ai.get().map(|a| a.recent(limit)).unwrap_or_default()
}

#[utoipa::path(get, path = "/api/v1/ai/calls", tag = "ai",
    params(("limit" = Option<usize>, Query, description = "How many, newest first (1 to 10000; default 100)")),
    responses((status = 200, description = "Recent AI calls: consumer, model, target, status, tokens, cost, latency, time to first token, fallbacks", body = [Object]),
              (status = 400, description = "A bad limit", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody)))]
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
            .filter(|n| (1..=KEPT).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit: a number from 1 to {KEPT}")))?,
    };
    Ok(Json(records(&ctl, limit)))
}

#[utoipa::path(get, path = "/api/v1/ai/usage", tag = "ai",
    responses((status = 200, description = "Requests, errors, tokens and cost by consumer and model, over the calls this node keeps", body = [UsageRow]),
              (status = 401, description = "Not logged in", body = ErrorBody)))]
pub async fn ai_usage(State(ctl): Ctl, headers: HeaderMap) -> ApiResult<Json<Vec<UsageRow>>> {
    caller(&ctl, &headers).await?;
    Ok(Json(summarize(&records(&ctl, KEPT))))
}
