//! The gateway's live state and the one reload path: every change (start-up, file watch,
//! SIGHUP, the admin API) is validated, compiled against the previous snapshot, and published with a
//! single atomic swap. A failed reload keeps the old snapshot and returns every error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use weir_config::Config;

use crate::snapshot::Snapshot;
use crate::tls::CertResolver;

/// Where finished calls are recorded for analytics: every request, and AI calls with
/// their tokens and cost (each off when absent).
#[derive(Clone, Default, Debug)]
pub struct Recording {
    pub calls: Option<weir_telemetry::calls::CallSink>,
    pub ai: Option<weir_ai::record::RecordSink>,
}

pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    /// Serializes reloads so two changes never compile against the same predecessor.
    reload: Mutex<()>,
    version: AtomicU64,
    workers: usize,
    tls: Option<Arc<CertResolver>>,
    /// Where routes record finished calls (analytics), when it is on.
    recording: Recording,
    /// The ingest (and event queue) topic routes publish through.
    ingest: Option<Arc<weir_events::ingest::Ingest>>,
    /// The version of every snapshot published, for tasks that follow the configuration
    /// (delivery workers).
    changes: tokio::sync::watch::Sender<u64>,
    /// Set at shutdown: open event streams end, so connections can drain.
    closing: tokio::sync::watch::Sender<bool>,
    /// The last reload of the node's file (or SIGHUP), for the admin API.
    last_reload: Mutex<Option<ReloadNote>>,
}

/// How the last reload went: when, why, and every error if it was refused.
#[derive(Debug, Clone)]
pub struct ReloadNote {
    /// Unix seconds.
    pub at: i64,
    /// `file changed` or `SIGHUP`.
    pub cause: &'static str,
    /// Empty when the new configuration is served.
    pub errors: Vec<String>,
}

