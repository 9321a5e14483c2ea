//! Metric names (constants, low-cardinality labels) and the Prometheus recorder. Per-route
//! handles are registered once per configuration so the hot path only bumps atomics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use metrics::{Counter, Gauge};
use metrics_exporter_prometheus::PrometheusBuilder;
pub use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;

pub const REQUESTS_TOTAL: &str = "weir_requests_total";
pub const REQUEST_DURATION: &str = "weir_request_duration_seconds";
pub const ENDPOINT_HEALTHY: &str = "weir_upstream_endpoint_healthy";
pub const OPEN_CONNECTIONS: &str = "weir_open_connections";
pub const CONNECTIONS_TOTAL: &str = "weir_connections_total";
pub const RELOADS_TOTAL: &str = "weir_config_reloads_total";
pub const CONFIG_VERSION: &str = "weir_config_version";
pub const ACCESS_LOG_DROPPED: &str = "weir_access_log_dropped_total";
pub const OVERLOAD_ACTIONS: &str = "weir_overload_actions_total";
pub const OVERLOAD_PRESSURE: &str = "weir_overload_pressure";
pub const OVERLOAD_RESIDENT: &str = "weir_overload_resident_memory_bytes";
pub const OVERLOAD_LIMIT: &str = "weir_overload_memory_limit_bytes";
pub const OVERLOAD_BUFFERED: &str = "weir_overload_buffered_body_bytes";
pub const OVERLOAD_CONNECTIONS: &str = "weir_overload_client_connections";

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

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BOUNDS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A fixed-bucket latency histogram: recording is a bucket search and three relaxed atomic
/// adds, no allocation and no lock, so it is cheap enough for every request.
#[derive(Debug)]
pub struct LatencyHistogram {
    route: String,
    /// Per-bucket counts (not cumulative); the last slot is +Inf.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

static HISTOGRAMS: Mutex<Vec<Weak<LatencyHistogram>>> = Mutex::new(Vec::new());

impl LatencyHistogram {
    /// Creates and registers the histogram for `route` (rendered while it is alive).
    pub fn new(route: &str) -> Arc<Self> {
        let h = Arc::new(Self {
            route: route.to_owned(),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        });
        let mut all = HISTOGRAMS.lock();
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&h));
        h
    }

    #[inline]
    pub fn record(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }
}

/// Appends every live latency histogram in the Prometheus text format.
pub fn render_histograms(out: &mut String) {
    let all: Vec<Arc<LatencyHistogram>> =
        HISTOGRAMS.lock().iter().filter_map(Weak::upgrade).collect();
    if all.is_empty() {
        return;
    }
    let _ = writeln!(out, "# TYPE {REQUEST_DURATION} histogram");
    for h in all {
        let route = h.route.replace('\\', "\\\\").replace('"', "\\\"");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
            cumulative += h.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{REQUEST_DURATION}_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += h.buckets[LATENCY_BOUNDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{REQUEST_DURATION}_bucket{{route=\"{route}\",le=\"+Inf\"}} {cumulative}"
        );
        let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{REQUEST_DURATION}_sum{{route=\"{route}\"}} {sum}");
        let _ = writeln!(
            out,
            "{REQUEST_DURATION}_count{{route=\"{route}\"}} {}",
            h.count.load(Ordering::Relaxed)
        );
    }
}

/// The handles one route uses per request, registered when the route is compiled.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    /// By status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub by_class: [Counter; 5],
    pub duration: Arc<LatencyHistogram>,
}

impl RouteMetrics {
    pub fn new(route: &str) -> Self {
        let route = route.to_owned();
        let c = |class: &'static str| metrics::counter!(REQUESTS_TOTAL, "route" => route.clone(), "status" => class);
        Self {
            by_class: [c("1xx"), c("2xx"), c("3xx"), c("4xx"), c("5xx")],
            duration: LatencyHistogram::new(&route),
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

/// One reading of the overload manager, exported as gauges and (absolute) counters.
pub struct OverloadReading {
    pub resident: u64,
    pub limit: u64,
    pub buffered: u64,
    pub connections: u64,
    /// 0 normal, 1 shedding kept-alive connections, 2 refusing buffered requests, 3 not
    /// accepting connections.
    pub pressure: u8,
    pub actions: [(&'static str, u64); 5],
}

pub fn overload(r: &OverloadReading) {
    metrics::gauge!(OVERLOAD_RESIDENT).set(r.resident as f64);
    metrics::gauge!(OVERLOAD_LIMIT).set(r.limit as f64);
    metrics::gauge!(OVERLOAD_BUFFERED).set(r.buffered as f64);
    metrics::gauge!(OVERLOAD_CONNECTIONS).set(r.connections as f64);
    metrics::gauge!(OVERLOAD_PRESSURE).set(f64::from(r.pressure));
    for (action, n) in r.actions {
        metrics::counter!(OVERLOAD_ACTIONS, "action" => action).absolute(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let h = LatencyHistogram::new("hist-test");
        h.record(std::time::Duration::from_micros(300));
        h.record(std::time::Duration::from_millis(3));
        h.record(std::time::Duration::from_secs(60));
        let mut out = String::new();
        render_histograms(&mut out);
        assert!(
            out.contains(
                "weir_request_duration_seconds_bucket{route=\"hist-test\",le=\"0.0005\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "weir_request_duration_seconds_bucket{route=\"hist-test\",le=\"0.005\"} 2"
            ),
            "{out}"
        );
        assert!(
            out.contains("weir_request_duration_seconds_bucket{route=\"hist-test\",le=\"30\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("weir_request_duration_seconds_bucket{route=\"hist-test\",le=\"+Inf\"} 3"),
            "{out}"
        );
        assert!(
            out.contains("weir_request_duration_seconds_count{route=\"hist-test\"} 3"),
            "{out}"
        );
    }
}
