//! Validation of consumers and policies: the part of whole-config validation that covers
//! `consumers`, `policy_defaults` and each route's `policies`.

use std::collections::HashMap;

use crate::model::Config;
use crate::policy::{CredentialConfig, PolicyConfig};
use crate::validate::{Errors, parse_cidr, valid_header_name};

pub(crate) fn validate_consumers(config: &Config, e: &mut Errors) {
    let mut consumer_names: HashMap<&str, usize> = HashMap::new();
    for (i, c) in config.consumers.iter().enumerate() {
        let at = format!("consumers[{i}]");
        if c.name.is_empty() || !c.name.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            e.push(
                format!("{at}.name"),
                "must be non-empty printable text without commas or spaces",
            );
        }
        if let Some(first) = consumer_names.insert(c.name.as_str(), i) {
            e.push(
                format!("{at}.name"),
                format!("{:?} is already used by consumers[{first}]", c.name),
            );
        }
        for (g, group) in c.groups.iter().enumerate() {
            if group.is_empty() || !group.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                e.push(
                    format!("{at}.groups[{g}]"),
                    "must be non-empty printable text without commas or spaces",
                );
            }
        }
        for (k, cred) in c.credentials.iter().enumerate() {
            match cred {
                CredentialConfig::Jwt { issuer, subject } => {
                    if issuer.is_empty() || subject.is_empty() {
                        e.push(
                            format!("{at}.credentials[{k}]"),
                            "a jwt credential needs issuer and subject",
                        );
                    }
                }
                CredentialConfig::Basic {
                    username,
                    password_hash,
                } => {
                    if username.is_empty()
                        || username.contains(':')
                        || !username.bytes().all(|b| b.is_ascii_graphic())
                    {
                        e.push(
                            format!("{at}.credentials[{k}].username"),
                            "printable text without ':' or spaces",
                        );
                    }
                    if !password_hash.starts_with("$argon2") {
                        e.push(
                            format!("{at}.credentials[{k}].password_hash"),
                            "an argon2 PHC string ($argon2id$...); make one with `weir hash-password`",
                        );
                    }
                }
                CredentialConfig::Key {
                    key,
                    key_sha256,
                    models,
                    name,
                } => match (key, key_sha256) {
                    _ if name.as_deref().is_some_and(|n| !key_name_ok(n)) => {
                        e.push(
                            format!("{at}.credentials[{k}].name"),
                            "1 to 64 letters, digits, '.', '_' or '-'",
                        );
                    }
                    _ if name.is_some()
                        && c.credentials[..k].iter().any(|o| {
                            matches!(o, CredentialConfig::Key { name: other, .. } if other == name)
                        }) =>
                    {
                        e.push(
                            format!("{at}.credentials[{k}].name"),
                            "another key of this consumer has this name",
                        );
                    }
                    _ if models
                        .iter()
                        .any(|m| !config.ai.models.iter().any(|x| &x.name == m)) =>
                    {
                        e.push(
                            format!("{at}.credentials[{k}].models"),
                            "names a model that is not under ai.models",
                        );
                    }
                    (Some(key), None) => {
                        if let Err(msg) = check_secret_ref(key) {
                            e.push(format!("{at}.credentials[{k}].key"), msg);
                        }
                    }
                    (None, Some(h)) => {
                        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                            e.push(
                                format!("{at}.credentials[{k}].key_sha256"),
                                "must be 64 hex digits (a SHA-256)",
                            );
                        }
                    }
                    _ => e.push(
                        format!("{at}.credentials[{k}]"),
                        "give exactly one of key and key_sha256",
                    ),
                },
            }
        }
    }
}

/// A secret given as `env:NAME`, `file:PATH` or a literal; only the form is checked here,
/// the value is read when the configuration is compiled.
pub(crate) fn check_secret_ref(s: &crate::Secret) -> Result<(), String> {
    match s.source() {
        crate::SecretSource::Env(name)
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            Err("env: needs a variable name of letters, digits and '_'".into())
        }
        crate::SecretSource::File("") => Err("file: needs a path".into()),
        crate::SecretSource::Literal(v) if v.len() < 16 => {
            Err("a literal key must be at least 16 characters (or use env:NAME / file:PATH)".into())
        }
        _ => Ok(()),
    }
}

