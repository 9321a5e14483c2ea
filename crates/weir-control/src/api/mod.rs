//! The admin REST API under `/api/v1`: the router, the request helpers every handler
//! shares (JSON bodies, the caller, ETags, paging), the error body, and the node's own
//! endpoints (the OpenAPI document, status, the served configuration). Every write goes
//! through [`Control::commit`](crate::Control): validated as a whole, committed, applied.

mod accounts;
mod ai;
mod events;
mod history;
mod objects;
mod upstreams;

pub use accounts::*;
pub use ai::*;
pub use events::*;
pub use history::*;
pub use objects::*;
pub use upstreams::*;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

use crate::assemble::{self, KINDS};
use crate::auth::{self, Caller};
use crate::error::{ApiError, ApiResult};
use crate::{Control, Mode};

type Ctl = State<Arc<Control>>;

/// Largest request body the admin API reads.
const MAX_BODY: usize = 1 << 20;

const MAX_PAGE: i64 = 500;

/// The `/api/v1` routes.
pub fn router(control: Arc<Control>) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/setup", get(setup_state).post(setup))
        .route("/api/v1/session", get(session))
        .route("/api/v1/status", get(status))
        .route("/api/v1/config", get(config).put(apply_config))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/analytics", get(analytics))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route(
            "/api/v1/users/{username}",
            axum::routing::delete(delete_user),
        )
        .route(
            "/api/v1/users/{username}/role",
            axum::routing::put(set_role),
        )
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(delete_token))
        .route(
            "/api/v1/policy-defaults",
            get(get_defaults).put(put_defaults),
        )
        .route(
            "/api/v1/consumers/{name}/credentials",
            get(list_credentials).post(add_credential),
        )
        .route(
            "/api/v1/consumers/{name}/credentials/{index}",
            axum::routing::delete(delete_credential),
        )
        .route("/api/v1/upstreams/{name}/health", get(upstream_health))
        .route("/api/v1/topics/{topic}/events", post(publish_event))
        .route("/api/v1/events/subscriptions", get(list_subscriptions))
        .route("/api/v1/events/subscriptions/{name}", get(get_subscription))
        .route("/api/v1/ai/calls", get(ai_calls))
        .route("/api/v1/ai/usage", get(ai_usage))
        .route("/api/v1/events/{id}", get(get_event))
        .route(
            "/api/v1/events/subscriptions/{name}/dead-letters",
            get(dead_letters),
        )
        .route(
            "/api/v1/events/subscriptions/{name}/attempts",
            get(attempts),
        )
        .route("/api/v1/events/subscriptions/{name}/replay", post(replay))
        .route("/api/v1/events/subscriptions/{name}/enable", post(enable))
        .route("/api/v1/{kind}", get(list_objects).post(create_object))
        .route(
            "/api/v1/{kind}/{name}",
            get(get_object).put(put_object).delete(delete_object),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn(guard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(control)
        .merge(crate::console::router())
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such API endpoint; see /api/v1/openapi.json".to_owned())
}

/// Refuses early what the handlers would refuse late (a body announced too large), and
/// writes that a browser could make on a user's behalf from elsewhere: any write
/// from another origin (`Origin`, `Sec-Fetch-Site`), and a write on the session cookie
/// without the session's `X-CSRF-Token`. A bearer token is never sent by a browser on its
/// own, so it needs neither.
async fn guard(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    // A body announced over the limit is refused before it is read.
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY as u64) {
        return ApiError::TooLarge(MAX_BODY).into_response();
    }
    match check_csrf(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check_csrf(method: &axum::http::Method, headers: &HeaderMap) -> ApiResult<()> {
    use axum::http::Method;
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = text("origin") {
        let host = text("host").unwrap_or("");
        let same = origin
            .split_once("://")
            .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && rest == host);
        if !same {
            return Err(ApiError::Forbidden(
                "a write from another origin is refused: use the console on this address, or send Authorization: Bearer TOKEN",
            ));
        }
    }
    if matches!(text("sec-fetch-site"), Some("cross-site" | "same-site")) {
        return Err(ApiError::Forbidden(
            "a write from another site is refused: use the console on this address, or send Authorization: Bearer TOKEN",
        ));
    }
    if headers.contains_key(header::AUTHORIZATION) {
        return Ok(());
    }
    let Some(secret) = auth::presented(headers) else {
        return Ok(());
    };
    if text("x-csrf-token") == Some(auth::csrf_token(&secret).as_str()) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "a write on the session cookie needs its X-CSRF-Token (from the login answer or GET /api/v1/session)",
        ))
    }
}

