//! Rate limits shared through Redis: two real `weir` processes against the machine's Redis
//! hold one limit between them; a Redis of the test's own that stops and comes back
//! exercises `on_store_error` and reconnection.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_weir");
const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

fn serve_file(dir: &std::path::Path, yaml: &str, proxy: u16) -> Proc {
    let file = dir.join(format!("weir-{proxy}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .env("WEIR_LOG", "warn")
        .env_remove("WEIR_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn weir");
    Proc(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_weir_processes_hold_one_limit_through_redis() {
    let up = MockUpstream::start(Behavior::Named("up".into())).await;
    let dir = temp_dir("redis-rl");
    // A route name of its own keys this test's counters apart from every other run.
    let route = unique("rl");
    const LIMIT: usize = 200;
    let mut nodes = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..2 {
        let (proxy, admin) = (free_port(), free_port());
        let yaml = format!(
            "listen: {{ proxy: 127.0.0.1:{proxy}, admin: 127.0.0.1:{admin} }}
workers: 2
access_log: off
upstreams:
{}routes:
  - name: {route}
    upstream: u
    match: {{ paths: [\"/*\"] }}
    policies: [ {{ rate_limit: {{ key: route, limit: {LIMIT}, per: 1h, store: \"{SHARED_REDIS}\" }} }} ]
",
            upstream("u", &[up.address()], "")
        );
        nodes.push(serve_file(&dir, &yaml, proxy));
        ports.push(proxy);
    }
    for p in &ports {
        wait_port(*p).await;
    }

    // 3× the limit, spread over both nodes from 16 concurrent clients.
    let admitted = Arc::new(AtomicUsize::new(0));
    let per_node = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let limited = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (admitted, limited, per_node) = (admitted.clone(), limited.clone(), per_node.clone());
        let node = t % 2;
        let u = format!("http://127.0.0.1:{}/x", ports[node]);
        tasks.push(tokio::spawn(async move {
            let cl = HttpClient::new();
            for _ in 0..(3 * LIMIT / 16) {
                let r = cl.get(&u).await;
                match r.status.as_u16() {
                    200 => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        per_node[node].fetch_add(1, Ordering::Relaxed);
                    }
                    429 => {
                        assert!(r.headers.contains_key("retry-after"));
                        assert_eq!(r.headers["ratelimit-limit"], LIMIT.to_string().as_str());
                        limited.fetch_add(1, Ordering::Relaxed);
                    }
                    s => panic!("unexpected status {s}: {}", r.text()),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let admitted = admitted.load(Ordering::Relaxed);
    let (a, b) = (
        per_node[0].load(Ordering::Relaxed),
        per_node[1].load(Ordering::Relaxed),
    );
    eprintln!("shared limit {LIMIT}: admitted {admitted} (node A {a}, node B {b})");
    // One request per 18 s recovers during the run: a few over the limit are correct.
    assert!(
        (LIMIT..=LIMIT + LIMIT / 20).contains(&admitted),
        "admitted {admitted} (node A {a}, node B {b}) for a shared limit of {LIMIT}"
    );
    assert!(
        a > 0 && b > 0,
        "both nodes admitted part of the limit: {a}, {b}"
    );
    assert!(limited.load(Ordering::Relaxed) > 0);
    drop(nodes);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_errors_follow_on_store_error_and_the_limit_returns_with_redis() {
    let up = MockUpstream::start(Behavior::Named("up".into())).await;
    let mut redis = OwnRedis::start(free_port()).await;
    let store = format!("redis://127.0.0.1:{}", redis.port);
    let gw = gateway(&format!(
        "upstreams:
{}routes:
  - {{ name: open, upstream: u, match: {{ paths: [\"/open/*\"] }}, policies: [ {{ rate_limit: {{ key: ip, limit: 2, per: 1h, store: \"{store}\", on_store_error: allow }} }} ] }}
  - {{ name: closed, upstream: u, match: {{ paths: [\"/closed/*\"] }}, policies: [ {{ rate_limit: {{ key: ip, limit: 2, per: 1h, store: \"{store}\", on_store_error: deny, store_timeout: 50ms }} }} ] }}
  - {{ name: local, upstream: u, match: {{ paths: [\"/local/*\"] }}, policies: [ {{ rate_limit: {{ key: ip, limit: 2, per: 1h, store: \"{store}\" }} }} ] }}
",
        upstream("u", &[up.address()], "")
    ));
    let cl = HttpClient::new();
    for want in ["1", "0"] {
        let r = cl.get(&url(&gw, "/open/x")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["ratelimit-remaining"], want);
    }
    let r = cl.get(&url(&gw, "/open/x")).await;
    assert_eq!(r.status, 429, "the third request within the hour");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1700..=1800).contains(&retry), "retry after {retry}");

    redis.stop();
    for _ in 0..5 {
        let r = cl.get(&url(&gw, "/open/x")).await;
        assert_eq!(r.status, 200, "allow: admitted while the store is down");
        let r = cl.get(&url(&gw, "/closed/x")).await;
        assert_eq!(r.status, 503, "deny: refused while the store is down");
        assert_eq!(r.json()["error"]["type"], "limit_store_unavailable");
    }
    // local (the default): this node's own limit holds while the store is down.
    let local: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(cl.get(&url(&gw, "/local/x")).await.status.as_u16());
        }
        v
    };
    assert_eq!(local, [200, 200, 429], "local fallback limit");
    let m = cl.get(&admin(&gw, "/metrics")).await.text();
    assert!(
        m.contains("weir_policy_outcomes_total{policy=\"rate_limit\",outcome=\"store_error\"}"),
        "{m}"
    );

    // A fresh Redis on the same port (it kept nothing): once reconnected, the limit holds
    // again.
    let _redis = OwnRedis::start(redis.port).await;
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(cl.get(&url(&gw, "/closed/x")).await.status.as_u16());
        if statuses.ends_with(&[200, 200, 429]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        statuses.ends_with(&[200, 200, 429]),
        "after reconnecting the limit holds again: {statuses:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_logged_once_with_its_address_but_not_its_password() {
    let up = MockUpstream::start(Behavior::Named("up".into())).await;
    let dir = temp_dir("redis-down-log");
    let (proxy, admin, dead) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "listen: {{ proxy: 127.0.0.1:{proxy}, admin: 127.0.0.1:{admin} }}
access_log: off
upstreams:
{}routes:
  - name: r
    upstream: u
    match: {{ paths: [\"/*\"] }}
    policies: [ {{ rate_limit: {{ key: ip, limit: 100, per: 1s, store: \"redis://:hunter2-secret@127.0.0.1:{dead}\", on_store_error: allow }} }} ]
",
        upstream("u", &[up.address()], "")
    );
    let file = dir.join("weir.yaml");
    std::fs::write(&file, yaml).unwrap();
    let log = dir.join("stderr.log");
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .env("WEIR_LOG", "info")
        .env_remove("WEIR_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let node = Proc(child);
    wait_port(proxy).await;
    let cl = HttpClient::new();
    for _ in 0..10 {
        assert_eq!(
            cl.get(&format!("http://127.0.0.1:{proxy}/x")).await.status,
            200
        );
    }
    drop(node);
    let text = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Redis store failing"))
        .collect();
    // One line per worker thread's first failure at most, not one per request.
    assert!(!warnings.is_empty() && warnings.len() <= 2, "{text}");
    assert!(
        warnings[0].contains(&format!("127.0.0.1:{dead}")),
        "{}",
        warnings[0]
    );
    assert!(
        !text.contains("hunter2"),
        "the store password was logged: {text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
