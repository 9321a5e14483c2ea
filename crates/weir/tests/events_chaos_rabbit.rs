//! No loss with RabbitMQ: the broker killed with SIGKILL (a node of the test's own), or
//! silent behind a relay, makes ingest answer 503 with Retry-After and nothing acknowledged
//! is lost; two nodes share one queue. Apart from the other chaos tests so their outages do
//! not overlap.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::chaos::*;
use common::*;

/// The broker killed with SIGKILL mid-ingest and mid-delivery, then started again: a node
/// of the test's own (its own name, ports and files), so the shared one keeps serving the
/// other tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rabbitmq_broker_killed_answers_503_and_resumes_without_loss() {
    let dir = temp_dir("events-chaos-rabbit");
    let broker = OwnRabbit::start(free_port(), &temp_dir("own-rabbit")).await;
    outage_and_recovery(Broker::Rabbit(broker), &dir).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A broker that takes connections but does not serve them (a node still recovering its
/// queues) gets 503s within the client's patience, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rabbitmq_broker_that_does_not_answer_gets_503_not_a_hang() {
    let dir = temp_dir("events-chaos-rabbit-silent");
    let ns = format!("t{}s", weir_events::now_ms() % 1_000_000_007);
    let relay = Relay::start(free_port()).await;
    outage_and_recovery(Broker::RabbitSilent(relay, ns.clone()), &dir).await;
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