pub(crate) fn validate_policy(p: &PolicyConfig, at: &str, e: &mut Errors) {
    let kind = p.kind();
    match p {
        PolicyConfig::KeyAuth(k) => {
            if !valid_header_name(&k.header) {
                e.push(
                    format!("{at}.{kind}.header"),
                    format!("{:?} is not a header name", k.header),
                );
            }
            if let Some(q) = &k.query
                && (q.is_empty()
                    || !q
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
            {
                e.push(
                    format!("{at}.{kind}.query"),
                    "a query parameter name of letters, digits, '-', '_' or '.'",
                );
            }
        }
        PolicyConfig::Jwt(j) => {
            if let Some(url) = &j.jwks_url
                && let Err(why) = check_jwks_url(url)
            {
                e.push(format!("{at}.{kind}.jwks_url"), why);
            }
            if j.keys.is_empty() && j.jwks_url.is_none() {
                e.push(
                    format!("{at}.{kind}.keys"),
                    "at least one key, or a jwks_url",
                );
            }
            if j.jwks_max_age.get() < std::time::Duration::from_secs(1) {
                e.push(format!("{at}.{kind}.jwks_max_age"), "at least 1s");
            }
            if j.jwks_max_stale.get() < j.jwks_max_age.get() {
                e.push(
                    format!("{at}.{kind}.jwks_max_stale"),
                    "at least jwks_max_age",
                );
            }
            if j.jwks_min_interval.get() > j.jwks_max_age.get() {
                e.push(
                    format!("{at}.{kind}.jwks_min_interval"),
                    "at most jwks_max_age",
                );
            }
            if j.leeway.get() > std::time::Duration::from_secs(60) {
                e.push(format!("{at}.{kind}.leeway"), "at most 60s");
            }
            const ALGS: &[&str] = &[
                "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                "ES256", "ES384", "EdDSA",
            ];
            for (i, key) in j.keys.iter().enumerate() {
                if !ALGS.contains(&key.alg.as_str()) {
                    e.push(
                        format!("{at}.{kind}.keys[{i}].alg"),
                        format!("{:?}: one of {}", key.alg, ALGS.join(", ")),
                    );
                }
                if key.key.as_written().is_empty() {
                    e.push(format!("{at}.{kind}.keys[{i}].key"), "must not be empty");
                }
            }
        }
        PolicyConfig::BasicAuth(b) => {
            if b.realm.is_empty()
                || b.realm.contains('"')
                || http::HeaderValue::from_str(&b.realm).is_err()
            {
                e.push(
                    format!("{at}.{kind}.realm"),
                    "printable text without quotes",
                );
            }
        }
        PolicyConfig::Acl(a) => {
            if a.allow.is_empty() && a.deny.is_empty() {
                e.push(format!("{at}.{kind}"), "needs allow or deny groups");
            }
        }
        PolicyConfig::Ip(ip) => {
            if ip.allow.is_empty() && ip.deny.is_empty() {
                e.push(format!("{at}.{kind}"), "needs allow or deny addresses");
            }
            for (field, list) in [("allow", &ip.allow), ("deny", &ip.deny)] {
                for (i, c) in list.iter().enumerate() {
                    if parse_cidr(c).is_none() {
                        e.push(
                            format!("{at}.{kind}.{field}[{i}]"),
                            format!("{c:?} is not an IP address or CIDR"),
                        );
                    }
                }
            }
        }
        PolicyConfig::RequestSize(r) => {
            if r.max.0 == 0 {
                e.push(format!("{at}.{kind}.max"), "must be greater than 0");
            }
        }
        PolicyConfig::Headers(h) => {
            for (side, ops) in [("request", &h.request), ("response", &h.response)] {
                for (name, value) in ops.set.iter().chain(ops.add.iter()) {
                    if !valid_header_name(name) {
                        e.push(
                            format!("{at}.{kind}.{side}"),
                            format!("{name:?} is not a header name"),
                        );
                    }
                    if http::HeaderValue::from_str(value).is_err() {
                        e.push(
                            format!("{at}.{kind}.{side}.{name}"),
                            "not a valid header value",
                        );
                    }
                }
                for name in &ops.remove {
                    if !valid_header_name(name) {
                        e.push(
                            format!("{at}.{kind}.{side}.remove"),
                            format!("{name:?} is not a header name"),
                        );
                    }
                }
            }
        }
        PolicyConfig::Cors(c) => {
            if c.origins.is_empty() {
                e.push(
                    format!("{at}.{kind}.origins"),
                    "at least one origin (or \"*\")",
                );
            }
            for (i, o) in c.origins.iter().enumerate() {
                let ok = o == "*"
                    || ((o.starts_with("https://") || o.starts_with("http://"))
                        && !o.ends_with('/')
                        && http::HeaderValue::from_str(o).is_ok());
                if !ok {
                    e.push(
                        format!("{at}.{kind}.origins[{i}]"),
                        format!(
                            "{o:?}: an origin is scheme://host[:port] without a path, or \"*\""
                        ),
                    );
                }
            }
            if c.credentials && c.origins.iter().any(|o| o == "*") {
                e.push(
                    format!("{at}.{kind}.credentials"),
                    "credentials cannot be allowed for origin \"*\"",
                );
            }
            for (i, m) in c.methods.iter().enumerate() {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                    e.push(
                        format!("{at}.{kind}.methods[{i}]"),
                        "methods are upper-case, like GET",
                    );
                }
            }
            for (i, h) in c.headers.iter().chain(c.expose_headers.iter()).enumerate() {
                if !valid_header_name(h) {
                    e.push(
                        format!("{at}.{kind}.headers[{i}]"),
                        format!("{h:?} is not a header name"),
                    );
                }
            }
        }
        PolicyConfig::RateLimit(r) => {
            let key_ok = matches!(r.key.as_str(), "consumer" | "ip" | "route")
                || r.key.strip_prefix("header:").is_some_and(valid_header_name);
            if !key_ok {
                e.push(
                    format!("{at}.{kind}.key"),
                    format!("{:?}: expected consumer, ip, route or header:NAME", r.key),
                );
            }
            if r.limit == 0 {
                e.push(format!("{at}.{kind}.limit"), "must be at least 1");
            }
            if r.per.get().is_zero() {
                e.push(format!("{at}.{kind}.per"), "must be greater than 0");
            }
            if r.burst == Some(0) {
                e.push(format!("{at}.{kind}.burst"), "must be at least 1");
            }
            check_store(e, &format!("{at}.{kind}"), &r.store, r.store_timeout);
        }
        PolicyConfig::AiLimits(l) => {
            let at = format!("{at}.{kind}");
            if l.requests_per_minute == Some(0) || l.tokens_per_minute == Some(0) {
                e.push(
                    &at,
                    "a limit of 0 refuses everything; leave it out for no limit",
                );
            }
            if l.budget_usd_per_month
                .is_some_and(|b| !b.is_finite() || b <= 0.0)
            {
                e.push(
                    format!("{at}.budget_usd_per_month"),
                    "must be greater than 0",
                );
            }
            if !["consumer", "key", "group", "route"].contains(&l.per.as_str()) {
                e.push(format!("{at}.per"), "consumer, key, group or route");
            }
            if l.default_max_tokens == 0 {
                e.push(format!("{at}.default_max_tokens"), "must be at least 1");
            }
            check_store(e, &at, &l.store, crate::Duration::from_millis(100));
        }
        PolicyConfig::Cache(c) => {
            if c.ttl.get().is_zero() {
                e.push(format!("{at}.{kind}.ttl"), "must be greater than 0");
            }
            check_store(e, &format!("{at}.{kind}"), &c.store, c.store_timeout);
            if c.max_body.0 == 0 || c.max_body.0 > 64 << 20 {
                e.push(
                    format!("{at}.{kind}.max_body"),
                    "must be between 1B and 64MiB",
                );
            }
            if c.max_size.0 < c.max_body.0 {
                e.push(format!("{at}.{kind}.max_size"), "must be at least max_body");
            }
            for (i, m) in c.methods.iter().enumerate() {
                if m != "GET" && m != "HEAD" {
                    e.push(
                        format!("{at}.{kind}.methods[{i}]"),
                        format!("{m:?}: only GET and HEAD answers are cached"),
                    );
                }
            }
            for (i, st) in c.statuses.iter().enumerate() {
                if !(200..=599).contains(st) || *st == 206 {
                    e.push(
                        format!("{at}.{kind}.statuses[{i}]"),
                        format!("{st}: a final status other than 206"),
                    );
                }
            }
        }
        PolicyConfig::Concurrency(c) => {
            if c.max == 0 {
                e.push(format!("{at}.{kind}.max"), "must be at least 1");
            }
        }
        PolicyConfig::StaticResponse(s) => {
            if !(200..=599).contains(&s.status) {
                e.push(format!("{at}.{kind}.status"), "must be between 200 and 599");
            }
            if let Some(l) = &s.location
                && http::HeaderValue::from_str(l).is_err()
            {
                e.push(format!("{at}.{kind}.location"), "not a valid header value");
            }
            if s.location.is_some() && !(300..=399).contains(&s.status) {
                e.push(
                    format!("{at}.{kind}.location"),
                    "a location needs a 3xx status",
                );
            }
            for (name, value) in &s.headers {
                if !valid_header_name(name) || http::HeaderValue::from_str(value).is_err() {
                    e.push(format!("{at}.{kind}.headers.{name}"), "not a valid header");
                }
            }
        }
    }
}

