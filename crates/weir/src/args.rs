//! The command line: every command, flag and environment variable `weir` takes, as clap
//! derives them (the man page and completions are made from these).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weir", version, about = "Weir: the gateway in front of your services", long_about = None)]
pub(crate) struct Cli {
    /// Log filter, e.g. `info`, `debug`, `weir_proxy=debug`.
    #[arg(long, global = true, env = "WEIR_LOG", default_value = "info")]
    pub(crate) log: String,
    /// Log format for Weir's own messages.
    #[arg(long, global = true, env = "WEIR_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    pub(crate) log_format: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the gateway. Without --config, uses ./weir.yaml or the built-in quick start.
    Serve {
        /// Configuration file (YAML); watched and reloaded on change and on SIGHUP.
        #[arg(short, long, env = "WEIR_CONFIG")]
        config: Option<PathBuf>,
        /// Reload only on SIGHUP, not when the file changes.
        #[arg(long, env = "WEIR_NO_WATCH")]
        no_watch: bool,
    },
    /// Check a configuration file and print every error with its path.
    Validate {
        /// Configuration file (YAML), as `serve` reads it.
        #[arg(short, long, env = "WEIR_CONFIG", default_value = "weir.yaml")]
        config: PathBuf,
    },
    /// Read a password from standard input and print its argon2id hash, for a consumer's
    /// `basic` credential (`password_hash`).
    HashPassword,
    /// Read, plan and apply the configuration through the admin API.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage accounts directly in the store.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Publish events and look after subscriptions through the admin API.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Issue API keys (virtual keys for AI routes) to consumers through the admin API.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Log in to the admin API and keep the session for the other commands (the password
    /// is read from standard input, without echo at a terminal).
    Login {
        /// The account to log in as.
        #[arg(long, short, env = "WEIR_ADMIN_USER", default_value = "admin")]
        username: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// End the session `weir login` kept for the admin API.
    Logout {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print a completion script for SHELL, e.g. `weir completions bash >
    /// ~/.local/share/bash-completion/completions/weir`.
    Completions {
        /// The shell the script is for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) made from this command line: `weir man > weir.1`.
    Man,
}

/// How list commands print.
#[derive(clap::Args)]
pub(crate) struct OutputArgs {
    /// table (the default at a terminal), json (the default otherwise) or yaml.
    #[arg(short = 'o', long = "output", value_enum)]
    pub(crate) output: Option<weir::output::Format>,
}

impl OutputArgs {
    pub(crate) fn format(&self) -> weir::output::Format {
        weir::output::Format::or_default(self.output)
    }
}

/// The columns of a subscription's state in a table.
pub(crate) const SUBSCRIPTION_COLUMNS: [&str; 8] = [
    "name",
    "topic",
    "state",
    "pending",
    "oldest_age_seconds",
    "in_flight",
    "dead_letters",
    "last_error.detail",
];

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Issue a new key to a consumer and print it (shown this once; Weir keeps only its
    /// digest). With --models, the key may use only those AI models.
    Issue {
        /// The consumer the key is for.
        consumer: String,
        /// Model names, comma-separated.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// What call records and per-key limits call the key (letters, digits, . _ -).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A consumer's credentials: position, type, name, models and the key's digest (a key
    /// itself is never shown again).
    List {
        /// The consumer.
        consumer: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Remove one credential of a consumer, by its position (from `keys list`) or its name;
    /// calls with it are refused at once.
    Revoke {
        /// The consumer.
        consumer: String,
        /// The credential's position or name.
        credential: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum EventsCommand {
    /// Publish one event to a topic; prints its id. The body is --data, --file, or
    /// standard input.
    Publish {
        /// The topic to publish to.
        topic: String,
        /// The body.
        #[arg(long, conflicts_with = "file")]
        data: Option<String>,
        /// Read the body from this file.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The body's media type.
        #[arg(long, default_value = "application/json")]
        content_type: String,
        /// Send it as a CloudEvent of this type (binary mode).
        #[arg(long = "type")]
        ce_type: Option<String>,
        /// The CloudEvent source (with --type).
        #[arg(long, default_value = "weir-cli")]
        source: String,
        /// Makes a retried publish the same event.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Every subscription with what it owes, its dead letters and whether it is disabled.
    Subscriptions {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// How each subscription runs (or the one named): active, disabled or degraded with the
    /// reason, its object in the queue, what it owes and the oldest's age, deliveries in
    /// flight, dead letters, the last delivery and the last failure.
    Status {
        /// One subscription (all when absent).
        subscription: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A subscription's dead letters.
    DeadLetters {
        /// The subscription's name.
        subscription: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A subscription's delivery attempts, newest first.
    Attempts {
        /// The subscription's name.
        subscription: String,
        /// Only this event's.
        #[arg(long)]
        event_id: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Enable a subscription a `410 Gone` disabled; what waited is delivered.
    Enable {
        /// The subscription's name.
        subscription: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Deliver again: one dead letter (--seq), all of them (--dead-letters), or every
    /// event since a Unix time (--since).
    Replay {
        /// The subscription to deliver to.
        subscription: String,
        /// One dead letter, by its sequence number (see `weir events dead-letters`).
        #[arg(long, group = "what")]
        seq: Option<i64>,
        /// Every dead letter of the subscription.
        #[arg(long, group = "what")]
        dead_letters: bool,
        /// Every event of the topic since this Unix time (seconds).
        #[arg(long, group = "what")]
        since: Option<i64>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// How to reach the admin API.
#[derive(clap::Args)]
pub(crate) struct ApiArgs {
    /// Admin API base URL; defaults to the admin listener of --config, else
    /// http://127.0.0.1:9080.
    #[arg(long, env = "WEIR_API_URL")]
    pub(crate) url: Option<String>,
    /// An API token (POST /api/v1/tokens makes one); without it, the session `weir login` kept.
    #[arg(long, env = "WEIR_API_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// The node's configuration file, to find its admin listener.
    #[arg(short, long, env = "WEIR_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the live configuration as YAML (secrets redacted).
    Export {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Create (or replace) one route per operation of an OpenAPI 3 document (JSON or
    /// YAML), all to one upstream.
    ImportOpenapi {
        /// The OpenAPI document (JSON or YAML).
        spec: PathBuf,
        /// The upstream the routes go to (it must exist).
        #[arg(long)]
        upstream: String,
        /// A path prefix put before every path of the document, e.g. /api.
        #[arg(long, default_value = "")]
        prefix: String,
        /// List the routes only.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Make the stored upstreams, routes, consumers and policy defaults those of FILE:
    /// shows the plan (create/update/delete), then applies it in one change.
    Apply {
        /// The configuration file to apply.
        file: PathBuf,
        /// Show the plan only.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum AdminCommand {
    /// Create an account in the store of --config (the password is read from standard
    /// input). Works before any account exists.
    CreateUser {
        /// The node's configuration file (its `store` and `data_dir`).
        #[arg(short, long, env = "WEIR_CONFIG")]
        config: PathBuf,
        /// The account's name.
        #[arg(long)]
        username: String,
        /// What the account may do: admin (everything), editor (configuration), viewer (read).
        #[arg(long, default_value = "admin", value_parser = ["admin", "editor", "viewer"])]
        role: String,
    },
}
