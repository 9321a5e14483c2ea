//! Consumers and their credentials, compiled once per configuration: API keys are kept
//! only as SHA-256 digests, looked up by digest and confirmed with a constant-time compare.

use std::sync::Arc;

use http::HeaderValue;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use weir_config::{ConsumerConfig, CredentialConfig};

/// An authenticated identity, as policies and upstreams see it.
#[derive(Debug)]
pub struct Consumer {
    pub name: Arc<str>,
    pub groups: Vec<String>,
    /// `X-Consumer-Name` and `X-Consumer-Groups` values, made once.
    pub name_header: HeaderValue,
    pub groups_header: Option<HeaderValue>,
    /// The rate-limit key of this consumer (`c:NAME`), made once.
    pub rate_key: Box<str>,
    /// The AI models the credential used may call (any when none).
    pub models: Option<Arc<[String]>>,
    /// The API key the caller used, by its name (or `sha256:` and the first twelve hex
    /// digits of its digest): what call records and per-key limits see.
    pub key: Option<Arc<str>>,
}

/// Every consumer, and the key digests that identify them.
#[derive(Debug, Default)]
pub struct Consumers {
    by_key: FxHashMap<[u8; 32], (Arc<Consumer>, [u8; 32])>,
    basic: crate::basic::BasicUsers,
    /// (issuer, subject) of JWT credentials.
    jwt: FxHashMap<(String, String), Arc<Consumer>>,
}

