//! The real `weir` binary: --version/--help, `validate` exit codes and messages, the
//! quick start, SIGHUP reload and graceful drain on SIGTERM.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_weir");

fn weir(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("WEIR_LOG", "warn")
        .output()
        .expect("run weir")
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} failed");
}

fn serve(dir: &Path, args: &[&str], proxy: u16, admin: u16) -> Proc {
    let child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env("WEIR_LOG", "info")
        .env("WEIR_LISTEN_PROXY", format!("127.0.0.1:{proxy}"))
        .env("WEIR_LISTEN_ADMIN", format!("127.0.0.1:{admin}"))
        .env("WEIR_ACCESS_LOG", "off")
        .env_remove("WEIR_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir");
    Proc(child)
}

#[test]
fn version_and_help() {
    let out = weir(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = weir(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("serve") && help.contains("validate"),
        "{help}"
    );
    let out = weir(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    for shell in ["bash", "zsh", "fish"] {
        let out = weir(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("validate") && script.contains("events"),
            "{shell}: {script}"
        );
    }
    assert_eq!(weir(&["completions", "tcsh"]).status.code(), Some(2));
    let out = weir(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH weir"),
        "{page}"
    );
    assert!(page.contains("validate"), "{page}");
}

#[test]
fn validate_prints_every_error_with_its_path_and_exits_1() {
    let dir = temp_dir("validate");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "upstreams:\n  orders: { targets: [ { address: \"127.0.0.1:7001\" } ] }\nroutes:\n  - { name: a, upstream: orders }\n  - { name: b, upstream: orders, match: { paths: [/b] } }\n  - { name: c, upstream: ordres, match: { paths: [/c] } }\n  - { name: d, upstream: orders, match: { paths: [x] } }\n",
    )
    .unwrap();
    let out = weir(&["validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routes[2].upstream: no upstream named \"ordres\" (did you mean \"orders\"?)"),
        "{err}"
    );
    assert!(err.contains("routes[3].match.paths[0]"), "{err}");
    assert!(err.contains("2 error(s)"), "{err}");
    let good = dir.join("good.yaml");
    std::fs::write(&good, "upstreams:\n  orders: { targets: [ { address: \"127.0.0.1:7001\" } ] }\nroutes:\n  - { name: a, upstream: orders }\n").unwrap();
    let out = weir(&["validate", "--config", good.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = weir(&[
        "validate",
        "--config",
        dir.join("missing.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    // Parse and type errors: all of them at once, each with its path, line and a hint.
    let typo = dir.join("typo.yaml");
    std::fs::write(
        &typo,
        "upstreams:\n  orders: { targets: [ { address: \"127.0.0.1:7001\" } ] }\nroutes:\n  - name: a\n    upstream: orders\n    stirp_prefix: true\nlimits: { max_body_size: lots }\nworkers: many\n",
    )
    .unwrap();
    let out = weir(&["validate", "--config", typo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "routes[0].stirp_prefix: unknown field (did you mean \"strip_prefix\"?) (line 6)"
        ),
        "{err}"
    );
    assert!(
        err.contains("limits.max_body_size: invalid size \"lots\"") && err.contains("like 1MiB"),
        "{err}"
    );
    assert!(
        err.contains("workers: expected a whole number, got \"many\" (line 8)"),
        "{err}"
    );
    assert!(err.contains("3 error(s)"), "{err}");
    // Like `serve`, `validate` reads ./weir.yaml when no file is named.
    std::fs::copy(&good, dir.join("weir.yaml")).unwrap();
    let out = Command::new(BIN)
        .arg("validate")
        .current_dir(&dir)
        .env_remove("WEIR_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("weir.yaml: valid"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_echoes_requests_and_says_where_it_listens() {
    let dir = temp_dir("quick");
    let (proxy, admin) = (free_port(), free_port());
    let mut p = serve(&dir, &[], proxy, admin);
    wait_port(proxy).await;
    let cl = HttpClient::new();
    let r = cl
        .get(&format!("http://127.0.0.1:{proxy}/hello?who=me"))
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["path"], "/hello");
    assert_eq!(v["query"], "who=me");
    assert_eq!(
        cl.get(&format!("http://127.0.0.1:{admin}/healthz"))
            .await
            .status,
        200
    );
    signal(&p.0, "TERM");
    let out = p.0.wait().unwrap();
    assert!(out.success());
    let mut err = String::new();
    use std::io::Read;
    p.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(
        err.contains(&format!("listening on http://127.0.0.1:{proxy}")),
        "{err}"
    );
    assert!(err.contains("quick start"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_drains_in_flight_requests() {
    let slow = MockUpstream::start(Behavior::Delay(Duration::from_millis(800))).await;
    let dir = temp_dir("signals");
    let path = dir.join("weir.yaml");
    let write = |route: &str| {
        std::fs::write(
            &path,
            format!(
                "upstreams:\n  slow: {{ targets: [ {{ address: \"{}\" }} ] }}\nroutes:\n  - {{ name: r, upstream: slow, match: {{ paths: [\"{route}\"] }} }}\n",
                slow.address()
            ),
        )
        .unwrap()
    };
    write("/one");
    let (proxy, admin) = (free_port(), free_port());
    let p = serve(
        &dir,
        &["--config", path.to_str().unwrap(), "--no-watch"],
        proxy,
        admin,
    );
    wait_port(proxy).await;
    let cl = HttpClient::new();
    assert_eq!(
        cl.get(&format!("http://127.0.0.1:{proxy}/one"))
            .await
            .status,
        200
    );
    write("/two");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        cl.get(&format!("http://127.0.0.1:{proxy}/two"))
            .await
            .status,
        404,
        "--no-watch: only SIGHUP reloads"
    );
    signal(&p.0, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        cl.get(&format!("http://127.0.0.1:{proxy}/two"))
            .await
            .status,
        200
    );

    // SIGTERM while a request is in flight: it completes, then the process exits 0.
    let u = format!("http://127.0.0.1:{proxy}/two");
    let inflight = tokio::spawn(async move { HttpClient::new().get(&u).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut p = p;
    signal(&p.0, "TERM");
    let r = inflight.await.unwrap();
    assert_eq!(r.status, 200, "in-flight request was cut");
    let start = Instant::now();
    loop {
        if let Some(status) = p.0.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "weir did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", proxy))
            .await
            .is_err(),
        "still accepting after shutdown"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The access log is written in batches; a clean stop still writes every line, whole,
/// before the process exits — including those of the last moments before SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_every_access_log_line_before_exit() {
    let up = MockUpstream::start(Behavior::Status(200)).await;
    let dir = temp_dir("access-log-stop");
    let path = dir.join("weir.yaml");
    std::fs::write(
        &path,
        format!(
            "upstreams:\n  u: {{ targets: [ {{ address: \"{}\" }} ] }}\nroutes:\n  - {{ name: r, upstream: u, match: {{ paths: [\"/a/*\"] }} }}\n",
            up.address()
        ),
    )
    .unwrap();
    let log = dir.join("access.log");
    let proxy = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap(), "--no-watch"])
        .current_dir(&dir)
        .env("WEIR_LOG", "warn")
        .env("WEIR_LISTEN_PROXY", format!("127.0.0.1:{proxy}"))
        .env("WEIR_ACCESS_LOG", &log)
        .env_remove("WEIR_CONFIG")
        .env_remove("WEIR_LISTEN_ADMIN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn weir");
    wait_port(proxy).await;
    let cl = HttpClient::new();
    let n = 300;
    for i in 0..n {
        let r = cl.get(&format!("http://127.0.0.1:{proxy}/a/{i}")).await;
        assert_eq!(r.status, 200);
    }
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let mut paths = std::collections::HashSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a whole JSON line");
        assert_eq!(v["status"], 200, "{line}");
        paths.insert(v["path"].as_str().unwrap().to_owned());
    }
    assert_eq!(text.lines().count(), n, "one line per request");
    assert_eq!(paths.len(), n);
    let _ = std::fs::remove_dir_all(dir);
}
