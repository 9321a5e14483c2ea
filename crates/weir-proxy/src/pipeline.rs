//! The request lifecycle, top to bottom: framing checks → one canonical view (path, host)
//! → route → limits → upstream request → send → response → finish (metrics, access log).
//! See `docs/request-lifecycle.md` for the chart.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use weir_core::{GatewayError, RequestId, normalize_path};
use weir_policy::{CacheRequest, Flow, Lookup, PolicyCtx, Reply};
use weir_router::{PathMatch, RequestView, canonical_host};
use weir_upstream::{RequestHead, UpstreamKind};

use crate::body::ProxyBody;
use crate::finish::{CallData, Finish, LogData};
use crate::headers::{self, X_REQUEST_ID};
use crate::respond::{CacheState, Upstreamed, cached_response};
use crate::snapshot::{HashOn, Route, Snapshot};
use crate::{builtin, error_response, upgrade};

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The peer address as a header value, formatted once per connection.
    pub peer_header: HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        // An IP address always formats to a valid header value.
        let peer_header = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Self {
            peer,
            tls,
            peer_header,
        }
    }
}

pub async fn handle(
    snap: Arc<Snapshot>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let (mut parts, body) = req.into_parts();
    let request_id = parts
        .headers
        .get(&X_REQUEST_ID)
        .and_then(RequestId::from_client)
        .unwrap_or_else(RequestId::generate);

    // 1. Framing and request-line checks, before anything reads the request.
    if let Err(e) = check_framing(&parts) {
        return early_error(
            &snap,
            &e,
            &request_id,
            &parts.method,
            parts.uri.path(),
            &conn,
            start,
            None,
        );
    }

    // 2. One canonical view: the normalized path and the host.
    let raw_path = parts.uri.path();
    let path = match normalize_path(raw_path, snap.path_options) {
        Ok(p) => p,
        Err(e) => {
            let err = GatewayError::BadRequest(normalize_message(e));
            return early_error(
                &snap,
                &err,
                &request_id,
                &parts.method,
                raw_path,
                &conn,
                start,
                None,
            );
        }
    };
    let host_src = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    let host = match host_src.map(canonical_host) {
        Some(Some(h)) => h,
        Some(None) => {
            let err = GatewayError::BadRequest("the Host header is not a valid host");
            return early_error(
                &snap,
                &err,
                &request_id,
                &parts.method,
                &path,
                &conn,
                start,
                None,
            );
        }
        None => Cow::Borrowed(""),
    };

    let early = Early {
        snap: &snap,
        request_id: &request_id,
        method: &parts.method,
        path: &path,
        conn: &conn,
        start,
    };

    // 3. Route.
    let view = RequestView {
        host: &host,
        path: &path,
        method: &parts.method,
        headers: &parts.headers,
    };
    let Some(matched) = snap.table.find(&view) else {
        return early.fail(&GatewayError::NoRoute, None);
    };
    let route = Arc::clone(&snap.routes[matched.route]);
    // The cache keys on the canonical host, which borrows the headers changed below.
    // Scheme and port are keyed too: an upstream may build absolute links from them.
    let cache_host = route.policies.cache.is_some().then(|| {
        let port = host_src
            .and_then(|h| h.rsplit_once(':'))
            .map(|(_, p)| p)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or("");
        let scheme = if conn.tls { "https" } else { "http" };
        format!("{scheme}://{host}:{port}")
    });

    // 4. Header hygiene, before any policy sees the request: hop-by-hop and
    //    Connection-named headers, client-sent internal and consumer headers, forwarding
    //    headers; the client address is derived here, once.
    let is_upgrade = upgrade::is_upgrade_request(&parts.headers);
    if is_upgrade && !upgrade::is_websocket(&parts.headers) {
        let err = GatewayError::BadRequest("only WebSocket upgrades are supported");
        return early.fail(&err, Some(&route));
    }
    let client_upgrade = if is_upgrade {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let scan = headers::Scan::of(&parts.headers);
    // Room for the forwarding headers and the request id, so the map grows at most once.
    parts.headers.reserve(4);
    headers::strip_hop_by_hop(&mut parts.headers, is_upgrade, scan);
    headers::remove_internal(&mut parts.headers, scan);
    let host_value = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let peer_ip = conn.peer.ip();
    let peer = headers::Peer {
        ip: peer_ip,
        header: &conn.peer_header,
        trusted: !snap.trusted_proxies.is_empty() && snap.is_trusted(peer_ip),
    };
    let client_ip = headers::apply_forwarded(
        &mut parts.headers,
        peer,
        scan,
        |ip| snap.is_trusted(ip),
        if conn.tls { "https" } else { "http" },
        host_value.as_ref(),
    );

    // 5. Policies, request phase (ip, cors, static_response, key_auth, acl, headers).
    // The access-log record (only when logging is on), filled in as the request goes.
    let mut log = snap.access_log.enabled().then(|| LogData {
        sink: snap.access_log.clone(),
        request_id: request_id.clone(),
        route: Arc::clone(&route.name),
        upstream: Arc::clone(&route.upstream.name),
        endpoint: None,
        method: parts.method.clone(),
        path: path.clone().into_owned(),
        client: client_ip,
        bytes_in: 0,
        body_stats: None,
        error: "",
    });
    let mut pctx = PolicyCtx::new(client_ip);
    // Not bound to a name: a local would be kept in the request future across the awaits
    // below.
    if let Some(reply) = if route.policies.is_empty() {
        None
    } else {
        match route
            .policies
            .on_request(&parts.method, &parts.uri, &mut parts.headers, &mut pctx)
        {
            Flow::Continue => None,
            Flow::Respond(reply) => Some(reply),
            // Slow work (argon2, a Redis round trip) in a boxed future: the common
            // synchronous path keeps the request future small.
            flow @ Flow::Await(..) => {
                Box::pin(await_policies(
                    flow,
                    &route,
                    &parts.method,
                    &parts.uri,
                    &mut parts.headers,
                    &mut pctx,
                ))
                .await
            }
        }
    } {
        let mut rsp = policy_reply(reply, &request_id);
        route.policies.on_response(rsp.headers_mut(), &pctx);
        let log = log.map(|l| with_error(l, "policy"));
        return finish(rsp, &route, start, None, None, log, &mut pctx);
    }

    // 5b. Response cache (after the policies, so only admitted requests see it): a fresh answer is sent from here; a miss fills it below.
    let mut cache: Option<Box<CacheState>> = None;
    if let Some(c) = &route.policies.cache {
        let req = CacheRequest {
            method: &parts.method,
            host: cache_host.as_deref().unwrap_or(""),
            path: &path,
            query: pctx
                .query
                .as_deref()
                .or(parts.uri.query())
                .filter(|q| !q.is_empty()),
            headers: &parts.headers,
            consumer: pctx.consumer.as_ref().map(|c| &*c.name),
            has_body: parts.headers.contains_key(header::TRANSFER_ENCODING)
                || parts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .is_some_and(|v| v.as_bytes().iter().any(|b| *b != b'0')),
        };
        // Boxed with its arguments: keeps the request future small.
        let looked = Box::pin(async move { c.lookup(&req).await }).await;
        match looked {
            Lookup::Hit(stored) => {
                let rsp = cached_response(&stored, &parts.method, &request_id);
                let mut rsp = rsp;
                route.policies.on_response(rsp.headers_mut(), &pctx);
                return finish(rsp, &route, start, None, None, log, &mut pctx);
            }
            Lookup::Miss(fill) => {
                cache = Some(Box::new(CacheState {
                    status: fill.status,
                    fill: Some(fill),
                    invalidate: None,
                }));
            }
            Lookup::Bypass { invalidate } => {
                cache = Some(Box::new(CacheState {
                    status: "BYPASS",
                    fill: None,
                    invalidate,
                }));
            }
        }
    }

    // 6. Size limit known from the head.
    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if content_length.is_some_and(|n| n > route.max_body_size) {
        let err = GatewayError::PayloadTooLarge {
            limit: route.max_body_size,
        };
        let mut rsp = early.fail(&err, Some(&route));
        route.policies.on_response(rsp.headers_mut(), &pctx);
        return rsp;
    }

    // 7. The upstream path: the normalized path, rewritten if the route says so, and
    //    normalized again so a rewrite can never produce a path the router did not see.
    let forward_path = match rewrite_path(&snap, &route, matched.path, &path) {
        Ok(p) => p,
        Err(e) => {
            return early.fail(&e, Some(&route));
        }
    };
    let query = pctx
        .query
        .as_deref()
        .or(parts.uri.query())
        .filter(|q| !q.is_empty());
    let path_and_query = match (&forward_path, query) {
        (Cow::Borrowed(_), _) if raw_path == forward_path.as_ref() && pctx.query.is_none() => {
            parts.uri.path_and_query().cloned()
        }
        (p, None) => {
            PathAndQuery::from_maybe_shared(bytes::Bytes::copy_from_slice(p.as_bytes())).ok()
        }
        (p, Some(q)) => {
            PathAndQuery::from_maybe_shared(bytes::Bytes::from(format!("{p}?{q}"))).ok()
        }
    };
    let Some(path_and_query) = path_and_query else {
        let err = GatewayError::BadRequest("the request target is not valid");
        return early.fail(&err, Some(&route));
    };

    // 8. Request id and Host for the upstream.
    parts
        .headers
        .insert(&X_REQUEST_ID, request_id.header_value().clone());
    let mut host_from_endpoint = false;
    if route.preserve_host {
        if let (None, Some(h)) = (parts.headers.get(header::HOST), host_value) {
            parts.headers.insert(header::HOST, h);
        }
    } else if let Some(h) = &route.host_header {
        parts.headers.insert(header::HOST, h.clone());
    } else {
        host_from_endpoint = true;
    }

    if let Some(l) = &mut log {
        l.bytes_in = content_length.unwrap_or(0);
    }

    // 9. Target.
    let shared = match &route.upstream.kind {
        UpstreamKind::Http(shared) => Arc::clone(shared),
        UpstreamKind::Topic(_) => {
            let consumer = pctx.consumer.as_ref().map(|c| &*c.name);
            let mut rsp = Box::pin(crate::ingest::answer(
                &route,
                &parts,
                body,
                consumer,
                &request_id,
                snap.config.limits.body_timeout.get(),
            ))
            .await;
            route.policies.on_response(rsp.headers_mut(), &pctx);
            return finish(rsp, &route, start, None, None, log, &mut pctx);
        }
        UpstreamKind::Ai => {
            let consumer = pctx.consumer.as_deref();
            let mut rsp = Box::pin(crate::ai::answer(
                &route,
                &parts,
                body,
                consumer,
                snap.config.limits.body_timeout.get(),
            ))
            .await;
            rsp.headers_mut()
                .insert(&X_REQUEST_ID, request_id.header_value().clone());
            route.policies.on_response(rsp.headers_mut(), &pctx);
            return finish(rsp, &route, start, None, None, log, &mut pctx);
        }
        UpstreamKind::Builtin(b) => {
            let mut rsp = Box::pin(builtin::serve(
                *b,
                &parts,
                &forward_path,
                client_ip,
                body,
                route.max_body_size,
            ))
            .await;
            rsp.headers_mut()
                .insert(&X_REQUEST_ID, request_id.header_value().clone());
            return finish(rsp, &route, start, None, None, log, &mut pctx);
        }
    };
    let hash = match &route.hash_on {
        HashOn::None => None,
        HashOn::Header(n) => parts
            .headers
            .get(n)
            .map(|v| weir_upstream::hash_of(v.as_bytes())),
        HashOn::Cookie(name) => headers::cookie(&parts.headers, name).map(weir_upstream::hash_of),
        HashOn::ClientIp => Some(weir_upstream::hash_of(&client_ip)),
    };
    let body = weir_upstream::RequestBody::streaming(body, route.max_body_size);
    let body_stats = body.stats();
    if let Some(l) = &mut log {
        l.body_stats = body_stats.clone();
    }
    let head = RequestHead {
        method: parts.method,
        path_and_query,
        headers: parts.headers,
        extensions: http::Extensions::new(),
        host_from_endpoint,
    };

    // 10. Send, with balancing, timeouts and safe retries inside the upstream. Upstream time
    //     is measured only for the access log: a clock read per request is not free.
    let sent_at = log.is_some().then(Instant::now);
    // Boxed: keeps this future small, since hyper moves it (by copy) on every request.
    let sent = Box::pin(shared.send(head, body, hash)).await;
    let upstream_secs = sent_at.map(|t| t.elapsed().as_secs_f64());
    let fill = match sent {
        Ok(sent) => {
            // Taken apart at once: a partly moved `sent` would stay in the request future
            // across the cache's await below.
            let weir_upstream::Sent {
                response,
                endpoint,
                mut in_flight,
                ..
            } = sent;
            let (mut rsp_parts, rsp_body) = response.into_parts();
            let switching = rsp_parts.status == StatusCode::SWITCHING_PROTOCOLS;
            if switching {
                let upstream_up = rsp_parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
                match (
                    client_upgrade,
                    upstream_up,
                    upgrade::accepts(&rsp_parts.headers),
                ) {
                    (Some(client), Some(upstream_up), true) => {
                        drop(rsp_body);
                        upgrade::spawn_tunnel(client, upstream_up, Arc::clone(&route.name));
                        let mut rsp = Response::from_parts(rsp_parts, ProxyBody::empty());
                        let scan = headers::Scan::of(rsp.headers());
                        headers::strip_hop_by_hop(rsp.headers_mut(), true, scan);
                        rsp.headers_mut()
                            .insert(&X_REQUEST_ID, request_id.header_value().clone());
                        let log = log.map(|mut l| {
                            l.endpoint = Some(endpoint);
                            l
                        });
                        in_flight.detach();
                        return finish(
                            rsp,
                            &route,
                            start,
                            upstream_secs,
                            Some(in_flight),
                            log,
                            &mut pctx,
                        );
                    }
                    _ => {
                        // A 101 that does not match the request's upgrade is never tunnelled.
                        let err = GatewayError::upstream(
                            &route.upstream.name,
                            weir_core::UpstreamFailure::Protocol,
                        );
                        let rsp = error_response::render(&err, request_id.as_str());
                        return finish(
                            rsp,
                            &route,
                            start,
                            upstream_secs,
                            None,
                            log.map(|l| with_error(l, err.kind())),
                            &mut pctx,
                        );
                    }
                }
            }
            let scan = headers::Scan::of(&rsp_parts.headers);
            headers::strip_hop_by_hop(&mut rsp_parts.headers, false, scan);
            let up = Upstreamed {
                route,
                request_id,
                pctx,
                log,
                endpoint,
                in_flight,
                start,
                upstream_secs,
            };
            match cache {
                // Boxed with everything it needs: the request future holds nothing
                // across this await.
                Some(cache) => cache.settle_boxed(rsp_parts, rsp_body, up),
                None => return up.respond(rsp_parts, Ok(ProxyBody::upstream(rsp_body))),
            }
        }
        Err(e) => {
            let over = body_stats
                .as_ref()
                .is_some_and(|s| s.over_limit.load(Ordering::Relaxed));
            let client_error = body_stats
                .as_ref()
                .is_some_and(|s| s.client_error.load(Ordering::Relaxed));
            let err = if over {
                GatewayError::PayloadTooLarge {
                    limit: route.max_body_size,
                }
            } else if client_error {
                GatewayError::BadRequest("the request body was malformed or cut short")
            } else {
                match e.failure {
                    None => GatewayError::NoHealthyEndpoint {
                        upstream: Arc::clone(&route.upstream.name),
                    },
                    Some(f) => GatewayError::upstream(&route.upstream.name, f),
                }
            };
            let mut rsp = error_response::render(&err, request_id.as_str());
            rsp.headers_mut()
                .insert(&X_REQUEST_ID, request_id.header_value().clone());
            if body_stats.is_some() {
                // The client's body may be partly unread: the connection cannot be reused.
                rsp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            route.policies.on_response(rsp.headers_mut(), &pctx);
            let log = log.map(|mut l| {
                l.endpoint = e.endpoint;
                with_error(l, err.kind())
            });
            return finish(rsp, &route, start, upstream_secs, None, log, &mut pctx);
        }
    };
    // Filling the cache: awaited outside the match, whose locals are then not kept in
    // the request future.
    fill.await
}

/// Finishes the request phase after a policy asked for slow work (a password hash on the
/// blocking pool, a call to the shared store): awaits it while the worker serves other
/// requests, then resumes the chain. Returns the answer of a policy that refused.
async fn await_policies(
    mut flow: Flow,
    route: &Route,
    method: &Method,
    uri: &http::Uri,
    headers: &mut http::HeaderMap,
    pctx: &mut PolicyCtx,
) -> Option<Reply> {
    loop {
        match flow {
            Flow::Continue => return None,
            Flow::Respond(reply) => return Some(reply),
            Flow::Await(pending, step) => {
                let outcome = pending.await;
                flow = route
                    .policies
                    .resume(step, outcome, method, uri, headers, pctx);
            }
        }
    }
}

/// Turns a policy's answer into a response.
fn policy_reply(reply: Reply, request_id: &RequestId) -> Response<ProxyBody> {
    let mut rsp = match reply {
        Reply::Error(err, extra) => {
            let mut rsp = error_response::render(&err, request_id.as_str());
            for (n, v) in extra {
                rsp.headers_mut().insert(n, v);
            }
            rsp
        }
        Reply::Static {
            status,
            headers,
            body,
        } => {
            let mut rsp = Response::new(if body.is_empty() {
                ProxyBody::empty()
            } else {
                ProxyBody::full(body)
            });
            *rsp.status_mut() = status;
            *rsp.headers_mut() = headers;
            rsp
        }
    };
    rsp.headers_mut()
        .insert(&X_REQUEST_ID, request_id.header_value().clone());
    rsp
}

pub(crate) fn with_error(mut l: LogData, kind: &'static str) -> LogData {
    l.error = kind;
    l
}

/// Attaches the end-of-request bookkeeping to the response body.
pub(crate) fn finish(
    mut rsp: Response<ProxyBody>,
    route: &Route,
    start: Instant,
    upstream_secs: Option<f64>,
    in_flight: Option<weir_upstream::InFlight>,
    log: Option<LogData>,
    pctx: &mut PolicyCtx,
) -> Response<ProxyBody> {
    let call = route.calls.as_ref().map(|sink| CallData {
        sink: sink.clone(),
        route: Arc::clone(&route.name),
        upstream: Arc::clone(&route.upstream.name),
        consumer: pctx.consumer.as_ref().map(|c| Arc::clone(&c.name)),
    });
    let f = Finish {
        start,
        status: rsp.status().as_u16(),
        metrics: Arc::clone(&route.metrics),
        upstream_secs,
        in_flight,
        log,
        permits: std::mem::take(&mut pctx.permits),
        call,
    };
    rsp.body_mut().set_finish(Box::new(f));
    rsp
}

/// The request facts every early answer needs, gathered once the path is normalized.
struct Early<'a> {
    snap: &'a Snapshot,
    request_id: &'a RequestId,
    method: &'a Method,
    path: &'a str,
    conn: &'a ConnInfo,
    start: Instant,
}

impl Early<'_> {
    fn fail(&self, err: &GatewayError, route: Option<&Route>) -> Response<ProxyBody> {
        early_error(
            self.snap,
            err,
            self.request_id,
            self.method,
            self.path,
            self.conn,
            self.start,
            route,
        )
    }
}

