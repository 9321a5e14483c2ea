//! The admin REST API handlers under `/api/v1`: login and tokens, users, configuration
//! objects (upstreams, routes, consumers, policy defaults) with ETags, the audit log, the
//! node's status, and the OpenAPI document. Every write goes through
//! [`Control::commit`](crate::Control): validated as a whole, committed, then applied.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weir_store::{Change, Object};

use crate::assemble::{self, DEFAULTS_KIND, DEFAULTS_NAME, KINDS};
use crate::auth::{self, Caller, Role};
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
        .route("/api/v1/status", get(status))
        .route("/api/v1/config", get(config).put(apply_config))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/analytics", get(analytics))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route(
            "/api/v1/users/{username}",
            axum::routing::delete(delete_user),
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
        .route("/api/v1/{kind}", get(list_objects).post(create_object))
        .route(
            "/api/v1/{kind}/{name}",
            get(get_object).put(put_object).delete(delete_object),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(control)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such API endpoint; see /api/v1/openapi.json".to_owned())
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
    auth::authenticate(&ctl.store, headers).await
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

// === schema types ===

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// Usable as `Authorization: Bearer`; also set as the `weir_session` cookie.
    pub token: String,
    pub username: String,
    pub role: String,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    /// `file` or `database`.
    pub mode: String,
    /// The store version this node serves.
    pub serving_version: i64,
    /// The store's newest version (absent while the store is unavailable).
    pub store_version: Option<i64>,
    /// `ok` or `unavailable`.
    pub store: String,
    pub store_error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ObjectPage {
    /// Objects in their configuration shapes, each with its `name`.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Value>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct NewUser {
    pub username: String,
    /// At least 12 characters.
    pub password: String,
    /// `admin`, `editor` or `viewer`.
    pub role: String,
}

#[derive(Serialize, ToSchema)]
pub struct UserOut {
    pub username: String,
    pub role: String,
    pub created_at: i64,
}

#[derive(Deserialize, ToSchema)]
pub struct NewToken {
    pub name: String,
    /// Absent: the token does not expire.
    pub expires_in_days: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenOut {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct NewTokenOut {
    pub id: String,
    pub name: String,
    /// Shown once; Weir keeps only its digest.
    pub token: String,
    pub expires_at: Option<i64>,
}

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

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PolicyDefaults {
    /// Policies every route runs unless it has one of the same kind.
    #[schema(value_type = Vec<Object>)]
    pub policies: Vec<serde_json::Value>,
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

#[derive(Deserialize, IntoParams)]
#[allow(dead_code)]
pub struct PageQuery {
    /// 1 to 500 (default 100).
    pub limit: Option<i64>,
    /// The `next` of the previous page.
    pub after: Option<String>,
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

// === handlers ===

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This document")))]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}

#[utoipa::path(post, path = "/api/v1/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in; the session cookie is set", body = LoginResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Wrong user name or password", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many failed logins", body = ErrorBody),
    ))]
pub async fn login(
    State(ctl): Ctl,
    peer: Option<axum::Extension<std::net::SocketAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let req: LoginRequest = json_body(&headers, &body)?;
    let mut keys = vec![(format!("u:{}", req.username), auth::MAX_FAILURES_USER)];
    if let Some(axum::Extension(addr)) = peer {
        keys.push((format!("a:{}", addr.ip()), auth::MAX_FAILURES_ADDR));
    }
    ctl.logins.check(&keys)?;
    let Some(user) = auth::login(&ctl.store, &req.username, &req.password).await? else {
        ctl.logins.failed(&keys);
        tracing::info!(user = %req.username.chars().take(64).collect::<String>(), "admin login refused");
        return Err(ApiError::Unauthorized("wrong user name or password"));
    };
    ctl.logins.succeeded(&keys);
    let (token, secret) = auth::issue(
        &ctl.store,
        &user.username,
        "login",
        "session",
        Some(ctl.session_ttl),
    )
    .await?;
    let cookie = format!(
        "{}={secret}; Path=/api; HttpOnly; SameSite=Strict; Max-Age={}",
        auth::SESSION_COOKIE,
        ctl.session_ttl.as_secs()
    );
    let body = LoginResponse {
        token: secret,
        username: user.username,
        role: user.role,
        expires_at: token.expires_at.unwrap_or(0),
    };
    let mut rsp = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        rsp.headers_mut().insert(header::SET_COOKIE, v);
    }
    rsp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(rsp)
}

#[utoipa::path(post, path = "/api/v1/logout", tag = "auth",
    responses((status = 204, description = "The session or token used is revoked"),
              (status = 401, description = "Not logged in", body = ErrorBody)))]
