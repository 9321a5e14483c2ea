//! No secret leaves Weir. The secret fields are listed from the configuration model
//! itself (every field typed `Secret` in weir-config's sources, and no secret-named field
//! of another type), each is set to a literal in a database-mode node run by the real
//! binary at `WEIR_LOG=trace`, the secrets are used (a key, a JWT secret, an inbound
//! signature, a delivery), and none appears in the admin API, the audit log, the export,
//! the metrics or the log.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Method;

const PASSWORD: &str = "operator-password-1";

/// `(type, field)` of every field whose type mentions `Secret`, from the model's sources;
/// and every field named like a secret whose type does not.
fn census() -> (BTreeSet<(String, String)>, Vec<String>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../weir-config/src");
    let mut secret = BTreeSet::new();
    let mut untyped = Vec::new();
    // Every file of the crate, so a model type in a new module is read too.
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".rs"))
        .collect();
    files.sort();
    assert!(files.len() > 5, "{files:?}");
    for file in &files {
        let file = file.as_str();
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        let mut owner = String::new();
        for line in text.lines() {
            let t = line.trim();
            for kw in ["pub struct ", "pub enum "] {
                if let Some(rest) = t.strip_prefix(kw) {
                    owner = rest
                        .split(|c: char| !c.is_alphanumeric() && c != '_')
                        .next()
                        .unwrap()
                        .to_owned();
                }
            }
            // A variant's owner is its enum, with the variant named.
            if let Some(v) = t.strip_suffix(" {")
                && v.chars().next().is_some_and(char::is_uppercase)
                && !v.contains(' ')
            {
                owner = format!("{}::{v}", owner.split("::").next().unwrap());
            }
            // A variant on one line: `Github { secret: crate::Secret },`.
            let (owner, fields) = match t.split_once(" { ") {
                Some((v, rest)) if v.chars().next().is_some_and(char::is_uppercase) => (
                    format!("{}::{v}", owner.split("::").next().unwrap()),
                    rest.trim_end_matches(',')
                        .trim_end_matches('}')
                        .split(", ")
                        .collect(),
                ),
                _ => (owner.clone(), vec![t]),
            };
            for f in fields {
                let Some((name, ty)) = f
                    .trim()
                    .trim_start_matches("pub ")
                    .split_once(": ")
                    .filter(|(n, _)| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                else {
                    continue;
                };
                let ty = ty.trim().trim_end_matches(',');
                check(&mut secret, &mut untyped, file, &owner, name, ty);
            }
        }
    }
    (secret, untyped)
}

fn check(
    secret: &mut BTreeSet<(String, String)>,
    untyped: &mut Vec<String>,
    file: &str,
    owner: &str,
    name: &str,
    ty: &str,
) {
    // Named like a secret but not one: selectors, digests, hashes, counts.
    let not_secret = [
        "key_sha256",
        "password_hash",
        "tokens_per_minute",
        "default_max_tokens",
        "hash_on",
        "max_tokens",
    ];
    {
        {
            if ty.contains("Secret") {
                secret.insert((owner.to_owned(), name.to_owned()));
            } else if ["key", "secret", "password", "token"]
                .iter()
                .any(|w| name.contains(w))
                && !not_secret.contains(&name)
                && ty.contains("String")
                && !(owner == "RateLimitConfig" && name == "key")
            {
                untyped.push(format!("{file}: {owner}.{name}: {ty}"));
            }
        }
    }
}

#[test]
fn every_secret_named_field_of_the_model_is_a_secret_and_the_fixture_sets_each() {
    let (found, untyped) = census();
    assert!(
        untyped.is_empty(),
        "secret-named fields not typed Secret: {untyped:#?}"
    );
    let fixture: BTreeSet<(String, String)> = FIXTURE
        .iter()
        .map(|(o, f)| ((*o).to_owned(), (*f).to_owned()))
        .collect();
    assert_eq!(
        found, fixture,
        "the end-to-end test below must set every secret field"
    );
}

