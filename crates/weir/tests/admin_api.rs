//! The admin API through an assembled node (data plane + control plane + a real SQLite
//! store) with a real HTTP client: login, roles, CRUD with ETags that reach the traffic,
//! validation errors with paths, the audit log, persistence across restarts, file mode, the
//! OpenAPI document and hostile bodies.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use bytes::Bytes;
use common::admin::*;
use common::*;
use http::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_written_through_the_api_reach_the_traffic_with_etags_and_audit() {
    let up = MockUpstream::start(Behavior::Named("orders".into())).await;
    let dir = temp_dir("admin-crud");
    let (node, base) = node(&sqlite_store(&dir), first_admin()).await;
    let api = api_as(&base, "admin", PASSWORD).await;
    let proxy = format!("http://{}", node.running.proxy_addr);
    let cl = HttpClient::new();
    assert_eq!(cl.get(&format!("{proxy}/orders/1")).await.status, 404);

    let r = api
        .send(
            Method::POST,
            "/api/v1/upstreams",
            json!({ "name": "orders", "targets": [ { "address": up.address() } ] }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .send(Method::POST, "/api/v1/routes", json!({ "name": "orders-api", "upstream": "orders", "match": { "paths": ["/orders/*"] } }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let etag = r.headers["etag"].to_str().unwrap().to_owned();
    // Applied before the answer: the very next request is routed.
    let r = cl.get(&format!("{proxy}/orders/1")).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "orders".to_owned()));

    // Creating it again is a conflict; a stale ETag is refused; the right one succeeds.
    let dup = api
        .send(
            Method::POST,
            "/api/v1/routes",
            json!({ "name": "orders-api", "upstream": "orders" }),
        )
        .await;
    assert_eq!(dup.status, 409);
    let changed = json!({ "upstream": "orders", "match": { "paths": ["/v2/orders/*"] } });
    let stale = api
        .call_with(
            Method::PUT,
            "/api/v1/routes/orders-api",
            Some(changed.clone()),
            &[("if-match", "\"999\"")],
        )
        .await;
    assert_eq!(stale.status, 412, "{}", stale.text());
    let ok = api
        .call_with(
            Method::PUT,
            "/api/v1/routes/orders-api",
            Some(changed),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_ne!(ok.headers["etag"].to_str().unwrap(), etag);
    assert_eq!(cl.get(&format!("{proxy}/orders/1")).await.status, 404);
    assert_eq!(cl.get(&format!("{proxy}/v2/orders/1")).await.status, 200);
    let got = api.call(Method::GET, "/api/v1/routes/orders-api").await;
    assert_eq!(got.json()["match"]["paths"][0], "/v2/orders/*");
    assert_eq!(got.headers["etag"], ok.headers["etag"]);

    // A write that would break the configuration: 400 naming each bad field; nothing changes.
    let bad = api
        .send(
            Method::POST,
            "/api/v1/routes",
            json!({ "name": "broken", "upstream": "nope", "match": { "paths": ["no-slash"] } }),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    let errors: Vec<String> = bad.json()["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("routes[broken].upstream")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("routes[broken].match.paths[0]")),
        "{errors:?}"
    );
    assert_eq!(
        api.call(Method::GET, "/api/v1/routes/broken").await.status,
        404
    );
    // Deleting an upstream a route uses is refused too.
    let r = api.call(Method::DELETE, "/api/v1/upstreams/orders").await;
    assert_eq!(r.status, 400, "{}", r.text());

    // Paging.
    for i in 0..3 {
        let r = api
            .send(Method::POST, "/api/v1/routes", json!({ "name": format!("r{i}"), "upstream": "orders", "match": { "paths": [format!("/r{i}")] } }))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let page = api.call(Method::GET, "/api/v1/routes?limit=2").await.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap().to_owned();
    let rest = api
        .call(Method::GET, &format!("/api/v1/routes?limit=2&after={next}"))
        .await
        .json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert!(rest["next"].is_null());

    let r = api.call(Method::DELETE, "/api/v1/routes/orders-api").await;
    assert_eq!(r.status, 204);
    assert_eq!(cl.get(&format!("{proxy}/v2/orders/1")).await.status, 404);

    let audit = api
        .call(Method::GET, "/api/v1/audit?limit=100")
        .await
        .json();
    let items = audit["items"].as_array().unwrap();
    let update = items.iter().find(|i| i["action"] == "update").unwrap();
    assert_eq!(update["actor"], "admin");
    assert_eq!(update["kind"], "routes");
    assert_eq!(update["before"]["match"]["paths"][0], "/orders/*");
    assert_eq!(update["after"]["match"]["paths"][0], "/v2/orders/*");
    assert!(items.iter().any(|i| i["action"] == "delete"));
    let status = api.call(Method::GET, "/api/v1/status").await.json();
    assert_eq!(status["mode"], "database");
    assert_eq!(status["serving_version"], status["store_version"]);
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_sessions_tokens_and_login_limits() {
    let dir = temp_dir("admin-roles");
    let (node, base) = node(&sqlite_store(&dir), first_admin()).await;
    let cl = HttpClient::new();
    // No credentials, a made-up token, a wrong password: refused.
    let r = cl.get(&format!("{base}/api/v1/routes")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "unauthorized");
    let r = cl
        .request(
            Method::GET,
            &format!("{base}/api/v1/routes"),
            &[("authorization", "Bearer wss_madeup")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 401);
    let admin = api_as(&base, "admin", PASSWORD).await;
    for (user, role) in [("vera", "viewer"), ("eddie", "editor")] {
        let r = admin
            .send(Method::POST, "/api/v1/users", json!({ "username": user, "password": format!("{user}-password-123"), "role": role }))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        assert!(
            !r.text().contains("password"),
            "no password or hash in the answer"
        );
    }
    let r = admin
        .send(
            Method::POST,
            "/api/v1/users",
            json!({ "username": "x", "password": "short", "role": "viewer" }),
        )
        .await;
    assert_eq!(r.status, 400);
    let viewer = api_as(&base, "vera", "vera-password-123").await;
    let editor = api_as(&base, "eddie", "eddie-password-123").await;
    assert_eq!(viewer.call(Method::GET, "/api/v1/routes").await.status, 200);
    let up = json!({ "name": "u", "targets": [ { "address": "127.0.0.1:9" } ] });
    assert_eq!(
        viewer
            .send(Method::POST, "/api/v1/upstreams", up.clone())
            .await
            .status,
        403
    );
    assert_eq!(
        editor
            .send(Method::POST, "/api/v1/upstreams", up)
            .await
            .status,
        201
    );
    assert_eq!(editor.call(Method::GET, "/api/v1/users").await.status, 403);
    assert_eq!(viewer.call(Method::GET, "/api/v1/audit").await.status, 403);
    assert_eq!(admin.call(Method::GET, "/api/v1/users").await.status, 200);
    // The last admin cannot be removed.
    assert_eq!(
        admin
            .call(Method::DELETE, "/api/v1/users/admin")
            .await
            .status,
        409
    );

    cookie_sessions_need_json_and_their_csrf_token(&base).await;

    // Named API tokens: the secret once, then only its metadata; revocable.
    let r = editor
        .send(Method::POST, "/api/v1/tokens", json!({ "name": "ci" }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.json()["token"].as_str().unwrap().to_owned();
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let ci = Api {
        base: base.clone(),
        token: secret.clone(),
        cl: HttpClient::new(),
    };
    assert_eq!(ci.call(Method::GET, "/api/v1/routes").await.status, 200);
    let list = editor.call(Method::GET, "/api/v1/tokens").await;
    assert!(list.text().contains("\"ci\"") && !list.text().contains(&secret));
    assert_eq!(
        editor
            .call(Method::DELETE, &format!("/api/v1/tokens/{id}"))
            .await
            .status,
        204
    );
    assert_eq!(ci.call(Method::GET, "/api/v1/routes").await.status, 401);
    // Logout revokes the session.
    assert_eq!(
        viewer.call(Method::POST, "/api/v1/logout").await.status,
        204
    );
    assert_eq!(viewer.call(Method::GET, "/api/v1/routes").await.status, 401);

    // Five failures lock the name for a minute; even the right password waits.
    for _ in 0..5 {
        assert_eq!(
            login(&base, "eddie", "wrong-password-000").await.status,
            401
        );
    }
    let r = login(&base, "eddie", "eddie-password-123").await;
    assert_eq!(r.status, 429);
    assert!(r.headers.contains_key("retry-after"));
    // An unknown user answers like a wrong password.
    let r = login(&base, "nobody", "whatever-password").await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"]["message"].clone()),
        (401, json!("wrong user name or password"))
    );
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The session cookie: HttpOnly and SameSite, enough on its own to read, and a write on it
/// needs the session's CSRF token and a JSON body (a cross-site form can make neither).
async fn cookie_sessions_need_json_and_their_csrf_token(base: &str) {
    let cl = HttpClient::new();
    // Login sets an HttpOnly, SameSite cookie that works on its own.
    let r = login(base, "eddie", "eddie-password-123").await;
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let r = cl
        .request(
            Method::GET,
            &format!("{base}/api/v1/status"),
            &[("cookie", session.as_str())],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    // A cookie-borne write needs the session's CSRF token, and must be JSON (a
    // cross-site form can make neither).
    let r = cl
        .request(
            Method::POST,
            &format!("{base}/api/v1/upstreams"),
            &[
                ("cookie", session.as_str()),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            Bytes::from_static(b"name=x"),
        )
        .await;
    assert_eq!(r.status, 403);
    let csrf = login(base, "eddie", "eddie-password-123").await;
    let csrf_cookie = csrf.headers["set-cookie"].to_str().unwrap().to_owned();
    let csrf_session = csrf_cookie.split(';').next().unwrap().to_owned();
    let token = csrf.json()["csrf_token"].as_str().unwrap().to_owned();
    let r = cl
        .request(
            Method::POST,
            &format!("{base}/api/v1/upstreams"),
            &[
                ("cookie", csrf_session.as_str()),
                ("x-csrf-token", token.as_str()),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            Bytes::from_static(b"name=x"),
        )
        .await;
    assert_eq!(r.status, 415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart_and_the_first_admin_is_made_once() {
    let up = MockUpstream::start(Behavior::Named("kept".into())).await;
    let dir = temp_dir("admin-restart");
    let (node1, base) = node(&sqlite_store(&dir), first_admin()).await;
    let api = api_as(&base, "admin", PASSWORD).await;
    api.send(
        Method::POST,
        "/api/v1/upstreams",
        json!({ "name": "k", "targets": [ { "address": up.address() } ] }),
    )
    .await;
    let r = api
        .send(
            Method::POST,
            "/api/v1/routes",
            json!({ "name": "kept", "upstream": "k", "match": { "paths": ["/kept"] } }),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = api
        .send(Method::POST, "/api/v1/consumers", json!({ "name": "acme", "credentials": [ { "type": "key", "key": "acme-secret-key-0001" } ] }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        !r.text().contains("acme-secret-key-0001"),
        "the key is never returned"
    );
    node1.shutdown().await;
    let db = std::fs::read(dir.join("weir.db")).unwrap();
    assert!(
        !db.windows(20).any(|w| w == b"acme-secret-key-0001"),
        "the key is never stored"
    );

    // Restart with another password in the environment: nothing changes.
    let other = weir::FirstAdmin {
        user: None,
        password: Some("another-password-456".into()),
    };
    let (node2, base) = node(&sqlite_store(&dir), other).await;
    assert_eq!(
        login(&base, "admin", "another-password-456").await.status,
        401
    );
    let api = api_as(&base, "admin", PASSWORD).await;
    let r = HttpClient::new()
        .get(&format!("http://{}/kept", node2.running.proxy_addr))
        .await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "kept".to_owned()));
    assert_eq!(
        api.call(Method::GET, "/api/v1/consumers/acme").await.status,
        200
    );
    node2.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_keys_written_through_the_api_authenticate() {
    let up = MockUpstream::start(Behavior::Named("secure".into())).await;
    let dir = temp_dir("admin-keys");
    let (node, base) = node(&sqlite_store(&dir), first_admin()).await;
    let api = api_as(&base, "admin", PASSWORD).await;
    api.send(
        Method::POST,
        "/api/v1/upstreams",
        json!({ "name": "s", "targets": [ { "address": up.address() } ] }),
    )
    .await;
    api.send(Method::POST, "/api/v1/consumers", json!({ "name": "acme", "credentials": [ { "type": "key", "key": "acme-secret-key-0001" } ] }))
        .await;
    let r = api
        .send(Method::POST, "/api/v1/routes", json!({ "name": "s", "upstream": "s", "match": { "paths": ["/s"] }, "policies": [ { "key_auth": {} } ] }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let cl = HttpClient::new();
    let url = format!("http://{}/s", node.running.proxy_addr);
    assert_eq!(cl.get(&url).await.status, 401);
    let r = cl
        .request(
            Method::GET,
            &url,
            &[("x-api-key", "acme-secret-key-0001")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 200);
    let consumer = api.call(Method::GET, "/api/v1/consumers/acme").await.json();
    assert!(consumer["credentials"][0]["key"].is_null());
    assert_eq!(
        consumer["credentials"][0]["key_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    // Credentials as a sub-resource: add a key (rotation), then retire the old one.
    let r = api
        .send(
            Method::POST,
            "/api/v1/consumers/acme/credentials",
            json!({ "type": "key", "key": "acme-rotated-key-0002" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .send(
            Method::POST,
            "/api/v1/consumers/acme/credentials",
            json!({ "type": "basic", "username": "acme", "password": "basic-password-123" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(!r.text().contains("basic-password-123"));
    let list = api
        .call(Method::GET, "/api/v1/consumers/acme/credentials")
        .await;
    let items = list.json();
    assert_eq!(items.as_array().unwrap().len(), 3);
    assert!(
        items[2]["password_hash"]
            .as_str()
            .unwrap()
            .starts_with("$argon2id$")
    );
    assert!(!list.text().contains("acme-rotated-key-0002"));
    let key = |k: &str| {
        let (cl, url, k) = (cl.clone(), url.clone(), k.to_owned());
        async move {
            cl.request(Method::GET, &url, &[("x-api-key", &k)], Bytes::new())
                .await
                .status
                .as_u16()
        }
    };
    assert_eq!(key("acme-rotated-key-0002").await, 200);
    let r = api
        .call(Method::DELETE, "/api/v1/consumers/acme/credentials/0")
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        key("acme-secret-key-0001").await,
        401,
        "the old key is retired"
    );
    assert_eq!(key("acme-rotated-key-0002").await, 200);
    assert_eq!(
        api.call(Method::DELETE, "/api/v1/consumers/acme/credentials/9")
            .await
            .status,
        404
    );
    // A basic credential without its user name is refused; a key without a key is issued.
    let r = api
        .send(
            Method::POST,
            "/api/v1/consumers/acme/credentials",
            json!({ "type": "basic", "password": "long-enough-password-1" }),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .send(
            Method::POST,
            "/api/v1/consumers/acme/credentials",
            json!({ "type": "key" }),
        )
        .await;
    assert_eq!(r.status, 201);
    let issued = r.json()["issued_key"].as_str().unwrap().to_owned();
    assert_eq!(key(&issued).await, 200, "the issued key authenticates");
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_serves_the_file_read_only() {
    let up = MockUpstream::start(Behavior::Named("f".into())).await;
    let dir = temp_dir("admin-file");
    let (node, base) = node(
        &format!(
            "data_dir: {}\nupstreams:\n{}routes:\n  - {{ name: from-file, upstream: u, match: {{ paths: [\"/f\"] }} }}\n",
            dir.display(),
            upstream("u", &[up.address()], "")
        ),
        first_admin(),
    )
    .await;
    let api = api_as(&base, "admin", PASSWORD).await;
    let list = api.call(Method::GET, "/api/v1/routes").await.json();
    assert_eq!(list["items"][0]["name"], "from-file");
    let r = api
        .send(
            Method::POST,
            "/api/v1/routes",
            json!({ "name": "x", "upstream": "u" }),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"]["type"].clone()),
        (409, json!("read_only"))
    );
    assert_eq!(
        api.call(Method::GET, "/api/v1/status").await.json()["mode"],
        "file"
    );
    let cfg = api.call(Method::GET, "/api/v1/config").await.json();
    assert_eq!(cfg["routes"][0]["name"], "from-file");
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_and_hostile_bodies() {
    let dir = temp_dir("admin-openapi");
    let (node, base) = node(&sqlite_store(&dir), first_admin()).await;
    let cl = HttpClient::new();
    let doc = cl.get(&format!("{base}/api/v1/openapi.json")).await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for path in [
        "/api/v1/login",
        "/api/v1/routes",
        "/api/v1/upstreams/{name}",
        "/api/v1/consumers",
        "/api/v1/config",
        "/api/v1/audit",
        "/api/v1/users",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(
        doc["paths"].get("/api/v1/{kind}").is_none(),
        "each kind is its own path"
    );
    let api = api_as(&base, "admin", PASSWORD).await;
    let raw = |body: &'static [u8], ctype: &'static str| {
        let cl = cl.clone();
        let url = format!("{base}/api/v1/routes");
        let auth = format!("Bearer {}", api.token);
        async move {
            cl.request(
                Method::POST,
                &url,
                &[("authorization", auth.as_str()), ("content-type", ctype)],
                Bytes::from_static(body),
            )
            .await
        }
    };
    let r = raw(b"{not json", "application/json").await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("body:")
    );
    let r = raw(br#"{"name": 5}"#, "application/json").await;
    assert_eq!(r.status, 400);
    let r = raw(
        br#"{"name": "ok", "upstream": ["not", "a", "string"]}"#,
        "application/json",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = raw(br#"[1, 2]"#, "application/json").await;
    assert_eq!(r.status, 400);
    let r = raw(br#"{"name": "../../etc"}"#, "application/json").await;
    assert_eq!(r.status, 400);
    // A body over the limit is refused from its Content-Length, before it is read (the
    // head alone is sent: a client still writing when the refusal closes the connection
    // would see a broken pipe, not the answer).
    let head = format!(
        "POST /api/v1/routes HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        api.token,
        2 << 20
    );
    let answer = raw_request(
        base.trim_start_matches("http://"),
        head.as_bytes(),
        std::time::Duration::from_secs(2),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let r = api.call(Method::GET, "/api/v1/gadgets").await;
    assert_eq!(r.status, 404);
    let r = api.call(Method::GET, "/api/v1/routes?limit=0").await;
    assert_eq!(r.status, 400);
    let r = api
        .call_with(
            Method::PUT,
            "/api/v1/routes/x",
            Some(json!({})),
            &[("if-match", "garbage")],
        )
        .await;
    assert_eq!(r.status, 400);
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_across_many_user_names_locks_the_client_address() {
    let dir = temp_dir("admin-addr-limit");
    let (node, base) = node(&sqlite_store(&dir), first_admin()).await;
    for i in 0..20 {
        let r = login(&base, &format!("guess{i}"), "not-the-password").await;
        assert_eq!(r.status, 401, "attempt {i}");
    }
    let r = login(&base, "admin", PASSWORD).await;
    assert_eq!(
        r.status, 429,
        "the address is locked for the rest of the minute"
    );
    assert!(r.headers.contains_key("retry-after"));
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// In database mode AI providers (with their prices) and models are objects of the store
/// like routes: a provider key is refused inline and kept only as a reference (the
/// database file never holds it), and a chat through the new model reaches the provider
/// with the key the reference names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_providers_and_models_are_managed_through_the_api_with_keys_never_stored() {
    let dir = temp_dir("admin-ai");
    let fake = weir_testkit::FakeOpenAi::openai().await;
    let key_file = dir.join("provider.key");
    let key = "sk-provider-key-never-stored-01";
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let (node, base) = node(&sqlite_store(&dir), first_admin()).await;
    let api = api_as(&base, "admin", PASSWORD).await;
    let provider = |keys: serde_json::Value| {
        json!({ "name": "fake", "kind": "openai_compatible", "base_url": fake.base_url(),
                "api_keys": keys, "prices": { "m1": { "input": 1.0, "output": 2.0 } } })
    };
    let r = api
        .send(Method::POST, "/api/v1/ai-providers", provider(json!([key])))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("env:NAME or file:PATH"), "{}", r.text());
    let reference = format!("file:{}", key_file.display());
    let r = api
        .send(
            Method::POST,
            "/api/v1/ai-providers",
            provider(json!([reference])),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .send(
            Method::POST,
            "/api/v1/ai-models",
            json!({ "name": "smart", "targets": ["fake/m1"] }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .send(
            Method::POST,
            "/api/v1/ai-models",
            json!({ "name": "lost", "targets": ["nobody/m1"] }),
        )
        .await;
    assert_eq!(r.status, 400, "a target of no provider: {}", r.text());
    let r = api
        .send(
            Method::POST,
            "/api/v1/routes",
            json!({ "name": "llm", "match": { "paths": ["/v1/*"] }, "ai": {} }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api.call(Method::GET, "/api/v1/ai-providers/fake").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["api_keys"][0], json!(reference));
    assert_eq!(r.json()["prices"]["m1"]["output"], json!(2.0));
    let cfg = api.call(Method::GET, "/api/v1/config").await.json();
    assert_eq!(cfg["ai"]["prices"]["fake/m1"]["input"], json!(1.0));

    let proxy = format!("http://{}", node.running.proxy_addr);
    let r = HttpClient::new()
        .request(
            Method::POST,
            &format!("{proxy}/v1/chat/completions"),
            &[("content-type", "application/json")],
            Bytes::from(
                json!({ "model": "smart", "messages": [ { "role": "user", "content": "hi" } ] })
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].headers["authorization"].to_str().unwrap(),
        format!("Bearer {key}")
    );
    assert_eq!(calls[0].body["model"], "m1");
    node.shutdown().await;
    let db = std::fs::read(dir.join("weir.db")).unwrap();
    let wal = std::fs::read(dir.join("weir.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "the provider key is never stored"
        );
    }
    assert!(
        db.windows(reference.len())
            .any(|w| w == reference.as_bytes())
            || wal
                .windows(reference.len())
                .any(|w| w == reference.as_bytes()),
        "the reference is"
    );
    let _ = std::fs::remove_dir_all(dir);
}
