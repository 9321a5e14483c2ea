//! CloudEvents end to end, on every backend: events published plain, in binary mode,
//! structured and as a batch are delivered to binary, structured and plain subscriptions,
//! and the official CloudEvents Python SDK (`scripts/test` installs it) reads every
//! delivery back with the attributes and data that were published.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::Method;
use http_body_util::BodyExt as _;

type Seen = Arc<parking_lot::Mutex<Vec<(String, http::HeaderMap, Bytes)>>>;

async fn recording_endpoint(seen: &Seen) -> MockUpstream {
    let seen = Arc::clone(seen);
    MockUpstream::start(Behavior::Custom(Arc::new(move |req| {
        let seen = Arc::clone(&seen);
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            seen.lock()
                .push((parts.uri.path().to_owned(), parts.headers, body));
            let mut r = http::Response::new(weir_testkit::upstream::full(""));
            *r.status_mut() = http::StatusCode::NO_CONTENT;
            r
        })
    })))
    .await
}

const STRUCTURED: &str = r#"{"specversion":"1.0","id":"st-1","source":"/shop/orders","type":"order.created","subject":"order/7","time":"2026-01-02T03:04:05Z","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","datacontenttype":"application/json","data":{"total":12.5,"lines":[1,2]}}"#;
const BATCH: &str = r#"[{"specversion":"1.0","id":"ba-1","source":"/cam","type":"frame","datacontenttype":"application/octet-stream","data_base64":"/wABAg=="},{"specversion":"1.0","id":"ba-2","source":"/chat","type":"said","subject":"caf\u00e9 \"au\" lait 100%","datacontenttype":"text/plain","data":"hello"}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_keep_their_attributes_in_every_mode_in_and_out() {
    for backend in common::events::BACKENDS {
        in_and_out(backend).await;
    }
}

async fn in_and_out(backend: &str) {
    let seen: Seen = Arc::default();
    let endpoint = recording_endpoint(&seen).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("events-ce");
    let ep = endpoint.address();
    let ns = common::events::namespace();
    let subs = ["as-binary", "as-structured", "as-plain"].map(|s| format!("{s}-{ns}"));
    let cfg = weir_config::from_yaml(
        &format!(
            "{}events: {{ backend: \"{backend}\", namespace: {ns} }}
subscriptions:
  - {{ name: {}, topic: orders, endpoint: \"http://{ep}/binary\" }}
  - {{ name: {}, topic: orders, endpoint: \"http://{ep}/structured\", cloudevents: structured }}
  - {{ name: {}, topic: orders, endpoint: \"http://{ep}/plain\", cloudevents: plain }}
",
            common::events::yaml(&dir, "127.0.0.1:0"),
            subs[0],
            subs[1],
            subs[2],
        ),
        "test",
    )
    .unwrap();
    let node = weir::start(cfg, Default::default(), Default::default(), false)
        .await
        .unwrap();
    let url = format!("http://{}/events/orders", node.running.proxy_addr);
    let cl = HttpClient::new();
    let post = async |headers: &[(&str, &str)], body: &'static str| {
        let r = cl
            .request(
                Method::POST,
                &url,
                headers,
                Bytes::from_static(body.as_bytes()),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()
    };
    // Plain: no attributes at all.
    let plain = post(&[("content-type", "application/json")], r#"{"n":1}"#).await;
    let plain_id = plain["id"].as_str().unwrap().to_owned();
    // Binary mode, with a percent-encoded attribute and an extension.
    post(
        &[
            ("content-type", "application/json"),
            ("ce-specversion", "1.0"),
            ("ce-id", "bin-1"),
            ("ce-source", "/shop"),
            ("ce-type", "order.paid"),
            ("ce-subject", "caf%C3%A9"),
            ("ce-time", "2026-03-04T05:06:07.123Z"),
            ("ce-tenant", "acme"),
        ],
        r#"{"n":2}"#,
    )
    .await;
    post(
        &[("content-type", "application/cloudevents+json")],
        STRUCTURED,
    )
    .await;
    let batch = post(
        &[("content-type", "application/cloudevents-batch+json")],
        BATCH,
    )
    .await;
    assert_eq!(batch["ids"].as_array().unwrap().len(), 2);
    eventually("15 deliveries", Duration::from_secs(15), || {
        seen.lock().len() >= 15
    })
    .await;
    // What was published, each CloudEvent in structured form for the SDK to read.
    let bin = r#"{"specversion":"1.0","id":"bin-1","source":"/shop","type":"order.paid","subject":"café","time":"2026-03-04T05:06:07.123Z","tenant":"acme","datacontenttype":"application/json","data":{"n":2}}"#;
    let batch: Vec<serde_json::Value> = serde_json::from_str(BATCH).unwrap();
    let mut expected = serde_json::Map::new();
    expected.insert("bin-1".into(), bin.into());
    expected.insert("st-1".into(), STRUCTURED.into());
    for e in &batch {
        expected.insert(e["id"].as_str().unwrap().into(), e.to_string().into());
    }
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let received: Vec<serde_json::Value> = seen
        .lock()
        .iter()
        .map(|(path, headers, body)| {
            let headers: serde_json::Map<String, serde_json::Value> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().into()))
                .collect();
            serde_json::json!({ "mode": &path[1..], "headers": headers, "body_b64": b64(body) })
        })
        .collect();
    let doc = serde_json::json!({
        "expected": expected,
        "plain": { plain_id.clone(): b64(br#"{"n":1}"#) },
        "received": received,
    });
    let file = dir.join("deliveries.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/cloudevents_receiver.py"
    );
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&file)
        .output()
        .expect("python3 runs (scripts/test installs the cloudevents package)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{backend}: the CloudEvents SDK disagrees:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("checked 15 deliveries"),
        "{backend}: {stdout}"
    );
    node.shutdown().await;
    let subs: Vec<&str> = subs.iter().map(String::as_str).collect();
    common::events::clean(backend, &ns, &subs, &["orders"]).await;
    let _ = std::fs::remove_dir_all(dir);
}