/// An answer made before any upstream was involved (bad request, no route, too large).
#[allow(clippy::too_many_arguments)]
fn early_error(
    snap: &Snapshot,
    err: &GatewayError,
    request_id: &RequestId,
    method: &Method,
    path: &str,
    conn: &ConnInfo,
    start: Instant,
    route: Option<&Route>,
) -> Response<ProxyBody> {
    let mut rsp = error_response::render(err, request_id.as_str());
    rsp.headers_mut()
        .insert(&X_REQUEST_ID, request_id.header_value().clone());
    let log = snap.access_log.enabled().then(|| LogData {
        sink: snap.access_log.clone(),
        request_id: request_id.clone(),
        route: route.map_or_else(|| Arc::from(""), |r| Arc::clone(&r.name)),
        upstream: route.map_or_else(|| Arc::from(""), |r| Arc::clone(&r.upstream.name)),
        endpoint: None,
        method: method.clone(),
        path: path.to_owned(),
        client: conn.peer.ip(),
        bytes_in: 0,
        body_stats: None,
        error: err.kind(),
    });
    let f = Finish {
        start,
        status: rsp.status().as_u16(),
        metrics: route.map_or_else(|| Arc::clone(&snap.unmatched), |r| Arc::clone(&r.metrics)),
        upstream_secs: None,
        in_flight: None,
        log,
        permits: Vec::new(),
        call: None,
    };
    rsp.body_mut().set_finish(Box::new(f));
    rsp
}

