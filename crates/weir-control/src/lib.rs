//! The control plane: the admin REST API under `/api/v1` (with its OpenAPI document),
//! accounts and sessions, and applying stored configuration to the data plane. It meets the
//! data plane only through [`Plane`]: a `Config` is checked, then published; the gateway
//! compiles it into a snapshot. In database mode the store is the truth and every change
//! goes store → validate → compile → swap; in file mode the file is, and the API reads.

pub mod ai;
mod ai_objects;
mod api;
mod assemble;
mod auth;
mod console;
mod error;
pub mod events;
mod openapi;
mod setup;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use weir_config::Config;
use weir_store::{Change, Store};

pub use api::router;
pub use assemble::{assemble, check_name, name_paths, objects_of};
pub use auth::{Role, check_password, hash_password};
pub use error::ApiError;
pub use openapi::document as openapi_document;

/// What the control plane needs of the data plane.
pub trait Plane: Send + Sync + 'static {
    /// Validates and compiles `config` without publishing it: every reason it would be
    /// refused.
    fn check(&self, config: &Config) -> Result<(), Vec<String>>;
    /// Publishes `config` (validate, compile, one atomic swap).
    fn apply(&self, config: Config) -> Result<(), Vec<String>>;
    /// The configuration being served.
    fn current(&self) -> Config;
    /// An HTTP upstream's endpoints with their live health (`None`: no such upstream here).
    fn targets(&self, upstream: &str) -> Option<Vec<TargetHealth>> {
        let _ = upstream;
        None
    }
    /// The last reload of the node's file: unix seconds, cause, errors (empty: served).
    fn last_reload(&self) -> Option<(i64, String, Vec<String>)> {
        None
    }
}

/// One endpoint of an upstream, live: what the balancer sees now on this node.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TargetHealth {
    pub address: String,
    pub weight: u32,
    /// Taking traffic: up by active checks and not cut off by the breaker.
    pub healthy: bool,
    /// The active health checks' verdict (true when none are configured).
    pub active_check_up: bool,
    /// `closed` (taking traffic), `open` (skipped until its cooldown ends) or `half_open`
    /// (the next request is a trial).
    pub circuit: String,
    /// Failures counted toward opening the breaker.
    pub failures: u32,
    pub in_flight: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The configuration file is the truth; the API reads.
    File,
    /// The store is the truth; the API writes.
    Database,
}

/// The control plane of one node.
pub struct Control {
    pub(crate) store: Store,
    pub(crate) mode: Mode,
    /// This node's own settings (listeners, workers, limits), from its file and
    /// environment; stored objects are added to them. Replaced by [`Control::reload_node`].
    base: parking_lot::RwLock<Arc<Config>>,
    pub(crate) plane: Arc<dyn Plane>,
    /// The store version this node serves (database mode).
    serving: AtomicI64,
    store_ok: AtomicBool,
    store_error: Mutex<Option<String>>,
    /// Serializes applying, so versions are applied in order.
    apply_lock: tokio::sync::Mutex<()>,
    pub(crate) logins: auth::LoginGuard,
    pub(crate) sessions: auth::SessionLimits,
    /// The one-time token that creates the first admin, while no account exists.
    pub(crate) setup: setup::Setup,
    /// The node's event plane, when it has a queue.
    pub(crate) events: std::sync::OnceLock<Arc<dyn events::Events>>,
    pub(crate) ai: std::sync::OnceLock<Arc<dyn ai::AiCalls>>,
}

impl Control {
    pub fn new(store: Store, mode: Mode, base: Config, plane: Arc<dyn Plane>) -> Arc<Self> {
        Arc::new(Self {
            store: store.with_audit_view(assemble::shown),
            mode,
            base: parking_lot::RwLock::new(Arc::new(base)),
            plane,
            serving: AtomicI64::new(0),
            store_ok: AtomicBool::new(true),
            store_error: Mutex::new(None),
            apply_lock: tokio::sync::Mutex::new(()),
            logins: auth::LoginGuard::default(),
            sessions: auth::SessionLimits {
                idle: Duration::from_secs(30 * 60),
                absolute: Duration::from_secs(12 * 3600),
            },
            setup: setup::Setup::default(),
            events: std::sync::OnceLock::new(),
            ai: std::sync::OnceLock::new(),
        })
    }