impl Gateway {
    /// Compiles the first configuration ("reload from empty"). Must run inside a Tokio
    /// runtime that outlives the gateway: active health checks are spawned on it.
    pub fn new(
        config: Config,
        workers: usize,
        recording: Recording,
        ingest: Option<Arc<weir_events::ingest::Ingest>>,
    ) -> Result<Arc<Self>, Vec<String>> {
        let tls = match &config.listen.tls {
            Some(t) => Some(CertResolver::new(&t.certificates).map_err(|e| vec![e])?),
            None => None,
        };
        let closing = tokio::sync::watch::Sender::new(false);
        let (snap, fresh) = Snapshot::compile(
            config,
            1,
            None,
            workers,
            &recording,
            ingest.as_ref(),
            &closing.subscribe(),
        )?;
        fresh.iter().for_each(weir_upstream::spawn_active_checks);
        weir_telemetry::metrics::config_version(1);
        Ok(Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snap),
            reload: Mutex::new(()),
            version: AtomicU64::new(1),
            workers,
            tls,
            recording,
            ingest,
            changes: tokio::sync::watch::Sender::new(1),
            closing,
            last_reload: Mutex::new(None),
        }))
    }

    /// Ends every open event stream (at shutdown, before connections drain).
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Fires after each new snapshot is published.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The current snapshot; hold it for the whole request.
    #[inline]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Records a reload's outcome (the admin API's status shows the last one).
    pub fn note_reload(&self, cause: &'static str, errors: Vec<String>) {
        *self.last_reload.lock() = Some(ReloadNote {
            at: weir_core::time::unix_seconds(),
            cause,
            errors,
        });
    }

    pub fn last_reload(&self) -> Option<ReloadNote> {
        self.last_reload.lock().clone()
    }

    /// An HTTP upstream's endpoints as they stand now (`None`: no such HTTP upstream).
    pub fn endpoint_report(&self, upstream: &str) -> Option<Vec<EndpointReport>> {
        let snap = self.snapshot();
        let up = snap.registry.upstreams.get(upstream)?;
        let weir_upstream::UpstreamKind::Http(shared) = &up.kind else {
            return None;
        };
        Some(
            shared
                .endpoints()
                .iter()
                .map(|e| EndpointReport {
                    address: e.address.to_string(),
                    weight: e.weight,
                    healthy: e.is_healthy(),
                    active_up: e.is_active_up(),
                    circuit: e.circuit(),
                    failures: e.failures(),
                    in_flight: e.in_flight(),
                })
                .collect(),
        )
    }

    pub fn cert_resolver(&self) -> Option<&Arc<CertResolver>> {
        self.tls.as_ref()
    }

    /// Checks a configuration as [`Gateway::apply`] would (settings that cannot change
    /// live, validation, compilation) without publishing it.
    pub fn check(&self, config: &Config) -> Result<(), Vec<String>> {
        let current = self.snapshot.load_full();
        let errors = Self::fixed_settings(&current.config, config);
        if !errors.is_empty() {
            return Err(errors);
        }
        let errors: Vec<String> = weir_config::validate(config)
            .iter()
            .map(ToString::to_string)
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        Snapshot::compile(
            config.clone(),
            0,
            Some(&current),
            self.workers,
            &Recording::default(),
            self.ingest.as_ref(),
            &self.closing.subscribe(),
        )
        .map(|_| ())
    }

    /// What cannot change while running: listeners and the number of workers.
    fn fixed_settings(old: &Config, config: &Config) -> Vec<String> {
        let mut errors = Vec::new();
        if old.listen.proxy != config.listen.proxy {
            errors.push("listen.proxy: listen addresses cannot change while running; restart Weir to move it".to_owned());
        }
        if old.listen.admin != config.listen.admin {
            errors.push("listen.admin: listen addresses cannot change while running; restart Weir to move it".to_owned());
        }
        match (&old.listen.tls, &config.listen.tls) {
            (None, None) => {}
            (Some(a), Some(b)) if a.address == b.address => {
                if let Err(e) = CertResolver::check(&b.certificates) {
                    errors.push(e);
                }
            }
            _ => errors.push("listen.tls.address: the TLS listener cannot be added, removed or moved while running; restart Weir".to_owned()),
        }
        if old.workers != config.workers {
            errors.push(
                "workers: the number of workers cannot change while running; restart Weir"
                    .to_owned(),
            );
        }
        errors
    }

    /// Applies a new configuration. Returns the new version, or every reason it was refused
    /// (the running configuration stays in place).
    pub fn apply(&self, config: Config) -> Result<u64, Vec<String>> {
        let _guard = self.reload.lock();
        let current = self.snapshot.load_full();
        let mut errors = Self::fixed_settings(&current.config, &config);
        let mut validation: Vec<String> = weir_config::validate(&config)
            .iter()
            .map(ToString::to_string)
            .collect();
        errors.append(&mut validation);
        if !errors.is_empty() {
            weir_telemetry::metrics::reload("rejected");
            return Err(errors);
        }
        let version = self.version.load(Ordering::Relaxed) + 1;
        let tls_files = config.listen.tls.as_ref().map(|t| t.certificates.clone());
        let (snap, fresh) = Snapshot::compile(
            config,
            version,
            Some(&current),
            self.workers,
            &self.recording,
            self.ingest.as_ref(),
            &self.closing.subscribe(),
        )
        .inspect_err(|_| {
            weir_telemetry::metrics::reload("rejected");
        })?;
        if let (Some(resolver), Some(files)) = (&self.tls, tls_files)
            && let Err(e) = resolver.update(&files)
        {
            weir_telemetry::metrics::reload("rejected");
            return Err(vec![e]);
        }
        fresh.iter().for_each(weir_upstream::spawn_active_checks);
        self.snapshot.store(Arc::new(snap));
        self.version.store(version, Ordering::Relaxed);
        self.changes.send_replace(version);
        weir_telemetry::metrics::reload("applied");
        weir_telemetry::metrics::config_version(version);
        Ok(version)
    }
}

/// One endpoint of an upstream as the admin API shows it.
#[derive(Debug, Clone)]
pub struct EndpointReport {
    pub address: String,
    pub weight: u32,
    /// Up by active checks and not cut off by the breaker.
    pub healthy: bool,
    /// The active health checks' verdict (true when none run).
    pub active_up: bool,
    /// `closed`, `open` or `half_open`.
    pub circuit: &'static str,
    pub failures: u32,
    pub in_flight: usize,
}
