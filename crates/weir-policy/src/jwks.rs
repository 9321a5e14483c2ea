//! Keys from a JWKS document for the `jwt` policy: fetched once, shared by every policy that
//! names the same URL (and across reloads), refreshed in the background when older than
//! `jwks_max_age`, and refetched when a token names an unknown `kid`, at most once per
//! `jwks_min_interval`. A failed fetch keeps the last good keys, for at most
//! `jwks_max_stale` after they were fetched.
//!
//! Each key is pinned to one algorithm: the JWK's `alg`, else the one its curve implies
//! (P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA), else RS256 for RSA. Symmetric (`oct`)
//! keys and encryption keys are never taken from a JWKS.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use metrics::Counter;
use parking_lot::{Mutex, RwLock};

/// Fetches a document by URL (the proxy supplies one that uses its own HTTP client).
pub type Fetcher = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send>> + Send + Sync,
>;

/// Keys taken from one document, at most this many.
const MAX_KEYS: usize = 100;

pub struct JwkKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

#[derive(Default)]
struct Times {
    /// When keys were last fetched successfully.
    fetched: Option<Instant>,
    /// When a fetch last started.
    attempted: Option<Instant>,
}

pub struct Jwks {
    url: String,
    fetch: Fetcher,
    max_age: Duration,
    min_interval: Duration,
    max_stale: Duration,
    keys: RwLock<Arc<Vec<Arc<JwkKey>>>>,
    times: Mutex<Times>,
    /// One fetch at a time; requests that need one wait for it.
    running: tokio::sync::Mutex<()>,
    failing: AtomicBool,
    errors: Counter,
}

static SETS: Mutex<Vec<(String, Weak<Jwks>)>> = Mutex::new(Vec::new());

impl Jwks {
    /// The key set for `url` with these intervals, shared with other policies naming it.
    /// Starts the first fetch in the background when a runtime is at hand.
    pub fn for_url(
        url: &str,
        max_age: Duration,
        min_interval: Duration,
        max_stale: Duration,
        fetch: &Fetcher,
    ) -> Arc<Self> {
        let id = format!("{url}|{max_age:?}|{min_interval:?}|{max_stale:?}");
        let mut sets = SETS.lock();
        sets.retain(|(_, w)| w.strong_count() > 0);
        if let Some(s) = sets
            .iter()
            .find(|(k, _)| *k == id)
            .and_then(|(_, w)| w.upgrade())
        {
            return s;
        }
        let set = Arc::new(Self {
            url: url.to_owned(),
            fetch: Arc::clone(fetch),
            max_age,
            min_interval,
            max_stale,
            keys: RwLock::new(Arc::new(Vec::new())),
            times: Mutex::new(Times::default()),
            running: tokio::sync::Mutex::new(()),
            failing: AtomicBool::new(false),
            errors: metrics::counter!(crate::rules::POLICY_OUTCOMES, "policy" => "jwt", "outcome" => "jwks_fetch_error"),
        });
        sets.push((id, Arc::downgrade(&set)));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let s = Arc::clone(&set);
            rt.spawn(async move { s.refresh().await });
        }
        set
    }

    /// The key for a token's `kid` (a token without one needs a set of exactly one key).
    /// Starts a background refresh when the keys are older than `jwks_max_age`.
    pub fn find(self: &Arc<Self>, kid: Option<&str>) -> Option<Arc<JwkKey>> {
        let keys = Arc::clone(&self.keys.read());
        let found = match kid {
            Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)).cloned(),
            None => (keys.len() == 1).then(|| Arc::clone(&keys[0])),
        };
        let age = self.times.lock().fetched.map(|t| t.elapsed());
        // Keys past jwks_max_stale (the document has failed since) are not trusted.
        let found = found.filter(|_| age.is_some_and(|a| a <= self.max_stale));
        let stale = age.is_some_and(|a| a > self.max_age);
        if stale
            && self.may_fetch()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let s = Arc::clone(self);
            rt.spawn(async move { s.refresh().await });
        }
        found
    }

    /// Whether a token with an unknown `kid` should wait for a fetch: one is running (the
    /// first, at start-up, or another request's), or one may start now.
    pub fn worth_waiting(&self) -> bool {
        self.running.try_lock().is_err() || self.may_fetch()
    }

    /// Whether a fetch may start now.
    fn may_fetch(&self) -> bool {
        self.times
            .lock()
            .attempted
            .is_none_or(|t| t.elapsed() >= self.min_interval)
    }

    /// Fetches the document unless another request fetched it meanwhile (single-flight).
    pub async fn refresh(self: Arc<Self>) {
        let asked = Instant::now();
        let _running = self.running.lock().await;
        {
            let mut t = self.times.lock();
            if t.attempted.is_some_and(|a| a >= asked) {
                return;
            }
            if t.attempted.is_some_and(|a| a.elapsed() < self.min_interval) {
                return;
            }
            t.attempted = Some(Instant::now());
        }
        let got = (self.fetch)(self.url.clone()).await.and_then(|b| parse(&b));
        match got {
            Ok(keys) => {
                let n = keys.len();
                *self.keys.write() = Arc::new(keys);
                self.times.lock().fetched = Some(Instant::now());
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(url = %self.url, keys = n, "JWKS fetched again");
                } else {
                    tracing::debug!(url = %self.url, keys = n, "JWKS fetched");
                }
            }
            Err(e) => {
                self.errors.increment(1);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; the last good keys stay in use; retrying after jwks_min_interval");
                }
            }
        }
    }
}

