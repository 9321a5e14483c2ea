//! Configuration objects ↔ one `Config`: the store keeps upstreams, routes, consumers and
//! the policy defaults as named objects in their YAML shapes; the gateway runs one `Config`
//! made of the node's own settings (listeners, workers, limits: from its file and
//! environment) plus those objects.

use serde_json::Value;
use sha2::{Digest, Sha256};
use weir_config::{
    CertificateConfig, Config, ConsumerConfig, CredentialConfig, PolicyConfig, RouteConfig,
    SubscriptionConfig, TopicConfig, UpstreamConfig,
};
use weir_store::Object;

/// The kinds of objects the API manages, as they appear in URLs and in the store.
pub const KINDS: [&str; 8] = [
    "upstreams",
    "routes",
    "consumers",
    "certificates",
    "topics",
    "subscriptions",
    crate::ai_objects::PROVIDERS,
    crate::ai_objects::MODELS,
];
/// Kinds a node's file may also declare for itself: those stay the node's own (trusted)
/// and are not copied into the store.
pub const NODE_KINDS: [&str; 4] = [
    "topics",
    "subscriptions",
    crate::ai_objects::PROVIDERS,
    crate::ai_objects::MODELS,
];
/// The store kind (and its one name) holding the policy defaults.
pub const DEFAULTS_KIND: &str = "policy_defaults";
pub const DEFAULTS_NAME: &str = "default";

/// Object names: what fits in a URL segment, a metric label and a log line unescaped.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name: {name:?} must be 1-128 letters, digits, '-', '_' or '.' (not starting with '.')"
        ))
    }
}

/// Checks an object body against its kind's shape; returns the body to store (names
/// filled in, API keys replaced by their SHA-256).
pub fn prepare(kind: &str, name: &str, mut body: Value) -> Result<Value, Vec<String>> {
    check_name(name).map_err(|e| vec![e])?;
    let Some(map) = body.as_object_mut() else {
        return Err(vec![format!("{kind}[{name}]: expected a JSON object")]);
    };
    if kind == "subscriptions" {
        // What GET adds (the running state) is not part of what is written: a body read
        // and written back as it is stays valid.
        map.remove("status");
    }
    match map.get("name") {
        None => {
            map.insert("name".to_owned(), Value::String(name.to_owned()));
        }
        Some(Value::String(n)) if n == name => {}
        Some(_) => {
            return Err(vec![format!(
                "{kind}[{name}].name: must be {name:?}, the name in the URL"
            )]);
        }
    }
    let shape = |e: serde_json::Error| vec![format!("{kind}[{name}]: {e}")];
    match kind {
        "upstreams" => {
            let mut inner = body.clone();
            if let Some(m) = inner.as_object_mut() {
                m.remove("name");
            }
            serde_json::from_value::<UpstreamConfig>(inner).map_err(shape)?;
        }
        "routes" => {
            serde_json::from_value::<RouteConfig>(body.clone()).map_err(shape)?;
        }
        "topics" => {
            let mut inner = body.clone();
            if let Some(m) = inner.as_object_mut() {
                m.remove("name");
            }
            serde_json::from_value::<TopicConfig>(inner).map_err(shape)?;
        }
        "subscriptions" => {
            serde_json::from_value::<SubscriptionConfig>(body.clone()).map_err(shape)?;
        }
        "consumers" => {
            let mut c = serde_json::from_value::<ConsumerConfig>(body.clone()).map_err(shape)?;
            hash_keys(&mut c);
            body = serde_json::to_value(&c).map_err(shape)?;
        }
        "certificates" => {
            let c = cert_of(&body).map_err(shape)?;
            let mut errors = Vec::new();
            for (field, v) in [("cert", c.cert.as_str()), ("key", c.key.as_written())] {
                if !v.trim_start().starts_with("-----BEGIN") && v != REDACTED {
                    errors.push(format!(
                        "{kind}[{name}].{field}: the PEM text itself (-----BEGIN ...)"
                    ));
                }
            }
            if !errors.is_empty() {
                return Err(errors);
            }
        }
        crate::ai_objects::PROVIDERS | crate::ai_objects::MODELS => {
            crate::ai_objects::prepare(kind, name, &body)?;
        }
        _ => return Err(vec![format!("{kind}: not a kind of object")]),
    }
    Ok(body)
}

/// A certificate object as the TLS listener takes it (the name is the object's).
fn cert_of(body: &Value) -> Result<CertificateConfig, serde_json::Error> {
    let mut inner = body.clone();
    if let Some(m) = inner.as_object_mut() {
        m.remove("name");
    }
    serde_json::from_value(inner)
}

