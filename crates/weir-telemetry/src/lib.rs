//! Telemetry: tracing setup (`WEIR_LOG`), metric names and recording helpers, and the
//! access-log writer that the pipeline feeds one JSON line per request.

pub mod access_log;
pub mod calls;
pub mod metrics;

/// Installs the tracing subscriber: human-readable lines on stderr, filtered by `filter`
/// (the `WEIR_LOG` syntax, e.g. `info` or `weir_proxy=debug`). `json` switches to JSON.
pub fn init_logging(filter: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second init (tests start several gateways in one process) is harmless.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
