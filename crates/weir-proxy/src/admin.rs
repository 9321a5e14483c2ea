//! The admin listener: `/metrics` (Prometheus text), `/healthz`, and the admin API under
//! `/api/` when the control plane has mounted one. Runs on the control thread, away from
//! the workers.

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

pub async fn serve(
    listener: std::net::TcpListener,
    gw: Arc<Gateway>,
    metrics: PrometheusHandle,
    api: Arc<OnceLock<AdminApi>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        tracing::error!("cannot register the admin listener");
        return;
    };
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let gw = Arc::clone(&gw);
        let metrics = metrics.clone();
        let api = Arc::clone(&api);
        let (stream, peer) = stream;
        tokio::spawn(async move {
            let svc = service_fn(move |mut req: Request<Incoming>| {
                // The API limits failed logins per client address too.
                req.extensions_mut().insert(peer);
                let mounted = req
                    .uri()
                    .path()
                    .starts_with("/api/")
                    .then(|| api.get().cloned())
                    .flatten();
                let built_in = mounted.is_none().then(|| route(&req, &gw, &metrics));
                async move {
                    let rsp = match (mounted, built_in) {
                        (Some(api), _) => api(req).await,
                        (None, Some(rsp)) => {
                            rsp.map(|b| b.map_err(|never| match never {}).boxed_unsync())
                        }
                        (None, None) => Response::new(
                            Full::new(Bytes::new())
                                .map_err(|never| match never {})
                                .boxed_unsync(),
                        ),
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

fn route(
    req: &Request<Incoming>,
    gw: &Gateway,
    metrics: &PrometheusHandle,
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
        _ => {
            let body = serde_json::json!({"error": {"type": "not_found", "message": "no such admin endpoint; try /healthz or /metrics"}}).to_string();
            reply(StatusCode::NOT_FOUND, "application/json", body)
        }
    }
}

fn reply(status: StatusCode, ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}
