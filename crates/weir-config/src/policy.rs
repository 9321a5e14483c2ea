//! Policy and consumer configuration: the serde shapes of `consumers`, `policy_defaults`
//! and each route's `policies`, with their validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Duration};

/// A client identity that credentials resolve to.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// The consumer's name: 1-128 letters, digits, '-', '_' or '.'; shown in logs and analytics.
    pub name: String,
    /// Groups the consumer belongs to (what `acl` and `ai_limits` per group name).
    #[serde(default)]
    pub groups: Vec<String>,
    /// How the consumer proves who it is: API keys, Basic users, JWT subjects.
    #[serde(default)]
    pub credentials: Vec<CredentialConfig>,
}

/// A credential of a consumer. Secrets are given by reference: `env:NAME`, `file:PATH`, or
/// a literal.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialConfig {
    /// An API key: `key` (a literal, `env:NAME` or `file:PATH`), or `key_sha256`, the
    /// hex SHA-256 of the key (what the admin API stores, so the key itself is never kept).
    Key {
        /// The key: a literal, `env:NAME` or `file:PATH` (stored as its SHA-256).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<crate::Secret>,
        /// The key's hex SHA-256 instead of the key itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_sha256: Option<String>,
        /// On AI routes: the model names this key may use (all when empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        models: Vec<String>,
        /// What records and `ai_limits` (`per: key`) call this key; without one, the
        /// first twelve hex digits of its SHA-256 (`sha256:…`). Never the key itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// HTTP Basic: a user name and an argon2 PHC hash (`weir hash-password` makes one).
    Basic {
        /// The Basic user name.
        username: String,
        /// The password's argon2 PHC hash (`weir hash-password` makes one).
        password_hash: String,
    },
    /// A JWT whose `iss` and `sub` claims name this consumer.
    Jwt {
        /// The token's `iss` claim.
        issuer: String,
        /// The token's `sub` claim.
        subject: String,
    },
}

/// One policy of a route's chain, written as a one-key map: `- key_auth: { … }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyConfig {
    KeyAuth(KeyAuthConfig),
    Acl(AclConfig),
    Ip(IpConfig),
    RequestSize(RequestSizeConfig),
    Headers(HeadersConfig),
    Cors(CorsConfig),
    StaticResponse(StaticResponseConfig),
    RateLimit(RateLimitConfig),
    Concurrency(ConcurrencyConfig),
    BasicAuth(BasicAuthConfig),
    Jwt(JwtConfig),
    Cache(CacheConfig),
    /// AI routes: requests and tokens per minute and a monthly USD budget, per consumer
    /// (or per group, or for the whole route), shared by nodes through Redis.
    AiLimits(AiLimitsConfig),
}

impl PolicyConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::KeyAuth(_) => "key_auth",
            Self::Acl(_) => "acl",
            Self::Ip(_) => "ip",
            Self::RequestSize(_) => "request_size",
            Self::Headers(_) => "headers",
            Self::Cors(_) => "cors",
            Self::StaticResponse(_) => "static_response",
            Self::RateLimit(_) => "rate_limit",
            Self::Concurrency(_) => "concurrency",
            Self::BasicAuth(_) => "basic_auth",
            Self::Jwt(_) => "jwt",
            Self::Cache(_) => "cache",
            Self::AiLimits(_) => "ai_limits",
        }
    }
}

/// API keys: the client sends a consumer's key; `401` without a valid one.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthConfig {
    /// Header carrying the key.
    #[serde(default = "default_key_header")]
    pub header: String,
    /// Also accept `Authorization: Bearer <key>`.
    #[serde(default = "yes")]
    pub bearer: bool,
    /// Also accept the key in this query parameter (off unless named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Remove the credential before forwarding (default true).
    #[serde(default = "yes")]
    pub hide_credentials: bool,
}

impl Default for KeyAuthConfig {
    fn default() -> Self {
        Self {
            header: default_key_header(),
            bearer: true,
            query: None,
            hide_credentials: true,
        }
    }
}

fn default_key_header() -> String {
    "x-api-key".to_owned()
}

fn yes() -> bool {
    true
}