pub async fn logout(State(ctl): Ctl, headers: HeaderMap) -> ApiResult<Response> {
    let who = caller(&ctl, &headers).await?;
    ctl.store.delete_token(&who.username, &who.token_id).await?;
    let clear = format!(
        "{}=; Path=/api; HttpOnly; SameSite=Strict; Max-Age=0",
        auth::SESSION_COOKIE
    );
    let mut rsp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&clear) {
        rsp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(rsp)
}

#[utoipa::path(get, path = "/api/v1/status", tag = "meta",
    responses((status = 200, description = "This node's mode and versions", body = Status),
              (status = 401, description = "Not logged in", body = ErrorBody)))]
pub async fn status(State(ctl): Ctl, headers: HeaderMap) -> ApiResult<Json<Status>> {
    caller(&ctl, &headers).await?;
    let latest = ctl.store.version().await.ok();
    let (ok, err) = ctl.store_state();
    Ok(Json(Status {
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
    let mut cfg = ctl.plane.current();
    assemble::redact(&mut cfg);
    serde_json::to_value(&cfg)
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[derive(Serialize, ToSchema)]
pub struct Plan {
    /// `kind/name` of each object the file adds.
    pub create: Vec<String>,
    pub update: Vec<String>,
    pub delete: Vec<String>,
    pub unchanged: usize,
    /// False for a dry run (or when there was nothing to do).
    pub applied: bool,
    /// The version the change made, when applied.
    pub version: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[allow(dead_code)]
pub struct ApplyQuery {
    /// `true`: only show the plan (and check the result is valid).
    pub dry_run: Option<bool>,
}

#[utoipa::path(put, path = "/api/v1/config", tag = "config", params(ApplyQuery),
    request_body(content = Object, description = "A whole configuration in its YAML shape (as JSON). Its upstreams, routes, consumers and policy_defaults become the stored ones: missing objects are deleted. Node settings (listen, workers, limits) are not changed here."),
    responses((status = 200, description = "The plan, applied unless dry_run", body = Plan),
              (status = 400, description = "Malformed, or the result would be invalid (every error with its path)", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 403, description = "Needs the editor role", body = ErrorBody),
              (status = 409, description = "Weir runs in file mode", body = ErrorBody),
              (status = 415, description = "Not JSON", body = ErrorBody),
              (status = 503, description = "The store is unavailable", body = ErrorBody)))]
pub async fn apply_config(
    State(ctl): Ctl,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Plan>> {
    let who = caller(&ctl, &headers).await?;
    who.require(Role::Editor)?;
    if ctl.mode == Mode::File {
        return Err(ApiError::ReadOnly);
    }
    let dry_run = match q.get("dry_run").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::BadRequest("dry_run: true or false".to_owned())),
    };
    let desired: weir_config::Config = json_body(&headers, &body)?;
    let mut wanted = Vec::new();
    let mut errors = Vec::new();
    for (kind, name, body) in assemble::objects_of(&desired) {
        let prepared = if kind == DEFAULTS_KIND {
            assemble::prepare_defaults(body)
        } else {
            assemble::prepare(&kind, &name, body)
        };
        match prepared {
            Ok(b) => wanted.push((kind, name, b)),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let current = ctl.store.objects().await?;
    let mut plan = Plan {
        create: Vec::new(),
        update: Vec::new(),
        delete: Vec::new(),
        unchanged: 0,
        applied: false,
        version: None,
    };
    let mut changes = Vec::new();
    for (kind, name, body) in &wanted {
        let label = format!("{kind}/{name}");
        match current.iter().find(|o| o.kind == *kind && o.name == *name) {
            None => plan.create.push(label),
            Some(o) if assemble::canonical(kind, &o.body) == assemble::canonical(kind, body) => {
                plan.unchanged += 1;
                continue;
            }
            Some(_) => plan.update.push(label),
        }
        changes.push(Change::Put {
            kind: kind.clone(),
            name: name.clone(),
            body: body.clone(),
            create_only: false,
            if_match: None,
        });
    }
    for o in &current {
        if !wanted.iter().any(|(k, n, _)| *k == o.kind && *n == o.name) {
            plan.delete.push(format!("{}/{}", o.kind, o.name));
            changes.push(Change::Delete {
                kind: o.kind.clone(),
                name: o.name.clone(),
                if_match: Some(o.revision),
            });
        }
    }
    let would_be: Vec<Object> = wanted
        .into_iter()
        .map(|(kind, name, body)| Object {
            kind,
            name,
            body,
            revision: 0,
            updated_at: 0,
        })
        .collect();
    let cfg = crate::assemble(&ctl.base, &would_be).map_err(ApiError::Invalid)?;
    ctl.plane
        .check(&cfg)
        .map_err(|e| ApiError::Invalid(crate::name_paths(&cfg, e)))?;
    if !dry_run && !changes.is_empty() {
        let (version, _) = ctl.commit(&who.username, changes).await?;
        plan.applied = true;
        plan.version = Some(version);
    }
    Ok(Json(plan))
}

/// Objects of a kind as the API shows them: from the store (database mode) or from the
/// running configuration (file mode, where revisions are the gateway's version).
async fn objects_of_kind(ctl: &Control, kind: &str) -> ApiResult<Vec<Object>> {
    match ctl.mode {
        Mode::Database => Ok(ctl.store.list(kind, None, i64::MAX).await?),
        Mode::File => Ok(assemble::objects_of(&{
            let mut cfg = ctl.plane.current();
            assemble::redact(&mut cfg);
            cfg
        })
        .into_iter()
        .filter(|(k, _, _)| k == kind)
        .map(|(kind, name, body)| Object {
            kind,
            name,
            body,
            revision: 0,
            updated_at: 0,
        })
        .collect()),
    }
}

#[utoipa::path(get, path = "/api/v1/{kind}", tag = "config",
    params(("kind" = String, Path, description = "upstreams, routes, consumers or certificates"), PageQuery),
    responses((status = 200, description = "One page, by name", body = ObjectPage),
              (status = 400, description = "Bad paging parameters", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 404, description = "No such kind", body = ErrorBody)))]
pub async fn list_objects(
    State(ctl): Ctl,
    Path(kind): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Json<ObjectPage>> {
    caller(&ctl, &headers).await?;
    check_kind(&kind)?;
    let (limit, after) = page_params(&q)?;
    let items = match ctl.mode {
        Mode::Database => ctl.store.list(&kind, after.as_deref(), limit + 1).await?,
        Mode::File => objects_of_kind(&ctl, &kind)
            .await?
            .into_iter()
            .filter(|o| after.as_deref().is_none_or(|a| o.name.as_str() > a))
            .take(limit as usize + 1)
            .collect(),
    };
    let more = items.len() as i64 > limit;
    let items: Vec<Object> = items.into_iter().take(limit as usize).collect();
    let next = more.then(|| items.last().map(|o| o.name.clone())).flatten();
    Ok(Json(ObjectPage {
        items: items
            .into_iter()
            .map(|o| assemble::shown(&o.kind, o.body))
            .collect(),
        next,
    }))
}

#[utoipa::path(get, path = "/api/v1/{kind}/{name}", tag = "config",
    params(("kind" = String, Path, description = "upstreams, routes, consumers or certificates"),
           ("name" = String, Path, description = "The object's name")),
    responses((status = 200, description = "The object; its revision is the ETag", body = Object),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 404, description = "No such object", body = ErrorBody)))]