/// Refuses requests whose framing or target is ambiguous (smuggling defences). hyper has
/// already parsed the head; these are the cases it lets through.
fn check_framing(parts: &http::request::Parts) -> Result<(), GatewayError> {
    let h = &parts.headers;
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return Err(GatewayError::BadRequest(
            "Content-Length and Transfer-Encoding must not both be present",
        ));
    }
    let mut cls = h.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = cls.next() {
        if !first.as_bytes().iter().all(u8::is_ascii_digit) || first.is_empty() {
            return Err(GatewayError::BadRequest(
                "Content-Length must be digits only",
            ));
        }
        if cls.any(|v| v != first) {
            return Err(GatewayError::BadRequest(
                "conflicting Content-Length headers",
            ));
        }
    }
    if h.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(GatewayError::BadRequest("more than one Host header"));
    }
    if let (Some(auth), Some(host)) = (parts.uri.authority(), h.get(header::HOST))
        && parts.version == http::Version::HTTP_2
        && !auth
            .as_str()
            .eq_ignore_ascii_case(host.to_str().unwrap_or(""))
    {
        return Err(GatewayError::BadRequest(":authority and Host disagree"));
    }
    if parts.method == Method::CONNECT {
        return Err(GatewayError::MethodNotAllowed);
    }
    Ok(())
}

