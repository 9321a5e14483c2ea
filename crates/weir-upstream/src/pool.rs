//! Connection pools: per worker thread and per endpoint, so checkout takes an uncontended
//! lock and a connection's I/O task runs on the thread that uses it. HTTP/1.1 connections
//! go back to the pool when the response body has been fully relayed (the proxy reports
//! that); an HTTP/2 connection is shared by all requests of its worker to that endpoint.

use std::time::Duration;

use crate::endpoint::now_ms;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::Mutex;
use tower_service::Service;

use crate::RequestBody;
use crate::connector::{Conn, ConnectError, Connector};

pub(crate) type H1 = http1::SendRequest<RequestBody>;
type H2 = http2::SendRequest<RequestBody>;

/// Idle HTTP/1.1 connections and the shared HTTP/2 connection of one endpoint, one worker.
#[derive(Default)]
struct Slot {
    /// Idle connections with the coarse time they went idle.
    h1: Mutex<Vec<(H1, u64)>>,
    h2: Mutex<Option<H2>>,
}

pub(crate) struct Pools {
    /// `[worker][endpoint]`; the last worker slot serves non-worker threads.
    slots: Vec<Vec<Slot>>,
    connector: Connector,
    h2c: bool,
    max_idle: usize,
    idle_timeout_ms: u64,
}

/// How a request failed to be exchanged.
pub(crate) enum ExchangeError {
    /// No connection could be made; the request was not sent.
    Connect(ConnectError),
    /// The request may have reached the upstream.
    Sent(hyper::Error),
}

/// What a successful exchange hands back: the response, and for HTTP/1.1 the connection to
/// return once the body is done.
pub(crate) struct Exchanged {
    pub response: Response<Incoming>,
    pub conn: Option<H1>,
}

impl Pools {
    pub(crate) fn new(
        workers: usize,
        endpoints: usize,
        connector: Connector,
        h2c: bool,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Self {
        let slots = (0..=workers)
            .map(|_| (0..endpoints).map(|_| Slot::default()).collect())
            .collect();
        Self {
            slots,
            connector,
            h2c,
            max_idle,
            idle_timeout_ms: idle_timeout.as_millis() as u64,
        }
    }

    pub(crate) fn worker_slot(&self) -> usize {
        crate::worker::index().min(self.slots.len() - 1)
    }

    /// Sends `req` to endpoint `idx` over a pooled or new connection. HTTP/1.1 sends the
    /// origin form already in `req`; HTTP/2 needs the absolute form, built from the parts.
    pub(crate) async fn exchange(
        &self,
        worker: usize,
        idx: usize,
        scheme: &http::uri::Scheme,
        authority: &http::uri::Authority,
        path: http::uri::PathAndQuery,
        mut req: Request<RequestBody>,
    ) -> Result<Exchanged, ExchangeError> {
        let slot = &self.slots[worker][idx];
        // A pooled connection that the upstream closed meanwhile refuses the request without
        // sending it; then a fresh connection is tried (a bounded number of times).
        for _ in 0..3 {
            let shared = slot.h2.lock().as_ref().filter(|s| !s.is_closed()).cloned();
            if let Some(mut h2) = shared {
                let absolute = http::Uri::builder()
                    .scheme(scheme.clone())
                    .authority(authority.clone())
                    .path_and_query(path.clone())
                    .build()
                    .map_err(|_| ExchangeError::Connect(ConnectError::BadAddress))?;
                *req.uri_mut() = absolute;
                match h2.try_send_request(req).await {
                    Ok(response) => {
                        return Ok(Exchanged {
                            response,
                            conn: None,
                        });
                    }
                    Err(mut e) => match e.take_message() {
                        Some(r) => {
                            *slot.h2.lock() = None;
                            req = r;
                            continue;
                        }
                        None => return Err(ExchangeError::Sent(e.into_error())),
                    },
                }
            }
            let mut conn = None;
            loop {
                let popped = slot.h1.lock().pop();
                let Some((mut s, since)) = popped else { break };
                if s.is_closed() || now_ms().saturating_sub(since) > self.idle_timeout_ms {
                    continue;
                }
                if s.is_ready() || s.ready().await.is_ok() {
                    conn = Some(s);
                    break;
                }
            }
            let mut h1 = match conn {
                Some(c) => c,
                None => match Box::pin(self.connect(authority)).await? {
                    Connected::H1(c) => c,
                    Connected::H2(c) => {
                        *slot.h2.lock() = Some(c);
                        continue;
                    }
                },
            };
            match h1.try_send_request(req).await {
                Ok(response) => {
                    return Ok(Exchanged {
                        response,
                        conn: Some(h1),
                    });
                }
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(ExchangeError::Sent(e.into_error())),
                },
            }
        }
        Err(ExchangeError::Connect(ConnectError::Io(
            std::io::Error::other("connections kept closing before the request was sent"),
        )))
    }

    /// Returns an HTTP/1.1 connection whose response was fully relayed.
    pub(crate) fn give_back(&self, worker: usize, idx: usize, conn: H1) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.slots[worker][idx].h1.lock();
        if idle.len() < self.max_idle {
            idle.push((conn, now_ms()));
        }
    }

    async fn connect(&self, authority: &http::uri::Authority) -> Result<Connected, ExchangeError> {
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| ExchangeError::Connect(ConnectError::BadAddress))?;
        let io = self
            .connector
            .clone()
            .call(uri)
            .await
            .map_err(ExchangeError::Connect)?;
        let h2 = self.h2c
            || matches!(&io, Conn::Tls(s) if s.inner().get_ref().1.alpn_protocol() == Some(b"h2"));
        if h2 {
            let (send, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(ExchangeError::Sent)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream h2 connection ended");
                }
            });
            Ok(Connected::H2(send))
        } else {
            let (send, conn) = http1::Builder::new()
                .writev(false)
                .handshake(io)
                .await
                .map_err(ExchangeError::Sent)?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
            Ok(Connected::H1(send))
        }
    }
}

enum Connected {
    H1(H1),
    H2(H2),
}
