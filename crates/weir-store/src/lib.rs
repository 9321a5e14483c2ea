//! Durable state of the control plane: configuration objects (upstreams, routes,
//! consumers, policy defaults) as JSON bodies by kind and name, the configuration version
//! they make up, accounts and their tokens, and the audit log. SQLite (a file, WAL, every
//! commit synced) is the embedded default; Postgres puts several nodes on one state and
//! tells them of each change with `NOTIFY`. The admin API writes here; the data plane never
//! reads here (it gets compiled snapshots).

mod accounts;
mod ai_calls;
mod calls;

pub use ai_calls::{AI_DIMENSIONS, AiCallFilter, AiCallRow, AiUsage};
pub use calls::CallRow;

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::AnyPoolOptions;

/// The channel Postgres nodes hear configuration changes on.
pub const CHANNEL: &str = "weir_config";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    BadUrl(String),
    #[error("the object was changed since revision {expected} (now {actual})")]
    Conflict { expected: i64, actual: i64 },
    #[error("no such object")]
    NotFound,
    #[error("already exists")]
    Exists,
    #[error("the change makes the configuration invalid")]
    Invalid(Vec<String>),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => Self::NotFound,
            other => Self::Unavailable(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A configuration object: its YAML shape as JSON, with the revision that changed it last.
#[derive(Debug, Clone, Serialize)]
pub struct Object {
    pub kind: String,
    pub name: String,
    pub body: serde_json::Value,
    /// The configuration version this object was last written in (its ETag).
    pub revision: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub username: String,
    #[serde(skip)]
    pub password_hash: String,
    pub role: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Token {
    pub id: String,
    pub username: String,
    pub name: String,
    /// `session` (from login) or `api` (named, for automation).
    pub kind: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub kind: String,
    pub name: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub version: i64,
}

/// One change to make in a write transaction.
#[derive(Debug, Clone)]
pub enum Change {
    /// Create (fails if it exists) or replace (`if_match` checks the revision).
    Put {
        kind: String,
        name: String,
        body: serde_json::Value,
        create_only: bool,
        if_match: Option<i64>,
    },
    Delete {
        kind: String,
        name: String,
        if_match: Option<i64>,
    },
}

/// Seconds since the Unix epoch.
pub use weir_core::time::unix_seconds as now;

/// What the audit log keeps of an object body (secrets taken out).
pub type AuditView = fn(&str, serde_json::Value) -> serde_json::Value;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    audit_view: Option<AuditView>,
    /// The URL without credentials, for messages.
    pub display: String,
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("at", &self.display).finish()
    }
}