/// A JWKS URL: `https://`, or `http://` to this machine only (keys fetched in the clear
/// from elsewhere could be replaced on the way).
fn check_jwks_url(url: &str) -> Result<(), String> {
    let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(r), _) => (true, r),
        (_, Some(r)) => (false, r),
        _ => return Err(format!("{url:?}: must start with https://")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || authority.contains('@') {
        return Err(format!("{url:?}: names no host (or holds credentials)"));
    }
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !https && !loopback {
        return Err(format!(
            "{url:?}: keys must be fetched over https:// (http:// only from this machine)"
        ));
    }
    Ok(())
}

/// A policy's `store` (`memory` or a Redis URL) and `store_timeout`.
fn check_store(e: &mut Errors, at: &str, store: &crate::SecretUrl, timeout: crate::Duration) {
    let store = store.as_written();
    if store.starts_with("env:") || store.starts_with("file:") {
        // Read when compiled; the URL it holds is checked then.
        return;
    }
    let remote = store
        .strip_prefix("redis://")
        .or_else(|| store.strip_prefix("rediss://"));
    match remote {
        None if store != "memory" => e.push(
            format!("{at}.store"),
            format!("{store:?}: expected \"memory\" or a redis://host:port URL"),
        ),
        Some(rest) if rest.is_empty() || rest.starts_with('/') => e.push(
            format!("{at}.store"),
            "the Redis URL names no host (redis://host:port)",
        ),
        _ => {}
    }
    let t = timeout.get();
    if t.is_zero() || t > std::time::Duration::from_secs(10) {
        e.push(format!("{at}.store_timeout"), "must be between 1ms and 10s");
    }
}

