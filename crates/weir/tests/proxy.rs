//! Proxying behaviour of the assembled gateway over real sockets: routing, rewrites,
//! headers, balancing, retries, timeouts, health and the JSON error shape.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_path_method_and_header() {
    let a = MockUpstream::start(Behavior::Named("a".into())).await;
    let b = MockUpstream::start(Behavior::Named("b".into())).await;
    let c = MockUpstream::start(Behavior::Named("c".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}{}{}routes:
  - {{ name: by-host, upstream: a, match: {{ hosts: [api.example.com], paths: [\"/*\"] }} }}
  - {{ name: orders, upstream: b, match: {{ paths: [\"/orders/*\"], methods: [GET, POST] }} }}
  - {{ name: orders-v2, upstream: c, match: {{ paths: [\"/orders/*\"], methods: [GET], headers: {{ x-api-version: \"2\" }} }} }}
",
        upstream("a", &[a.address()], ""),
        upstream("b", &[b.address()], ""),
        upstream("c", &[c.address()], "")
    ));
    let cl = HttpClient::new();
    let r = cl
        .request(
            Method::GET,
            &url(&gw, "/x"),
            &[("host", "api.example.com")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.text(), "a");
    assert_eq!(cl.get(&url(&gw, "/orders/1")).await.text(), "b");
    let r = cl
        .request(
            Method::GET,
            &url(&gw, "/orders/1"),
            &[("x-api-version", "2")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.text(), "c");
    let r = cl
        .request(Method::DELETE, &url(&gw, "/orders/1"), &[], Bytes::new())
        .await;
    assert_eq!(r.status, 404);
    let r = cl.get(&url(&gw, "/nothing")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.headers["content-type"], "application/json");
    let v = r.json();
    assert_eq!(v["error"]["type"], "no_route");
    assert_eq!(
        v["error"]["request_id"],
        r.headers["x-request-id"].to_str().unwrap()
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strips_prefixes_and_rewrites_paths_keeping_the_query() {
    let up = MockUpstream::start(Behavior::Named("u".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:
  - {{ name: strip, upstream: u, strip_prefix: true, match: {{ paths: [\"/orders/*\"] }} }}
  - {{ name: rw, upstream: u, rewrite: /api/v2, match: {{ paths: [\"/v2/*\"] }} }}
  - {{ name: re, upstream: u, rewrite: \"/users/$1/profile\", match: {{ paths: [\"~/u/([0-9]+)\"] }} }}
  - {{ name: exact, upstream: u, rewrite: /status, match: {{ paths: [/ping] }} }}
",
        upstream("u", &[up.address()], "")
    ));
    let cl = HttpClient::new();
    for (path, want) in [
        ("/orders/42?x=1", "/42?x=1"),
        ("/orders", "/"),
        ("/v2/items/7", "/api/v2/items/7"),
        ("/u/15?full=1", "/users/15/profile?full=1"),
        ("/ping", "/status"),
        ("/orders//a/./b/../c", "/a/c"),
    ] {
        let r = cl.get(&url(&gw, path)).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(up.recorded().last().unwrap().target, want, "{path}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_forwarding_headers_and_request_ids_and_strips_hop_by_hop() {
    let up = MockUpstream::start(Behavior::Named("u".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: u }}\n",
        upstream("u", &[up.address()], "")
    ));
    let cl = HttpClient::new();
    let r = cl
        .request(
            Method::GET,
            &url(&gw, "/h"),
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-real-ip", "6.6.6.6"),
                ("connection", "x-secret, authorization"),
                ("x-secret", "s"),
                ("authorization", "Bearer t"),
                ("x-weir-consumer", "admin"),
                ("keep-alive", "timeout=5"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    let got = up.recorded().pop().unwrap().headers;
    assert_eq!(got["x-forwarded-for"], "127.0.0.1");
    assert_eq!(got["x-forwarded-proto"], "http");
    assert!(got.get("x-forwarded-host").is_some());
    assert!(got.get("x-real-ip").is_none());
    assert!(
        got.get("x-secret").is_none(),
        "header named in Connection must go"
    );
    assert_eq!(
        got["authorization"], "Bearer t",
        "protected header survives Connection"
    );
    assert!(got.get("x-weir-consumer").is_none());
    assert!(got.get("keep-alive").is_none());
    let rid = got["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(rid.len(), 32);
    assert_eq!(r.headers["x-request-id"].to_str().unwrap(), rid);

    let r = cl
        .request(
            Method::GET,
            &url(&gw, "/h"),
            &[("x-request-id", "client-abc")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "client-abc");
    assert_eq!(
        up.recorded().pop().unwrap().headers["x-request-id"],
        "client-abc"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_append_to_forwarded_for() {
    let up = MockUpstream::start(Behavior::Named("u".into())).await;
    let gw = gateway(&format!(
        "trusted_proxies: [127.0.0.0/8]\nupstreams:\n{}routes:\n  - {{ name: all, upstream: u }}\n",
        upstream("u", &[up.address()], "")
    ));
    let cl = HttpClient::new();
    cl.request(
        Method::GET,
        &url(&gw, "/"),
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
        ],
        Bytes::new(),
    )
    .await;
    let got = up.recorded().pop().unwrap().headers;
    assert_eq!(got["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(got["x-forwarded-proto"], "https");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_spreads_by_weight() {
    let a = MockUpstream::start(Behavior::Named("a".into())).await;
    let b = MockUpstream::start(Behavior::Named("b".into())).await;
    let gw = gateway(&format!(
        "upstreams:
  u:
    targets: [ {{ address: \"{}\", weight: 2 }}, {{ address: \"{}\" }} ]
routes:\n  - {{ name: all, upstream: u }}\n",
        a.address(),
        b.address()
    ));
    let cl = HttpClient::new();
    for _ in 0..30 {
        assert_eq!(cl.get(&url(&gw, "/")).await.status, 200);
    }
    assert_eq!((a.hit_count(), b.hit_count()), (20, 10));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_a_key_on_one_endpoint() {
    let a = MockUpstream::start(Behavior::Named("a".into())).await;
    let b = MockUpstream::start(Behavior::Named("b".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: u }}\n",
        upstream(
            "u",
            &[a.address(), b.address()],
            "    balance: consistent_hash\n    hash_on: header:x-user-id\n"
        )
    ));
    let cl = HttpClient::new();
    let mut seen = std::collections::HashSet::new();
    for user in 0..20 {
        let first = cl
            .request(
                Method::GET,
                &url(&gw, "/"),
                &[("x-user-id", &user.to_string())],
                Bytes::new(),
            )
            .await
            .text();
        for _ in 0..3 {
            let again = cl
                .request(
                    Method::GET,
                    &url(&gw, "/"),
                    &[("x-user-id", &user.to_string())],
                    Bytes::new(),
                )
                .await
                .text();
            assert_eq!(again, first, "user {user} moved");
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 2, "keys spread over both endpoints");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_avoids_the_busy_endpoint() {
    let slow = MockUpstream::start(Behavior::Delay(Duration::from_millis(600))).await;
    let fast = MockUpstream::start(Behavior::Named("fast".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: u }}\n",
        upstream(
            "u",
            &[slow.address(), fast.address()],
            "    balance: least_conn\n"
        )
    ));
    let cl = HttpClient::new();
    let u = url(&gw, "/");
    let mut pending = Vec::new();
    for _ in 0..4 {
        let (cl, u) = (cl.clone(), u.clone());
        pending.push(tokio::spawn(async move { cl.get(&u).await }));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for p in pending {
        assert_eq!(p.await.unwrap().status, 200);
    }
    assert!(
        slow.hit_count() <= 1,
        "slow endpoint got {} of 4",
        slow.hit_count()
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_idempotent_requests_on_another_endpoint() {
    let dead = free_port();
    let live = MockUpstream::start(Behavior::Named("live".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: u }}\n",
        upstream(
            "u",
            &[format!("127.0.0.1:{dead}"), live.address()],
            "    retries: 1\n"
        )
    ));
    let cl = HttpClient::new();
    for _ in 0..6 {
        let r = cl.get(&url(&gw, "/")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "live");
    }
    // A POST with a body is also retried when the connect failed (the body was never sent).
    for _ in 0..4 {
        let r = cl
            .request(
                Method::POST,
                &url(&gw, "/"),
                &[],
                Bytes::from_static(b"payload"),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    assert!(
        live.recorded()
            .iter()
            .filter(|r| r.method == "POST")
            .all(|r| r.body_len == 7)
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn does_not_retry_a_post_that_reached_the_upstream() {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    // Reads the request, then drops the connection without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut s, _)) = listener.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            drop(s);
        }
    });
    let other = MockUpstream::start(Behavior::Named("other".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: u }}\n",
        upstream(
            "u",
            &[addr.to_string(), other.address()],
            "    retries: 1\n    balance: round_robin\n"
        )
    ));
    let cl = HttpClient::new();
    let mut failures = 0;
    for _ in 0..4 {
        let r = cl
            .request(Method::POST, &url(&gw, "/"), &[], Bytes::from_static(b"x"))
            .await;
        if r.status == 502 {
            failures += 1;
            assert_eq!(r.json()["error"]["type"], "upstream_protocol_error");
        }
    }
    assert_eq!(
        failures, 2,
        "POSTs that reached the broken endpoint are not replayed"
    );
    assert_eq!(
        other
            .recorded()
            .iter()
            .filter(|r| r.method == "POST")
            .count(),
        2
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_json_errors_naming_the_upstream() {
    let dead = free_port();
    let slow = MockUpstream::start(Behavior::Delay(Duration::from_secs(3))).await;
    let gw = gateway(&format!(
        "upstreams:\n{}{}routes:
  - {{ name: dead, upstream: dead, match: {{ paths: [\"/dead/*\"] }} }}
  - {{ name: slow, upstream: slow, match: {{ paths: [\"/slow/*\"] }} }}
",
        upstream("dead", &[format!("127.0.0.1:{dead}")], ""),
        upstream(
            "slow",
            &[slow.address()],
            "    timeouts: { connect: 1s, request: 300ms }\n"
        )
    ));
    let cl = HttpClient::new();
    let r = cl.get(&url(&gw, "/dead/x")).await;
    assert_eq!(r.status, 502);
    let v = r.json();
    assert_eq!(v["error"]["type"], "upstream_unreachable");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("\"dead\""), "{msg}");
    assert!(!msg.contains("127.0.0.1"), "address leaked: {msg}");
    let r = cl.get(&url(&gw, "/slow/x")).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"]["type"], "upstream_timeout");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_skips_a_failing_endpoint_then_tries_it_again() {
    let bad = MockUpstream::start(Behavior::Status(503)).await;
    let good = MockUpstream::start(Behavior::Named("good".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: u }}\n",
        upstream(
            "u",
            &[bad.address(), good.address()],
            "    health: {{ passive: {{ failures: 2, cooldown: 500ms }} }}\n"
                .replace("{{", "{")
                .replace("}}", "}")
                .as_str()
        )
    ));
    let cl = HttpClient::new();
    for _ in 0..10 {
        cl.get(&url(&gw, "/")).await;
    }
    let after_open = bad.hit_count();
    assert_eq!(after_open, 2, "breaker opens after 2 failures");
    for _ in 0..10 {
        assert_eq!(cl.get(&url(&gw, "/")).await.text(), "good");
    }
    assert_eq!(
        bad.hit_count(),
        after_open,
        "open breaker keeps traffic away"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..4 {
        cl.get(&url(&gw, "/")).await;
    }
    assert_eq!(
        bad.hit_count(),
        after_open + 1,
        "one trial request after the cooldown, then open again"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_endpoints_out_and_back() {
    let a = MockUpstream::start(Behavior::Named("a".into())).await;
    let b = MockUpstream::start(Behavior::Named("b".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: u }}\n",
        upstream(
            "u",
            &[a.address(), b.address()],
            "    health:\n      active: { path: /healthz, interval: 100ms, healthy: 1, unhealthy: 1 }\n"
        )
    ));
    let cl = HttpClient::new();
    a.healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = a.hit_count();
    for _ in 0..10 {
        assert_eq!(cl.get(&url(&gw, "/")).await.text(), "b");
    }
    assert_eq!(a.hit_count(), before);
    let m = cl.get(&admin(&gw, "/metrics")).await.text();
    assert!(
        m.contains(&format!(
            "weir_upstream_endpoint_healthy{{upstream=\"u\",endpoint=\"{}\"}} 0",
            a.address()
        )),
        "{m}"
    );
    b.healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = cl.get(&url(&gw, "/")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["type"], "no_healthy_endpoint");
    a.healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(cl.get(&url(&gw, "/")).await.text(), "a");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstreams_get_http2() {
    let up = MockUpstream::start_with(Behavior::Named("h2".into()), true).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: u }}\n",
        upstream("u", &[up.address()], "    protocol: h2c\n")
    ));
    let r = HttpClient::new().get(&url(&gw, "/x")).await;
    assert_eq!(r.text(), "h2");
    assert_eq!(up.recorded()[0].version, http::Version::HTTP_2);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_healthz_on_the_admin_listener() {
    let up = MockUpstream::start(Behavior::Named("u".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all-routes, upstream: u }}\n",
        upstream("u", &[up.address()], "")
    ));
    let cl = HttpClient::new();
    for _ in 0..3 {
        cl.get(&url(&gw, "/")).await;
    }
    let h = cl.get(&admin(&gw, "/healthz")).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    let m = cl.get(&admin(&gw, "/metrics")).await.text();
    for needle in [
        "weir_requests_total{route=\"all-routes\",status=\"2xx\"}",
        "weir_request_duration_seconds_bucket{route=\"all-routes\"",
        "weir_open_connections",
        "weir_upstream_endpoint_healthy{upstream=\"u\"",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let up = MockUpstream::start(Behavior::Named("u".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: u }}\n",
        upstream("u", &[up.address()], "")
    ));
    let cl = HttpClient::new();
    for _ in 0..50 {
        assert_eq!(cl.get(&url(&gw, "/")).await.status, 200);
    }
    // Two workers may each open one; sequential requests never need more.
    let opened = up.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=2).contains(&opened),
        "{opened} upstream connections for 50 sequential requests"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_one_json_access_log_line_per_request() {
    let up = MockUpstream::start(Behavior::Named("hello".into())).await;
    let dir = temp_dir("access");
    let log = dir.join("access.log");
    let yaml = format!(
        "listen:\n  proxy: 127.0.0.1:0\nworkers: 1\naccess_log: {{ file: {} }}\nupstreams:\n{}routes:\n  - {{ name: logged, upstream: u, match: {{ paths: [\"/l/*\"] }} }}\n",
        log.display(),
        upstream("u", &[up.address()], "")
    );
    let gw = gateway_raw(&yaml);
    let cl = HttpClient::new();
    cl.request(
        Method::POST,
        &url(&gw, "/l/x?q=1"),
        &[("x-request-id", "log-test-1")],
        Bytes::from_static(b"12345"),
    )
    .await;
    cl.get(&url(&gw, "/missing")).await;
    let g = std::sync::Arc::new(log.clone());
    eventually("two log lines", Duration::from_secs(3), || {
        std::fs::read_to_string(g.as_ref())
            .map(|s| s.lines().count() >= 2)
            .unwrap_or(false)
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = &lines[0];
    assert_eq!(first["request_id"], "log-test-1");
    assert_eq!(first["route"], "logged");
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/l/x");
    assert_eq!(first["status"], 200);
    assert_eq!(first["upstream"], "u");
    assert_eq!(first["endpoint"], up.address());
    assert_eq!(first["bytes_in"], 5);
    assert_eq!(first["bytes_out"], 5);
    assert!(first["upstream_ms"].as_f64().unwrap() >= 0.0);
    assert!(first["total_ms"].as_f64().unwrap() >= first["upstream_ms"].as_f64().unwrap());
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[1]["status"], 404);
    assert_eq!(lines[1]["error"], "no_route");
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_listener_also_speaks_h2c() {
    let up = MockUpstream::start(Behavior::Named("u".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: u }}\n",
        upstream("u", &[up.address()], "")
    ));
    let tcp = tokio::net::TcpStream::connect(gw.proxy_addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = http::Request::builder()
            .uri(format!("http://{}/h2", gw.proxy_addr))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let rsp = send.send_request(req).await.unwrap();
        assert_eq!(rsp.status(), 200);
        assert!(rsp.headers().contains_key("x-request-id"));
    }
    // The upstream got HTTP/1.1 with a Host taken from :authority.
    let got = up.recorded().pop().unwrap();
    assert_eq!(got.version, http::Version::HTTP_11);
    assert_eq!(got.headers["host"], gw.proxy_addr.to_string());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_waiting_at_the_deadline() {
    let slow = MockUpstream::start(Behavior::Delay(Duration::from_secs(5))).await;
    let gw = gateway(&format!(
        "shutdown_timeout: 300ms\nupstreams:\n{}routes:\n  - {{ name: all, upstream: u }}\n",
        upstream("u", &[slow.address()], "")
    ));
    let u = url(&gw, "/slow");
    let inflight = tokio::spawn(async move {
        HttpClient::new()
            .send(http::Request::get(&u).body(Default::default()).unwrap())
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    gw.shutdown().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "shutdown waited {took:?} despite a 300ms deadline"
    );
    assert!(
        inflight.await.unwrap().is_err(),
        "the request past the deadline is cut"
    );
}

/// An upstream that speaks HTTP/1.0 (as Python's `http.server` does): Weir answers its
/// client in its own version, HTTP/1.1, and the client's connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_upstream_does_not_downgrade_the_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let old = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = old.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = old.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let r = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: old, match: {{ paths: [\"/*\"] }}, upstream: u }}\n",
        upstream("u", &[addr], "")
    ));
    let mut c = tokio::net::TcpStream::connect(r.proxy_addr).await.unwrap();
    for i in 0..2 {
        c.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut byte))
                .await
                .expect("an answer")
                .unwrap();
            assert_eq!(n, 1, "request {i}: the connection was closed");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "request {i}: {head}");
        assert!(!head.contains("connection: close"), "request {i}: {head}");
        let mut body = [0u8; 2];
        c.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"ok");
    }
}
