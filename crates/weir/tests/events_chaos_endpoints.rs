//! Subscriber endpoints that misbehave, on every backend: one that hangs (never answers),
//! one that answers slowly, one that resets every other connection. None of them slows
//! a healthy subscription on the same topic (its 202-to-delivery p99 stays within 2× of
//! the same traffic beside three well-behaved subscriptions instead: the same number of
//! subscriptions, so what is compared is their misbehaviour, not their count), and every
//! acknowledged event still reaches the slow and the resetting ones. Run one backend at a
//! time: the latencies are compared.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::chaos::delivered_ids;
use common::events::{BACKENDS, clean, namespace, node_yaml};
use common::*;
use http::Method;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Events per phase, and the pause between two publishes (100 a second).
const EVENTS: usize = 300;
const GAP: Duration = Duration::from_millis(10);

/// A server that resets the connection of each event's first attempt and answers `204`
/// to the next; the ids it answered.
async fn resetting() -> (String, Arc<Mutex<std::collections::HashSet<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let tried: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let seen = Arc::clone(&got);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (seen, tried) = (Arc::clone(&seen), Arc::clone(&tried));
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let Ok(len) = s.read(&mut buf).await else {
                    return;
                };
                let head = String::from_utf8_lossy(&buf[..len]).to_ascii_lowercase();
                let id = head
                    .lines()
                    .find_map(|l| l.strip_prefix("webhook-id:"))
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default();
                if tried.lock().insert(id.clone()) {
                    // RST instead of an answer.
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    return;
                }
                seen.lock().insert(id);
                let _ = s
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, got)
}

/// When each event reached the healthy endpoint, by webhook id.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn healthy(arrivals: &Arrivals) -> MockUpstream {
    let arrivals = Arc::clone(arrivals);
    MockUpstream::start(Behavior::Custom(Arc::new(move |req| {
        let arrivals = Arc::clone(&arrivals);
        Box::pin(async move {
            if let Some(id) = req
                .headers()
                .get("webhook-id")
                .and_then(|v| v.to_str().ok())
            {
                arrivals.lock().insert(id.to_owned(), Instant::now());
            }
            let mut r = http::Response::new(weir_testkit::upstream::full(""));
            *r.status_mut() = http::StatusCode::NO_CONTENT;
            r
        })
    })))
    .await
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// A node that ran a phase: it is shut down by the caller.
struct Ran {
    node: weir::Node,
    dir: std::path::PathBuf,
    accepted: Vec<String>,
    p99: Duration,
}

