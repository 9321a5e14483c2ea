//! The raw configuration model: serde shapes of the YAML file, with defaults written out.
//! Nothing here is trusted until [`crate::validate`] has passed over the whole of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::{ConsumerConfig, PolicyConfig};
use crate::units::{ByteSize, Duration, Share};

#[derive(Debug, Clone, Deserialize, Serialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: ListenConfig,
    /// Worker threads serving traffic; absent means one per CPU core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Peers (CIDRs) whose `X-Forwarded-*` headers are believed and appended to.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Node-wide protection from overload: memory, bodies held whole, client connections.
    #[serde(default)]
    pub overload: OverloadConfig,
    #[serde(default)]
    pub paths: PathsConfig,
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// How long in-flight requests may run after SIGTERM before connections are closed.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Duration,
    /// Where the configuration lives when it is managed through the admin API:
    /// `sqlite://FILE` (relative to `data_dir`) or `postgres://USER@HOST:PORT/DB`. Absent:
    /// file mode (this file is the truth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<crate::SecretUrl>,
    /// Weir's own files: the SQLite store, queue files, caches.
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// Traffic analytics kept in the store (database mode).
    #[serde(default)]
    pub analytics: AnalyticsConfig,
    /// The event queue behind topic routes.
    #[serde(default)]
    pub events: EventsConfig,
    /// Topics that routes publish to.
    #[serde(default)]
    pub topics: BTreeMap<String, TopicConfig>,
    /// Services that receive a topic's events.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Identities that credentials resolve to.
    #[serde(default)]
    pub consumers: Vec<ConsumerConfig>,
    /// Policies every route runs in addition to its own (a route's policy of the same kind
    /// replaces the default).
    #[serde(default)]
    pub policy_defaults: Vec<PolicyConfig>,
    /// LLM providers and the models `ai` routes serve.
    #[serde(default)]
    pub ai: crate::ai::AiConfig,
}

/// The event queue.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// `embedded`: a durable queue in `data_dir` (SQLite, fsynced group commits);
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`): Redis Streams shared by
    /// every node naming it; `env:NAME`: the URL is in that variable (keeps a password out
    /// of the file).
    #[serde(default = "default_backend")]
    pub backend: crate::SecretUrl,
    /// Where subscriptions created through the admin API may deliver: `public` (outside
    /// loopback, private, link-local and other internal ranges) and CIDR blocks. Those in
    /// the configuration file are trusted and may target any address.
    #[serde(default = "default_allowed_networks")]
    pub allowed_networks: Vec<String>,
    /// What this deployment's names in a shared Redis or NATS start with (keys
    /// `NAMESPACE:{ev}:…`; subjects `NAMESPACE.…`, streams `NAMESPACE_…`), so several
    /// deployments can share one server.
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

fn default_namespace() -> String {
    "weir".to_owned()
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            backend: default_backend(),
            allowed_networks: default_allowed_networks(),
            namespace: default_namespace(),
        }
    }
}

fn default_allowed_networks() -> Vec<String> {
    vec!["public".to_owned()]
}

fn default_backend() -> crate::SecretUrl {
    crate::SecretUrl::from("embedded")
}

/// A topic: a named stream of events.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// How long events are kept.
    #[serde(default = "default_retention")]
    pub retention: Duration,
    /// The largest event body accepted (413 beyond it).
    #[serde(default = "default_event_size")]
    pub max_event_size: ByteSize,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            retention: default_retention(),
            max_event_size: default_event_size(),
        }
    }
}

fn default_event_size() -> ByteSize {
    ByteSize(1 << 20)
}

/// Delivers a topic's events to one endpoint, each with its own cursor and retries.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// The subscription's name: unique; names its cursor, metrics and dead letters.
    pub name: String,
    /// The topic whose events are delivered.
    pub topic: String,
    /// `http(s)://host[:port]/path` receiving a POST per event.
    pub endpoint: String,
    /// Deliver only events whose CloudEvents type is one of these (all when empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterConfig>,
    /// Deliveries in flight at once.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u32,
    /// Per-key ordering: events with the same ordering key (CloudEvents `partitionkey`)
    /// are delivered one at a time, in publish order; a failing one holds back the later
    /// ones of its key until it is delivered or dead.
    #[serde(default)]
    pub ordered: bool,
    /// At most `limit` deliveries started per `per` (bursts up to `limit`); none when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<DeliveryRate>,
    #[serde(default)]
    pub retry: RetryConfig,
    /// `whsec_` + base64 (Standard Webhooks), or `env:NAME` / `file:PATH`; several during a
    /// rotation, separated by spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<crate::Secret>,
    /// Deadline of one attempt.
    #[serde(default = "default_delivery_timeout")]
    pub timeout: Duration,
    /// How events go out (CloudEvents HTTP binding).
    #[serde(default)]
    pub cloudevents: CloudEventsMode,
    /// Where it starts reading when the queue has no cursor for it yet: `new` (the
    /// default), `earliest`, or an RFC 3339 time. A cursor that exists keeps its place.
    #[serde(default, skip_serializing_if = "is_new")]
    pub start: crate::units::Start,
    /// Made through the admin API (not the file): its endpoint must be within
    /// `events.allowed_networks`.
    #[serde(skip)]
    pub from_api: bool,
    /// When this declaration was written.
    #[serde(skip)]
    pub generation: Generation,
}

