//! The `weir` binary: command-line parsing and wiring only; behaviour lives in the crates.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser};
use weir_config::Config;

/// jemalloc with background purging threads: memory freed after a spike goes back to the
/// system within seconds even when the threads that freed it fall idle (ADR 0012).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod args;
use args::*;

fn main() -> ExitCode {
    let cli = Cli::parse();
    weir_telemetry::init_logging(&cli.log, cli.log_format == "json");
    // The ring provider is the only one compiled in; installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Validate { config } => validate(&config),
        Command::Serve { config, no_watch } => serve(config, !no_watch),
        Command::HashPassword => hash_password(),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "weir", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weir: cannot write the manual page: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config(cmd) => block_on(async move {
            match cmd {
                ConfigCommand::Export { api } => {
                    let t = weir::cli::Target::resolve(api.url, api.token, api.config.as_deref());
                    weir::cli::export(&t).await
                }
                ConfigCommand::ImportOpenapi {
                    spec,
                    upstream,
                    prefix,
                    dry_run,
                    api,
                } => {
                    let t = weir::cli::Target::resolve(api.url, api.token, api.config.as_deref());
                    weir::import::import(&t, &spec, &upstream, &prefix, dry_run).await
                }
                ConfigCommand::Apply { file, dry_run, api } => {
                    let t = weir::cli::Target::resolve(api.url, api.token, api.config.as_deref());
                    weir::cli::apply(&t, &file, dry_run).await
                }
            }
        }),
        Command::Events(cmd) => block_on(events(cmd)),
        Command::Keys(KeysCommand::Issue {
            consumer,
            models,
            name,
            api,
        }) => {
            if let Err(code) = name_ok("consumer", &consumer) {
                return code;
            }
            let target = weir::cli::Target::resolve(api.url, api.token, api.config.as_deref());
            block_on(async move {
                weir::cli::issue_key(&target, &consumer, &models, name.as_deref()).await
            })
        }
        Command::Keys(KeysCommand::List {
            consumer,
            output,
            api,
        }) => {
            if let Err(code) = name_ok("consumer", &consumer) {
                return code;
            }
            let target = weir::cli::Target::resolve(api.url, api.token, api.config.as_deref());
            block_on(async move { weir::cli::list_keys(&target, &consumer, output.format()).await })
        }
        Command::Keys(KeysCommand::Revoke {
            consumer,
            credential,
            api,
        }) => {
            if let Err(code) = name_ok("consumer", &consumer) {
                return code;
            }
            let target = weir::cli::Target::resolve(api.url, api.token, api.config.as_deref());
            block_on(async move { weir::cli::revoke_key(&target, &consumer, &credential).await })
        }
        Command::Login { username, api } => {
            let target = weir::cli::Target::resolve(api.url, None, api.config.as_deref());
            block_on(async move { weir::login::login(&target, &username).await })
        }
        Command::Logout { api } => {
            let target = weir::cli::Target::resolve(api.url, None, api.config.as_deref());
            block_on(async move { weir::login::logout(&target).await })
        }
        Command::Admin(AdminCommand::CreateUser {
            config,
            username,
            role,
        }) => block_on(async move { weir::cli::create_user(&config, &username, &role).await }),
    }
}

/// A topic or subscription name as it may appear in an API path.
fn name_ok(what: &str, name: &str) -> Result<(), ExitCode> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Ok(());
    }
    eprintln!("weir: {what} {name:?}: a name is letters, digits, '-', '_' or '.'");
    Err(ExitCode::from(2))
}