/// The secret fields the node below sets, each to a literal with a marker of its own.
const FIXTURE: [(&str, &str); 13] = [
    ("Config", "store"),
    ("EventsConfig", "backend"),
    ("RateLimitConfig", "store"),
    ("CacheConfig", "store"),
    ("AiLimitsConfig", "store"),
    ("CredentialConfig::Key", "key"),
    ("JwtKeyConfig", "key"),
    ("InboundConfig::StandardWebhooks", "secret"),
    ("InboundConfig::Github", "secret"),
    ("InboundConfig::Hmac", "secret"),
    ("SubscriptionConfig", "signing_secret"),
    ("CertificateConfig", "key"),
    ("ProviderConfig", "api_keys"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_the_api_the_export_the_metrics_or_the_trace_log() {
    let dir = temp_dir("secrets");
    let (proxy, admin, tls, hook) = (free_port(), free_port(), free_port(), free_port());
    let ca = weir_testkit::certs::TestCa::new();
    let leaf = ca.leaf(&["localhost"]);
    let key_line = leaf.key_pem.lines().nth(1).unwrap().to_owned();
    let consumer_key = "consumer-key-MARK01-abcdef";
    let jwt_secret = "jwt-hmac-secret-MARK02-0123456789abcdef";
    let whsec_in = "whsec_c3RhbmRhcmQtd2ViaG9va3MtTUFSSzAz";
    let github = "github-secret-MARK04";
    let hmac = "hmac-secret-MARK05";
    let whsec_out = "whsec_c2lnbmluZy1zZWNyZXQtTUFSSzA2";
    let provider = "sk-provider-MARK07";
    // Postgres here trusts loopback and NATS asks for no credentials: both take a password
    // they do not check. Redis refuses one it does not have: the limits fall back to
    // memory, the cache passes through, and the node runs on.
    let pg = fresh_postgres("weir_secrets").await;
    let store = pg.replace("postgres://postgres@", "postgres://postgres:pg-MARK08@");
    let nats = "nats://weir:nats-MARK09@127.0.0.1:4222";
    let (rl, cache, ail) = (
        "redis://:rl-MARK10@127.0.0.1:6379",
        "redis://:cache-MARK11@127.0.0.1:6379",
        "redis://:ail-MARK12@127.0.0.1:6379",
    );
    let namespace = format!(
        "sec_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let markers = [
        consumer_key,
        jwt_secret,
        "c3RhbmRhcmQtd2ViaG9va3MtTUFSSzAz",
        github,
        hmac,
        "c2lnbmluZy1zZWNyZXQtTUFSSzA2",
        provider,
        &key_line,
        PASSWORD,
        "pg-MARK08",
        "nats-MARK09",
        "rl-MARK10",
        "cache-MARK11",
        "ail-MARK12",
    ];
    let indent = |pem: &str| pem.replace('\n', "\n          ");
    let file = dir.join("weir.yaml");
    std::fs::write(
        &file,
        format!(
            r#"listen:
  proxy: 127.0.0.1:{proxy}
  admin: 127.0.0.1:{admin}
  tls:
    address: 127.0.0.1:{tls}
    certificates:
      - cert: |
          {cert}
        key: |
          {key}
workers: 1
store: "{store}"
data_dir: {dir}
access_log: stderr
events: {{ backend: "{nats}", namespace: {namespace} }}
topics: {{ orders: {{}} }}
subscriptions:
  - {{ name: hook, topic: orders, endpoint: "http://127.0.0.1:{hook}/", signing_secret: "{whsec_out}" }}
ai:
  providers:
    up: {{ kind: openai_compatible, base_url: "http://127.0.0.1:{hook}/v1", api_keys: ["{provider}"] }}
  models:
    - {{ name: m, targets: [up/m] }}
upstreams:
  echo: {{ builtin: echo }}
routes:
  - name: keyed
    match: {{ paths: [/keyed] }}
    upstream: echo
    policies:
      - {{ key_auth: {{}} }}
      - {{ rate_limit: {{ limit: 1000, per: 1s, store: "{rl}", on_store_error: local }} }}
      - {{ cache: {{ ttl: 10s, store: "{cache}" }} }}
  - {{ name: llm, match: {{ paths: [/v1/*] }}, ai: {{}}, policies: [ {{ ai_limits: {{ requests_per_minute: 100, store: "{ail}" }} }} ] }}
  - name: jwt
    match: {{ paths: [/jwt] }}
    upstream: echo
    policies: [ {{ jwt: {{ keys: [ {{ alg: HS256, key: "{jwt_secret}" }} ] }} }} ]
  - {{ name: sw, match: {{ paths: [/in/sw] }}, topic: orders, inbound: {{ scheme: standard_webhooks, secret: "{whsec_in}" }} }}
  - {{ name: gh, match: {{ paths: [/in/gh] }}, topic: orders, inbound: {{ scheme: github, secret: "{github}" }} }}
  - {{ name: hm, match: {{ paths: [/in/hm] }}, topic: orders, inbound: {{ scheme: hmac, secret: "{hmac}", header: x-sig }} }}
consumers:
  - {{ name: acme, credentials: [ {{ type: key, key: "{consumer_key}" }} ] }}
"#,
            cert = indent(leaf.cert_pem.trim_end()),
            key = indent(leaf.key_pem.trim_end()),
            dir = dir.display(),
        ),
    )
    .unwrap();
    let log = dir.join("weir.log");
    let node = serve_logged(
        &file,
        &[],
        &[
            ("WEIR_LOG", "trace"),
            ("WEIR_ADMIN_USER", "ops"),
            ("WEIR_ADMIN_PASSWORD", PASSWORD),
        ],
        &log,
    );
    wait_port(admin).await;
    let cl = HttpClient::new();
    let base = format!("http://127.0.0.1:{proxy}");
    // Use every secret: a good key, a bad JWT, unsigned webhooks (refused), one event.
    let r = cl
        .request(
            Method::GET,
            &format!("{base}/keyed"),
            &[("x-api-key", consumer_key)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = cl
        .request(
            Method::GET,
            &format!("{base}/jwt"),
            &[("authorization", "Bearer a.b.c")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 401);
    for path in ["/in/sw", "/in/gh", "/in/hm"] {
        let r = cl
            .request(
                Method::POST,
                &format!("{base}{path}"),
                &[("x-sig", "00")],
                Bytes::from_static(b"{}"),
            )
            .await;
        assert!(r.status == 401 || r.status == 400, "{path}: {}", r.status);
    }
    let token = {
        let r = cl
            .request(
                Method::POST,
                &format!("http://127.0.0.1:{admin}/api/v1/login"),
                &[("content-type", "application/json")],
                Bytes::from(
                    serde_json::json!({ "username": "ops", "password": PASSWORD }).to_string(),
                ),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["token"].as_str().unwrap().to_owned()
    };
    let auth = format!("Bearer {token}");
    let mut seen = String::new();
    for path in [
        "/api/v1/config",
        "/api/v1/routes",
        "/api/v1/consumers",
        "/api/v1/subscriptions",
        "/api/v1/consumers/acme/credentials",
        "/api/v1/audit",
        "/api/v1/events/subscriptions",
        "/metrics",
    ] {
        let r = cl
            .request(
                Method::GET,
                &format!("http://127.0.0.1:{admin}{path}"),
                &[("authorization", &auth)],
                Bytes::new(),
            )
            .await;
        seen.push_str(&format!("\n== {path} {}\n{}", r.status, r.text()));
    }
    assert!(seen.contains("(redacted)"), "{seen}");
    let export = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["config", "export"])
        .env("WEIR_API_URL", format!("http://127.0.0.1:{admin}"))
        .env("WEIR_API_TOKEN", &token)
        .output()
        .unwrap();
    assert!(export.status.success(), "{export:?}");
    seen.push_str(&String::from_utf8_lossy(&export.stdout));
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(node);
    let trace = std::fs::read_to_string(&log).unwrap();
    assert!(trace.len() > 10_000, "the trace log was written");
    for m in markers {
        assert!(
            !seen.contains(m),
            "{m} shown by the API, export or metrics:\n{seen}"
        );
        let at = trace.lines().find(|l| l.contains(m));
        assert!(at.is_none(), "{m} in the trace log: {}", at.unwrap_or(""));
    }
    drop_postgres(&pg).await;
    let _ = std::fs::remove_dir_all(dir);
}