/// Allow or deny by consumer group. With `allow`, a consumer must be in one of the groups;
/// `deny` wins over `allow`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// Consumer groups let through (all when empty).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Consumer groups refused with `403`, checked before `allow`.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// Allow or deny by client address (CIDR or IP); `deny` wins over `allow`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IpConfig {
    /// Client addresses or CIDR blocks let through (all when empty).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Client addresses or CIDR blocks refused with `403`, checked first.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// A body size limit for this route (`413` above it).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSizeConfig {
    pub max: ByteSize,
}

/// Header transforms on the request and on the answer.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// Changes to the request before it goes upstream.
    #[serde(default)]
    pub request: HeaderOps,
    /// Changes to the answer before it goes to the client.
    #[serde(default)]
    pub response: HeaderOps,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Replace (or create) these headers.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append these values.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Header names removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// CORS: answers browsers' preflight requests and marks answers for the allowed origins.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins (`https://app.example.com`), or `*`.
    pub origins: Vec<String>,
    /// Methods a browser may use.
    #[serde(default = "default_cors_methods")]
    pub methods: Vec<String>,
    /// Request headers a browser may send (besides the simple ones).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Response headers a browser script may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Allow cookies and credentials (`Access-Control-Allow-Credentials: true`).
    #[serde(default)]
    pub credentials: bool,
    #[serde(default = "default_cors_max_age")]
    pub max_age: Duration,
}

fn default_cors_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .map(String::from)
        .to_vec()
}

fn default_cors_max_age() -> Duration {
    Duration::from_secs(600)
}

/// Answers from the gateway without calling the upstream: a maintenance page, a redirect.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticResponseConfig {
    /// The answer's status code.
    #[serde(default = "default_static_status")]
    pub status: u16,
    /// The answer's body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The answer's `Content-Type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// For redirects: sets `Location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// More headers of the answer.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_static_status() -> u16 {
    200
}

/// A smooth limit (GCRA): `limit` requests `per` period, with bursts up to `burst`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `consumer` (falls back to the client address when unauthenticated), `ip`, `route`,
    /// or `header:NAME` (falls back to the client address when absent).
    #[serde(default = "default_rl_key")]
    pub key: String,
    /// Requests allowed per `window`.
    pub limit: u32,
    pub per: Duration,
    /// Requests allowed at once after a quiet period; defaults to `limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// `memory` (this node) or `redis://[user:password@]host:port[/db]` (`rediss://` for
    /// TLS): one limit shared by every node that names the same server.
    #[serde(default = "default_rl_store")]
    pub store: crate::SecretUrl,
    /// What to do when the Redis store cannot answer: `local` (default: this node's own
    /// limit), `allow` or `deny`.
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// How long a request waits for the Redis store before `on_store_error` applies.
    #[serde(default = "default_store_timeout")]
    pub store_timeout: Duration,
}

/// The answer a limit gives while its shared store is unreachable.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Apply the same limit in this node's memory until the store is back.
    #[default]
    Local,
    /// Admit the request (availability first); the request is counted as a store error.
    Allow,
    /// Refuse with 503.
    Deny,
}

fn default_store_timeout() -> Duration {
    Duration::from_millis(100)
}

fn default_rl_key() -> String {
    "consumer".to_owned()
}

/// Limits on an AI route's use, counted per `per`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiLimitsConfig {
    /// Requests per minute allowed (none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Input and output tokens together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Spend per calendar month (UTC), at the configured prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd_per_month: Option<f64>,
    /// `consumer` (default), `key` (each API key of a consumer on its own; callers
    /// without a key, as with JWT, count per consumer), `group` (each of the consumer's
    /// groups has the limits), or `route` (everyone together).
    #[serde(default = "default_ai_per")]
    pub per: String,
    /// `memory` (this node) or `redis://…`: shared by every node naming it.
    #[serde(default = "default_rl_store")]
    pub store: crate::SecretUrl,
    /// The output tokens a request without `max_tokens` is assumed to use when its cost is
    /// reserved against the budget.
    #[serde(default = "default_reserve_tokens")]
    pub default_max_tokens: u64,
}

