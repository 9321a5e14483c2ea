//! HTTP Basic authentication: user names map to consumers and argon2 hashes. Verifying a
//! hash costs milliseconds of CPU by design, so it runs off the worker thread (the proxy
//! runs a [`VerifyJob`] on the blocking pool), at most a few at a time, and a verified
//! user/password pair is remembered by digest so the next request costs one SHA-256.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderValue};
use metrics::Counter;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use weir_config::BasicAuthConfig;
use weir_core::GatewayError;

use crate::consumers::digest;
use crate::{
    Consumer, Consumers, Flow, Outcome, OutcomeKind, PolicyCtx, Reply, admit, repeated_credential,
};

/// Remembered verifications; the cache is emptied when full (an attacker cannot fill it:
/// only correct passwords are cached).
const VERIFIED_MAX: usize = 10_000;
/// Hash verifications running at once, across the process.
const VERIFY_MAX: usize = 4;

#[derive(Debug, Default)]
pub struct BasicUsers {
    users: FxHashMap<String, (Arc<Consumer>, String)>,
    verified: Mutex<FxHashMap<[u8; 32], Arc<Consumer>>>,
    running: AtomicUsize,
    /// A hash to verify against for unknown users, so timing does not reveal which user
    /// names exist.
    decoy: Option<String>,
}

impl BasicUsers {
    pub fn add(
        &mut self,
        username: &str,
        phc: &str,
        consumer: &Arc<Consumer>,
    ) -> Result<(), String> {
        PasswordHash::new(phc)
            .map_err(|e| format!("password_hash is not a valid argon2 PHC string: {e}"))?;
        if self
            .users
            .insert(username.to_owned(), (Arc::clone(consumer), phc.to_owned()))
            .is_some()
        {
            return Err(format!(
                "user name {username:?} is given to another consumer"
            ));
        }
        if self.decoy.is_none() {
            let salt = weir_core::RequestId::generate();
            self.decoy = Argon2::default()
                .hash_password_with_salt(salt.as_str().as_bytes(), salt.as_str().as_bytes())
                .ok()
                .map(|h| h.to_string());
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// A password check to run on the blocking pool. It holds one of the few verification
/// slots until dropped, run or not.
struct VerifyJob {
    consumers: Arc<Consumers>,
    user: String,
    password: Vec<u8>,
    cache_key: [u8; 32],
}

impl Drop for VerifyJob {
    fn drop(&mut self) {
        self.consumers
            .basic()
            .running
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl VerifyJob {
    /// Verifies the password; returns the consumer when it matches.
    fn run(self) -> Option<Arc<Consumer>> {
        let basic = self.consumers.basic();
        let found = basic.users.get(&self.user);
        let phc = found.map(|(_, p)| p.as_str()).or(basic.decoy.as_deref())?;
        let ok = Argon2::default()
            .verify_password(&self.password, phc)
            .is_ok();
        let consumer = found.filter(|_| ok).map(|(c, _)| Arc::clone(c))?;
        let mut cache = basic.verified.lock();
        if cache.len() >= VERIFIED_MAX {
            cache.clear();
        }
        cache.insert(self.cache_key, Arc::clone(&consumer));
        Some(consumer)
    }
}

pub struct BasicAuth {
    challenge: HeaderValue,
    hide: bool,
    consumers: Arc<Consumers>,
    missing: Counter,
    invalid: Counter,
    busy: Counter,
}

impl BasicAuth {
    pub fn compile(c: &BasicAuthConfig, consumers: Arc<Consumers>) -> Result<Self, String> {
        let challenge =
            HeaderValue::from_str(&format!("Basic realm=\"{}\", charset=\"UTF-8\"", c.realm))
                .map_err(|_| "basic_auth.realm: not usable in a header".to_owned())?;
        let outcome = |o: &'static str| metrics::counter!(crate::rules::POLICY_OUTCOMES, "policy" => "basic_auth", "outcome" => o);
        Ok(Self {
            challenge,
            hide: c.hide_credentials,
            consumers,
            missing: outcome("missing"),
            invalid: outcome("invalid"),
            busy: outcome("busy"),
        })
    }

    fn refuse(&self, reason: &'static str) -> Flow {
        Flow::Respond(Reply::Error(
            GatewayError::Unauthorized { reason },
            vec![(header::WWW_AUTHENTICATE, self.challenge.clone())],
        ))
    }

    /// Checks the credentials: at once when this pair was verified before, otherwise by a
    /// [`VerifyJob`] on the blocking pool.
    pub fn check(&self, headers: &mut HeaderMap, ctx: &mut PolicyCtx) -> Flow {
        match self.check_inner(headers, ctx) {
            Ok(flow) => flow,
            Err(job) => Flow::Await(
                Box::pin(async move {
                    let found = tokio::task::spawn_blocking(move || job.run())
                        .await
                        .ok()
                        .flatten();
                    Outcome(OutcomeKind::Verified(found))
                }),
                0,
            ),
        }
    }

    fn check_inner(&self, headers: &mut HeaderMap, ctx: &mut PolicyCtx) -> Result<Flow, VerifyJob> {
        if let Some(flow) = repeated_credential(headers, &header::AUTHORIZATION) {
            return Ok(flow);
        }
        let decoded = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| {
                v.as_bytes()
                    .get(..6)
                    .filter(|p| p.eq_ignore_ascii_case(b"basic "))
                    .map(|_| &v.as_bytes()[6..])
            })
            .and_then(|b64| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim_ascii())
                    .ok()
            });
        let Some(decoded) = decoded else {
            self.missing.increment(1);
            return Ok(self.refuse("HTTP Basic credentials are required"));
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            self.invalid.increment(1);
            return Ok(self.refuse("the credentials are not valid"));
        };
        let user = String::from_utf8_lossy(&decoded[..colon]).into_owned();
        let password = decoded[colon + 1..].to_vec();
        let mut material = Vec::with_capacity(decoded.len() + 1);
        material.extend_from_slice(user.as_bytes());
        material.push(0);
        material.extend_from_slice(&password);
        let cache_key = digest(&material);
        let cached = self
            .consumers
            .basic()
            .verified
            .lock()
            .get(&cache_key)
            .cloned();
        if let Some(consumer) = cached {
            self.admit(&consumer, headers, ctx);
            return Ok(Flow::Continue);
        }
        let basic = self.consumers.basic();
        if basic.running.fetch_add(1, Ordering::AcqRel) >= VERIFY_MAX {
            basic.running.fetch_sub(1, Ordering::AcqRel);
            self.busy.increment(1);
            return Ok(Flow::Respond(Reply::Error(
                GatewayError::Overloaded,
                vec![(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            )));
        }
        Err(VerifyJob {
            consumers: Arc::clone(&self.consumers),
            user,
            password,
            cache_key,
        })
    }

    /// Applies the outcome of a [`VerifyJob`].
    pub fn complete(
        &self,
        consumer: Option<Arc<Consumer>>,
        headers: &mut HeaderMap,
        ctx: &mut PolicyCtx,
    ) -> Flow {
        match consumer {
            Some(c) => {
                self.admit(&c, headers, ctx);
                Flow::Continue
            }
            None => {
                self.invalid.increment(1);
                self.refuse("the credentials are not valid")
            }
        }
    }

    fn admit(&self, consumer: &Arc<Consumer>, headers: &mut HeaderMap, ctx: &mut PolicyCtx) {
        if self.hide {
            headers.remove(header::AUTHORIZATION);
        }
        admit(consumer, headers, ctx);
    }
}

/// Makes an argon2id PHC hash of `password` with a fresh salt (for `weir hash-password`).
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}
