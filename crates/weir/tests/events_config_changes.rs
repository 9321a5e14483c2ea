//! Delivery through configuration changes, one suite run against every backend (the
//! embedded queue and the real RabbitMQ, NATS JetStream and Redis on this machine): publish
//! the moment Weir starts, add a subscription while events flow, move a subscription to
//! another topic, change its type filter, remove it and add it back under the same name,
//! two subscriptions on one topic — on the brokers with two Weir nodes sharing one broker,
//! the same file, and events posted to either. One ledger checks that every acknowledged event reached
//! every subscription that should get it, none that should not, and nothing twice. An
//! event is taken under the declaration in force when its worker takes it, so each phase
//! lets the queue drain before the next change.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::events::{BACKENDS, clean, namespace, node_yaml};
use common::ledger::Ledger;
use common::*;
use http::Method;

/// One subscription as the file declares it: name, topic, the types it takes (all when
/// empty).
type Sub<'a> = (&'a str, &'a str, &'a [&'a str]);

struct Run {
    /// One node on the embedded queue; two sharing a broker otherwise.
    nodes: Vec<weir::Node>,
    /// Which node the next event is posted to.
    turn: std::sync::atomic::AtomicUsize,
    path: std::path::PathBuf,
    head: String,
    hook: String,
    cl: HttpClient,
}

impl Run {
    fn yaml(head: &str, hook: &str, subs: &[Sub]) -> String {
        let mut y = format!("{head}subscriptions:\n");
        for (name, topic, types) in subs {
            let filter = if types.is_empty() {
                String::new()
            } else {
                format!(", filter: {{ types: [{}] }}", types.join(", "))
            };
            y.push_str(&format!(
                "  - {{ name: {name}, topic: {topic}, endpoint: \"http://{hook}/hook/{name}\"{filter} }}\n"
            ));
        }
        y
    }

    /// Writes the file and waits until every node serves it.
    async fn reload(&self, subs: &[Sub<'_>]) {
        let versions: Vec<u64> = self
            .nodes
            .iter()
            .map(|n| n.running.gateway.version())
            .collect();
        std::fs::write(&self.path, Self::yaml(&self.head, &self.hook, subs)).unwrap();
        eventually("the reload", Duration::from_secs(10), || {
            self.nodes
                .iter()
                .zip(&versions)
                .all(|(n, v)| n.running.gateway.version() > *v)
        })
        .await;
    }

    /// Waits until every expected delivery so far came and the subscriptions owe nothing.
    async fn drained(&self, ledger: &Ledger, subs: &[&str]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut owed = 0;
            for node in &self.nodes {
                let queue = node.queue.clone().unwrap();
                for s in subs {
                    owed += queue.depth(s).await.map_or(1, |d| d.pending);
                }
            }
            if owed == 0 && ledger.missing() == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not drained: {owed} owed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes to `topic` (with a CloudEvents type when given); the event id.
    async fn post(&self, topic: &str, ty: Option<&str>) -> String {
        let n = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let node = &self.nodes[n % self.nodes.len()];
        let url = format!("http://{}/in/{topic}", node.running.proxy_addr);
        let mut headers = vec![("content-type", "application/json")];
        let id = unique("src");
        if let Some(t) = ty {
            headers.extend([
                ("ce-specversion", "1.0"),
                ("ce-id", id.as_str()),
                ("ce-source", "/suite"),
                ("ce-type", t),
            ]);
        }
        let r = self
            .cl
            .request(Method::POST, &url, &headers, Bytes::from_static(b"{}"))
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_owned()
    }
}

async fn through_config_changes(backend: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ledger = Ledger::default();
    let endpoint = ledger.endpoint().await;
    let (ns, dir) = (namespace(), temp_dir("config-changes"));
    let (a, b) = (unique("ta"), unique("tb"));
    let (s1, s2) = (unique("s1"), unique("s2"));
    let head = node_yaml(&dir, "127.0.0.1:0", backend, &ns, &[&a, &b]);
    let hook = endpoint.address().to_string();
    let path = dir.join("weir.yaml");
    std::fs::write(&path, Run::yaml(&head, &hook, &[(&s1, &a, &[])])).unwrap();
    let p = path.clone();
    let loader: weir_proxy::reload::Loader =
        Arc::new(move || weir_config::load_file(&p).map_err(|e| vec![e.to_string()]));
    let sources = weir_proxy::app::ReloadSources {
        loader: Some(Arc::clone(&loader)),
        watch: Some(path.clone()),
        watch_every: Some(Duration::from_millis(50)),
        ..Default::default()
    };
    let count = if backend == "embedded" { 1 } else { 2 };
    let mut nodes = Vec::new();
    for _ in 0..count {
        // Both nodes read and watch the same file, as two nodes deployed from one would.
        nodes.push(
            weir::start(
                loader().unwrap(),
                sources.clone(),
                Default::default(),
                false,
            )
            .await
            .unwrap(),
        );
    }
    let run = Arc::new(Run {
        nodes,
        turn: Default::default(),
        path,
        head,
        hook,
        cl: HttpClient::new(),
    });

    // Published the moment Weir starts.
    for _ in 0..10 {
        ledger.accepted(&run.post(&a, None).await, &[&s1], &[]);
    }
    run.drained(&ledger, &[&s1]).await;

    // s2 added on a while events flow: an event whose publish began after the reload was
    // served reaches it; one that began before may or may not.
    let added = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let flow = {
        let (run, ledger, added, stop) = (
            Arc::clone(&run),
            ledger.clone(),
            Arc::clone(&added),
            Arc::clone(&stop),
        );
        let (a, s1, s2) = (a.clone(), s1.clone(), s2.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let after = added.load(Ordering::SeqCst);
                let id = run.post(&a, None).await;
                if after {
                    ledger.accepted(&id, &[&s1, &s2], &[]);
                } else {
                    ledger.accepted(&id, &[&s1], &[]);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.reload(&[(&s1, &a, &[]), (&s2, &a, &[])]).await;
    added.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    flow.await.unwrap();
    run.drained(&ledger, &[&s1, &s2]).await;

    // s1 moved to b: b's events reach it, a's reach only s2.
    run.reload(&[(&s1, &b, &[]), (&s2, &a, &[])]).await;
    for _ in 0..5 {
        let id = run.post(&b, None).await;
        ledger.accepted(&id, &[&s1], &[&s2]);
        ledger.accepted(&run.post(&a, None).await, &[&s2], &[&s1]);
    }
    run.drained(&ledger, &[&s1, &s2]).await;

    // s2 takes only order.created from now on.
    let filter: &[&str] = &["order.created"];
    run.reload(&[(&s1, &b, &[]), (&s2, &a, filter)]).await;
    for _ in 0..5 {
        let id = run.post(&a, Some("order.created")).await;
        ledger.accepted(&id, &[&s2], &[&s1]);
        let id = run.post(&a, Some("order.paid")).await;
        ledger.accepted(&id, &[], &[&s1, &s2]);
    }
    run.drained(&ledger, &[&s1, &s2]).await;

    // s2 removed, then added back under its name: it resumes where it stopped, so what
    // was published meanwhile reaches it too.
    run.reload(&[(&s1, &b, &[])]).await;
    let meanwhile = run.post(&a, None).await;
    ledger.accepted(&meanwhile, &[&s2], &[&s1]);
    run.reload(&[(&s1, &b, &[]), (&s2, &a, &[])]).await;
    for _ in 0..5 {
        ledger.accepted(&run.post(&a, None).await, &[&s2], &[&s1]);
    }
    run.drained(&ledger, &[&s1, &s2]).await;

    // Both on b.
    run.reload(&[(&s1, &b, &[]), (&s2, &b, &[])]).await;
    for _ in 0..5 {
        ledger.accepted(&run.post(&b, None).await, &[&s1, &s2], &[]);
    }

    let tally = ledger.settle(Duration::from_secs(20)).await;
    assert!(
        tally.missing.is_empty() && tally.forbidden.is_empty() && tally.duplicates == 0,
        "{backend}: {tally:?}"
    );
    eprintln!(
        "{backend}: accepted {}, deliveries expected {}, duplicates {}",
        tally.accepted, tally.expected, tally.duplicates
    );
    let run = Arc::into_inner(run).unwrap();
    for node in run.nodes {
        node.shutdown().await;
    }
    clean(backend, &ns, &[&s1, &s2], &[&a, &b]).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_is_delivered_through_config_changes() {
    for backend in BACKENDS {
        through_config_changes(backend).await;
    }
}