/// An object as the API (and the audit log) shows it: every secret field, found by its
/// type, as [`weir_config::Secret::shown`]; the rest of the body exactly as stored.
pub fn shown(kind: &str, body: Value) -> Value {
    fn mask<T: serde::Serialize + serde::de::DeserializeOwned>(typed: Value, body: &mut Value) {
        let Ok(t) = serde_json::from_value::<T>(typed) else {
            return;
        };
        let (Ok(plain), Ok(red)) = (
            serde_json::to_value(&t),
            weir_config::redacting(|| serde_json::to_value(&t)),
        ) else {
            return;
        };
        overlay(body, &plain, &red);
    }
    let mut body = body;
    let without_name = |b: &Value| {
        let mut inner = b.clone();
        if let Some(m) = inner.as_object_mut() {
            m.remove("name");
        }
        inner
    };
    let typed = body.clone();
    match kind {
        "upstreams" => mask::<UpstreamConfig>(without_name(&typed), &mut body),
        "routes" => mask::<RouteConfig>(typed, &mut body),
        "consumers" => mask::<ConsumerConfig>(typed, &mut body),
        "subscriptions" => mask::<SubscriptionConfig>(typed, &mut body),
        "topics" => mask::<TopicConfig>(without_name(&typed), &mut body),
        "certificates" => mask::<CertificateConfig>(without_name(&typed), &mut body),
        crate::ai_objects::PROVIDERS => {
            let mut inner = without_name(&typed);
            if let Some(m) = inner.as_object_mut() {
                m.remove("prices");
            }
            mask::<weir_config::ai::ProviderConfig>(inner, &mut body);
        }
        DEFAULTS_KIND => {
            if let Some(p) = body.get_mut("policies") {
                mask::<Vec<PolicyConfig>>(typed["policies"].clone(), p);
            }
        }
        _ => {}
    }
    body
}

/// Where `plain` and `red` (one value serialized as stored and as shown) differ, `body`
/// (the value as written) takes the shown form; what `body` does not have stays absent.
fn overlay(body: &mut Value, plain: &Value, red: &Value) {
    match (body, plain, red) {
        (Value::Object(b), Value::Object(p), Value::Object(r)) => {
            for (k, rv) in r {
                if let (Some(bv), Some(pv)) = (b.get_mut(k), p.get(k)) {
                    overlay(bv, pv, rv);
                }
            }
        }
        (Value::Array(b), Value::Array(p), Value::Array(r)) => {
            for ((bv, pv), rv) in b.iter_mut().zip(p).zip(r) {
                overlay(bv, pv, rv);
            }
        }
        (b, p, r) if p != r => *b = r.clone(),
        _ => {}
    }
}

