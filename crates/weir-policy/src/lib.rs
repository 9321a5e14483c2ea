//! Route policies: the cross-cutting checks and transforms a route runs around its target.
//! Each route's chain is compiled into per-phase lists of a closed enum, in one documented
//! order whatever the order in the file (`docs/configuration.md`, "Policies"):
//!
//! request:  ip → cors (preflight answered here) → static_response → key_auth →
//!           basic_auth / jwt → acl → rate_limit → concurrency → headers
//! then:     cache lookup (the pipeline serves a hit or fills a miss)
//! response: cors → rate-limit headers → headers
//!
//! `request_size` has no phase of its own: it lowers the route's body limit, which the
//! pipeline enforces from `Content-Length` and while streaming.

mod basic;
mod cache;
mod consumers;
mod jwks;
mod jwt;
mod limits;
mod rules;
mod store;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use weir_config::PolicyConfig;
use weir_core::GatewayError;

use basic::BasicAuth;
pub use basic::hash_password;
pub use cache::{Cache, CacheRequest, Fill, Invalidate, Lookup, Stored, X_CACHE_STATUS};
pub use consumers::{Consumer, Consumers};
pub use jwks::Fetcher;
use jwt::Jwt;
use limits::{Concurrency, RateLimit};
pub use limits::{Permit, RateInfo};
use rules::{Acl, Cors, HeaderOps, IpRule, KeyAuth, StaticReply};
pub use store::{RedisStore, StoreError};

/// Per-request state the policies share.
#[derive(Debug)]
pub struct PolicyCtx {
    pub client_ip: IpAddr,
    pub consumer: Option<Arc<Consumer>>,
    /// The request's `Origin` when CORS allowed it, for the response phase.
    pub cors_origin: Option<HeaderValue>,
    /// A replacement query string (a credential was removed from it).
    pub query: Option<String>,
    /// The rate limit that admitted the request, for the `RateLimit-*` response headers.
    pub rate: Option<RateInfo>,
    /// Concurrency slots held until the response ends.
    pub permits: Vec<Permit>,
}

impl PolicyCtx {
    pub fn new(client_ip: IpAddr) -> Self {
        Self {
            client_ip,
            consumer: None,
            cors_origin: None,
            query: None,
            rate: None,
            permits: Vec::new(),
        }
    }
}

/// What a request-phase policy decided.
pub enum Flow {
    Continue,
    Respond(Reply),
    /// The policy at this step needs work that must not block the worker thread (a
    /// password hash on the blocking pool, a round trip to the shared store): await the
    /// future, then hand its outcome to [`PolicyChain::resume`].
    Await(Pending, usize),
}

/// The outstanding work of a [`Flow::Await`].
pub type Pending = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// What the awaited work found; only the policy that asked for it reads it.
pub struct Outcome(OutcomeKind);

enum OutcomeKind {
    Verified(Option<Arc<Consumer>>),
    /// The store's answer, and the key it was asked about.
    Rate(Result<(bool, u64), store::StoreError>, String),
    /// The JWKS document was fetched (or failed to be: the old keys stay).
    Jwks,
}

