//! Listeners and workers: one thread per worker, each with its own single-threaded Tokio
//! runtime accepting on shared listening sockets, so a connection, its requests and its
//! upstream pool stay on one core. Drains gracefully on shutdown up to a deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::gateway::Gateway;
use crate::pipeline::{self, ConnInfo};

/// Binds a listening socket (address reuse on, large backlog), ready to share by workers.
pub fn bind(addr: &str) -> std::io::Result<std::net::TcpListener> {
    let addr: SocketAddr = addr.parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("invalid address {addr:?}"),
        )
    })?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Listening sockets handed to the workers.
pub struct Listeners {
    pub proxy: std::net::TcpListener,
    pub tls: Option<std::net::TcpListener>,
}

/// Running workers; `join` waits for them after shutdown was signalled.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    pub fn start(
        gateway: Arc<Gateway>,
        listeners: &Listeners,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let tls = gateway
            .cert_resolver()
            .map(|r| TlsAcceptor::from(r.server_config()));
        let mut threads = Vec::new();
        for i in 0..gateway.workers() {
            let proxy = listeners.proxy.try_clone()?;
            let tls_listener = match &listeners.tls {
                Some(l) => Some(l.try_clone()?),
                None => None,
            };
            let gw = Arc::clone(&gateway);
            let tls = tls.clone();
            let shutdown = shutdown.clone();
            let t = std::thread::Builder::new()
                .name(format!("weir-worker-{i}"))
                .spawn(move || {
                    weir_upstream::worker::set_index(i);
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start a worker runtime");
                            return;
                        }
                    };
                    rt.block_on(worker_main(gw, proxy, tls_listener.zip(tls), shutdown));
                })?;
            threads.push(t);
        }
        Ok(Self { threads })
    }

    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

async fn worker_main(
    gw: Arc<Gateway>,
    proxy: std::net::TcpListener,
    tls: Option<(std::net::TcpListener, TlsAcceptor)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let snap = gw.snapshot();
    let limits = snap.config.limits.clone();
    let deadline = snap.config.shutdown_timeout.get();
    drop(snap);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout.get())
        .max_buf_size(limits.max_header_size.0.max(8192) as usize)
        .writev(false)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_size.0.min(u64::from(u32::MAX)) as u32)
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(64)
        .keep_alive_interval(Duration::from_secs(30));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let Ok(proxy) = TcpListener::from_std(proxy) else {
        tracing::error!("cannot register the proxy listener");
        return;
    };
    let (tls_listener, acceptor) = match tls {
        Some((l, a)) => match TcpListener::from_std(l) {
            Ok(l) => (Some(l), Some(a)),
            Err(e) => {
                tracing::error!(error = %e, "cannot register the TLS listener");
                return;
            }
        },
        None => (None, None),
    };
    let open = weir_telemetry::metrics::open_connections("proxy");
    let total = weir_telemetry::metrics::connections_total("proxy");
    let handshake_timeout = limits.header_timeout.get();
    loop {
        let (stream, peer, is_tls) = tokio::select! {
            r = proxy.accept() => match r {
                Ok((s, p)) => (s, p, false),
                Err(e) => { accept_error(e).await; continue; }
            },
            r = accept_opt(tls_listener.as_ref()) => match r {
                Ok((s, p)) => (s, p, true),
                Err(e) => { accept_error(e).await; continue; }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        total.increment(1);
        let conn = ConnInfo::new(peer, is_tls);
        let gw = Arc::clone(&gw);
        let builder = Arc::clone(&builder);
        let open = open.clone();
        let svc = service_fn(move |req| {
            let snap = gw.snapshot();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(pipeline::handle(snap, conn, req).await) }
        });
        if is_tls {
            let Some(acceptor) = acceptor.clone() else {
                continue;
            };
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let tls =
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        _ => return,
                    };
                open.increment(1.0);
                let c = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                let _ = watcher.watch(c.into_owned()).await;
                open.decrement(1.0);
            });
        } else {
            let c = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .into_owned();
            let fut = graceful.watch(c);
            tokio::spawn(async move {
                open.increment(1.0);
                let _ = fut.await;
                open.decrement(1.0);
            });
        }
    }
    drop(proxy);
    drop(tls_listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(deadline) => {
            tracing::warn!(deadline = ?deadline, "shutdown deadline passed; closing the remaining connections");
        }
    }
}

async fn accept_opt(l: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Out of file descriptors and similar: log, pause briefly instead of spinning.
async fn accept_error(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