async fn events(cmd: EventsCommand) -> ExitCode {
    let target =
        |api: ApiArgs| weir::cli::Target::resolve(api.url, api.token, api.config.as_deref());
    match cmd {
        EventsCommand::Publish {
            topic,
            data,
            file,
            content_type,
            ce_type,
            source,
            idempotency_key,
            api,
        } => {
            if let Err(code) = name_ok("topic", &topic) {
                return code;
            }
            let body = match (data, file) {
                (Some(d), _) => bytes::Bytes::from(d),
                (None, Some(f)) => match std::fs::read(&f) {
                    Ok(b) => bytes::Bytes::from(b),
                    Err(e) => {
                        eprintln!("weir: cannot read {}: {e}", f.display());
                        return ExitCode::FAILURE;
                    }
                },
                (None, None) => {
                    let mut b = Vec::new();
                    if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut b) {
                        eprintln!("weir: cannot read standard input: {e}");
                        return ExitCode::FAILURE;
                    }
                    bytes::Bytes::from(b)
                }
            };
            let p = weir::cli::Publish {
                topic: &topic,
                body,
                content_type: &content_type,
                ce_type: ce_type.as_deref(),
                ce_source: &source,
                idempotency_key: idempotency_key.as_deref(),
            };
            weir::cli::publish(&target(api), &p).await
        }
        EventsCommand::Subscriptions { output, api } => {
            let path = "/api/v1/events/subscriptions";
            weir::cli::show(&target(api), path, &SUBSCRIPTION_COLUMNS, output.format()).await
        }
        EventsCommand::Status {
            subscription,
            output,
            api,
        } => {
            let path = match subscription {
                Some(s) => {
                    if let Err(code) = name_ok("subscription", &s) {
                        return code;
                    }
                    format!("/api/v1/events/subscriptions/{s}")
                }
                None => "/api/v1/events/subscriptions".to_owned(),
            };
            weir::cli::show(&target(api), &path, &SUBSCRIPTION_COLUMNS, output.format()).await
        }
        EventsCommand::DeadLetters {
            subscription,
            output,
            api,
        } => {
            if let Err(code) = name_ok("subscription", &subscription) {
                return code;
            }
            let path = format!("/api/v1/events/subscriptions/{subscription}/dead-letters");
            let cols = ["seq", "event_id", "attempts", "reason"];
            weir::cli::show(&target(api), &path, &cols, output.format()).await
        }
        EventsCommand::Attempts {
            subscription,
            event_id,
            output,
            api,
        } => {
            if let Err(code) = name_ok("subscription", &subscription) {
                return code;
            }
            let mut path = format!("/api/v1/events/subscriptions/{subscription}/attempts");
            if let Some(id) = event_id {
                if let Err(code) = name_ok("event id", &id) {
                    return code;
                }
                path.push_str(&format!("?event_id={id}"));
            }
            let cols = [
                "seq",
                "event_id",
                "attempt",
                "at_ms",
                "status",
                "latency_ms",
                "outcome",
                "answer",
            ];
            weir::cli::show(&target(api), &path, &cols, output.format()).await
        }
        EventsCommand::Enable { subscription, api } => {
            if let Err(code) = name_ok("subscription", &subscription) {
                return code;
            }
            weir::cli::enable(&target(api), &subscription).await
        }
        EventsCommand::Replay {
            subscription,
            seq,
            dead_letters,
            since,
            api,
        } => {
            if let Err(code) = name_ok("subscription", &subscription) {
                return code;
            }
            let what = match (seq, dead_letters, since) {
                (Some(s), false, None) => serde_json::json!({ "seq": s }),
                (None, true, None) => serde_json::json!({ "dead_letters": true }),
                (None, false, Some(t)) => serde_json::json!({ "since": t }),
                _ => {
                    eprintln!("weir: give one of --seq N, --dead-letters or --since UNIX_SECONDS");
                    return ExitCode::from(2);
                }
            };
            weir::cli::replay(&target(api), &subscription, &what).await
        }
    }
}