/// The usable signature keys of a JWKS document.
fn parse(body: &[u8]) -> Result<Vec<Arc<JwkKey>>, String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut out = Vec::new();
    for raw in doc.keys.into_iter().take(MAX_KEYS) {
        // One key Weir cannot use (an unknown type, a bad encoding) leaves the others.
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let Some(alg) = pinned_alg(&jwk) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        out.push(Arc::new(JwkKey {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        }));
    }
    Ok(out)
}

fn pinned_alg(jwk: &Jwk) -> Option<Algorithm> {
    let from_params = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(okp) => {
            (okp.curve == EllipticCurve::Ed25519).then_some(Algorithm::EdDSA)
        }
        // Shared secrets never come from a public document.
        _ => return None,
    };
    let family = |a: Algorithm| match a {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => 1,
        Algorithm::ES256 | Algorithm::ES384 => 2,
        Algorithm::EdDSA => 3,
        _ => 0,
    };
    match jwk.common.key_algorithm {
        None => from_params,
        Some(ka) => {
            let alg = match ka {
                KeyAlgorithm::RS256 => Algorithm::RS256,
                KeyAlgorithm::RS384 => Algorithm::RS384,
                KeyAlgorithm::RS512 => Algorithm::RS512,
                KeyAlgorithm::PS256 => Algorithm::PS256,
                KeyAlgorithm::PS384 => Algorithm::PS384,
                KeyAlgorithm::PS512 => Algorithm::PS512,
                KeyAlgorithm::ES256 => Algorithm::ES256,
                KeyAlgorithm::ES384 => Algorithm::ES384,
                KeyAlgorithm::EdDSA => Algorithm::EdDSA,
                _ => return None,
            };
            // The declared algorithm must fit the key's type.
            (from_params.map(family) == Some(family(alg))).then_some(alg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signature_keys_with_a_fitting_algorithm_are_taken() {
        let doc = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","kid":"hmac","alg":"HS256"},
            {"kty":"EC","crv":"P-256","kid":"ec","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","crv":"P-256","kid":"ec-as-rsa","alg":"RS256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"FUTURE","kid":"unknown"},
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#;
        let keys = parse(doc).unwrap();
        let got: Vec<(&str, Algorithm)> = keys
            .iter()
            .map(|k| (k.kid.as_deref().unwrap(), k.alg))
            .collect();
        assert_eq!(got, [("ec", Algorithm::ES256), ("ed", Algorithm::EdDSA)]);
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"keys": 5}"#).is_err());
    }
}
