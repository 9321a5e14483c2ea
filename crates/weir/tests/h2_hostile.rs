//! HTTP/2 floods (hostile-input class 12): Rapid Reset and CONTINUATION floods end in
//! GOAWAY(ENHANCE_YOUR_CALM) and a closed connection, with bounded work, while other
//! clients keep being served.

// Integration tests: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK: :method GET, :scheme http, :path /, :authority "x" (literal, not indexed).
const HEADERS_BLOCK: &[u8] = &[0x82, 0x86, 0x84, 0x01, 0x01, b'x'];

/// Reads frames until the server closes or `wait` passes; returns the GOAWAY error code.
async fn goaway_code(s: &mut tokio::net::TcpStream, wait: Duration) -> Option<u32> {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => data.extend_from_slice(&buf[..n]),
        }
    }
    let mut i = 0;
    while i + 9 <= data.len() {
        let len = u32::from_be_bytes([0, data[i], data[i + 1], data[i + 2]]) as usize;
        if data[i + 3] == 7 && i + 9 + 8 <= data.len() {
            return Some(u32::from_be_bytes(data[i + 13..i + 17].try_into().unwrap()));
        }
        i += 9 + len;
    }
    None
}

async fn setup() -> (weir_proxy::app::Running, MockUpstream) {
    let up = MockUpstream::start(Behavior::Named("up".into())).await;
    let gw = gateway(&format!(
        "upstreams:\n{}routes:\n  - {{ name: all, upstream: u }}\n",
        upstream("u", &[up.address()], "")
    ));
    (gw, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_goaway_enhance_your_calm() {
    let (gw, _up) = setup().await;
    let mut s = tokio::net::TcpStream::connect(gw.proxy_addr).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(4, 0, 0, &[]));
    for i in 0..2000u32 {
        let id = 1 + 2 * i;
        out.extend(frame(1, 0x5, id, HEADERS_BLOCK));
        out.extend(frame(3, 0, id, &8u32.to_be_bytes()));
    }
    let _ = s.write_all(&out).await;
    assert_eq!(
        goaway_code(&mut s, Duration::from_secs(3)).await,
        Some(ENHANCE_YOUR_CALM)
    );
    // Other clients are still served.
    assert_eq!(HttpClient::new().get(&url(&gw, "/ok")).await.status, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_cut_off() {
    let (gw, up) = setup().await;
    let mut s = tokio::net::TcpStream::connect(gw.proxy_addr).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(4, 0, 0, &[]));
    out.extend(frame(1, 0x1, 1, HEADERS_BLOCK)); // END_STREAM, no END_HEADERS
    s.write_all(&out).await.unwrap();
    // A header field of 127 bytes, repeated: CONTINUATION frames that never end the block.
    let mut field = vec![0x00, 0x03, b'x', b'-', b'a', 0x7f, 0x00];
    field.extend(std::iter::repeat_n(b'v', 127));
    let block: Vec<u8> = field
        .iter()
        .copied()
        .cycle()
        .take(field.len() * 10)
        .collect();
    let mut sent = 0usize;
    for _ in 0..20_000 {
        if s.write_all(&frame(9, 0, 1, &block)).await.is_err() {
            break;
        }
        sent += block.len();
    }
    assert!(
        sent < 16 << 20,
        "the server kept reading a header block of {sent} bytes"
    );
    assert_eq!(
        goaway_code(&mut s, Duration::from_secs(3)).await,
        Some(ENHANCE_YOUR_CALM)
    );
    assert_eq!(up.hit_count(), 0);
    assert_eq!(HttpClient::new().get(&url(&gw, "/ok")).await.status, 200);
    gw.shutdown().await;
}