/// Replaces literal API keys with their SHA-256: the store never holds a key. `env:` and
/// `file:` references stay (they name where the node reads the key).
fn hash_keys(c: &mut ConsumerConfig) {
    for cred in &mut c.credentials {
        if let CredentialConfig::Key {
            key, key_sha256, ..
        } = cred
            && let Some(k) = key
            && !k.is_reference()
        {
            let hex: String = Sha256::digest(k.as_written().as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            *key_sha256 = Some(hex);
            *key = None;
        }
    }
}

/// An object body in its typed shape with every default written out, so two bodies that
/// mean the same compare equal.
pub fn canonical(kind: &str, body: &Value) -> Value {
    fn round<T: serde::Serialize + serde::de::DeserializeOwned>(v: Value) -> Option<Value> {
        serde_json::to_value(serde_json::from_value::<T>(v).ok()?).ok()
    }
    let mut inner = body.clone();
    if kind == "upstreams"
        && let Some(m) = inner.as_object_mut()
    {
        m.remove("name");
    }
    let typed = match kind {
        "upstreams" => round::<UpstreamConfig>(inner),
        "routes" => round::<RouteConfig>(inner),
        "consumers" => round::<ConsumerConfig>(inner),
        DEFAULTS_KIND => round::<Vec<PolicyConfig>>(inner["policies"].clone()),
        _ => None,
    };
    typed.unwrap_or_else(|| body.clone())
}

/// What Weir shows of a configuration: every secret by the rules of its type
/// ([`weir_config::Secret::shown`]: references and public keys as written, anything else
/// `(redacted)`; [`weir_config::SecretUrl::shown`]: a URL's password `(redacted)`), and
/// API keys as their SHA-256. The
/// result is already serialized, under [`weir_config::redacting`], so no caller can
/// serialize the secrets by mistake.
pub fn shown_config<R>(cfg: &Config, view: impl FnOnce(&Config) -> R) -> R {
    let mut cfg = cfg.clone();
    for c in &mut cfg.consumers {
        hash_keys(c);
    }
    weir_config::redacting(|| view(&cfg))
}

/// The whole configuration as the API shows it.
pub fn shown_value(cfg: &Config) -> Result<Value, serde_json::Error> {
    shown_config(cfg, |c| serde_json::to_value(c))
}

/// Shown in place of a secret.
pub const REDACTED: &str = weir_config::REDACTED;

/// The policy defaults body: `{"policies": [...]}`.
pub fn prepare_defaults(body: Value) -> Result<Value, Vec<String>> {
    let policies = body
        .get("policies")
        .cloned()
        .ok_or_else(|| vec!["policies: required (a list of policies)".to_owned()])?;
    serde_json::from_value::<Vec<PolicyConfig>>(policies.clone())
        .map_err(|e| vec![format!("policies: {e}")])?;
    Ok(serde_json::json!({ "policies": policies }))
}

/// The node's own settings plus the stored objects. Errors name the object.
pub fn assemble(base: &Config, objects: &[Object]) -> Result<Config, Vec<String>> {
    let mut cfg = base.clone();
    cfg.upstreams.clear();
    cfg.routes.clear();
    cfg.consumers.clear();
    cfg.policy_defaults.clear();
    let mut errors = Vec::new();
    for o in objects {
        let at = format!("{}[{}]", o.kind, o.name);
        match o.kind.as_str() {
            "upstreams" => {
                let mut inner = o.body.clone();
                if let Some(m) = inner.as_object_mut() {
                    m.remove("name");
                }
                match serde_json::from_value::<UpstreamConfig>(inner) {
                    Ok(u) => {
                        cfg.upstreams.insert(o.name.clone(), u);
                    }
                    Err(e) => errors.push(format!("{at}: {e}")),
                }
            }
            "routes" => match serde_json::from_value::<RouteConfig>(o.body.clone()) {
                Ok(r) => cfg.routes.push(r),
                Err(e) => errors.push(format!("{at}: {e}")),
            },
            // Added to the node's own (from its file), which keep their names.
            "topics" => {
                let mut inner = o.body.clone();
                if let Some(m) = inner.as_object_mut() {
                    m.remove("name");
                }
                match serde_json::from_value::<TopicConfig>(inner) {
                    Ok(_) if base.topics.contains_key(&o.name) => errors.push(format!(
                        "{at}: the node's configuration file declares this topic"
                    )),
                    Ok(t) => {
                        cfg.topics.insert(o.name.clone(), t);
                    }
                    Err(e) => errors.push(format!("{at}: {e}")),
                }
            }
            "subscriptions" => match serde_json::from_value::<SubscriptionConfig>(o.body.clone()) {
                Ok(_) if base.subscriptions.iter().any(|s| s.name == o.name) => errors.push(
                    format!("{at}: the node's configuration file declares this subscription"),
                ),
                Ok(mut s) => {
                    // Made through the API: its endpoint is held to events.allowed_networks.
                    s.from_api = true;
                    s.generation = weir_config::Generation(o.updated_at.saturating_mul(1000));
                    cfg.subscriptions.push(s);
                }
                Err(e) => errors.push(format!("{at}: {e}")),
            },
            "consumers" => match serde_json::from_value::<ConsumerConfig>(o.body.clone()) {
                Ok(c) => cfg.consumers.push(c),
                Err(e) => errors.push(format!("{at}: {e}")),
            },
            // Served by nodes with a TLS listener, after the ones in their own file.
            "certificates" => match cert_of(&o.body) {
                Ok(c) => {
                    if let Some(tls) = &mut cfg.listen.tls {
                        tls.certificates.push(c);
                    }
                }
                Err(e) => errors.push(format!("{at}: {e}")),
            },
            DEFAULTS_KIND => {
                match serde_json::from_value::<Vec<PolicyConfig>>(o.body["policies"].clone()) {
                    Ok(p) => cfg.policy_defaults = p,
                    Err(e) => errors.push(format!("policy_defaults: {e}")),
                }
            }
            crate::ai_objects::PROVIDERS | crate::ai_objects::MODELS => {
                if let Err(e) = crate::ai_objects::add(&mut cfg, base, &o.kind, &o.name, &o.body) {
                    errors.push(e);
                }
            }
            other => errors.push(format!("{at}: unknown kind {other:?}")),
        }
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

/// Validation errors with list positions replaced by object names
/// (`routes[2].upstream` → `routes[orders-api].upstream`).
pub fn name_paths(cfg: &Config, errors: Vec<String>) -> Vec<String> {
    errors
        .into_iter()
        .map(|e| {
            let mut e = e;
            for (list, names) in [
                (
                    "routes[",
                    cfg.routes
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>(),
                ),
                (
                    "consumers[",
                    cfg.consumers.iter().map(|c| c.name.as_str()).collect(),
                ),
            ] {
                if let Some(rest) = e.strip_prefix(list)
                    && let Some(end) = rest.find(']')
                    && let Ok(i) = rest[..end].parse::<usize>()
                    && let Some(name) = names.get(i)
                {
                    e = format!("{list}{name}{}", &rest[end..]);
                }
            }
            e
        })
        .collect()
}

/// A configuration as objects (for seeding a store from a file, and export).
pub fn objects_of(cfg: &Config) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (name, u) in &cfg.upstreams {
        if let Ok(mut v) = serde_json::to_value(u) {
            if let Some(m) = v.as_object_mut() {
                m.insert("name".to_owned(), Value::String(name.clone()));
            }
            out.push(("upstreams".to_owned(), name.clone(), v));
        }
    }
    for r in &cfg.routes {
        if let Ok(v) = serde_json::to_value(r) {
            out.push(("routes".to_owned(), r.name.clone(), v));
        }
    }
    for c in &cfg.consumers {
        if let Ok(v) = serde_json::to_value(c) {
            out.push(("consumers".to_owned(), c.name.clone(), v));
        }
    }
    for (name, t) in &cfg.topics {
        if let Ok(mut v) = serde_json::to_value(t) {
            if let Some(m) = v.as_object_mut() {
                m.insert("name".to_owned(), Value::String(name.clone()));
            }
            out.push(("topics".to_owned(), name.clone(), v));
        }
    }
    for s in &cfg.subscriptions {
        if let Ok(v) = serde_json::to_value(s) {
            out.push(("subscriptions".to_owned(), s.name.clone(), v));
        }
    }
    if !cfg.policy_defaults.is_empty()
        && let Ok(v) = serde_json::to_value(&cfg.policy_defaults)
    {
        out.push((
            DEFAULTS_KIND.to_owned(),
            DEFAULTS_NAME.to_owned(),
            serde_json::json!({ "policies": v }),
        ));
    }
    crate::ai_objects::objects_of(cfg, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_survives_the_round_trip_through_objects() {
        let cfg = weir_config::from_yaml(
            r#"
upstreams:
  orders: { targets: [ { address: "127.0.0.1:7001", weight: 2 } ], retries: 1 }
consumers:
  - { name: acme, groups: [partners], credentials: [ { type: key, key: "env:ACME_KEY" } ] }
policy_defaults: [ { ip: { deny: [10.0.0.0/8] } } ]
routes:
  - name: orders-api
    upstream: orders
    match: { paths: ["/orders/*"], methods: [GET] }
    strip_prefix: true
    policies: [ { key_auth: {} }, { rate_limit: { limit: 10, per: 1m } }, { cache: { ttl: 30s } } ]
"#,
            "t",
        )
        .unwrap();
        let objects: Vec<Object> = objects_of(&cfg)
            .into_iter()
            .map(|(kind, name, body)| Object {
                kind,
                name,
                body,
                revision: 1,
                updated_at: 0,
            })
            .collect();
        assert_eq!(objects.len(), 4);
        let back = assemble(&Config::default(), &objects).unwrap();
        assert_eq!(format!("{:?}", back.routes), format!("{:?}", cfg.routes));
        assert_eq!(
            format!("{:?}", back.upstreams),
            format!("{:?}", cfg.upstreams)
        );
        assert_eq!(
            format!("{:?}", back.consumers),
            format!("{:?}", cfg.consumers)
        );
        assert_eq!(
            format!("{:?}", back.policy_defaults),
            format!("{:?}", cfg.policy_defaults)
        );
    }

    #[test]
    fn literal_keys_are_stored_as_digests_and_names_are_checked() {
        let body = serde_json::json!({ "credentials": [ { "type": "key", "key": "acme-secret-key-0001" }, { "type": "key", "key": "env:K" } ] });
        let stored = prepare("consumers", "acme", body).unwrap();
        let text = stored.to_string();
        assert!(!text.contains("acme-secret-key-0001"), "{text}");
        assert_eq!(
            stored["credentials"][0]["key_sha256"]
                .as_str()
                .unwrap()
                .len(),
            64
        );
        assert_eq!(stored["credentials"][1]["key"], "env:K");
        assert_eq!(stored["name"], "acme");
        assert!(prepare("routes", "../etc", serde_json::json!({})).is_err());
        assert!(
            prepare(
                "routes",
                "a",
                serde_json::json!({ "name": "b", "upstream": "u" })
            )
            .is_err()
        );
        let e = prepare(
            "routes",
            "a",
            serde_json::json!({ "upstream": "u", "bogus": 1 }),
        )
        .unwrap_err();
        assert!(
            e[0].starts_with("routes[a]: unknown field `bogus`"),
            "{e:?}"
        );
    }

    #[test]
    fn secrets_are_redacted_and_references_kept() {
        let cfg = weir_config::from_yaml(
            r#"
store: "postgres://weir:pg-secret@db:5432/weir"
consumers: [ { name: a, credentials: [ { type: key, key: "literal-key-0123456789" }, { type: key, key: "env:K" } ] } ]
routes:
  - name: r
    upstream: u
    policies:
      - jwt: { keys: [ { alg: HS256, key: "hmac-secret-that-is-long-enough-000" }, { alg: HS256, key: "env:JWT" } ] }
      - rate_limit: { limit: 1, per: 1s, store: "redis://:redis-secret@127.0.0.1:6379" }
  - { name: hook, topic: t, inbound: { scheme: github, secret: "inbound-secret-1" } }
  - { name: hook2, topic: t, inbound: { scheme: github, secret: "env:HOOK" } }
events: { backend: "redis://:queue-secret@127.0.0.1:6379" }
topics: { t: {} }
subscriptions:
  - { name: s, topic: t, endpoint: "http://127.0.0.1:1/", signing_secret: "env:OLD whsec_c2lnbmluZy1zZWNyZXQtMTIzNA==" }
ai:
  providers:
    openai: { kind: openai, api_keys: ["sk-provider-secret-1", "env:OPENAI_KEY"] }
"#,
            "t",
        )
        .unwrap();
        let text = shown_value(&cfg).unwrap().to_string();
        for secret in [
            "pg-secret",
            "literal-key-0123456789",
            "hmac-secret",
            "redis-secret",
            "queue-secret",
            "inbound-secret",
            "whsec_",
            "sk-provider-secret",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("env:K") && text.contains("env:JWT") && text.contains("env:HOOK"));
        assert!(text.contains("env:OPENAI_KEY"), "{text}");
        assert!(
            text.contains("postgres://weir:(redacted)@db:5432/weir"),
            "{text}"
        );
    }

    #[test]
    fn stored_objects_are_shown_with_every_secret_field_redacted_by_its_type() {
        let sub = serde_json::json!({ "name": "s", "topic": "t", "endpoint": "http://127.0.0.1:1/",
            "signing_secret": "whsec_c2lnbmluZy1zZWNyZXQtMTIzNA==", "max_in_flight": 4 });
        let shown_sub = shown("subscriptions", sub.clone());
        assert_eq!(shown_sub["signing_secret"], REDACTED);
        assert_eq!(shown_sub["max_in_flight"], 4, "the rest as stored");
        assert!(shown_sub.get("timeout").is_none(), "no defaults added");
        let route = serde_json::json!({ "name": "r", "topic": "t",
            "inbound": { "scheme": "github", "secret": "inbound-secret-1" },
            "policies": [ { "jwt": { "keys": [ { "alg": "HS256", "key": "hmac-secret-that-is-long-enough-000" },
                                               { "alg": "HS256", "key": "env:JWT" } ] } } ] });
        let text = shown("routes", route).to_string();
        assert!(
            !text.contains("inbound-secret") && !text.contains("hmac-secret"),
            "{text}"
        );
        assert!(text.contains("env:JWT"), "{text}");
        let defaults = serde_json::json!({ "policies": [ { "jwt": { "keys": [ { "alg": "HS256", "key": "hmac-secret-that-is-long-enough-000" } ] } } ] });
        assert!(
            !shown(DEFAULTS_KIND, defaults)
                .to_string()
                .contains("hmac-secret")
        );
        let cert = serde_json::json!({ "name": "c", "cert": "-----BEGIN CERTIFICATE-----\nx\n", "key": "-----BEGIN PRIVATE KEY-----\ny\n" });
        let c = shown("certificates", cert);
        assert_eq!(c["key"], REDACTED);
        assert!(
            c["cert"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE")
        );
    }

    #[test]
    fn validation_paths_name_the_objects() {
        let cfg = weir_config::from_yaml(
            "routes: [ { name: zeta, upstream: u }, { name: alpha, upstream: v } ]",
            "t",
        )
        .unwrap();
        let named = name_paths(&cfg, vec!["routes[1].upstream: unknown".to_owned()]);
        assert_eq!(named, ["routes[alpha].upstream: unknown"]);
    }
}
