//! Several nodes on one Postgres: every change reaches every node within a second, a bad
//! write is refused on each, and stopping Postgres (a server of the test's own) leaves
//! traffic flowing while the API says why.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::admin::*;
use common::*;
use http::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_share_every_change_within_a_second() {
    let up = MockUpstream::start(Behavior::Named("shared".into())).await;
    let url = fresh_postgres("weir_cluster").await;
    let store = format!("store: \"{url}\"\n");
    // Each node keeps its own files (the embedded event queue) in a directory of its own.
    let own = |tag: &str| format!("{store}data_dir: {}\n", temp_dir(tag).display());
    let (a, base_a) = node(&own("cluster-a"), first_admin()).await;
    let (b, base_b) = node(&own("cluster-b"), first_admin()).await;
    let api_a = api_as(&base_a, "admin", PASSWORD).await;
    let api_b = api_as(&base_b, "admin", PASSWORD).await;
    api_a
        .send(
            Method::POST,
            "/api/v1/upstreams",
            json!({ "name": "s", "targets": [ { "address": up.address() } ] }),
        )
        .await;
    let r = api_a
        .send(
            Method::POST,
            "/api/v1/routes",
            json!({ "name": "shared", "upstream": "s", "match": { "paths": ["/shared"] } }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let written = std::time::Instant::now();
    let on_b = format!("http://{}/shared", b.running.proxy_addr);
    let cl = HttpClient::new();
    loop {
        if cl.get(&on_b).await.status == 200 {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(1),
            "node B did not serve the route within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "route created on A served by B after {:?}",
        written.elapsed()
    );
    // Both report the version they serve.
    let sa = api_a.call(Method::GET, "/api/v1/status").await.json();
    let sb = api_b.call(Method::GET, "/api/v1/status").await.json();
    assert_eq!(sa["serving_version"], sb["serving_version"]);
    // A bad write is refused on either node.
    for api in [&api_a, &api_b] {
        let r = api
            .send(
                Method::POST,
                "/api/v1/routes",
                json!({ "name": "bad", "upstream": "missing" }),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    a.shutdown().await;
    b.shutdown().await;
    drop_postgres(&url).await;
}

/// A Postgres server of the test's own (the shared one is never stopped), run as the
/// `postgres` user from the machine's binaries.
struct OwnPostgres {
    dir: std::path::PathBuf,
    port: u16,
    bin: std::path::PathBuf,
}

/// Runs a PostgreSQL binary as the `postgres` user (the server refuses root); whether it
/// succeeded.
fn as_postgres(program: &std::path::Path, args: &[&str]) -> bool {
    std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl OwnPostgres {
    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL binaries under /usr/lib/postgresql")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("initdb");
        let dir = temp_dir("own-pg");
        std::process::Command::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .status()
            .unwrap();
        let data = dir.join("data");
        let args = [
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
        ];
        assert!(as_postgres(&bin.join("initdb"), &args), "initdb {args:?}");
        let pg = Self {
            dir,
            port: free_port(),
            bin,
        };
        pg.up();
        pg
    }

    /// `pg_ctl -D DATA -w ARGS`; whether it succeeded.
    fn ctl(&self, args: &[&str]) -> bool {
        let data = self.dir.join("data");
        let mut all = vec!["-D", data.to_str().unwrap(), "-w"];
        all.extend_from_slice(args);
        as_postgres(&self.bin.join("pg_ctl"), &all)
    }

    fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("pg.log");
        assert!(
            self.ctl(&["-o", &opts, "-l", log.to_str().unwrap(), "start"]),
            "pg_ctl start"
        );
    }

    fn down(&self) {
        assert!(self.ctl(&["-m", "immediate", "stop"]), "pg_ctl stop");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.ctl(&["-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_postgres_leaves_both_nodes_serving_and_the_api_says_why() {
    let up = MockUpstream::start(Behavior::Named("still".into())).await;
    let pg = OwnPostgres::start();
    let store = format!("store: \"{}\"\n", pg.url());
    // Each node keeps its own files (the embedded event queue) in a directory of its own.
    let own = |tag: &str| format!("{store}data_dir: {}\n", temp_dir(tag).display());
    let (a, base_a) = node(&own("cluster-a"), first_admin()).await;
    let (b, base_b) = node(&own("cluster-b"), first_admin()).await;
    let api_a = api_as(&base_a, "admin", PASSWORD).await;
    api_a
        .send(
            Method::POST,
            "/api/v1/upstreams",
            json!({ "name": "s", "targets": [ { "address": up.address() } ] }),
        )
        .await;
    let r = api_a
        .send(
            Method::POST,
            "/api/v1/routes",
            json!({ "name": "still", "upstream": "s", "match": { "paths": ["/still"] } }),
        )
        .await;
    assert_eq!(r.status, 201);
    let cl = HttpClient::new();
    let on = |n: &weir::Node| format!("http://{}/still", n.running.proxy_addr);
    eventually_async(|| async { cl.get(&on(&b)).await.status == 200 }).await;

    pg.down();
    for _ in 0..20 {
        assert_eq!(cl.get(&on(&a)).await.status, 200, "node A serves on");
        assert_eq!(cl.get(&on(&b)).await.status, 200, "node B serves on");
    }
    let started = std::time::Instant::now();
    let r = api_a
        .send(
            Method::POST,
            "/api/v1/routes",
            json!({ "name": "new", "upstream": "s" }),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "store_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the API answers promptly"
    );
    let api_b = Api {
        base: base_b.clone(),
        token: api_a.token.clone(),
        cl: HttpClient::new(),
    };
    assert_eq!(api_b.call(Method::GET, "/api/v1/routes").await.status, 503);

    // Back: writes work again and reach both nodes.
    pg.up();
    let mut ok = false;
    for _ in 0..50 {
        let r = api_a
            .send(
                Method::POST,
                "/api/v1/routes",
                json!({ "name": "after", "upstream": "s", "match": { "paths": ["/after"] } }),
            )
            .await;
        if r.status == 201 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "writes resume when Postgres is back");
    let after_b = format!("http://{}/after", b.running.proxy_addr);
    eventually_async(|| async { cl.get(&after_b).await.status == 200 }).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Waits up to 5 s for `f` to hold.
async fn eventually_async<F, Fut>(f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..250 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached within 5 s");
}
