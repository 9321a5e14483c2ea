//! Shared helpers for the integration tests: start the assembled gateway in-process on
//! free loopback ports from a YAML snippet.
#![allow(dead_code)]

pub mod admin;
pub mod ai;
pub mod chaos;
pub mod events;
pub mod ledger;

use std::time::{Duration, Instant};

use weir_proxy::app::{ReloadSources, Running, start};

#[allow(unused_imports)]
pub use weir_testkit::{Behavior, HttpClient, MockUpstream, free_port, raw_request};

/// Starts Weir with `body` (YAML without `listen`), on fresh ports, access log off.
pub fn gateway(body: &str) -> Running {
    gateway_with(body, ReloadSources::default())
}

pub fn gateway_with(body: &str, sources: ReloadSources) -> Running {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let yaml = format!(
        "listen:\n  proxy: 127.0.0.1:0\n  admin: 127.0.0.1:0\nworkers: 2\naccess_log: off\n{body}"
    );
    let cfg = weir_config::from_yaml(&yaml, "test").expect("test config parses");
    start(cfg, sources).expect("gateway starts")
}

pub fn url(r: &Running, path: &str) -> String {
    format!("http://{}{}", r.proxy_addr, path)
}

pub fn admin(r: &Running, path: &str) -> String {
    format!("http://{}{}", r.admin_addr.expect("admin listener"), path)
}

/// An upstream block with the given targets.
pub fn upstream(name: &str, addrs: &[String], extra: &str) -> String {
    let targets: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ address: \"{a}\" }}"))
        .collect();
    format!("  {name}:\n    targets: [{}]\n{extra}", targets.join(", "))
}

pub async fn eventually<F: Fn() -> bool>(what: &str, timeout: Duration, f: F) {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Starts Weir from a complete YAML document.
pub fn gateway_raw(yaml: &str) -> Running {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = weir_config::from_yaml(yaml, "test").expect("test config parses");
    start(cfg, ReloadSources::default()).expect("gateway starts")
}

/// A fresh temporary directory, removed by the caller when wanted.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "weir-test-{tag}-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A name no other test (or earlier run) uses: for routes, Redis keys, topics.
pub fn unique(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}-{}-{}-{n}", std::process::id(), fastrand_suffix())
}

fn fastrand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A child process killed when dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something listens on the loopback port.
pub async fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        // A connection to itself (the kernel picked the port being dialled as the local
        // one: TCP simultaneous open) is not a listener.
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
            && s.local_addr().ok() != s.peer_addr().ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("port {port} never opened");
}

/// A Redis server of a test's own, stopped and started at will. With a directory it keeps
/// an append-only file fsynced on every write (as a queue needs) and reloads it on start.
pub struct OwnRedis {
    pub port: u16,
    proc: Option<Proc>,
}

impl OwnRedis {
    pub async fn start(port: u16) -> Self {
        Self::start_in(port, None).await
    }

    pub async fn start_in(port: u16, dir: Option<&std::path::Path>) -> Self {
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ]);
        match dir {
            Some(d) => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(d);
            }
            None => {
                cmd.args(["--appendonly", "no"]);
            }
        }
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/services.sh names the package)");
        wait_port(port).await;
        Self {
            port,
            proc: Some(Proc(child)),
        }
    }

    pub fn stop(&mut self) {
        self.proc = None;
    }
}

/// A database of its own on the machine's Postgres.
pub async fn fresh_postgres(tag: &str) -> String {
    use sqlx::Connection;
    let name = unique(tag).replace('-', "_");
    let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/test")
        .await
        .expect("Postgres on 127.0.0.1:5432 (scripts/services.sh starts it)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

pub async fn drop_postgres(url: &str) {
    use sqlx::Connection;
    let name = url.rsplit('/').next().unwrap();
    let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/test")
        .await
        .unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
}

/// The real binary serving `file` (with `args` before `--config`), its stderr written to
/// `log` and `env` set.
pub fn serve_logged(
    file: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    log: &std::path::Path,
) -> Proc {
    Proc(
        std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("serve")
            .args(args)
            .arg("--config")
            .arg(file)
            .env_remove("WEIR_CONFIG")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).expect("the log file"))
            .spawn()
            .expect("weir starts"),
    )
}
