//! Route policies through the assembled gateway: key auth and consumer identity, ACL, IP
//! rules, CORS, request size, header transforms, static responses, defaults, and the auth
//! bypasses that broke other gateways.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use bytes::Bytes;
use common::*;
use http::Method;

const ACME_KEY: &str = "acme-key-0123456789";
const BETA_KEY: &str = "beta-key-0123456789";

fn consumers(key_file: &std::path::Path) -> String {
    format!(
        "consumers:
  - {{ name: acme, groups: [partners, gold], credentials: [ {{ type: key, key: \"{ACME_KEY}\" }} ] }}
  - {{ name: beta, groups: [trial], credentials: [ {{ type: key, key: \"file:{}\" }} ] }}
",
        key_file.display()
    )
}

async fn setup(
    routes: &str,
    extra: &str,
) -> (weir_proxy::app::Running, MockUpstream, std::path::PathBuf) {
    setup_with(routes, extra, "").await
}

async fn setup_with(
    routes: &str,
    extra: &str,
    more_upstreams: &str,
) -> (weir_proxy::app::Running, MockUpstream, std::path::PathBuf) {
    let up = MockUpstream::start(Behavior::Named("up".into())).await;
    let dir = temp_dir("policies");
    let key_file = dir.join("beta.key");
    std::fs::write(&key_file, format!("{BETA_KEY}\n")).unwrap();
    let gw = gateway(&format!(
        "{extra}{}upstreams:\n{}{more_upstreams}routes:\n{routes}",
        consumers(&key_file),
        upstream("u", &[up.address()], "")
    ));
    (gw, up, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_auth_identifies_the_consumer_and_strips_the_credential() {
    let (gw, up, dir) = setup(
        "  - { name: api, upstream: u, match: { paths: [\"/api/*\"] }, policies: [ { key_auth: { query: api_key } } ] }\n",
        "",
    )
    .await;
    let cl = HttpClient::new();
    let r = cl.get(&url(&gw, "/api/x")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "unauthorized");
    assert!(r.headers.contains_key("www-authenticate"));
    let r = cl
        .request(
            Method::GET,
            &url(&gw, "/api/x"),
            &[("x-api-key", "wrong-key-0123456789")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(!r.text().contains("wrong-key"), "the key is never echoed");
    assert_eq!(up.hit_count(), 0);

    let r = cl
        .request(
            Method::GET,
            &url(&gw, "/api/x"),
            &[("x-api-key", ACME_KEY)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    let got = up.recorded().pop().unwrap();
    assert_eq!(got.headers["x-consumer-name"], "acme");
    assert_eq!(got.headers["x-consumer-groups"], "partners,gold");
    assert!(
        got.headers.get("x-api-key").is_none(),
        "credential stripped"
    );

    let bearer = format!("Bearer {BETA_KEY}");
    let r = cl
        .request(
            Method::GET,
            &url(&gw, "/api/y"),
            &[("authorization", &bearer)],
            Bytes::new(),
        )
        .await;
    assert_eq!(
        r.status, 200,
        "key read from a file: reference, sent as a bearer token"
    );
    let got = up.recorded().pop().unwrap();
    assert_eq!(got.headers["x-consumer-name"], "beta");
    assert!(got.headers.get("authorization").is_none());

    let r = cl
        .get(&url(&gw, &format!("/api/z?a=1&api_key={ACME_KEY}&b=2")))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        up.recorded().pop().unwrap().target,
        "/api/z?a=1&b=2",
        "query credential removed"
    );

    // A repeated credential header is ambiguous and refused.
    let r = cl
        .request(
            Method::GET,
            &url(&gw, "/api/x"),
            &[("x-api-key", ACME_KEY), ("x-api-key", BETA_KEY)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 400);
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_forge_consumer_headers() {
    let (gw, up, dir) = setup(
        "  - { name: open, upstream: u, match: { paths: [\"/open/*\"] } }
  - { name: api, upstream: u, match: { paths: [\"/api/*\"] }, policies: [ { key_auth: {} } ] }
",
        "",
    )
    .await;
    let cl = HttpClient::new();
    let forged = [
        ("x-consumer-name", "admin"),
        ("x-consumer-groups", "admins"),
        ("connection", "x-consumer-name"),
    ];
    let r = cl
        .request(Method::GET, &url(&gw, "/open/x"), &forged, Bytes::new())
        .await;
    assert_eq!(r.status, 200);
    let got = up.recorded().pop().unwrap();
    assert!(
        got.headers.get("x-consumer-name").is_none()
            && got.headers.get("x-consumer-groups").is_none()
    );
    let mut with_key = forged.to_vec();
    with_key.push(("x-api-key", BETA_KEY));
    let r = cl
        .request(Method::GET, &url(&gw, "/api/x"), &with_key, Bytes::new())
        .await;
    assert_eq!(r.status, 200);
    let got = up.recorded().pop().unwrap();
    assert_eq!(got.headers["x-consumer-name"], "beta");
    assert_eq!(got.headers["x-consumer-groups"], "trial");
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_routes_cannot_be_reached_through_path_tricks() {
    let admin = MockUpstream::start(Behavior::Named("admin".into())).await;
    let (gw, _open, dir) = setup_with(
        "  - { name: open, upstream: u, match: { paths: [\"/*\"] } }
  - { name: admin, upstream: admin, match: { paths: [\"/admin/*\"] }, policies: [ { key_auth: {} } ] }
",
        "",
        &upstream("admin", &[admin.address()], ""),
    )
    .await;
    let addr = gw.proxy_addr.to_string();
    for p in [
        "/admin/x",
        "/public/../admin/x",
        "//admin/x",
        "/./admin/x",
        "/%2e%2e/admin/x",
        "/%61dmin/x",
        "/admin/./x",
        "/public/%2e%2e/admin/x",
    ] {
        let reply = raw_request(
            &addr,
            format!("GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            std::time::Duration::from_millis(700),
        )
        .await;
        assert!(
            reply.starts_with("HTTP/1.1 401"),
            "{p} was not refused: {reply}"
        );
    }
    for p in ["/api%2Fadmin/x", "/admin%2Fx", "/x/..;/admin/x"] {
        let reply = raw_request(
            &addr,
            format!("GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            std::time::Duration::from_millis(700),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{p}: {reply}");
    }
    // Paths are case-sensitive: /ADMIN is another path and goes to the open route's upstream,
    // never to the protected one.
    let reply = raw_request(
        &addr,
        b"GET /ADMIN/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_millis(700),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(
        admin.hit_count(),
        0,
        "the protected upstream was reached without a key"
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_allows_and_denies_by_group() {
    let (gw, _up, dir) = setup(
        "  - { name: partners, upstream: u, match: { paths: [\"/p/*\"] }, policies: [ { key_auth: {} }, { acl: { allow: [partners] } } ] }
  - { name: no-trial, upstream: u, match: { paths: [\"/n/*\"] }, policies: [ { acl: { deny: [trial] } }, { key_auth: {} } ] }
",
        "",
    )
    .await;
    let cl = HttpClient::new();
    let get = |path: &'static str, key: &'static str| {
        let cl = cl.clone();
        let u = url(&gw, path);
        async move {
            cl.request(Method::GET, &u, &[("x-api-key", key)], Bytes::new())
                .await
                .status
        }
    };
    assert_eq!(get("/p/1", ACME_KEY).await, 200);
    assert_eq!(get("/p/1", BETA_KEY).await, 403);
    assert_eq!(get("/n/1", ACME_KEY).await, 200);
    assert_eq!(
        get("/n/1", BETA_KEY).await,
        403,
        "policies run in the documented order, not the file's"
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_rules_trust_forwarded_for_only_from_trusted_proxies() {
    let (gw, up, dir) = setup(
        "  - { name: lan, upstream: u, match: { paths: [\"/lan/*\"] }, policies: [ { ip: { allow: [10.0.0.0/8] } } ] }
  - { name: local, upstream: u, match: { paths: [\"/local/*\"] }, policies: [ { ip: { allow: [127.0.0.0/8], deny: [127.0.0.9] } } ] }
",
        "",
    )
    .await;
    let cl = HttpClient::new();
    // Untrusted peer: a spoofed X-Forwarded-For changes nothing.
    let r = cl
        .request(
            Method::GET,
            &url(&gw, "/lan/x"),
            &[("x-forwarded-for", "10.1.2.3")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["type"], "forbidden");
    assert_eq!(cl.get(&url(&gw, "/local/x")).await.status, 200);
    assert_eq!(up.hit_count(), 1);
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);

    let (gw, _up, dir) = setup(
        "  - { name: lan, upstream: u, match: { paths: [\"/lan/*\"] }, policies: [ { ip: { allow: [10.0.0.0/8] } } ] }\n",
        "trusted_proxies: [127.0.0.0/8]\n",
    )
    .await;
    let r = cl
        .request(
            Method::GET,
            &url(&gw, "/lan/x"),
            &[("x-forwarded-for", "10.1.2.3")],
            Bytes::new(),
        )
        .await;
    assert_eq!(
        r.status, 200,
        "from a trusted proxy the forwarded address counts"
    );
    let r = cl
        .request(
            Method::GET,
            &url(&gw, "/lan/x"),
            &[("x-forwarded-for", "10.1.2.3, 192.0.2.1")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 403, "the right-most untrusted hop is the client");
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_answered_and_responses_carry_cors_headers() {
    let (gw, up, dir) = setup(
        "  - { name: api, upstream: u, match: { paths: [\"/api/*\"] }, policies: [ { key_auth: {} }, { cors: { origins: [\"https://app.example.com\"], headers: [x-api-key, content-type], credentials: true, max_age: 60s } } ] }\n",
        "",
    )
    .await;
    let cl = HttpClient::new();
    let r = cl
        .request(
            Method::OPTIONS,
            &url(&gw, "/api/x"),
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "x-api-key"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 204, "preflight answered before authentication");
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
    assert_eq!(r.headers["access-control-max-age"], "60");
    assert!(
        r.headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert_eq!(
        r.headers["access-control-allow-headers"],
        "x-api-key, content-type"
    );
    let r = cl
        .request(
            Method::OPTIONS,
            &url(&gw, "/api/x"),
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "POST"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(r.headers.get("access-control-allow-origin").is_none());
    let r = cl
        .request(
            Method::GET,
            &url(&gw, "/api/x"),
            &[("origin", "https://app.example.com")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.headers["access-control-allow-origin"], "https://app.example.com",
        "errors carry CORS headers so browsers can read them"
    );
    let r = cl
        .request(
            Method::GET,
            &url(&gw, "/api/x"),
            &[
                ("origin", "https://app.example.com"),
                ("x-api-key", ACME_KEY),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(up.hit_count(), 1);
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_size_header_transforms_and_static_responses() {
    let (gw, up, dir) = setup(
        "  - { name: small, upstream: u, match: { paths: [\"/small/*\"] }, policies: [ { request_size: { max: 10 } } ] }
  - { name: tx, upstream: u, match: { paths: [\"/tx/*\"] }, policies: [ { headers: { request: { set: { x-team: core }, remove: [x-drop] }, response: { set: { x-served-by: weir }, remove: [x-upstream-secret] } } } ] }
  - { name: down, upstream: u, match: { paths: [\"/down/*\"] }, policies: [ { static_response: { status: 503, body: \"back soon\", headers: { retry-after: \"120\" } } } ] }
  - { name: moved, upstream: u, match: { paths: [\"/old/*\"] }, policies: [ { static_response: { status: 301, location: \"https://example.com/new\" } } ] }
",
        "",
    )
    .await;
    let cl = HttpClient::new();
    let r = cl
        .request(
            Method::POST,
            &url(&gw, "/small/x"),
            &[],
            Bytes::from_static(b"0123456789abc"),
        )
        .await;
    assert_eq!(r.status, 413);
    let r = cl
        .request(
            Method::POST,
            &url(&gw, "/small/x"),
            &[],
            Bytes::from_static(b"0123"),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = cl
        .request(
            Method::GET,
            &url(&gw, "/tx/x"),
            &[("x-drop", "1"), ("x-team", "client")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.headers["x-served-by"], "weir");
    let got = up.recorded().pop().unwrap();
    assert_eq!(got.headers["x-team"], "core");
    assert!(got.headers.get("x-drop").is_none());
    let before = up.hit_count();
    let r = cl.get(&url(&gw, "/down/x")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (503, "back soon"));
    assert_eq!(r.headers["retry-after"], "120");
    let r = cl.get(&url(&gw, "/old/x")).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.headers["location"], "https://example.com/new");
    assert_eq!(
        up.hit_count(),
        before,
        "static responses never reach the upstream"
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_defaults_apply_unless_a_route_overrides_them() {
    let (gw, _up, dir) = setup(
        "  - { name: guarded, upstream: u, match: { paths: [\"/g/*\"] } }
  - { name: by-query, upstream: u, match: { paths: [\"/q/*\"] }, policies: [ { key_auth: { header: x-token } } ] }
",
        "policy_defaults: [ { key_auth: {} } ]\n",
    )
    .await;
    let cl = HttpClient::new();
    assert_eq!(cl.get(&url(&gw, "/g/1")).await.status, 401);
    assert_eq!(
        cl.request(
            Method::GET,
            &url(&gw, "/g/1"),
            &[("x-api-key", ACME_KEY)],
            Bytes::new()
        )
        .await
        .status,
        200
    );
    let bearer = format!("Bearer {ACME_KEY}");
    assert_eq!(
        cl.request(
            Method::GET,
            &url(&gw, "/q/1"),
            &[("authorization", &bearer)],
            Bytes::new()
        )
        .await
        .status,
        200,
        "bearer still accepted"
    );
    assert_eq!(
        cl.request(
            Method::GET,
            &url(&gw, "/q/1"),
            &[("x-api-key", ACME_KEY)],
            Bytes::new()
        )
        .await
        .status,
        401,
        "the route's own header replaces the default's"
    );
    assert_eq!(
        cl.request(
            Method::GET,
            &url(&gw, "/q/1"),
            &[("x-token", ACME_KEY)],
            Bytes::new()
        )
        .await
        .status,
        200
    );
    let m = cl.get(&admin(&gw, "/metrics")).await.text();
    assert!(
        m.contains("weir_policy_outcomes_total{policy=\"key_auth\",outcome=\"missing\"}"),
        "{m}"
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_headers_per_key_and_survive_reloads() {
    let (gw, _up, dir) = setup(
        "  - { name: rl, upstream: u, match: { paths: [\"/rl/*\"] }, policies: [ { key_auth: {} }, { rate_limit: { key: consumer, limit: 3, per: 1m } } ] }\n",
        "",
    )
    .await;
    let cl = HttpClient::new();
    let get = |key: &'static str| {
        let cl = cl.clone();
        let u = url(&gw, "/rl/x");
        async move {
            cl.request(Method::GET, &u, &[("x-api-key", key)], Bytes::new())
                .await
        }
    };
    for want in ["2", "1", "0"] {
        let r = get(ACME_KEY).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["ratelimit-limit"], "3");
        assert_eq!(r.headers["ratelimit-remaining"], want);
        assert!(r.headers.contains_key("ratelimit-reset"));
    }
    let r = get(ACME_KEY).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "retry after {retry}");
    assert_eq!(r.headers["ratelimit-remaining"], "0");
    assert_eq!(
        get(BETA_KEY).await.status,
        200,
        "another consumer has its own allowance"
    );

    // A reload that keeps the limit keeps its state.
    let mut cfg = gw.gateway.snapshot().config.clone();
    cfg.routes[0].rewrite = Some("/other".into());
    cfg.routes[0].matcher.paths = vec!["/rl/*".into()];
    gw.gateway.apply(cfg).unwrap();
    assert_eq!(
        get(ACME_KEY).await.status,
        429,
        "reload_keeps_rate_limit_state"
    );
    let m = cl.get(&admin(&gw, "/metrics")).await.text();
    assert!(
        m.contains("weir_policy_outcomes_total{policy=\"rate_limit\",outcome=\"limited\"}"),
        "{m}"
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_holds_slots_until_responses_end() {
    let slow = MockUpstream::start(Behavior::Delay(std::time::Duration::from_millis(400))).await;
    let (gw, _up, dir) = setup_with(
        "  - { name: one, upstream: slow, match: { paths: [\"/one/*\"] }, policies: [ { concurrency: { max: 1 } } ] }\n",
        "",
        &upstream("slow", &[slow.address()], ""),
    )
    .await;
    let u = url(&gw, "/one/x");
    let first = tokio::spawn({
        let u = u.clone();
        async move { HttpClient::new().get(&u).await.status }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let r = HttpClient::new().get(&u).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["type"], "overloaded");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(
        HttpClient::new().get(&u).await.status,
        200,
        "the slot was released"
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_verifies_argon2_hashes_off_the_worker_thread() {
    let up = MockUpstream::start(Behavior::Named("up".into())).await;
    let hash = weir_policy::hash_password(b"correct horse").unwrap();
    let gw = gateway(&format!(
        "consumers:
  - {{ name: ops, groups: [admins], credentials: [ {{ type: basic, username: alice, password_hash: \"{hash}\" }} ] }}
upstreams:\n{}routes:
  - {{ name: ops, upstream: u, match: {{ paths: [\"/ops/*\"] }}, policies: [ {{ basic_auth: {{ realm: ops }} }}, {{ acl: {{ allow: [admins] }} }} ] }}
",
        upstream("u", &[up.address()], "")
    ));
    let cl = HttpClient::new();
    let basic = |user: &str, pw: &str| {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    };
    let r = cl.get(&url(&gw, "/ops/x")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.headers["www-authenticate"],
        "Basic realm=\"ops\", charset=\"UTF-8\""
    );
    for (user, pw) in [
        ("alice", "wrong"),
        ("mallory", "correct horse"),
        ("alice", ""),
    ] {
        let r = cl
            .request(
                Method::GET,
                &url(&gw, "/ops/x"),
                &[("authorization", &basic(user, pw))],
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, 401, "{user}:{pw}");
    }
    let r = cl
        .request(
            Method::GET,
            &url(&gw, "/ops/x"),
            &[("authorization", "Basic !!!notbase64")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(up.hit_count(), 0);
    let good = basic("alice", "correct horse");
    for _ in 0..3 {
        // The first verifies the hash; the next are answered from the verified cache.
        let r = cl
            .request(
                Method::GET,
                &url(&gw, "/ops/x"),
                &[("authorization", &good)],
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let got = up.recorded().pop().unwrap();
    assert_eq!(got.headers["x-consumer-name"], "ops");
    assert!(
        got.headers.get("authorization").is_none(),
        "credentials stripped"
    );
    gw.shutdown().await;
}
