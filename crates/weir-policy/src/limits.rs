//! Traffic limits: a smooth rate limit (GCRA) per key, kept in memory on this node or in
//! Redis for several nodes, and a per-route concurrency limit. Limiter state lives outside the snapshot, keyed by route
//! and limit settings, so a reload that leaves a limit unchanged keeps its counters.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use metrics::Counter;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use weir_config::{ConcurrencyConfig, OnStoreError, RateLimitConfig};
use weir_core::GatewayError;

use crate::store::{RedisStore, StoreError};
use crate::{Flow, Outcome, OutcomeKind, PolicyCtx, Reply};

const SHARDS: usize = 16;
/// A shard past this many keys drops the keys whose allowance has fully recovered.
const SWEEP_AT: usize = 4096;

fn now_nanos() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// What the response phase reports about the limit that applied.
#[derive(Debug, Clone, Copy)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    pub reset_secs: u64,
}

enum Key {
    Consumer,
    Ip,
    Route,
    Header(HeaderName),
}

/// GCRA state: per key, the theoretical arrival time of the next request.
struct State {
    shards: Vec<Mutex<FxHashMap<Box<str>, u64>>>,
}

static STATES: Mutex<Vec<(String, Weak<State>)>> = Mutex::new(Vec::new());

pub struct RateLimit {
    key: Key,
    limit: u32,
    /// Nanoseconds per request (the emission interval).
    interval: u64,
    /// How far ahead of now the arrival time may run: the burst allowance.
    tolerance: u64,
    backend: Backend,
    limited: Counter,
}

enum Backend {
    Memory(Arc<State>),
    Redis(Arc<Remote>),
}

/// A limit kept in Redis: every node naming the same server and route shares it.
struct Remote {
    store: Arc<RedisStore>,
    /// `weir:rl:{route}:{settings}:` — a changed limit starts afresh.
    prefix: String,
    timeout: std::time::Duration,
    on_error: OnStoreError,
    /// This node's own limit, for `on_store_error: local`.
    fallback: Arc<State>,
    store_errors: Counter,
}

