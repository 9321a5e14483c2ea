//! The response cache through the assembled gateway: hits and misses, Cache-Control and
//! Vary, keys (host, sorted query, consumer), single-flight, size bounds, invalidation, a
//! Redis store shared by two gateways, and cache-poisoning attempts.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Response};
use weir_testkit::upstream::full;

const ACME_KEY: &str = "acme-key-0123456789";
const BETA_KEY: &str = "beta-key-0123456789";

/// An upstream whose answers are steered by the query: `cc=` Cache-Control, `vary=`,
/// `cookie=1`, `size=` body bytes, `delay=` ms, `status=`. The body names the answer's
/// number, the path, and the `X-Forwarded-Host` and `X-Evil` it saw.
async fn steerable() -> (MockUpstream, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&n);
    let up = MockUpstream::start(Behavior::Custom(Arc::new(move |req| {
        let count = Arc::clone(&count);
        Box::pin(async move {
            let i = count.fetch_add(1, Ordering::SeqCst) + 1;
            let q: Vec<(String, String)> = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| {
                    (
                        k.to_owned(),
                        v.replace("%3D", "=")
                            .replace("%2C", ",")
                            .replace("%20", " "),
                    )
                })
                .collect();
            let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            if let Some(ms) = get("delay") {
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            }
            let h = |name: &str| {
                req.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let body = match get("size") {
                Some(n) => "x".repeat(n.parse().unwrap()),
                None => format!(
                    "n={i} path={} xfh={} evil={}",
                    req.uri().path(),
                    h("x-forwarded-host"),
                    h("x-evil")
                ),
            };
            let mut r = Response::new(full(body));
            *r.status_mut() = get("status").map_or(http::StatusCode::OK, |s| {
                http::StatusCode::from_u16(s.parse().unwrap()).unwrap()
            });
            if let Some(cc) = get("cc") {
                r.headers_mut().insert("cache-control", cc.parse().unwrap());
            }
            if let Some(v) = get("vary") {
                r.headers_mut().insert("vary", v.parse().unwrap());
            }
            if get("cookie").is_some() {
                r.headers_mut()
                    .insert("set-cookie", "session=abc".parse().unwrap());
            }
            r
        })
    })))
    .await;
    (up, n)
}

