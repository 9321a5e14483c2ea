//! Mock upstreams: real HTTP servers on 127.0.0.1 that answer by a chosen behaviour and
//! record every request they receive (method, path, headers, body length).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpListener;

pub type Body = BoxBody<Bytes, Infallible>;
pub type Handler =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query exactly as received.
    pub target: String,
    pub headers: HeaderMap,
    pub body_len: u64,
    pub version: http::Version,
}

/// What a mock answers.
#[derive(Clone)]
pub enum Behavior {
    /// 200 with a body naming this upstream (`name`), after reading the whole request body.
    Named(String),
    /// A fixed status with a small body.
    Status(u16),
    /// 200 with this content type and body (a document, an image).
    Fixed {
        content_type: &'static str,
        body: &'static [u8],
    },
    /// Waits, then answers 200.
    Delay(Duration),
    /// Server-sent events: `count` events, `gap` apart.
    Sse { count: usize, gap: Duration },
    /// Answers 101 to a WebSocket upgrade, then echoes bytes.
    WebSocketEcho,
    /// Answers 200 to an upgrade request without switching protocols.
    RefuseUpgrade,
    /// A custom handler.
    Custom(Handler),
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    pub hits: Arc<AtomicUsize>,
    /// TCP connections accepted, to check keep-alive reuse.
    pub connections: Arc<AtomicUsize>,
    /// While false, `/healthz` answers 503.
    pub healthy: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MockUpstream {
    pub async fn start(behavior: Behavior) -> Self {
        Self::start_with(behavior, false).await
    }

    /// `h2c`: serve HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub async fn start_with(behavior: Behavior, h2c: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock upstream");
        Self::serve(listener, behavior, h2c, None).await
    }

    /// Serves TLS with the given server config (ALPN decides h1/h2).
    pub async fn start_tls(behavior: Behavior, tls: Arc<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock upstream");
        Self::serve(listener, behavior, false, Some(tls)).await
    }

    async fn serve(
        listener: TcpListener,
        behavior: Behavior,
        h2c: bool,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(AtomicUsize::new(0));
        let conns = Arc::clone(&connections);
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (rq, h, hl) = (
            Arc::clone(&requests),
            Arc::clone(&hits),
            Arc::clone(&healthy),
        );
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                    _ = &mut stop_rx => return,
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let behavior = behavior.clone();
                let (rq, h, hl) = (Arc::clone(&rq), Arc::clone(&h), Arc::clone(&hl));
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let behavior = behavior.clone();
                        let (rq, h, hl) = (Arc::clone(&rq), Arc::clone(&h), Arc::clone(&hl));
                        async move { Ok::<_, Infallible>(answer(req, behavior, rq, h, hl).await) }
                    });
                    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    if h2c {
                        b = b.http2_only();
                    }
                    match tls {
                        Some(cfg) => {
                            if let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                            {
                                let _ =
                                    b.serve_connection_with_upgrades(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = b
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            requests,
            hits,
            connections,
            healthy,
            stop: Some(stop_tx),
        }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().clone()
    }

    pub fn hit_count(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops accepting new connections (existing ones finish).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|e| match e {}).boxed()
}

async fn answer(
    mut req: Request<Incoming>,
    behavior: Behavior,
    rq: Arc<Mutex<Vec<Recorded>>>,
    hits: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
) -> Response<Body> {
    if req.uri().path() == "/healthz" {
        let ok = healthy.load(Ordering::SeqCst);
        let mut r = Response::new(full(if ok { "ok" } else { "down" }));
        *r.status_mut() = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return r;
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let version = req.version();
    if let Behavior::Custom(h) = &behavior {
        rq.lock().push(Recorded {
            method,
            target,
            headers,
            body_len: 0,
            version,
        });
        return h(req).await;
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut body_len = 0u64;
    let mut body = req.into_body();
    while let Some(Ok(f)) = body.frame().await {
        if let Some(d) = f.data_ref() {
            body_len += d.len() as u64;
        }
    }
    rq.lock().push(Recorded {
        method,
        target,
        headers,
        body_len,
        version,
    });
    match behavior {
        Behavior::Named(name) => Response::new(full(name)),
        Behavior::Status(s) => {
            let mut r = Response::new(full(format!("status {s}")));
            *r.status_mut() = StatusCode::from_u16(s).unwrap_or(StatusCode::OK);
            r
        }
        Behavior::Fixed { content_type, body } => {
            let mut r = Response::new(full(Bytes::from_static(body)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            r
        }
        Behavior::Delay(d) => {
            tokio::time::sleep(d).await;
            Response::new(full("slow"))
        }
        Behavior::Sse { count, gap } => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                for i in 0..count {
                    let ev = format!("id: {i}\nevent: tick\ndata: {{\"n\":{i}}}\n\n");
                    if tx.send(Ok(Frame::data(Bytes::from(ev)))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(gap).await;
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|f| (f, rx))
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
            r.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-cache"),
            );
            r
        }
        Behavior::WebSocketEcho => {
            tokio::spawn(async move {
                if let Ok(up) = on_upgrade.await {
                    let mut io = TokioIo::new(up);
                    let (mut r, mut w) = tokio::io::split(&mut io);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut().insert(
                http::header::UPGRADE,
                http::HeaderValue::from_static("websocket"),
            );
            r.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("upgrade"),
            );
            r
        }
        Behavior::RefuseUpgrade => Response::new(full("no upgrade here")),
        Behavior::Custom(_) => unreachable!("handled above"),
    }
}
