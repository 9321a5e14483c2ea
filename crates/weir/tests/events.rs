//! Topic routes: requests become durable events answered 202 with their id, in plain,
//! CloudEvents binary, structured and batch modes; bad events are refused before anything
//! is published; policies apply; a kill -9 right after the 202s loses none of them; GET
//! streams a topic as Server-Sent Events with Last-Event-ID resume; inbound webhooks are
//! verified and deduplicated.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::events::{KEY, yaml};
use common::*;
use http::Method;
use serde_json::json;
use weir_events::{Embedded, Queue, StartAt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_become_durable_events_in_every_cloudevents_mode() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("events-ingest");
    let cfg = weir_config::from_yaml(&yaml(&dir, "127.0.0.1:0"), "test").unwrap();
    let node = weir::start(cfg, Default::default(), Default::default(), false)
        .await
        .unwrap();
    let url = format!("http://{}", node.running.proxy_addr);
    let cl = HttpClient::new();
    let post = |path: &'static str, headers: Vec<(&'static str, &'static str)>, body: Bytes| {
        let cl = cl.clone();
        let url = format!("{url}{path}");
        async move { cl.request(Method::POST, &url, &headers, body).await }
    };
    let queue = node.queue.clone().unwrap();
    queue
        .subscribe("check", "orders", StartAt::Beginning)
        .await
        .unwrap();

    // Plain JSON.
    let r = post(
        "/events/orders",
        vec![("content-type", "application/json")],
        Bytes::from_static(b"{\"order\":1}"),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let plain_id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(&plain_id[14..15], "7", "a UUIDv7");
    // Binary mode.
    let r = post(
        "/events/orders",
        vec![
            ("ce-specversion", "1.0"),
            ("ce-id", "c-1"),
            ("ce-source", "/shop"),
            ("ce-type", "order.created"),
            ("ce-partitionkey", "customer-7"),
            ("content-type", "application/json"),
        ],
        Bytes::from_static(b"{\"order\":2}"),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    // Structured mode.
    let structured = json!({ "specversion": "1.0", "id": "c-2", "source": "/shop", "type": "order.paid", "data": { "order": 3 } });
    let r = post(
        "/events/orders",
        vec![("content-type", "application/cloudevents+json")],
        Bytes::from(structured.to_string()),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    // Batch mode: one id per event.
    let batch = json!([
        { "specversion": "1.0", "id": "b-1", "source": "/shop", "type": "t" },
        { "specversion": "1.0", "id": "b-2", "source": "/shop", "type": "t" },
    ]);
    let r = post(
        "/events/orders",
        vec![("content-type", "application/cloudevents-batch+json")],
        Bytes::from(batch.to_string()),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["ids"].as_array().unwrap().len(), 2);

    // Refused before anything is published.
    type Headers = Vec<(&'static str, &'static str)>;
    let bad: Vec<(Headers, Bytes, u16)> = vec![
        (
            vec![("ce-specversion", "1.0"), ("ce-id", "x")],
            Bytes::from_static(b"{}"),
            400,
        ),
        (
            vec![("content-type", "application/cloudevents+json")],
            Bytes::from_static(b"{\"id\":\"x\"}"),
            400,
        ),
        (
            vec![("content-type", "application/cloudevents-batch+json")],
            Bytes::from_static(b"{}"),
            400,
        ),
        (
            vec![("content-type", "application/cloudevents-batch+json")],
            Bytes::from_static(b"[]"),
            400,
        ),
        (vec![], Bytes::from(vec![b'x'; 2048]), 413),
    ];
    for (headers, body, status) in bad {
        let r = post("/events/orders", headers.clone(), body).await;
        assert_eq!(r.status, status, "{headers:?}: {}", r.text());
    }
    let r = cl
        .request(
            Method::PUT,
            &format!("{url}/events/orders"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET, POST");
    // Policies apply as on any route.
    let r = post("/events/keyed", vec![], Bytes::from_static(b"x")).await;
    assert_eq!(r.status, 401);
    let r = cl
        .request(
            Method::POST,
            &format!("{url}/events/keyed"),
            &[("x-api-key", KEY)],
            Bytes::from_static(b"keyed"),
        )
        .await;
    assert_eq!(r.status, 202);

    let events = queue
        .lease("check", 100, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        events.len(),
        6,
        "plain, binary, structured, two from the batch, keyed"
    );
    let e = &events[0].event;
    assert_eq!(
        (e.id.as_str(), e.body.as_ref()),
        (plain_id.as_str(), &b"{\"order\":1}"[..])
    );
    let bin = &events[1].event;
    assert!(
        bin.headers
            .contains(&("ce-type".into(), "order.created".into()))
    );
    assert_eq!(bin.key.as_deref(), Some("customer-7"));
    // A structured event is kept as attributes and data, not as its envelope.
    let st = &events[2].event;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&st.body).unwrap(),
        structured["data"]
    );
    for (k, v) in [
        ("ce-id", "c-2"),
        ("ce-source", "/shop"),
        ("ce-type", "order.paid"),
        ("ce-specversion", "1.0"),
        ("content-type", "application/json"),
    ] {
        assert!(
            st.headers.contains(&(k.into(), v.into())),
            "{:?}",
            st.headers
        );
    }
    assert_eq!(events[5].event.body, "keyed");
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_answer_the_first_202_again_and_refuse_other_bodies() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("events-idem");
    let cfg = weir_config::from_yaml(&yaml(&dir, "127.0.0.1:0"), "test").unwrap();
    let node = weir::start(cfg, Default::default(), Default::default(), false)
        .await
        .unwrap();
    let url = format!("http://{}/events/keyed", node.running.proxy_addr);
    let cl = HttpClient::new();
    let send = |idem: &'static str, body: &'static str| {
        let cl = cl.clone();
        let url = url.clone();
        async move {
            cl.request(
                Method::POST,
                &url,
                &[
                    ("x-api-key", KEY),
                    ("idempotency-key", idem),
                    ("content-type", "application/json"),
                ],
                Bytes::from_static(body.as_bytes()),
            )
            .await
        }
    };
    let first = send("\"order-77\"", "{\"n\":1}").await;
    assert_eq!(first.status, 202, "{}", first.text());
    let again = send("\"order-77\"", "{\"n\":1}").await;
    assert_eq!(
        (again.status.as_u16(), again.json()["id"].clone()),
        (202, first.json()["id"].clone()),
        "the first answer again"
    );
    let other = send("\"order-77\"", "{\"n\":2}").await;
    assert_eq!(other.status, 422, "{}", other.text());
    assert_eq!(
        send("order-78", "{\"n\":1}").await.status,
        202,
        "a bare token works too"
    );
    let long: &'static str = Box::leak("k".repeat(256).into_boxed_str());
    assert_eq!(send(long, "{}").await.status, 400);
    // Concurrent duplicates: one publishes, the others see it in flight (409) or done (202).
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let s = send("\"burst\"", "{\"b\":1}");
        tasks.push(tokio::spawn(s));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().status.as_u16());
    }
    assert!(
        statuses.iter().all(|s| *s == 202 || *s == 409),
        "{statuses:?}"
    );
    assert!(statuses.contains(&202));
    let queue = node.queue.clone().unwrap();
    queue
        .subscribe("idem-check", "orders", StartAt::Beginning)
        .await
        .unwrap();
    let held = queue
        .lease("idem-check", 100, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(held.len(), 3, "order-77 once, order-78, burst once");
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_the_202s_loses_no_event() {
    let dir = temp_dir("events-kill9");
    let port = free_port();
    let file = dir.join("weir.yaml");
    std::fs::write(&file, yaml(&dir, &format!("127.0.0.1:{port}"))).unwrap();
    let mut child = Proc(
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["serve", "--config"])
            .arg(&file)
            .env("WEIR_LOG", "warn")
            .env_remove("WEIR_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port).await;
    let cl = HttpClient::new();
    let mut ids = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let cl = cl.clone();
        tasks.push(tokio::spawn(async move {
            let r = cl
                .request(
                    Method::POST,
                    &format!("http://127.0.0.1:{port}/events/orders"),
                    &[("content-type", "application/json")],
                    Bytes::from(format!("{{\"n\":{i}}}")),
                )
                .await;
            assert_eq!(r.status, 202);
            r.json()["id"].as_str().unwrap().to_owned()
        }));
    }
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let queue = Embedded::open(&dir.join("events")).await.unwrap();
    queue
        .subscribe("audit", "orders", StartAt::Beginning)
        .await
        .unwrap();
    let held = queue
        .lease("audit", 1000, Duration::from_secs(30))
        .await
        .unwrap();
    let mut got: Vec<String> = held.into_iter().map(|l| l.event.id).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "every event answered 202 is in the queue");
    queue.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Reads from an open SSE response until `done` holds for what arrived (or times out).
async fn sse_until(
    conn: &mut tokio::net::TcpStream,
    seen: &mut String,
    done: impl Fn(&str) -> bool,
) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while !done(seen) {
        let n = tokio::time::timeout_at(deadline, conn.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("stream never showed what was expected; got:\n{seen}"))
            .unwrap();
        assert!(n > 0, "stream closed; got:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

async fn open_stream(addr: std::net::SocketAddr, path: &str, extra: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n{extra}\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_on_a_topic_route_streams_events_and_resumes_after_last_event_id() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("events-sse");
    let cfg = weir_config::from_yaml(&yaml(&dir, "127.0.0.1:0"), "test").unwrap();
    let node = weir::start(cfg, Default::default(), Default::default(), false)
        .await
        .unwrap();
    let addr = node.running.proxy_addr;
    let url = format!("http://{addr}/events/orders");
    let cl = HttpClient::new();
    let publish = |body: &'static str, ty: Option<&'static str>| {
        let (cl, url) = (cl.clone(), url.clone());
        async move {
            let mut h = vec![("content-type", "application/json")];
            if let Some(t) = ty {
                h.extend([
                    ("ce-specversion", "1.0"),
                    ("ce-id", "x"),
                    ("ce-source", "/t"),
                    ("ce-type", t),
                ]);
            }
            let r = cl
                .request(Method::POST, &url, &h, Bytes::from_static(body.as_bytes()))
                .await;
            assert_eq!(r.status, 202);
            r.json()["id"].as_str().unwrap().to_owned()
        }
    };
    let before = publish("{\"n\":1}", None).await;

    // Without Last-Event-ID: events from now on, each with its id, type and data lines.
    let mut conn = open_stream(addr, "/events/orders", "").await;
    let mut seen = String::new();
    sse_until(&mut conn, &mut seen, |s| s.contains(": stream open")).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(
        seen.to_ascii_lowercase()
            .contains("content-type: text/event-stream")
    );
    let two = publish("{\"n\":2}", Some("order.created")).await;
    let three = publish("line one\nline two", None).await;
    sse_until(&mut conn, &mut seen, |s| s.contains(&three)).await;
    assert!(
        !seen.contains(&before),
        "nothing from before the connection"
    );
    assert!(
        seen.contains(&format!(
            "id: {two}\nevent: order.created\ndata: {{\"n\":2}}\n\n"
        )),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("id: {three}\ndata: line one\ndata: line two\n\n")),
        "{seen}"
    );
    assert!(seen.find(&two) < seen.find(&three), "in order");
    drop(conn);

    // Reconnecting with Last-Event-ID: exactly what came after it.
    let four = publish("{\"n\":4}", None).await;
    let five = publish("{\"n\":5}", None).await;
    let mut conn = open_stream(addr, "/events/orders", &format!("Last-Event-ID: {two}\r\n")).await;
    let mut seen = String::new();
    sse_until(&mut conn, &mut seen, |s| s.contains(&five)).await;
    assert!(!seen.contains(&format!("id: {two}")), "{seen}");
    for id in [&three, &four, &five] {
        assert!(seen.contains(&format!("id: {id}")), "{id} missing: {seen}");
    }
    drop(conn);

    // A Last-Event-ID that cannot be an event id is refused, not looked up.
    let long = "x".repeat(500);
    let mut conn = open_stream(
        addr,
        "/events/orders",
        &format!("Last-Event-ID: {long}\r\n"),
    )
    .await;
    let mut seen = String::new();
    sse_until(&mut conn, &mut seen, |s| s.contains("\r\n\r\n")).await;
    assert!(seen.starts_with("HTTP/1.1 400"), "{seen}");

    // Policies apply to streams as to publishing.
    let mut conn = open_stream(addr, "/events/keyed", "").await;
    let mut seen = String::new();
    sse_until(&mut conn, &mut seen, |s| s.contains("\r\n\r\n")).await;
    assert!(seen.starts_with("HTTP/1.1 401"), "{seen}");
    let mut conn = open_stream(addr, "/events/keyed", &format!("x-api-key: {KEY}\r\n")).await;
    let mut seen = String::new();
    sse_until(&mut conn, &mut seen, |s| s.contains(": stream open")).await;
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_webhooks_are_verified_before_publishing_and_deduplicated_by_delivery_id() {
    use base64::Engine as _;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("events-inbound");
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let cfg = weir_config::from_yaml(
        &format!(
            "{}  - {{ name: github, topic: orders, match: {{ paths: [/hooks/github] }}, inbound: {{ scheme: github, secret: \"It's a Secret to Everybody\" }} }}
  - {{ name: std, topic: orders, match: {{ paths: [/hooks/std] }}, inbound: {{ scheme: standard_webhooks, secret: \"{secret}\" }} }}
",
            yaml(&dir, "127.0.0.1:0")
        ),
        "test",
    )
    .unwrap();
    let node = weir::start(cfg, Default::default(), Default::default(), false)
        .await
        .unwrap();
    let base = format!("http://{}", node.running.proxy_addr);
    let queue = node.queue.clone().unwrap();
    let cl = HttpClient::new();
    let held = || async { queue.read("orders", 0, 100).await.unwrap() };

    // GitHub: signature over the raw body; X-GitHub-Delivery dedupes redeliveries.
    let github = |sig: &'static str, delivery: &'static str, body: &'static str| {
        let (cl, url) = (cl.clone(), format!("{base}/hooks/github"));
        async move {
            cl.request(
                Method::POST,
                &url,
                &[
                    ("content-type", "application/json"),
                    ("x-github-event", "push"),
                    ("x-github-delivery", delivery),
                    ("x-hub-signature-256", sig),
                ],
                Bytes::from_static(body.as_bytes()),
            )
            .await
        }
    };
    let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let r = github(good, "d-1", "Hello, World!").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let again = github(good, "d-1", "Hello, World!").await;
    assert_eq!(
        again.json()["id"],
        id.as_str(),
        "a redelivery is the same event"
    );
    let other = github(good, "d-2", "Hello, World!").await;
    assert_ne!(other.json()["id"], id.as_str());
    let forged = github(good, "d-3", "Hello, World?").await;
    assert_eq!(forged.status, 401);
    assert!(
        forged.text().contains("does not match"),
        "{}",
        forged.text()
    );
    let events = held().await;
    assert_eq!(events.len(), 2, "one per delivery id, none forged");
    assert!(
        events[0]
            .headers
            .contains(&("x-github-event".to_owned(), "push".to_owned()))
    );

    // Standard Webhooks: signed id.timestamp.body, timestamp within 5 minutes.
    let key = base64::engine::general_purpose::STANDARD
        .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .unwrap();
    let std_hook = |ts: i64, body: &'static str, sig_body: &'static str| {
        let (cl, url, key) = (cl.clone(), format!("{base}/hooks/std"), key.clone());
        async move {
            let sig = weir_events::delivery::sign(&[key], "msg_1", ts, sig_body.as_bytes());
            let ts = ts.to_string();
            cl.request(
                Method::POST,
                &url,
                &[
                    ("content-type", "application/json"),
                    ("webhook-id", "msg_1"),
                    ("webhook-timestamp", ts.as_str()),
                    ("webhook-signature", sig.as_str()),
                ],
                Bytes::from_static(body.as_bytes()),
            )
            .await
        }
    };
    let now = weir_events::now_ms() / 1000;
    assert_eq!(std_hook(now, "{\"a\":1}", "{\"a\":1}").await.status, 202);
    assert_eq!(std_hook(now, "{\"a\":1}", "{\"a\":1}").await.status, 202);
    assert_eq!(std_hook(now, "{\"a\":2}", "{\"a\":1}").await.status, 401);
    assert_eq!(
        std_hook(now - 600, "{\"a\":1}", "{\"a\":1}").await.status,
        401,
        "a replayed old webhook"
    );
    assert_eq!(held().await.len(), 3);
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
