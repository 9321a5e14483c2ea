//! The overload manager in the assembled gateway: the node's budget for buffered bodies,
//! the connection cap, and each action at a memory threshold (shed kept-alive
//! connections, refuse buffered requests, stop accepting), each counted in its metric.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{HttpClient, admin, gateway, url};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_testkit::FakeOpenAi;

const ROUTES: &str = r#"upstreams:
  echo: { builtin: echo }
ai:
  providers:
    fake: { kind: openai_compatible, base_url: "http://FAKE/v1" }
  models:
    - { name: m, targets: [fake/m] }
routes:
  - { name: llm, match: { paths: [/v1/*] }, ai: {} }
  - { name: plain, match: { paths: [/echo] }, upstream: echo }
"#;

fn config(fake: &FakeOpenAi, overload: &str) -> String {
    format!(
        "{overload}\n{}",
        ROUTES.replace("FAKE", &fake.server.address())
    )
}

fn chat(bytes: usize) -> serde_json::Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(bytes)}]})
}

/// The value of `weir_overload_actions_total{action}` on the admin listener.
async fn counted(r: &weir_proxy::app::Running, action: &str) -> u64 {
    let text = HttpClient::new().get(&admin(r, "/metrics")).await.text();
    let prefix = format!("weir_overload_actions_total{{action=\"{action}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

async fn wait_counted(r: &weir_proxy::app::Running, action: &str, at_least: u64) {
    for _ in 0..150 {
        if counted(r, action).await >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{action} counted {} times, wanted at least {at_least}",
        counted(r, action).await
    );
}

/// A request on a kept-alive connection; the answer's head and body as text.
async fn exchange(c: &mut TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// True when the server closed `c` within `wait`.
async fn closed_within(c: &mut TcpStream, wait: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, c.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Bodies held whole share one budget: a prompt past it is refused with 503 and
/// Retry-After before it is read (Content-Length) or as it arrives (chunked), one within it
/// is served, and every refusal is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_bodies_share_one_budget() {
    let fake = FakeOpenAi::openai().await;
    let r = gateway(&config(&fake, "overload: { buffered_bodies: 1MiB }"));
    let running = &r;
    let send = |body: serde_json::Value| async move {
        common::ai::post_json(running, "/v1/chat/completions", &[], &body).await
    };
    let fits = send(chat(100 << 10)).await;
    assert_eq!(fits.status, 200, "{}", fits.text());
    // Refused on its Content-Length, before the body is read (a client still sending it
    // would see the connection close under it, so only the head is sent).
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n[",
        2 << 20
    );
    let big = common::raw_request(
        &r.proxy_addr.to_string(),
        head.as_bytes(),
        Duration::from_millis(500),
    )
    .await;
    assert!(big.starts_with("HTTP/1.1 503"), "{big}");
    assert!(big.contains("\"type\":\"node_overloaded\""), "{big}");
    assert!(
        big.to_ascii_lowercase().contains("retry-after: 2\r\n"),
        "{big}"
    );
    assert_eq!(
        fake.calls().len(),
        1,
        "the refused prompt never reached the provider"
    );

    // Without a Content-Length the budget is counted as the body arrives: refused once
    // past it (the client is still sending, so the end chunk never comes).
    let mut c = TcpStream::connect(r.proxy_addr).await.unwrap();
    c.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let part = "x".repeat(64 << 10);
    for _ in 0..18 {
        c.write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes())
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; 8192];
    while !String::from_utf8_lossy(&got).contains("node_overloaded") {
        match tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!(
                "no refusal: {other:?} after {}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 503"));
    wait_counted(&r, "body_budget", 2).await;
    let again = send(chat(100 << 10)).await;
    assert_eq!(again.status, 200, "refusals free what they counted");
    r.shutdown().await;
}

/// A body held whole that stops arriving is answered 408 after `limits.body_timeout`
/// (the connection closes), and its hold on the budget is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_times_out_and_frees_its_hold() {
    let fake = FakeOpenAi::openai().await;
    let r = gateway(&config(
        &fake,
        "limits: { body_timeout: 300ms }\noverload: { buffered_bodies: 1MiB }",
    ));
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n[",
        900 << 10
    );
    let started = std::time::Instant::now();
    let slow = common::raw_request(
        &r.proxy_addr.to_string(),
        head.as_bytes(),
        Duration::from_secs(3),
    )
    .await;
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");
    assert!(slow.contains("request_timeout"), "{slow}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed, not left open"
    );
    // The 900 KiB it reserved are free again: another such prompt fits the 1 MiB budget.
    let again = common::ai::post_json(&r, "/v1/chat/completions", &[], &chat(800 << 10)).await;
    assert_eq!(again.status, 200);
    r.shutdown().await;
}

/// A connection that never sends a byte is closed after `limits.header_timeout`, like a
/// head that never ends, so idle connections cannot pile up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let fake = FakeOpenAi::openai().await;
    let r = gateway(&config(&fake, "limits: { header_timeout: 300ms }"));
    let mut silent = TcpStream::connect(r.proxy_addr).await.unwrap();
    let started = std::time::Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    assert!(started.elapsed() >= Duration::from_millis(250));
    let mut prompt = TcpStream::connect(r.proxy_addr).await.unwrap();
    assert!(
        exchange(&mut prompt, "/echo")
            .await
            .starts_with("HTTP/1.1 200")
    );
    r.shutdown().await;
}

/// Past the connection cap a new connection is closed at once; a slot freed is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once() {
    let fake = FakeOpenAi::openai().await;
    let r = gateway(&config(&fake, "overload: { max_connections: 2 }"));
    let addr = r.proxy_addr;
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    assert!(exchange(&mut a, "/echo").await.starts_with("HTTP/1.1 200"));
    assert!(exchange(&mut b, "/echo").await.starts_with("HTTP/1.1 200"));
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(2)).await);
    wait_counted(&r, "connection_cap", 1).await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert!(exchange(&mut c, "/echo").await.starts_with("HTTP/1.1 200"));
    assert!(exchange(&mut b, "/echo").await.starts_with("HTTP/1.1 200"));
    r.shutdown().await;
}

/// Memory thresholds (set below this process's own resident memory): kept-alive
/// connections are shed once they have served, a fresh one is left alone; buffered
/// requests are refused while plain ones pass; at the top level nothing new is accepted
/// until memory is no longer short, then the waiting connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_thresholds_shed_refuse_and_stop_accepting() {
    let fake = FakeOpenAi::openai().await;
    let shed = "overload: { memory_limit: 64GiB, shed_keep_alive_at: 16MiB, refuse_buffered_at: 32GiB, stop_accepting_at: 48GiB }";
    let r = gateway(&config(&fake, shed));
    let addr = r.proxy_addr;
    let mut fresh = TcpStream::connect(addr).await.unwrap();
    let mut used = TcpStream::connect(addr).await.unwrap();
    assert!(
        exchange(&mut used, "/echo")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        closed_within(&mut used, Duration::from_secs(3)).await,
        "the idle kept-alive connection was shed"
    );
    wait_counted(&r, "shed_keep_alive", 1).await;
    assert!(!closed_within(&mut fresh, Duration::from_millis(1500)).await);
    assert!(
        exchange(&mut fresh, "/echo")
            .await
            .starts_with("HTTP/1.1 200")
    );

    let refuse = "overload: { memory_limit: 64GiB, shed_keep_alive_at: 32GiB, refuse_buffered_at: 16MiB, stop_accepting_at: 48GiB }";
    let apply = |yaml: &str| {
        // As `gateway` started it: the same listeners and workers.
        let full = format!(
            "listen:\n  proxy: 127.0.0.1:0\n  admin: 127.0.0.1:0\nworkers: 2\naccess_log: off\n{}",
            config(&fake, yaml)
        );
        r.gateway
            .apply(weir_config::from_yaml(&full, "test").unwrap())
            .unwrap();
    };
    apply(refuse);
    let client = HttpClient::new();
    let mut refused = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let rsp = common::ai::post_json(&r, "/v1/chat/completions", &[], &chat(10)).await;
        if rsp.status == 503 {
            refused = Some(rsp);
            break;
        }
    }
    let refused = refused.expect("a buffered request refused under memory pressure");
    assert_eq!(refused.json()["error"]["type"], "node_overloaded");
    assert!(
        refused.text().contains("short of memory"),
        "{}",
        refused.text()
    );
    assert_eq!(
        client.get(&url(&r, "/echo")).await.status,
        200,
        "plain proxying still passes"
    );
    wait_counted(&r, "refuse_buffered", 1).await;

    apply(
        "overload: { memory_limit: 64GiB, stop_accepting_at: 16MiB, shed_keep_alive_at: 1MiB, refuse_buffered_at: 2MiB }",
    );
    // Each of the two workers pauses.
    wait_counted(&r, "stop_accepting", 2).await;
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    waiting
        .write_all(b"GET /echo HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(600), waiting.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "no connection is served while memory is critical"
    );
    apply("");
    let n = tokio::time::timeout(Duration::from_secs(5), waiting.read(&mut buf))
        .await
        .expect("served once memory is no longer short")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    r.shutdown().await;
}