// Budgets are finite (validation refuses NaN), so equality is an equivalence.
impl Eq for AiLimitsConfig {}

fn default_ai_per() -> String {
    "consumer".to_owned()
}

fn default_reserve_tokens() -> u64 {
    4096
}

fn default_rl_store() -> crate::SecretUrl {
    crate::SecretUrl::from("memory")
}

/// At most `max` requests of this route in flight at once (a streaming response counts
/// until it ends); more get 503.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyConfig {
    /// Requests in flight at once on this route (per node); more get `503`.
    pub max: u32,
}

/// HTTP Basic authentication against consumers' `basic` credentials.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// The realm named in the `WWW-Authenticate` challenge.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Remove `Authorization` before forwarding (default true).
    #[serde(default = "yes")]
    pub hide_credentials: bool,
}

fn default_realm() -> String {
    "weir".to_owned()
}

/// Bearer JWTs verified against configured keys. Each key is pinned to one algorithm; the
/// token's `alg` must be that one.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Verification keys (HMAC secrets or public keys), tried by `kid`.
    #[serde(default)]
    pub keys: Vec<JwtKeyConfig>,
    /// A JWKS document to take keys from (alongside `keys`): `https://`, or `http://` on
    /// this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Fetched keys are used this long, then refreshed in the background.
    #[serde(default = "default_jwks_max_age")]
    pub jwks_max_age: Duration,
    /// A token with an unknown `kid` refetches the document at most once per this
    /// interval (so unknown kids cannot make Weir hammer the identity provider).
    #[serde(default = "default_jwks_min_interval")]
    pub jwks_min_interval: Duration,
    /// While the document cannot be fetched, the last good keys keep working this long
    /// after their fetch; then tokens are refused until a fetch succeeds.
    #[serde(default = "default_jwks_max_stale")]
    pub jwks_max_stale: Duration,
    /// Accepted `aud` values; empty = `aud` is not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted `iss` values; empty = any issuer (the consumer mapping still needs one).
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Clock skew allowed for `exp` and `nbf` (at most 60s).
    #[serde(default = "default_leeway")]
    pub leeway: Duration,
    /// Remove `Authorization` before forwarding (default true).
    #[serde(default = "yes")]
    pub hide_credentials: bool,
}

fn default_jwks_max_age() -> Duration {
    Duration::from_secs(600)
}

fn default_jwks_min_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_jwks_max_stale() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// Matched against the token's `kid`; a key without one serves tokens without `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA.
    pub alg: String,
    /// PEM public key (RS*, PS*, ES*, EdDSA) or shared secret (HS*): `env:`, `file:` or
    /// inline.
    pub key: crate::Secret,
}

/// A response cache for the route: `GET`/`HEAD` answers kept for `ttl` unless the upstream's
/// `Cache-Control` says otherwise.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Freshness when the upstream gives no `s-maxage`/`max-age`.
    pub ttl: Duration,
    /// `memory` (this node) or `redis://host:port` (shared by every node naming it).
    #[serde(default = "default_rl_store")]
    pub store: crate::SecretUrl,
    /// Memory store: the most bytes (bodies and headers) this route's cache holds.
    #[serde(default = "default_cache_size")]
    pub max_size: ByteSize,
    /// The largest body stored; larger answers pass through uncached.
    #[serde(default = "default_cache_body")]
    pub max_body: ByteSize,
    /// Methods answered from the cache.
    #[serde(default = "default_cache_methods")]
    pub methods: Vec<String>,
    /// Status codes stored.
    #[serde(default = "default_cache_statuses")]
    pub statuses: Vec<u16>,
    /// Redis store: how long a lookup waits before the request goes to the upstream.
    #[serde(default = "default_store_timeout")]
    pub store_timeout: Duration,
}

fn default_cache_size() -> ByteSize {
    ByteSize(64 << 20)
}

fn default_cache_body() -> ByteSize {
    ByteSize(1 << 20)
}

fn default_cache_methods() -> Vec<String> {
    vec!["GET".to_owned(), "HEAD".to_owned()]
}

fn default_cache_statuses() -> Vec<u16> {
    vec![200, 203, 204, 301, 308, 404, 410]
}