    /// Gives the admin API the node's event plane (once).
    /// Where the admin API reads AI call records from.
    pub fn set_ai(&self, ai: Arc<dyn ai::AiCalls>) {
        let _ = self.ai.set(ai);
    }

    pub fn set_events(&self, events: Arc<dyn events::Events>) {
        let _ = self.events.set(events);
    }

    /// The node's own settings as last loaded from its file.
    pub(crate) fn base(&self) -> Arc<Config> {
        Arc::clone(&self.base.read())
    }

    /// What an operator should fix, said on the console and in the log at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(addr) = &self.base().listen.admin
            && exposed(addr)
        {
            out.push(format!(
                "the admin listener {addr} is reachable beyond this machine over plain HTTP: passwords and sessions cross the network readable; bind listen.admin to 127.0.0.1, or put a TLS proxy in front and allow only it"
            ));
        }
        out
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The store version this node serves (0 in file mode).
    pub fn serving(&self) -> i64 {
        self.serving.load(Ordering::Relaxed)
    }

    /// The node's configuration made from the store: its own settings plus every object.
    pub async fn stored_config(&self) -> Result<(i64, Config), ApiError> {
        let version = self.store.version().await?;
        let objects = self.store.objects().await?;
        let cfg = assemble(&self.base(), &objects).map_err(ApiError::Invalid)?;
        Ok((version, cfg))
    }

    /// Applies the store's newest version if this node serves an older one. Never blocks
    /// traffic: on any failure the current snapshot stays and the reason is recorded.
    pub async fn sync(&self) -> Result<i64, ApiError> {
        let _guard = self.apply_lock.lock().await;
        let latest = match self.store.version().await {
            Ok(v) => v,
            Err(e) => {
                self.store_down(&e.to_string());
                return Err(e.into());
            }
        };
        self.store_up();
        if latest <= self.serving() {
            return Ok(self.serving());
        }
        let (version, cfg) = self.stored_config().await?;
        match self.plane.apply(cfg) {
            Ok(()) => {
                self.serving.store(version, Ordering::Relaxed);
                tracing::info!(version, "applied configuration from the store");
                Ok(version)
            }
            Err(errors) => {
                tracing::error!(version, errors = ?errors, "the stored configuration was refused; serving the previous one");
                Err(ApiError::Invalid(errors))
            }
        }
    }

    /// Database mode: serves `file` as the node's own settings (from a reload of its file)
    /// with the store's objects, validated and swapped like any change; on any refusal the
    /// running settings stay. The store is read first, so an edit made while it is away
    /// waits for the next reload.
    pub async fn reload_node(&self, file: Config) -> Result<(), Vec<String>> {
        let _guard = self.apply_lock.lock().await;
        let read = async {
            let version = self.store.version().await?;
            Ok::<_, weir_store::StoreError>((version, self.store.objects().await?))
        };
        let (version, objects) = read.await.map_err(|e| {
            vec![format!(
                "the store cannot be read ({e}); the node keeps its running settings: reload again once the store is back"
            )]
        })?;
        let cfg = assemble(&file, &objects)?;
        self.plane
            .apply(cfg.clone())
            .map_err(|e| name_paths(&cfg, e))?;
        *self.base.write() = Arc::new(file);
        self.serving.store(version, Ordering::Relaxed);
        Ok(())
    }

    fn store_down(&self, why: &str) {
        if self.store_ok.swap(false, Ordering::Relaxed) {
            tracing::warn!(store = %self.store.display, error = %why, "configuration store unavailable; traffic continues on the last good configuration");
        }
        *self.store_error.lock() = Some(why.to_owned());
    }

    fn store_up(&self) {
        if !self.store_ok.swap(true, Ordering::Relaxed) {
            tracing::info!(store = %self.store.display, "configuration store reachable again");
        }
        *self.store_error.lock() = None;
    }

    pub(crate) fn store_state(&self) -> (bool, Option<String>) {
        (
            self.store_ok.load(Ordering::Relaxed),
            self.store_error.lock().clone(),
        )
    }