impl Consumers {
    /// Resolves secret references (`env:`, `file:`, literal) through `env` and hashes the
    /// keys. Errors name the credential, never its value.
    pub fn compile(
        configs: &[ConsumerConfig],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<String>> {
        let mut by_key = FxHashMap::default();
        let mut basic = crate::basic::BasicUsers::default();
        let mut jwt = FxHashMap::default();
        let mut errors = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let name_header = match HeaderValue::from_str(&c.name) {
                Ok(v) => v,
                Err(_) => {
                    errors.push(format!("consumers[{i}].name: not usable as a header value"));
                    continue;
                }
            };
            let groups_header = (!c.groups.is_empty())
                .then(|| HeaderValue::from_str(&c.groups.join(",")).ok())
                .flatten();
            let consumer = Arc::new(Consumer {
                name: c.name.as_str().into(),
                groups: c.groups.clone(),
                name_header,
                groups_header,
                rate_key: format!("c:{}", c.name).into_boxed_str(),
                models: None,
                key: None,
            });
            for (k, cred) in c.credentials.iter().enumerate() {
                match cred {
                    CredentialConfig::Jwt { issuer, subject } => {
                        if jwt
                            .insert((issuer.clone(), subject.clone()), Arc::clone(&consumer))
                            .is_some()
                        {
                            errors.push(format!("consumers[{i}].credentials[{k}]: this issuer and subject belong to another consumer"));
                        }
                    }
                    CredentialConfig::Basic {
                        username,
                        password_hash,
                    } => {
                        if let Err(e) = basic.add(username, password_hash, &consumer) {
                            errors.push(format!("consumers[{i}].credentials[{k}]: {e}"));
                        }
                    }
                    CredentialConfig::Key {
                        key,
                        key_sha256,
                        models,
                        name,
                    } => {
                        let found = match (key, key_sha256) {
                            (Some(key), _) => match key.resolve(env) {
                                Ok(secret) if secret.len() >= 16 => Ok(digest(secret.as_bytes())),
                                Ok(_) => Err("the key must be at least 16 characters".to_owned()),
                                Err(e) => Err(e),
                            },
                            (None, Some(hex)) => from_hex(hex)
                                .ok_or_else(|| "key_sha256 must be 64 hex digits".to_owned()),
                            (None, None) => Err("give key or key_sha256".to_owned()),
                        };
                        match found {
                            Ok(digest) => {
                                // Each key is the same consumer carrying the key's name
                                // and its scope of models.
                                let key_name = match name {
                                    Some(n) => n.clone(),
                                    None => {
                                        let hex: String = digest[..6]
                                            .iter()
                                            .map(|b| format!("{b:02x}"))
                                            .collect();
                                        format!("sha256:{hex}")
                                    }
                                };
                                let holder = Arc::new(Consumer {
                                    name: Arc::clone(&consumer.name),
                                    groups: consumer.groups.clone(),
                                    name_header: consumer.name_header.clone(),
                                    groups_header: consumer.groups_header.clone(),
                                    rate_key: consumer.rate_key.clone(),
                                    models: (!models.is_empty()).then(|| models.as_slice().into()),
                                    key: Some(key_name.into()),
                                });
                                if by_key.insert(digest, (holder, digest)).is_some() {
                                    errors.push(format!("consumers[{i}].credentials[{k}].key: the same key is given to another consumer"));
                                }
                            }
                            Err(e) => {
                                errors.push(format!("consumers[{i}].credentials[{k}].key: {e}"))
                            }
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(Self { by_key, basic, jwt })
        } else {
            Err(errors)
        }
    }

    /// The consumer owning `key`, if any.
    pub fn by_key(&self, key: &[u8]) -> Option<&Arc<Consumer>> {
        let d = digest(key);
        let (consumer, stored) = self.by_key.get(&d)?;
        // The map lookup found it by digest; the constant-time compare pins the check so a
        // future change of the map cannot turn into an early-exit comparison of secrets.
        bool::from(stored.ct_eq(&d)).then_some(consumer)
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty() && self.basic.is_empty() && self.jwt.is_empty()
    }

    pub(crate) fn by_jwt(&self, issuer: &str, subject: &str) -> Option<&Arc<Consumer>> {
        self.jwt.get(&(issuer.to_owned(), subject.to_owned()))
    }

    pub(crate) fn basic(&self) -> &crate::basic::BasicUsers {
        &self.basic
    }
}

/// A SHA-256 written as 64 hex digits.
fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

pub(crate) fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> Vec<ConsumerConfig> {
        weir_config::from_yaml(yaml, "t").unwrap().consumers
    }

    #[test]
    fn keys_resolve_from_env_and_literals_and_are_found_by_value() {
        let c = cfg(
            "consumers:\n  - { name: acme, groups: [partners], credentials: [ { type: key, key: \"env:ACME_KEY\" } ] }\n  - { name: beta, credentials: [ { type: key, key: \"beta-literal-key-123\" } ] }\n",
        );
        let env = |n: &str| (n == "ACME_KEY").then(|| "acme-secret-key-0001".to_owned());
        let all = Consumers::compile(&c, &env).unwrap();
        assert_eq!(&*all.by_key(b"acme-secret-key-0001").unwrap().name, "acme");
        assert_eq!(&*all.by_key(b"beta-literal-key-123").unwrap().name, "beta");
        assert!(all.by_key(b"acme-secret-key-0002").is_none());
        assert_eq!(
            all.by_key(b"acme-secret-key-0001")
                .unwrap()
                .groups_header
                .as_ref()
                .unwrap(),
            "partners"
        );
    }

    #[test]
    fn a_key_given_by_its_sha256_matches_the_key() {
        let c = cfg(
            "consumers:\n  - { name: acme, credentials: [ { type: key, key: \"replaced-below-0000\" } ] }\n",
        );
        let hex: String = digest(b"acme-secret-key-0001")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut c = c;
        c[0].credentials[0] = weir_config::CredentialConfig::Key {
            models: Vec::new(),
            name: None,
            key: None,
            key_sha256: Some(hex.to_uppercase()),
        };
        let all = Consumers::compile(&c, &|_| None).unwrap();
        assert_eq!(&*all.by_key(b"acme-secret-key-0001").unwrap().name, "acme");
        assert!(all.by_key(b"acme-secret-key-0002").is_none());
    }

    #[test]
    fn each_key_is_known_by_its_name_or_a_digest_prefix() {
        let c = cfg(
            "consumers:\n  - { name: acme, credentials: [ { type: key, key: \"acme-secret-key-0001\", name: ci-bot }, { type: key, key: \"acme-secret-key-0002\" } ] }\n",
        );
        let all = Consumers::compile(&c, &|_| None).unwrap();
        let named = all.by_key(b"acme-secret-key-0001").unwrap();
        assert_eq!(
            (&*named.name, named.key.as_deref()),
            ("acme", Some("ci-bot"))
        );
        let hex: String = digest(b"acme-secret-key-0002")[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let unnamed = all.by_key(b"acme-secret-key-0002").unwrap();
        assert_eq!(
            unnamed.key.as_deref(),
            Some(format!("sha256:{hex}").as_str())
        );
    }

    #[test]
    fn missing_secrets_and_shared_keys_are_errors_that_hide_values() {
        let c = cfg(
            "consumers:\n  - { name: a, credentials: [ { type: key, key: \"env:NOPE\" } ] }\n  - { name: b, credentials: [ { type: key, key: \"same-key-for-both-1\" } ] }\n  - { name: c, credentials: [ { type: key, key: \"same-key-for-both-1\" } ] }\n",
        );
        let errs = Consumers::compile(&c, &|_| None).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("NOPE"));
        assert!(
            errs.iter().all(|e| !e.contains("same-key-for-both-1")),
            "{errs:?}"
        );
    }
}
