//! Response cache: which requests may be answered from it and which answers may be kept
//! (RFC 9111 for a shared cache), the key, the stores (memory bounded by bytes, or Redis)
//! and single-flight for concurrent misses. It runs after the request-phase policies; the
//! pipeline does the I/O: it calls [`Cache::lookup`], and on a miss sends the request
//! upstream and hands a storable answer to [`Fill::store`].

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use metrics::Counter;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use weir_config::CacheConfig;

use crate::store::RedisStore;

/// Tells the client how the cache answered: `HIT`, `MISS`, `EXPIRED` or `BYPASS`.
pub const X_CACHE_STATUS: HeaderName = HeaderName::from_static("x-cache-status");
/// Variants (distinct `Vary` values) kept per URL.
const MAX_VARIANTS: usize = 8;
/// Header names one `Vary` may list before the answer is not kept.
const MAX_VARY: usize = 8;
/// How long a request waits for another request's fill of the same key.
const FLIGHT_WAIT: Duration = Duration::from_secs(10);

/// Request headers that make some frameworks answer for another method or URL than the
/// one in the key: requests carrying them are never answered from, nor stored in, the cache.
const OVERRIDES: [HeaderName; 6] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-forwarded-prefix"),
];

type Key = [u8; 32];

/// One kept answer, with the request header values it varies on.
#[derive(Debug)]
pub struct Stored {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Unix milliseconds when it was received, minus the upstream's `Age`.
    born_ms: u64,
    /// Milliseconds it stays fresh after `born_ms`.
    fresh_ms: u64,
    vary: Vec<(HeaderName, Option<Bytes>)>,
}

impl Stored {
    /// The `Age` to send with it, in seconds.
    pub fn age_secs(&self) -> u64 {
        now_ms().saturating_sub(self.born_ms) / 1000
    }

    fn is_fresh(&self, now: u64) -> bool {
        now < self.born_ms.saturating_add(self.fresh_ms)
    }

    fn matches(&self, req: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, want)| joined(req, name).as_ref() == want.as_ref())
    }

    fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + headers + 128
    }
}

/// All values of a request header, joined as one comparable string.
fn joined(h: &HeaderMap, name: &HeaderName) -> Option<Bytes> {
    let mut it = h.get_all(name).iter();
    let first = it.next()?;
    let mut out = first.as_bytes().to_vec();
    for v in it {
        out.extend_from_slice(b", ");
        out.extend_from_slice(v.as_bytes());
    }
    Some(Bytes::from(out))
}

fn now_ms() -> u64 {
    weir_core::time::unix_ms().max(0) as u64
}

/// The request facts the key is made of.
pub struct CacheRequest<'a> {
    pub method: &'a Method,
    /// `scheme://canonical-host:port` (the port as the client named it, or empty).
    pub host: &'a str,
    /// The normalized path.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The authenticated consumer: answers are never shared between consumers.
    pub consumer: Option<&'a str>,
    /// Whether the request has a body (a "fat GET" is never answered from the cache).
    pub has_body: bool,
}

/// What the cache made of a request.
pub enum Lookup {
    /// Fresh answer; send it.
    Hit(Arc<Stored>),
    /// Go to the upstream; offer the answer to the fill.
    Miss(Fill),
    /// Go to the upstream and keep nothing. `invalidate`: a successful answer to this
    /// unsafe request makes the kept answer for its URL stale.
    Bypass { invalidate: Option<Invalidate> },
}

/// Drops the kept answers for one URL (after a successful unsafe request to it).
pub struct Invalidate {
    shared: Arc<Shared>,
    key: Key,
}

impl Invalidate {
    pub async fn run(self) {
        self.shared.remove(&self.key).await;
    }
}

/// A miss this request is to fill; holds the key's flight until dropped.
pub struct Fill {
    shared: Arc<Shared>,
    key: Key,
    /// `MISS`, or `EXPIRED` when a stale answer was there.
    pub status: &'static str,
    /// The request's headers, for the values the answer's `Vary` names.
    request: HeaderMap,
    /// Variants already kept for the URL (kept alongside the new one).
    others: Vec<Arc<Stored>>,
    /// HEAD answers have no body to keep.
    keep: bool,
    _flight: Option<Flight>,
}

