//! JWT authentication through the gateway, and every JWT edge case from the hostile-input
//! list: `none`, HS/RS-style algorithm confusion, unknown `kid`, embedded `jwk`, `exp`,
//! `nbf`, leeway, `iss`, `aud`, and the token never echoed.

// Integration tests: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

const HS_SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!!";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

struct Keys {
    ec_private: String,
    ec_public: String,
    attacker_private: String,
}

fn keys() -> Keys {
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let attacker = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    Keys {
        ec_private: ec.serialize_pem(),
        ec_public: ec.public_key_pem(),
        attacker_private: attacker.serialize_pem(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_edge_cases_are_refused_and_valid_tokens_identify_the_consumer() {
    let k = keys();
    let dir = temp_dir("jwt");
    let pub_file = dir.join("ec.pub.pem");
    std::fs::write(&pub_file, &k.ec_public).unwrap();
    let up = MockUpstream::start(Behavior::Named("up".into())).await;
    let gw = gateway(&format!(
        "consumers:
  - {{ name: acme-app, groups: [partners], credentials: [ {{ type: jwt, issuer: \"https://idp.example.com\", subject: acme }} ] }}
upstreams:\n{}routes:
  - name: api
    upstream: u
    policies:
      - jwt:
          issuers: [\"https://idp.example.com\"]
          audiences: [orders]
          leeway: 30s
          keys:
            - {{ kid: ec1, alg: ES256, key: \"file:{}\" }}
            - {{ kid: hs1, alg: HS256, key: \"{HS_SECRET}\" }}
",
        upstream("u", &[up.address()], ""),
        pub_file.display()
    ));
    let ec_key = EncodingKey::from_ec_pem(k.ec_private.as_bytes()).unwrap();
    let attacker_key = EncodingKey::from_ec_pem(k.attacker_private.as_bytes()).unwrap();
    let good_claims = json!({ "iss": "https://idp.example.com", "sub": "acme", "aud": "orders", "exp": now() + 300 });
    let es = |kid: Option<&str>, claims: &serde_json::Value, key: &EncodingKey| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = kid.map(str::to_owned);
        encode(&h, claims, key).unwrap()
    };
    let cl = HttpClient::new();
    let call = |token: String| {
        let cl = cl.clone();
        let u = url(&gw, "/orders/1");
        async move {
            cl.request(
                Method::GET,
                &u,
                &[("authorization", &format!("Bearer {token}"))],
                Bytes::new(),
            )
            .await
        }
    };

    let r = call(es(Some("ec1"), &good_claims, &ec_key)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = up.recorded().pop().unwrap();
    assert_eq!(got.headers["x-consumer-name"], "acme-app");
    assert!(got.headers.get("authorization").is_none(), "token stripped");
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("hs1".into());
    let r = call(
        encode(
            &hs,
            &good_claims,
            &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        )
        .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "HS256 with its own key");

    let mut refused: Vec<(&str, String)> = Vec::new();
    // alg none, unsigned.
    refused.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": "ec1"})),
            b64(&good_claims)
        ),
    ));
    // Algorithm confusion: an HMAC token keyed with the EC public key, naming the EC key.
    let mut confused = Header::new(Algorithm::HS256);
    confused.kid = Some("ec1".into());
    refused.push((
        "hs with the public key",
        encode(
            &confused,
            &good_claims,
            &EncodingKey::from_secret(k.ec_public.as_bytes()),
        )
        .unwrap(),
    ));
    // The EC key's kid on an HS token signed with the HS secret: still the wrong algorithm.
    refused.push((
        "hs token with ec kid",
        encode(
            &confused,
            &good_claims,
            &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        )
        .unwrap(),
    ));
    refused.push(("unknown kid", es(Some("nope"), &good_claims, &ec_key)));
    refused.push((
        "kid as a path",
        es(Some("../../etc/passwd"), &good_claims, &ec_key),
    ));
    // An embedded jwk (the attacker's own key) is ignored: the configured key decides.
    let mut with_jwk = Header::new(Algorithm::ES256);
    with_jwk.kid = Some("ec1".into());
    with_jwk.jku = Some("https://attacker.example/jwks.json".into());
    with_jwk.x5u = Some("https://attacker.example/cert.pem".into());
    refused.push((
        "attacker key with jku/x5u",
        encode(&with_jwk, &good_claims, &attacker_key).unwrap(),
    ));
    refused.push(("expired", es(Some("ec1"), &json!({ "iss": "https://idp.example.com", "sub": "acme", "aud": "orders", "exp": now() - 120 }), &ec_key)));
    refused.push((
        "no exp",
        es(
            Some("ec1"),
            &json!({ "iss": "https://idp.example.com", "sub": "acme", "aud": "orders" }),
            &ec_key,
        ),
    ));
    refused.push(("nbf in the future", es(Some("ec1"), &json!({ "iss": "https://idp.example.com", "sub": "acme", "aud": "orders", "exp": now() + 600, "nbf": now() + 300 }), &ec_key)));
    refused.push(("wrong audience", es(Some("ec1"), &json!({ "iss": "https://idp.example.com", "sub": "acme", "aud": "billing", "exp": now() + 300 }), &ec_key)));
    refused.push((
        "no audience",
        es(
            Some("ec1"),
            &json!({ "iss": "https://idp.example.com", "sub": "acme", "exp": now() + 300 }),
            &ec_key,
        ),
    ));
    refused.push(("wrong issuer", es(Some("ec1"), &json!({ "iss": "https://evil.example", "sub": "acme", "aud": "orders", "exp": now() + 300 }), &ec_key)));
    refused.push(("unknown subject", es(Some("ec1"), &json!({ "iss": "https://idp.example.com", "sub": "someone", "aud": "orders", "exp": now() + 300 }), &ec_key)));
    refused.push(("garbage", "not.a.jwt".to_owned()));
    let before = up.hit_count();
    for (case, token) in refused {
        let r = call(token.clone()).await;
        assert_eq!(r.status, 401, "{case}");
        assert_eq!(r.json()["error"]["type"], "unauthorized", "{case}");
        assert!(
            !r.text().contains(&token[..token.len().min(20)]) || token.len() < 12,
            "{case}: token echoed"
        );
    }
    assert_eq!(
        up.hit_count(),
        before,
        "no refused token reached the upstream"
    );

    // Within the leeway an expired token still passes.
    let r = call(es(Some("ec1"), &json!({ "iss": "https://idp.example.com", "sub": "acme", "aud": "orders", "exp": now() - 10 }), &ec_key)).await;
    assert_eq!(r.status, 200);
    let r = cl.get(&url(&gw, "/orders/1")).await;
    assert_eq!(r.status, 401);
    assert!(r.headers.contains_key("www-authenticate"));
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A P-256 key as a JWK with the given `kid`.
fn ec_jwk(kp: &rcgen::KeyPair, kid: &str) -> serde_json::Value {
    let raw = kp.public_key_raw();
    assert_eq!(raw.len(), 65, "uncompressed P-256 point");
    let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    json!({ "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": enc(&raw[1..33]), "y": enc(&raw[33..]) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_are_fetched_cached_refreshed_on_unknown_kid_and_kept_on_failure() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let k1 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let k2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let doc = Arc::new(parking_lot::Mutex::new(
        json!({ "keys": [ec_jwk(&k1, "k1")] }).to_string(),
    ));
    let status = Arc::new(AtomicUsize::new(200));
    let fetches = Arc::new(AtomicUsize::new(0));
    let idp = {
        let (doc, status, fetches) = (doc.clone(), status.clone(), fetches.clone());
        MockUpstream::start(Behavior::Custom(Arc::new(move |_req| {
            let (doc, status, fetches) = (doc.clone(), status.clone(), fetches.clone());
            Box::pin(async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                let mut r = http::Response::new(weir_testkit::upstream::full(doc.lock().clone()));
                *r.status_mut() =
                    http::StatusCode::from_u16(status.load(Ordering::SeqCst) as u16).unwrap();
                r
            })
        })))
        .await
    };
    let up = MockUpstream::start(Behavior::Named("up".into())).await;
    let gw = gateway(&format!(
        "consumers:
  - {{ name: acme-app, credentials: [ {{ type: jwt, issuer: \"https://idp.example.com\", subject: acme }} ] }}
upstreams:\n{}routes:
  - name: api
    upstream: u
    policies:
      - jwt: {{ jwks_url: \"http://{}/.well-known/jwks.json\", jwks_min_interval: 1s, audiences: [orders] }}
",
        upstream("u", &[up.address()], ""),
        idp.address()
    ));
    let claims = json!({ "iss": "https://idp.example.com", "sub": "acme", "aud": "orders", "exp": now() + 300 });
    let sign = |kp: &rcgen::KeyPair, kid: &str| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.to_owned());
        encode(
            &h,
            &claims,
            &EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let cl = HttpClient::new();
    let call = |token: String| {
        let cl = cl.clone();
        let u = url(&gw, "/orders/1");
        async move {
            cl.request(
                Method::GET,
                &u,
                &[("authorization", &format!("Bearer {token}"))],
                Bytes::new(),
            )
            .await
            .status
            .as_u16()
        }
    };

    assert_eq!(call(sign(&k1, "k1")).await, 200, "a key from the JWKS");
    assert_eq!(call(sign(&k1, "k1")).await, 200);
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "fetched once, then cached"
    );

    // k2 is not published yet: refused, and a burst of unknown kids fetches at most once
    // per jwks_min_interval.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for i in 0..20 {
        assert_eq!(call(sign(&k2, &format!("unknown-{i}"))).await, 401);
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "one refetch for twenty unknown kids"
    );

    // Rotation: k2 published; after the interval its first token triggers the refetch.
    *doc.lock() = json!({ "keys": [ec_jwk(&k1, "k1"), ec_jwk(&k2, "k2")] }).to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        call(sign(&k2, "k2")).await,
        200,
        "a rotated-in key is picked up"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 3);

    // Algorithm confusion through the JWKS: an HMAC token keyed with the EC key's public
    // material, and a symmetric key published in the document, are both refused.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let confused = encode(
        &hs,
        &claims,
        &EncodingKey::from_secret(k1.public_key_pem().as_bytes()),
    )
    .unwrap();
    assert_eq!(call(confused).await, 401);
    let secret = "a-shared-secret-of-32-bytes-or-more!";
    *doc.lock() = json!({ "keys": [ec_jwk(&k1, "k1"), ec_jwk(&k2, "k2"),
        { "kty": "oct", "kid": "sym", "alg": "HS256",
          "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret) }] })
    .to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("sym".into());
    let sym = encode(&hs, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap();
    assert_eq!(
        call(sym).await,
        401,
        "symmetric keys are never taken from a JWKS"
    );

    // The identity provider fails: the last good keys stay in use.
    status.store(500, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        call(sign(&k2, "k3")).await,
        401,
        "unknown kid, failed refetch"
    );
    assert_eq!(call(sign(&k1, "k1")).await, 200, "old keys kept");
    assert_eq!(call(sign(&k2, "k2")).await, 200);
    let m = cl.get(&admin(&gw, "/metrics")).await.text();
    assert!(
        m.contains("weir_policy_outcomes_total{policy=\"jwt\",outcome=\"jwks_fetch_error\"}"),
        "{m}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_stop_working_after_max_stale_and_return_with_the_provider() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let k1 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let doc = json!({ "keys": [ec_jwk(&k1, "k1")] }).to_string();
    let status = Arc::new(AtomicUsize::new(200));
    let idp = {
        let status = status.clone();
        MockUpstream::start(Behavior::Custom(Arc::new(move |_req| {
            let (doc, status) = (doc.clone(), status.clone());
            Box::pin(async move {
                let mut r = http::Response::new(weir_testkit::upstream::full(doc));
                *r.status_mut() =
                    http::StatusCode::from_u16(status.load(Ordering::SeqCst) as u16).unwrap();
                r
            })
        })))
        .await
    };
    let up = MockUpstream::start(Behavior::Named("up".into())).await;
    let gw = gateway(&format!(
        "consumers:
  - {{ name: acme-app, credentials: [ {{ type: jwt, issuer: \"https://idp.example.com\", subject: acme }} ] }}
upstreams:\n{}routes:
  - name: api
    upstream: u
    policies:
      - jwt: {{ jwks_url: \"http://{}/jwks\", jwks_max_age: 1s, jwks_max_stale: 1s, jwks_min_interval: 1s }}
",
        upstream("u", &[up.address()], ""),
        idp.address()
    ));
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("k1".into());
    let claims = json!({ "iss": "https://idp.example.com", "sub": "acme", "exp": now() + 300 });
    let token = encode(
        &h,
        &claims,
        &EncodingKey::from_ec_pem(k1.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let cl = HttpClient::new();
    let call = || {
        let cl = cl.clone();
        let u = url(&gw, "/x");
        let auth = format!("Bearer {token}");
        async move {
            cl.request(
                Method::GET,
                &u,
                &[("authorization", auth.as_str())],
                Bytes::new(),
            )
            .await
            .status
            .as_u16()
        }
    };
    assert_eq!(call().await, 200);
    status.store(503, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        call().await,
        401,
        "keys older than jwks_max_stale are not trusted"
    );
    status.store(200, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(call().await, 200, "a successful fetch brings them back");
    gw.shutdown().await;
}
