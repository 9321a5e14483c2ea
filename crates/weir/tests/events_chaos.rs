//! No loss under failure: Weir killed with SIGKILL in the middle of ingest and delivery
//! delivers every event it answered 202 once restarted; a Redis or NATS queue that goes
//! away makes ingest answer 503 with Retry-After (nothing acknowledged and then lost), and
//! ingest and delivery resume when it returns (RabbitMQ: events_chaos_rabbit.rs).

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::chaos::*;
use common::*;
use http::Method;

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
    kill_9_then_every_202_is_delivered("embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_on_redis_then_every_202_is_delivered() {
    kill_9_then_every_202_is_delivered(common::events::REDIS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_on_nats_then_every_202_is_delivered() {
    kill_9_then_every_202_is_delivered(common::events::NATS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_on_rabbitmq_then_every_202_is_delivered() {
    kill_9_then_every_202_is_delivered(common::events::RABBIT).await;
}

/// Weir killed with SIGKILL while it ingests and delivers through `backend`, then started
/// again on the same data: every event it acknowledged is delivered.
async fn kill_9_then_every_202_is_delivered(backend: &str) {
    // A slow endpoint keeps deliveries in flight when the process dies.
    let endpoint = MockUpstream::start(Behavior::Delay(Duration::from_millis(20))).await;
    let dir = temp_dir("events-chaos-kill9");
    let port = free_port();
    let file = dir.join("weir.yaml");
    let ns = common::events::namespace();
    let (topic, sub) = (format!("orders-{ns}"), format!("billing-{ns}"));
    std::fs::write(
        &file,
        format!(
            "listen: {{ proxy: \"127.0.0.1:{port}\" }}
workers: 2
access_log: off
data_dir: {}
events: {{ backend: \"{backend}\", namespace: {ns} }}
topics: {{ {topic}: {{}} }}
routes: [ {{ name: input, topic: {topic}, match: {{ paths: [/events/orders] }} }} ]
subscriptions:
  - {{ name: {sub}, topic: {topic}, endpoint: \"http://{}/hook\", timeout: 500ms, max_in_flight: 8 }}
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
    let weir = serve(&file);
    wait_port(port).await;
    eventually(
        &format!("every 202 delivered after the restart on {backend}"),
        // The killed process's leases run out first: timeout × 2 + 10 s, and on NATS
        // the consumer's ack wait (30 s at least).
        Duration::from_secs(if backend.starts_with("nats:") { 60 } else { 40 }),
        || accepted.is_subset(&delivered_ids(&endpoint)),
    )
    .await;
    eprintln!(
        "\nchaos: {backend}: weir killed: acknowledged {}, delivered {}, duplicates {}",
        accepted.len(),
        delivered_ids(&endpoint).intersection(&accepted).count(),
        duplicates(&endpoint)
    );
    drop(weir);
    common::events::clean(backend, &ns, &[&sub], &[&topic]).await;
    let _ = std::fs::remove_dir_all(dir);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_a_redis_queue() {
    two_nodes_share("redis://127.0.0.1:6379", "shared-redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_a_nats_queue() {
    two_nodes_share("nats://127.0.0.1:4222", "shared-nats").await;
}