/// When a declaration was written, in Unix milliseconds: the configuration file's
/// modification time, or when the admin API stored it. Of two declarations of one
/// subscription that disagree (nodes during a rolling edit), the newer holds. It is not
/// part of what is declared: any two compare equal, so touching a file changes nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Generation(pub i64);

impl PartialEq for Generation {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Generation {}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryRate {
    /// Deliveries started per `per` (the burst size).
    pub limit: u32,
    pub per: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// CloudEvents types delivered (all when empty).
    #[serde(default)]
    pub types: Vec<String>,
}

/// When failed deliveries are tried again: the first attempt is immediate, `schedule[i]`
/// is the wait after the (i+1)-th failure; past the schedule or `max_age`, the event is a
/// dead letter.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Waits between attempts: the wait after the first failure, the second, …
    #[serde(default = "default_schedule")]
    pub schedule: Vec<Duration>,
    #[serde(default = "default_max_age")]
    pub max_age: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            schedule: default_schedule(),
            max_age: default_max_age(),
        }
    }
}

fn is_new(s: &crate::units::Start) -> bool {
    *s == crate::units::Start::New
}

/// How a subscription sends each event.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CloudEventsMode {
    /// The data as the body, the attributes as `ce-*` headers; an event published without
    /// attributes gets the required ones (id, source, type, specversion, time).
    #[default]
    Binary,
    /// One `application/cloudevents+json` document.
    Structured,
    /// The data as published, with only the attributes it was published with.
    Plain,
}

fn default_schedule() -> Vec<Duration> {
    [5, 300, 1800, 7200, 18000, 36000, 36000]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

fn default_max_age() -> Duration {
    Duration::from_secs(3 * 86_400)
}

fn default_in_flight() -> u32 {
    16
}

fn default_delivery_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Call records for the analytics API: written in batches off the request path.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Record calls (only with a `store`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long call records are kept.
    #[serde(default = "default_retention")]
    pub retention: Duration,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            retention: default_retention(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_retention() -> Duration {
    Duration::from_secs(7 * 86_400)
}

fn default_data_dir() -> String {
    "./weir-data".to_owned()
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    #[serde(default = "default_proxy_addr")]
    pub proxy: String,
    /// `/metrics` and `/healthz`; absent means no admin listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsListenConfig>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            proxy: default_proxy_addr(),
            admin: None,
            tls: None,
        }
    }
}

fn default_proxy_addr() -> String {
    "127.0.0.1:8080".to_owned()
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsListenConfig {
    pub address: String,
    /// Chosen by SNI (names read from each certificate); the first is the default.
    pub certificates: Vec<CertificateConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// A PEM file of the certificate chain, leaf first (or the PEM text itself).
    pub cert: String,
    /// A PEM file of the private key (or the PEM text itself).
    pub key: crate::Secret,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted on any route unless the route sets its own.
    #[serde(default = "default_max_body")]
    pub max_body_size: ByteSize,
    /// Largest request head (request line and headers) accepted.
    #[serde(default = "default_max_header")]
    pub max_header_size: ByteSize,
    /// Time a client has to send the whole request head; on a kept-alive connection the
    /// clock starts when the previous response is done, so it is also the idle timeout.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Duration,
    /// Time a request body held whole (AI and topic routes) may go without a byte
    /// arriving; past it the request is answered `408`. Streamed bodies fall under the
    /// upstream's request timeout instead.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: Duration,
    /// Concurrent HTTP/2 streams per client connection.
    #[serde(default = "default_h2_streams")]
    pub max_concurrent_streams: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_size: default_max_body(),
            max_header_size: default_max_header(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            max_concurrent_streams: default_h2_streams(),
        }
    }
}

fn default_max_body() -> ByteSize {
    ByteSize(100 << 20)
}
fn default_max_header() -> ByteSize {
    ByteSize(64 << 10)
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_h2_streams() -> u32 {
    128
}

/// The overload manager's settings. Thresholds are shares of `memory_limit`, compared with
/// the process's resident memory a few times a second.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverloadConfig {
    /// Memory the process may use. Absent: the cgroup's limit, else the machine's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<ByteSize>,
    /// Budget for request and provider bodies held whole in memory (AI and topic routes)
    /// across the node; past it such requests get `503` with `Retry-After`.
    #[serde(default = "default_buffered_bodies")]
    pub buffered_bodies: Share,
    /// Client connections open at once; past it a new connection is closed at once.
    /// Absent: derived from the open-file limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// Above this, kept-alive client connections are closed once their request is done.
    #[serde(default = "default_shed_at")]
    pub shed_keep_alive_at: Share,
    /// Above this, new requests that would hold a body whole get `503` with `Retry-After`.
    #[serde(default = "default_refuse_at")]
    pub refuse_buffered_at: Share,
    /// Above this, no new client connections are accepted until memory falls.
    #[serde(default = "default_stop_at")]
    pub stop_accepting_at: Share,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        Self {
            memory_limit: None,
            buffered_bodies: default_buffered_bodies(),
            max_connections: None,
            shed_keep_alive_at: default_shed_at(),
            refuse_buffered_at: default_refuse_at(),
            stop_accepting_at: default_stop_at(),
        }
    }
}

