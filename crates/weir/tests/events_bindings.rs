//! A subscription's binding to its topic: a subscription new to the broker gets the events
//! posted the moment the proxy port accepts, and a subscription moved to another topic by
//! a reload reads the new topic at once (the old one's later events no longer reach it),
//! on every backend.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::chaos::delivered_ids;
use common::events::{NATS, RABBIT, REDIS, clean, namespace, node_yaml, post_event};
use common::*;

/// Starts a node and, while it starts, posts one event the moment its port accepts.
async fn post_as_soon_as_it_accepts(backend: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let endpoint = MockUpstream::start(Behavior::Status(204)).await;
    let (ns, topic) = (namespace(), unique("fresh"));
    let sub = format!("{topic}-sub");
    let dir = temp_dir("bind-start");
    let port = free_port();
    let yaml = format!(
        "{}subscriptions:
  - {{ name: {sub}, topic: {topic}, endpoint: \"http://{}/hook\" }}
",
        node_yaml(&dir, &format!("127.0.0.1:{port}"), backend, &ns, &[&topic]),
        endpoint.address()
    );
    let cfg = weir_config::from_yaml(&yaml, "test").unwrap();
    let starting = tokio::spawn(weir::start(
        cfg,
        Default::default(),
        Default::default(),
        false,
    ));
    let cl = HttpClient::new();
    let mut accepted = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while accepted.len() < 5 && tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        accepted.insert(post_event(&cl, format!("127.0.0.1:{port}"), &topic).await);
    }
    let node = starting.await.unwrap().unwrap();
    assert_eq!(accepted.len(), 5);
    eventually(
        &format!("the first events delivered on {backend}"),
        Duration::from_secs(15),
        || accepted.is_subset(&delivered_ids(&endpoint)),
    )
    .await;
    node.shutdown().await;
    clean(backend, &ns, &[&sub], &[&topic]).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscription_gets_events_posted_the_moment_the_port_accepts() {
    for backend in ["embedded", RABBIT, NATS, REDIS] {
        post_as_soon_as_it_accepts(backend).await;
    }
}

/// Moves a subscription from topic a to topic b by editing the file: right after the
/// reload, b's events reach it and a's no longer do.
async fn moved_by_a_reload(backend: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let endpoint = MockUpstream::start(Behavior::Status(204)).await;
    let (ns, a, b) = (namespace(), unique("ta"), unique("tb"));
    let sub = unique("mover");
    let dir = temp_dir("bind-move");
    let path = dir.join("weir.yaml");
    let write = |topic: &str| {
        let yaml = format!(
            "{}subscriptions:
  - {{ name: {sub}, topic: {topic}, endpoint: \"http://{}/hook\" }}
",
            node_yaml(&dir, "127.0.0.1:0", backend, &ns, &[&a, &b]),
            endpoint.address()
        );
        std::fs::write(&path, yaml).unwrap();
    };
    write(&a);
    let p = path.clone();
    let loader: weir_proxy::reload::Loader =
        Arc::new(move || weir_config::load_file(&p).map_err(|e| vec![e.to_string()]));
    let sources = weir_proxy::app::ReloadSources {
        loader: Some(Arc::clone(&loader)),
        watch: Some(path.clone()),
        watch_every: Some(Duration::from_millis(50)),
        ..Default::default()
    };
    let node = weir::start(loader().unwrap(), sources, Default::default(), false)
        .await
        .unwrap();
    let cl = HttpClient::new();
    let post = async |topic: &str| post_event(&cl, node.running.proxy_addr, topic).await;
    let before = post(&a).await;
    eventually("delivered from a", Duration::from_secs(10), || {
        delivered_ids(&endpoint).contains(&before)
    })
    .await;
    let version = node.running.gateway.version();
    write(&b);
    eventually("the reload", Duration::from_secs(10), || {
        node.running.gateway.version() > version
    })
    .await;
    let (from_b, from_a) = (post(&b).await, post(&a).await);
    eventually(
        &format!("b's event delivered after the move on {backend}"),
        Duration::from_secs(15),
        || delivered_ids(&endpoint).contains(&from_b),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !delivered_ids(&endpoint).contains(&from_a),
        "{backend}: a's later event reached the moved subscription"
    );
    assert_eq!(endpoint.recorded().len(), 2, "{backend}: nothing twice");
    node.shutdown().await;
    clean(backend, &ns, &[&sub], &[&a, &b]).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_moved_by_a_reload_reads_its_new_topic() {
    for backend in ["embedded", RABBIT, NATS, REDIS] {
        moved_by_a_reload(backend).await;
    }
}

/// A rolling edit: node A's file moves the subscription to topic b; node B, still on the
/// older file, restarts and declares it on topic a again. The newer declaration holds: b's
/// events keep reaching it and a's do not, on every shared backend.
async fn the_newer_declaration_holds(backend: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let endpoint = MockUpstream::start(Behavior::Status(204)).await;
    let (ns, a, b) = (namespace(), unique("ra"), unique("rb"));
    let sub = unique("rolled");
    let yaml = |dir: &std::path::Path, topic: &str| {
        format!(
            "{}subscriptions:
  - {{ name: {sub}, topic: {topic}, endpoint: \"http://{}/hook\" }}
",
            node_yaml(dir, "127.0.0.1:0", backend, &ns, &[&a, &b]),
            endpoint.address()
        )
    };
    let (da, db) = (temp_dir("roll-a"), temp_dir("roll-b"));
    let (fa, fb) = (da.join("weir.yaml"), db.join("weir.yaml"));
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for (dir, file) in [(&da, &fa), (&db, &fb)] {
        std::fs::write(file, yaml(dir, &a)).unwrap();
        let f = std::fs::File::options().write(true).open(file).unwrap();
        f.set_modified(an_hour_ago).unwrap();
    }
    let start = |file: std::path::PathBuf| async move {
        let cfg = weir_config::load_file(&file).unwrap();
        weir::start(cfg, Default::default(), Default::default(), false)
            .await
            .unwrap()
    };
    let node_a = start(fa.clone()).await;
    let node_b = start(fb.clone()).await;
    // A's file is edited (now) and A restarts with it; then B restarts on its older file.
    std::fs::write(&fa, yaml(&da, &b)).unwrap();
    node_a.shutdown().await;
    let node_a = start(fa.clone()).await;
    node_b.shutdown().await;
    let node_b = start(fb.clone()).await;
    let cl = HttpClient::new();
    let post = async |node: &weir::Node, topic: &str| {
        post_event(&cl, node.running.proxy_addr, topic).await
    };
    let to_b = [post(&node_a, &b).await, post(&node_b, &b).await];
    let to_a = [post(&node_a, &a).await, post(&node_b, &a).await];
    eventually(
        &format!("b's events delivered on {backend}"),
        Duration::from_secs(15),
        || to_b.iter().all(|id| delivered_ids(&endpoint).contains(id)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = delivered_ids(&endpoint);
    assert!(
        to_a.iter().all(|id| !got.contains(id)),
        "{backend}: the older declaration moved it back"
    );
    node_a.shutdown().await;
    node_b.shutdown().await;
    clean(backend, &ns, &[&sub], &[&a, &b]).await;
    let _ = std::fs::remove_dir_all(da);
    let _ = std::fs::remove_dir_all(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_rolling_edit_the_newer_declaration_holds() {
    for backend in [RABBIT, NATS, REDIS] {
        the_newer_declaration_holds(backend).await;
    }
}
