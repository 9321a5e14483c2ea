//! Bearer JWT authentication against configured keys and keys from a JWKS URL
//! ([`crate::jwks`]). The algorithm is pinned by the key, never taken from the token:
//! `none` cannot be expressed, and an HMAC token is never checked with an RSA or EC key.
//! `kid` only selects a key from the configured set; `jku`, `x5u` and `jwk` token headers
//! are ignored. `exp` is required, `nbf` honoured, leeway
//! bounded; `iss` and `aud` are checked when configured. The verified `iss` + `sub` pick the
//! consumer.

use std::str::FromStr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use metrics::Counter;
use weir_config::JwtConfig;
use weir_core::GatewayError;

use crate::jwks::{Fetcher, Jwks};
use crate::{Consumers, Flow, Outcome, OutcomeKind, PolicyCtx, Reply, admit, repeated_credential};

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

#[derive(serde::Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
}

pub struct Jwt {
    keys: Vec<Key>,
    jwks: Option<Arc<Jwks>>,
    /// The checks for each algorithm a JWKS key may be pinned to.
    validations: Vec<(Algorithm, Validation)>,
    hide: bool,
    consumers: Arc<Consumers>,
    missing: Counter,
    invalid: Counter,
    unknown: Counter,
}

impl Jwt {
    pub fn compile(
        c: &JwtConfig,
        consumers: Arc<Consumers>,
        fetch: &Fetcher,
    ) -> Result<Self, String> {
        let validation = |alg: Algorithm| {
            let mut v = Validation::new(alg);
            v.leeway = c.leeway.get().as_secs();
            v.validate_exp = true;
            v.validate_nbf = true;
            v.required_spec_claims = ["exp".to_owned()].into_iter().collect();
            if c.audiences.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(&c.audiences);
                v.required_spec_claims.insert("aud".to_owned());
            }
            if !c.issuers.is_empty() {
                v.set_issuer(&c.issuers);
                v.required_spec_claims.insert("iss".to_owned());
            }
            v
        };
        let mut keys = Vec::new();
        for (i, k) in c.keys.iter().enumerate() {
            let at = format!("jwt.keys[{i}]");
            let alg = Algorithm::from_str(&k.alg)
                .map_err(|_| format!("{at}.alg: {:?} is not supported", k.alg))?;
            let material = k
                .key
                .resolve(&|n| std::env::var(n).ok())
                .map_err(|e| format!("{at}.key: {e}"))?;
            let bytes = material.as_bytes();
            let key = match alg {
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                    if bytes.len() < 32 {
                        return Err(format!("{at}.key: an HMAC secret needs at least 32 bytes"));
                    }
                    DecodingKey::from_secret(bytes)
                }
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512 => DecodingKey::from_rsa_pem(bytes)
                    .map_err(|e| format!("{at}.key: not an RSA public key in PEM: {e}"))?,
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(bytes)
                    .map_err(|e| format!("{at}.key: not an EC public key in PEM: {e}"))?,
                Algorithm::EdDSA => DecodingKey::from_ed_pem(bytes)
                    .map_err(|e| format!("{at}.key: not an Ed25519 public key in PEM: {e}"))?,
                // The enum is non-exhaustive: an algorithm added upstream is refused until
                // it is reviewed here.
                _ => return Err(format!("{at}.alg: {:?} is not supported", k.alg)),
            };
            keys.push(Key {
                kid: k.kid.clone(),
                key,
                validation: validation(alg),
            });
        }
        let jwks = c.jwks_url.as_deref().map(|url| {
            Jwks::for_url(
                url,
                c.jwks_max_age.get(),
                c.jwks_min_interval.get(),
                c.jwks_max_stale.get(),
                fetch,
            )
        });
        let validations = if jwks.is_some() {
            [
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
                Algorithm::ES256,
                Algorithm::ES384,
                Algorithm::EdDSA,
            ]
            .into_iter()
            .map(|a| (a, validation(a)))
            .collect()
        } else {
            Vec::new()
        };
        let outcome = |o: &'static str| metrics::counter!(crate::rules::POLICY_OUTCOMES, "policy" => "jwt", "outcome" => o);
        Ok(Self {
            keys,
            jwks,
            validations,
            hide: c.hide_credentials,
            consumers,
            missing: outcome("missing"),
            invalid: outcome("invalid"),
            unknown: outcome("unknown_subject"),
        })
    }

    fn refuse(&self, reason: &'static str) -> Flow {
        Flow::Respond(Reply::Error(
            GatewayError::Unauthorized { reason },
            vec![(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"weir\""),
            )],
        ))
    }

    pub fn check(&self, headers: &mut HeaderMap, ctx: &mut PolicyCtx) -> Flow {
        self.check_token(headers, ctx, true)
    }

    /// After the JWKS document was fetched for an unknown `kid`: checks again, without
    /// fetching again.
    pub fn complete(&self, headers: &mut HeaderMap, ctx: &mut PolicyCtx) -> Flow {
        self.check_token(headers, ctx, false)
    }

    fn check_token(&self, headers: &mut HeaderMap, ctx: &mut PolicyCtx, may_fetch: bool) -> Flow {
        if let Some(flow) = repeated_credential(headers, &header::AUTHORIZATION) {
            return flow;
        }
        let token = headers.get(header::AUTHORIZATION).and_then(|v| {
            let b = v.as_bytes();
            (b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer "))
                .then(|| String::from_utf8_lossy(&b[7..]).trim().to_owned())
        });
        let Some(token) = token else {
            self.missing.increment(1);
            return self.refuse("a bearer token is required");
        };
        let Ok(head) = decode_header(&token) else {
            self.invalid.increment(1);
            return self.refuse("the token is not valid");
        };
        let key = match &head.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str())),
            None => self
                .keys
                .iter()
                .find(|k| k.kid.is_none())
                .or_else(|| (self.keys.len() == 1).then(|| &self.keys[0])),
        };
        let fetched;
        let (key, validation) = match (key, &self.jwks) {
            (Some(k), _) => (&k.key, &k.validation),
            (None, Some(jwks)) => match jwks.find(head.kid.as_deref()) {
                Some(k) => {
                    fetched = k;
                    let v = self.validations.iter().find(|(a, _)| *a == fetched.alg);
                    let Some((_, v)) = v else {
                        self.invalid.increment(1);
                        return self.refuse("the token is not valid");
                    };
                    (&fetched.key, v)
                }
                None if may_fetch && jwks.worth_waiting() => {
                    let jwks = Arc::clone(jwks);
                    return Flow::Await(
                        Box::pin(async move {
                            jwks.refresh().await;
                            Outcome(OutcomeKind::Jwks)
                        }),
                        0,
                    );
                }
                None => {
                    self.invalid.increment(1);
                    return self.refuse("the token is not valid");
                }
            },
            (None, None) => {
                self.invalid.increment(1);
                return self.refuse("the token is not valid");
            }
        };
        let claims = match decode::<Claims>(&token, key, validation) {
            Ok(data) => data.claims,
            Err(e) => {
                // The reason goes to the debug log only; the client learns nothing more.
                tracing::debug!(reason = ?e.kind(), "jwt refused");
                self.invalid.increment(1);
                return self.refuse("the token is not valid");
            }
        };
        let consumer = match (&claims.iss, &claims.sub) {
            (Some(iss), Some(sub)) => self.consumers.by_jwt(iss, sub),
            _ => None,
        };
        let Some(consumer) = consumer.cloned() else {
            self.unknown.increment(1);
            return self.refuse("the token's subject is not a known consumer");
        };
        if self.hide {
            headers.remove(header::AUTHORIZATION);
        }
        admit(&consumer, headers, ctx);
        Flow::Continue
    }
}
