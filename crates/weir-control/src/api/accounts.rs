//! Accounts: login and logout (sessions), users and their roles, named API tokens.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Ctl, ErrorBody, caller, json_body};
use crate::assemble;
use crate::auth::{self, Role};
use crate::error::{ApiError, ApiResult};

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
    /// Unix seconds: the idle limit, which slides with use (never past the absolute one).
    pub expires_at: i64,
    /// Send as `X-CSRF-Token` with every write made on the session cookie.
    pub csrf_token: String,
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
    open_session(&ctl, user, &headers).await
}

/// A new session for `user`: the login answer, with its cookie. `Secure` when the request
/// came through TLS (`X-Forwarded-Proto: https` from the proxy in front; a forged header
/// only makes the forger's own cookie stricter).
async fn open_session(
    ctl: &crate::Control,
    user: weir_store::User,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let (token, secret) = auth::issue(
        &ctl.store,
        &user.username,
        "login",
        "session",
        Some(ctl.sessions.idle),
    )
    .await?;
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    let cookie = format!(
        "{}={secret}; Path=/api; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        auth::SESSION_COOKIE,
        ctl.sessions.absolute.as_secs()
    );
    let body = LoginResponse {
        csrf_token: auth::csrf_token(&secret),
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

fn over_tls(headers: &HeaderMap) -> bool {
    let proto = |v: &HeaderValue| {
        v.to_str()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("https")
    };
    headers.get("x-forwarded-proto").is_some_and(proto)
        || headers
            .get(header::FORWARDED)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split([';', ','])
                    .filter_map(|kv| kv.trim().split_once('='))
                    .any(|(k, v)| {
                        k.eq_ignore_ascii_case("proto")
                            && v.trim_matches('"').eq_ignore_ascii_case("https")
                    })
            })
}

#[derive(Serialize, ToSchema)]
pub struct SetupState {
    /// No account exists yet: create the first admin with the setup token.
    pub needed: bool,
    /// Where the token is (in `data_dir`, readable only by Weir's user).
    pub token_file: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct SetupRequest {
    /// The one-time token from the setup-token file in `data_dir`.
    pub token: String,
    pub username: String,
    /// At least 12 characters.
    pub password: String,
}

#[utoipa::path(get, path = "/api/v1/setup", tag = "auth", security(()),
    responses((status = 200, description = "Whether the first admin is still to be created", body = SetupState)))]
pub async fn setup_state(State(ctl): Ctl) -> ApiResult<Json<SetupState>> {
    // An account made meanwhile another way (the CLI, another node) ends the setup.
    if ctl.setup.needed() && ctl.store.user_count().await? > 0 {
        ctl.setup
            .discard(std::path::Path::new(&ctl.base().data_dir));
    }
    let file = ctl.setup.file();
    Ok(Json(SetupState {
        needed: file.is_some(),
        token_file: file.map(|p| p.display().to_string()),
    }))
}

#[utoipa::path(post, path = "/api/v1/setup", tag = "auth", request_body = SetupRequest, security(()),
    responses(
        (status = 200, description = "The first admin is created and logged in; the token is spent", body = LoginResponse),
        (status = 400, description = "Bad user name or password", body = ErrorBody),
        (status = 401, description = "Wrong setup token", body = ErrorBody),
        (status = 409, description = "An account exists already: log in", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many wrong tokens", body = ErrorBody),
    ))]
