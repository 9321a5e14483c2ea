//! Upstreams as they run: each endpoint's live health and breaker state on this node.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;

use super::{Ctl, ErrorBody, caller};
use crate::TargetHealth;
use crate::error::{ApiError, ApiResult};

#[utoipa::path(get, path = "/api/v1/upstreams/{name}/health", tag = "upstreams",
    params(("name" = String, Path, description = "The upstream")),
    responses((status = 200, description = "Each endpoint's live state on this node", body = Vec<TargetHealth>),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 404, description = "No such HTTP upstream on this node", body = ErrorBody)))]
pub async fn upstream_health(
    State(ctl): Ctl,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<TargetHealth>>> {
    caller(&ctl, &headers).await?;
    ctl.plane
        .targets(&name)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no HTTP upstream named {name:?} on this node")))
}
