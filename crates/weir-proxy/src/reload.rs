//! Sources of configuration change from the node's file: a watch on the file (content
//! compared, so editors that rewrite in place or rename both work) and SIGHUP. Both run
//! the same [`Reloader::reload`]: load, hold the settings only a restart changes, apply.
//! In file mode applying serves the file; in database mode it takes the node's own
//! settings from the file and keeps the store's objects.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weir_config::Config;

use crate::gateway::Gateway;

/// Loads the configuration the same way start-up did (file plus `WEIR_*` overrides).
pub type Loader = Arc<dyn Fn() -> Result<Config, Vec<String>> + Send + Sync>;

/// Serves a freshly loaded configuration, or returns every reason it was refused (the
/// running one then stays).
pub type Apply = Arc<
    dyn Fn(Config) -> Pin<Box<dyn Future<Output = Result<(), Vec<String>>> + Send>> + Send + Sync,
>;

/// One node's way of reloading its file.
#[derive(Clone)]
pub struct Reloader {
    gateway: Arc<Gateway>,
    loader: Loader,
    apply: Apply,
}

impl Reloader {
    /// File mode: the file is the whole configuration.
    pub fn file_mode(gateway: Arc<Gateway>, loader: Loader) -> Self {
        let gw = Arc::clone(&gateway);
        let apply: Apply = Arc::new(move |cfg| {
            let gw = Arc::clone(&gw);
            // Compiling may hash (argon2 decoys) or parse certificates: off the runtime.
            Box::pin(async move {
                tokio::task::spawn_blocking(move || gw.apply(cfg).map(drop))
                    .await
                    .unwrap_or_else(|_| Err(vec!["the reload task failed".to_owned()]))
            })
        });
        Self::new(gateway, loader, apply)
    }

    pub fn new(gateway: Arc<Gateway>, loader: Loader, apply: Apply) -> Self {
        Self {
            gateway,
            loader,
            apply,
        }
    }

    /// Runs one reload and logs its outcome: every error of a refused file, and one
    /// warning naming the edited settings that wait for a restart. Returns whether the
    /// new configuration is served.
    pub async fn reload(&self, cause: &'static str) -> bool {
        let loader = Arc::clone(&self.loader);
        let loaded = tokio::task::spawn_blocking(move || loader())
            .await
            .unwrap_or_else(|_| Err(vec!["the reload task failed".to_owned()]));
        let result = match loaded {
            Ok(mut cfg) => {
                let held =
                    weir_config::hold_restart_only(&self.gateway.snapshot().config, &mut cfg);
                if !held.is_empty() {
                    tracing::warn!(
                        cause,
                        settings = %held.join(", "),
                        "these settings changed but take effect only after a restart; the rest of the change is applied"
                    );
                }
                (self.apply)(cfg).await
            }
            Err(e) => {
                // Refusals after loading are counted where the configuration is applied.
                weir_telemetry::metrics::reload("rejected");
                Err(e)
            }
        };
        self.gateway
            .note_reload(cause, result.as_ref().err().cloned().unwrap_or_default());
        match result {
            Ok(()) => {
                tracing::info!(
                    version = self.gateway.version(),
                    cause,
                    "configuration reloaded"
                );
                true
            }
            Err(errors) => {
                tracing::error!(
                    cause,
                    count = errors.len(),
                    "configuration rejected; the previous one stays active"
                );
                for e in errors {
                    tracing::error!("  {e}");
                }
                false
            }
        }
    }
}

/// Polls `path` every `every` and reloads when its content changes.
pub async fn watch_file(
    reloader: Reloader,
    path: PathBuf,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = tokio::fs::read(&path).await.ok();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = tokio::fs::read(&path).await.ok();
        if now.is_some() && now != last && settled(&path, now.as_deref()).await {
            last = now;
            reloader.reload("file changed").await;
        }
    }
}

/// Whether the content just read is whole: not empty, and the same a moment later. A
/// writer that truncates and then writes (most do, `echo > file` included) leaves the file
/// empty or half-written for an instant; served, that instant's configuration would drop
/// every route. The next poll looks again.
async fn settled(path: &std::path::Path, read: Option<&[u8]>) -> bool {
    if read.is_none_or(|c| c.iter().all(u8::is_ascii_whitespace)) {
        tracing::debug!(file = %path.display(), "the configuration file is empty; waiting for its content");
        return false;
    }
    tokio::time::sleep(Duration::from_millis(25)).await;
    tokio::fs::read(path).await.ok().as_deref() == read
}

/// Reloads on every SIGHUP.
#[cfg(unix)]
pub async fn on_sighup(reloader: Reloader, mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload by editing the file instead");
        return;
    };
    loop {
        tokio::select! {
            r = hup.recv() => if r.is_none() { return },
            _ = shutdown.changed() => return,
        }
        reloader.reload("SIGHUP").await;
    }
}

/// Starts the reload sources: the file watch when `watch` is set, and SIGHUP.
pub fn spawn(
    reloader: &Reloader,
    watch: Option<PathBuf>,
    every: Duration,
    sighup: bool,
    shutdown: &watch::Receiver<bool>,
) {
    if let Some(path) = watch {
        tokio::spawn(watch_file(reloader.clone(), path, every, shutdown.clone()));
    }
    #[cfg(unix)]
    if sighup {
        tokio::spawn(on_sighup(reloader.clone(), shutdown.clone()));
    }
    #[cfg(not(unix))]
    let _ = sighup;
}