impl RateLimit {
    /// `scope` names the route; together with the settings it finds the state to reuse.
    pub fn compile(c: &RateLimitConfig, scope: &str) -> Result<Self, String> {
        let key = match c.key.as_str() {
            "consumer" => Key::Consumer,
            "ip" => Key::Ip,
            "route" => Key::Route,
            other => match other.strip_prefix("header:") {
                Some(h) => Key::Header(
                    HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("rate_limit.key: {h:?} is not a header name"))?,
                ),
                None => return Err(format!("rate_limit.key: {other:?} is not a known key")),
            },
        };
        let per = c.per.get().as_nanos().min(u128::from(u64::MAX)) as u64;
        // At least 1 µs: the Redis store counts in microseconds.
        let interval = (per / u64::from(c.limit.max(1))).max(1_000);
        let burst = u64::from(c.burst.unwrap_or(c.limit).max(1));
        let tolerance = interval.saturating_mul(burst);
        let url = c
            .store
            .resolve(&|n| std::env::var(n).ok())
            .map_err(|e| format!("rate_limit.store: {e}"))?;
        let backend = if url == "memory" {
            Backend::Memory(memory_state(&format!("{scope}|{c:?}")))
        } else {
            let store = RedisStore::for_url(&url).map_err(|e| format!("rate_limit.store: {e}"))?;
            Backend::Redis(Arc::new(Remote {
                store,
                prefix: format!(
                    "weir:rl:{scope}:{}:{}:{}:",
                    c.key,
                    interval / 1_000,
                    tolerance / 1_000
                ),
                timeout: c.store_timeout.get(),
                on_error: c.on_store_error,
                fallback: memory_state(&format!("{scope}|{c:?}|fallback")),
                store_errors: metrics::counter!(crate::rules::POLICY_OUTCOMES, "policy" => "rate_limit", "outcome" => "store_error"),
            }))
        };
        Ok(Self {
            key,
            limit: c.limit,
            interval,
            tolerance,
            backend,
            limited: metrics::counter!(crate::rules::POLICY_OUTCOMES, "policy" => "rate_limit", "outcome" => "limited"),
        })
    }

    fn key_of<'a>(&self, headers: &HeaderMap, ctx: &'a PolicyCtx) -> Cow<'a, str> {
        let ip = || Cow::Owned(format!("i:{}", ctx.client_ip));
        match &self.key {
            Key::Consumer => ctx
                .consumer
                .as_ref()
                .map_or_else(ip, |c| Cow::Borrowed(&*c.rate_key)),
            Key::Ip => ip(),
            Key::Route => Cow::Borrowed("r"),
            Key::Header(h) => headers
                .get(h)
                .map(|v| Cow::Owned(["h:", &*String::from_utf8_lossy(v.as_bytes())].concat()))
                .unwrap_or_else(ip),
        }
    }

    pub fn check(&self, headers: &HeaderMap, ctx: &mut PolicyCtx) -> Flow {
        let key = self.key_of(headers, ctx);
        match &self.backend {
            Backend::Memory(state) => {
                let (admitted, ahead) = state.step(&key, self.interval, self.tolerance);
                self.answer(admitted, ahead, ctx)
            }
            Backend::Redis(remote) => {
                let key = key.into_owned();
                let remote = Arc::clone(remote);
                let (interval, tolerance) = (self.interval / 1_000, self.tolerance / 1_000);
                Flow::Await(
                    Box::pin(async move {
                        // Long keys (header values) are hashed: Redis keys stay small.
                        let key = if key.len() > 128 {
                            hex(&crate::consumers::digest(key.as_bytes()))
                        } else {
                            key
                        };
                        let full = [remote.prefix.as_str(), &key].concat();
                        let answer = remote
                            .store
                            .gcra(&full, interval, tolerance, remote.timeout)
                            .await;
                        Outcome(OutcomeKind::Rate(answer, key))
                    }),
                    0,
                )
            }
        }
    }

    /// Applies the store's answer (Redis: `(admitted, µs ahead)`).
    pub fn complete(
        &self,
        answer: Result<(bool, u64), StoreError>,
        key: String,
        ctx: &mut PolicyCtx,
    ) -> Flow {
        match answer {
            Ok((admitted, ahead_us)) => self.answer(admitted, ahead_us.saturating_mul(1_000), ctx),
            Err(_) => {
                let Backend::Redis(remote) = &self.backend else {
                    return Flow::Continue;
                };
                remote.store_errors.increment(1);
                match remote.on_error {
                    OnStoreError::Local => {
                        let (admitted, ahead) =
                            remote.fallback.step(&key, self.interval, self.tolerance);
                        self.answer(admitted, ahead, ctx)
                    }
                    OnStoreError::Allow => Flow::Continue,
                    OnStoreError::Deny => Flow::Respond(Reply::Error(
                        GatewayError::LimitStoreUnavailable,
                        vec![(http::header::RETRY_AFTER, HeaderValue::from_static("1"))],
                    )),
                }
            }
        }
    }

    /// `ahead`: when admitted, how far the new arrival time runs ahead of now; when not,
    /// how far the current one does (ns).
    fn answer(&self, admitted: bool, ahead: u64, ctx: &mut PolicyCtx) -> Flow {
        if admitted {
            ctx.rate = Some(RateInfo {
                limit: self.limit,
                remaining: (self.tolerance.saturating_sub(ahead) / self.interval) as u32,
                reset_secs: ahead.div_ceil(1_000_000_000),
            });
            return Flow::Continue;
        }
        self.limited.increment(1);
        // Allowed again once the arrival time falls back within the tolerance.
        let wait = (ahead + self.interval).saturating_sub(self.tolerance);
        let retry = wait.div_ceil(1_000_000_000).max(1);
        let info = RateInfo {
            limit: self.limit,
            remaining: 0,
            reset_secs: ahead.div_ceil(1_000_000_000),
        };
        let mut extra = rate_headers(&info).to_vec();
        extra.push((http::header::RETRY_AFTER, HeaderValue::from(retry)));
        Flow::Respond(Reply::Error(GatewayError::TooManyRequests, extra))
    }
}