/// Runs a command's future on a small runtime of its own.
fn block_on(f: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("weir: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a file and applies `WEIR_*` overrides, returning every problem found.
fn load(path: &Path) -> Result<Config, Vec<String>> {
    let mut cfg = weir_config::load_file(path).map_err(|e| e.messages())?;
    let env_errors = weir_config::apply_env(&mut cfg, std::env::vars());
    let mut errors: Vec<String> = env_errors.iter().map(ToString::to_string).collect();
    let invalid: Vec<String> = weir_config::validate(&cfg)
        .iter()
        .map(ToString::to_string)
        .collect();
    if !invalid.is_empty() {
        // Each with its line in the file, as parse errors have theirs.
        let text = std::fs::read_to_string(path).unwrap_or_default();
        errors.extend(weir_config::with_lines(&text, invalid));
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        eprintln!("weir: cannot read the password from standard input");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!(
            "weir: the password is empty; pipe it in, e.g. `printf '%s' \"$PW\" | weir hash-password`"
        );
        return ExitCode::FAILURE;
    }
    match weir_policy::hash_password(password.as_bytes()) {
        Ok(phc) => {
            println!("{phc}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weir: cannot hash the password: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate(path: &Path) -> ExitCode {
    match load(path) {
        Ok(cfg) => {
            println!(
                "{}: valid ({} upstreams, {} routes)",
                path.display(),
                cfg.upstreams.len(),
                cfg.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{}: {} error(s)", path.display(), errors.len());
            ExitCode::FAILURE
        }
    }
}

fn serve(config_path: Option<PathBuf>, watch: bool) -> ExitCode {
    let path = config_path.or_else(|| {
        let default = PathBuf::from("weir.yaml");
        default.exists().then_some(default)
    });
    let (config, origin) = match &path {
        Some(p) => match load(p) {
            Ok(c) => (c, p.display().to_string()),
            Err(errors) => {
                eprintln!("weir: {} is not valid:", p.display());
                for e in &errors {
                    eprintln!("  {e}");
                }
                eprintln!(
                    "fix the errors above (`weir validate --config {}` checks a file), then start again",
                    p.display()
                );
                return ExitCode::FAILURE;
            }
        },
        None => {
            let mut cfg = match weir_config::from_yaml(weir_config::QUICKSTART_YAML, "quick start")
            {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("weir: built-in quick start is broken: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let errs = weir_config::apply_env(&mut cfg, std::env::vars());
            if !errs.is_empty() {
                for e in &errs {
                    eprintln!("weir: {e}");
                }
                return ExitCode::FAILURE;
            }
            (cfg, "built-in quick start".to_owned())
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(config, origin, path, watch))
}

async fn run(config: Config, origin: String, path: Option<PathBuf>, watch: bool) -> ExitCode {
    // Take SIGHUP before any port opens: its default action ends the process, and a
    // `systemctl reload` may come as soon as the node looks up. Tokio keeps its handler for
    // the life of the process; the reload task listens from the end of start-up.
    #[cfg(unix)]
    let _hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let loader: Option<weir_proxy::reload::Loader> = path.clone().map(|p| {
        let l: weir_proxy::reload::Loader = Arc::new(move || load(&p));
        l
    });
    let sources = weir_proxy::app::ReloadSources {
        loader,
        watch: path.filter(|_| watch),
        watch_every: None,
        sighup: true,
        calls: None,
        ai_calls: None,
        ingest: None,
        admin_api_to_come: false,
    };
    let quickstart = origin == "built-in quick start";
    let node = match weir::start(config, sources, weir::FirstAdmin::from_env(), !quickstart).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = &node.running;
    let snap = running.gateway.snapshot();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %origin,
        proxy = %format!("http://{}", running.proxy_addr),
        admin = %running.admin_addr.map(|a| format!("http://{a}")).unwrap_or_else(|| "off".into()),
        tls = %running.tls_addr.map(|a| format!("https://{a}")).unwrap_or_else(|| "off".into()),
        workers = running.gateway.workers(),
        routes = snap.routes.len(),
        "weir is running"
    );
    drop(snap);
    eprintln!(
        "weir {} listening on http://{}",
        env!("CARGO_PKG_VERSION"),
        running.proxy_addr
    );
    if let Some(a) = running.admin_addr {
        eprintln!("  admin: http://{a}/metrics, http://{a}/livez and http://{a}/readyz");
        if let Some(c) = &node.control {
            let mode = match c.mode() {
                weir_control::Mode::File => "file mode: read-only",
                weir_control::Mode::Database => "database mode",
            };
            eprintln!("  console:   http://{a}/ ({mode})");
            eprintln!("  admin API: http://{a}/api/v1 (OpenAPI at /api/v1/openapi.json)");
            for w in c.warnings() {
                tracing::warn!("{w}");
                eprintln!("  warning: {w}");
            }
        }
    }
    if let Some(a) = running.tls_addr {
        eprintln!("  tls:   https://{a}");
    }
    if quickstart {
        eprintln!(
            "  quick start: no config file given, echoing requests. Try: curl http://{}/hello",
            running.proxy_addr
        );
        eprintln!(
            "  write a weir.yaml (see docs/configuration.md) or pass --config FILE to route to your services"
        );
    }
    wait_for_signal().await;
    tracing::info!("shutting down: no new connections; draining in-flight requests");
    node.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and every flag or argument, at any depth, says what it is for.
    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(cmd: &clap::Command, at: &str, missing: &mut Vec<String>) {
            let at = format!("{at} {}", cmd.get_name());
            if cmd.get_about().is_none() && at != " weir" {
                missing.push(at.clone());
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if !["help", "version"].contains(&id) && arg.get_help().is_none() {
                    missing.push(format!("{at} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &at, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
        Cli::command().debug_assert();
    }
}
