//! Wiring of one Weir node, shared by the binary and the integration tests: the data plane
//! (`weir-proxy`), and in front of its admin listener the control plane (`weir-control`)
//! with its store (`weir-store`). No behaviour lives here, only assembly.

pub mod cli;
mod events;
pub mod import;
pub mod login;
pub mod output;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use weir_config::Config;
use weir_control::{Control, Mode, Plane};
use weir_proxy::app::{ReloadSources, Running};
use weir_proxy::gateway::Gateway;

/// The first account, from `WEIR_ADMIN_USER` (default `admin`) and `WEIR_ADMIN_PASSWORD`.
#[derive(Clone, Default)]
pub struct FirstAdmin {
    pub user: Option<String>,
    pub password: Option<String>,
}

impl FirstAdmin {
    pub fn from_env() -> Self {
        Self {
            user: std::env::var("WEIR_ADMIN_USER")
                .ok()
                .filter(|u| !u.is_empty()),
            password: std::env::var("WEIR_ADMIN_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty()),
        }
    }
}

pub struct Node {
    pub running: Running,
    pub control: Option<Arc<Control>>,
    /// The event queue, when topics are declared.
    pub queue: Option<Arc<dyn weir_events::Queue>>,
    /// Ingest into that queue (topic routes and the admin API publish through it).
    pub ingest: Option<Arc<weir_events::ingest::Ingest>>,
    /// The delivery workers, when there is a queue.
    pub deliveries: Option<Arc<weir_events::delivery::Supervisor>>,
}

impl Node {
    pub async fn shutdown(self) {
        self.running.shutdown().await;
        // The call writer flushes its last batch when told to stop; give it that moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(c) = &self.control {
            c.store().close().await;
        }
        if let Some(q) = &self.queue {
            q.close().await;
        }
    }
}

/// Keeps the delivery workers in step with the served configuration (file reloads and
/// admin API changes alike).
async fn follow_subscriptions(
    gateway: Arc<Gateway>,
    sup: Arc<weir_events::delivery::Supervisor>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut changes = gateway.changes();
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = stopping.wait_for(|s| *s) => return,
        }
        let snapshot = gateway.snapshot();
        let (subs, nets) = (
            &snapshot.config.subscriptions,
            &snapshot.config.events.allowed_networks,
        );
        for e in sup.reconcile(subs, nets, &|n| std::env::var(n).ok()) {
            tracing::error!(error = %e, "subscription not (re)started; the previous one, if any, keeps running");
        }
    }
}

/// Checks the file's subscriptions and makes their cursors before the first request is
/// served (a broker that refuses one stops the start with its reason); publishes wait
/// for the workers, which find them.
async fn declare_first(
    ingest: &weir_events::ingest::Ingest,
    subs: &[weir_config::SubscriptionConfig],
) -> Result<(), String> {
    for c in subs {
        weir_events::delivery::Subscription::compile(c, &|n| std::env::var(n).ok())?;
    }
    for s in subs {
        let d = weir_events::Declaration {
            name: &s.name,
            topic: &s.topic,
            start: s.start.into(),
            generation: s.generation.0,
        };
        ingest
            .queue()
            .declare(&d)
            .await
            .map_err(|e| format!("subscription {:?}: {e}", s.name))?;
    }
    Ok(())
}

/// Starts a delivery worker per subscription, and the tasks that keep them in step with
/// the configuration and enforce retention.
fn start_deliveries(
    running: &Running,
    ingest: &Arc<weir_events::ingest::Ingest>,
    first: &[weir_config::SubscriptionConfig],
    allowed_networks: &[String],
) -> Result<Arc<weir_events::delivery::Supervisor>, String> {
    let sup = weir_events::delivery::Supervisor::new(Arc::clone(ingest), running.stopping.clone());
    let errors = sup.reconcile(first, allowed_networks, &|n| std::env::var(n).ok());
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    tokio::spawn(follow_subscriptions(
        Arc::clone(&running.gateway),
        Arc::clone(&sup),
        running.stopping.clone(),
    ));
    tokio::spawn(keep_retention(
        Arc::clone(&running.gateway),
        Arc::clone(ingest.queue()),
        running.stopping.clone(),
    ));
    Ok(sup)
}

