//! Hot reload: changes are validated, compiled and swapped atomically under traffic; bad
//! configurations keep the old one; unchanged upstreams keep their pools and health state.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use weir_proxy::app::ReloadSources;

fn config(up: &str, extra_route: usize) -> weir_config::Config {
    let yaml = format!(
        "listen:\n  proxy: 127.0.0.1:0\n  admin: 127.0.0.1:0\nworkers: 2\naccess_log: off
upstreams:
  u:
    targets: [ {{ address: \"{up}\" }} ]
    health: {{ passive: {{ failures: 1, cooldown: 60s }} }}
routes:
  - {{ name: main, upstream: u, match: {{ paths: [\"/main/*\"] }} }}
  - {{ name: extra-{extra_route}, upstream: u, match: {{ paths: [\"/extra{extra_route}/*\"] }} }}
"
    );
    weir_config::from_yaml(&yaml, "test").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_steady_traffic_fail_no_request() {
    let up = MockUpstream::start(Behavior::Named("u".into())).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut first = config(&up.address(), 0);
    first.listen.proxy = "127.0.0.1:0".into();
    let gw = weir_proxy::app::start(first, ReloadSources::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let u = url(&gw, "/main/x");
        clients.push(tokio::spawn(async move {
            let cl = HttpClient::new();
            while !stop.load(Ordering::Relaxed) {
                match cl
                    .send(http::Request::get(&u).body(Default::default()).unwrap())
                    .await
                {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let before = Arc::clone(gw.gateway.snapshot().registry.get("u").unwrap());
    for i in 1..=50 {
        let mut c = config(&up.address(), i);
        c.listen.proxy = "127.0.0.1:0".into();
        let v = gw.gateway.apply(c).expect("reload applies");
        assert_eq!(v, 1 + i as u64);
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The new route serves at once; the old one is gone.
        let cl = HttpClient::new();
        assert_eq!(cl.get(&url(&gw, &format!("/extra{i}/y"))).await.status, 200);
        if i > 1 {
            assert_eq!(
                cl.get(&url(&gw, &format!("/extra{}/y", i - 1)))
                    .await
                    .status,
                404
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let after = Arc::clone(gw.gateway.snapshot().registry.get("u").unwrap());
    assert!(
        Arc::ptr_eq(&before, &after),
        "an unchanged upstream (and its pools) survives reloads"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} requests failed during reloads",
        failed.load(Ordering::Relaxed)
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "only {} requests ran",
        ok.load(Ordering::Relaxed)
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_keeps_the_running_one_and_reports_every_error() {
    let up = MockUpstream::start(Behavior::Named("u".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: u }}\n",
        upstream("u", &[up.address()], "")
    ));
    let mut bad = weir_config::from_yaml(
        "listen:\n  proxy: 127.0.0.1:0\n  admin: 127.0.0.1:0\nworkers: 2\naccess_log: off
upstreams: { u: { targets: [ { address: \"127.0.0.1:0\" } ] } }
routes:
  - { name: a, upstream: nope }
  - { name: b, upstream: u, match: { paths: [\"bad\"] } }
",
        "t",
    )
    .unwrap();
    bad.listen.proxy = "127.0.0.1:0".into();
    let errors = gw.gateway.apply(bad).unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(gw.gateway.version(), 1);
    assert_eq!(HttpClient::new().get(&url(&gw, "/still")).await.status, 200);
    let mut moved = gw.gateway.snapshot().config.clone();
    moved.listen.proxy = "127.0.0.1:1".into();
    let errors = gw.gateway.apply(moved).unwrap_err();
    assert!(
        errors[0].contains("cannot change while running"),
        "{errors:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_state_of_unchanged_upstreams_survives_a_reload() {
    let bad = MockUpstream::start(Behavior::Status(502)).await;
    let good = MockUpstream::start(Behavior::Named("good".into())).await;
    let body = |route: &str| {
        format!(
            "upstreams:\n{}routes:\n  - {{ name: {route}, upstream: u }}\n",
            upstream(
                "u",
                &[bad.address(), good.address()],
                "    health: { passive: { failures: 1, cooldown: 60s } }\n"
            )
        )
    };
    let gw = gateway(&body("one"));
    let cl = HttpClient::new();
    for _ in 0..4 {
        cl.get(&url(&gw, "/")).await;
    }
    assert_eq!(bad.hit_count(), 1, "breaker opened after one failure");
    let yaml = format!(
        "listen:\n  proxy: 127.0.0.1:0\n  admin: 127.0.0.1:0\nworkers: 2\naccess_log: off\n{}",
        body("two")
    );
    gw.gateway
        .apply(weir_config::from_yaml(&yaml, "t").unwrap())
        .unwrap();
    for _ in 0..6 {
        assert_eq!(cl.get(&url(&gw, "/")).await.text(), "good");
    }
    assert_eq!(bad.hit_count(), 1, "the open breaker survived the reload");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_file_reloads_on_change_and_ignores_a_broken_edit() {
    let up = MockUpstream::start(Behavior::Named("u".into())).await;
    let dir = temp_dir("watch");
    let path = dir.join("weir.yaml");
    let write = |route: &str| {
        std::fs::write(
            &path,
            format!(
                "listen:\n  proxy: 127.0.0.1:0\n  admin: 127.0.0.1:0\nworkers: 1\naccess_log: off\nupstreams:\n{}routes:\n  - {{ name: r, upstream: u, match: {{ paths: [\"{route}\"] }} }}\n",
                upstream("u", &[up.address()], "")
            ),
        )
        .unwrap()
    };
    write("/one");
    let p = path.clone();
    let loader: weir_proxy::reload::Loader = Arc::new(move || {
        let c = weir_config::load_file(&p).map_err(|e| vec![e.to_string()])?;
        let errs = weir_config::validate(&c);
        if errs.is_empty() {
            Ok(c)
        } else {
            Err(errs.iter().map(ToString::to_string).collect())
        }
    });
    let cfg = loader().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let gw = weir_proxy::app::start(
        cfg,
        ReloadSources {
            loader: Some(loader),
            watch: Some(path.clone()),
            watch_every: Some(Duration::from_millis(50)),
            sighup: false,
            calls: None,
            ai_calls: None,
            ingest: None,
            admin_api_to_come: false,
        },
    )
    .unwrap();
    let cl = HttpClient::new();
    assert_eq!(cl.get(&url(&gw, "/one")).await.status, 200);
    write("/two");
    let g = Arc::clone(&gw.gateway);
    eventually("the new file to apply", Duration::from_secs(3), || {
        g.version() == 2
    })
    .await;
    assert_eq!(cl.get(&url(&gw, "/two")).await.status, 200);
    assert_eq!(cl.get(&url(&gw, "/one")).await.status, 404);
    std::fs::write(&path, "routes: [ { name: broken, upstream: missing } ]\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.gateway.version(), 2);
    assert_eq!(cl.get(&url(&gw, "/two")).await.status, 200);
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
