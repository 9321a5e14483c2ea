//! The two ways a proxied request is answered once the upstream has answered or the cache
//! has: the response relayed (after filling the cache when it may be kept), or a kept
//! answer sent from the cache. Part of the lifecycle in `pipeline.rs`, kept apart because
//! the cache fill awaits the body before the client sees it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Response};
use hyper::body::Incoming;
use weir_core::{GatewayError, RequestId};
use weir_policy::{PolicyCtx, X_CACHE_STATUS};

use crate::body::ProxyBody;
use crate::error_response;
use crate::finish::LogData;
use crate::headers::X_REQUEST_ID;
use crate::pipeline::{finish, with_error};
use crate::snapshot::Route;

/// What answering with an upstream's response needs, gathered to move as one.
pub(crate) struct Upstreamed {
    pub(crate) route: Arc<Route>,
    pub(crate) request_id: RequestId,
    pub(crate) pctx: PolicyCtx,
    pub(crate) log: Option<LogData>,
    pub(crate) endpoint: Arc<str>,
    pub(crate) in_flight: weir_upstream::InFlight,
    pub(crate) start: Instant,
    pub(crate) upstream_secs: Option<f64>,
}

impl Upstreamed {
    /// The upstream's answer (hop-by-hop fields already gone) to the client; `Err` when
    /// its body failed while the cache read it: nothing was sent yet, so a clean 502.
    pub(crate) fn respond(
        mut self,
        mut parts: http::response::Parts,
        body: Result<ProxyBody, ()>,
    ) -> Response<ProxyBody> {
        let route = &self.route;
        let Ok(body) = body else {
            let err =
                GatewayError::upstream(&route.upstream.name, weir_core::UpstreamFailure::Protocol);
            let mut rsp = error_response::render(&err, self.request_id.as_str());
            route.policies.on_response(rsp.headers_mut(), &self.pctx);
            let log = self.log.map(|l| with_error(l, err.kind()));
            return finish(
                rsp,
                route,
                self.start,
                self.upstream_secs,
                None,
                log,
                &mut self.pctx,
            );
        };
        parts
            .headers
            .insert(&X_REQUEST_ID, self.request_id.header_value().clone());
        route.policies.on_response(&mut parts.headers, &self.pctx);
        let rsp = Response::from_parts(parts, body);
        let log = self.log.map(|mut l| {
            l.endpoint = Some(self.endpoint);
            l
        });
        finish(
            rsp,
            route,
            self.start,
            self.upstream_secs,
            Some(self.in_flight),
            log,
            &mut self.pctx,
        )
    }
}

/// The cache's part in one request: how it answered, and what to do with the upstream's.
pub(crate) struct CacheState {
    pub(crate) status: &'static str,
    pub(crate) fill: Option<weir_policy::Fill>,
    pub(crate) invalidate: Option<weir_policy::Invalidate>,
}

impl CacheState {
    /// Keeps a storable answer (reading its body, up to the cache's limit, before the
    /// client gets it), or drops what an unsafe request changed. `Err` when the upstream's
    /// body failed while being read: nothing was sent yet, so the client gets a clean 502.
    pub(crate) fn settle_boxed(
        self: Box<Self>,
        parts: http::response::Parts,
        body: Incoming,
        up: Upstreamed,
    ) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>> {
        Box::pin(async move {
            let (parts, settled) = self.settle(parts, body).await;
            up.respond(parts, settled)
        })
    }

    async fn settle(
        self: Box<Self>,
        mut rsp: http::response::Parts,
        body: Incoming,
    ) -> (http::response::Parts, Result<ProxyBody, ()>) {
        let status = self.status;
        let body = self.settle_body(&rsp, body).await;
        rsp.headers
            .insert(X_CACHE_STATUS, HeaderValue::from_static(status));
        (rsp, body)
    }

    async fn settle_body(
        mut self: Box<Self>,
        rsp: &http::response::Parts,
        body: Incoming,
    ) -> Result<ProxyBody, ()> {
        use http_body_util::BodyExt;
        if let Some(inv) = self.invalidate.take()
            && (rsp.status.is_success() || rsp.status.is_redirection())
        {
            inv.run().await;
        }
        let Some(fill) = self.fill.take() else {
            return Ok(ProxyBody::upstream(body));
        };
        let Some(fresh) = fill.freshness(rsp.status, &rsp.headers) else {
            fill.pass();
            return Ok(ProxyBody::upstream(body));
        };
        let max = fill.max_body();
        let mut body = body;
        let mut buf = bytes::BytesMut::new();
        loop {
            if http_body::Body::is_end_stream(&body) {
                break;
            }
            match body.frame().await {
                None => break,
                Some(Err(_)) => return Err(()),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        buf.extend_from_slice(&data);
                        if buf.len() > max {
                            // Too big to keep: send what was read, then the rest.
                            fill.pass();
                            return Ok(ProxyBody::prefixed(buf.freeze(), body));
                        }
                    }
                    // Trailers: not kept; the answer has ended.
                    Err(_) => break,
                },
            }
        }
        let bytes = buf.freeze();
        fill.store(rsp.status, rsp.headers.clone(), bytes.clone(), fresh)
            .await;
        Ok(ProxyBody::full(bytes))
    }
}

/// A kept answer, as sent for a hit (`HEAD` gets the headers only).
pub(crate) fn cached_response(
    stored: &weir_policy::Stored,
    method: &Method,
    request_id: &RequestId,
) -> Response<ProxyBody> {
    let body = if *method == Method::HEAD || stored.body.is_empty() {
        ProxyBody::empty()
    } else {
        ProxyBody::full(stored.body.clone())
    };
    let mut rsp = Response::new(body);
    *rsp.status_mut() = stored.status;
    *rsp.headers_mut() = stored.headers.clone();
    let h = rsp.headers_mut();
    h.insert(header::AGE, HeaderValue::from(stored.age_secs()));
    h.insert(X_CACHE_STATUS, HeaderValue::from_static("HIT"));
    h.insert(&X_REQUEST_ID, request_id.header_value().clone());
    rsp
}