/// A JSON body, refused clearly when it is not one (and only as `application/json`, which
/// also keeps cross-site form posts from riding a session cookie).
fn json_body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> ApiResult<T> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))
}

async fn caller(ctl: &Control, headers: &HeaderMap) -> ApiResult<Caller> {
    auth::authenticate(&ctl.store, headers, ctl.sessions).await
}

fn etag(revision: i64) -> HeaderValue {
    // A number in quotes is always a valid header value.
    HeaderValue::from_str(&format!("\"{revision}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// `If-Match: "N"` (or `*`, meaning any existing revision).
fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    if s == "*" {
        return Ok(None);
    }
    s.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| {
            ApiError::BadRequest("If-Match: expected an ETag from this API, like \"12\"".to_owned())
        })
}

fn page_params(q: &HashMap<String, String>) -> ApiResult<(i64, Option<String>)> {
    let limit = match q.get("limit") {
        None => 100,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit: a number from 1 to {MAX_PAGE}")))?,
    };
    Ok((limit, q.get("after").cloned()))
}

fn check_kind(kind: &str) -> ApiResult<()> {
    if KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!(
            "no such kind {kind:?}; one of {}",
            KINDS.join(", ")
        )))
    }
}

#[derive(Serialize, ToSchema)]
pub struct ReloadState {
    /// Unix seconds.
    pub at: i64,
    /// What started it: `file changed` or `SIGHUP`.
    pub cause: String,
    /// `true` when the new configuration is served.
    pub ok: bool,
    /// Every reason it was refused (the previous configuration stays).
    pub errors: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    /// Weir's version on this node.
    pub version: String,
    /// This node's host name.
    pub node: String,
    /// `file` or `database`.
    pub mode: String,
    /// The store version this node serves.
    pub serving_version: i64,
    /// The store's newest version (absent while the store is unavailable).
    pub store_version: Option<i64>,
    /// `ok` or `unavailable`.
    pub store: String,
    pub store_error: Option<String>,
    /// The last reload of the node's file since it started (absent: none yet).
    pub last_reload: Option<ReloadState>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    /// For `invalid_config`: every error with its path.
    pub errors: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This document")))]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/v1/status", tag = "meta",
    responses((status = 200, description = "This node's mode and versions", body = Status),
              (status = 401, description = "Not logged in", body = ErrorBody)))]
pub async fn status(State(ctl): Ctl, headers: HeaderMap) -> ApiResult<Json<Status>> {
    caller(&ctl, &headers).await?;
    let latest = ctl.store.version().await.ok();
    let (ok, err) = ctl.store_state();
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        node: host_name(),
        last_reload: ctl
            .plane
            .last_reload()
            .map(|(at, cause, errors)| ReloadState {
                at,
                cause,
                ok: errors.is_empty(),
                errors,
            }),
        mode: match ctl.mode {
            Mode::File => "file",
            Mode::Database => "database",
        }
        .to_owned(),
        serving_version: ctl.serving(),
        store_version: latest,
        store: if ok && latest.is_some() {
            "ok"
        } else {
            "unavailable"
        }
        .to_owned(),
        store_error: err,
    }))
}

#[utoipa::path(get, path = "/api/v1/config", tag = "config",
    responses((status = 200, description = "The configuration this node serves, in its YAML shape as JSON", body = Object),
              (status = 401, description = "Not logged in", body = ErrorBody)))]
pub async fn config(State(ctl): Ctl, headers: HeaderMap) -> ApiResult<Json<serde_json::Value>> {
    caller(&ctl, &headers).await?;
    assemble::shown_value(&ctl.plane.current())
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The machine's host name (as the kernel reports it at first ask), else `unknown`.
fn host_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".to_owned())
    })
    .clone()
}
