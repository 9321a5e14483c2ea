//! Metric names (constants, low-cardinality labels) and the Prometheus recorder. Per-route
//! handles are registered once per configuration so the hot path only bumps atomics.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::PrometheusBuilder;
pub use metrics_exporter_prometheus::PrometheusHandle;

pub const REQUESTS_TOTAL: &str = "weir_requests_total";
pub const REQUEST_DURATION: &str = "weir_request_duration_seconds";
pub const ENDPOINT_HEALTHY: &str = "weir_upstream_endpoint_healthy";
pub const OPEN_CONNECTIONS: &str = "weir_open_connections";
pub const CONNECTIONS_TOTAL: &str = "weir_connections_total";
pub const RELOADS_TOTAL: &str = "weir_config_reloads_total";
pub const CONFIG_VERSION: &str = "weir_config_version";
pub const ACCESS_LOG_DROPPED: &str = "weir_access_log_dropped_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once and returns the handle that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (not done anywhere in Weir); the
            // handle still renders, just without the other recorder's data.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The handles one route uses per request, registered when the route is compiled.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    /// By status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub by_class: [Counter; 5],
    pub duration: Histogram,
}

impl RouteMetrics {
    pub fn new(route: &str) -> Self {
        let route = route.to_owned();
        let c = |class: &'static str| metrics::counter!(REQUESTS_TOTAL, "route" => route.clone(), "status" => class);
        Self {
            by_class: [c("1xx"), c("2xx"), c("3xx"), c("4xx"), c("5xx")],
            duration: metrics::histogram!(REQUEST_DURATION, "route" => route),
        }
    }

    #[inline]
    pub fn count(&self, status: u16) {
        let i = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[i].increment(1);
    }
}

pub fn endpoint_health(upstream: &str, endpoint: &str, healthy: bool) {
    metrics::gauge!(ENDPOINT_HEALTHY, "upstream" => upstream.to_owned(), "endpoint" => endpoint.to_owned())
        .set(if healthy { 1.0 } else { 0.0 });
}

pub fn open_connections(listener: &'static str) -> Gauge {
    metrics::gauge!(OPEN_CONNECTIONS, "listener" => listener)
}

pub fn connections_total(listener: &'static str) -> Counter {
    metrics::counter!(CONNECTIONS_TOTAL, "listener" => listener)
}

pub fn reload(result: &'static str) {
    metrics::counter!(RELOADS_TOTAL, "result" => result).increment(1);
}

pub fn config_version(v: u64) {
    metrics::gauge!(CONFIG_VERSION).set(v as f64);
}
