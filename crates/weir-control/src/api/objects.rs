//! Configuration objects: upstreams, routes, consumers (and their credentials),
//! certificates, policy defaults, and the declarative apply of a whole configuration.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weir_store::{Change, Object};

use super::{Ctl, ErrorBody, caller, check_kind, etag, if_match, json_body, page_params};
use crate::assemble::{self, DEFAULTS_KIND, DEFAULTS_NAME};
use crate::auth::{self, Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::{Control, Mode};

#[derive(Serialize, ToSchema)]
pub struct ObjectPage {
    /// Objects in their configuration shapes, each with its `name`.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Value>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PolicyDefaults {
    /// Policies every route runs unless it has one of the same kind.
    #[schema(value_type = Vec<weir_config::PolicyConfig>)]
    pub policies: Vec<serde_json::Value>,
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
    request_body(content = weir_config::Config, description = "A whole configuration in its YAML shape (as JSON). Its upstreams, routes, consumers and policy_defaults become the stored ones: missing objects are deleted. Node settings (listen, workers, limits) are not changed here."),
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
        // The node's own topics and subscriptions (from its file) come back in an export;
        // they stay the node's, not objects of the store.
        if assemble::NODE_KINDS.contains(&kind.as_str()) && node_owns(&ctl.base(), &kind, &name) {
            continue;
        }
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
    ctl.check_objects(&would_be).map_err(ApiError::Invalid)?;
    if !dry_run && !changes.is_empty() {
        let (version, _) = ctl.commit(&who.username, changes).await?;
        plan.applied = true;
        plan.version = Some(version);
    }
    Ok(Json(plan))
}

fn node_owns(base: &weir_config::Config, kind: &str, name: &str) -> bool {
    match kind {
        "topics" => base.topics.contains_key(name),
        "subscriptions" => base.subscriptions.iter().any(|s| s.name == name),
        _ => crate::ai_objects::node_owns(base, kind, name),
    }
}

/// Objects of a kind as the API shows them: from the store (database mode) or from the
/// running configuration (file mode, where revisions are the gateway's version).
async fn objects_of_kind(ctl: &Control, kind: &str) -> ApiResult<Vec<Object>> {
    match ctl.mode {
        Mode::Database => Ok(ctl.store.list(kind, None, i64::MAX).await?),
        Mode::File => Ok(
            assemble::shown_config(&ctl.plane.current(), assemble::objects_of)
                .into_iter()
                .filter(|(k, _, _)| k == kind)
                .map(|(kind, name, body)| Object {
                    kind,
                    name,
                    body,
                    revision: 0,
                    updated_at: 0,
                })
                .collect(),
        ),
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
    let mut shown = assemble::shown(&obj.kind, obj.body);
    // A subscription comes with how it runs on this node (as GET
    // /api/v1/events/subscriptions/{name} gives it); writes ignore `status`.
    if kind == "subscriptions"
        && let Some(events) = ctl.events.get()
        && let Ok(state) = events.subscription(name).await
        && let (Some(map), Ok(state)) = (shown.as_object_mut(), serde_json::to_value(state))
    {
        map.insert("status".to_owned(), state);
    }
    Ok(([(header::ETAG, etag(obj.revision))], Json(shown)).into_response())
}

/// Writes one object (created, or replaced when `create_only` is false) as the caller;
/// returns it as stored.
async fn put_one(
    ctl: &Control,
    who: &Caller,
    kind: &str,
    name: String,
    body: serde_json::Value,
    create_only: bool,
    if_match: Option<i64>,
) -> ApiResult<Option<Object>> {
    let change = Change::Put {
        kind: kind.to_owned(),
        name,
        body,
        create_only,
        if_match,
    };
    let (_, objs) = ctl.commit(&who.username, vec![change]).await?;
    Ok(objs.into_iter().next())
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
    let obj = put_one(&ctl, &who, &kind, name, body, true, None).await?;
    Ok(written(StatusCode::CREATED, obj))
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
    let obj = put_one(&ctl, &who, &kind, name, body, false, if_match(&headers)?).await?;
    Ok(written(StatusCode::OK, obj))
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
    /// `key`: the API key (stored as its SHA-256), or `env:NAME` / `file:PATH`; left
    /// out, Weir issues one and answers it once, as `issued_key`.
    pub key: Option<String>,
    /// `key`: the AI models the key may use (any when left out).
    pub models: Option<Vec<String>>,
    /// `key`: what call records and per-key limits call it (letters, digits, `.`, `_`,
    /// `-`); left out, `sha256:` and the first twelve hex digits of its digest.
    pub name: Option<String>,
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
    let obj_body = assemble::shown("consumers", obj.body);
    let list: Vec<Credential> = obj_body["credentials"]
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
    responses((status = 201, description = "Added and applied; the consumer's new state (with `issued_key`, shown this once, when Weir issued the key)", body = Object),
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
    let mut issued = None;
    let credential = match req.kind.as_str() {
        "key" => {
            let key = match req.key.clone().filter(|k| !k.is_empty()) {
                Some(k) => k,
                None => {
                    let k = auth::new_secret("sk-weir-")?;
                    issued = Some(k.clone());
                    k
                }
            };
            let mut c = serde_json::json!({ "type": "key", "key": key });
            if let Some(m) = req.models.clone().filter(|m| !m.is_empty()) {
                c["models"] = serde_json::json!(m);
            }
            if let Some(n) = req.name.clone() {
                c["name"] = serde_json::json!(n);
            }
            c
        }
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
    let obj = put_one(&ctl, &who, "consumers", name, body, false, Some(expected)).await?;
    match (issued, obj) {
        // The issued key is shown this once; only its digest is kept.
        (Some(key), Some(o)) => {
            let mut shown = assemble::shown(&o.kind, o.body);
            shown["issued_key"] = serde_json::Value::String(key);
            Ok((
                StatusCode::CREATED,
                [(header::ETAG, etag(o.revision))],
                Json(shown),
            )
                .into_response())
        }
        (_, obj) => Ok(written(StatusCode::CREATED, obj)),
    }
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
    put_one(&ctl, &who, "consumers", name, body, false, Some(expected)).await?;
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
            assemble::shown_config(&ctl.plane.current(), |c| {
                serde_json::to_value(&c.policy_defaults)
            })
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
    let name = DEFAULTS_NAME.to_owned();
    let obj = put_one(
        &ctl,
        &who,
        DEFAULTS_KIND,
        name,
        body,
        false,
        if_match(&headers)?,
    )
    .await?;
    Ok(written(StatusCode::OK, obj))
}
