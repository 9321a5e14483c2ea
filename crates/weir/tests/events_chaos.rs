//! No loss under failure: Weir killed with SIGKILL in the middle of ingest and delivery
//! delivers every event it answered 202 once restarted; a Redis, NATS or RabbitMQ queue
//! that goes away makes ingest answer 503 with Retry-After (nothing acknowledged and then
//! lost), and ingest and delivery resume when it returns.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Method;

/// Webhook ids the endpoint has received.
fn delivered_ids(endpoint: &MockUpstream) -> HashSet<String> {
    endpoint
        .recorded()
        .into_iter()
        .filter_map(|r| {
            r.headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .collect()
}

fn serve(file: &std::path::Path) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["serve", "--config"])
            .arg(file)
            .env("WEIR_LOG", "warn")
            .env_remove("WEIR_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_ingest_and_delivery_then_every_202_is_delivered() {
    // A slow endpoint keeps deliveries in flight when the process dies.
    let endpoint = MockUpstream::start(Behavior::Delay(Duration::from_millis(20))).await;
    let dir = temp_dir("events-chaos-kill9");
    let port = free_port();
    let file = dir.join("weir.yaml");
    std::fs::write(
        &file,
        format!(
            "listen: {{ proxy: \"127.0.0.1:{port}\" }}
workers: 2
access_log: off
data_dir: {}
topics: {{ orders: {{}} }}
routes: [ {{ name: input, topic: orders, match: {{ paths: [/events/orders] }} }} ]
subscriptions:
  - {{ name: billing, topic: orders, endpoint: \"http://{}/hook\", timeout: 500ms, max_in_flight: 8 }}
",
            dir.display(),
            endpoint.address()
        ),
    )
    .unwrap();
    let mut weir = serve(&file);
    wait_port(port).await;

    // Eight publishers post until the process is gone; only 202s count.
    let accepted = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let cl = HttpClient::new();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (cl, accepted, stop) = (cl.clone(), Arc::clone(&accepted), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let r = cl
                    .try_request(
                        Method::POST,
                        &format!("http://127.0.0.1:{port}/events/orders"),
                        &[("content-type", "application/json")],
                        Bytes::from(format!("{{\"w\":{w},\"n\":{n}}}")),
                    )
                    .await;
                match r {
                    Ok(r) if r.status == 202 => {
                        accepted
                            .lock()
                            .push(r.json()["id"].as_str().unwrap().to_owned());
                    }
                    Ok(r) => panic!("unexpected answer {}", r.status),
                    Err(_) => break,
                }
            }
        }));
    }
    // Kill it while both ingest and delivery are busy.
    eventually(
        "ingest and delivery under way",
        Duration::from_secs(10),
        || accepted.lock().len() >= 300 && delivered_ids(&endpoint).len() >= 20,
    )
    .await;
    weir.0.kill().unwrap();
    weir.0.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let accepted: HashSet<String> = accepted.lock().iter().cloned().collect();
    let before = delivered_ids(&endpoint).len();
    assert!(
        before < accepted.len(),
        "the kill came before everything was delivered ({before} of {})",
        accepted.len()
    );

    // Restarted on the same data: every accepted event arrives (leases of the killed
    // process run out after timeout × 2 + 10 s, then those are sent again).
    let _weir = serve(&file);
    wait_port(port).await;
    eventually(
        "every 202 delivered after the restart",
        Duration::from_secs(40),
        || accepted.is_subset(&delivered_ids(&endpoint)),
    )
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A NATS server with JetStream of this test's own, stopped and started at will.
struct OwnNats {
    port: u16,
    dir: std::path::PathBuf,
    proc: Option<Proc>,
}

impl OwnNats {
    async fn start(port: u16, dir: &std::path::Path) -> Self {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed (scripts/services.sh names the package)");
        wait_port(port).await;
        Self {
            port,
            dir: dir.to_owned(),
            proc: Some(Proc(child)),
        }
    }
}