/// Drops events past their topic's retention: a minute after start, then every ten.
async fn keep_retention(
    gateway: Arc<Gateway>,
    queue: Arc<dyn weir_events::Queue>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        wait = Duration::from_secs(600);
        let topics = gateway.snapshot().config.topics.clone();
        for (name, t) in &topics {
            let before = weir_events::now_ms() - t.retention.get().as_millis() as i64;
            match queue.trim(name, before).await {
                Ok(t) => t.report(name),
                Err(e) => {
                    tracing::warn!(topic = %name, error = %e, "cannot drop events past retention; will try again")
                }
            }
        }
    }
}

/// Opens the configured event queue: the embedded one under `data_dir`, Redis Streams, NATS
/// JetStream or RabbitMQ.
async fn open_queue(config: &Config) -> Result<Arc<dyn weir_events::Queue>, String> {
    let backend = config
        .events
        .backend
        .resolve(&|n| std::env::var(n).ok())
        .map_err(|e| {
            format!("events.backend: {e}: export it with the queue's URL, or write the URL")
        })?;
    if backend == "embedded" {
        let dir = Path::new(&config.data_dir).join("events");
        let q = weir_events::Embedded::open(&dir)
            .await
            .map_err(|e| format!("cannot open the event queue in {}: {e}", dir.display()))?;
        return Ok(Arc::new(q));
    }
    if backend.starts_with("redis://") || backend.starts_with("rediss://") {
        let prefix = format!("{}:{{ev}}:", config.events.namespace);
        let q = weir_events::RedisStreams::open(&backend, &prefix)
            .await
            .map_err(|e| format!("cannot reach the Redis event queue: {e}; check events.backend and that Redis is running"))?;
        return Ok(Arc::new(q));
    }
    if backend.starts_with("nats://") {
        let q = weir_events::NatsJetStream::open(
            &backend,
            &config.events.namespace,
            longest_retention(config),
        )
        .await
        .map_err(|e| format!("cannot reach NATS JetStream: {e}; check events.backend and that nats-server runs with -js"))?;
        return Ok(Arc::new(q));
    }
    if backend.starts_with("amqp://") || backend.starts_with("amqps://") {
        let q = weir_events::RabbitMq::open(&backend, &config.events.namespace, longest_retention(config))
            .await
            .map_err(|e| format!("cannot reach RabbitMQ: {e}; check events.backend (user, password, vhost) and that rabbitmq-server is running"))?;
        return Ok(Arc::new(q));
    }
    Err(format!(
        "events.backend: {backend:?} is not a queue this version can open (embedded, redis://, nats:// or amqp://)"
    ))
}

/// Broker-side logs keep events as long as the longest-lived topic wants them.
fn longest_retention(config: &Config) -> Duration {
    config
        .topics
        .values()
        .map(|t| t.retention.get())
        .max()
        .unwrap_or(Duration::from_secs(7 * 86_400))
}

/// The data plane as the control plane sees it.
struct GatewayPlane(Arc<Gateway>);

impl Plane for GatewayPlane {
    fn check(&self, config: &Config) -> Result<(), Vec<String>> {
        self.0.check(config)
    }
    fn apply(&self, config: Config) -> Result<(), Vec<String>> {
        self.0.apply(config).map(|_| ())
    }
    fn current(&self) -> Config {
        self.0.snapshot().config.clone()
    }
    fn last_reload(&self) -> Option<(i64, String, Vec<String>)> {
        self.0
            .last_reload()
            .map(|r| (r.at, r.cause.to_owned(), r.errors))
    }
    fn targets(&self, upstream: &str) -> Option<Vec<weir_control::TargetHealth>> {
        let report = self.0.endpoint_report(upstream)?;
        Some(
            report
                .into_iter()
                .map(|e| weir_control::TargetHealth {
                    address: e.address,
                    weight: e.weight,
                    healthy: e.healthy,
                    active_check_up: e.active_up,
                    circuit: e.circuit.to_owned(),
                    failures: e.failures,
                    in_flight: e.in_flight as u64,
                })
                .collect(),
        )
    }
}