pub async fn get_object(
    State(ctl): Ctl,
    Path((kind, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller(&ctl, &headers).await?;
    check_kind(&kind)?;
    let found = match ctl.mode {
        Mode::Database => ctl.store.get(&kind, &name).await?,
        Mode::File => objects_of_kind(&ctl, &kind)
            .await?
            .into_iter()
            .find(|o| o.name == name),
    };
    let Some(obj) = found else {
        return Err(ApiError::NotFound(format!("no {kind} named {name:?}")));
    };
    Ok((
        [(header::ETAG, etag(obj.revision))],
        Json(assemble::shown(&obj.kind, obj.body)),
    )
        .into_response())
}

fn written(status: StatusCode, obj: Option<Object>) -> Response {
    match obj {
        Some(o) => (
            status,
            [(header::ETAG, etag(o.revision))],
            Json(assemble::shown(&o.kind, o.body)),
        )
            .into_response(),
        None => status.into_response(),
    }
}

#[utoipa::path(post, path = "/api/v1/{kind}", tag = "config",
    params(("kind" = String, Path, description = "upstreams, routes, consumers or certificates")),
    request_body(content = Object, description = "The object in its configuration shape, with `name`"),
    responses((status = 201, description = "Created and applied", body = Object),
              (status = 400, description = "Malformed, or it would make the configuration invalid (every error with its path)", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 403, description = "Needs the editor role", body = ErrorBody),
              (status = 404, description = "No such kind", body = ErrorBody),
              (status = 409, description = "The name is taken, or Weir runs in file mode", body = ErrorBody),
              (status = 415, description = "Not JSON", body = ErrorBody),
              (status = 503, description = "The store is unavailable", body = ErrorBody)))]
