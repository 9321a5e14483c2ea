//! The real `weir` binary in database mode: `weir admin create-user`, `weir config apply`
//! (plan, dry run, apply), `weir config export`, and a kill -9 that loses no acknowledged
//! write.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use common::*;
use http::Method;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_weir");
const PASSWORD: &str = "operator-password-1";

fn weir(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("WEIR_LOG", "warn")
        .env_remove("WEIR_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn write_node_config(dir: &Path, proxy: u16, admin: u16) -> std::path::PathBuf {
    let file = dir.join("node.yaml");
    std::fs::write(
        &file,
        format!(
            "listen: {{ proxy: 127.0.0.1:{proxy}, admin: 127.0.0.1:{admin} }}\nworkers: 1\naccess_log: off\nstore: sqlite://weir.db\ndata_dir: {}\n",
            dir.display()
        ),
    )
    .unwrap();
    file
}

/// Makes the account `ops` (with [`PASSWORD`]) in the node's store through the CLI.
fn create_ops(node_cfg: &Path) {
    let config = node_cfg.to_str().unwrap();
    let args = [
        "admin",
        "create-user",
        "--config",
        config,
        "--username",
        "ops",
    ];
    let out = weir(&args, &format!("{PASSWORD}\n"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn serve(config: &Path) -> Proc {
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("WEIR_LOG", "warn")
        .env_remove("WEIR_CONFIG")
        .env_remove("WEIR_ADMIN_PASSWORD")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

async fn login_token(admin: u16) -> String {
    // The listener opens a moment before the API is mounted on it.
    let cl = HttpClient::new();
    let doc = format!("http://127.0.0.1:{admin}/api/v1/openapi.json");
    for _ in 0..100 {
        if cl.get(&doc).await.status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = HttpClient::new()
        .request(
            Method::POST,
            &format!("http://127.0.0.1:{admin}/api/v1/login"),
            &[("content-type", "application/json")],
            Bytes::from(json!({ "username": "ops", "password": PASSWORD }).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_user_then_plan_apply_and_export_through_the_cli() {
    let up = MockUpstream::start(Behavior::Named("cli".into())).await;
    let dir = temp_dir("cli-admin");
    let (proxy, admin) = (free_port(), free_port());
    let node_cfg = write_node_config(&dir, proxy, admin);

    let out = weir(
        &[
            "admin",
            "create-user",
            "--config",
            node_cfg.to_str().unwrap(),
            "--username",
            "ops",
        ],
        "short\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "a short password is refused");
    create_ops(&node_cfg);

    let _node = serve(&node_cfg);
    wait_port(admin).await;
    let token = login_token(admin).await;
    let url = format!("http://127.0.0.1:{admin}");
    let env = [
        ("WEIR_API_URL", url.as_str()),
        ("WEIR_API_TOKEN", token.as_str()),
    ];

    let desired = dir.join("desired.yaml");
    std::fs::write(
        &desired,
        format!(
            "upstreams:\n  app: {{ targets: [ {{ address: \"{}\" }} ] }}\nroutes:\n  - {{ name: app, upstream: app, match: {{ paths: [\"/app/*\"] }} }}\n  - {{ name: health, upstream: app, match: {{ paths: [\"/health\"] }} }}\n",
            up.address()
        ),
    )
    .unwrap();
    let plan = weir(
        &["config", "apply", desired.to_str().unwrap(), "--dry-run"],
        "",
        &env,
    );
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(
        text.contains("+ upstreams/app") && text.contains("+ routes/health"),
        "{text}"
    );
    assert!(text.contains("dry run"), "{text}");
    let cl = HttpClient::new();
    assert_eq!(
        cl.get(&format!("http://127.0.0.1:{proxy}/app/x"))
            .await
            .status,
        404,
        "a dry run changes nothing"
    );

    let applied = weir(&["config", "apply", desired.to_str().unwrap()], "", &env);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert!(String::from_utf8_lossy(&applied.stdout).contains("applied: 3 created"));
    assert_eq!(
        cl.get(&format!("http://127.0.0.1:{proxy}/app/x"))
            .await
            .status,
        200
    );

    // Drop one route: the plan deletes it; applying twice is a no-op.
    std::fs::write(
        &desired,
        format!(
            "upstreams:\n  app: {{ targets: [ {{ address: \"{}\" }} ] }}\nroutes:\n  - {{ name: app, upstream: app, match: {{ paths: [\"/app/*\"] }} }}\n",
            up.address()
        ),
    )
    .unwrap();
    let applied = weir(&["config", "apply", desired.to_str().unwrap()], "", &env);
    let text = String::from_utf8_lossy(&applied.stdout).into_owned();
    assert!(
        text.contains("- routes/health") && text.contains("2 unchanged"),
        "{text}"
    );
    let again = weir(&["config", "apply", desired.to_str().unwrap()], "", &env);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to change"));

    // An invalid file is refused with its errors, and nothing changes.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "routes:\n  - { name: app, upstream: missing }\n").unwrap();
    let out = weir(&["config", "apply", bad.to_str().unwrap()], "", &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("routes[app].upstream"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        cl.get(&format!("http://127.0.0.1:{proxy}/app/x"))
            .await
            .status,
        200
    );

    let export = weir(&["config", "export"], "", &env);
    assert!(export.status.success());
    let yaml = String::from_utf8_lossy(&export.stdout).into_owned();
    let back =
        weir_config::from_yaml(&yaml, "export").expect("the export parses as a configuration");
    assert_eq!(back.routes.len(), 1);
    assert_eq!(back.routes[0].name, "app");

    // Routes from an OpenAPI document, one per operation.
    let spec = dir.join("petstore.yaml");
    std::fs::write(
        &spec,
        "openapi: 3.0.3\ninfo: { title: pets, version: '1' }\npaths:\n  /pets:\n    get: { operationId: listPets }\n  /pets/{petId}:\n    get: { operationId: showPetById }\n",
    )
    .unwrap();
    let out = weir(
        &[
            "config",
            "import-openapi",
            spec.to_str().unwrap(),
            "--upstream",
            "app",
            "--prefix",
            "/store",
        ],
        "",
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 routes written"));
    assert_eq!(
        cl.get(&format!("http://127.0.0.1:{proxy}/store/pets"))
            .await
            .status,
        200
    );
    assert_eq!(
        cl.get(&format!("http://127.0.0.1:{proxy}/store/pets/42"))
            .await
            .status,
        200
    );
    assert_eq!(
        cl.get(&format!("http://127.0.0.1:{proxy}/store/pets/42/x"))
            .await
            .status,
        404
    );
    let r = cl
        .request(
            Method::POST,
            &format!("http://127.0.0.1:{proxy}/store/pets"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_ne!(r.status, 200, "only the documented method is routed");
    // A declarative apply of a file without them would delete them, and its plan says so.
    let plan = weir(
        &["config", "apply", desired.to_str().unwrap(), "--dry-run"],
        "",
        &env,
    );
    assert!(String::from_utf8_lossy(&plan.stdout).contains("- routes/listPets"));

    // Without a token: a clear refusal.
    let out = weir(&["config", "export"], "", &[("WEIR_API_URL", url.as_str())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WEIR_API_TOKEN"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = temp_dir("cli-kill9");
    let (proxy, admin) = (free_port(), free_port());
    let node_cfg = write_node_config(&dir, proxy, admin);
    let out = weir(
        &[
            "admin",
            "create-user",
            "--config",
            node_cfg.to_str().unwrap(),
            "--username",
            "ops",
        ],
        &format!("{PASSWORD}\n"),
        &[],
    );
    assert!(out.status.success());
    let mut node = serve(&node_cfg);
    wait_port(admin).await;
    let token = login_token(admin).await;
    let cl = HttpClient::new();
    let auth = format!("Bearer {token}");
    let mut acknowledged = 0;
    for i in 0..25 {
        let r = cl
            .request(
                Method::POST,
                &format!("http://127.0.0.1:{admin}/api/v1/upstreams"),
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ],
                Bytes::from(
                    json!({ "name": format!("u{i}"), "targets": [ { "address": "127.0.0.1:9" } ] })
                        .to_string(),
                ),
            )
            .await;
        assert_eq!(r.status, 201);
        acknowledged += 1;
    }
    // SIGKILL right after the last acknowledgement.
    node.0.kill().unwrap();
    node.0.wait().unwrap();
    let _node = serve(&node_cfg);
    wait_port(admin).await;
    let token = login_token(admin).await;
    let r = cl
        .request(
            Method::GET,
            &format!("http://127.0.0.1:{admin}/api/v1/upstreams?limit=500"),
            &[("authorization", &format!("Bearer {token}"))],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), acknowledged);
    let _ = std::fs::remove_dir_all(dir);
}

/// `weir login` keeps a session (file mode 0600) that the other commands use; `weir keys`
/// issues, lists (table, JSON and YAML; never a key) and revokes by name; `weir logout`
/// ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_then_keys_issue_list_and_revoke_through_the_cli() {
    let dir = temp_dir("cli-login");
    let (proxy, admin) = (free_port(), free_port());
    let node_cfg = write_node_config(&dir, proxy, admin);
    create_ops(&node_cfg);
    let _node = serve(&node_cfg);
    wait_port(admin).await;
    let url = format!("http://127.0.0.1:{admin}");
    let creds = dir.join("home").join("credentials.json");
    let env = [
        ("WEIR_API_URL", url.as_str()),
        ("WEIR_CREDENTIALS", creds.to_str().unwrap()),
    ];
    // Not logged in: the API refuses and the CLI says how to log in.
    let out = weir(&["keys", "list", "acme"], "", &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("weir login"),
        "{out:?}"
    );
    let out = weir(
        &["login", "--username", "ops"],
        "wrong-password-123\n",
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = weir(
        &["login", "--username", "ops"],
        &format!("{PASSWORD}\n"),
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&creds).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the session file is the owner's only");
    assert!(!std::fs::read_to_string(&creds).unwrap().contains(PASSWORD));

    let cl = HttpClient::new();
    let api = |path: &str| format!("{url}{path}");
    let token = login_token(admin).await;
    let auth = format!("Bearer {token}");
    let r = cl
        .request(
            Method::POST,
            &api("/api/v1/consumers"),
            &[("content-type", "application/json"), ("authorization", &auth)],
            Bytes::from(json!({ "name": "acme", "credentials": [ { "type": "key", "key": "acme-literal-key-000001" } ] }).to_string()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let out = weir(&["keys", "issue", "acme", "--name", "ci"], "", &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let out = weir(&["keys", "list", "acme", "-o", "table"], "", &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("INDEX  TYPE"), "{table}");
    assert!(
        lines[1].starts_with("0      key") && lines[1].contains('…'),
        "{table}"
    );
    assert!(
        lines[2].starts_with("1      key   ci") && lines[2].contains('…'),
        "{table}"
    );
    assert!(!table.contains(&key), "a key is never shown again");
    assert!(!table.contains("acme-literal-key"), "{table}");
    let out = weir(&["keys", "list", "acme", "-o", "json"], "", &env);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[1]["name"], "ci");
    let out = weir(&["keys", "list", "acme", "-o", "yaml"], "", &env);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("name: ci"),
        "{out:?}"
    );
    // Not a terminal: JSON by default, for scripts.
    let out = weir(&["keys", "list", "acme"], "", &env);
    assert!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok(),
        "{out:?}"
    );

    let out = weir(&["keys", "revoke", "acme", "nope"], "", &env);
    assert_eq!(out.status.code(), Some(1));
    let out = weir(&["keys", "revoke", "acme", "ci"], "", &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = weir(&["keys", "list", "acme", "-o", "json"], "", &env);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");

    let out = weir(&["logout"], "", &env);
    assert!(out.status.success(), "{out:?}");
    let out = weir(&["keys", "list", "acme"], "", &env);
    assert_eq!(out.status.code(), Some(1), "logged out");
    let _ = std::fs::remove_dir_all(dir);
}