/// An answer made by a policy.
pub enum Reply {
    /// A refusal, rendered with the gateway's JSON error shape plus these headers.
    Error(GatewayError, Vec<(HeaderName, HeaderValue)>),
    /// A configured answer (static response, CORS preflight).
    Static {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
}

enum RequestPolicy {
    Ip(IpRule),
    Cors(Arc<Cors>),
    Static(StaticReply),
    KeyAuth(KeyAuth),
    BasicAuth(BasicAuth),
    Jwt(Jwt),
    Acl(Acl),
    RateLimit(RateLimit),
    Concurrency(Concurrency),
    Headers(HeaderOps),
}

enum ResponsePolicy {
    Cors(Arc<Cors>),
    RateHeaders,
    Headers(HeaderOps),
}

/// A route's compiled chain. Empty chains cost one branch per phase.
#[derive(Default)]
pub struct PolicyChain {
    request: Vec<RequestPolicy>,
    response: Vec<ResponsePolicy>,
    /// The lowest `request_size.max`, if any.
    pub max_body_size: Option<u64>,
    /// The response cache, consulted after the request phase.
    pub cache: Option<Cache>,
}

impl PolicyChain {
    /// Compiles a route's policies over the defaults (a route policy replaces a default of
    /// the same kind). `scope` (the route's name) keys limiter state that survives reloads.
    pub fn compile(
        route: &[PolicyConfig],
        defaults: &[PolicyConfig],
        consumers: &Arc<Consumers>,
        scope: &str,
        fetch: &Fetcher,
    ) -> Result<Self, String> {
        let mut all: Vec<&PolicyConfig> = defaults
            .iter()
            .filter(|d| !route.iter().any(|r| r.kind() == d.kind()))
            .collect();
        all.extend(route.iter());
        let rank = |p: &PolicyConfig| match p {
            PolicyConfig::Ip(_) => 0,
            PolicyConfig::Cors(_) => 1,
            PolicyConfig::StaticResponse(_) => 2,
            PolicyConfig::KeyAuth(_) => 3,
            PolicyConfig::BasicAuth(_) => 4,
            PolicyConfig::Jwt(_) => 4,
            PolicyConfig::Acl(_) => 5,
            PolicyConfig::RateLimit(_) => 6,
            PolicyConfig::Concurrency(_) => 7,
            PolicyConfig::RequestSize(_) => 8,
            PolicyConfig::Headers(_) => 9,
            PolicyConfig::Cache(_) => 10,
            PolicyConfig::AiLimits(_) => 11,
        };
        all.sort_by_key(|p| rank(p));
        let mut chain = PolicyChain::default();
        for p in all {
            match p {
                PolicyConfig::Ip(c) => chain.request.push(RequestPolicy::Ip(IpRule::compile(c))),
                PolicyConfig::Cors(c) => {
                    let cors = Arc::new(Cors::compile(c)?);
                    chain.request.push(RequestPolicy::Cors(Arc::clone(&cors)));
                    chain.response.push(ResponsePolicy::Cors(cors));
                }
                PolicyConfig::StaticResponse(c) => chain
                    .request
                    .push(RequestPolicy::Static(StaticReply::compile(c)?)),
                PolicyConfig::KeyAuth(c) => {
                    chain.request.push(RequestPolicy::KeyAuth(KeyAuth::compile(
                        c,
                        Arc::clone(consumers),
                    )?));
                }
                PolicyConfig::Jwt(c) => {
                    chain.request.push(RequestPolicy::Jwt(Jwt::compile(
                        c,
                        Arc::clone(consumers),
                        fetch,
                    )?));
                }
                PolicyConfig::BasicAuth(c) => {
                    chain
                        .request
                        .push(RequestPolicy::BasicAuth(BasicAuth::compile(
                            c,
                            Arc::clone(consumers),
                        )?));
                }
                PolicyConfig::Acl(c) => chain.request.push(RequestPolicy::Acl(Acl::compile(c))),
                PolicyConfig::RateLimit(c) => {
                    chain
                        .request
                        .push(RequestPolicy::RateLimit(RateLimit::compile(c, scope)?));
                    chain.response.push(ResponsePolicy::RateHeaders);
                }
                PolicyConfig::Concurrency(c) => {
                    chain
                        .request
                        .push(RequestPolicy::Concurrency(Concurrency::compile(c, scope)));
                }
                PolicyConfig::Cache(c) => chain.cache = Some(Cache::compile(c, scope)?),
                // Enforced by the AI gateway, which knows tokens and prices.
                PolicyConfig::AiLimits(_) => {}
                PolicyConfig::RequestSize(c) => {
                    chain.max_body_size =
                        Some(chain.max_body_size.map_or(c.max.0, |m| m.min(c.max.0)));
                }
                PolicyConfig::Headers(c) => {
                    let req = HeaderOps::compile(&c.request)?;
                    let rsp = HeaderOps::compile(&c.response)?;
                    if !req.is_empty() {
                        chain.request.push(RequestPolicy::Headers(req));
                    }
                    if !rsp.is_empty() {
                        chain.response.push(ResponsePolicy::Headers(rsp));
                    }
                }
            }
        }
        Ok(chain)
    }

    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty() && self.cache.is_none()
    }

    /// Runs the request phase; stops at the first policy that answers. The method and URI
    /// are read-only here: the path was normalized and routed on already.
    pub fn on_request(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &mut HeaderMap,
        ctx: &mut PolicyCtx,
    ) -> Flow {
        self.on_request_from(0, method, uri, headers, ctx)
    }