/// The shared RabbitMQ seen through a TCP relay of the test's own: stopping the relay
/// (its listener and every connection through it) is the broker going away for Weir.
struct Relay {
    port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(port: u16) -> Self {
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let task = tokio::spawn(async move {
            // Dropped with the task: every relayed connection closes with it.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect("127.0.0.1:5672").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Self {
            port,
            task: Some(task),
        }
    }
}

/// A broker of the test's own, keeping its data on disk, that goes away and comes back.
enum Broker {
    Redis(OwnRedis, std::path::PathBuf),
    Nats(OwnNats),
    /// Through a relay, under a namespace of the test's own.
    Rabbit(Relay, String),
}

impl Broker {
    fn url(&self) -> String {
        match self {
            Self::Redis(r, _) => format!("redis://127.0.0.1:{}", r.port),
            Self::Nats(n) => format!("nats://127.0.0.1:{}", n.port),
            Self::Rabbit(r, _) => format!("amqp://guest:guest@127.0.0.1:{}/%2f", r.port),
        }
    }

    fn namespace(&self) -> String {
        match self {
            Self::Rabbit(_, ns) => ns.clone(),
            _ => "weir".to_owned(),
        }
    }

    fn stop(&mut self) {
        match self {
            Self::Redis(r, _) => r.stop(),
            Self::Nats(n) => n.proc = None,
            Self::Rabbit(r, _) => {
                if let Some(t) = r.task.take() {
                    t.abort();
                }
            }
        }
    }