    /// Whether the node's settings plus `objects` make a configuration the data plane
    /// would take: every reason it would not, paths naming the objects.
    pub(crate) fn check_objects(&self, objects: &[weir_store::Object]) -> Result<(), Vec<String>> {
        let cfg = assemble(&self.base(), objects)?;
        self.plane.check(&cfg).map_err(|e| name_paths(&cfg, e))
    }

    /// Commits `changes` if the whole resulting configuration validates and compiles, then
    /// applies it here. Returns the new version and the written objects.
    pub(crate) async fn commit(
        &self,
        actor: &str,
        changes: Vec<Change>,
    ) -> Result<(i64, Vec<weir_store::Object>), ApiError> {
        if self.mode == Mode::File {
            return Err(ApiError::ReadOnly);
        }
        let result = self
            .store
            .write(actor, &changes, |all| self.check_objects(all))
            .await;
        let (version, written) = match result {
            Err(weir_store::StoreError::Unavailable(m)) => {
                self.store_down(&m);
                return Err(ApiError::Unavailable(m));
            }
            other => other?,
        };
        self.sync().await?;
        Ok((version, written))
    }

    /// In database mode: seeds an empty store from the file's objects (once), creates the
    /// first account from the environment, and applies the stored configuration.
    pub async fn start(
        &self,
        file_objects: &Config,
        admin_user: Option<(&str, &str)>,
    ) -> Result<(), ApiError> {
        if let Some((user, password)) = admin_user
            && self.store.user_count().await? == 0
        {
            check_password(password)?;
            let hash = hash_password(password.to_owned()).await?;
            self.store
                .create_user("setup", user, &hash, "admin")
                .await?;
            tracing::info!(user, "created the first account from WEIR_ADMIN_PASSWORD");
        }
        let data_dir = self.base().data_dir.clone();
        if self.store.user_count().await? == 0 {
            self.setup.prepare(std::path::Path::new(&data_dir))?;
        } else {
            self.setup.discard(std::path::Path::new(&data_dir));
        }
        if self.mode == Mode::Database {
            if self.store.version().await? == 0 {
                // Stored as the API would store them: literal API keys as their digests.
                let mut changes: Vec<Change> = Vec::new();
                for (kind, name, body) in objects_of(file_objects) {
                    if assemble::NODE_KINDS.contains(&kind.as_str()) {
                        continue;
                    }
                    let body = match kind.as_str() {
                        "consumers" => {
                            assemble::prepare(&kind, &name, body).map_err(ApiError::Invalid)?
                        }
                        _ => body,
                    };
                    changes.push(Change::Put {
                        kind,
                        name,
                        body,
                        create_only: true,
                        if_match: None,
                    });
                }
                if !changes.is_empty() {
                    let n = changes.len();
                    self.store
                        .write("import", &changes, |all| self.check_objects(all))
                        .await?;
                    tracing::info!(
                        objects = n,
                        "seeded the empty store from the configuration file"
                    );
                }
            } else if !objects_of(file_objects).is_empty() {
                tracing::warn!(
                    "the store holds the configuration: upstreams, routes, consumers and policy defaults in the file are ignored (export with `weir config export`)"
                );
            }
            self.sync().await?;
        }
        Ok(())
    }

    /// Keeps this node on the store's newest version: on each Postgres notification, and
    /// every `every` as a fallback (and for SQLite). Runs until `stop` fires.
    pub async fn follow(
        self: Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        if self.mode != Mode::Database {
            return;
        }
        let mut listener = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if listener.is_none() && self.store.backend() == weir_store::Backend::Postgres {
                listener = match sqlx_listen(&self.store).await {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot listen for configuration changes yet");
                        None
                    }
                };
            }
            let notified = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = notified => {
                    if r.is_err() {
                        listener = None;
                    }
                }
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let _ = self.sync().await;
        }
    }
}

async fn sqlx_listen(store: &Store) -> Result<weir_store::Listener, weir_store::StoreError> {
    weir_store::Listener::connect(store).await
}

/// Whether a listen address takes connections from beyond loopback.
fn exposed(addr: &str) -> bool {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => !a.ip().is_loopback(),
        // A host name: only `localhost` is known to stay on this machine.
        Err(_) => !addr.starts_with("localhost:"),
    }
}
