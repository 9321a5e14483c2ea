//! Active health checks: a background task per upstream that probes each endpoint's health
//! path and flips its verdict after consecutive successes or failures. The task ends by
//! itself once the upstream is no longer in any configuration (its `Weak` dies).

use std::sync::{Arc, Weak};

use http::{Request, Uri};
use weir_config::ActiveHealthConfig;

use crate::{RequestBody, Upstream, UpstreamKind, UpstreamShared};

/// Starts checks for `upstream` on the current runtime if it configures them.
pub fn spawn_active_checks(upstream: &Arc<Upstream>) {
    let (UpstreamKind::Http(shared), Some(cfg)) =
        (&upstream.kind, upstream.config.health.active.clone())
    else {
        return;
    };
    let weak = Arc::downgrade(shared);
    tokio::spawn(run(weak, cfg));
}

async fn run(weak: Weak<UpstreamShared>, cfg: ActiveHealthConfig) {
    let mut counters: Vec<(u32, u32)> = Vec::new();
    let mut tick = tokio::time::interval(cfg.interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(up) = weak.upgrade() else { return };
        counters.resize(up.endpoints.len(), (0, 0));
        let probes = (0..up.endpoints.len()).map(|i| probe(&up, i, &cfg));
        let results = futures_util::future::join_all(probes).await;
        for (i, ok) in results.into_iter().enumerate() {
            let e = &up.endpoints[i];
            let (succ, fail) = &mut counters[i];
            if ok {
                *succ += 1;
                *fail = 0;
                if *succ >= cfg.healthy && e.set_active(true) {
                    tracing::info!(upstream = %up.name, endpoint = %e.address, "endpoint is healthy again");
                    weir_telemetry::metrics::endpoint_health(&up.name, &e.address, true);
                }
            } else {
                *fail += 1;
                *succ = 0;
                if *fail >= cfg.unhealthy && e.set_active(false) {
                    tracing::warn!(upstream = %up.name, endpoint = %e.address, "endpoint failed its health checks");
                    weir_telemetry::metrics::endpoint_health(&up.name, &e.address, false);
                }
            }
        }
    }
}

async fn probe(up: &UpstreamShared, idx: usize, cfg: &ActiveHealthConfig) -> bool {
    let e = &up.endpoints[idx];
    let Ok(path) = http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::copy_from_slice(
        cfg.path.as_bytes(),
    )) else {
        return false;
    };
    let mut req = Request::new(RequestBody::empty());
    *req.uri_mut() = Uri::from(path.clone());
    if let Ok(v) = http::HeaderValue::from_str(e.authority.as_str()) {
        req.headers_mut().insert(http::header::HOST, v);
    }
    req.headers_mut().insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("weir-health-check"),
    );
    let worker = up.pools.worker_slot();
    let exchange = up.exchange(worker, idx, req, path);
    match tokio::time::timeout(cfg.timeout.get(), exchange).await {
        Ok(Ok(x)) => {
            let ok = x.response.status().is_success() || x.response.status().is_redirection();
            // Read the (small) body so the connection can be reused for the next probe.
            let mut body = x.response.into_body();
            let mut complete = true;
            while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
                if frame.is_err() {
                    complete = false;
                    break;
                }
            }
            if complete && let Some(conn) = x.conn {
                up.pools.give_back(worker, idx, conn);
            }
            ok
        }
        _ => false,
    }
}
