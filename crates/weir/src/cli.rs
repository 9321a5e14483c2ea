//! The commands that manage a running Weir through its admin API (`weir config …`), and
//! the one that works on the store directly (`weir admin create-user`, for the first
//! account). Plain HTTP/1.1 to the admin listener, which binds to loopback by default.

use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::output::Format;

/// Where the admin API is and how to call it.
pub struct Target {
    /// `http://HOST:PORT`
    pub url: String,
    pub token: Option<String>,
}

impl Target {
    /// `--url`/`WEIR_API_URL`, else the admin listener of `--config`'s file, else
    /// `http://127.0.0.1:9080`.
    pub fn resolve(url: Option<String>, token: Option<String>, config: Option<&Path>) -> Self {
        let url = url.unwrap_or_else(|| {
            config
                .and_then(|p| weir_config::load_file(p).ok())
                .and_then(|c| c.listen.admin)
                .map_or_else(
                    || "http://127.0.0.1:9080".to_owned(),
                    |a| format!("http://{a}"),
                )
        });
        let url = url.trim_end_matches('/').to_owned();
        let token = token.or_else(|| crate::login::saved_token(&url));
        Self { url, token }
    }

    /// One request; `Err` carries a message for the terminal.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), String> {
        match body {
            Some(v) => {
                self.send(
                    method,
                    path,
                    &[("content-type", "application/json")],
                    Bytes::from(v.to_string()),
                )
                .await
            }
            None => self.send(method, path, &[], Bytes::new()).await,
        }
    }

    /// One request with the given headers and raw body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, Value), String> {
        self.exchange(method, path, headers, body)
            .await
            .map(|(status, v, _)| (status, v))
    }

    /// As [`Target::send`], with the answer's `ETag`.
    pub async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, Value, Option<String>), String> {
        let uri: http::Uri = format!("{}{path}", self.url).parse().map_err(|_| {
            format!(
                "{:?} is not a usable API URL (like http://127.0.0.1:9080)",
                self.url
            )
        })?;
        let host = uri.host().ok_or("the API URL names no host")?.to_owned();
        let port = uri.port_u16().unwrap_or(80);
        if uri.scheme_str() != Some("http") {
            return Err(
                "the admin API is plain HTTP on the admin listener: use an http:// URL".to_owned(),
            );
        }
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot reach the admin API at {}: {e}; is Weir running with listen.admin set? (--url or WEIR_API_URL)", self.url))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util_io(stream))
            .await
            .map_err(|e| format!("admin API handshake failed: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(header::HOST, format!("{host}:{port}"));
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("admin API request failed: {e}"))?;
        let status = rsp.status();
        let etag = rsp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Bounded by `Limited`: a configuration export is the largest answer, and 64 MiB
        // is far beyond any.
        #[allow(clippy::disallowed_methods)]
        let bytes = http_body_util::Limited::new(rsp.into_body(), 64 << 20)
            .collect()
            .await
            .map_err(|e| format!("admin API answer cut short or too large: {e}"))?
            .to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value, etag))
    }
}

fn hyper_util_io(s: tokio::net::TcpStream) -> hyper_util::rt::TokioIo<tokio::net::TcpStream> {
    hyper_util::rt::TokioIo::new(s)
}

/// An API error answer as lines for the terminal.
fn report(status: StatusCode, body: &Value) -> ExitCode {
    let msg = body["error"]["message"]
        .as_str()
        .unwrap_or("unexpected answer");
    eprintln!("weir: {msg} ({status})");
    if let Some(errors) = body["error"]["errors"].as_array() {
        for e in errors {
            eprintln!("  {}", e.as_str().unwrap_or(""));
        }
    }
    if status == StatusCode::UNAUTHORIZED {
        eprintln!(
            "  log in with `weir login --username NAME`, or pass an API token (POST /api/v1/tokens) as --token or WEIR_API_TOKEN"
        );
    }
    ExitCode::FAILURE
}

pub async fn export(target: &Target) -> ExitCode {
    match target.call(Method::GET, "/api/v1/config", None).await {
        Ok((StatusCode::OK, cfg)) => match serde_saphyr::to_string(&cfg) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("weir: cannot write YAML: {e}");
                ExitCode::FAILURE
            }
        },
        Ok((status, body)) => report(status, &body),
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

