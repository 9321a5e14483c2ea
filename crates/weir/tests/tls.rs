//! TLS: termination with certificates chosen by SNI and HTTP/2 by ALPN; TLS to upstreams,
//! verified by default, with h2 negotiated by ALPN.

// Integration tests: a panic is a test failure, and bodies here are small and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use weir_testkit::certs::{TestCa, client_config};

async fn tls_connect(
    addr: std::net::SocketAddr,
    name: &str,
    ca: &TestCa,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(client_config(&ca.cert_pem, alpn));
    connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminates_tls_choosing_certificates_by_sni_and_h2_by_alpn() {
    let ca = TestCa::new();
    let dir = temp_dir("tls");
    let (a_cert, a_key) = ca.leaf(&["a.test"]).write(&dir, "a");
    let (b_cert, b_key) = ca.leaf(&["b.test", "*.wild.test"]).write(&dir, "b");
    let up = MockUpstream::start(Behavior::Named("u".into())).await;
    let gw = gateway_raw(&format!(
        "listen:
  proxy: 127.0.0.1:0
  tls:
    address: 127.0.0.1:0
    certificates:
      - {{ cert: {}, key: {} }}
      - {{ cert: {}, key: {} }}
workers: 1
access_log: off
upstreams:\n{}routes:\n  - {{ name: all, upstream: u }}\n",
        a_cert.display(),
        a_key.display(),
        b_cert.display(),
        b_key.display(),
        upstream("u", &[up.address()], "")
    ));
    let addr = gw.tls_addr.unwrap();
    // Each name verifies against its own certificate (the client checks the name).
    for name in ["a.test", "b.test", "x.wild.test"] {
        let s = tls_connect(addr, name, &ca, &[b"h2"])
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri(format!("https://{name}/hello"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let rsp = send.send_request(req).await.unwrap();
        assert_eq!(rsp.status(), 200, "{name}");
        assert_eq!(rsp.into_body().collect().await.unwrap().to_bytes(), "u");
    }
    let seen = up.recorded();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
    // HTTP/1.1 by ALPN also works.
    let s = tls_connect(addr, "a.test", &ca, &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("/h1")
        .header("host", "a.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstreams_are_verified_and_speak_h2_by_alpn() {
    let ca = TestCa::new();
    let dir = temp_dir("uptls");
    let leaf = ca.leaf(&["localhost"]);
    let up = MockUpstream::start_tls(
        Behavior::Named("secure".into()),
        leaf.server_config(&[b"h2", b"http/1.1"]),
    )
    .await;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    let gw = gateway(&format!(
        "upstreams:
  trusted:
    targets: [ {{ address: \"{addr}\" }} ]
    tls: {{ ca: {ca}, sni: localhost }}
  default-roots:
    targets: [ {{ address: \"{addr}\" }} ]
    tls: {{ sni: localhost }}
  unverified:
    targets: [ {{ address: \"{addr}\" }} ]
    protocol: http1
    tls: {{ sni: localhost, verify: false }}
routes:
  - {{ name: t, upstream: trusted, match: {{ paths: [\"/t\"] }} }}
  - {{ name: d, upstream: default-roots, match: {{ paths: [\"/d\"] }} }}
  - {{ name: u, upstream: unverified, match: {{ paths: [\"/u\"] }} }}
",
        addr = up.address(),
        ca = ca_path.display()
    ));
    let cl = HttpClient::new();
    let r = cl.get(&url(&gw, "/t")).await;
    assert_eq!(r.text(), "secure");
    assert_eq!(up.recorded().last().unwrap().version, http::Version::HTTP_2);
    // A certificate from an unknown CA is refused: verification is on by default.
    let r = cl.get(&url(&gw, "/d")).await;
    assert_eq!(r.status, 502);
    assert_eq!(up.recorded().len(), 1);
    let r = cl.get(&url(&gw, "/u")).await;
    assert_eq!(r.text(), "secure");
    assert_eq!(
        up.recorded().last().unwrap().version,
        http::Version::HTTP_11
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