pub async fn create_object(
    State(ctl): Ctl,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let who = caller(&ctl, &headers).await?;
    who.require(Role::Editor)?;
    check_kind(&kind)?;
    let value: serde_json::Value = json_body(&headers, &body)?;
    let Some(name) = value
        .get("name")
        .and_then(|n| n.as_str())
        .map(str::to_owned)
    else {
        return Err(ApiError::BadRequest("name: required".to_owned()));
    };
    let body = assemble::prepare(&kind, &name, value).map_err(ApiError::Invalid)?;
    let change = Change::Put {
        kind: kind.clone(),
        name,
        body,
        create_only: true,
        if_match: None,
    };
    let (_, objs) = ctl.commit(&who.username, vec![change]).await?;
    Ok(written(StatusCode::CREATED, objs.into_iter().next()))
}

#[utoipa::path(put, path = "/api/v1/{kind}/{name}", tag = "config",
    params(("kind" = String, Path, description = "upstreams, routes, consumers or certificates"),
           ("name" = String, Path, description = "The object's name"),
           ("If-Match" = Option<String>, Header, description = "The ETag read; the write fails with 412 if the object changed since")),
    request_body(content = Object, description = "The whole object in its configuration shape"),
    responses((status = 200, description = "Replaced (or created) and applied", body = Object),
              (status = 400, description = "Malformed, or it would make the configuration invalid", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 403, description = "Needs the editor role", body = ErrorBody),
              (status = 404, description = "No such kind, or If-Match on a missing object", body = ErrorBody),
              (status = 409, description = "Weir runs in file mode", body = ErrorBody),
              (status = 412, description = "The object changed since the ETag in If-Match", body = ErrorBody),
              (status = 415, description = "Not JSON", body = ErrorBody),
              (status = 503, description = "The store is unavailable", body = ErrorBody)))]