async fn setup(
    cache: &str,
    extra_policies: &str,
) -> (weir_proxy::app::Running, MockUpstream, Arc<AtomicUsize>) {
    let (up, n) = steerable().await;
    let gw = gateway(&format!(
        "consumers:
  - {{ name: acme, credentials: [ {{ type: key, key: \"{ACME_KEY}\" }} ] }}
  - {{ name: beta, credentials: [ {{ type: key, key: \"{BETA_KEY}\" }} ] }}
upstreams:
{}routes:
  - {{ name: {}, upstream: u, match: {{ paths: [\"/*\"] }}, policies: [ {extra_policies}{{ cache: {cache} }} ] }}
",
        upstream("u", &[up.address()], ""),
        unique("cached"),
    ));
    (gw, up, n)
}

async fn get(
    gw: &weir_proxy::app::Running,
    path: &str,
    headers: &[(&str, &str)],
) -> weir_testkit::client::Reply {
    HttpClient::new()
        .request(Method::GET, &url(gw, path), headers, Bytes::new())
        .await
}

fn status(r: &weir_testkit::client::Reply) -> &str {
    r.headers
        .get("x-cache-status")
        .map_or("-", |v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_misses_ages_head_and_sorted_query() {
    let (gw, _up, n) = setup("{ ttl: 1m }", "").await;
    let a = get(&gw, "/a?x=1&y=2", &[]).await;
    assert_eq!((a.status.as_u16(), status(&a)), (200, "MISS"));
    let b = get(&gw, "/a?y=2&x=1", &[]).await;
    assert_eq!(status(&b), "HIT", "query order is not part of the key");
    assert_eq!(a.body, b.body);
    assert_eq!(b.headers["age"], "0");
    assert_ne!(
        a.headers["x-request-id"], b.headers["x-request-id"],
        "a hit gets its own request id"
    );
    let head = HttpClient::new()
        .request(Method::HEAD, &url(&gw, "/a?x=1&y=2"), &[], Bytes::new())
        .await;
    assert_eq!((status(&head), head.body.len()), ("HIT", 0));
    assert_eq!(
        head.headers["content-length"],
        a.body.len().to_string().as_str()
    );
    assert_eq!(n.load(Ordering::SeqCst), 1, "one upstream request");

    // Another host, another path, another query: other keys.
    assert_eq!(
        status(&get(&gw, "/a?x=1&y=2", &[("host", "other.example")]).await),
        "MISS"
    );
    assert_eq!(
        status(&get(&gw, "/a?x=1&y=2", &[("host", "other.example:8081")]).await),
        "MISS",
        "the port is keyed"
    );
    assert_eq!(
        status(&get(&gw, "/a?x=1&y=2", &[("host", "OTHER.example.")]).await),
        "HIT",
        "the host is canonical"
    );
    assert_eq!(status(&get(&gw, "/b?x=1&y=2", &[]).await), "MISS");
    assert_eq!(status(&get(&gw, "/a?x=1", &[]).await), "MISS");
    // A HEAD miss is passed through and keeps nothing (it has no body to keep).
    let head = HttpClient::new()
        .request(Method::HEAD, &url(&gw, "/h"), &[], Bytes::new())
        .await;
    assert_eq!(status(&head), "MISS");
    assert_eq!(status(&get(&gw, "/h", &[]).await), "MISS");
    assert_eq!(status(&get(&gw, "/h", &[]).await), "HIT");

    let m = HttpClient::new().get(&admin(&gw, "/metrics")).await.text();
    assert!(
        m.contains("weir_policy_outcomes_total{policy=\"cache\",outcome=\"hit\"}"),
        "{m}"
    );
    assert!(m.contains("weir_policy_outcomes_total{policy=\"cache\",outcome=\"miss\"}"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_set_cookie_and_status_decide_what_is_kept() {
    let (gw, _up, n) = setup("{ ttl: 1m }", "").await;
    for not_kept in [
        "/a?cc=no-store",
        "/a?cc=private",
        "/a?cc=no-cache",
        "/a?cc=max-age%3D0",
        "/a?cookie=1",
        "/a?status=500",
        "/a?vary=*",
    ] {
        let before = n.load(Ordering::SeqCst);
        assert_eq!(status(&get(&gw, not_kept, &[]).await), "MISS", "{not_kept}");
        assert_eq!(
            status(&get(&gw, not_kept, &[]).await),
            "MISS",
            "{not_kept} is not kept"
        );
        assert_eq!(n.load(Ordering::SeqCst), before + 2);
    }
    // s-maxage wins over max-age; after it passes, the next request is EXPIRED.
    let p = "/s?cc=max-age%3D60%2C%20s-maxage%3D1";
    assert_eq!(status(&get(&gw, p, &[]).await), "MISS");
    assert_eq!(status(&get(&gw, p, &[]).await), "HIT");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status(&get(&gw, p, &[]).await), "EXPIRED");
    assert_eq!(status(&get(&gw, p, &[]).await), "HIT");
    // 404s are kept by default.
    assert_eq!(status(&get(&gw, "/x?status=404", &[]).await), "MISS");
    let r = get(&gw, "/x?status=404", &[]).await;
    assert_eq!((r.status.as_u16(), status(&r)), (404, "HIT"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_ttl_applies_without_cache_control_and_requests_can_bypass() {
    let (gw, _up, _n) = setup("{ ttl: 1s }", "").await;
    assert_eq!(status(&get(&gw, "/t", &[]).await), "MISS");
    assert_eq!(status(&get(&gw, "/t", &[]).await), "HIT");
    for h in [
        ("cache-control", "no-cache"),
        ("cache-control", "no-store"),
        ("pragma", "no-cache"),
        ("range", "bytes=0-1"),
        ("authorization", "Bearer x"),
        ("cookie", "a=b"),
        ("x-http-method-override", "DELETE"),
        ("x-original-url", "/admin"),
    ] {
        assert_eq!(status(&get(&gw, "/t", &[h]).await), "BYPASS", "{h:?}");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status(&get(&gw, "/t", &[]).await), "EXPIRED");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_requests_bypass_and_invalidate() {
    let (gw, _up, _n) = setup("{ ttl: 1m }", "").await;
    assert_eq!(status(&get(&gw, "/doc", &[]).await), "MISS");
    assert_eq!(status(&get(&gw, "/doc", &[]).await), "HIT");
    let r = HttpClient::new()
        .request(
            Method::POST,
            &url(&gw, "/doc"),
            &[],
            Bytes::from_static(b"x"),
        )
        .await;
    assert_eq!((r.status.as_u16(), status(&r)), (200, "BYPASS"));
    assert_eq!(
        status(&get(&gw, "/doc", &[]).await),
        "MISS",
        "the POST made it stale"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_one_variant_per_value() {
    let (gw, _up, n) = setup("{ ttl: 1m }", "").await;
    let p = "/v?vary=accept";
    let a = get(&gw, p, &[("accept", "text/a")]).await;
    let b = get(&gw, p, &[("accept", "text/b")]).await;
    assert_eq!((status(&a), status(&b)), ("MISS", "MISS"));
    let a2 = get(&gw, p, &[("accept", "text/a")]).await;
    let b2 = get(&gw, p, &[("accept", "text/b")]).await;
    let none = get(&gw, p, &[]).await;
    assert_eq!(
        (status(&a2), status(&b2), status(&none)),
        ("HIT", "HIT", "MISS")
    );
    assert_eq!(a.body, a2.body);
    assert_eq!(b.body, b2.body);
    assert_eq!(n.load(Ordering::SeqCst), 3);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_answers_are_never_shared_between_consumers() {
    let (gw, _up, _n) = setup("{ ttl: 1m }", "{ key_auth: {} }, ").await;
    let acme = get(&gw, "/me", &[("x-api-key", ACME_KEY)]).await;
    assert_eq!(status(&acme), "MISS");
    let beta = get(&gw, "/me", &[("x-api-key", BETA_KEY)]).await;
    assert_eq!(
        status(&beta),
        "MISS",
        "another consumer never gets acme's answer"
    );
    assert_ne!(acme.body, beta.body);
    let again = get(&gw, "/me", &[("x-api-key", ACME_KEY)]).await;
    assert_eq!((status(&again), again.body.clone()), ("HIT", acme.body));
    // Unauthenticated requests are refused before the cache.
    assert_eq!(get(&gw, "/me", &[]).await.status, 401);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_make_one_upstream_request() {
    let (gw, _up, n) = setup("{ ttl: 1m }", "").await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let u = url(&gw, "/slow?delay=300");
        tasks.push(tokio::spawn(async move { HttpClient::new().get(&u).await }));
    }
    let mut statuses = Vec::new();
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        statuses.push(status(&r).to_owned());
        bodies.push(r.body);
    }
    assert_eq!(n.load(Ordering::SeqCst), 1, "statuses {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| *s == "MISS").count(), 1);
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn misses_of_an_unkeepable_answer_do_not_queue_behind_each_other() {
    let (gw, _up, n) = setup("{ ttl: 1m }", "").await;
    let p = "/nostore?cc=no-store&delay=500";
    assert_eq!(status(&get(&gw, p, &[]).await), "MISS");
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let u = url(&gw, p);
        tasks.push(tokio::spawn(async move { HttpClient::new().get(&u).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    let took = started.elapsed();
    assert_eq!(n.load(Ordering::SeqCst), 11);
    // Queued behind one another they would take three upstream round trips (1.5 s).
    assert!(took < Duration::from_millis(1200), "took {took:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_pass_through_and_the_memory_store_is_bounded() {
    let (gw, _up, _n) = setup("{ ttl: 1m, max_body: 10KiB, max_size: 40KiB }", "").await;
    // Larger than max_body: sent whole, kept not.
    for _ in 0..2 {
        let r = get(&gw, "/big?size=50000", &[]).await;
        assert_eq!((r.body.len(), status(&r)), (50_000, "MISS"));
    }
    // Twenty 4 KB answers into a 40 KiB store: the oldest are evicted.
    for i in 0..20 {
        assert_eq!(
            status(&get(&gw, &format!("/f{i}?size=4000"), &[]).await),
            "MISS"
        );
    }
    assert_eq!(status(&get(&gw, "/f19?size=4000", &[]).await), "HIT");
    assert_eq!(
        status(&get(&gw, "/f0?size=4000", &[]).await),
        "MISS",
        "evicted"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoning_through_unkeyed_headers_does_not_reach_other_clients() {
    let (gw, _up, _n) = setup("{ ttl: 1m }", "").await;
    // X-Forwarded-Host from an untrusted client is replaced, so the upstream never
    // builds an answer from it, and the kept answer is the honest one.
    let attacker = get(&gw, "/page", &[("x-forwarded-host", "evil.example")]).await;
    assert_eq!(status(&attacker), "MISS");
    assert!(
        !attacker.text().contains("evil.example"),
        "{}",
        attacker.text()
    );
    let victim = get(&gw, "/page", &[]).await;
    assert_eq!(status(&victim), "HIT");
    assert!(!victim.text().contains("evil.example"));

    // A header the upstream varies on keys its own variant.
    let p = "/reflect?vary=x-evil";
    let attacker = get(&gw, p, &[("x-evil", "<script>")]).await;
    assert!(attacker.text().contains("evil=<script>"));
    let victim = get(&gw, p, &[]).await;
    assert_eq!(status(&victim), "MISS");
    assert!(!victim.text().contains("script"));

    // A Host the attacker picks keys its own entry.
    let attacker = get(&gw, "/home", &[("host", "evil.example")]).await;
    assert_eq!(status(&attacker), "MISS");
    let victim = get(&gw, "/home", &[]).await;
    assert_eq!(status(&victim), "MISS");

    // Method-override headers are never cached nor answered from the cache.
    let r = get(&gw, "/home", &[("x-http-method-override", "POST")]).await;
    assert_eq!(status(&r), "BYPASS");
    // A fat GET is not answered from the cache.
    let r = HttpClient::new()
        .request(
            Method::GET,
            &url(&gw, "/home"),
            &[],
            Bytes::from_static(b"body"),
        )
        .await;
    assert_eq!(status(&r), "BYPASS");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_store_is_shared_by_two_gateways() {
    let (up, n) = steerable().await;
    let route = unique("shared-cache");
    let yaml = format!(
        "upstreams:
{}routes:
  - {{ name: {route}, upstream: u, match: {{ paths: [\"/*\"] }}, policies: [ {{ cache: {{ ttl: 1m, store: \"redis://127.0.0.1:6379\" }} }} ] }}
",
        upstream("u", &[up.address()], "")
    );
    // Both nodes are asked for one site (the Host names it; scheme and port are keyed).
    let a = gateway(&yaml);
    let b = gateway(&yaml);
    let first = get(
        &a,
        "/doc?vary=accept",
        &[("accept", "x"), ("host", "api.example")],
    )
    .await;
    assert_eq!(status(&first), "MISS");
    let other = get(
        &b,
        "/doc?vary=accept",
        &[("accept", "x"), ("host", "api.example")],
    )
    .await;
    assert_eq!(
        status(&other),
        "HIT",
        "node B answers from what node A kept"
    );
    assert_eq!(first.body, other.body);
    assert_eq!(
        status(
            &get(
                &b,
                "/doc?vary=accept",
                &[("accept", "y"), ("host", "api.example")]
            )
            .await
        ),
        "MISS"
    );
    assert_eq!(
        status(
            &get(
                &a,
                "/doc?vary=accept",
                &[("accept", "y"), ("host", "api.example")]
            )
            .await
        ),
        "HIT"
    );
    assert_eq!(
        status(
            &get(
                &a,
                "/doc?vary=accept",
                &[("accept", "x"), ("host", "api.example")]
            )
            .await
        ),
        "HIT",
        "both variants kept"
    );
    // An unsafe request through node B makes the URL stale for node A too.
    HttpClient::new()
        .request(
            Method::DELETE,
            &url(&b, "/doc?vary=accept"),
            &[("host", "api.example")],
            Bytes::new(),
        )
        .await;
    assert_eq!(
        status(
            &get(
                &a,
                "/doc?vary=accept",
                &[("accept", "x"), ("host", "api.example")]
            )
            .await
        ),
        "MISS"
    );
    assert_eq!(n.load(Ordering::SeqCst), 4);
    a.shutdown().await;
    b.shutdown().await;
}
