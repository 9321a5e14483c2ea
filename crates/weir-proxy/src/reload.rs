//! Sources of configuration change for file mode: a watch on the config file (content
//! compared, so editors that rewrite in place or rename both work) and SIGHUP. Both call
//! the same [`Gateway::apply`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weir_config::Config;

use crate::gateway::Gateway;

/// Loads the configuration the same way start-up did (file plus `WEIR_*` overrides).
pub type Loader = Arc<dyn Fn() -> Result<Config, Vec<String>> + Send + Sync>;

/// Runs one reload and logs its outcome. Returns whether it was applied.
pub fn reload_now(gw: &Gateway, loader: &Loader, cause: &str) -> bool {
    let result = loader().and_then(|cfg| gw.apply(cfg));
    match result {
        Ok(v) => {
            tracing::info!(version = v, cause, "configuration reloaded");
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
            weir_telemetry::metrics::reload("rejected");
            false
        }
    }
}

/// Runs [`reload_now`] on the blocking pool: loading reads files and compiling may hash
/// (argon2 decoys) or parse certificates, which must not stall the control runtime.
async fn reload_off_thread(gw: &Arc<Gateway>, loader: &Loader, cause: &'static str) {
    let (gw, loader) = (Arc::clone(gw), Arc::clone(loader));
    if tokio::task::spawn_blocking(move || reload_now(&gw, &loader, cause))
        .await
        .is_err()
    {
        tracing::error!(
            cause,
            "the reload task failed; the previous configuration stays active"
        );
    }
}

/// Polls `path` every `every` and reloads when its content changes.
pub async fn watch_file(
    gw: Arc<Gateway>,
    path: PathBuf,
    loader: Loader,
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
        if now.is_some() && now != last {
            last = now;
            reload_off_thread(&gw, &loader, "file changed").await;
        }
    }
}

/// Reloads on every SIGHUP.
#[cfg(unix)]
pub async fn on_sighup(gw: Arc<Gateway>, loader: Loader, mut shutdown: watch::Receiver<bool>) {
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
        reload_off_thread(&gw, &loader, "SIGHUP").await;
    }
}