pub async fn put_object(
    State(ctl): Ctl,
    Path((kind, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let who = caller(&ctl, &headers).await?;
    who.require(Role::Editor)?;
    check_kind(&kind)?;
    let mut value: serde_json::Value = json_body(&headers, &body)?;
    // A certificate read back (its key shown redacted) and sent again keeps its key.
    if kind == "certificates"
        && value.get("key").and_then(|k| k.as_str()) == Some(assemble::REDACTED)
        && ctl.mode == Mode::Database
        && let Some(old) = ctl.store.get(&kind, &name).await?
    {
        value["key"] = old.body["key"].clone();
    }
    let body = assemble::prepare(&kind, &name, value).map_err(ApiError::Invalid)?;
    let change = Change::Put {
        kind,
        name,
        body,
        create_only: false,
        if_match: if_match(&headers)?,
    };
    let (_, objs) = ctl.commit(&who.username, vec![change]).await?;
    Ok(written(StatusCode::OK, objs.into_iter().next()))
}

#[utoipa::path(delete, path = "/api/v1/{kind}/{name}", tag = "config",
    params(("kind" = String, Path, description = "upstreams, routes, consumers or certificates"),
           ("name" = String, Path, description = "The object's name"),
           ("If-Match" = Option<String>, Header, description = "The ETag read")),
    responses((status = 204, description = "Deleted and applied"),
              (status = 400, description = "Deleting it would make the configuration invalid (a route still uses the upstream)", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 403, description = "Needs the editor role", body = ErrorBody),
              (status = 404, description = "No such object", body = ErrorBody),
              (status = 409, description = "Weir runs in file mode", body = ErrorBody),
              (status = 412, description = "The object changed since the ETag in If-Match", body = ErrorBody),
              (status = 503, description = "The store is unavailable", body = ErrorBody)))]
pub async fn delete_object(
    State(ctl): Ctl,
    Path((kind, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let who = caller(&ctl, &headers).await?;
    who.require(Role::Editor)?;
    check_kind(&kind)?;
    let change = Change::Delete {
        kind,
        name,
        if_match: if_match(&headers)?,
    };
    ctl.commit(&who.username, vec![change]).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize, ToSchema)]
pub struct Credential {
    /// Its position in the consumer's list (what DELETE takes).
    pub index: usize,
    /// The credential as stored: `key` (as `key_sha256` or a reference), `basic` (with
    /// its argon2 hash), `jwt` (issuer and subject).
    #[schema(value_type = Object)]
    #[serde(flatten)]
    pub credential: serde_json::Value,
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct NewCredential {
    /// `key`, `basic` or `jwt`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `key`: the API key (stored as its SHA-256), or `env:NAME` / `file:PATH`.
    pub key: Option<String>,
    /// `basic`: the user name and password (stored as an argon2 hash).
    pub username: Option<String>,
    pub password: Option<String>,
    /// `jwt`: the `iss` and `sub` that name this consumer.
    pub issuer: Option<String>,
    pub subject: Option<String>,
}

async fn consumer_object(ctl: &Control, name: &str) -> ApiResult<Object> {
    if ctl.mode == Mode::File {
        return objects_of_kind(ctl, "consumers")
            .await?
            .into_iter()
            .find(|o| o.name == name)
            .ok_or_else(|| ApiError::NotFound(format!("no consumer named {name:?}")));
    }
    ctl.store
        .get("consumers", name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no consumer named {name:?}")))
}

#[utoipa::path(get, path = "/api/v1/consumers/{name}/credentials", tag = "consumers",
    params(("name" = String, Path, description = "The consumer")),
    responses((status = 200, description = "The consumer's credentials (keys only as digests or references)", body = Vec<Credential>),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 404, description = "No such consumer", body = ErrorBody)))]
pub async fn list_credentials(
    State(ctl): Ctl,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller(&ctl, &headers).await?;
    let obj = consumer_object(&ctl, &name).await?;
    let list: Vec<Credential> = obj.body["credentials"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, credential)| Credential { index, credential })
        .collect();
    Ok(([(header::ETAG, etag(obj.revision))], Json(list)).into_response())
}

