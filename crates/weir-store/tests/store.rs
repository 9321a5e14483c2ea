//! The store against real SQLite files and the machine's Postgres (a fresh database per
//! test): transactional writes with validation, revisions, conflicts, the audit log,
//! accounts and tokens, persistence, and Postgres change notification.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use weir_store::{Change, Store, StoreError, Token};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "weir-store-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A database of its own on the machine's Postgres.
async fn fresh_postgres(tag: &str) -> String {
    use sqlx::Connection;
    let name = format!(
        "weir_{tag}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    );
    let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/test")
        .await
        .expect("Postgres on 127.0.0.1:5432 (scripts/services.sh starts it)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

fn put(kind: &str, name: &str, body: serde_json::Value) -> Change {
    Change::Put {
        kind: kind.into(),
        name: name.into(),
        body,
        create_only: false,
        if_match: None,
    }
}

async fn conformance(store: &Store) {
    ai_call_records(store).await;
    assert_eq!(store.version().await.unwrap(), 0);
    let (v1, written) = store
        .write(
            "alice",
            &[put(
                "upstreams",
                "orders",
                json!({ "targets": [{ "address": "127.0.0.1:1" }] }),
            )],
            |_| Ok(()),
        )
        .await
        .unwrap();
    assert_eq!(v1, 1);
    assert_eq!(written[0].revision, 1);

    // A create of an existing name fails; so does a stale If-Match.
    let create = Change::Put {
        kind: "upstreams".into(),
        name: "orders".into(),
        body: json!({}),
        create_only: true,
        if_match: None,
    };
    assert!(matches!(
        store.write("alice", &[create], |_| Ok(())).await,
        Err(StoreError::Exists)
    ));
    let stale = Change::Put {
        kind: "upstreams".into(),
        name: "orders".into(),
        body: json!({ "targets": [] }),
        create_only: false,
        if_match: Some(0),
    };
    assert!(matches!(
        store.write("alice", &[stale], |_| Ok(())).await,
        Err(StoreError::Conflict {
            expected: 0,
            actual: 1
        })
    ));

    // The validator sees the whole result, and a refusal leaves nothing behind.
    let refused = store
        .write(
            "bob",
            &[put("routes", "r1", json!({ "upstream": "nope" }))],
            |all| {
                assert_eq!(all.len(), 2, "the validator sees every object");
                Err(vec!["routes[0].upstream: unknown".into()])
            },
        )
        .await;
    assert!(matches!(refused, Err(StoreError::Invalid(ref e)) if e.len() == 1));
    assert_eq!(
        store.version().await.unwrap(),
        1,
        "a refused write changes nothing"
    );
    assert!(store.get("routes", "r1").await.unwrap().is_none());

    let matching = Change::Put {
        kind: "upstreams".into(),
        name: "orders".into(),
        body: json!({ "targets": [{ "address": "127.0.0.1:2" }] }),
        create_only: false,
        if_match: Some(1),
    };
    let (v2, _) = store
        .write(
            "bob",
            &[
                matching,
                put("routes", "r1", json!({ "upstream": "orders" })),
            ],
            |_| Ok(()),
        )
        .await
        .unwrap();
    assert_eq!(v2, 2);
    let page = store.list("routes", None, 10).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].body["upstream"], "orders");
    for i in 0..5 {
        store
            .write("bob", &[put("routes", &format!("p{i}"), json!({}))], |_| {
                Ok(())
            })
            .await
            .unwrap();
    }
    let first = store.list("routes", None, 3).await.unwrap();
    let next = store.list("routes", Some(&first[2].name), 3).await.unwrap();
    let names: Vec<_> = first.iter().chain(&next).map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4", "r1"]);

    let delete = Change::Delete {
        kind: "routes".into(),
        name: "p0".into(),
        if_match: None,
    };
    store.write("carol", &[delete], |_| Ok(())).await.unwrap();
    assert!(store.get("routes", "p0").await.unwrap().is_none());

    let audit = store.audit(None, 100).await.unwrap();
    assert_eq!(audit[0].action, "delete");
    assert_eq!(audit[0].actor, "carol");
    assert!(audit[0].before.is_some() && audit[0].after.is_none());
    let update = audit.iter().find(|a| a.action == "update").unwrap();
    assert_eq!(
        update.before.as_ref().unwrap()["targets"][0]["address"],
        "127.0.0.1:1"
    );
    assert_eq!(
        update.after.as_ref().unwrap()["targets"][0]["address"],
        "127.0.0.1:2"
    );
    let older = store.audit(Some(audit[1].id), 2).await.unwrap();
    assert_eq!(older[0].id, audit[2].id);

    // Accounts and tokens (by digest only).
    assert_eq!(store.user_count().await.unwrap(), 0);
    store
        .create_user("setup", "admin", "$argon2id$x", "admin")
        .await
        .unwrap();
    assert!(matches!(
        store.create_user("setup", "admin", "h", "viewer").await,
        Err(StoreError::Exists)
    ));
    let t = Token {
        id: "t1".into(),
        username: "admin".into(),
        name: "ci".into(),
        kind: "api".into(),
        created_at: weir_store::now(),
        expires_at: None,
    };
    store.add_token(&t, "digest-1").await.unwrap();
    let expired = Token {
        id: "t2".into(),
        kind: "session".into(),
        expires_at: Some(weir_store::now() - 1),
        ..t.clone()
    };
    store.add_token(&expired, "digest-2").await.unwrap();
    let (tok, user) = store.token_by_digest("digest-1").await.unwrap().unwrap();
    assert_eq!((tok.name.as_str(), user.role.as_str()), ("ci", "admin"));
    assert!(
        store.token_by_digest("digest-2").await.unwrap().is_none(),
        "expired"
    );
    assert_eq!(store.sweep_tokens().await.unwrap(), 1);
    assert_eq!(store.tokens("admin").await.unwrap().len(), 1);
    store.delete_user("setup", "admin").await.unwrap();
    assert!(
        store.token_by_digest("digest-1").await.unwrap().is_none(),
        "tokens go with the user"
    );
}

/// AI call records: batches written, read newest first with filters, summed by any
/// dimensions in the database, pruned by age.
async fn ai_call_records(store: &Store) {
    use weir_store::{AiCallFilter, AiCallRow};
    let row =
        |at_ms, consumer: Option<&str>, key: Option<&str>, model: &str, status, cost| AiCallRow {
            at_ms,
            route: "llm".into(),
            consumer: consumer.map(str::to_owned),
            key: key.map(str::to_owned),
            model: model.into(),
            target: format!("openai/{model}"),
            status,
            input_tokens: 10,
            cached_tokens: 2,
            output_tokens: 5,
            estimated: status != 200,
            cost_micro_usd: cost,
            latency_ms: 100,
            ttft_ms: at_ms % 7,
            stream: at_ms % 2 == 0,
            fallbacks: 1,
        };
    let rows = vec![
        row(1_000, Some("acme"), Some("ci"), "smart", 200, 1_500),
        row(2_000, Some("acme"), Some("laptop"), "smart", 200, 2_500),
        row(3_000, Some("acme"), Some("ci"), "cheap", 429, 0),
        row(4_000, None, None, "cheap", 200, 7),
    ];
    store.insert_ai_calls(&rows).await.unwrap();
    let all = AiCallFilter {
        from_ms: 0,
        to_ms: 10_000,
        ..Default::default()
    };
    let back = store.ai_calls(&all, 100).await.unwrap();
    assert_eq!(
        back,
        rows.iter().rev().cloned().collect::<Vec<_>>(),
        "newest first, every field kept"
    );
    let ci = AiCallFilter {
        key: Some("ci".into()),
        ..all.clone()
    };
    assert_eq!(store.ai_calls(&ci, 100).await.unwrap().len(), 2);
    assert_eq!(store.ai_calls(&all, 1).await.unwrap()[0].at_ms, 4_000);
    let by = store.ai_usage(&all, &["consumer", "model"]).await.unwrap();
    let acme_smart = by
        .iter()
        .find(|u| u.group == [Some("acme".to_owned()), Some("smart".to_owned())])
        .unwrap();
    assert_eq!(
        (
            acme_smart.requests,
            acme_smart.errors,
            acme_smart.input_tokens,
            acme_smart.output_tokens,
            acme_smart.cost_micro_usd
        ),
        (2, 0, 20, 10, 4_000)
    );
    assert_eq!(by.len(), 3);
    assert_eq!(by[0].cost_micro_usd, 4_000, "largest spend first");
    assert!(
        by.iter()
            .any(|u| u.group == [None, Some("cheap".to_owned())])
    );
    let total = store.ai_usage(&ci, &[]).await.unwrap();
    assert_eq!((total[0].requests, total[0].errors), (2, 1));
    assert!((total[0].avg_latency_ms - 100.0).abs() < 1e-9);
    assert!(
        store
            .ai_usage(&all, &["secret; DROP TABLE x"])
            .await
            .is_err()
    );
    assert_eq!(store.prune_calls(2_500).await.unwrap(), 2);
    assert_eq!(store.ai_calls(&all, 100).await.unwrap().len(), 2);
    store.prune_calls(i64::MAX).await.unwrap();

    // Every request's record too (analytics), in batches larger than one statement.
    let calls: Vec<weir_store::CallRow> = (0..1_200)
        .map(|i| weir_store::CallRow {
            at_ms: i,
            route: "r".into(),
            consumer: (i % 2 == 0).then(|| "acme".to_owned()),
            upstream: "u".into(),
            status: 200,
            latency_us: i,
            bytes_out: 1,
        })
        .collect();
    store.insert_calls(&calls).await.unwrap();
    let back = store.calls(0, 2_000, 10_000).await.unwrap();
    assert_eq!(back.len(), 1_200);
    assert_eq!((back[7].consumer.as_deref(), back[8].latency_us), (None, 8));
    assert_eq!(store.prune_calls(i64::MAX).await.unwrap(), 1_200);
}

#[tokio::test]
async fn sqlite_store_conformance_and_persistence() {
    let dir = temp_dir("sqlite");
    let store = Store::open("sqlite://weir.db", &dir).await.unwrap();
    conformance(&store).await;
    let version = store.version().await.unwrap();
    drop(store);
    let again = Store::open("sqlite://weir.db", &dir).await.unwrap();
    assert_eq!(
        again.version().await.unwrap(),
        version,
        "kept across a reopen"
    );
    assert_eq!(again.list("routes", None, 100).await.unwrap().len(), 5);
    assert!(dir.join("weir.db").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn postgres_store_conformance_and_notification() {
    let url = fresh_postgres("conf").await;
    let store = Store::open(&url, std::path::Path::new(".")).await.unwrap();
    let mut listener = sqlx::postgres::PgListener::connect(&url).await.unwrap();
    listener.listen(weir_store::CHANNEL).await.unwrap();
    conformance(&store).await;
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), listener.recv())
        .await
        .expect("a notification within 2 s")
        .unwrap();
    assert_eq!(n.payload(), "1", "the first committed version is announced");
    // Two stores (two nodes) on one database see one state.
    let other = Store::open(&url, std::path::Path::new(".")).await.unwrap();
    assert_eq!(
        other.version().await.unwrap(),
        store.version().await.unwrap()
    );
    drop(listener);
    other.close().await;
    store.close().await;
    drop_postgres(&url).await;
}

async fn drop_postgres(url: &str) {
    use sqlx::Connection;
    let name = url.rsplit('/').next().unwrap();
    let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/test")
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_urls_and_unreachable_stores_are_clear_errors() {
    let dir = temp_dir("bad");
    let e = Store::open("mysql://x", &dir).await.unwrap_err();
    assert!(e.to_string().contains("expected sqlite://"), "{e}");
    let e = Store::open("postgres://u:secret-pw@127.0.0.1:1/db", &dir)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("unavailable") && msg.contains("refused") && !msg.contains("secret-pw"),
        "{msg}"
    );
    let e = Store::open("postgres://u@no-such-host.invalid:5432/db", &dir)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no-such-host.invalid"), "{e}");
    assert!(!e.to_string().contains("timed out"), "{e}");
    let e = Store::open("postgres://no_such_role_weir@127.0.0.1:5432/test", &dir)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("no_such_role_weir"),
        "the role is named: {e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