fn normalize_message(e: weir_core::NormalizeError) -> &'static str {
    use weir_core::NormalizeError as N;
    match e {
        N::NotAbsolute => "the request path must start with '/'",
        N::ForbiddenByte => "the request path contains a forbidden character",
        N::BadEscape => "the request path contains an invalid percent-escape",
        N::EncodedControl => "the request path contains an encoded control character",
        N::EncodedSlash => "the request path contains an encoded slash or backslash",
        N::DotSemicolon => "the request path contains a dot-segment with a ';' parameter",
    }
}

/// Applies `strip_prefix` or `rewrite` and checks the result is already normalized.
fn rewrite_path<'a>(
    snap: &Snapshot,
    route: &Route,
    m: PathMatch,
    path: &'a Cow<'a, str>,
) -> Result<Cow<'a, str>, GatewayError> {
    let out: Cow<'a, str> = match (m, route.strip_prefix, route.rewrite.as_deref()) {
        (PathMatch::Prefix { len }, true, _) => {
            let rest = &path[len..];
            Cow::Owned(if rest.is_empty() {
                "/".to_owned()
            } else {
                rest.to_owned()
            })
        }
        (PathMatch::Prefix { len }, _, Some(rw)) => {
            let rest = &path[len..];
            Cow::Owned(match (rw.ends_with('/'), rest.strip_prefix('/')) {
                (true, Some(r)) => format!("{rw}{r}"),
                _ => format!("{rw}{rest}"),
            })
        }
        (PathMatch::Exact, _, Some(rw)) => Cow::Owned(rw.to_owned()),
        (PathMatch::Regex { entry }, _, Some(rw)) => match snap.table.regex(entry) {
            Some(re) => Cow::Owned(re.replace(path, rw).into_owned()),
            None => Cow::Borrowed(path.as_ref()),
        },
        _ => return Ok(Cow::Borrowed(path.as_ref())),
    };
    match normalize_path(&out, snap.path_options) {
        Ok(n) if n == out => Ok(out),
        _ => Err(GatewayError::BadRequest(
            "the rewritten path is not a normalized path",
        )),
    }
}

#[cfg(test)]
mod tests {
    fn future_size<F, Fut>(_: F) -> usize
    where
        F: Fn(
            std::sync::Arc<crate::snapshot::Snapshot>,
            super::ConnInfo,
            http::Request<hyper::body::Incoming>,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// hyper moves the request future by copy on every request; a size budget keeps that
    /// cheap. Raise it only with a benchmark that shows the cost.
    #[test]
    fn request_future_stays_small() {
        let size = future_size(super::handle);
        assert!(size <= 2048, "request future grew to {size} bytes");
    }
}
