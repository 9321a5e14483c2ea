//! Telemetry: tracing setup (`WEIR_LOG`), metric names and recording helpers, and the
//! access-log writer that the pipeline feeds one JSON line per request.

pub mod access_log;
pub mod calls;
pub mod metrics;

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything but empty
/// (<https://no-color.org>): a log written to a file or a pipe holds no escape codes.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// Installs the tracing subscriber: human-readable lines on stderr, filtered by `filter`
/// (the `WEIR_LOG` syntax, e.g. `info` or `weir_proxy=debug`). `json` switches to JSON.
pub fn init_logging(filter: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_target(false);
    // A second init (tests start several gateways in one process) is harmless.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod colour_tests {
    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(super::colour(true, None));
        assert!(super::colour(true, Some(OsStr::new(""))));
        assert!(!super::colour(true, Some(OsStr::new("1"))));
        assert!(!super::colour(false, None));
    }
}