/// The node's mode, and its store when the admin API is on: the configuration's in
/// database mode (it must open), the accounts' file in `data_dir` in file mode (without
/// it the admin API is off, said once).
async fn open_store(
    config: &Config,
    api: bool,
) -> Result<(Mode, Option<weir_store::Store>), String> {
    let (mode, url) = match &config.store {
        Some(url) => (
            Mode::Database,
            url.resolve(&|n| std::env::var(n).ok())
                .map_err(|e| format!("store: {e}"))?,
        ),
        None => (Mode::File, "sqlite://weir.db".to_owned()),
    };
    if !api {
        return Ok((mode, None));
    }
    match weir_store::Store::open(&url, Path::new(&config.data_dir)).await {
        Ok(s) => Ok((mode, Some(s))),
        Err(e) if mode == Mode::File => {
            tracing::warn!(error = %e, "the admin API is off: its account store cannot be opened (set data_dir to a writable directory)");
            Ok((mode, None))
        }
        Err(e) => Err(format!("cannot open the store: {e}")),
    }
}

/// Starts a node. With `store:` set (database mode) the store holds upstreams, routes,
/// consumers and policy defaults; the file gives this node's own settings (and seeds an
/// empty store). Without it (file mode) the file is the truth and the admin API reads;
/// accounts then live in `data_dir`. `api` mounts the admin API (not for the quick start).
pub async fn start(
    config: Config,
    sources: ReloadSources,
    admin: FirstAdmin,
    api: bool,
) -> Result<Node, String> {
    let api = api && config.listen.admin.is_some();
    let (mode, store) = open_store(&config, api).await?;
    // Database mode starts on what the store holds (the file only seeds an empty store);
    // the store's objects reload from the store, the node's own settings from the file.
    let mut db_reloads = None;
    let (initial, sources) = match (&store, mode) {
        (Some(s), Mode::Database) => {
            let version = s.version().await.map_err(|e| e.to_string())?;
            let initial = if version > 0 {
                let objects = s.objects().await.map_err(|e| e.to_string())?;
                weir_control::assemble(&config, &objects).map_err(|e| e.join("\n  "))?
            } else {
                config.clone()
            };
            // The file still gives this node's own settings: its reloads are wired to the
            // control plane once it exists.
            let file_reloads = FileReloads {
                loader: sources.loader.clone(),
                watch: sources.watch.clone(),
                every: sources.watch_every,
                sighup: sources.sighup,
            };
            db_reloads = Some(file_reloads);
            (initial, ReloadSources::default())
        }
        _ => (config.clone(), sources),
    };
    // Analytics: finished calls go through a bounded channel to a writer that stores them
    // in batches (database mode only; the request path never waits on it).
    let mut sources = sources;
    let calls = match (&store, mode) {
        (Some(_), Mode::Database) if config.analytics.enabled => {
            let (sink, rx) = weir_telemetry::calls::CallSink::new(CALL_QUEUE);
            sources.calls = Some(sink);
            let (ai_sink, ai_rx) = weir_ai::record::RecordSink::new(CALL_QUEUE);
            sources.ai_calls = Some(ai_sink);
            Some((rx, ai_rx))
        }
        _ => None,
    };
    // The event queue, when any topic is declared (or may be, through the admin API).
    let queue = if initial.topics.is_empty() && !(store.is_some() && mode == Mode::Database) {
        None
    } else {
        Some(open_queue(&config).await?)
    };
    let ingest = queue
        .as_ref()
        .map(|q| weir_events::ingest::Ingest::new(Arc::clone(q)));
    sources.ingest = ingest.clone();
    sources.admin_api_to_come = store.is_some();
    if let Some(ingest) = &ingest {
        declare_first(ingest, &initial.subscriptions).await?;
    }
    let first_subscriptions = initial.subscriptions.clone();
    let running = weir_proxy::app::start(initial, sources).map_err(|e| e.to_string())?;
    let deliveries = match &ingest {
        Some(ingest) => Some(start_deliveries(
            &running,
            ingest,
            &first_subscriptions,
            &config.events.allowed_networks,
        )?),
        None => None,
    };
    if let (Some(rx), Some(store)) = (calls, &store) {
        tokio::spawn(write_calls(
            store.clone(),
            rx,
            config.analytics.retention.get(),
            running.stopping.clone(),
        ));
    }
    let Some(store) = store else {
        return Ok(Node {
            running,
            control: None,
            queue,
            ingest,
            deliveries,
        });
    };
    let plane: Arc<dyn Plane> = Arc::new(GatewayPlane(Arc::clone(&running.gateway)));
    let control = Control::new(store, mode, config.clone(), plane);
    control.set_ai(Arc::new(NodeAi(Arc::clone(&running.gateway))));
    if let (Some(ingest), Some(deliveries)) = (&ingest, &deliveries) {
        control.set_events(Arc::new(events::NodeEvents {
            ingest: Arc::clone(ingest),
            deliveries: Arc::clone(deliveries),
            gateway: Arc::clone(&running.gateway),
        }));
    }
    let user = admin.user.as_deref().unwrap_or("admin");
    let first = admin.password.as_deref().map(|p| (user, p));
    if let Err(e) = control.start(&config, first).await {
        running.admin.give_up();
        running.shutdown().await;
        return Err(e.to_string());
    }
    let router = weir_control::router(Arc::clone(&control));
    let mounted: weir_proxy::admin::AdminApi = Arc::new(move |req| {
        let mut router = router.clone();
        Box::pin(async move {
            let rsp = match tower_service::Service::call(&mut router, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            rsp.map(|b| {
                b.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                    .boxed_unsync()
            })
        })
    });
    running.admin.mount(
        mounted,
        Some(ready_check(control.store().clone(), queue.clone())),
    );
    if let Some(r) = db_reloads {
        r.spawn(&running, &control);
    }
    tokio::spawn(Arc::clone(&control).follow(Duration::from_secs(1), running.stopping.clone()));
    tokio::spawn(sweep_sessions(
        control.store().clone(),
        running.stopping.clone(),
    ));
    Ok(Node {
        running,
        control: Some(control),
        queue,
        ingest,
        deliveries,
    })
}

/// Where a database-mode node's file reloads come from (as in file mode).
struct FileReloads {
    loader: Option<weir_proxy::reload::Loader>,
    watch: Option<std::path::PathBuf>,
    every: Option<Duration>,
    sighup: bool,
}

impl FileReloads {
    /// Reloads the node's own settings from its file into the control plane, which adds
    /// the store's objects and swaps the whole configuration.
    fn spawn(self, running: &Running, control: &Arc<Control>) {
        let Some(loader) = self.loader else {
            return;
        };
        let control = Arc::clone(control);
        let apply: weir_proxy::reload::Apply = Arc::new(move |file| {
            let control = Arc::clone(&control);
            Box::pin(async move { control.reload_node(file).await })
        });
        let reloader =
            weir_proxy::reload::Reloader::new(Arc::clone(&running.gateway), loader, apply);
        weir_proxy::reload::spawn(
            &reloader,
            self.watch,
            self.every.unwrap_or(Duration::from_secs(1)),
            self.sighup,
            &running.stopping,
        );
    }
}

/// Drops expired sessions and tokens every ten minutes (they are refused anyway; this
/// keeps the table small).
async fn sweep_sessions(store: weir_store::Store, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = store.sweep_tokens().await {
                    tracing::debug!(error = %e, "cannot sweep expired sessions yet");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Call records waiting to be written; beyond this they are dropped and counted.
const CALL_QUEUE: usize = 65_536;

/// How often waiting call records are written: small batches often, so the writing (which
/// shares the machine's cores with the proxy workers) never holds a core for long.
const WRITE_EVERY: Duration = Duration::from_millis(100);

type CallReceivers = (
    std::sync::mpsc::Receiver<weir_telemetry::calls::CallRecord>,
    std::sync::mpsc::Receiver<weir_ai::usage::CallRecord>,
);

/// Drains call records (every request's, and AI calls') into the store every
/// [`WRITE_EVERY`], in one transaction per batch, and drops records older than the retention every ten
/// minutes.
async fn write_calls(
    store: weir_store::Store,
    (rx, ai_rx): CallReceivers,
    retention: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(WRITE_EVERY);
    let mut prune = tokio::time::interval(Duration::from_secs(600));
    let mut pending: Vec<weir_store::CallRow> = Vec::new();
    let mut ai_pending: Vec<weir_store::AiCallRow> = Vec::new();
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = prune.tick() => {
                let before = (weir_store::now() - retention.as_secs() as i64) * 1000;
                if let Err(e) = store.prune_calls(before).await {
                    tracing::debug!(error = %e, "cannot prune call records yet");
                }
                continue;
            }
            _ = stop.changed() => true,
        };
        take(&ai_rx, &mut ai_pending, ai_row);
        flush(&mut ai_pending, async |rows| {
            store.insert_ai_calls(rows).await
        })
        .await;
        take(&rx, &mut pending, call_row);
        flush(&mut pending, async |rows| store.insert_calls(rows).await).await;
        if stopping {
            return;
        }
    }
}

/// Takes what waits in `rx`, within the bound.
fn take<R, T>(rx: &std::sync::mpsc::Receiver<R>, pending: &mut Vec<T>, row: fn(R) -> T) {
    while pending.len() < CALL_QUEUE
        && let Ok(r) = rx.try_recv()
    {
        pending.push(row(r));
    }
}

/// Writes `pending` with `insert`; while the store is away the rows wait for the next
/// try, within the same bound.
async fn flush<T>(
    pending: &mut Vec<T>,
    insert: impl AsyncFnOnce(&[T]) -> Result<(), weir_store::StoreError>,
) {
    if pending.is_empty() {
        return;
    }
    match insert(pending).await {
        Ok(()) => pending.clear(),
        Err(e) => {
            tracing::debug!(error = %e, records = pending.len(), "cannot store call records yet");
            if pending.len() >= CALL_QUEUE {
                pending.clear();
            }
        }
    }
}

fn call_row(r: weir_telemetry::calls::CallRecord) -> weir_store::CallRow {
    weir_store::CallRow {
        at_ms: r.at_ms,
        route: r.route.to_string(),
        consumer: r.consumer.map(|c| c.to_string()),
        upstream: r.upstream.to_string(),
        status: i64::from(r.status),
        latency_us: r.latency_us as i64,
        bytes_out: r.bytes_out as i64,
    }
}

fn ai_row(r: weir_ai::usage::CallRecord) -> weir_store::AiCallRow {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    weir_store::AiCallRow {
        at_ms: r.at_ms,
        route: r.route,
        consumer: r.consumer.map(|c| c.to_string()),
        key: r.key.map(|k| k.to_string()),
        model: r.model,
        target: r.target,
        status: i64::from(r.status),
        input_tokens: n(r.usage.input),
        cached_tokens: n(r.usage.cached_input),
        output_tokens: n(r.usage.output),
        estimated: r.estimated,
        cost_micro_usd: (r.cost_usd * 1e6).round() as i64,
        latency_ms: n(r.latency_ms),
        ttft_ms: n(r.ttft_ms),
        stream: r.stream,
        fallbacks: i64::from(r.fallbacks),
    }
}

/// The node's AI call records as the admin API reads them (from whichever snapshot's AI
/// plane is live: it outlives reloads).
/// `/readyz`'s checks: the store and the event queue (when there is one) answer.
fn ready_check(
    store: weir_store::Store,
    queue: Option<Arc<dyn weir_events::Queue>>,
) -> weir_proxy::admin::ReadyCheck {
    Arc::new(move || {
        let (store, queue) = (store.clone(), queue.clone());
        Box::pin(async move {
            let mut out = vec![(
                "store",
                store.version().await.map(drop).map_err(|e| e.to_string()),
            )];
            if let Some(q) = queue {
                // Any read that reaches the backend will do: the position of a topic.
                let r = q.latest("weir-readiness").await;
                out.push(("queue", r.map(drop).map_err(|e| e.to_string())));
            }
            out
        })
    })
}

struct NodeAi(Arc<Gateway>);

impl weir_control::ai::AiCalls for NodeAi {
    fn recent(&self, limit: usize) -> Vec<weir_store::AiCallRow> {
        let snap = self.0.snapshot();
        let Some(plane) = &snap.ai_plane else {
            return Vec::new();
        };
        plane
            .recorder
            .recent(limit)
            .into_iter()
            .map(ai_row)
            .collect()
    }
}