fn default_buffered_bodies() -> Share {
    Share::Percent(25)
}
fn default_shed_at() -> Share {
    Share::Percent(85)
}
fn default_refuse_at() -> Share {
    Share::Percent(90)
}
fn default_stop_at() -> Share {
    Share::Percent(95)
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    #[serde(default)]
    pub encoded_slash: EncodedSlashAction,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EncodedSlashAction {
    #[default]
    Reject,
    Keep,
}

/// `off` (or `false`), `stdout`, `stderr`, a file path, or `{ file: PATH }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogConfig {
    Named(AccessLogTarget),
    /// A file path (appended to).
    File {
        file: String,
    },
}

impl<'de> Deserialize<'de> for AccessLogConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Serialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Text(String),
            File { file: String },
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Flag(false) => Self::Named(AccessLogTarget::Off),
            Raw::Flag(true) => Self::Named(AccessLogTarget::Stdout),
            Raw::Text(t) => match t.as_str() {
                "off" => Self::Named(AccessLogTarget::Off),
                "stdout" => Self::Named(AccessLogTarget::Stdout),
                "stderr" => Self::Named(AccessLogTarget::Stderr),
                _ => Self::File { file: t },
            },
            Raw::File { file } => Self::File { file },
        })
    }
}

impl Serialize for AccessLogConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Named(AccessLogTarget::Off) => s.serialize_str("off"),
            Self::Named(AccessLogTarget::Stdout) => s.serialize_str("stdout"),
            Self::Named(AccessLogTarget::Stderr) => s.serialize_str("stderr"),
            Self::File { file } => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("file", file)?;
                m.end()
            }
        }
    }
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self::Named(AccessLogTarget::Stdout)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Hash, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The servers behind this upstream: `host:port` and a weight.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// A target served inside Weir instead of over the network (`echo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<Builtin>,
    /// How a target is chosen for each request.
    #[serde(default)]
    pub balance: Balance,
    /// Key for `consistent_hash`: `header:NAME`, `cookie:NAME` or `ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    /// Active checks and passive failure counting (circuit breaking).
    #[serde(default)]
    pub health: HealthConfig,
    /// How long to wait for a connection and for an answer.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Extra attempts, each on another endpoint, for safe requests or failed connects.
    #[serde(default)]
    pub retries: u32,
    /// HTTP version to the targets: `auto`, `http1`, or `h2c` (HTTP/2 without TLS).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TLS to the endpoints; absent means plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsConfig>,
    /// `Host` sent upstream when the route does not preserve the client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Idle keep-alive connections kept per endpoint (per worker thread).
    #[serde(default = "default_pool_idle")]
    pub max_idle_per_endpoint: usize,
    #[serde(default = "default_pool_idle_timeout")]
    pub idle_timeout: Duration,
}

fn default_pool_idle() -> usize {
    128
}
fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    Echo,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// `host:port`; names are resolved at connect time.
    pub address: String,
    /// The target's share of traffic relative to the others (1 to 1000).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(
    Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq, Hash, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConn,
    ConsistentHash,
    Random,
}