impl Fill {
    /// How much longer the answer stays fresh (ms, its lifetime minus its `Age`), or
    /// `None` when it must not be kept.
    pub fn freshness(&self, status: StatusCode, headers: &HeaderMap) -> Option<u64> {
        let s = &self.shared;
        if !self.keep || !s.statuses.contains(&status.as_u16()) {
            return None;
        }
        if headers.contains_key(header::SET_COOKIE) {
            return None;
        }
        if let Some(len) = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            && len > s.max_body as u64
        {
            return None;
        }
        let vary = vary_names(headers)?;
        if vary.len() > MAX_VARY {
            return None;
        }
        let cc = CacheControl::parse(headers.get_all(header::CACHE_CONTROL));
        if cc.no_store || cc.private || cc.no_cache {
            return None;
        }
        let age = headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let fresh_secs = cc
            .s_maxage
            .or(cc.max_age)
            .map_or(s.ttl.as_millis() as u64, |secs| secs.saturating_mul(1000));
        let fresh = fresh_secs.saturating_sub(age.saturating_mul(1000));
        (fresh > 0).then_some(fresh)
    }

    /// The answer could not be kept: later misses of this key go to the upstream without
    /// waiting for one another, for the route's `ttl`.
    pub fn pass(self) {
        if !self.keep {
            // A HEAD miss says nothing about whether the GET answer can be kept.
            return;
        }
        let mut marks = self.shared.uncoalesced.lock();
        if marks.len() >= 10_000 {
            let now = now_ms();
            marks.retain(|_, until| *until > now);
            if marks.len() >= 10_000 {
                marks.clear();
            }
        }
        marks.insert(
            self.key,
            now_ms().saturating_add(self.shared.ttl.as_millis() as u64),
        );
    }

    /// The largest body worth collecting for this fill.
    pub fn max_body(&self) -> usize {
        self.shared.max_body
    }

    /// Keeps the answer. `headers` are the upstream's, already without hop-by-hop fields.
    pub async fn store(
        self,
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        fresh_ms: u64,
    ) {
        let Some(names) = vary_names(&headers) else {
            return;
        };
        // Kept as "born" when the upstream's copy was: `Age` keeps counting from there.
        let age_ms = headers
            .remove(header::AGE)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .saturating_mul(1000);
        headers.remove(HeaderName::from_static("x-request-id"));
        let vary = names
            .into_iter()
            .map(|n| {
                let v = joined(&self.request, &n);
                (n, v)
            })
            .collect();
        let stored = Arc::new(Stored {
            status,
            headers,
            body,
            born_ms: now_ms().saturating_sub(age_ms),
            fresh_ms: fresh_ms.saturating_add(age_ms),
            vary,
        });
        let mut variants: Vec<Arc<Stored>> = self
            .others
            .iter()
            .filter(|o| o.vary != stored.vary)
            .cloned()
            .collect();
        variants.insert(0, stored);
        variants.truncate(MAX_VARIANTS);
        self.shared.uncoalesced.lock().remove(&self.key);
        self.shared.put(self.key, variants).await;
    }
}

/// The header names of the answer's `Vary`, lower-cased; `None` for `Vary: *` or a name
/// that is not a header name.
fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut out = Vec::new();
    for v in headers.get_all(header::VARY) {
        for name in v.to_str().ok()?.split(',') {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            if name == "*" {
                return None;
            }
            let n = HeaderName::from_bytes(name.as_bytes()).ok()?;
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out.sort_by(|a: &HeaderName, b| a.as_str().cmp(b.as_str()));
    Some(out)
}

#[derive(Default)]
struct CacheControl {
    no_store: bool,
    no_cache: bool,
    private: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
}

impl CacheControl {
    fn parse<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Self {
        let mut cc = Self::default();
        for v in values {
            let Ok(v) = v.to_str() else {
                // An unreadable directive might have been `no-store`: keep nothing.
                cc.no_store = true;
                continue;
            };
            for d in v.split(',') {
                let (name, arg) = match d.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (d.trim(), None),
                };
                let secs = || arg.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    // A malformed age is treated as already stale.
                    "max-age" => cc.max_age = Some(secs().unwrap_or(0)),
                    "s-maxage" => cc.s_maxage = Some(secs().unwrap_or(0)),
                    _ => {}
                }
            }
        }
        cc
    }
}

/// A key's fill in progress; the others wait on it.
struct Flight {
    shared: Arc<Shared>,
    key: Key,
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut flights = self.shared.flights.lock();
        if let Some(n) = flights.remove(&self.key) {
            n.notify_waiters();
        }
    }
}

