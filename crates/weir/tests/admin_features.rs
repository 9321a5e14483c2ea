//! Admin API features beyond plain objects: traffic analytics from call records, and TLS
//! certificates served by SNI whose keys never leave the store.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::admin::*;
use common::*;
use http::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_reports_requests_errors_and_latency_per_route_consumer_and_upstream() {
    let ok = MockUpstream::start(Behavior::Named("ok".into())).await;
    let failing = MockUpstream::start(Behavior::Status(500)).await;
    let dir = temp_dir("admin-analytics");
    let (node, base) = node(&sqlite_store(&dir), first_admin()).await;
    let api = api_as(&base, "admin", PASSWORD).await;
    for (name, addr) in [("good", ok.address()), ("bad", failing.address())] {
        let r = api
            .send(
                Method::POST,
                "/api/v1/upstreams",
                json!({ "name": name, "targets": [ { "address": addr } ] }),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    api.send(Method::POST, "/api/v1/consumers", json!({ "name": "acme", "credentials": [ { "type": "key", "key": "acme-secret-key-0001" } ] }))
        .await;
    for (route, up, policies) in [
        ("fine", "good", json!([])),
        ("broken", "bad", json!([])),
        ("keyed", "good", json!([ { "key_auth": {} } ])),
    ] {
        let r = api
            .send(Method::POST, "/api/v1/routes", json!({ "name": route, "upstream": up, "match": { "paths": [format!("/{route}")] }, "policies": policies }))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let proxy = format!("http://{}", node.running.proxy_addr);
    let cl = HttpClient::new();
    for _ in 0..20 {
        assert_eq!(cl.get(&format!("{proxy}/fine")).await.status, 200);
    }
    for _ in 0..10 {
        assert_eq!(cl.get(&format!("{proxy}/broken")).await.status, 500);
    }
    for _ in 0..5 {
        let r = cl
            .request(
                Method::GET,
                &format!("{proxy}/keyed"),
                &[("x-api-key", "acme-secret-key-0001")],
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(cl.get(&format!("{proxy}/keyed")).await.status, 401);
    }
    // Records are written in batches, once a second.
    let mut by_route = Value::Null;
    for _ in 0..50 {
        by_route = api
            .call(
                Method::GET,
                "/api/v1/analytics?by=route&since=600&bucket=60",
            )
            .await
            .json();
        let total: u64 = by_route["groups"]
            .as_array()
            .map(|g| g.iter().map(|g| g["requests"].as_u64().unwrap()).sum())
            .unwrap_or(0);
        if total >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let group = |v: &Value, key: &str| -> Value {
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["key"] == key)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let fine = group(&by_route, "fine");
    assert_eq!(
        (fine["requests"].as_u64(), fine["errors"].as_u64()),
        (Some(20), Some(0)),
        "{by_route}"
    );
    assert!(fine["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(fine["p99_ms"].as_f64().unwrap() >= fine["p50_ms"].as_f64().unwrap());
    assert_eq!(fine["buckets"].as_array().unwrap().len(), 1);
    let broken = group(&by_route, "broken");
    assert_eq!(
        (broken["requests"].as_u64(), broken["errors"].as_u64()),
        (Some(10), Some(10))
    );
    let keyed = group(&by_route, "keyed");
    assert_eq!(
        (keyed["requests"].as_u64(), keyed["client_errors"].as_u64()),
        (Some(10), Some(5))
    );
    let by_consumer = api
        .call(Method::GET, "/api/v1/analytics?by=consumer&since=600")
        .await
        .json();
    assert_eq!(group(&by_consumer, "acme")["requests"].as_u64(), Some(5));
    let by_upstream = api
        .call(Method::GET, "/api/v1/analytics?by=upstream&since=600")
        .await
        .json();
    assert_eq!(group(&by_upstream, "good")["requests"].as_u64(), Some(30));
    assert_eq!(group(&by_upstream, "bad")["errors"].as_u64(), Some(10));
    assert_eq!(
        api.call(Method::GET, "/api/v1/analytics?by=planet")
            .await
            .status,
        400
    );
    assert_eq!(
        api.call(Method::GET, "/api/v1/analytics?since=100000&bucket=1")
            .await
            .status,
        400
    );
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_written_through_the_api_are_served_by_sni_and_their_keys_never_shown() {
    use weir_testkit::certs::{TestCa, client_config};
    let ca = TestCa::new();
    let dir = temp_dir("admin-certs");
    // The node's own file gives the TLS listener and its default certificate.
    let (def_cert, def_key) = ca.leaf(&["default.test"]).write(&dir, "default");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let yaml = format!(
        "listen:\n  proxy: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  tls:\n    address: 127.0.0.1:0\n    certificates: [ {{ cert: {}, key: {} }} ]\nworkers: 1\naccess_log: off\n{}",
        def_cert.display(),
        def_key.display(),
        sqlite_store(&dir)
    );
    let cfg = weir_config::from_yaml(&yaml, "test").unwrap();
    let node = weir::start(cfg, Default::default(), first_admin(), true)
        .await
        .unwrap();
    let base = format!("http://{}", node.running.admin_addr.unwrap());
    let api = api_as(&base, "admin", PASSWORD).await;
    let tls_addr = node.running.tls_addr.unwrap();
    let handshake = |name: &'static str| {
        let ca_pem = ca.cert_pem.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
            tokio_rustls::TlsConnector::from(client_config(&ca_pem, &[b"http/1.1"]))
                .connect(rustls::pki_types::ServerName::try_from(name).unwrap(), tcp)
                .await
                .is_ok()
        }
    };
    assert!(handshake("default.test").await);
    assert!(
        !handshake("api.test").await,
        "no certificate for api.test yet"
    );
    let leaf = ca.leaf(&["api.test"]);
    let r = api
        .send(
            Method::POST,
            "/api/v1/certificates",
            json!({ "name": "api", "cert": leaf.cert_pem, "key": leaf.key_pem }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["key"], "(redacted)");
    assert!(handshake("api.test").await, "served by SNI once written");
    let got = api.call(Method::GET, "/api/v1/certificates/api").await;
    assert!(!got.text().contains("PRIVATE KEY"), "{}", got.text());
    // Sending it back as read (key redacted) keeps the key.
    let mut back = got.json();
    back["cert"] = json!(leaf.cert_pem);
    let r = api
        .send(Method::PUT, "/api/v1/certificates/api", back)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(handshake("api.test").await);
    // A key that does not belong to the certificate is refused.
    let other = ca.leaf(&["api.test"]);
    let r = api
        .send(
            Method::PUT,
            "/api/v1/certificates/api",
            json!({ "cert": leaf.cert_pem, "key": other.key_pem }),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let audit = api.call(Method::GET, "/api/v1/audit").await;
    assert!(
        !audit.text().contains("PRIVATE KEY"),
        "the audit log never shows a key"
    );
    let cfg = api.call(Method::GET, "/api/v1/config").await;
    assert!(!cfg.text().contains("PRIVATE KEY"));
    node.shutdown().await;
    // The certificate object must hold its key (a BEGIN and an END line); the audit
    // entries hold none.
    let db = std::fs::read(dir.join("weir.db")).unwrap();
    let wal = std::fs::read(dir.join("weir.db-wal")).unwrap_or_default();
    let copies = |b: &[u8]| b.windows(11).filter(|w| *w == b"PRIVATE KEY").count();
    assert!(
        copies(&db) + copies(&wal) <= 4,
        "{} copies of a private key in the store",
        copies(&db) + copies(&wal)
    );
    let _ = std::fs::remove_dir_all(dir);
}