#[utoipa::path(post, path = "/api/v1/consumers/{name}/credentials", tag = "consumers",
    params(("name" = String, Path, description = "The consumer"),
           ("If-Match" = Option<String>, Header, description = "The consumer's ETag")),
    request_body = NewCredential,
    responses((status = 201, description = "Added and applied; the consumer's new state", body = Object),
              (status = 400, description = "Malformed, or it would make the configuration invalid (a key another consumer has)", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 403, description = "Needs the editor role", body = ErrorBody),
              (status = 404, description = "No such consumer", body = ErrorBody),
              (status = 409, description = "Weir runs in file mode", body = ErrorBody),
              (status = 412, description = "The consumer changed since the ETag", body = ErrorBody),
              (status = 415, description = "Not JSON", body = ErrorBody)))]
pub async fn add_credential(
    State(ctl): Ctl,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let who = caller(&ctl, &headers).await?;
    who.require(Role::Editor)?;
    if ctl.mode == Mode::File {
        return Err(ApiError::ReadOnly);
    }
    let req: NewCredential = json_body(&headers, &body)?;
    let need = |v: Option<String>, field: &str| {
        v.filter(|s| !s.is_empty()).ok_or_else(|| {
            ApiError::BadRequest(format!("{field}: required for a {} credential", req.kind))
        })
    };
    let credential = match req.kind.as_str() {
        "key" => serde_json::json!({ "type": "key", "key": need(req.key.clone(), "key")? }),
        "basic" => {
            let password = need(req.password.clone(), "password")?;
            auth::check_password(&password)?;
            let hash = auth::hash_password(password).await?;
            serde_json::json!({ "type": "basic", "username": need(req.username.clone(), "username")?, "password_hash": hash })
        }
        "jwt" => serde_json::json!({
            "type": "jwt",
            "issuer": need(req.issuer.clone(), "issuer")?,
            "subject": need(req.subject.clone(), "subject")?,
        }),
        _ => return Err(ApiError::BadRequest("type: key, basic or jwt".to_owned())),
    };
    let obj = consumer_object(&ctl, &name).await?;
    let expected = if_match(&headers)?.unwrap_or(obj.revision);
    let mut body = obj.body;
    match body["credentials"].as_array_mut() {
        Some(list) => list.push(credential),
        None => body["credentials"] = serde_json::json!([credential]),
    }
    let body = assemble::prepare("consumers", &name, body).map_err(ApiError::Invalid)?;
    let change = Change::Put {
        kind: "consumers".to_owned(),
        name,
        body,
        create_only: false,
        if_match: Some(expected),
    };
    let (_, objs) = ctl.commit(&who.username, vec![change]).await?;
    Ok(written(StatusCode::CREATED, objs.into_iter().next()))
}

#[utoipa::path(delete, path = "/api/v1/consumers/{name}/credentials/{index}", tag = "consumers",
    params(("name" = String, Path, description = "The consumer"),
           ("index" = usize, Path, description = "The credential's index"),
           ("If-Match" = Option<String>, Header, description = "The consumer's ETag")),
    responses((status = 204, description = "Removed and applied"),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 403, description = "Needs the editor role", body = ErrorBody),
              (status = 404, description = "No such consumer or credential", body = ErrorBody),
              (status = 409, description = "Weir runs in file mode", body = ErrorBody),
              (status = 412, description = "The consumer changed since the ETag", body = ErrorBody)))]