/// `scheme://host:port/db` without a password, for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// One direct connection before the pool is built: a pool only says "timed out" after
/// retrying for its whole timeout, where one connection tells the cause at once (refused,
/// unknown host, authentication failed).
async fn probe(url: &str) -> std::result::Result<(), String> {
    let direct = <sqlx::AnyConnection as sqlx::Connection>::connect(url);
    match tokio::time::timeout(Duration::from_secs(2), direct).await {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
            Ok(())
        }
        Ok(Err(cause)) => Err(cause.to_string()),
        Err(_) => {
            Err("no answer within 2 s (a wrong host, or a firewall dropping packets)".to_owned())
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store at `url`: `sqlite://PATH` (relative paths are
    /// under `data_dir`) or `postgres://…`. Creates the tables on first use.
    pub async fn open(url: &str, data_dir: &Path) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite://") {
            let path = Path::new(path);
            let path = if path.is_absolute() {
                path.to_path_buf()
            } else {
                data_dir.join(path)
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            (
                Backend::Sqlite,
                format!("sqlite://{}?mode=rwc", path.display()),
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(StoreError::BadUrl(format!(
                "{:?}: expected sqlite://PATH or postgres://USER@HOST:PORT/DB",
                redact(url)
            )));
        };
        let display = redact(&url);
        let mut options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .max_connections(4);
        if backend == Backend::Sqlite {
            // WAL for readers beside the writer; FULL so an acknowledged write survives a
            // crash; a busy timeout for a second process on the same file.
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    for pragma in [
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = FULL",
                        "PRAGMA busy_timeout = 5000",
                        "PRAGMA foreign_keys = ON",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            });
        }
        if backend == Backend::Postgres {
            probe(&url)
                .await
                .map_err(|cause| StoreError::Unavailable(format!("{display}: {cause}")))?;
        }
        let pool = options
            .connect(&url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("{display}: {e}")))?;
        let store = Self {
            pool,
            backend,
            audit_view: None,
            display,
            url,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Passes object bodies through `view` before they enter the audit log (to keep
    /// secrets out of it).
    pub fn with_audit_view(mut self, view: AuditView) -> Self {
        self.audit_view = Some(view);
        self
    }

    /// Closes every connection (waits for the ones in use).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn migrate(&self) -> Result<()> {
        let serial = match self.backend {
            Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Backend::Postgres => "BIGSERIAL PRIMARY KEY",
        };
        let statements = [
            "CREATE TABLE IF NOT EXISTS weir_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)"
                .to_owned(),
            "CREATE TABLE IF NOT EXISTS weir_objects (kind TEXT NOT NULL, name TEXT NOT NULL, \
             body TEXT NOT NULL, revision BIGINT NOT NULL, updated_at BIGINT NOT NULL, \
             PRIMARY KEY (kind, name))"
                .to_owned(),
            "CREATE TABLE IF NOT EXISTS weir_users (username TEXT PRIMARY KEY, \
             password_hash TEXT NOT NULL, role TEXT NOT NULL, created_at BIGINT NOT NULL)"
                .to_owned(),
            "CREATE TABLE IF NOT EXISTS weir_tokens (id TEXT PRIMARY KEY, username TEXT NOT NULL, \
             name TEXT NOT NULL, digest TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, \
             created_at BIGINT NOT NULL, expires_at BIGINT)"
                .to_owned(),
            format!(
                "CREATE TABLE IF NOT EXISTS weir_audit (id {serial}, at BIGINT NOT NULL, \
                 actor TEXT NOT NULL, action TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, \
                 before_body TEXT, after_body TEXT, version BIGINT NOT NULL)"
            ),
            "INSERT INTO weir_meta (key, value) VALUES ('version', 0) ON CONFLICT (key) DO NOTHING"
                .to_owned(),
            "CREATE TABLE IF NOT EXISTS weir_calls (at_ms BIGINT NOT NULL, route TEXT NOT NULL, \
             consumer TEXT, upstream TEXT NOT NULL, status INTEGER NOT NULL, \
             latency_us BIGINT NOT NULL, bytes_out BIGINT NOT NULL)"
                .to_owned(),
            "CREATE INDEX IF NOT EXISTS weir_calls_at ON weir_calls (at_ms)".to_owned(),
            "CREATE TABLE IF NOT EXISTS weir_ai_calls (at_ms BIGINT NOT NULL, route TEXT NOT NULL, \
             consumer TEXT, api_key TEXT, model TEXT NOT NULL, target TEXT NOT NULL, \
             status BIGINT NOT NULL, input_tokens BIGINT NOT NULL, cached_tokens BIGINT NOT NULL, \
             output_tokens BIGINT NOT NULL, estimated BIGINT NOT NULL, \
             cost_micro_usd BIGINT NOT NULL, latency_ms BIGINT NOT NULL, ttft_ms BIGINT NOT NULL, \
             stream BIGINT NOT NULL, fallbacks BIGINT NOT NULL)"
                .to_owned(),
            "CREATE INDEX IF NOT EXISTS weir_ai_calls_at ON weir_ai_calls (at_ms)".to_owned(),
        ];
        for s in statements {
            // Fixed statements: only the id column's type differs by backend.
            sqlx::query(sqlx::AssertSqlSafe(s))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The configuration version: raised by one with every committed change.
    pub async fn version(&self) -> Result<i64> {
        let row = sqlx::query("SELECT value FROM weir_meta WHERE key = 'version'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    /// Every object, by kind and name.
    pub async fn objects(&self) -> Result<Vec<Object>> {
        let rows = sqlx::query(
            "SELECT kind, name, body, revision, updated_at FROM weir_objects ORDER BY kind, name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(object_of).collect()
    }

    /// One page of a kind's objects, by name, after `after`.
    pub async fn list(&self, kind: &str, after: Option<&str>, limit: i64) -> Result<Vec<Object>> {
        let rows = sqlx::query(
            "SELECT kind, name, body, revision, updated_at FROM weir_objects \
             WHERE kind = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(kind)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(object_of).collect()
    }

    pub async fn get(&self, kind: &str, name: &str) -> Result<Option<Object>> {
        let row = sqlx::query(
            "SELECT kind, name, body, revision, updated_at FROM weir_objects \
             WHERE kind = $1 AND name = $2",
        )
        .bind(kind)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(object_of).transpose()
    }

    /// Applies `changes` as one transaction: takes the write lock (the version row), reads
    /// every object, applies the changes, asks `validate` about the whole result, and
    /// commits with the next version and an audit entry per change. Returns the new
    /// version and the objects written (deleted ones absent).
    pub async fn write(
        &self,
        actor: &str,
        changes: &[Change],
        validate: impl FnOnce(&[Object]) -> std::result::Result<(), Vec<String>>,
    ) -> Result<(i64, Vec<Object>)> {
        let mut tx = self.pool.begin().await?;
        // Taking the version row first serializes writers (a row lock in Postgres, the
        // write lock in SQLite), so the validation below sees the state it commits over.
        let version: i64 = sqlx::query(
            "UPDATE weir_meta SET value = value + 1 WHERE key = 'version' RETURNING value",
        )
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let rows = sqlx::query(
            "SELECT kind, name, body, revision, updated_at FROM weir_objects ORDER BY kind, name",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut all: Vec<Object> = rows.iter().map(object_of).collect::<Result<_>>()?;
        let at = now();
        let mut audit = Vec::new();
        let mut written = Vec::new();
        for change in changes {
            match change {
                Change::Put {
                    kind,
                    name,
                    body,
                    create_only,
                    if_match,
                } => {
                    let pos = all.iter().position(|o| o.kind == *kind && o.name == *name);
                    let before = pos.map(|i| all[i].body.clone());
                    match (pos, if_match) {
                        (Some(_), _) if *create_only => return Err(StoreError::Exists),
                        (Some(i), Some(expected)) if all[i].revision != *expected => {
                            return Err(StoreError::Conflict {
                                expected: *expected,
                                actual: all[i].revision,
                            });
                        }
                        (None, Some(_)) => return Err(StoreError::NotFound),
                        _ => {}
                    }
                    let obj = Object {
                        kind: kind.clone(),
                        name: name.clone(),
                        body: body.clone(),
                        revision: version,
                        updated_at: at,
                    };
                    match pos {
                        Some(i) => all[i] = obj.clone(),
                        None => all.push(obj.clone()),
                    }
                    let action = if before.is_some() { "update" } else { "create" };
                    audit.push((action, kind, name, before, Some(body.clone())));
                    written.push(obj);
                }
                Change::Delete {
                    kind,
                    name,
                    if_match,
                } => {
                    let Some(i) = all.iter().position(|o| o.kind == *kind && o.name == *name)
                    else {
                        return Err(StoreError::NotFound);
                    };
                    if let Some(expected) = if_match
                        && all[i].revision != *expected
                    {
                        return Err(StoreError::Conflict {
                            expected: *expected,
                            actual: all[i].revision,
                        });
                    }
                    let old = all.remove(i);
                    audit.push(("delete", kind, name, Some(old.body), None));
                }
            }
        }
        validate(&all).map_err(StoreError::Invalid)?;
        for change in changes {
            match change {
                Change::Put {
                    kind, name, body, ..
                } => {
                    sqlx::query(
                        "INSERT INTO weir_objects (kind, name, body, revision, updated_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, name) DO UPDATE \
                         SET body = excluded.body, revision = excluded.revision, \
                         updated_at = excluded.updated_at",
                    )
                    .bind(kind.as_str())
                    .bind(name.as_str())
                    .bind(body.to_string())
                    .bind(version)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
                Change::Delete { kind, name, .. } => {
                    sqlx::query("DELETE FROM weir_objects WHERE kind = $1 AND name = $2")
                        .bind(kind.as_str())
                        .bind(name.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        for (action, kind, name, before, after) in audit {
            let (before, after) = match self.audit_view {
                Some(view) => (before.map(|b| view(kind, b)), after.map(|a| view(kind, a))),
                None => (before, after),
            };
            sqlx::query(
                "INSERT INTO weir_audit (at, actor, action, kind, name, before_body, after_body, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(at)
            .bind(actor)
            .bind(action)
            .bind(kind.as_str())
            .bind(name.as_str())
            .bind(before.map(|b| b.to_string()))
            .bind(after.map(|b| b.to_string()))
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        if self.backend == Backend::Postgres {
            // Delivered to every listening node when the transaction commits.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(version.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((version, written))
    }

    /// The newest audit entries first, before `before_id` when given.
    pub async fn audit(&self, before_id: Option<i64>, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, kind, name, before_body, after_body, version \
             FROM weir_audit WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let json = |c: &str| -> Result<Option<serde_json::Value>> {
                    r.try_get::<Option<String>, _>(c)?
                        .map(|s| serde_json::from_str::<serde_json::Value>(&s))
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                };
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    kind: r.try_get("kind")?,
                    name: r.try_get("name")?,
                    before: json("before_body")?,
                    after: json("after_body")?,
                    version: r.try_get("version")?,
                })
            })
            .collect()
    }
}

fn object_of(r: &sqlx::any::AnyRow) -> Result<Object> {
    let body: String = r.try_get("body")?;
    Ok(Object {
        kind: r.try_get("kind")?,
        name: r.try_get("name")?,
        body: serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        revision: r.try_get("revision")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Hears configuration changes committed by any node (Postgres `LISTEN`).
pub struct Listener(sqlx::postgres::PgListener);

impl Listener {
    pub async fn connect(store: &Store) -> Result<Self> {
        if store.backend != Backend::Postgres {
            return Err(StoreError::BadUrl(
                "only a Postgres store announces changes".to_owned(),
            ));
        }
        let mut l = sqlx::postgres::PgListener::connect(&store.url).await?;
        l.listen(CHANNEL).await?;
        Ok(Self(l))
    }

    /// The next announced version.
    pub async fn recv(&mut self) -> Result<i64> {
        let n = self.0.recv().await?;
        Ok(n.payload().parse().unwrap_or(0))
    }
}