/// A route's cache state; outlives reloads that leave the cache settings unchanged.
struct Shared {
    ttl: Duration,
    max_body: usize,
    statuses: Vec<u16>,
    store: Backend,
    flights: Mutex<FxHashMap<Key, Arc<Notify>>>,
    /// Keys whose last answer could not be kept, until when (unix ms): their misses are
    /// not coalesced, so requests do not queue behind one another for an answer that
    /// will not be kept ("hit-for-miss"). A keepable answer clears the mark.
    uncoalesced: Mutex<FxHashMap<Key, u64>>,
}

enum Backend {
    Memory(Mutex<Mem>),
    Redis {
        store: Arc<RedisStore>,
        prefix: String,
        timeout: Duration,
    },
}

/// Memory store: URL key → variants, evicted oldest-stored first past `max` bytes.
struct Mem {
    max: usize,
    bytes: usize,
    generation: u64,
    map: FxHashMap<Key, (Vec<Arc<Stored>>, usize, u64)>,
    order: VecDeque<(Key, u64)>,
}

impl Mem {
    fn put(&mut self, key: Key, variants: Vec<Arc<Stored>>) {
        let size: usize = variants.iter().map(|v| v.size()).sum();
        if size > self.max {
            return;
        }
        self.generation += 1;
        if let Some((_, old, _)) = self.map.insert(key, (variants, size, self.generation)) {
            self.bytes -= old;
        }
        self.bytes += size;
        self.order.push_back((key, self.generation));
        while self.bytes > self.max {
            let Some((k, g)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&k).is_some_and(|e| e.2 == g)
                && let Some((_, s, _)) = self.map.remove(&k)
            {
                self.bytes -= s;
            }
        }
        // Re-stored keys leave stale order entries behind; drop them now and then.
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|e| e.2 == *g));
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some((_, s, _)) = self.map.remove(key) {
            self.bytes -= s;
        }
    }
}

impl Shared {
    async fn get(&self, key: &Key) -> Vec<Arc<Stored>> {
        match &self.store {
            Backend::Memory(m) => m
                .lock()
                .map
                .get(key)
                .map(|e| e.0.clone())
                .unwrap_or_default(),
            Backend::Redis {
                store,
                prefix,
                timeout,
            } => {
                let mut cmd = redis::cmd("GET");
                cmd.arg(redis_key(prefix, key));
                match store
                    .query::<Option<Vec<u8>>>(&cmd, *timeout, "cache")
                    .await
                {
                    Ok(Some(raw)) => codec::decode(&raw).unwrap_or_default(),
                    _ => Vec::new(),
                }
            }
        }
    }

    async fn put(&self, key: Key, variants: Vec<Arc<Stored>>) {
        match &self.store {
            Backend::Memory(m) => m.lock().put(key, variants),
            Backend::Redis {
                store,
                prefix,
                timeout,
            } => {
                let now = now_ms();
                let Some(until) = variants
                    .iter()
                    .map(|v| v.born_ms.saturating_add(v.fresh_ms))
                    .max()
                else {
                    return;
                };
                let ttl = until.saturating_sub(now).max(1);
                let mut cmd = redis::cmd("SET");
                cmd.arg(redis_key(prefix, &key))
                    .arg(codec::encode(&variants))
                    .arg("PX")
                    .arg(ttl);
                // A failed store only costs a later miss.
                let _ = store.query::<()>(&cmd, *timeout, "cache").await;
            }
        }
    }

    async fn remove(&self, key: &Key) {
        match &self.store {
            Backend::Memory(m) => m.lock().remove(key),
            Backend::Redis {
                store,
                prefix,
                timeout,
            } => {
                let mut cmd = redis::cmd("DEL");
                cmd.arg(redis_key(prefix, key));
                let _ = store.query::<i64>(&cmd, *timeout, "cache").await;
            }
        }
    }
}