pub async fn delete_credential(
    State(ctl): Ctl,
    Path((name, index)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let who = caller(&ctl, &headers).await?;
    who.require(Role::Editor)?;
    if ctl.mode == Mode::File {
        return Err(ApiError::ReadOnly);
    }
    let obj = consumer_object(&ctl, &name).await?;
    let expected = if_match(&headers)?.unwrap_or(obj.revision);
    let mut body = obj.body;
    let removed = index.parse::<usize>().ok().and_then(|i| {
        let list = body["credentials"].as_array_mut()?;
        (i < list.len()).then(|| list.remove(i))
    });
    if removed.is_none() {
        return Err(ApiError::NotFound(format!(
            "consumer {name:?} has no credential {index}"
        )));
    }
    let change = Change::Put {
        kind: "consumers".to_owned(),
        name,
        body,
        create_only: false,
        if_match: Some(expected),
    };
    ctl.commit(&who.username, vec![change]).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/api/v1/policy-defaults", tag = "config",
    responses((status = 200, description = "The policies every route runs unless it has its own of the kind", body = PolicyDefaults),
              (status = 401, description = "Not logged in", body = ErrorBody)))]
pub async fn get_defaults(State(ctl): Ctl, headers: HeaderMap) -> ApiResult<Response> {
    caller(&ctl, &headers).await?;
    let (policies, revision) = match ctl.mode {
        Mode::Database => match ctl.store.get(DEFAULTS_KIND, DEFAULTS_NAME).await? {
            Some(o) => (o.body["policies"].clone(), o.revision),
            None => (serde_json::json!([]), 0),
        },
        Mode::File => (
            serde_json::to_value(
                &{
                    let mut cfg = ctl.plane.current();
                    assemble::redact(&mut cfg);
                    cfg
                }
                .policy_defaults,
            )
            .map_err(|e| ApiError::Internal(e.to_string()))?,
            0,
        ),
    };
    Ok((
        [(header::ETAG, etag(revision))],
        Json(serde_json::json!({ "policies": policies })),
    )
        .into_response())
}

#[utoipa::path(put, path = "/api/v1/policy-defaults", tag = "config", request_body = PolicyDefaults,
    params(("If-Match" = Option<String>, Header, description = "The ETag read")),
    responses((status = 200, description = "Replaced and applied", body = PolicyDefaults),
              (status = 400, description = "Malformed or invalid", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 403, description = "Needs the editor role", body = ErrorBody),
              (status = 409, description = "Weir runs in file mode", body = ErrorBody),
              (status = 412, description = "Changed since the ETag in If-Match", body = ErrorBody),
              (status = 415, description = "Not JSON", body = ErrorBody),
              (status = 503, description = "The store is unavailable", body = ErrorBody)))]
pub async fn put_defaults(State(ctl): Ctl, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let who = caller(&ctl, &headers).await?;
    who.require(Role::Editor)?;
    let value: serde_json::Value = json_body(&headers, &body)?;
    let body = assemble::prepare_defaults(value).map_err(ApiError::Invalid)?;
    let change = Change::Put {
        kind: DEFAULTS_KIND.to_owned(),
        name: DEFAULTS_NAME.to_owned(),
        body,
        create_only: false,
        if_match: if_match(&headers)?,
    };
    let (_, objs) = ctl.commit(&who.username, vec![change]).await?;
    Ok(written(StatusCode::OK, objs.into_iter().next()))
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

#[utoipa::path(get, path = "/api/v1/users", tag = "accounts",
    responses((status = 200, description = "Every account", body = Vec<UserOut>),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 403, description = "Needs the admin role", body = ErrorBody)))]