/// A key's name: shown in records and used in limit keys, so short and plain.
fn key_name_ok(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod policy_tests {
    use crate::{from_yaml, validate};

    #[test]
    fn policies_and_consumers_are_validated_with_paths() {
        let cfg = from_yaml(
            r#"
consumers:
  - { name: acme, credentials: [ { type: key, key: "short" } ] }
  - { name: acme, credentials: [ { type: key, key: "env:BAD-NAME" } ] }
upstreams: { u: { targets: [ { address: "127.0.0.1:1" } ] } }
policy_defaults: [ { ip: {} } ]
routes:
  - name: r
    upstream: u
    policies:
      - key_auth: { header: "bad header" }
      - acl: {}
      - cors: { origins: ["*"], credentials: true }
      - static_response: { status: 200, location: /x }
      - key_auth: {}
      - jwt: { jwks_url: http://idp.example.com/jwks.json, leeway: 2m, keys: [ { alg: none, key: x } ] }
      - rate_limit: { limit: 1, per: 1s, store: "memcached://127.0.0.1", store_timeout: 0s }
  - name: r2
    upstream: u
    match: { paths: [/r2] }
    policies: [ { rate_limit: { limit: 1, per: 1s, store: "redis://" } } ]
"#,
            "t",
        )
        .unwrap();
        let errs: Vec<String> = validate(&cfg).iter().map(ToString::to_string).collect();
        for want in [
            "consumers[0].credentials[0].key: a literal key must be at least 16 characters",
            "consumers[1].name: \"acme\" is already used by consumers[0]",
            "consumers[1].credentials[0].key: env: needs a variable name",
            "policy_defaults[0].ip: needs allow or deny addresses",
            "routes[0].policies[0].key_auth.header",
            "routes[0].policies[1].acl: needs allow or deny groups",
            "routes[0].policies[2].cors.credentials",
            "routes[0].policies[3].static_response.location: a location needs a 3xx status",
            "routes[0].policies[4]: key_auth is already in this chain at policies[0]",
            "routes[0].policies[5].jwt.jwks_url",
            "routes[0].policies[5].jwt.leeway: at most 60s",
            "routes[0].policies[5].jwt.keys[0].alg",
            "routes[0].policies[6].rate_limit.store: \"memcached://127.0.0.1\": expected \"memory\" or a redis://host:port URL",
            "routes[0].policies[6].rate_limit.store_timeout: must be between 1ms and 10s",
            "routes[1].policies[0].rate_limit.store: the Redis URL names no host",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "missing {want:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), 15, "{errs:#?}");
    }

    #[test]
    fn jwks_urls_need_https_except_on_this_machine() {
        for ok in [
            "https://idp.example.com/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]:9000/jwks",
        ] {
            assert!(super::check_jwks_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example.com/jwks",
            "http://10.0.0.1/jwks",
            "ftp://idp.example.com/jwks",
            "https:///jwks",
            "http://user:pw@127.0.0.1/jwks",
            "http://127.0.0.1.evil.example/jwks",
        ] {
            assert!(super::check_jwks_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_policies_and_credential_types_are_parse_errors() {
        assert!(
            from_yaml(
                "routes: [ { name: r, upstream: u, policies: [ { kee_auth: {} } ] } ]",
                "t"
            )
            .is_err()
        );
        assert!(
            from_yaml(
                "consumers: [ { name: a, credentials: [ { type: password, key: x } ] } ]",
                "t"
            )
            .is_err()
        );
    }
}
