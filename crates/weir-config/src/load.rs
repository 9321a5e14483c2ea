//! Loading: YAML text → [`Config`], then `WEIR_*` environment overrides on top.

use crate::model::{AccessLogConfig, AccessLogTarget, Config};
use crate::units::Duration;
use crate::validate::ValidationError;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// YAML that is not a valid configuration: every error, each with its path and line.
    #[error("{path}: {}", errors.join("; "))]
    Invalid { path: String, errors: Vec<String> },
}

impl LoadError {
    /// One line per error, for a terminal or a log.
    pub fn messages(&self) -> Vec<String> {
        match self {
            Self::Invalid { path, errors } => {
                errors.iter().map(|e| format!("{path}: {e}")).collect()
            }
            other => vec![other.to_string()],
        }
    }
}

/// Parses YAML text; `origin` names the source in error messages.
pub fn from_yaml(text: &str, origin: &str) -> Result<Config, LoadError> {
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    serde_saphyr::from_str::<Config>(text).map_err(|e| {
        // Valid YAML: report every error of it; else the reader's one (with its excerpt).
        let errors = crate::diagnose::errors(text);
        if errors.is_empty() {
            LoadError::Parse {
                path: origin.to_owned(),
                message: e.to_string(),
            }
        } else {
            LoadError::Invalid {
                path: origin.to_owned(),
                errors,
            }
        }
    })
}

pub fn load_file(path: &std::path::Path) -> Result<Config, LoadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut config = from_yaml(&text, &shown)?;
    // Subscriptions declared here were written when the file was.
    let written = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    for s in &mut config.subscriptions {
        s.generation = crate::Generation(written);
    }
    Ok(config)
}

/// Applies `WEIR_*` overrides from `vars` (normally `std::env::vars()`; a parameter so tests
/// need not touch the process environment). Unknown `WEIR_*` names are ignored because the
/// CLI owns some (`WEIR_CONFIG`, `WEIR_LOG`).
pub fn apply_env(
    config: &mut Config,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    for (key, value) in vars {
        match key.as_str() {
            "WEIR_LISTEN_PROXY" => config.listen.proxy = value,
            "WEIR_LISTEN_ADMIN" => {
                config.listen.admin = (!value.is_empty() && value != "off").then_some(value);
            }
            "WEIR_WORKERS" => match value.parse::<usize>() {
                Ok(n) => config.workers = Some(n),
                Err(_) => errors.push(ValidationError::new(
                    "env WEIR_WORKERS",
                    format!("expected a whole number, got {value:?}"),
                )),
            },
            "WEIR_ACCESS_LOG" => {
                config.access_log = match value.as_str() {
                    "off" => AccessLogConfig::Named(AccessLogTarget::Off),
                    "stdout" => AccessLogConfig::Named(AccessLogTarget::Stdout),
                    "stderr" => AccessLogConfig::Named(AccessLogTarget::Stderr),
                    _ => AccessLogConfig::File { file: value },
                }
            }
            "WEIR_STORE" => {
                config.store = (!value.is_empty()).then(|| crate::SecretUrl::new(value));
            }
            "WEIR_DATA_DIR" => config.data_dir = value,
            "WEIR_SHUTDOWN_TIMEOUT" => match Duration::parse(&value) {
                Ok(d) => config.shutdown_timeout = d,
                Err(e) => errors.push(ValidationError::new("env WEIR_SHUTDOWN_TIMEOUT", e)),
            },
            _ => {}
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_interface_sample() {
        let yaml = r#"
listen:
  proxy: 127.0.0.1:8080
  admin: 127.0.0.1:9080
upstreams:
  orders:
    targets:
      - { address: 127.0.0.1:7001, weight: 2 }
      - { address: 127.0.0.1:7002 }
    balance: round_robin
    hash_on: header:x-user-id
    health:
      active: { path: /healthz, interval: 2s }
      passive: { failures: 3 }
    timeouts: { connect: 1s, request: 30s }
    retries: 2
routes:
  - name: orders-api
    match:
      hosts: [api.example.com, "*.example.org"]
      paths: [/orders/*]
      methods: [GET, POST]
      headers: { x-api-version: "2" }
    upstream: orders
    strip_prefix: true
"#;
        let c = from_yaml(yaml, "test").unwrap();
        assert_eq!(c.upstreams["orders"].targets[0].weight, 2);
        assert_eq!(c.upstreams["orders"].targets[1].weight, 1);
        assert_eq!(c.routes[0].matcher.headers["x-api-version"], "2");
        assert!(crate::validate(&c).is_empty(), "{:?}", crate::validate(&c));
    }

    #[test]
    fn unknown_fields_are_refused_with_a_location() {
        let err = from_yaml("listen:\n  proxx: 1\n", "f.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("proxx"), "{err}");
    }

    #[test]
    fn access_log_accepts_off_paths_and_maps() {
        for (yaml, want) in [
            (
                "access_log: off",
                AccessLogConfig::Named(AccessLogTarget::Off),
            ),
            (
                "access_log: false",
                AccessLogConfig::Named(AccessLogTarget::Off),
            ),
            (
                "access_log: stderr",
                AccessLogConfig::Named(AccessLogTarget::Stderr),
            ),
            (
                "access_log: /var/log/weir.log",
                AccessLogConfig::File {
                    file: "/var/log/weir.log".into(),
                },
            ),
            (
                "access_log: { file: a.log }",
                AccessLogConfig::File {
                    file: "a.log".into(),
                },
            ),
        ] {
            assert_eq!(from_yaml(yaml, "t").unwrap().access_log, want, "{yaml}");
        }
    }

    #[test]
    fn env_overrides_apply() {
        let mut c = Config::default();
        let errs = apply_env(
            &mut c,
            [
                ("WEIR_LISTEN_PROXY".into(), "127.0.0.1:1".into()),
                ("WEIR_WORKERS".into(), "x".into()),
                ("WEIR_ACCESS_LOG".into(), "off".into()),
            ],
        );
        assert_eq!(c.listen.proxy, "127.0.0.1:1");
        assert_eq!(c.access_log, AccessLogConfig::Named(AccessLogTarget::Off));
        assert_eq!(errs.len(), 1);
    }
}