pub async fn list_users(State(ctl): Ctl, headers: HeaderMap) -> ApiResult<Json<Vec<UserOut>>> {
    let who = caller(&ctl, &headers).await?;
    who.require(Role::Admin)?;
    Ok(Json(
        ctl.store
            .users()
            .await?
            .into_iter()
            .map(|u| UserOut {
                username: u.username,
                role: u.role,
                created_at: u.created_at,
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "accounts", request_body = NewUser,
    responses((status = 201, description = "Created", body = UserOut),
              (status = 400, description = "Bad name, password or role", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 403, description = "Needs the admin role", body = ErrorBody),
              (status = 409, description = "The name is taken", body = ErrorBody),
              (status = 415, description = "Not JSON", body = ErrorBody)))]
pub async fn create_user(State(ctl): Ctl, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let who = caller(&ctl, &headers).await?;
    who.require(Role::Admin)?;
    let req: NewUser = json_body(&headers, &body)?;
    assemble::check_name(&req.username)
        .map_err(|e| ApiError::BadRequest(e.replacen("name", "username", 1)))?;
    let role = Role::parse(&req.role)
        .ok_or_else(|| ApiError::BadRequest("role: one of admin, editor, viewer".to_owned()))?;
    auth::check_password(&req.password)?;
    let hash = auth::hash_password(req.password).await?;
    let user = ctl
        .store
        .create_user(&who.username, &req.username, &hash, role.as_str())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(UserOut {
            username: user.username,
            role: user.role,
            created_at: user.created_at,
        }),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "accounts",
    params(("username" = String, Path, description = "The account")),
    responses((status = 204, description = "Deleted, with its tokens"),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 403, description = "Needs the admin role", body = ErrorBody),
              (status = 404, description = "No such account", body = ErrorBody),
              (status = 409, description = "The last admin cannot be deleted", body = ErrorBody)))]
pub async fn delete_user(
    State(ctl): Ctl,
    Path(username): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let who = caller(&ctl, &headers).await?;
    who.require(Role::Admin)?;
    let users = ctl.store.users().await?;
    let Some(target) = users.iter().find(|u| u.username == username) else {
        return Err(ApiError::NotFound(format!("no account {username:?}")));
    };
    if target.role == "admin" && users.iter().filter(|u| u.role == "admin").count() == 1 {
        return Err(ApiError::Conflict(
            "this is the last admin account; make another admin first".to_owned(),
        ));
    }
    ctl.store.delete_user(&who.username, &username).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "accounts",
    responses((status = 200, description = "The caller's API tokens (never their secrets)", body = Vec<TokenOut>),
              (status = 401, description = "Not logged in", body = ErrorBody)))]
pub async fn list_tokens(State(ctl): Ctl, headers: HeaderMap) -> ApiResult<Json<Vec<TokenOut>>> {
    let who = caller(&ctl, &headers).await?;
    Ok(Json(
        ctl.store
            .tokens(&who.username)
            .await?
            .into_iter()
            .map(|t| TokenOut {
                id: t.id,
                name: t.name,
                created_at: t.created_at,
                expires_at: t.expires_at,
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "accounts", request_body = NewToken,
    responses((status = 201, description = "Created; the secret is shown only now", body = NewTokenOut),
              (status = 400, description = "Bad name or expiry", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 415, description = "Not JSON", body = ErrorBody)))]
pub async fn create_token(State(ctl): Ctl, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let who = caller(&ctl, &headers).await?;
    let req: NewToken = json_body(&headers, &body)?;
    if req.name.trim().is_empty() || req.name.len() > 128 {
        return Err(ApiError::BadRequest("name: 1 to 128 characters".to_owned()));
    }
    let ttl = match req.expires_in_days {
        Some(0) | Some(3651..) => {
            return Err(ApiError::BadRequest(
                "expires_in_days: 1 to 3650, or absent for no expiry".to_owned(),
            ));
        }
        Some(d) => Some(std::time::Duration::from_secs(u64::from(d) * 86_400)),
        None => None,
    };
    let (token, secret) = auth::issue(&ctl.store, &who.username, &req.name, "api", ttl).await?;
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(NewTokenOut {
            id: token.id,
            name: token.name,
            token: secret,
            expires_at: token.expires_at,
        }),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "accounts",
    params(("id" = String, Path, description = "The token's id")),
    responses((status = 204, description = "Revoked"),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 404, description = "No such token of the caller", body = ErrorBody)))]
pub async fn delete_token(
    State(ctl): Ctl,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let who = caller(&ctl, &headers).await?;
    ctl.store.delete_token(&who.username, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
