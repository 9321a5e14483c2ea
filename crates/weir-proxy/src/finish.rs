//! The end of a request: metrics and the access-log line, recorded once when the response
//! body finishes (or the client leaves), so streams are measured whole.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::Method;
use weir_core::RequestId;
use weir_telemetry::access_log::{AccessLog, Record};
use weir_telemetry::calls::{CallRecord, CallSink};
use weir_telemetry::metrics::RouteMetrics;
use weir_upstream::{BodyStats, InFlight};

pub(crate) struct Finish {
    pub start: Instant,
    pub status: u16,
    pub metrics: Arc<RouteMetrics>,
    pub upstream_secs: Option<f64>,
    pub in_flight: Option<InFlight>,
    /// Concurrency slots, released when the response ends.
    pub permits: Vec<weir_policy::Permit>,
    pub log: Option<LogData>,
    /// Set when analytics records calls.
    pub call: Option<CallData>,
}

/// What a call record needs beyond the status and timing.
pub(crate) struct CallData {
    pub sink: CallSink,
    pub route: Arc<str>,
    pub upstream: Arc<str>,
    pub consumer: Option<Arc<str>>,
}

/// Access-log fields, gathered only when the access log is on.
pub(crate) struct LogData {
    pub sink: AccessLog,
    pub request_id: RequestId,
    pub route: Arc<str>,
    pub upstream: Arc<str>,
    pub endpoint: Option<Arc<str>>,
    pub method: Method,
    pub path: String,
    pub client: IpAddr,
    pub bytes_in: u64,
    pub body_stats: Option<Arc<BodyStats>>,
    pub error: &'static str,
}

impl Finish {
    pub fn done(self: Box<Self>, bytes_out: u64, aborted: bool) {
        let elapsed = self.start.elapsed();
        self.metrics.count(self.status);
        self.metrics.duration.record(elapsed);
        let elapsed = elapsed.as_secs_f64();
        if let Some(f) = self.in_flight {
            f.finish(!aborted);
        }
        drop(self.permits);
        if let Some(c) = self.call {
            let at_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            c.sink.record(CallRecord {
                at_ms,
                route: c.route,
                upstream: c.upstream,
                consumer: c.consumer,
                status: self.status,
                latency_us: (elapsed * 1_000_000.0) as u64,
                bytes_out,
            });
        }
        if let Some(l) = self.log {
            let bytes_in = l.body_stats.as_ref().map_or(l.bytes_in, |s| {
                s.bytes.load(std::sync::atomic::Ordering::Relaxed)
            });
            l.sink.log(&Record {
                request_id: l.request_id.as_str(),
                route: &l.route,
                method: l.method.as_str(),
                path: &l.path,
                status: self.status,
                upstream: &l.upstream,
                endpoint: l.endpoint.as_deref().unwrap_or(""),
                upstream_ms: self.upstream_secs.map(|s| s * 1000.0),
                total_ms: elapsed * 1000.0,
                bytes_in,
                bytes_out,
                client: l.client,
                error: if aborted && l.error.is_empty() {
                    "client_aborted"
                } else {
                    l.error
                },
            });
        }
    }
}
