//! Hostile input regression tests (see docs/security.md and the attack classes they cover):
//! each case asserts what the client gets and what reached the upstream.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_millis(700);

async fn setup() -> (weir_proxy::app::Running, MockUpstream, MockUpstream) {
    let open = MockUpstream::start(Behavior::Named("open".into())).await;
    let admin = MockUpstream::start(Behavior::Named("admin".into())).await;
    let gw = gateway(&format!(
        "limits: {{ max_header_size: 16KiB, header_timeout: 1s }}
upstreams:\n{}{}routes:
  - {{ name: open, upstream: open, match: {{ paths: [\"/*\"] }} }}
  - {{ name: admin, upstream: admin, match: {{ paths: [\"/admin/*\"] }} }}
",
        upstream("open", &[open.address()], ""),
        upstream("admin", &[admin.address()], "")
    ));
    (gw, open, admin)
}

fn status_of(reply: &str) -> &str {
    reply.get(9..12).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_route_by_the_normalized_path() {
    let (gw, open, admin) = setup().await;
    let addr = gw.proxy_addr.to_string();
    // Each variant reaches the admin route (and so would get its policies) with the
    // normalized path; none reaches the open route as a path that resolves to /admin.
    for p in [
        "/public/../admin/x",
        "//admin/x",
        "/./admin/x",
        "/%2e%2e/admin/x",
        "/public/%2e%2e/admin/x",
        "/public/.%2e/admin/x",
        "/public/%2E./admin/x",
        "/../../admin/x",
        "/%61dmin/x",
    ] {
        let reply = raw_request(
            &addr,
            format!("GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            WAIT,
        )
        .await;
        assert_eq!(status_of(&reply), "200", "{p}: {reply}");
        assert!(
            reply.ends_with("admin"),
            "{p} was not routed to the admin route: {reply}"
        );
        assert_eq!(admin.recorded().last().unwrap().target, "/admin/x", "{p}");
    }
    // Double encoding is decoded once only: it stays a literal segment on the open route.
    let reply = raw_request(
        &addr,
        b"GET /%252e%252e/admin/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(reply.ends_with("open"), "{reply}");
    assert_eq!(
        open.recorded().last().unwrap().target,
        "/%252e%252e/admin/x"
    );
    // Refused outright.
    for p in [
        "/api%2Fadmin",
        "/admin%5cx",
        "/a%00b",
        "/public/..;/admin/x",
        "/a%zz",
        "/a\\b",
    ] {
        let reply = raw_request(
            &addr,
            format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            WAIT,
        )
        .await;
        assert_eq!(status_of(&reply), "400", "{p}: {reply}");
    }
    let hits = open.hit_count() + admin.hit_count();
    assert_eq!(hits, 10, "refused requests never reach an upstream");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_framing_is_refused_and_closes_the_connection() {
    let (gw, open, _admin) = setup().await;
    let addr = gw.proxy_addr.to_string();
    let cases: &[(&str, &[u8])] = &[
        ("double cl", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("plus cl", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc"),
        ("te xchunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        ("te chunked,identity", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        ("space before colon", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
        ("two hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("nul in header", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
        ("bad host port", b"GET / HTTP/1.1\r\nHost: x:99999\r\n\r\n"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n  folded\r\n\r\n"),
        ("bare LF in chunk size line", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n"),
    ];
    for (name, bytes) in cases {
        let reply = raw_request(&addr, bytes, WAIT).await;
        assert!(
            reply.starts_with("HTTP/1.1 4") || reply.starts_with("HTTP/1.1 501"),
            "{name}: {reply:?}"
        );
        assert_eq!(
            reply.matches("HTTP/1.1").count(),
            1,
            "{name}: a second request was answered: {reply}"
        );
    }
    assert_eq!(
        open.hit_count(),
        0,
        "no malformed request reached the upstream"
    );
    let reply = raw_request(
        &addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(
        reply.starts_with("HTTP/1.1 405") || reply.starts_with("HTTP/1.1 400"),
        "{reply}"
    );
    gw.shutdown().await;
}

/// RFC 9112 §6.3: with both headers the body is read as chunked and the connection is
/// closed after the answer. The upstream never sees both headers, and bytes smuggled after
/// the chunked body are never parsed as a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_never_smuggles() {
    let (gw, open, _admin) = setup().await;
    let reply = raw_request(
        &gw.proxy_addr.to_string(),
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(reply.matches("HTTP/1.1").count(), 1, "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    assert!(open.recorded().iter().all(|r| r.target != "/smuggled"));
    for r in open.recorded() {
        assert!(
            !(r.headers.contains_key("content-length")
                && r.headers.contains_key("transfer-encoding"))
        );
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let (gw, open, _admin) = setup().await;
    let big = "a".repeat(20 * 1024);
    let reply = raw_request(
        &gw.proxy_addr.to_string(),
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(status_of(&reply), "431", "{reply}");
    assert_eq!(open.hit_count(), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_senders_are_cut_off() {
    let (gw, open, _admin) = setup().await;
    let mut s = tokio::net::TcpStream::connect(gw.proxy_addr).await.unwrap();
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Trickle one header byte every 200 ms; the 1 s header deadline must end this.
    let mut closed = false;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if s.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            closed = n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408");
            if closed {
                break;
            }
        }
    }
    assert!(closed, "connection still open after {:?}", start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(4));
    assert_eq!(open.hit_count(), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_errors_close_a_connection_with_an_unread_body() {
    let up = MockUpstream::start(Behavior::Named("u".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: small, upstream: u, max_body_size: 10, match: {{ paths: [\"/s\"] }} }}\n",
        upstream("u", &[up.address()], "")
    ));
    // The body of the refused request carries a smuggled request; it must never be parsed.
    let reply = raw_request(
        &gw.proxy_addr.to_string(),
        b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\nGET /s HTTP/1.1\r\nHost: x\r\n\r\nxxxxxxxxxxx",
        WAIT,
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert_eq!(reply.matches("HTTP/1.1").count(), 1, "{reply}");
    assert_eq!(up.hit_count(), 0);
    gw.shutdown().await;
}