/// Publishes [`EVENTS`] events at a steady pace through a node with these subscriptions;
/// the ids accepted and the healthy subscription's 202-to-delivery p99.
async fn phase(backend: &str, subs: &str, topic: &str, ns: &str, arrivals: &Arrivals) -> Ran {
    let dir = temp_dir("chaos-endpoints");
    let cfg = weir_config::from_yaml(
        &format!(
            "{}subscriptions:\n{subs}",
            node_yaml(&dir, "127.0.0.1:0", backend, ns, &[topic])
        ),
        "test",
    )
    .unwrap();
    let node = weir::start(cfg, Default::default(), Default::default(), false)
        .await
        .unwrap();
    let cl = HttpClient::new();
    let url = format!("http://{}/in/{topic}", node.running.proxy_addr);
    let mut accepted = Vec::new();
    let mut at = HashMap::new();
    for n in 0..EVENTS {
        let r = cl
            .request(
                Method::POST,
                &url,
                &[("content-type", "application/json")],
                Bytes::from(format!("{{\"n\":{n}}}")),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
        let id = r.json()["id"].as_str().unwrap().to_owned();
        at.insert(id.clone(), Instant::now());
        accepted.push(id);
        tokio::time::sleep(GAP).await;
    }
    eventually(
        "the healthy subscription has everything",
        Duration::from_secs(20),
        || {
            let got = arrivals.lock();
            accepted.iter().all(|id| got.contains_key(id))
        },
    )
    .await;
    let lat: Vec<Duration> = {
        let got = arrivals.lock();
        accepted
            .iter()
            .map(|id| got[id].saturating_duration_since(at[id]))
            .collect()
    };
    Ran {
        node,
        dir,
        accepted,
        p99: p99(lat),
    }
}

impl Ran {
    async fn end(self) {
        self.node.shutdown().await;
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

/// One measurement on `backend`: the healthy subscription's p99 beside well-behaved
/// endpoints, then beside misbehaving ones.
async fn misbehaving_endpoints(backend: &str) -> (Duration, Duration) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let arrivals: Arrivals = Arc::default();
    let good = healthy(&arrivals).await;
    let hang = MockUpstream::start(Behavior::Delay(Duration::from_secs(120))).await;
    let slow = MockUpstream::start(Behavior::Delay(Duration::from_millis(300))).await;
    let (reset, reset_got) = resetting().await;
    let ns = namespace();
    let fine = MockUpstream::start(Behavior::Status(204)).await;
    let names = [
        "good", "hang", "slow", "reset", "good2", "fine1", "fine2", "fine3",
    ]
    .map(|s| format!("{s}-{ns}"));
    let (t1, t2) = (format!("fine-{ns}"), format!("shared-{ns}"));
    let good_sub = format!(
        "  - {{ name: {}, topic: TOPIC, endpoint: \"http://{}/good\" }}\n",
        names[0],
        good.address()
    );
    let mut well_behaved = good_sub.clone();
    for n in &names[5..] {
        well_behaved.push_str(&format!(
            "  - {{ name: {n}, topic: TOPIC, endpoint: \"http://{}/fine\" }}\n",
            fine.address()
        ));
    }
    let first = phase(
        backend,
        &well_behaved.replace("TOPIC", &t1),
        &t1,
        &ns,
        &arrivals,
    )
    .await;
    let baseline = first.p99;
    first.end().await;
    let all = format!(
        "{good_sub}  - {{ name: {}, topic: TOPIC, endpoint: \"http://{}/hang\", timeout: 60s }}
  - {{ name: {}, topic: TOPIC, endpoint: \"http://{}/slow\" }}
  - {{ name: {}, topic: TOPIC, endpoint: \"http://{reset}/reset\", retry: {{ schedule: [100ms, 100ms, 100ms, 100ms] }} }}
",
        names[1],
        hang.address(),
        names[2],
        slow.address(),
        names[3],
    )
    .replace("TOPIC", &t2)
    .replace(&format!("name: {},", names[0]), &format!("name: {},", names[4]));
    let second = phase(backend, &all, &t2, &ns, &arrivals).await;
    let beside = second.p99;
    eprintln!(
        "\nchaos: {backend}: healthy p99 {:.1} ms beside well-behaved endpoints, {:.1} ms beside hanging, slow and resetting ones",
        baseline.as_secs_f64() * 1000.0,
        beside.as_secs_f64() * 1000.0
    );
    // The slow and the resetting ones get everything too, later.
    eventually(
        "the slow and resetting endpoints have everything",
        Duration::from_secs(30),
        || {
            let (slow_got, reset_got) = (delivered_ids(&slow), reset_got.lock().clone());
            second
                .accepted
                .iter()
                .all(|id| slow_got.contains(id) && reset_got.contains(id))
        },
    )
    .await;
    second.end().await;
    drop(hang);
    clean(
        backend,
        &ns,
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
        &[&t1, &t2],
    )
    .await;
    (baseline, beside)
}

/// A p99 of a few milliseconds is within the scheduler's noise: the bound is twice the
/// baseline or 10 ms, whichever is larger.
fn within(baseline: Duration, beside: Duration) -> bool {
    beside <= (baseline * 2).max(Duration::from_millis(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_endpoints_do_not_slow_the_others() {
    for backend in BACKENDS {
        let (baseline, beside) = misbehaving_endpoints(backend).await;
        if within(baseline, beside) {
            continue;
        }
        // One p99 of 300 samples through a broker's fsyncs on a shared two-core machine
        // varies up to twice between identical runs; a worker pool that a hanging endpoint
        // blocks shows up as seconds, every time. So a miss gets one second measurement,
        // and that one decides.
        eprintln!("chaos: {backend}: measuring again");
        let (baseline, beside) = misbehaving_endpoints(backend).await;
        assert!(
            within(baseline, beside),
            "{backend}: the healthy subscription slowed from {baseline:?} to {beside:?}"
        );
    }
}
