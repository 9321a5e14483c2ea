//! One-shot HTTP GETs for documents Weir reads for itself (JWKS key sets, images in AI
//! prompts): a fresh connection per fetch, TLS verified against the web roots, one
//! deadline for the whole exchange, a cap on the body, optionally only to addresses a
//! filter allows (the SSRF guard), redirects never followed. Never touches the request
//! path's pools.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use tower_service::Service;

use crate::connector::{Connector, TlsSettings, client_tls_config};

fn web_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| client_tls_config(None, true, false))
        .clone()
}

/// GETs `url` (http or https) and returns the body of a `200` answer of at most
/// `max_bytes`. Errors are one line, fit for a log, and never carry the body.
pub async fn fetch(url: &str, timeout: Duration, max_bytes: usize) -> Result<Bytes, String> {
    let how = Fetch {
        timeout,
        max_bytes,
        accept: "application/json",
        allow: None,
    };
    fetch_with(url, &how).await.map(|f| f.body)
}

/// How one GET is made.
#[derive(Clone)]
pub struct Fetch {
    pub timeout: Duration,
    pub max_bytes: usize,
    /// The `Accept` header sent.
    pub accept: &'static str,
    /// Only resolved addresses this accepts are dialled.
    pub allow: Option<crate::connector::AddressFilter>,
}

/// A `200` answer's body and its content type.
#[derive(Debug)]
pub struct Fetched {
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// GETs `url` as `how` says. Errors are one line, fit for a log or a client, and never
/// carry the body.
pub async fn fetch_with(url: &str, how: &Fetch) -> Result<Fetched, String> {
    match tokio::time::timeout(how.timeout, fetch_inner(url, how)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no complete answer within {:?}", how.timeout)),
    }
}

async fn fetch_inner(url: &str, how: &Fetch) -> Result<Fetched, String> {
    let (timeout, max_bytes) = (how.timeout, how.max_bytes);
    let uri: Uri = url.parse().map_err(|_| "not a valid URL".to_owned())?;
    let tls = match uri.scheme_str() {
        Some("https") => Some(TlsSettings {
            config: web_tls()?,
            sni: None,
        }),
        Some("http") => None,
        _ => return Err("the URL must start with http:// or https://".to_owned()),
    };
    let host = uri.host().ok_or("the URL names no host")?;
    let port = uri
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let target: Uri = format!("http://{}:{port}/", host_for_uri(host))
        .parse()
        .map_err(|_| "the URL names no usable host".to_owned())?;
    let mut connector = Connector::new(timeout, tls);
    if let Some(a) = &how.allow {
        connector = connector.with_filter(Arc::clone(a));
    }
    let conn = connector.call(target).await.map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(conn)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, how.accept)
        .header(
            header::USER_AGENT,
            concat!("weir/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let rsp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if rsp.status() != StatusCode::OK {
        return Err(format!("answered {}", rsp.status()));
    }
    let content_type = rsp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = rsp.into_body();
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body failed: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max_bytes {
                return Err(format!("the document is larger than {max_bytes} bytes"));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Fetched {
        content_type,
        body: out.freeze(),
    })
}

/// IPv6 literals keep their brackets in a URI.
fn host_for_uri(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// A pooled HTTP/1.1 client for deliveries (webhooks): keep-alive connections per
/// endpoint, verified TLS with the web roots, a deadline per request, and at most
/// `max_answer` bytes of each answer read (the rest is dropped).
#[derive(Clone)]
pub struct Poster {
    plain: hyper_util::client::legacy::Client<Connector, http_body_util::Full<Bytes>>,
    tls: hyper_util::client::legacy::Client<Connector, http_body_util::Full<Bytes>>,
    timeout: Duration,
}

/// What an endpoint answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    /// The start of the body, at most `max_answer` bytes.
    pub snippet: Bytes,
}

impl Poster {
    /// With `allow`, only resolved addresses it accepts are dialled.
    pub fn new(
        timeout: Duration,
        allow: Option<crate::connector::AddressFilter>,
    ) -> Result<Self, String> {
        let build = |tls: Option<TlsSettings>| {
            let mut c = Connector::new(timeout, tls);
            if let Some(a) = &allow {
                c = c.with_filter(std::sync::Arc::clone(a));
            }
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(c)
        };
        Ok(Self {
            plain: build(None),
            tls: build(Some(TlsSettings {
                config: web_tls()?,
                sni: None,
            })),
            timeout,
        })
    }

    /// POSTs `body` to `url` (which must name its port). Redirects are not followed.
    pub async fn post(
        &self,
        url: &Uri,
        headers: &[(http::HeaderName, http::HeaderValue)],
        body: Bytes,
        max_answer: usize,
    ) -> Result<Answer, String> {
        let mut req = Request::post(url.clone());
        for (n, v) in headers {
            req = req.header(n, v);
        }
        let req = req
            .body(http_body_util::Full::new(body))
            .map_err(|e| e.to_string())?;
        let client = if url.scheme_str() == Some("https") {
            &self.tls
        } else {
            &self.plain
        };
        let exchange = async {
            let rsp = client.request(req).await.map_err(|e| {
                use std::error::Error;
                match e.source() {
                    Some(s) => format!("{e}: {s}"),
                    None => e.to_string(),
                }
            })?;
            let (parts, mut body) = rsp.into_parts();
            let mut snippet = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Ok(data) = frame.into_data() {
                    let room = max_answer.saturating_sub(snippet.len());
                    snippet.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                snippet: snippet.freeze(),
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter judges the address actually dialled, whatever name led to it.
    #[tokio::test]
    async fn a_filtered_poster_refuses_names_that_resolve_inside() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let deny_loopback: crate::connector::AddressFilter = Arc::new(|ip| !ip.is_loopback());
        let p = Poster::new(Duration::from_secs(2), Some(deny_loopback)).unwrap();
        for host in ["127.0.0.1", "localhost"] {
            let url: Uri = format!("http://{host}:{port}/hook").parse().unwrap();
            let err = p.post(&url, &[], Bytes::new(), 16).await.unwrap_err();
            assert!(
                err.contains("outside the allowed networks"),
                "{host}: {err}"
            );
        }
    }
}
