//! Listeners and workers: one thread per worker, each with its own single-threaded Tokio
//! runtime accepting on shared listening sockets, so a connection, its requests and its
//! upstream pool stay on one core. Drains gracefully on shutdown up to a deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use weir_core::overload;

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
        shed: watch::Receiver<u64>,
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
            let shed = shed.clone();
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
                    rt.block_on(worker_main(
                        gw,
                        proxy,
                        tls_listener.zip(tls),
                        shutdown,
                        shed,
                    ));
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
    shed: watch::Receiver<u64>,
) {
    let snap = gw.snapshot();
    let limits = snap.config.limits.clone();
    let snap_overload = Arc::clone(&snap.overload);
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
    // Each connection holds a receiver: a send asks them all to finish, and the sender
    // sees when the last one has ended.
    let (drain, drain_rx) = watch::channel(false);
    let node = Arc::clone(&snap_overload);
    loop {
        if node.pressure() >= overload::Pressure::StopAccepting {
            // New connections wait in the listen backlog until memory falls.
            node.count(overload::Action::StopAccepting);
            tokio::select! {
                () = memory_recovered(&node) => {}
                _ = shutdown.changed() => break,
            }
        }
        let (stream, peer, is_tls) = tokio::select! {
            () = memory_critical(&node) => continue,
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
        total.increment(1);
        // At the cap the connection is closed at once (counted), rather than left to wait.
        let Some(slot) = node.connection() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo::new(peer, is_tls);
        let gw = Arc::clone(&gw);
        let builder = Arc::clone(&builder);
        let open = open.clone();
        let served = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&served);
        let svc = service_fn(move |req| {
            let snap = gw.snapshot();
            let conn = conn.clone();
            counter.fetch_add(1, Ordering::Relaxed);
            // An intermediary answers in its own HTTP version (RFC 9110 §6.2), whatever
            // the upstream spoke: an HTTP/1.0 upstream must not close the client's
            // keep-alive connection. HTTP/2 ignores the field.
            let h1 = req.version() < http::Version::HTTP_2;
            async move {
                let mut rsp = pipeline::handle(snap, conn, req).await;
                if h1 {
                    *rsp.version_mut() = http::Version::HTTP_11;
                }
                Ok::<_, Infallible>(rsp)
            }
        });
        let signals = Signals {
            node: Arc::clone(&node),
            drain: drain_rx.clone(),
            shed: shed.clone(),
            served,
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if is_tls {
                let Some(acceptor) = acceptor else { return };
                let tls =
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        _ => return,
                    };
                open.increment(1.0);
                let c = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                signals.run(c, |c| c.graceful_shutdown()).await;
            } else {
                // hyper's header timer starts with the first byte of a head, so a client
                // that connects and sends nothing would hold the connection for ever.
                let mut first = [0u8; 1];
                if tokio::time::timeout(handshake_timeout, stream.peek(&mut first))
                    .await
                    .is_err()
                {
                    return;
                }
                open.increment(1.0);
                let c = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                signals.run(c, |c| c.graceful_shutdown()).await;
            }
            open.decrement(1.0);
        });
    }
    drop(proxy);
    drop(tls_listener);
    drop(drain_rx);
    let _ = drain.send(true);
    tokio::select! {
        () = drain.closed() => {}
        _ = tokio::time::sleep(deadline) => {
            tracing::warn!(deadline = ?deadline, "shutdown deadline passed; closing the remaining connections");
        }
    }
}

/// What a connection listens to besides its client: the worker draining at shutdown and
/// the overload manager shedding kept-alive connections.
struct Signals {
    node: Arc<overload::Overload>,
    drain: watch::Receiver<bool>,
    shed: watch::Receiver<u64>,
    /// Requests begun on this connection: a connection that has not had its first one is
    /// not shed, or a client would lose a connection it just opened.
    served: Arc<AtomicU64>,
}

impl Signals {
    /// Serves `conn` to its end, asking it to finish (`graceful`: an idle connection
    /// closes at once, a busy one after its current request) on a signal.
    async fn run<F: Future>(mut self, conn: F, graceful: impl FnOnce(Pin<&mut F>)) {
        let mut conn = std::pin::pin!(conn);
        let mut graceful = Some(graceful);
        let mut shed_live = true;
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = self.drain.changed(), if graceful.is_some() => {}
                r = self.shed.changed(), if graceful.is_some() && shed_live => {
                    if r.is_err() {
                        shed_live = false;
                        continue;
                    }
                    if self.served.load(Ordering::Relaxed) == 0 {
                        continue;
                    }
                    self.node.count(overload::Action::ShedKeepAlive);
                }
            }
            if let Some(g) = graceful.take() {
                g(conn.as_mut());
            }
        }
    }
}

/// Resolves once the node is too short of memory to take new connections.
async fn memory_critical(node: &overload::Overload) {
    while node.pressure() < overload::Pressure::StopAccepting {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resolves once memory has fallen below the level that stops accepting.
async fn memory_recovered(node: &overload::Overload) {
    while node.pressure() >= overload::Pressure::StopAccepting {
        tokio::time::sleep(Duration::from_millis(50)).await;
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
