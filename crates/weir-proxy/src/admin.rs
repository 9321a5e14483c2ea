//! The admin listener: `/metrics` (Prometheus text), `/healthz`, `/livez`, `/readyz`, and
//! the admin API under `/api/` and its console at `/` when the control plane has mounted
//! them (the listener takes no connection before then, so nothing sees a `404` for an API
//! still starting). Runs on the control thread, away from the workers.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use weir_telemetry::metrics::PrometheusHandle;
use weir_upstream::UpstreamKind;

use crate::gateway::Gateway;

/// A response body of the admin listener.
pub type AdminBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The admin API: answers every request under `/api/`.
pub type AdminApi = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<AdminBody>> + Send>>
        + Send
        + Sync,
>;

/// Whether what the node depends on answers: each check's name and its failure.
pub type ReadyCheck = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Vec<(&'static str, Result<(), String>)>> + Send>>
        + Send
        + Sync,
>;

/// How long `/readyz` waits for the checks before it counts them as failed.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the control plane adds to the admin listener once it is up.
#[derive(Default)]
pub struct AdminState {
    api: OnceLock<AdminApi>,
    ready: OnceLock<ReadyCheck>,
    /// An API is to be mounted: connections wait in the backlog until it is.
    pending: std::sync::atomic::AtomicBool,
    mounted: tokio::sync::Notify,
}

impl AdminState {
    /// A state whose listener waits for [`Self::mount`] when `api_to_come`.
    pub fn new(api_to_come: bool) -> Self {
        let s = Self::default();
        s.pending
            .store(api_to_come, std::sync::atomic::Ordering::Relaxed);
        s
    }

    /// Mounts the admin API and the readiness checks; the listener starts taking
    /// connections.
    pub fn mount(&self, api: AdminApi, ready: Option<ReadyCheck>) {
        let _ = self.api.set(api);
        if let Some(r) = ready {
            let _ = self.ready.set(r);
        }
        self.pending
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.mounted.notify_waiters();
    }

    /// The control plane will not come (it failed to start): serve what there is.
    pub fn give_up(&self) {
        self.pending
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.mounted.notify_waiters();
    }

    async fn until_mounted(&self) {
        loop {
            let woken = self.mounted.notified();
            if !self.pending.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            woken.await;
        }
    }
}

pub async fn serve(
    listener: std::net::TcpListener,
    gw: Arc<Gateway>,
    metrics: PrometheusHandle,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        tracing::error!("cannot register the admin listener");
        return;
    };
    tokio::select! {
        _ = state.until_mounted() => {}
        _ = shutdown.changed() => return,
    }
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let gw = Arc::clone(&gw);
        let metrics = metrics.clone();
        let state = Arc::clone(&state);
        let (stream, peer) = stream;
        tokio::spawn(async move {
            let svc = service_fn(move |mut req: Request<Incoming>| {
                // The API limits failed logins per client address too.
                req.extensions_mut().insert(peer);
                let mounted = (!is_node_endpoint(req.uri().path()))
                    .then(|| state.api.get().cloned())
                    .flatten();
                let (gw, metrics, state) = (Arc::clone(&gw), metrics.clone(), Arc::clone(&state));
                async move {
                    let rsp = match mounted {
                        Some(api) => api(req).await,
                        None => route(&req, &gw, &metrics, &state)
                            .await
                            .map(|b| b.map_err(|never| match never {}).boxed_unsync()),
                    };
                    Ok::<_, Infallible>(rsp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The listener's own endpoints; everything else (the API under `/api/`, the console at
/// `/`) belongs to the control plane once it is mounted.
fn is_node_endpoint(path: &str) -> bool {
    matches!(path, "/metrics" | "/healthz" | "/livez" | "/readyz")
}

async fn route(
    req: &Request<Incoming>,
    gw: &Gateway,
    metrics: &PrometheusHandle,
    state: &AdminState,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let snap = gw.snapshot();
            for up in snap.registry.upstreams.values() {
                if let UpstreamKind::Http(shared) = &up.kind {
                    for (addr, healthy) in shared.health_report() {
                        weir_telemetry::metrics::endpoint_health(&up.name, addr, healthy);
                    }
                }
            }
            let mut text = metrics.render();
            weir_telemetry::metrics::render_histograms(&mut text);
            reply(StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        (&Method::GET, "/healthz") => {
            let body =
                serde_json::json!({ "status": "ok", "config_version": gw.version() }).to_string();
            reply(StatusCode::OK, "application/json", body)
        }
        // The process runs and answers: restart it only when this fails.
        (&Method::GET, "/livez") => reply(
            StatusCode::OK,
            "application/json",
            r#"{"status":"alive"}"#.to_owned(),
        ),
        (&Method::GET, "/readyz") => readyz(gw, state).await,
        _ => {
            let body = serde_json::json!({"error": {"type": "not_found", "message": "no such admin endpoint; try /healthz, /livez, /readyz or /metrics"}}).to_string();
            reply(StatusCode::NOT_FOUND, "application/json", body)
        }
    }
}

/// Ready to take traffic: the configuration is loaded, the admin API mounted (taking
/// connections at all means it is), and the store and the event queue answer within
/// [`READY_TIMEOUT`]. `503` with the failing checks otherwise.
async fn readyz(gw: &Gateway, state: &AdminState) -> Response<Full<Bytes>> {
    let mut checks = serde_json::Map::new();
    checks.insert("config".into(), "ok".into());
    let mut ready = true;
    if let Some(check) = state.ready.get() {
        let results = match tokio::time::timeout(READY_TIMEOUT, check()).await {
            Ok(r) => r,
            Err(_) => vec![(
                "dependencies",
                Err(format!("no answer within {} s", READY_TIMEOUT.as_secs())),
            )],
        };
        for (name, r) in results {
            ready &= r.is_ok();
            checks.insert(name.into(), r.err().unwrap_or_else(|| "ok".into()).into());
        }
    }
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "config_version": gw.version(),
        "checks": checks,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply(status, "application/json", body.to_string())
}

fn reply(status: StatusCode, ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}
