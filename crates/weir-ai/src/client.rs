//! The HTTP client Weir calls providers with: pooled keep-alive connections (plain and
//! TLS verified against the web roots), answers streamed back as they come.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use weir_upstream::{Connector, TlsSettings, client_tls_config};

#[derive(Clone)]
pub struct ProviderClient {
    plain: Client<Connector, Full<Bytes>>,
    tls: Client<Connector, Full<Bytes>>,
}

/// How long a connection to a provider may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl ProviderClient {
    pub fn new() -> Result<Self, String> {
        let build = |tls: Option<TlsSettings>| {
            Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .build(Connector::new(CONNECT_TIMEOUT, tls))
        };
        let web = client_tls_config(None, true, false)?;
        Ok(Self {
            plain: build(None),
            tls: build(Some(TlsSettings {
                config: web,
                sni: None,
            })),
        })
    }

    /// Sends `req`; resolves when the answer's head is in (its body streams after).
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, String> {
        let client = if req.uri().scheme_str() == Some("https") {
            &self.tls
        } else {
            &self.plain
        };
        client.request(req).await.map_err(|e| {
            use std::error::Error;
            match e.source() {
                Some(s) => format!("{e}: {s}"),
                None => e.to_string(),
            }
        })
    }
}
