//! Broker chaos for the event tests: brokers of a test's own that go away and come back
//! (a Redis, a nats-server or a RabbitMQ node killed with SIGKILL, or the shared RabbitMQ
//! behind a relay the test makes silent), the outage-and-recovery scenario, and two nodes
//! sharing one queue.
#![allow(dead_code)]

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Method;

use super::*;

/// Webhook ids the endpoint has received.
pub fn delivered_ids(endpoint: &MockUpstream) -> HashSet<String> {
    ids_of(&endpoint.recorded())
}

fn ids_of(recorded: &[weir_testkit::Recorded]) -> HashSet<String> {
    recorded
        .iter()
        .filter_map(|r| {
            r.headers
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .collect()
}

/// Deliveries beyond the first of each event id, from one look at the endpoint (two looks
/// race the deliveries still arriving: a redelivery between them made the count negative).
pub fn duplicates(endpoint: &MockUpstream) -> usize {
    let recorded = endpoint.recorded();
    recorded.len() - ids_of(&recorded).len()
}

/// A NATS server with JetStream of this test's own, stopped and started at will.
pub struct OwnNats {
    port: u16,
    dir: std::path::PathBuf,
    proc: Option<Proc>,
}

impl OwnNats {
    pub async fn start(port: u16, dir: &std::path::Path) -> Self {
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

/// A RabbitMQ node of this test's own (its own node name, ports and directory, beside the
/// machine's shared one), killed with SIGKILL and started again: a crash of the broker.
pub struct OwnRabbit {
    port: u16,
    /// Its Erlang distribution port.
    dist: u16,
    dir: std::path::PathBuf,
}

impl OwnRabbit {
    pub async fn start(port: u16, dir: &std::path::Path) -> Self {
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("plugins"), "[].\n").unwrap();
        std::fs::write(dir.join("env.conf"), "").unwrap();
        // Started by root, the server runs as the rabbitmq user, which must own its files.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        if root {
            let chown = Command::new("chown")
                .args(["-R", "rabbitmq:rabbitmq"])
                .arg(dir)
                .status()
                .unwrap();
            assert!(chown.success());
        }
        let me = Self {
            port,
            dist: free_port(),
            dir: dir.to_owned(),
        };
        me.boot().await;
        me
    }

    async fn boot(&self) {
        let d = |name: &str| self.dir.join(name);
        let _ = std::fs::remove_file(d("pid"));
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .env(
                "RABBITMQ_NODENAME",
                format!("weirtest{}@localhost", self.port),
            )
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist.to_string())
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_PID_FILE", d("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("plugins"))
            .env("RABBITMQ_CONF_ENV_FILE", d("env.conf"))
            .env("RABBITMQ_CONFIG_FILE", d("none"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d("none.config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("rabbitmq-server is installed (scripts/services.sh names the package)");
        assert!(status.success(), "rabbitmq-server -detached: {status}");
        // A node boots in seconds; the AMQP port opens last, when it serves.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the test's RabbitMQ node did not start; see {}",
                d("log").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL to the node's VM: no clean shutdown, as in a crash.
    pub fn kill(&mut self) {
        let Some(pid) = std::fs::read_to_string(self.dir.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            return;
        };
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(self.dir.join("pid"));
    }
}

impl Drop for OwnRabbit {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The shared RabbitMQ seen through a TCP relay of the test's own: stopping the relay
/// (its listener and every connection through it) is the broker going away for Weir.
pub struct Relay {
    port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    pub async fn start(port: u16) -> Self {
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

    /// In the relay's place, a listener that takes connections and never answers: a
    /// broker that is up but does not serve (a node still recovering its queues).
    pub async fn black_hole(port: u16) -> Self {
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        Self {
            port,
            task: Some(task),
        }
    }
}

/// A broker of the test's own, keeping its data on disk, that goes away and comes back.
pub enum Broker {
    Redis(OwnRedis, std::path::PathBuf),
    Nats(OwnNats),
    /// A node of the test's own, killed with SIGKILL.
    Rabbit(OwnRabbit),
    /// The same, but while away the relay's port takes connections and never answers.
    RabbitSilent(Relay, String),
}

impl Broker {
    fn url(&self) -> String {
        match self {
            Self::Redis(r, _) => format!("redis://127.0.0.1:{}", r.port),
            Self::Nats(n) => format!("nats://127.0.0.1:{}", n.port),
            Self::Rabbit(r) => format!("amqp://guest:guest@127.0.0.1:{}/%2f", r.port),
            Self::RabbitSilent(r, _) => {
                format!("amqp://guest:guest@127.0.0.1:{}/%2f", r.port)
            }
        }
    }

    fn namespace(&self) -> String {
        match self {
            Self::RabbitSilent(_, ns) => ns.clone(),
            _ => "weir".to_owned(),
        }
    }

    fn stop(&mut self) {
        match self {
            Self::Redis(r, _) => r.stop(),
            Self::Nats(n) => n.proc = None,
            Self::Rabbit(r) => r.kill(),
            Self::RabbitSilent(r, _) => {
                if let Some(t) = r.task.take() {
                    t.abort();
                }
            }
        }
    }

    /// Before the kill: a RabbitMQ node keeps its stream coordinator's membership on disk
    /// only some seconds after making it; killed sooner, RabbitMQ 3.10 leaves its streams
    /// "down or inaccessible" for minutes (docs/configuration.md). A broker that has run a
    /// while is what a crash in production meets.
    async fn settle(&self) {
        if let Self::Rabbit(_) = self {
            let secs = std::env::var("WEIR_TEST_RABBIT_SETTLE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(10);
            tokio::time::sleep(Duration::from_secs(secs)).await;
        }
    }

    /// After `stop`: a silent broker takes the port (the others leave it closed).
    async fn go_silent(&mut self) {
        if let Self::RabbitSilent(r, _) = self {
            *r = Relay::black_hole(r.port).await;
        }
    }

    async fn start_again(&mut self) {
        match self {
            Self::Redis(r, aof) => *r = OwnRedis::start_in(r.port, Some(aof)).await,
            Self::Nats(n) => *n = OwnNats::start(n.port, &n.dir).await,
            Self::Rabbit(r) => r.boot().await,
            Self::RabbitSilent(r, _) => {
                // The silent listener goes (and every connection it held) first.
                if let Some(t) = r.task.take() {
                    t.abort();
                }
                *r = Relay::start(r.port).await;
            }
        }
    }
}

/// Ingest and delivery through `broker`; it goes away (ingest answers 503 with
/// Retry-After, acknowledging nothing) and comes back (ingest and delivery resume, every
/// acknowledged event delivered).
pub async fn outage_and_recovery(mut broker: Broker, dir: &std::path::Path) {
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

    // Publishers keep posting while the broker dies and comes back: it dies mid-ingest and
    // mid-delivery. Every answer is a 202 (counted) or a 503 with Retry-After.
    let flowing = Arc::new(AtomicBool::new(true));
    let taken = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let mut publishers = Vec::new();
    for w in 0..4 {
        let (cl, url) = (cl.clone(), url.clone());
        let (flowing, taken) = (Arc::clone(&flowing), Arc::clone(&taken));
        publishers.push(tokio::spawn(async move {
            let mut n = 0;
            while flowing.load(Ordering::Relaxed) {
                n += 1;
                let r = cl
                    .request(
                        Method::POST,
                        &url,
                        &[("content-type", "application/json")],
                        Bytes::from(format!("{{\"w\":{w},\"n\":{n}}}")),
                    )
                    .await;
                match r.status.as_u16() {
                    202 => taken
                        .lock()
                        .push(r.json()["id"].as_str().unwrap().to_owned()),
                    503 => assert!(r.headers.contains_key("retry-after")),
                    other => panic!("unexpected answer {other}: {}", r.text()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.settle().await;
    broker.stop();
    broker.go_silent().await;
    refused_while_away(&publish).await;

    broker.start_again().await;
    let returned = std::time::Instant::now();
    let mut back = false;
    let mut last = String::new();
    for n in 0..100 {
        let r = publish(200 + n).await;
        if r.status == 202 {
            accepted.insert(r.json()["id"].as_str().unwrap().to_owned());
            back = true;
            break;
        }
        last = r.text();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "ingest resumes once the broker is back; it still answers {last}"
    );
    let ingest_back = returned.elapsed();
    let mut after = Vec::new();
    for n in 0..10 {
        let r = publish(300 + n).await;
        assert_eq!(r.status, 202);
        let id = r.json()["id"].as_str().unwrap().to_owned();
        after.push(id.clone());
        accepted.insert(id);
    }
    eventually("delivery resumes", Duration::from_secs(15), || {
        let got = delivered_ids(&endpoint);
        after.iter().any(|id| got.contains(id))
    })
    .await;
    let delivery_back = returned.elapsed();
    flowing.store(false, Ordering::Relaxed);
    for p in publishers {
        p.await.unwrap();
    }
    accepted.extend(taken.lock().drain(..));
    eventually("every 202 delivered", Duration::from_secs(15), || {
        accepted.is_subset(&delivered_ids(&endpoint))
    })
    .await;
    eprintln!(
        "\nchaos: {}: broker away: acknowledged {}, delivered {}, duplicates {}; ingest back after {:.1} s, delivery after {:.1} s",
        broker.url(),
        accepted.len(),
        delivered_ids(&endpoint).intersection(&accepted).count(),
        duplicates(&endpoint),
        ingest_back.as_secs_f64(),
        delivery_back.as_secs_f64(),
    );
    assert!(
        delivery_back <= Duration::from_secs(5),
        "delivery resumed {delivery_back:?} after the broker's return"
    );
    node.shutdown().await;
}

/// While the broker is away, each publish is answered — while the client still waits,
/// whatever the broker does — with a 503 and Retry-After.
async fn refused_while_away<F, Fut>(publish: &F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = weir_testkit::client::Reply>,
{
    for n in 0..3 {
        let asked = std::time::Instant::now();
        let r = publish(100 + n).await;
        assert!(
            asked.elapsed() < Duration::from_secs(15),
            "{:?}",
            asked.elapsed()
        );
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.json()["error"]["type"], "queue_unavailable");
        assert!(r.headers.contains_key("retry-after"));
    }
}

/// Two nodes on one shared queue: events published on either are all delivered, each
/// once, whichever node's worker leases them.
pub async fn two_nodes_share(backend: &str, tag: &str) {
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
