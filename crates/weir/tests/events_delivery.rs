//! Subscriptions: deliveries signed per Standard Webhooks with retries, dead letters and a
//! stop on 410; pacing by a rate limit; per-key ordering past a failing head; structured
//! CloudEvents documents.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::events::yaml;
use common::*;
use http::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriptions_deliver_signed_retry_dead_letter_and_stop_on_410() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use weir_testkit::upstream::full;
    let flaky_calls = Arc::new(AtomicUsize::new(0));
    let endpoint = {
        let flaky_calls = Arc::clone(&flaky_calls);
        MockUpstream::start(Behavior::Custom(Arc::new(move |req| {
            let flaky_calls = Arc::clone(&flaky_calls);
            Box::pin(async move {
                let status = match req.uri().path() {
                    "/flaky" => {
                        if flaky_calls.fetch_add(1, Ordering::SeqCst) < 2 {
                            503
                        } else {
                            200
                        }
                    }
                    "/gone" => 410,
                    "/broken" => 500,
                    _ => 204,
                };
                let mut r = http::Response::new(full("answer"));
                *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                r
            })
        })))
        .await
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("events-delivery");
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let ep = |path: &str| format!("http://{}{path}", endpoint.address());
    let cfg = weir_config::from_yaml(
        &format!(
            "{}subscriptions:
  - {{ name: signed, topic: orders, endpoint: \"{}\", signing_secret: \"{secret}\" }}
  - {{ name: flaky, topic: orders, endpoint: \"{}\", retry: {{ schedule: [50ms, 50ms, 50ms] }} }}
  - {{ name: gone, topic: orders, endpoint: \"{}\" }}
  - {{ name: typed, topic: orders, endpoint: \"{}\", filter: {{ types: [order.created] }} }}
  - {{ name: broken, topic: orders, endpoint: \"{}\", retry: {{ schedule: [50ms] }} }}
",
            yaml(&dir, "127.0.0.1:0").replace(
                "listen: { proxy: \"127.0.0.1:0\" }",
                "listen: { proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }"
            ),
            ep("/signed"),
            ep("/flaky"),
            ep("/gone"),
            ep("/typed"),
            ep("/broken")
        ),
        "test",
    )
    .unwrap();
    let node = weir::start(cfg, Default::default(), Default::default(), false)
        .await
        .unwrap();
    let url = format!("http://{}/events/orders", node.running.proxy_addr);
    let cl = HttpClient::new();
    let mut ids = Vec::new();
    for (i, ty) in ["order.created", "order.paid", "order.created"]
        .iter()
        .enumerate()
    {
        let r = cl
            .request(
                Method::POST,
                &url,
                &[
                    ("ce-specversion", "1.0"),
                    ("ce-id", &format!("src-{i}")),
                    ("ce-source", "/shop"),
                    ("ce-type", ty),
                    ("content-type", "application/json"),
                ],
                Bytes::from(format!("{{\"n\":{i}}}")),
            )
            .await;
        assert_eq!(r.status, 202);
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    let delivered = |path: &'static str| {
        endpoint
            .recorded()
            .into_iter()
            .filter(|r| r.target == path)
            .collect::<Vec<_>>()
    };
    eventually("deliveries", Duration::from_secs(10), || {
        delivered("/signed").len() >= 3
            && delivered("/typed").len() >= 2
            && delivered("/flaky").len() >= 5
    })
    .await;
    // Signed per Standard Webhooks, with the 202's id as webhook-id; ce-* kept.
    let key = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    .unwrap();
    let signed = delivered("/signed");
    let mut got_ids: Vec<String> = Vec::new();
    for r in &signed {
        let id = r.headers["webhook-id"].to_str().unwrap().to_owned();
        let ts: i64 = r.headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((ts - weir_events::now_ms() / 1000).abs() < 60);
        let n = ids.iter().position(|x| *x == id).unwrap();
        let body = format!("{{\"n\":{n}}}");
        let want =
            weir_events::delivery::sign(std::slice::from_ref(&key), &id, ts, body.as_bytes());
        assert_eq!(r.headers["webhook-signature"].to_str().unwrap(), want);
        assert_eq!(r.headers["ce-source"], "/shop");
        got_ids.push(id);
    }
    got_ids.sort();
    let mut want_ids = ids.clone();
    want_ids.sort();
    assert_eq!(got_ids, want_ids, "each event once to a healthy endpoint");
    // The filter passes only order.created.
    assert_eq!(delivered("/typed").len(), 2);
    assert!(
        delivered("/typed")
            .iter()
            .all(|r| r.headers["ce-type"] == "order.created")
    );
    // 503, 503, then 200 for the first; the rest go through.
    assert_eq!(
        flaky_calls.load(Ordering::SeqCst),
        5,
        "two failures, then three deliveries"
    );
    let queue = node.queue.clone().unwrap();
    // 410 Gone: the subscription stops. Deliveries already on the wire when the first 410
    // came back are dead letters too; nothing is sent after.
    eventually("gone", Duration::from_secs(5), || {
        !delivered("/gone").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = delivered("/gone").len();
    let dead = queue.dead_letters("gone", 10).await.unwrap();
    assert_eq!(
        dead.len(),
        sent,
        "every delivery answered 410 is a dead letter"
    );
    assert!(dead.iter().all(|d| d.reason.contains("410")));
    let r = cl
        .request(Method::POST, &url, &[], Bytes::from_static(b"after"))
        .await;
    assert_eq!(r.status, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(delivered("/gone").len(), sent, "no delivery after 410 Gone");
    // Always failing with a one-step schedule: two attempts each, then dead letters.
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = queue.dead_letters("broken", 10).await.unwrap();
        if dead.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.len(), 4, "{dead:?}");
    assert!(
        dead.iter()
            .all(|d| d.attempts == 2 && d.reason.contains("500")),
        "{dead:?}"
    );
    assert_eq!(delivered("/broken").len(), 8);
    let all: Vec<String> = endpoint.recorded().into_iter().map(|r| r.target).collect();
    assert!(
        all.iter().filter(|t| *t == "/signed").count() == 4,
        "{all:?}"
    );
    // Outcomes and queue state are metrics.
    let m = cl
        .get(&format!(
            "http://{}/metrics",
            node.running.admin_addr.unwrap()
        ))
        .await
        .text();
    for want in [
        "weir_event_deliveries_total{subscription=\"signed\",outcome=\"delivered\"} 4",
        "weir_event_deliveries_total{subscription=\"flaky\",outcome=\"retry\"} 2",
        "weir_event_deliveries_total{subscription=\"broken\",outcome=\"dead\"} 4",
        "weir_event_deliveries_total{subscription=\"typed\",outcome=\"filtered\"} 2",
        "weir_event_deliveries_total{subscription=\"gone\",outcome=\"gone\"}",
        "weir_event_pending{subscription=\"signed\"}",
        "weir_event_oldest_age_seconds{subscription=\"signed\"}",
        "weir_event_dead_letters{subscription=\"broken\"}",
    ] {
        assert!(m.contains(want), "missing {want} in\n{m}");
    }
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_subscription_paces_its_endpoint() {
    use std::sync::Arc;
    let arrivals = Arc::new(parking_lot::Mutex::new(Vec::<std::time::Instant>::new()));
    let endpoint = {
        let arrivals = Arc::clone(&arrivals);
        MockUpstream::start(Behavior::Custom(Arc::new(move |_req| {
            arrivals.lock().push(std::time::Instant::now());
            Box::pin(async move {
                let mut r = http::Response::new(weir_testkit::upstream::full(""));
                *r.status_mut() = http::StatusCode::NO_CONTENT;
                r
            })
        })))
        .await
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("events-paced");
    let cfg = weir_config::from_yaml(
        &format!(
            "{}subscriptions:
  - {{ name: paced, topic: orders, endpoint: \"http://{}/hook\", rate_limit: {{ limit: 5, per: 1s }} }}
",
            yaml(&dir, "127.0.0.1:0"),
            endpoint.address()
        ),
        "test",
    )
    .unwrap();
    let node = weir::start(cfg, Default::default(), Default::default(), false)
        .await
        .unwrap();
    let url = format!("http://{}/events/orders", node.running.proxy_addr);
    let cl = HttpClient::new();
    for i in 0..10 {
        let r = cl
            .request(Method::POST, &url, &[], Bytes::from(i.to_string()))
            .await;
        assert_eq!(r.status, 202);
    }
    eventually("all delivered", Duration::from_secs(10), || {
        arrivals.lock().len() == 10
    })
    .await;
    let t = arrivals.lock().clone();
    let span = |a: usize, b: usize| t[b].duration_since(t[a]);
    // A burst of five, then one every 200 ms.
    assert!(span(0, 4) < Duration::from_millis(150), "{:?}", span(0, 4));
    assert!(span(0, 9) >= Duration::from_millis(900), "{:?}", span(0, 9));
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_subscription_delivers_each_key_in_order_past_a_failing_head() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let failed_once = Arc::new(AtomicBool::new(false));
    let endpoint = {
        let failed_once = Arc::clone(&failed_once);
        MockUpstream::start(Behavior::Custom(Arc::new(move |req| {
            // The first attempt of the first event of key "a" fails.
            let key = req
                .headers()
                .get("ce-partitionkey")
                .map(|v| v.to_str().unwrap().to_owned());
            let first = req
                .headers()
                .get("ce-id")
                .map(|v| v.to_str().unwrap().to_owned());
            let fail = key.as_deref() == Some("a")
                && first.as_deref() == Some("a1")
                && !failed_once.swap(true, Ordering::SeqCst);
            Box::pin(async move {
                let mut r = http::Response::new(weir_testkit::upstream::full(""));
                *r.status_mut() = if fail {
                    http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    http::StatusCode::NO_CONTENT
                };
                r
            })
        })))
        .await
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("events-ordered");
    let cfg = weir_config::from_yaml(
        &format!(
            "{}subscriptions:
  - {{ name: fifo, topic: orders, endpoint: \"http://{}/hook\", ordered: true, retry: {{ schedule: [200ms] }} }}
",
            yaml(&dir, "127.0.0.1:0"),
            endpoint.address()
        ),
        "test",
    )
    .unwrap();
    let node = weir::start(cfg, Default::default(), Default::default(), false)
        .await
        .unwrap();
    let url = format!("http://{}/events/orders", node.running.proxy_addr);
    let cl = HttpClient::new();
    for (id, key) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("a3", "a")] {
        let r = cl
            .request(
                Method::POST,
                &url,
                &[
                    ("ce-specversion", "1.0"),
                    ("ce-id", id),
                    ("ce-source", "/t"),
                    ("ce-type", "t"),
                    ("ce-partitionkey", key),
                ],
                Bytes::from_static(b"{}"),
            )
            .await;
        assert_eq!(r.status, 202);
    }
    let ids = || -> Vec<String> {
        endpoint
            .recorded()
            .iter()
            .map(|r| r.headers["ce-id"].to_str().unwrap().to_owned())
            .collect()
    };
    eventually("all delivered", Duration::from_secs(10), || {
        ids().len() == 5
    })
    .await;
    let got = ids();
    let a: Vec<&str> = got
        .iter()
        .map(String::as_str)
        .filter(|i| i.starts_with('a'))
        .collect();
    assert_eq!(
        a,
        ["a1", "a1", "a2", "a3"],
        "key a in order, its head retried first: {got:?}"
    );
    let b = got.iter().position(|i| i == "b1").unwrap();
    let a1_again = got.iter().rposition(|i| i == "a1").unwrap();
    assert!(
        b < a1_again,
        "b1 went past the failing head of key a: {got:?}"
    );
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structured_subscription_delivers_one_signed_cloudevents_document() {
    use base64::Engine as _;
    use http_body_util::BodyExt as _;
    use std::sync::Arc;
    type Seen = Vec<(http::HeaderMap, Bytes)>;
    let seen: Arc<parking_lot::Mutex<Seen>> = Arc::default();
    let endpoint = {
        let seen = Arc::clone(&seen);
        MockUpstream::start(Behavior::Custom(Arc::new(move |req| {
            let seen = Arc::clone(&seen);
            Box::pin(async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                seen.lock().push((parts.headers, body));
                let mut r = http::Response::new(weir_testkit::upstream::full(""));
                *r.status_mut() = http::StatusCode::NO_CONTENT;
                r
            })
        })))
        .await
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("events-structured");
    let secret = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let cfg = weir_config::from_yaml(
        &format!(
            "{}subscriptions:
  - {{ name: ce, topic: orders, endpoint: \"http://{}/ce\", cloudevents: structured, signing_secret: \"whsec_{secret}\" }}
",
            yaml(&dir, "127.0.0.1:0"),
            endpoint.address()
        ),
        "test",
    )
    .unwrap();
    let node = weir::start(cfg, Default::default(), Default::default(), false)
        .await
        .unwrap();
    let cl = HttpClient::new();
    let r = cl
        .request(
            Method::POST,
            &format!("http://{}/events/orders", node.running.proxy_addr),
            &[
                ("content-type", "application/json"),
                ("ce-specversion", "1.0"),
                ("ce-id", "order-7"),
                ("ce-source", "/shop"),
                ("ce-type", "order.created"),
            ],
            Bytes::from_static(b"{\"total\":12.5}"),
        )
        .await;
    assert_eq!(r.status, 202);
    eventually("delivered", Duration::from_secs(10), || {
        !seen.lock().is_empty()
    })
    .await;
    let (headers, body) = seen.lock()[0].clone();
    assert_eq!(headers["content-type"], "application/cloudevents+json");
    assert!(!headers.contains_key("ce-type"), "no binary-mode headers");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["id"], "order-7");
    assert_eq!(doc["type"], "order.created");
    assert_eq!(doc["source"], "/shop");
    assert_eq!(doc["data"]["total"], 12.5);
    // Signed over the exact document sent.
    let id = headers["webhook-id"].to_str().unwrap();
    let ts: i64 = headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret)
        .unwrap();
    assert_eq!(
        headers["webhook-signature"].to_str().unwrap(),
        weir_events::delivery::sign(&[key], id, ts, &body)
    );
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