    async fn start_again(&mut self) {
        match self {
            Self::Redis(r, aof) => *r = OwnRedis::start_in(r.port, Some(aof)).await,
            Self::Nats(n) => *n = OwnNats::start(n.port, &n.dir).await,
            Self::Rabbit(r, _) => *r = Relay::start(r.port).await,
        }
    }
}

/// Ingest and delivery through `broker`; it goes away (ingest answers 503 with
/// Retry-After, acknowledging nothing) and comes back (ingest and delivery resume, every
/// acknowledged event delivered).
async fn outage_and_recovery(mut broker: Broker, dir: &std::path::Path) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let endpoint = MockUpstream::start(Behavior::Status(204)).await;
    let cfg = weir_config::from_yaml(
        &format!(
            "listen: {{ proxy: \"127.0.0.1:0\" }}
workers: 1
access_log: off
data_dir: {}
events: {{ backend: \"{}\", namespace: {} }}
topics: {{ orders: {{}} }}
routes: [ {{ name: input, topic: orders, match: {{ paths: [/events/orders] }} }} ]
subscriptions:
  - {{ name: billing, topic: orders, endpoint: \"http://{}/hook\", retry: {{ schedule: [100ms] }} }}
",
            dir.display(),
            broker.url(),
            broker.namespace(),
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
    let publish = |n: usize| {
        let (cl, url) = (cl.clone(), url.clone());
        async move {
            cl.request(
                Method::POST,
                &url,
                &[("content-type", "application/json")],
                Bytes::from(format!("{{\"n\":{n}}}")),
            )
            .await
        }
    };
    let mut accepted = HashSet::new();
    for n in 0..20 {
        let r = publish(n).await;
        assert_eq!(r.status, 202, "{}", r.text());
        accepted.insert(r.json()["id"].as_str().unwrap().to_owned());
    }
    eventually(
        "delivered through the broker",
        Duration::from_secs(10),
        || accepted.is_subset(&delivered_ids(&endpoint)),
    )
    .await;

    broker.stop();
    for n in 0..3 {
        let r = publish(100 + n).await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.json()["error"]["type"], "queue_unavailable");
        assert!(r.headers.contains_key("retry-after"));
    }

    broker.start_again().await;
    let mut back = false;
    for n in 0..100 {
        let r = publish(200 + n).await;
        if r.status == 202 {
            accepted.insert(r.json()["id"].as_str().unwrap().to_owned());
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "ingest resumes once the broker is back");
    for n in 0..10 {
        let r = publish(300 + n).await;
        assert_eq!(r.status, 202);
        accepted.insert(r.json()["id"].as_str().unwrap().to_owned());
    }
    eventually("delivery resumes", Duration::from_secs(40), || {
        accepted.is_subset(&delivered_ids(&endpoint))
    })
    .await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_queue_going_away_answers_503_and_resumes_without_loss() {
    let dir = temp_dir("events-chaos-redis");
    let aof = dir.join("redis");
    std::fs::create_dir_all(&aof).unwrap();
    let redis = OwnRedis::start_in(free_port(), Some(&aof)).await;
    outage_and_recovery(Broker::Redis(redis, aof), &dir).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_queue_going_away_answers_503_and_resumes_without_loss() {
    let dir = temp_dir("events-chaos-nats");
    let store = dir.join("nats");
    std::fs::create_dir_all(&store).unwrap();
    let nats = OwnNats::start(free_port(), &store).await;
    outage_and_recovery(Broker::Nats(nats), &dir).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Two nodes on one shared queue: events published on either are all delivered, each
/// once, whichever node's worker leases them.
async fn two_nodes_share(backend: &str, tag: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let endpoint = MockUpstream::start(Behavior::Status(204)).await;
    let topic = unique(tag);
    // A namespace of the test's own in the shared server, removed at the end.
    let ns = format!("t{}", weir_events::now_ms() % 1_000_000_007);
    let yaml = |dir: &std::path::Path| {
        format!(
            "listen: {{ proxy: \"127.0.0.1:0\" }}
workers: 1
access_log: off
data_dir: {}
events: {{ backend: \"{backend}\", namespace: {ns} }}
topics: {{ {topic}: {{}} }}
routes: [ {{ name: input, topic: {topic}, match: {{ paths: [/in] }} }} ]
subscriptions:
  - {{ name: {topic}-sub, topic: {topic}, endpoint: \"http://{}/hook\" }}
",
            dir.display(),
            endpoint.address()
        )
    };
    let (da, db) = (temp_dir(&format!("{tag}-a")), temp_dir(&format!("{tag}-b")));
    let mut nodes = Vec::new();
    for d in [&da, &db] {
        let cfg = weir_config::from_yaml(&yaml(d), "test").unwrap();
        nodes.push(
            weir::start(cfg, Default::default(), Default::default(), false)
                .await
                .unwrap(),
        );
    }
    let cl = HttpClient::new();
    let mut accepted = HashSet::new();
    for n in 0..200 {
        let node = &nodes[n % 2];
        let r = cl
            .request(
                Method::POST,
                &format!("http://{}/in", node.running.proxy_addr),
                &[("content-type", "application/json")],
                Bytes::from(format!("{{\"n\":{n}}}")),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
        accepted.insert(r.json()["id"].as_str().unwrap().to_owned());
    }
    eventually("all delivered", Duration::from_secs(15), || {
        accepted.is_subset(&delivered_ids(&endpoint))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        endpoint.recorded().len(),
        200,
        "each event once, though both nodes deliver"
    );
    for n in nodes {
        n.shutdown().await;
    }
    if backend.starts_with("amqp:") {
        let sub = format!("{topic}-sub");
        weir_events::RabbitMq::open(backend, &ns, Duration::from_secs(60))
            .await
            .unwrap()
            .delete_all(&[&sub], &[&topic])
            .await
            .unwrap();
    } else if backend.starts_with("nats:") {
        weir_events::NatsJetStream::open(backend, &ns, Duration::from_secs(60))
            .await
            .unwrap()
            .delete_streams()
            .await
            .unwrap();
    } else {
        weir_events::RedisStreams::open(backend, &format!("{ns}:{{ev}}:"))
            .await
            .unwrap()
            .delete_keys()
            .await
            .unwrap();
    }
    let _ = std::fs::remove_dir_all(da);
    let _ = std::fs::remove_dir_all(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_a_redis_queue() {
    two_nodes_share("redis://127.0.0.1:6379", "shared-redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rabbitmq_queue_going_away_answers_503_and_resumes_without_loss() {
    let dir = temp_dir("events-chaos-rabbit");
    let ns = format!("t{}", weir_events::now_ms() % 1_000_000_007);
    let relay = Relay::start(free_port()).await;
    outage_and_recovery(Broker::Rabbit(relay, ns.clone()), &dir).await;
    weir_events::RabbitMq::open(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        &ns,
        Duration::from_secs(60),
    )
    .await
    .unwrap()
    .delete_all(&["billing"], &["orders"])
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_a_rabbitmq_queue() {
    two_nodes_share("amqp://guest:guest@127.0.0.1:5672/%2f", "shared-rabbit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_a_nats_queue() {
    two_nodes_share("nats://127.0.0.1:4222", "shared-nats").await;
}
