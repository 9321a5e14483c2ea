//! A database-mode node reloads its own settings from its file like a file-mode node: the
//! real binary takes SIGHUP (50 of them under load without a failed request), applies the
//! file's node settings with the store's objects, re-reads `file:` secrets (a key rotates
//! without a restart), keeps its running settings on a broken edit, and names in one
//! warning what only a restart changes.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Method;

const OLD_KEY: &str = "first-key-0123456789abcdef";
const NEW_KEY: &str = "second-key-0123456789abcdef";

fn node_file(dir: &Path, proxy: u16, admin: u16, max_body: &str) -> String {
    format!(
        "listen: {{ proxy: 127.0.0.1:{proxy}, admin: 127.0.0.1:{admin} }}
workers: 1
access_log: off
store: sqlite://weir.db
data_dir: {dir}
limits: {{ max_body_size: {max_body} }}
upstreams: {{ echo: {{ builtin: echo }} }}
routes:
  - {{ name: echo, match: {{ paths: [/*] }}, upstream: echo, policies: [ {{ key_auth: {{}} }} ] }}
consumers:
  - {{ name: acme, credentials: [ {{ type: key, key: \"file:{dir}/acme.key\" }} ] }}
",
        dir = dir.display()
    )
}

fn hup(node: &Proc) {
    let ok = Command::new("kill")
        .args(["-HUP", &node.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP failed");
}

async fn call(cl: &HttpClient, proxy: u16, key: &str, body: &'static str) -> u16 {
    cl.request(
        Method::POST,
        &format!("http://127.0.0.1:{proxy}/orders"),
        &[("x-api-key", key)],
        Bytes::from_static(body.as_bytes()),
    )
    .await
    .status
    .as_u16()
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn log_shows(path: &Path, what: &str, times: usize) {
    eventually(
        &format!("{times}× {what:?} in the log"),
        Duration::from_secs(10),
        || log_of(path).matches(what).count() >= times,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_database_mode_node_from_its_file() {
    let dir = temp_dir("reload-db");
    let (proxy, admin) = (free_port(), free_port());
    let file = dir.join("weir.yaml");
    let log = dir.join("weir.log");
    std::fs::write(dir.join("acme.key"), format!("{OLD_KEY}\n")).unwrap();
    std::fs::write(&file, node_file(&dir, proxy, admin, "1KiB")).unwrap();
    let node = serve_logged(
        &file,
        &["--no-watch"],
        &[
            ("WEIR_LOG", "info"),
            ("WEIR_ADMIN_PASSWORD", common::admin::PASSWORD),
        ],
        &log,
    );
    wait_port(admin).await;
    let cl = HttpClient::new();
    assert_eq!(call(&cl, proxy, OLD_KEY, "small").await, 200);

    // 50 SIGHUPs while requests flow: none fails, the node lives on.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        tokio::spawn(async move {
            let cl = HttpClient::new();
            while !stop.load(Ordering::Relaxed) {
                match call(&cl, proxy, OLD_KEY, "small").await {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    for _ in 0..50 {
        hup(&node);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    log_shows(&log, "configuration reloaded", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed across the SIGHUPs"
    );
    assert!(ok.load(Ordering::Relaxed) > 50, "the load ran");
    let reloaded = log_of(&log).matches("configuration reloaded").count();
    assert!(reloaded >= 1, "no reload logged");

    // The file's node settings and its `file:` secret take effect on the next SIGHUP.
    std::fs::write(dir.join("acme.key"), format!("{NEW_KEY}\n")).unwrap();
    std::fs::write(&file, node_file(&dir, proxy, admin, "10B")).unwrap();
    hup(&node);
    log_shows(&log, "configuration reloaded", reloaded + 1).await;
    assert_eq!(
        call(&cl, proxy, NEW_KEY, "small").await,
        200,
        "the rotated key"
    );
    assert_eq!(call(&cl, proxy, OLD_KEY, "small").await, 401, "the old key");
    assert_eq!(
        call(&cl, proxy, NEW_KEY, "a body longer than ten bytes").await,
        413,
        "the file's new limits.max_body_size"
    );

    // A broken edit is refused with every error; the running settings stay.
    std::fs::write(
        &file,
        node_file(&dir, proxy, admin, "10B")
            .replace("workers: 1", "workers: 1\nlimts: {}\naccess_log: sometimes"),
    )
    .unwrap();
    hup(&node);
    log_shows(&log, "configuration rejected", 1).await;
    let text = log_of(&log);
    assert!(
        text.contains("limts"),
        "the unknown field is named:\n{text}"
    );
    assert_eq!(call(&cl, proxy, NEW_KEY, "small").await, 200);
    // The admin API's status (the console's overview) shows the refusal with its errors.
    let api = common::admin::api_as(
        &format!("http://127.0.0.1:{admin}"),
        "admin",
        common::admin::PASSWORD,
    )
    .await;
    let status = api.call(http::Method::GET, "/api/v1/status").await.json();
    let last = &status["last_reload"];
    assert_eq!(last["ok"], false, "{status}");
    assert_eq!(last["cause"], "SIGHUP");
    assert!(last["errors"].to_string().contains("limts"), "{status}");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));

    // A listener edit waits for a restart, named in one warning; the rest applies.
    let other = free_port();
    std::fs::write(
        &file,
        node_file(&dir, other, admin, "1KiB").replace("workers: 1", "workers: 2"),
    )
    .unwrap();
    hup(&node);
    log_shows(&log, "take effect only after a restart", 1).await;
    let text = log_of(&log);
    let warning = text
        .lines()
        .find(|l| l.contains("take effect only after a restart"))
        .unwrap();
    assert!(
        warning.contains("listen.proxy") && warning.contains("workers"),
        "{warning}"
    );
    log_shows(&log, "configuration reloaded", reloaded + 2).await;
    assert_eq!(
        call(&cl, proxy, NEW_KEY, "a body longer than ten bytes").await,
        200,
        "the new limit applied on the running listener"
    );
    assert!(
        !log_of(&log).contains('\x1b'),
        "a log written to a file holds no colour codes"
    );
    let _ = std::fs::remove_dir_all(dir);
}
