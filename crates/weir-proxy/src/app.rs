//! Assembles a running gateway from a configuration: binds the listeners, starts the
//! workers, the admin listener and the reload sources, and stops them all on shutdown.
//! The binary and the integration tests both start Weir through here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weir_config::Config;

use crate::gateway::Gateway;
use crate::reload::{self, Loader};
use crate::server::{self, Listeners, Workers};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    #[error("cannot listen on {addr} ({what}): {source}; is another process using it? Change listen.{what} or set WEIR_LISTEN_{}", what.to_uppercase())]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start worker threads: {0}")]
    Workers(std::io::Error),
}

/// Where reloads come from, for file mode.
#[derive(Clone, Default)]
pub struct ReloadSources {
    /// Re-reads the configuration (file plus environment overrides).
    pub loader: Option<Loader>,
    /// Watched for changes when set.
    pub watch: Option<PathBuf>,
    pub watch_every: Option<Duration>,
    pub sighup: bool,
    /// Where finished calls are recorded for analytics (off when absent).
    pub calls: Option<weir_telemetry::calls::CallSink>,
    /// Where AI call records go for analytics (off when absent).
    pub ai_calls: Option<weir_ai::record::RecordSink>,
    /// The node's ingest (and its event queue) topic routes publish through (topic routes
    /// are refused without one).
    pub ingest: Option<Arc<weir_events::ingest::Ingest>>,
    /// A control plane will mount the admin API: the admin listener waits for it.
    pub admin_api_to_come: bool,
}

pub struct Running {
    pub gateway: Arc<Gateway>,
    /// Where the control plane mounts the admin API (served under `/api/`) and readiness.
    pub admin: Arc<crate::admin::AdminState>,
    /// Fires when Weir shuts down, for tasks started beside it.
    pub stopping: watch::Receiver<bool>,
    pub proxy_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub tls_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    workers: Workers,
}

/// Starts Weir on the current Tokio runtime (which runs the admin listener, health checks
/// and reload watchers); traffic is served by dedicated worker threads.
pub fn start(config: Config, sources: ReloadSources) -> Result<Running, StartError> {
    let workers = config.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let metrics = weir_telemetry::metrics::install();
    let proxy = server::bind(&config.listen.proxy).map_err(|source| StartError::Bind {
        what: "proxy",
        addr: config.listen.proxy.clone(),
        source,
    })?;
    let tls = match &config.listen.tls {
        Some(t) => Some(server::bind(&t.address).map_err(|source| StartError::Bind {
            what: "tls",
            addr: t.address.clone(),
            source,
        })?),
        None => None,
    };
    let admin = match &config.listen.admin {
        Some(a) => Some(server::bind(a).map_err(|source| StartError::Bind {
            what: "admin",
            addr: a.clone(),
            source,
        })?),
        None => None,
    };
    let gateway = Gateway::new(
        config,
        workers,
        crate::gateway::Recording {
            calls: sources.calls.clone(),
            ai: sources.ai_calls.clone(),
        },
        sources.ingest.clone(),
    )
    .map_err(StartError::Config)?;
    let local = |l: &std::net::TcpListener| l.local_addr().ok();
    let proxy_addr = local(&proxy).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let tls_addr = tls.as_ref().and_then(local);
    let admin_addr = admin.as_ref().and_then(local);
    let (tx, rx) = watch::channel(false);
    let listeners = Listeners { proxy, tls };
    let shed = crate::overload::spawn(Arc::clone(&gateway), rx.clone());
    let workers = Workers::start(Arc::clone(&gateway), &listeners, rx.clone(), shed)
        .map_err(StartError::Workers)?;
    // Histogram samples are buffered until drained; drain them on a timer so memory stays
    // bounded even when nobody scrapes /metrics.
    let upkeep = metrics.clone();
    let mut upkeep_stop = rx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => upkeep.run_upkeep(),
                _ = upkeep_stop.changed() => return,
            }
        }
    });
    let admin_state = Arc::new(crate::admin::AdminState::new(sources.admin_api_to_come));
    if let Some(a) = admin {
        tokio::spawn(crate::admin::serve(
            a,
            Arc::clone(&gateway),
            metrics,
            Arc::clone(&admin_state),
            rx.clone(),
        ));
    }
    if let Some(loader) = sources.loader {
        let reloader = reload::Reloader::file_mode(Arc::clone(&gateway), loader);
        let every = sources.watch_every.unwrap_or(Duration::from_secs(1));
        reload::spawn(&reloader, sources.watch, every, sources.sighup, &rx);
    }
    Ok(Running {
        gateway,
        admin: admin_state,
        stopping: rx.clone(),
        proxy_addr,
        admin_addr,
        tls_addr,
        shutdown: tx,
        workers,
    })
}

impl Running {
    /// Stops accepting, lets in-flight requests finish up to `shutdown_timeout`, and
    /// returns when every worker has stopped.
    pub async fn shutdown(self) {
        self.gateway.close_streams();
        let _ = self.shutdown.send(true);
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || workers.join()).await;
        // Every request has ended: the access log's last lines go out before Weir does.
        let log = self.gateway.snapshot().access_log.clone();
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
    }
}
