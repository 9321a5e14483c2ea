//! The admin listener at start-up and as Kubernetes probes it: the real binary takes no
//! admin connection before its API is mounted (a login right after the port opens works),
//! `/livez` answers while the process runs, and `/readyz` says whether the store and the
//! event queue answer (`503` naming the one that does not).

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Method;
use serde_json::json;

const PASSWORD: &str = "operator-password-1";

async fn login(cl: &HttpClient, admin: std::net::SocketAddr) -> weir_testkit::Reply {
    cl.request(
        Method::POST,
        &format!("http://{admin}/api/v1/login"),
        &[("content-type", "application/json")],
        Bytes::from(json!({ "username": "ops", "password": PASSWORD }).to_string()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_works_as_soon_as_the_admin_port_accepts() {
    let dir = temp_dir("probes-start");
    let (proxy, admin) = (free_port(), free_port());
    let file = dir.join("weir.yaml");
    std::fs::write(
        &file,
        format!(
            "listen: {{ proxy: 127.0.0.1:{proxy}, admin: 127.0.0.1:{admin} }}\nworkers: 1\naccess_log: off\nstore: sqlite://weir.db\ndata_dir: {}\ntopics: {{ orders: {{}} }}\n",
            dir.display()
        ),
    )
    .unwrap();
    let _node = Proc(
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["serve", "--config"])
            .arg(&file)
            .env("WEIR_LOG", "warn")
            .env_remove("WEIR_CONFIG")
            .env("WEIR_ADMIN_USER", "ops")
            .env("WEIR_ADMIN_PASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // What a start-up script does: wait for the port, then log in at once.
    wait_port(admin).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let cl = HttpClient::new();
    let r = login(&cl, addr).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let live = cl.get(&format!("http://{addr}/livez")).await;
    assert_eq!(live.status, 200);
    let ready = cl.get(&format!("http://{addr}/readyz")).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let v = ready.json();
    assert_eq!(v["status"], "ready");
    assert_eq!(v["checks"]["store"], "ok");
    assert_eq!(v["checks"]["queue"], "ok");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_queue_that_does_not_answer_and_livez_stays_up() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("probes-queue");
    let mut redis = OwnRedis::start(free_port()).await;
    let cfg = weir_config::from_yaml(
        &format!(
            "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nworkers: 1\naccess_log: off\nstore: sqlite://weir.db\ndata_dir: {}\nevents: {{ backend: \"redis://127.0.0.1:{}\" }}\ntopics: {{ orders: {{}} }}\n",
            dir.display(),
            redis.port
        ),
        "test",
    )
    .unwrap();
    let node = weir::start(cfg, Default::default(), Default::default(), true)
        .await
        .unwrap();
    let addr = node.running.admin_addr.unwrap();
    let cl = HttpClient::new();
    let ready = cl.get(&format!("http://{addr}/readyz")).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    redis.stop();
    let asked = std::time::Instant::now();
    let ready = cl.get(&format!("http://{addr}/readyz")).await;
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(ready.status, 503, "{}", ready.text());
    let v = ready.json();
    assert_eq!(v["status"], "not_ready");
    assert_eq!(v["checks"]["store"], "ok");
    assert!(
        v["checks"]["queue"]
            .as_str()
            .unwrap()
            .contains("unavailable"),
        "{v}"
    );
    assert_eq!(cl.get(&format!("http://{addr}/livez")).await.status, 200);
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
