//! The event endpoints of the admin API and `weir events`: publish, subscription state,
//! dead letters, attempt records, replay, and a 410-disabled subscription that stays
//! disabled across a restart until it is enabled again.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::admin::*;
use common::*;
use http::Method;
use serde_json::{Value, json};
use weir_testkit::upstream::full;

fn config(dir: &std::path::Path, endpoint: &str) -> String {
    format!(
        "data_dir: {}
topics: {{ orders: {{ max_event_size: 1KiB }} }}
routes: [ {{ name: input, topic: orders, match: {{ paths: [/events/orders] }} }} ]
subscriptions:
  - {{ name: ok, topic: orders, endpoint: \"http://{endpoint}/ok\" }}
  - {{ name: gone, topic: orders, endpoint: \"http://{endpoint}/gone\" }}
  - {{ name: broken, topic: orders, endpoint: \"http://{endpoint}/broken\", retry: {{ schedule: [50ms] }} }}
",
        dir.display()
    )
}

async fn state(api: &Api, name: &str) -> Value {
    let r = api.call(Method::GET, "/api/v1/events/subscriptions").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_are_published_inspected_and_replayed_through_the_admin_api_and_cli() {
    // /gone answers 410 until `healed`; /broken always 500.
    let healed = Arc::new(AtomicBool::new(false));
    let endpoint = {
        let healed = Arc::clone(&healed);
        MockUpstream::start(Behavior::Custom(Arc::new(move |req| {
            let healed = healed.load(Ordering::SeqCst);
            Box::pin(async move {
                let status = match req.uri().path() {
                    "/gone" if !healed => 410,
                    "/broken" => 500,
                    _ => 204,
                };
                let mut r = http::Response::new(full("endpoint says hello"));
                *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                r
            })
        })))
        .await
    };
    let hits = |path: &str| {
        endpoint
            .recorded()
            .iter()
            .filter(|r| r.target == path)
            .count()
    };
    let dir = temp_dir("events-admin");
    let (node, base) = node(&config(&dir, &endpoint.address()), first_admin()).await;
    let api = api_as(&base, "admin", PASSWORD).await;

    // Publish through the API: 202 with the id; CloudEvents headers kept.
    let r = api
        .call_with(
            Method::POST,
            "/api/v1/topics/orders/events",
            None,
            &[
                ("content-type", "application/json"),
                ("ce-specversion", "1.0"),
                ("ce-id", "c-1"),
                ("ce-source", "/admin"),
                ("ce-type", "order.created"),
            ],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = api
        .call(Method::POST, "/api/v1/topics/nothing/events")
        .await;
    assert_eq!(r.status, 404);
    let r = api.call(Method::GET, &format!("/api/v1/events/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["topic"], "orders");
    assert!(
        r.json()["headers"]
            .as_array()
            .unwrap()
            .contains(&json!(["ce-type", "order.created"]))
    );
    assert_eq!(
        api.call(Method::GET, "/api/v1/events/no-such-id")
            .await
            .status,
        404
    );

    // Delivered to ok; dead at broken after two attempts; gone disabled by its 410.
    eventually("outcomes", Duration::from_secs(10), || {
        hits("/ok") == 1 && hits("/broken") == 2 && hits("/gone") == 1
    })
    .await;
    let mut dead = Value::Null;
    for _ in 0..100 {
        dead = api
            .call(
                Method::GET,
                "/api/v1/events/subscriptions/broken/dead-letters",
            )
            .await
            .json();
        if dead.as_array().is_some_and(|d| d.len() == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead[0]["event_id"], id.as_str(), "{dead}");
    assert_eq!(dead[0]["attempts"], 2);
    assert!(dead[0]["reason"].as_str().unwrap().contains("500"));
    let gone = state(&api, "gone").await;
    assert!(gone["disabled"].as_str().unwrap().contains("410"), "{gone}");
    assert_eq!(state(&api, "broken").await["dead_letters"], 1);

    // Every attempt is recorded: status, latency, a snippet of the answer.
    let mut attempts = Value::Null;
    for _ in 0..100 {
        attempts = api
            .call(
                Method::GET,
                &format!("/api/v1/events/subscriptions/broken/attempts?event_id={id}"),
            )
            .await
            .json();
        if attempts.as_array().is_some_and(|a| a.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outcomes: Vec<&str> = attempts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["dead", "retry"], "newest first: {attempts}");
    assert_eq!(attempts[0]["status"], 500);
    assert_eq!(attempts[0]["answer"], "endpoint says hello");
    assert_eq!(attempts[1]["attempt"], 1);
    assert_eq!(
        api.call(Method::GET, "/api/v1/events/subscriptions/nobody/attempts")
            .await
            .status,
        404
    );

    // Replay: the dead letter is delivered again (same event id), and dies again.
    let r = api
        .send(
            Method::POST,
            "/api/v1/events/subscriptions/broken/replay",
            json!({ "dead_letters": true }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["replayed"], 1);
    eventually("replayed", Duration::from_secs(10), || hits("/broken") == 4).await;
    for bad in [
        json!({}),
        json!({ "seq": 1, "since": 0 }),
        json!({ "what": 1 }),
        json!({ "since": -5 }),
        json!({ "dead_letters": false }),
    ] {
        let r = api
            .send(
                Method::POST,
                "/api/v1/events/subscriptions/broken/replay",
                bad,
            )
            .await;
        assert_eq!(r.status, 400);
    }

    // The CLI publishes too, and prints the id.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("events")
            .args(args)
            .args(["--url", &base, "--token", &api.token])
            .env_remove("WEIR_CONFIG")
            .output()
            .unwrap()
    };
    let out = cli(&[
        "publish",
        "orders",
        "--data",
        "{\"n\":2}",
        "--type",
        "order.paid",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let r = api
        .call(Method::GET, &format!("/api/v1/events/{cli_id}"))
        .await;
    assert_eq!(r.json()["body"], "{\"n\":2}");
    // Names that could walk the API path are refused before any request.
    let out = cli(&["dead-letters", "../../users"]);
    assert_eq!(out.status.code(), Some(2));
    let out = cli(&["publish", "nothing", "--data", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no topic"));
    eventually("cli event delivered", Duration::from_secs(10), || {
        hits("/ok") == 2
    })
    .await;

    // Disabled stays disabled across a restart: nothing goes to /gone.
    let sent = hits("/gone");
    node.shutdown().await;
    let (node, base) = node_again(&config(&dir, &endpoint.address())).await;
    let api = api_as(&base, "admin", PASSWORD).await;
    assert!(state(&api, "gone").await["disabled"].is_string());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hits("/gone"), sent, "no delivery while disabled");

    // Enabled again: what waited is delivered.
    healed.store(true, Ordering::SeqCst);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "events", "enable", "gone", "--url", &base, "--token", &api.token,
        ])
        .env_remove("WEIR_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "enabled gone");
    assert!(state(&api, "gone").await["disabled"].is_null());
    eventually("waiting events delivered", Duration::from_secs(10), || {
        hits("/gone") > sent
    })
    .await;
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The same node again (its accounts are in the data directory).
async fn node_again(extra: &str) -> (weir::Node, String) {
    node(
        extra,
        weir::FirstAdmin {
            user: None,
            password: None,
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_and_subscriptions_made_through_the_api_deliver_only_to_allowed_networks() {
    let endpoint = MockUpstream::start(Behavior::Status(204)).await;
    let port = endpoint.addr.port();
    let dir = temp_dir("events-api-subs");
    let (node, base) = node(
        &format!(
            "{}events: {{ allowed_networks: [public, 127.0.0.1/32] }}\n",
            sqlite_store(&dir)
        ),
        first_admin(),
    )
    .await;
    let api = api_as(&base, "admin", PASSWORD).await;
    let r = api
        .send(Method::POST, "/api/v1/topics", json!({ "name": "signups" }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .send(
            Method::POST,
            "/api/v1/routes",
            json!({ "name": "signup-in", "topic": "signups", "match": { "paths": ["/signups"] } }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // Internal addresses outside allowed_networks are refused when written.
    for blocked in [
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest",
        "http://10.0.0.5/x",
    ] {
        let r = api
            .send(
                Method::POST,
                "/api/v1/subscriptions",
                json!({ "name": "sneaky", "topic": "signups", "endpoint": blocked }),
            )
            .await;
        assert_eq!(r.status, 400, "{blocked}: {}", r.text());
        assert!(r.text().contains("allowed_networks"), "{}", r.text());
    }
    let r = api
        .send(
            Method::POST,
            "/api/v1/subscriptions",
            json!({ "name": "welcome", "topic": "signups", "endpoint": format!("http://127.0.0.1:{port}/welcome") }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // The new subscription runs at once; a publish through the new route reaches it.
    let cl = weir_testkit::HttpClient::new();
    let mut delivered = false;
    for _ in 0..100 {
        let r = cl
            .request(
                Method::POST,
                &format!("http://{}/signups", node.running.proxy_addr),
                &[("content-type", "application/json")],
                bytes::Bytes::from_static(b"{\"user\":1}"),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
        if endpoint.recorded().iter().any(|r| r.target == "/welcome") {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "the API-made subscription delivers");
    let states = api.call(Method::GET, "/api/v1/events/subscriptions").await;
    assert!(states.text().contains("\"welcome\""), "{}", states.text());
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