    /// Runs the request phase from step `from`.
    fn on_request_from(
        &self,
        from: usize,
        method: &http::Method,
        uri: &http::Uri,
        headers: &mut HeaderMap,
        ctx: &mut PolicyCtx,
    ) -> Flow {
        for (step, p) in self.request.iter().enumerate().skip(from) {
            let flow = match p {
                RequestPolicy::BasicAuth(b) => b.check(headers, ctx),
                RequestPolicy::Ip(r) => r.check(ctx),
                RequestPolicy::Cors(c) => c.on_request(method, headers, ctx),
                RequestPolicy::Static(s) => Flow::Respond(s.reply()),
                RequestPolicy::KeyAuth(k) => k.check(uri, headers, ctx),
                RequestPolicy::Jwt(j) => j.check(headers, ctx),
                RequestPolicy::Acl(a) => a.check(ctx),
                RequestPolicy::RateLimit(r) => r.check(headers, ctx),
                RequestPolicy::Concurrency(c) => c.acquire(ctx),
                RequestPolicy::Headers(h) => {
                    h.apply(headers);
                    Flow::Continue
                }
            };
            match flow {
                Flow::Continue => {}
                Flow::Await(pending, _) => return Flow::Await(pending, step),
                Flow::Respond(_) => return flow,
            }
        }
        Flow::Continue
    }

    /// Hands the outcome of a [`Flow::Await`] to the policy at `step`, then runs the rest
    /// of the chain.
    pub fn resume(
        &self,
        step: usize,
        outcome: Outcome,
        method: &http::Method,
        uri: &http::Uri,
        headers: &mut HeaderMap,
        ctx: &mut PolicyCtx,
    ) -> Flow {
        let flow = match (self.request.get(step), outcome.0) {
            (Some(RequestPolicy::BasicAuth(b)), OutcomeKind::Verified(consumer)) => {
                b.complete(consumer, headers, ctx)
            }
            (Some(RequestPolicy::RateLimit(r)), OutcomeKind::Rate(answer, key)) => {
                r.complete(answer, key, ctx)
            }
            (Some(RequestPolicy::Jwt(j)), OutcomeKind::Jwks) => j.complete(headers, ctx),
            // An outcome always returns to the policy that asked for it.
            _ => Flow::Respond(Reply::Error(GatewayError::Internal, Vec::new())),
        };
        match flow {
            Flow::Continue => self.on_request_from(step + 1, method, uri, headers, ctx),
            Flow::Await(pending, _) => Flow::Await(pending, step),
            Flow::Respond(_) => flow,
        }
    }

    /// Runs the response phase on the response headers (also for answers made by Weir).
    pub fn on_response(&self, headers: &mut HeaderMap, ctx: &PolicyCtx) {
        for p in &self.response {
            match p {
                ResponsePolicy::Cors(c) => c.on_response(headers, ctx),
                ResponsePolicy::RateHeaders => {
                    if let Some(info) = &ctx.rate {
                        for (n, v) in limits::rate_headers(info) {
                            headers.insert(n, v);
                        }
                    }
                }
                ResponsePolicy::Headers(h) => h.apply(headers),
            }
        }
    }
}

/// Names of the identity headers Weir sets for upstreams; clients may never send them.
pub const CONSUMER_NAME: HeaderName = HeaderName::from_static("x-consumer-name");
pub const CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");

/// Records an authenticated consumer: the identity headers the upstream receives, and the
/// context later policies (acl, rate_limit) read. Shared by every credential policy.
pub(crate) fn admit(consumer: &Arc<Consumer>, headers: &mut HeaderMap, ctx: &mut PolicyCtx) {
    headers.insert(CONSUMER_NAME, consumer.name_header.clone());
    match &consumer.groups_header {
        Some(g) => {
            headers.insert(CONSUMER_GROUPS, g.clone());
        }
        None => {
            headers.remove(CONSUMER_GROUPS);
        }
    }
    ctx.consumer = Some(Arc::clone(consumer));
}

/// A credential header sent more than once is ambiguous (components disagree on which copy
/// wins), so it is refused with 400 rather than resolved.
pub(crate) fn repeated_credential(headers: &HeaderMap, name: &HeaderName) -> Option<Flow> {
    headers.get_all(name).iter().nth(1).is_some().then(|| {
        Flow::Respond(Reply::Error(
            GatewayError::BadRequest("a credential header is repeated"),
            Vec::new(),
        ))
    })
}