pub async fn setup(
    State(ctl): Ctl,
    peer: Option<axum::Extension<std::net::SocketAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let req: SetupRequest = json_body(&headers, &body)?;
    let _one = ctl.setup.lock.lock().await;
    if !ctl.setup.needed() || ctl.store.user_count().await? > 0 {
        return Err(ApiError::Conflict(
            "an account exists already: log in (POST /api/v1/login)".to_owned(),
        ));
    }
    let keys: Vec<(String, u32)> = peer
        .map(|axum::Extension(a)| vec![(format!("a:{}", a.ip()), auth::MAX_FAILURES_USER)])
        .unwrap_or_default();
    ctl.logins.check(&keys)?;
    if !ctl.setup.matches(req.token.trim()) {
        ctl.logins.failed(&keys);
        return Err(ApiError::Unauthorized(
            "wrong setup token: copy it from the setup-token file in data_dir (Weir logged its path)",
        ));
    }
    assemble::check_name(&req.username)
        .map_err(|e| ApiError::BadRequest(e.replacen("name", "username", 1)))?;
    auth::check_password(&req.password)?;
    let hash = auth::hash_password(req.password).await?;
    let user = ctl
        .store
        .create_user("setup", &req.username, &hash, Role::Admin.as_str())
        .await?;
    ctl.setup.done();
    tracing::info!(user = %user.username, "created the first admin with the setup token");
    open_session(&ctl, user, &headers).await
}

#[derive(Serialize, ToSchema)]
pub struct SessionInfo {
    pub username: String,
    /// `admin`, `editor` or `viewer`.
    pub role: String,
    /// `file` (read-only) or `database`.
    pub mode: String,
    /// Send as `X-CSRF-Token` with writes made on the session cookie.
    pub csrf_token: String,
    /// What an operator should fix (an admin listener open to the network over plain
    /// HTTP, say).
    pub warnings: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/session", tag = "auth",
    responses((status = 200, description = "Who is logged in, and the token writes need", body = SessionInfo),
              (status = 401, description = "Not logged in", body = ErrorBody)))]
pub async fn session(State(ctl): Ctl, headers: HeaderMap) -> ApiResult<Response> {
    let who = caller(&ctl, &headers).await?;
    let secret = auth::presented(&headers).unwrap_or_default();
    let info = SessionInfo {
        username: who.username,
        role: who.role.as_str().to_owned(),
        mode: match ctl.mode {
            crate::Mode::File => "file",
            crate::Mode::Database => "database",
        }
        .to_owned(),
        csrf_token: auth::csrf_token(&secret),
        warnings: ctl.warnings(),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(info)).into_response())
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

#[derive(Deserialize, ToSchema)]
pub struct RoleChange {
    /// `admin`, `editor` or `viewer`.
    pub role: String,
}

#[utoipa::path(put, path = "/api/v1/users/{username}/role", tag = "accounts", request_body = RoleChange,
    params(("username" = String, Path, description = "The account")),
    responses((status = 200, description = "Changed; the account's sessions are ended", body = UserOut),
              (status = 400, description = "Unknown role", body = ErrorBody),
              (status = 401, description = "Not logged in", body = ErrorBody),
              (status = 403, description = "Needs the admin role", body = ErrorBody),
              (status = 404, description = "No such account", body = ErrorBody),
              (status = 409, description = "The last admin cannot lose the role", body = ErrorBody),
              (status = 415, description = "Not JSON", body = ErrorBody)))]
pub async fn set_role(
    State(ctl): Ctl,
    Path(username): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<UserOut>> {
    let who = caller(&ctl, &headers).await?;
    who.require(Role::Admin)?;
    let req: RoleChange = json_body(&headers, &body)?;
    let role = Role::parse(&req.role)
        .ok_or_else(|| ApiError::BadRequest("role: one of admin, editor, viewer".to_owned()))?;
    let users = ctl.store.users().await?;
    let Some(target) = users.iter().find(|u| u.username == username) else {
        return Err(ApiError::NotFound(format!("no account {username:?}")));
    };
    // The same role again changes nothing, and ends no session.
    if target.role == role.as_str() {
        return Ok(Json(UserOut {
            username,
            role: target.role.clone(),
            created_at: target.created_at,
        }));
    }
    let admins = users.iter().filter(|u| u.role == "admin").count();
    if target.role == "admin" && role != Role::Admin && admins == 1 {
        return Err(ApiError::Conflict(
            "this is the last admin account; make another admin first".to_owned(),
        ));
    }
    ctl.store
        .set_role(&who.username, &username, role.as_str())
        .await?;
    Ok(Json(UserOut {
        username,
        role: role.as_str().to_owned(),
        created_at: target.created_at,
    }))
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
