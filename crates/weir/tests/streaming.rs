//! Streaming through the gateway: SSE events arrive as the upstream sends them, request
//! bodies stream without buffering (a 1 GiB upload with flat memory), WebSockets tunnel.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_as_the_upstream_sends_them() {
    let up = MockUpstream::start(Behavior::Sse {
        count: 4,
        gap: Duration::from_millis(250),
    })
    .await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: sse, upstream: u }}\n",
        upstream("u", &[up.address()], "")
    ));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    let start = Instant::now();
    let rsp = client
        .get(url(&gw, "/events").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.headers()["content-type"], "text/event-stream");
    let mut body = rsp.into_body();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.unwrap().data_ref() {
            text.push_str(std::str::from_utf8(d).unwrap());
            arrivals.push(start.elapsed());
        }
    }
    assert_eq!(text.matches("event: tick").count(), 4, "{text}");
    // The first event comes at once and the last about 750 ms later: nothing was held back.
    assert!(
        arrivals[0] < Duration::from_millis(200),
        "first event after {:?}",
        arrivals[0]
    );
    assert!(
        *arrivals.last().unwrap() > Duration::from_millis(600),
        "{arrivals:?}"
    );
    assert!(arrivals.len() >= 4, "events were coalesced: {arrivals:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_tunnelled_only_after_a_101() {
    let ws = MockUpstream::start(Behavior::WebSocketEcho).await;
    let refuse = MockUpstream::start(Behavior::RefuseUpgrade).await;
    let gw = gateway(&format!(
        "upstreams:\n{}{}routes:
  - {{ name: ws, upstream: ws, match: {{ paths: [\"/ws\"] }} }}
  - {{ name: no, upstream: no, match: {{ paths: [\"/no\"] }} }}
",
        upstream("ws", &[ws.address()], ""),
        upstream("no", &[refuse.address()], "")
    ));
    let mut s = tokio::net::TcpStream::connect(gw.proxy_addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello"[..], b"weir tunnels bytes"] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, msg);
    }
    // An upstream that does not switch: the reply is relayed and nothing is tunnelled.
    let reply = raw_request(
        &gw.proxy_addr.to_string(),
        b"GET /no HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /no HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(
        reply.matches("HTTP/1.1 200").count(),
        2,
        "bytes after the upgrade request are parsed as a request: {reply}"
    );
    // Only WebSocket upgrades are accepted (h2c and others are refused).
    let reply = raw_request(
        &gw.proxy_addr.to_string(),
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    gw.shutdown().await;
}

/// Streams 1 GiB through the gateway into an upstream that counts and discards it, and
/// checks that the process's resident memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_with_flat_memory() {
    const TOTAL: u64 = 1 << 30;
    let up = MockUpstream::start(Behavior::Named("done".into())).await;
    let gw = gateway(&format!(
        "limits: {{ max_body_size: 2GiB }}\nupstreams:\n{}routes:\n  - {{ name: up, upstream: u }}\n",
        upstream("u", &[up.address()], "")
    ));
    let before = weir_testkit::rss_kib(std::process::id());
    let mut s = tokio::net::TcpStream::connect(gw.proxy_addr).await.unwrap();
    s.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {TOTAL}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let chunk = vec![b'x'; 256 * 1024];
    let mut sent = 0u64;
    let mut peak = before;
    while sent < TOTAL {
        s.write_all(&chunk).await.unwrap();
        sent += chunk.len() as u64;
        if sent.is_multiple_of(64 << 20) {
            peak = peak.max(weir_testkit::rss_kib(std::process::id()));
        }
    }
    let mut reply = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(up.recorded()[0].body_len, TOTAL);
    let grown_mib = peak.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "memory grew by {grown_mib} MiB while streaming 1 GiB"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_over_the_limit_get_413() {
    let up = MockUpstream::start(Behavior::Named("u".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: small, upstream: u, max_body_size: 1KiB }}\n",
        upstream("u", &[up.address()], "")
    ));
    let mut req = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'a'; 0x200]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let reply = raw_request(
        &gw.proxy_addr.to_string(),
        &req,
        Duration::from_millis(1500),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    let cl = HttpClient::new();
    let r = cl
        .request(
            http::Method::POST,
            &url(&gw, "/"),
            &[],
            Bytes::from(vec![b'a'; 2048]),
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["type"], "payload_too_large");
    let r = cl
        .request(
            http::Method::POST,
            &url(&gw, "/"),
            &[],
            Bytes::from(vec![b'a'; 1000]),
        )
        .await;
    assert_eq!(r.status, 200);
    gw.shutdown().await;
}