#[derive(
    Debug, Clone, Copy, Deserialize, Serialize, Default, PartialEq, Eq, Hash, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1, or HTTP/2 when TLS negotiates `h2` by ALPN.
    #[default]
    Auto,
    Http1,
    /// HTTP/2 over plain TCP with prior knowledge.
    H2c,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Hash, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Periodic checks of each target (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveHealthConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveHealthConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealthConfig {
    /// The path each check requests (`GET`); a 2xx answer counts as up.
    pub path: String,
    #[serde(default = "default_health_interval")]
    pub interval: Duration,
    #[serde(default = "default_health_timeout")]
    pub timeout: Duration,
    /// Consecutive successes that bring a down endpoint back.
    #[serde(default = "default_two")]
    pub healthy: u32,
    /// Consecutive failures that take an endpoint down.
    #[serde(default = "default_two")]
    pub unhealthy: u32,
}

fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_two() -> u32 {
    2
}

/// Passive health is the per-endpoint circuit breaker: after `failures` consecutive failed
/// requests the endpoint is skipped for `cooldown`, then one trial request decides.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthConfig {
    /// Failures in a row that open the target's circuit.
    #[serde(default = "default_failures")]
    pub failures: u32,
    #[serde(default = "default_cooldown")]
    pub cooldown: Duration,
}

fn default_failures() -> u32 {
    5
}
fn default_cooldown() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    #[serde(default = "default_connect_timeout")]
    pub connect: Duration,
    /// Until the response head arrives; a streaming body is not cut by it.
    #[serde(default = "default_request_timeout")]
    pub request: Duration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect: default_connect_timeout(),
            request: default_request_timeout(),
        }
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// Server name sent and verified; defaults to the host part of each target address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Verify the upstream certificate (on by default; turning it off is logged).
    #[serde(default = "default_true")]
    pub verify: bool,
    /// PEM file of CA certificates to trust instead of the built-in web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The route's name: unique; used in metrics, logs and analytics.
    pub name: String,
    /// Which requests the route takes: hosts, paths, methods, headers.
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    /// Where matching requests go: an upstream, or (with `topic`) nothing: each request
    /// becomes an event on the topic.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub upstream: String,
    /// Publish each request to this topic and answer `202 {"id"}` once it is durable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// On a topic route: webhooks from a sender, verified (signature on the raw body)
    /// before anything is published, and deduplicated on the sender's delivery id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundConfig>,
    /// Serve the AI gateway's APIs (OpenAI- and Anthropic-compatible) from the models
    /// under `ai`, or a prompt template as an API of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai: Option<crate::ai::AiRouteConfig>,
    /// Higher wins before any other precedence rule.
    #[serde(default)]
    pub priority: i32,
    /// Removes the matched prefix before forwarding (`/orders/42` → `/42`).
    #[serde(default)]
    pub strip_prefix: bool,
    /// Replaces the matched part of the path: the prefix of a prefix route, the whole path
    /// of an exact route, or a `$1`/`${name}` template over a regex route's captures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
    /// Send the client's `Host` upstream (otherwise the upstream's `host` or address).
    #[serde(default = "default_true")]
    pub preserve_host: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<ByteSize>,
    /// The route's policy chain; run in the documented order whatever the order here.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
}

/// How an inbound webhook proves where it comes from.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(tag = "scheme", rename_all = "snake_case", deny_unknown_fields)]
pub enum InboundConfig {
    /// Standard Webhooks (and Svix): `webhook-id`, `webhook-timestamp`,
    /// `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`.
    StandardWebhooks {
        /// `whsec_…` (several, space-separated, while the sender rotates), `env:` or `file:`.
        secret: crate::Secret,
        /// How far the timestamp may be from now.
        #[serde(default = "default_tolerance")]
        tolerance: Duration,
    },
    /// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, with
    /// `X-GitHub-Delivery` as the id.
    Github { secret: crate::Secret },
    /// Any HMAC-SHA256 of the body in a header.
    Hmac {
        secret: crate::Secret,
        /// The header carrying the signature.
        header: String,
        /// Text before the signature in the header (like `sha256=`).
        #[serde(default)]
        prefix: String,
        /// `hex` (default) or `base64`.
        #[serde(default = "default_encoding")]
        encoding: String,
        /// The header carrying the sender's delivery id, to deduplicate on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id_header: Option<String>,
    },
}

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

fn default_encoding() -> String {
    "hex".to_owned()
}

impl InboundConfig {
    pub fn secret(&self) -> &crate::Secret {
        match self {
            Self::StandardWebhooks { secret, .. }
            | Self::Github { secret }
            | Self::Hmac { secret, .. } => secret,
        }
    }

    pub fn secret_mut(&mut self) -> &mut crate::Secret {
        match self {
            Self::StandardWebhooks { secret, .. }
            | Self::Github { secret }
            | Self::Hmac { secret, .. } => secret,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Exact names, or `*.example.com` for exactly one extra label.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `/exact`, `/prefix/*`, or `~^/regex$` (anchored, linear-time engine).
    #[serde(default)]
    pub paths: Vec<String>,
    /// HTTP methods matched (all when empty).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header name → exact value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}