fn redis_key(prefix: &str, key: &Key) -> String {
    let mut s = String::with_capacity(prefix.len() + 64);
    s.push_str(prefix);
    for b in key {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

static CACHES: Mutex<Vec<(String, Weak<Shared>)>> = Mutex::new(Vec::new());

/// A route's compiled cache policy.
pub struct Cache {
    shared: Arc<Shared>,
    get: bool,
    head: bool,
    hit: Counter,
    miss: Counter,
    expired: Counter,
    bypass: Counter,
}

impl Cache {
    pub fn compile(c: &CacheConfig, scope: &str) -> Result<Self, String> {
        let id = format!("{scope}|{c:?}");
        let mut caches = CACHES.lock();
        caches.retain(|(_, w)| w.strong_count() > 0);
        let found = caches
            .iter()
            .find(|(k, _)| *k == id)
            .and_then(|(_, w)| w.upgrade());
        let shared = match found {
            Some(s) => s,
            None => {
                let url = c
                    .store
                    .resolve(&|n| std::env::var(n).ok())
                    .map_err(|e| format!("cache.store: {e}"))?;
                let store = if url == "memory" {
                    Backend::Memory(Mutex::new(Mem {
                        max: usize::try_from(c.max_size.0).unwrap_or(usize::MAX),
                        bytes: 0,
                        generation: 0,
                        map: FxHashMap::default(),
                        order: VecDeque::new(),
                    }))
                } else {
                    Backend::Redis {
                        store: RedisStore::for_url(&url)
                            .map_err(|e| format!("cache.store: {e}"))?,
                        prefix: format!("weir:cache:{scope}:"),
                        timeout: c.store_timeout.get(),
                    }
                };
                let s = Arc::new(Shared {
                    ttl: c.ttl.get(),
                    max_body: usize::try_from(c.max_body.0).unwrap_or(usize::MAX),
                    statuses: c.statuses.clone(),
                    store,
                    flights: Mutex::new(FxHashMap::default()),
                    uncoalesced: Mutex::new(FxHashMap::default()),
                });
                caches.push((id, Arc::downgrade(&s)));
                s
            }
        };
        let outcome = |o: &'static str| metrics::counter!(crate::rules::POLICY_OUTCOMES, "policy" => "cache", "outcome" => o);
        Ok(Self {
            shared,
            get: c.methods.iter().any(|m| m == "GET"),
            head: c.methods.iter().any(|m| m == "HEAD"),
            hit: outcome("hit"),
            miss: outcome("miss"),
            expired: outcome("expired"),
            bypass: outcome("bypass"),
        })
    }

    fn key(&self, r: &CacheRequest<'_>) -> Key {
        let mut h = Sha256::new();
        for part in [r.host, r.path, r.consumer.unwrap_or("")] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        // The consumer's presence is keyed too: "" and no consumer differ.
        h.update([u8::from(r.consumer.is_some())]);
        let mut pairs: Vec<&str> = r
            .query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .collect();
        pairs.sort_unstable();
        for p in pairs {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        h.finalize().into()
    }

    /// Decides how the request is answered; may wait for another request's fill of the
    /// same key (single-flight), at most [`FLIGHT_WAIT`].
    pub async fn lookup(&self, r: &CacheRequest<'_>) -> Lookup {
        let method_ok =
            (self.get && *r.method == Method::GET) || (self.head && *r.method == Method::HEAD);
        if !method_ok {
            self.bypass.increment(1);
            let unsafe_method = !matches!(
                *r.method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
            );
            let invalidate = unsafe_method.then(|| Invalidate {
                shared: Arc::clone(&self.shared),
                key: self.key(r),
            });
            return Lookup::Bypass { invalidate };
        }
        if bypasses(r) {
            self.bypass.increment(1);
            return Lookup::Bypass { invalidate: None };
        }
        let key = self.key(r);
        let mut waited = 0;
        loop {
            let variants = self.shared.get(&key).await;
            let now = now_ms();
            let found = variants.iter().find(|v| v.matches(r.headers));
            if let Some(v) = found
                && v.is_fresh(now)
            {
                self.hit.increment(1);
                return Lookup::Hit(Arc::clone(v));
            }
            let status = if found.is_some() { "EXPIRED" } else { "MISS" };
            let fill = |flight| Fill {
                shared: Arc::clone(&self.shared),
                key,
                status,
                request: r.headers.clone(),
                others: variants
                    .iter()
                    .filter(|v| v.is_fresh(now))
                    .cloned()
                    .collect(),
                keep: *r.method == Method::GET,
                _flight: flight,
            };
            let alone = {
                let mut marks = self.shared.uncoalesced.lock();
                match marks.get(&key) {
                    Some(until) if *until > now => true,
                    Some(_) => {
                        marks.remove(&key);
                        false
                    }
                    None => false,
                }
            };
            if alone || waited >= 2 {
                // The fills we waited for kept nothing: go alone.
                self.count(status);
                return Lookup::Miss(fill(None));
            }
            let notify;
            let notified;
            {
                let mut flights = self.shared.flights.lock();
                match flights.get(&key) {
                    None => {
                        flights.insert(key, Arc::new(Notify::new()));
                        drop(flights);
                        self.count(status);
                        return Lookup::Miss(fill(Some(Flight {
                            shared: Arc::clone(&self.shared),
                            key,
                        })));
                    }
                    Some(n) => {
                        notify = Arc::clone(n);
                        // Made under the lock: the leader's notify_waiters cannot be missed.
                        notified = notify.notified();
                    }
                }
            }
            let _ = tokio::time::timeout(FLIGHT_WAIT, notified).await;
            waited += 1;
        }
    }

    fn count(&self, status: &str) {
        if status == "EXPIRED" {
            self.expired.increment(1);
        } else {
            self.miss.increment(1);
        }
    }
}

/// Requests the cache must not answer: ones that ask it not to, carry credentials it does
/// not key on, ask for part of a body, carry a body, or name another method or URL in a
/// header.
fn bypasses(r: &CacheRequest<'_>) -> bool {
    let h = r.headers;
    let cc = CacheControl::parse(h.get_all(header::CACHE_CONTROL));
    if cc.no_store || cc.no_cache || h.contains_key(header::PRAGMA) {
        return true;
    }
    if r.consumer.is_none()
        && (h.contains_key(header::AUTHORIZATION) || h.contains_key(header::COOKIE))
    {
        return true;
    }
    r.has_body
        || h.contains_key(header::RANGE)
        || h.contains_key(header::UPGRADE)
        || OVERRIDES.iter().any(|o| h.contains_key(o))
}

mod codec;

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn cache_control_directives() {
        let cc = CacheControl::parse([&hv("public, max-age=60, s-maxage=\"10\"")]);
        assert_eq!((cc.max_age, cc.s_maxage), (Some(60), Some(10)));
        let cc = CacheControl::parse([&hv("Private"), &hv("no-store")]);
        assert!(cc.private && cc.no_store);
        let cc = CacheControl::parse([&hv("max-age=abc")]);
        assert_eq!(cc.max_age, Some(0), "malformed is stale");
    }

    #[test]
    fn vary_names_sorted_and_star_refused() {
        let mut h = HeaderMap::new();
        h.append(header::VARY, hv("Accept-Encoding, accept"));
        h.append(header::VARY, hv("Origin"));
        let names = vary_names(&h).unwrap();
        assert_eq!(
            names.iter().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["accept", "accept-encoding", "origin"]
        );
        h.append(header::VARY, hv("*"));
        assert!(vary_names(&h).is_none());
    }

    #[test]
    fn codec_round_trips_and_refuses_garbage() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, hv("text/plain"));
        headers.append("x-multi", hv("a"));
        headers.append("x-multi", hv("b"));
        let v = Arc::new(Stored {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"hello"),
            born_ms: 5,
            fresh_ms: 7,
            vary: vec![
                (header::ACCEPT, Some(Bytes::from_static(b"text/html"))),
                (header::ORIGIN, None),
            ],
        });
        let raw = codec::encode(&[Arc::clone(&v)]);
        let back = codec::decode(&raw).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].status, 200);
        assert_eq!(back[0].body, "hello");
        assert_eq!(back[0].headers.get_all("x-multi").iter().count(), 2);
        assert_eq!(back[0].vary, v.vary);
        assert_eq!((back[0].born_ms, back[0].fresh_ms), (5, 7));
        for cut in 0..raw.len() {
            assert!(codec::decode(&raw[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn memory_store_stays_within_its_bytes() {
        let mut m = Mem {
            max: 10_000,
            bytes: 0,
            generation: 0,
            map: FxHashMap::default(),
            order: VecDeque::new(),
        };
        for i in 0..1000u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&(i % 50).to_be_bytes());
            let v = Arc::new(Stored {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::from(vec![0u8; 1000]),
                born_ms: 0,
                fresh_ms: 1,
                vary: Vec::new(),
            });
            m.put(key, vec![v]);
            assert!(m.bytes <= m.max, "{} bytes", m.bytes);
            assert_eq!(
                m.bytes,
                m.map.values().map(|e| e.1).sum::<usize>(),
                "accounting"
            );
            assert!(m.order.len() <= 2 * m.map.len() + 64 + 1);
        }
        assert!(!m.map.is_empty());
    }
}
