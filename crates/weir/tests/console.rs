//! The web console: served by the node with its security headers; first run with a setup
//! token (never a default password); writes on the session cookie need the CSRF token and
//! the same origin; a role change ends the account's sessions. Then the real binary driven
//! by Debian's Chromium through Selenium (`tests/clients/console_browser.py`).

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use bytes::Bytes;
use common::admin::*;
use common::*;
use http::Method;
use serde_json::{Value, json};
use weir_testkit::client::Reply;

const NO_ADMIN: weir::FirstAdmin = weir::FirstAdmin {
    user: None,
    password: None,
};

async fn post(base: &str, path: &str, headers: &[(&str, &str)], body: Value) -> Reply {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    HttpClient::new()
        .request(
            Method::POST,
            &format!("{base}{path}"),
            &h,
            Bytes::from(body.to_string()),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_a_strict_policy() {
    let dir = temp_dir("console-page");
    let (node, base) = node(&sqlite_store(&dir), first_admin()).await;
    let cl = HttpClient::new();
    let r = cl.get(&format!("{base}/")).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("/console/app.js"));
    let csp = r.headers["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(r.headers["x-frame-options"], "DENY");
    let js = cl.get(&format!("{base}/console/app.js")).await;
    assert_eq!(js.status, 200);
    assert!(
        js.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    // Revalidation answers 304 without the body.
    let etag = js.headers["etag"].to_str().unwrap().to_owned();
    let again = cl
        .request(
            Method::GET,
            &format!("{base}/console/app.js"),
            &[("if-none-match", etag.as_str())],
            Bytes::new(),
        )
        .await;
    assert_eq!(again.status, 304);
    assert_eq!(cl.get(&format!("{base}/console/nope.js")).await.status, 404);
    // The forms' source: each kind's body is one object schema, documented field by field.
    let text = cl.get(&format!("{base}/api/v1/openapi.json")).await.text();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let up = &doc["components"]["schemas"]["Upstream"];
    let fields: Vec<&String> = up["properties"].as_object().unwrap().keys().collect();
    // As served, `name` comes first and the rest keep their declared order.
    let served = &text[text.find("\"Upstream\":").unwrap()..];
    assert!(served.find("\"name\"").unwrap() < served.find("\"targets\"").unwrap());
    assert!(fields.iter().any(|f| *f == "targets"));
    assert_eq!(up["additionalProperties"], false);
    assert!(up["properties"]["targets"]["description"].is_string());
    assert_eq!(
        doc["paths"]["/api/v1/routes"]["post"]["requestBody"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/RouteConfig"
    );
    // What the overview and an upstream's page read: the node, and live target health.
    let admin = api_as(&base, "admin", PASSWORD).await;
    let status = admin.call(Method::GET, "/api/v1/status").await.json();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["node"].as_str().is_some_and(|n| !n.is_empty()));
    let up = json!({ "name": "pool", "targets": [{ "address": "127.0.0.1:9", "weight": 3 }] });
    assert_eq!(
        admin
            .send(Method::POST, "/api/v1/upstreams", up)
            .await
            .status,
        201
    );
    let health = admin
        .call(Method::GET, "/api/v1/upstreams/pool/health")
        .await;
    assert_eq!(health.status, 200, "{}", health.text());
    let t = &health.json()[0];
    assert_eq!(t["address"], "127.0.0.1:9");
    assert_eq!(t["weight"], 3);
    assert_eq!(t["circuit"], "closed");
    assert_eq!(
        admin
            .call(Method::GET, "/api/v1/upstreams/nope/health")
            .await
            .status,
        404
    );
    // The node's own endpoints stay where they were.
    assert_eq!(cl.get(&format!("{base}/livez")).await.status, 200);
    assert_eq!(cl.get(&format!("{base}/metrics")).await.status, 200);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_admin_comes_from_a_private_setup_token() {
    let dir = temp_dir("console-setup");
    let (node, base) = node(&sqlite_store(&dir), NO_ADMIN).await;
    let file = dir.join("setup-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only Weir's user may read the token");
    }
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    let cl = HttpClient::new();
    let state = cl.get(&format!("{base}/api/v1/setup")).await.json();
    assert_eq!(state["needed"], true);
    assert!(state.to_string().contains("setup-token") && !state.to_string().contains(&token));
    // No default password: nobody can log in before setup.
    assert_eq!(login(&base, "admin", "admin").await.status, 401);

    let wrong = post(
        &base,
        "/api/v1/setup",
        &[],
        json!({ "token": "wst_guess", "username": "root", "password": "a-long-password-1" }),
    )
    .await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    let weak = post(
        &base,
        "/api/v1/setup",
        &[],
        json!({ "token": token, "username": "root", "password": "short" }),
    )
    .await;
    assert_eq!(weak.status, 400, "{}", weak.text());
    let ok = post(
        &base,
        "/api/v1/setup",
        &[],
        json!({ "token": token, "username": "root", "password": "a-long-password-1" }),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["role"], "admin");
    assert!(!file.exists(), "the spent token's file is removed");
    let again = post(
        &base,
        "/api/v1/setup",
        &[],
        json!({ "token": token, "username": "other", "password": "a-long-password-1" }),
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(
        cl.get(&format!("{base}/api/v1/setup")).await.json()["needed"],
        false
    );
    assert_eq!(login(&base, "root", "a-long-password-1").await.status, 200);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_setup_token_goes_once_an_account_exists_another_way() {
    // An account made by the CLI while the node waits for setup ends the setup.
    let dir = temp_dir("console-setup-cli");
    let (waiting, base) = node(&sqlite_store(&dir), NO_ADMIN).await;
    assert!(dir.join("setup-token").exists());
    let store = waiting.control.as_ref().unwrap().store().clone();
    let hash = weir_control::hash_password("a-long-password-1".to_owned())
        .await
        .unwrap();
    store
        .create_user("cli", "ops", &hash, "admin")
        .await
        .unwrap();
    let state = HttpClient::new().get(&format!("{base}/api/v1/setup")).await;
    assert_eq!(state.json()["needed"], false);
    assert!(!dir.join("setup-token").exists());
    waiting.shutdown().await;

    // A token file left from before is removed when a node starts with an account.
    let dir = temp_dir("console-setup-left");
    let (first, _) = node(&sqlite_store(&dir), NO_ADMIN).await;
    first.shutdown().await;
    assert!(dir.join("setup-token").exists());
    let (second, _) = node(&sqlite_store(&dir), first_admin()).await;
    assert!(
        !dir.join("setup-token").exists(),
        "a leftover token file stays"
    );
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_writes_need_the_csrf_token_and_the_same_origin() {
    let dir = temp_dir("console-csrf");
    let (node, base) = node(&sqlite_store(&dir), first_admin()).await;
    let r = login(&base, "admin", PASSWORD).await;
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let csrf = r.json()["csrf_token"].as_str().unwrap().to_owned();
    let host = base.trim_start_matches("http://").to_owned();
    let up = |n: &str| json!({ "name": n, "targets": [{ "address": "127.0.0.1:9" }] });

    let bare = post(&base, "/api/v1/upstreams", &[("cookie", &session)], up("a")).await;
    assert_eq!(bare.status, 403, "{}", bare.text());
    assert!(bare.text().contains("X-CSRF-Token"));
    let forged = post(
        &base,
        "/api/v1/upstreams",
        &[("cookie", &session), ("x-csrf-token", "0000")],
        up("a"),
    )
    .await;
    assert_eq!(forged.status, 403);
    let origin = format!("http://{host}");
    let good = post(
        &base,
        "/api/v1/upstreams",
        &[
            ("cookie", &session),
            ("x-csrf-token", &csrf),
            ("origin", &origin),
        ],
        up("a"),
    )
    .await;
    assert_eq!(good.status, 201, "{}", good.text());
    // Another origin is refused even with the token (and even with a bearer token).
    let cross = post(
        &base,
        "/api/v1/upstreams",
        &[
            ("cookie", &session),
            ("x-csrf-token", &csrf),
            ("origin", "http://evil.example"),
        ],
        up("b"),
    )
    .await;
    assert_eq!(cross.status, 403);
    let fetch_site = post(
        &base,
        "/api/v1/upstreams",
        &[
            ("cookie", &session),
            ("x-csrf-token", &csrf),
            ("sec-fetch-site", "cross-site"),
        ],
        up("b"),
    )
    .await;
    assert_eq!(fetch_site.status, 403);
    // The session endpoint gives the token back to a reloaded page.
    let cl = HttpClient::new();
    let s = cl
        .request(
            Method::GET,
            &format!("{base}/api/v1/session"),
            &[("cookie", session.as_str())],
            Bytes::new(),
        )
        .await;
    assert_eq!(s.status, 200);
    assert_eq!(s.json()["csrf_token"], csrf.as_str());
    assert_eq!(s.json()["role"], "admin");
    // Behind a TLS proxy the cookie is Secure.
    let tls = post(
        &base,
        "/api/v1/login",
        &[("x-forwarded-proto", "https")],
        json!({ "username": "admin", "password": PASSWORD }),
    )
    .await;
    assert!(
        tls.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_ends_the_accounts_sessions() {
    let dir = temp_dir("console-role");
    let (node, base) = node(&sqlite_store(&dir), first_admin()).await;
    let admin = api_as(&base, "admin", PASSWORD).await;
    let r = admin
        .send(
            Method::POST,
            "/api/v1/users",
            json!({ "username": "eve", "password": "eve-password-123", "role": "editor" }),
        )
        .await;
    assert_eq!(r.status, 201);
    let eve = api_as(&base, "eve", "eve-password-123").await;
    assert_eq!(eve.call(Method::GET, "/api/v1/session").await.status, 200);
    let r = admin
        .send(
            Method::PUT,
            "/api/v1/users/eve/role",
            json!({ "role": "viewer" }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(eve.call(Method::GET, "/api/v1/session").await.status, 401);
    let eve = api_as(&base, "eve", "eve-password-123").await;
    assert_eq!(
        eve.call(Method::GET, "/api/v1/session").await.json()["role"],
        "viewer"
    );
    // The same role again is no change: no session ends.
    let r = admin
        .send(
            Method::PUT,
            "/api/v1/users/admin/role",
            json!({ "role": "admin" }),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(admin.call(Method::GET, "/api/v1/session").await.status, 200);
    // The last admin keeps the role.
    let r = admin
        .send(
            Method::PUT,
            "/api/v1/users/admin/role",
            json!({ "role": "editor" }),
        )
        .await;
    assert_eq!(r.status, 409);
    let audit = admin.call(Method::GET, "/api/v1/audit").await.text();
    assert!(audit.contains("\"update\""), "{audit}");
    node.shutdown().await;
}

#[test]
fn an_exposed_admin_listener_is_warned_about() {
    let dir = temp_dir("console-exposed");
    let port = free_port();
    let cfg = dir.join("weir.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: {{ proxy: 127.0.0.1:0, admin: 0.0.0.0:{port} }}\nworkers: 1\naccess_log: off\nstore: sqlite://weir.db\ndata_dir: {}\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("WEIR_ADMIN_PASSWORD", PASSWORD)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(wait_port(port));
    let base = format!("http://127.0.0.1:{port}");
    let warnings = rt.block_on(async {
        let a = api_as(&base, "admin", PASSWORD).await;
        a.call(Method::GET, "/api/v1/session").await.json()["warnings"].clone()
    });
    let _ = child.kill();
    let _ = child.wait();
    let log = reader.join().unwrap();
    assert!(
        warnings.to_string().contains("plain HTTP"),
        "the console shows it: {warnings}"
    );
    assert!(
        log.contains("console:") && log.contains("plain HTTP"),
        "{log}"
    );
}

/// The real binary on a fresh store, driven in Debian's Chromium (headless, through
/// chromedriver; `scripts/test` installs both, Selenium and axe-core). Screenshots of each
/// page land in the target directory's `tmp/console-screenshots`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let dir = temp_dir("console-browser");
    let upstream = MockUpstream::start(Behavior::Named("shop".into())).await;
    let (proxy, admin, hook) = (free_port(), free_port(), free_port());
    let axe = std::env::var("WEIR_AXE_JS").expect(
        "WEIR_AXE_JS names axe-core's axe.min.js (scripts/test installs axe-core with npm and sets it)",
    );
    let cfg = dir.join("weir.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: {{ proxy: 127.0.0.1:{proxy}, admin: 127.0.0.1:{admin} }}\nworkers: 1\naccess_log: off\nstore: sqlite://weir.db\ndata_dir: {}\n\
             topics:\n  orders: {{}}\nsubscriptions:\n  - {{ name: hooks, topic: orders, endpoint: \"http://127.0.0.1:{hook}/hook\", retry: {{ schedule: [1s], max_age: 1h }} }}\n",
            dir.display()
        ),
    )
    .unwrap();
    let _weir = Proc(
        std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .env_remove("WEIR_ADMIN_PASSWORD")
            .env("WEIR_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("weir.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_port(admin).await;
    let token = std::fs::read_to_string(dir.join("setup-token")).unwrap();
    let log = std::fs::read_to_string(dir.join("weir.log")).unwrap();
    assert!(
        log.contains("setup-token") && !log.contains(token.trim()),
        "the log names the token's file, never the token: {log}"
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/console_browser.py"
    );
    let artifacts = concat!(env!("CARGO_TARGET_TMPDIR"), "/console-screenshots");
    let args = [
        script.to_owned(),
        format!("http://127.0.0.1:{admin}"),
        format!("http://127.0.0.1:{proxy}"),
        dir.join("setup-token").display().to_string(),
        upstream.address(),
        artifacts.to_owned(),
        hook.to_string(),
        axe,
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(&args)
            .output()
            .expect("python3 runs (scripts/test installs selenium, chromium and chromium-driver)")
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "the browser checks failed:\n{stdout}\n{stderr}"
    );
    let log = std::fs::read_to_string(dir.join("weir.log")).unwrap();
    for secret in [
        token.trim(),
        "console-admin-password-1",
        "viewer-password-12",
    ] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}