fn memory_state(id: &str) -> Arc<State> {
    let mut states = STATES.lock();
    states.retain(|(_, w)| w.strong_count() > 0);
    if let Some(s) = states
        .iter()
        .find(|(k, _)| k == id)
        .and_then(|(_, w)| w.upgrade())
    {
        return s;
    }
    let s = Arc::new(State {
        shards: (0..SHARDS)
            .map(|_| Mutex::new(FxHashMap::default()))
            .collect(),
    });
    states.push((id.to_owned(), Arc::downgrade(&s)));
    s
}

impl State {
    /// One GCRA step: `(admitted, ns ahead)` as [`RateLimit::answer`] takes it.
    fn step(&self, key: &str, interval: u64, tolerance: u64) -> (bool, u64) {
        let now = now_nanos();
        let mut map = self.shards[shard_of(key)].lock();
        // A known key is updated in place: no allocation on the common path.
        if let Some(tat) = map.get_mut(key) {
            let at = (*tat).max(now);
            let next = at + interval;
            if next - now <= tolerance {
                *tat = next;
                return (true, next - now);
            }
            return (false, at - now);
        }
        if map.len() >= SWEEP_AT {
            map.retain(|_, tat| *tat > now);
        }
        let next = now + interval;
        if interval <= tolerance {
            map.insert(key.into(), next);
            (true, interval)
        } else {
            (false, 0)
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn shard_of(key: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<rustc_hash::FxHasher>::default().hash_one(key) as usize % SHARDS
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (IETF draft names).
pub fn rate_headers(info: &RateInfo) -> [(HeaderName, HeaderValue); 3] {
    [
        (RATELIMIT_LIMIT, number(u64::from(info.limit))),
        (RATELIMIT_REMAINING, number(u64::from(info.remaining))),
        (RATELIMIT_RESET, number(info.reset_secs)),
    ]
}

/// A number as a header value; small ones come from a table made once, so the three
/// headers on every limited route cost no allocation.
fn number(n: u64) -> HeaderValue {
    const TABLE: usize = 4096;
    static VALUES: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    match usize::try_from(n) {
        Ok(i) if i < TABLE => {
            VALUES.get_or_init(|| (0..TABLE as u64).map(HeaderValue::from).collect())[i].clone()
        }
        _ => HeaderValue::from(n),
    }
}

// === impl Concurrency ===

pub struct Concurrency {
    max: u32,
    current: Arc<AtomicU32>,
    rejected: Counter,
}

/// Holds one slot of a concurrency limit until dropped (the proxy keeps it with the
/// response body).
#[derive(Debug)]
pub struct Permit(Arc<AtomicU32>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

static SLOTS: Mutex<Vec<(String, Weak<AtomicU32>)>> = Mutex::new(Vec::new());

impl Concurrency {
    pub fn compile(c: &ConcurrencyConfig, scope: &str) -> Self {
        // In-flight counts survive reloads: requests started before a reload still hold
        // their slots.
        let mut slots = SLOTS.lock();
        slots.retain(|(_, w)| w.strong_count() > 0);
        let current = match slots
            .iter()
            .find(|(k, _)| k == scope)
            .and_then(|(_, w)| w.upgrade())
        {
            Some(c) => c,
            None => {
                let c = Arc::new(AtomicU32::new(0));
                slots.push((scope.to_owned(), Arc::downgrade(&c)));
                c
            }
        };
        Self {
            max: c.max,
            current,
            rejected: metrics::counter!(crate::rules::POLICY_OUTCOMES, "policy" => "concurrency", "outcome" => "rejected"),
        }
    }

    pub fn acquire(&self, ctx: &mut PolicyCtx) -> Flow {
        let prev = self.current.fetch_add(1, Ordering::AcqRel);
        let permit = Permit(Arc::clone(&self.current));
        if prev >= self.max {
            drop(permit);
            self.rejected.increment(1);
            return Flow::Respond(Reply::Error(
                GatewayError::Overloaded,
                vec![(http::header::RETRY_AFTER, HeaderValue::from_static("1"))],
            ));
        }
        ctx.permits.push(permit);
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limit: u32, per_ms: u64, burst: Option<u32>, scope: &str) -> RateLimit {
        let c = RateLimitConfig {
            key: "ip".into(),
            limit,
            per: weir_config::Duration::from_millis(per_ms),
            burst,
            store: "memory".into(),
            on_store_error: OnStoreError::Local,
            store_timeout: weir_config::Duration::from_millis(100),
        };
        RateLimit::compile(&c, scope).unwrap()
    }

    fn ctx() -> PolicyCtx {
        PolicyCtx::new("192.0.2.1".parse().unwrap())
    }

    #[test]
    fn admits_the_burst_then_limits_with_retry_after() {
        let rl = limiter(5, 60_000, None, "gcra-burst");
        let h = HeaderMap::new();
        let mut c = ctx();
        for i in 0..5 {
            assert!(
                matches!(rl.check(&h, &mut c), Flow::Continue),
                "request {i}"
            );
            assert_eq!(c.rate.unwrap().remaining, 4 - i);
        }
        match rl.check(&h, &mut c) {
            Flow::Respond(Reply::Error(GatewayError::TooManyRequests, extra)) => {
                let retry = extra
                    .iter()
                    .find(|(n, _)| n == http::header::RETRY_AFTER)
                    .unwrap();
                let secs: u64 = retry.1.to_str().unwrap().parse().unwrap();
                assert!(
                    (11..=12).contains(&secs),
                    "one request per 12 s: retry after {secs}"
                );
            }
            _ => panic!("sixth request admitted"),
        }
    }

    #[test]
    fn keys_are_independent_and_state_survives_recompiling() {
        let rl = limiter(1, 60_000, None, "gcra-keys");
        let h = HeaderMap::new();
        assert!(matches!(rl.check(&h, &mut ctx()), Flow::Continue));
        assert!(matches!(rl.check(&h, &mut ctx()), Flow::Respond(_)));
        let mut other = PolicyCtx::new("192.0.2.2".parse().unwrap());
        assert!(matches!(rl.check(&h, &mut other), Flow::Continue));
        let again = limiter(1, 60_000, None, "gcra-keys");
        assert!(
            matches!(again.check(&h, &mut ctx()), Flow::Respond(_)),
            "a reload with the same settings keeps the state"
        );
    }

    #[test]
    fn allowance_recovers_smoothly() {
        let rl = limiter(10, 100, Some(1), "gcra-smooth");
        let h = HeaderMap::new();
        assert!(matches!(rl.check(&h, &mut ctx()), Flow::Continue));
        assert!(matches!(rl.check(&h, &mut ctx()), Flow::Respond(_)));
        std::thread::sleep(std::time::Duration::from_millis(12));
        assert!(
            matches!(rl.check(&h, &mut ctx()), Flow::Continue),
            "one interval (10 ms) later"
        );
    }

    #[test]
    fn concurrency_permits_are_released_on_drop() {
        let c = Concurrency::compile(&ConcurrencyConfig { max: 2 }, "conc-test");
        let mut a = ctx();
        assert!(matches!(c.acquire(&mut a), Flow::Continue));
        assert!(matches!(c.acquire(&mut a), Flow::Continue));
        let mut b = ctx();
        assert!(matches!(c.acquire(&mut b), Flow::Respond(_)));
        drop(a);
        assert!(matches!(c.acquire(&mut b), Flow::Continue));
    }
}
