//! Every subscription's state is visible: through `GET /api/v1/events/subscriptions/{name}`,
//! the subscription object and `weir events status` — its object in the queue, what it owes,
//! deliveries in flight, the last delivery and the last failure — and a subscription that
//! cannot read its object in the queue is `degraded` with the reason, in a metric too, and
//! recovers by itself.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::admin::*;
use common::events::{REDIS, clean, namespace};
use common::*;
use http::Method;
use serde_json::Value;

async fn state(api: &Api, name: &str) -> Value {
    let r = api
        .call(Method::GET, &format!("/api/v1/events/subscriptions/{name}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_state_shows_lag_deliveries_failures_and_degradation() {
    let endpoint = MockUpstream::start(Behavior::Custom(std::sync::Arc::new(|req| {
        Box::pin(async move {
            let status = if req.uri().path() == "/broken" {
                500
            } else {
                204
            };
            let mut r = http::Response::new(weir_testkit::upstream::full("nope"));
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            r
        })
    })))
    .await;
    let (ns, topic) = (namespace(), unique("watched"));
    let (good, bad) = (unique("good"), unique("bad"));
    let dir = temp_dir("events-status");
    let (node, base) = node(
        &format!(
            "data_dir: {}
events: {{ backend: \"{REDIS}\", namespace: {ns} }}
topics: {{ {topic}: {{}} }}
routes: [ {{ name: input, topic: {topic}, match: {{ paths: [/in] }} }} ]
subscriptions:
  - {{ name: {good}, topic: {topic}, endpoint: \"http://{ep}/ok\" }}
  - {{ name: {bad}, topic: {topic}, endpoint: \"http://{ep}/broken\", retry: {{ schedule: [1h] }} }}
",
            dir.display(),
            ep = endpoint.address()
        ),
        first_admin(),
    )
    .await;
    let api = api_as(&base, "admin", PASSWORD).await;
    let r = HttpClient::new()
        .request(
            Method::POST,
            &format!("http://{}/in", node.running.proxy_addr),
            &[("content-type", "application/json")],
            Bytes::from_static(b"{}"),
        )
        .await;
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    eventually("both attempted", Duration::from_secs(10), || {
        endpoint.recorded().len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let s = state(&api, &good).await;
    assert_eq!(s["state"], "active", "{s}");
    assert_eq!(s["pending"], 0, "{s}");
    assert_eq!(s["last_delivery"]["event_id"], id.as_str(), "{s}");
    assert_eq!(s["last_delivery"]["status"], 204, "{s}");
    assert!(s["last_error"].is_null(), "{s}");
    let object = s["backend_object"].as_str().unwrap();
    assert!(
        object.contains("consumer group") && object.contains(&topic),
        "{s}"
    );
    let s = state(&api, &bad).await;
    assert_eq!(s["pending"], 1, "waits for its retry: {s}");
    assert_eq!(s["last_error"]["status"], 500, "{s}");
    assert!(
        s["last_error"]["detail"].as_str().unwrap().contains("nope"),
        "{s}"
    );
    assert!(s["oldest_age_seconds"].as_f64().unwrap() >= 0.0, "{s}");
    // The file-mode object carries the same state.
    let r = api
        .call(Method::GET, &format!("/api/v1/subscriptions/{bad}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"]["last_error"]["status"], 500);

    // Its consumer group removed outside Weir: degraded with the reason, then made again.
    let mut redis = redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stream = format!("{ns}:{{ev}}:t:{topic}");
    let _: redis::Value = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&stream)
        .arg(&good)
        .query_async(&mut redis)
        .await
        .unwrap();
    let metrics_url = format!("{base}/metrics");
    let degraded_line = format!("weir_event_subscription_degraded{{subscription=\"{good}\"}}");
    let mut seen_degraded = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline && !seen_degraded {
        let m = HttpClient::new().get(&metrics_url).await.text();
        seen_degraded = m
            .lines()
            .any(|l| l.starts_with(&degraded_line) && l.ends_with(" 1"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_degraded, "the degraded metric never showed");
    eventually("recovered", Duration::from_secs(10), || {
        let m = futures_block(HttpClient::new().get(&metrics_url));
        m.lines()
            .any(|l| l.starts_with(&degraded_line) && l.ends_with(" 0"))
    })
    .await;
    assert_eq!(state(&api, &good).await["state"], "active");
    // Delivery goes on with the group made again.
    let r = HttpClient::new()
        .request(
            Method::POST,
            &format!("http://{}/in", node.running.proxy_addr),
            &[("content-type", "application/json")],
            Bytes::from_static(b"{}"),
        )
        .await;
    let again = r.json()["id"].as_str().unwrap().to_owned();
    eventually("delivered after recovery", Duration::from_secs(10), || {
        common::chaos::delivered_ids(&endpoint).contains(&again)
    })
    .await;

    // The CLI shows the same.
    let out = weir_cli(&[
        "events", "status", &bad, "--url", &base, "--token", &api.token,
    ]);
    assert!(out.contains("\"last_error\""), "{out}");
    node.shutdown().await;
    clean(REDIS, &ns, &[&good, &bad], &[&topic]).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs a future to completion from a synchronous check.
fn futures_block(f: impl std::future::Future<Output = weir_testkit::client::Reply>) -> String {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f)).text()
}

/// Runs the `weir` binary; its standard output.
fn weir_cli(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .expect("weir runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
