//! Shared by the event tests: a topic configuration (a topic with a small size limit, an
//! open topic route and one behind key auth), the shared brokers' URLs, namespaces of a
//! test's own in them, and their removal.
#![allow(dead_code)]

use std::time::Duration;

pub const RABBIT: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const NATS: &str = "nats://127.0.0.1:4222";
pub const REDIS: &str = "redis://127.0.0.1:6379";
/// Every backend, the embedded queue first.
pub const BACKENDS: [&str; 4] = ["embedded", RABBIT, NATS, REDIS];

pub const KEY: &str = "publisher-key-0123456789";

pub fn yaml(dir: &std::path::Path, proxy: &str) -> String {
    format!(
        "listen: {{ proxy: \"{proxy}\" }}
workers: 1
access_log: off
data_dir: {}
consumers: [ {{ name: publisher, credentials: [ {{ type: key, key: \"{KEY}\" }} ] }} ]
topics:
  orders: {{ max_event_size: 1KiB }}
routes:
  - {{ name: order-input, topic: orders, match: {{ paths: [/events/orders] }} }}
  - {{ name: keyed-input, topic: orders, match: {{ paths: [/events/keyed] }}, policies: [ {{ key_auth: {{}} }} ] }}
",
        dir.display()
    )
}

/// Removes what a test made in a shared broker under namespace `ns`.
pub async fn clean(backend: &str, ns: &str, subs: &[&str], topics: &[&str]) {
    if backend.starts_with("amqp:") {
        let q = weir_events::RabbitMq::open(backend, ns, Duration::from_secs(60))
            .await
            .unwrap();
        q.delete_all(subs, topics).await.unwrap();
    } else if backend.starts_with("nats:") {
        let q = weir_events::NatsJetStream::open(backend, ns, Duration::from_secs(60))
            .await
            .unwrap();
        q.delete_streams().await.unwrap();
    } else if backend.starts_with("redis:") {
        let q = weir_events::RedisStreams::open(backend, &format!("{ns}:{{ev}}:"))
            .await
            .unwrap();
        q.delete_keys().await.unwrap();
    }
}

/// A namespace no other test uses (names in a shared broker start with it).
pub fn namespace() -> String {
    format!("b{}", super::unique("ns").replace('-', ""))
}

/// The head of a node's file on `backend` under namespace `ns`: `proxy` to listen on, one
/// worker, no access log, `dir` for its data, and per topic a route `/in/TOPIC`
/// (subscriptions follow it).
pub fn node_yaml(
    dir: &std::path::Path,
    proxy: &str,
    backend: &str,
    ns: &str,
    topics: &[&str],
) -> String {
    let mut y = format!(
        "listen: {{ proxy: \"{proxy}\" }}\nworkers: 1\naccess_log: off\ndata_dir: {}\n\
         events: {{ backend: \"{backend}\", namespace: {ns} }}\ntopics:\n",
        dir.display()
    );
    for t in topics {
        y.push_str(&format!("  {t}: {{}}\n"));
    }
    y.push_str("routes:\n");
    for t in topics {
        y.push_str(&format!(
            "  - {{ name: in-{t}, topic: {t}, match: {{ paths: [/in/{t}] }} }}\n"
        ));
    }
    y
}

/// Posts `{}` to `TOPIC`'s route of the node at `proxy`, expecting a 202; the event id.
pub async fn post_event(
    cl: &super::HttpClient,
    proxy: impl std::fmt::Display,
    topic: &str,
) -> String {
    let r = cl
        .request(
            http::Method::POST,
            &format!("http://{proxy}/in/{topic}"),
            &[("content-type", "application/json")],
            bytes::Bytes::from_static(b"{}"),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}