pub async fn apply(target: &Target, file: &Path, dry_run: bool) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("weir: cannot read {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let cfg = match weir_config::from_yaml(&text, &file.display().to_string()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Ok(body) = serde_json::to_value(&cfg) else {
        eprintln!("weir: cannot encode the configuration");
        return ExitCode::FAILURE;
    };
    let path = format!("/api/v1/config?dry_run={dry_run}");
    match target.call(Method::PUT, &path, Some(&body)).await {
        Ok((StatusCode::OK, plan)) => {
            let list = |k: &str| -> Vec<String> {
                plan[k]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for (sign, k) in [("+", "create"), ("~", "update"), ("-", "delete")] {
                for item in list(k) {
                    println!("{sign} {item}");
                }
            }
            let (c, u, d) = (
                list("create").len(),
                list("update").len(),
                list("delete").len(),
            );
            let unchanged = plan["unchanged"].as_u64().unwrap_or(0);
            if dry_run {
                println!(
                    "plan: {c} to create, {u} to update, {d} to delete, {unchanged} unchanged (dry run: nothing applied)"
                );
            } else if plan["applied"].as_bool() == Some(true) {
                println!(
                    "applied: {c} created, {u} updated, {d} deleted, {unchanged} unchanged (version {})",
                    plan["version"]
                );
            } else {
                println!("nothing to change ({unchanged} unchanged)");
            }
            ExitCode::SUCCESS
        }
        Ok((status, body)) => report(status, &body),
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Makes an account directly in the store named by the configuration (for the first one,
/// before any login exists). The password comes from standard input.
pub async fn create_user(config: &Path, username: &str, role: &str) -> ExitCode {
    let cfg = match weir_config::load_file(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::FAILURE;
        }
    };
    if weir_control::check_name(username).is_err() {
        eprintln!("weir: the user name must be 1-128 letters, digits, '-', '_' or '.'");
        return ExitCode::FAILURE;
    }
    if weir_control::Role::parse(role).is_none() {
        eprintln!("weir: --role must be admin, editor or viewer");
        return ExitCode::FAILURE;
    }
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        eprintln!("weir: cannot read the password from standard input");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if let Err(e) = weir_control::check_password(&password) {
        eprintln!("weir: {e}; pipe it in: printf '%s' \"$PW\" | weir admin create-user ...");
        return ExitCode::FAILURE;
    }
    let url = match &cfg.store {
        Some(s) => match s.resolve(&|n| std::env::var(n).ok()) {
            Ok(u) => u,
            Err(e) => {
                eprintln!("weir: store: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => "sqlite://weir.db".to_owned(),
    };
    let store = match weir_store::Store::open(&url, Path::new(&cfg.data_dir)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let hash = match weir_control::hash_password(password).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = store.create_user("cli", username, &hash, role).await;
    store.close().await;
    match result {
        Ok(_) => {
            println!("created {role} account {username:?} in {}", store.display);
            ExitCode::SUCCESS
        }
        Err(weir_store::StoreError::Exists) => {
            eprintln!("weir: an account {username:?} exists already");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What `weir events publish` sends.
pub struct Publish<'a> {
    pub topic: &'a str,
    pub body: Bytes,
    pub content_type: &'a str,
    /// With a type, the event goes as a CloudEvent (binary mode).
    pub ce_type: Option<&'a str>,
    pub ce_source: &'a str,
    pub idempotency_key: Option<&'a str>,
}

/// `weir events publish`: prints the event id (or ids, one per line) on success.
pub async fn publish(target: &Target, p: &Publish<'_>) -> ExitCode {
    let ce_id = weir_events::new_event_id();
    let mut headers: Vec<(&str, &str)> = vec![("content-type", p.content_type)];
    if let Some(ty) = p.ce_type {
        headers.extend([
            ("ce-specversion", "1.0"),
            ("ce-type", ty),
            ("ce-source", p.ce_source),
            ("ce-id", ce_id.as_str()),
        ]);
    }
    if let Some(k) = p.idempotency_key {
        headers.push(("idempotency-key", k));
    }
    let path = format!("/api/v1/topics/{}/events", p.topic);
    match target
        .send(Method::POST, &path, &headers, p.body.clone())
        .await
    {
        Ok((StatusCode::ACCEPTED, v)) => {
            if let Some(id) = v["id"].as_str() {
                println!("{id}");
            }
            for id in v["ids"].as_array().into_iter().flatten() {
                println!("{}", id.as_str().unwrap_or(""));
            }
            ExitCode::SUCCESS
        }
        Ok((status, v)) => report(status, &v),
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `weir events dead-letters|attempts|subscriptions`: prints the API's JSON answer.
/// Prints what `path` answers as `format`, a table showing `columns`.
pub async fn show(target: &Target, path: &str, columns: &[&str], format: Format) -> ExitCode {
    match target.call(Method::GET, path, None).await {
        Ok((StatusCode::OK, v)) => {
            print!("{}", crate::output::render(&v, columns, format));
            ExitCode::SUCCESS
        }
        Ok((status, v)) => report(status, &v),
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `weir keys list`: a consumer's credentials (keys as their digests; never a key).
pub async fn list_keys(target: &Target, consumer: &str, format: Format) -> ExitCode {
    let path = format!("/api/v1/consumers/{consumer}/credentials");
    match target.call(Method::GET, &path, None).await {
        Ok((StatusCode::OK, v)) => {
            let rows: Vec<Value> = v
                .as_array()
                .map(|a| a.iter().map(key_row).collect())
                .unwrap_or_default();
            let cols = ["index", "type", "name", "models", "key_sha256", "reference"];
            print!(
                "{}",
                crate::output::render(&Value::Array(rows), &cols, format)
            );
            ExitCode::SUCCESS
        }
        Ok((status, v)) => report(status, &v),
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One credential as `keys list` shows it: its digest shortened, a reference as written.
fn key_row(item: &Value) -> Value {
    // The API answers each credential flattened, with its `index` beside its fields.
    let c = item;
    let reference = c["key"]
        .as_str()
        .filter(|k| k.starts_with("env:") || k.starts_with("file:"));
    let digest = c["key_sha256"]
        .as_str()
        .map(|d| format!("{}…", &d[..d.len().min(12)]));
    serde_json::json!({
        "index": item["index"],
        "type": c["type"],
        "name": c["name"],
        "models": c["models"],
        "key_sha256": digest,
        "reference": reference,
    })
}

/// `weir keys revoke`: removes one credential of a consumer, named by its position or its
/// `name`. The position is looked up and removed under the consumer's ETag, so a change
/// made meanwhile by someone else is refused (412) instead of removing the wrong key.
pub async fn revoke_key(target: &Target, consumer: &str, which: &str) -> ExitCode {
    let path = format!("/api/v1/consumers/{consumer}/credentials");
    let (list, etag) = match target.exchange(Method::GET, &path, &[], Bytes::new()).await {
        Ok((StatusCode::OK, v, etag)) => (v, etag),
        Ok((status, v, _)) => return report(status, &v),
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let found = list.as_array().and_then(|a| {
        a.iter().find(|i| {
            i["index"].as_u64().map(|n| n.to_string()).as_deref() == Some(which)
                || i["name"].as_str() == Some(which)
        })
    });
    let Some(index) = found.and_then(|i| i["index"].as_u64()) else {
        eprintln!(
            "weir: consumer {consumer:?} has no credential {which:?} (see `weir keys list {consumer}`)"
        );
        return ExitCode::FAILURE;
    };
    let mut headers = Vec::new();
    if let Some(e) = &etag {
        headers.push(("if-match", e.as_str()));
    }
    let path = format!("{path}/{index}");
    match target
        .exchange(Method::DELETE, &path, &headers, Bytes::new())
        .await
    {
        Ok((StatusCode::NO_CONTENT, _, _)) => {
            println!("revoked credential {index} of {consumer}");
            ExitCode::SUCCESS
        }
        Ok((status, v, _)) => report(status, &v),
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `weir events replay`: prints how many deliveries are due again.
pub async fn replay(target: &Target, subscription: &str, what: &Value) -> ExitCode {
    let path = format!("/api/v1/events/subscriptions/{subscription}/replay");
    match target.call(Method::POST, &path, Some(what)).await {
        Ok((StatusCode::OK, v)) => {
            println!("replayed {}", v["replayed"].as_u64().unwrap_or(0));
            ExitCode::SUCCESS
        }
        Ok((status, v)) => report(status, &v),
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `weir events enable`.
pub async fn enable(target: &Target, subscription: &str) -> ExitCode {
    let path = format!("/api/v1/events/subscriptions/{subscription}/enable");
    match target.call(Method::POST, &path, None).await {
        Ok((StatusCode::NO_CONTENT, _)) => {
            println!("enabled {subscription}");
            ExitCode::SUCCESS
        }
        Ok((status, v)) => report(status, &v),
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `weir keys issue`: asks the admin API to issue a key; prints it.
pub async fn issue_key(
    target: &Target,
    consumer: &str,
    models: &[String],
    name: Option<&str>,
) -> ExitCode {
    let mut body = serde_json::json!({ "type": "key" });
    if !models.is_empty() {
        body["models"] = serde_json::json!(models);
    }
    if let Some(n) = name {
        body["name"] = serde_json::json!(n);
    }
    let path = format!("/api/v1/consumers/{consumer}/credentials");
    match target.call(Method::POST, &path, Some(&body)).await {
        Ok((StatusCode::CREATED, v)) => match v["issued_key"].as_str() {
            Some(key) => {
                println!("{key}");
                eprintln!("issued to {consumer}; this is the only time it is shown");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("weir: the admin API added a credential but returned no key");
                ExitCode::FAILURE
            }
        },
        Ok((status, v)) => report(status, &v),
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}
