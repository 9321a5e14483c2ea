//! Upstreams: compiled from config, kept alive across reloads while their config is
//! unchanged (so pools, health and breakers survive), and used by the pipeline to send a
//! request to one endpoint with balancing, timeouts, safe retries and failure accounting.

mod balance;
mod body;
mod connector;
mod endpoint;
mod fetch;
mod health;
mod pool;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use weir_config::{Builtin, PassiveHealthConfig, UpstreamConfig, UpstreamProtocol};
use weir_core::UpstreamFailure;

pub use balance::hash_of;
pub use body::{BodySource, BodyStats, BodyTooLarge, BoxError, RequestBody};
pub use connector::{AddressFilter, ConnectError, Connector, TlsSettings, client_tls_config};
pub use endpoint::{Endpoint, InFlight};
pub use fetch::{Answer, Fetch, Fetched, Poster, fetch, fetch_with};

/// Compiled upstream. Cloning the `Arc` is how routes share it.
pub struct Upstream {
    pub name: Arc<str>,
    pub config: UpstreamConfig,
    pub kind: UpstreamKind,
}

pub enum UpstreamKind {
    Http(Arc<UpstreamShared>),
    Builtin(Builtin),
    /// Not a network target: requests become events on this topic (the proxy publishes).
    Topic(Arc<str>),
    /// An AI route: its providers (under `ai`) are its upstreams.
    Ai,
}

/// The network side of an upstream: endpoints, balancer, per-worker pooled clients.
pub struct UpstreamShared {
    pub name: Arc<str>,
    pub endpoints: Vec<Endpoint>,
    balancer: balance::Balancer,
    pools: pool::Pools,
    scheme: Scheme,
    request_timeout: Duration,
    retries: u32,
    passive: Option<PassiveHealthConfig>,
}

impl std::fmt::Debug for UpstreamShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamShared")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A successful exchange: the response head and streaming body, the endpoint that served
/// it, and the in-flight token to drop when the body ends.
pub struct Sent {
    pub response: Response<Incoming>,
    pub endpoint: Arc<str>,
    pub in_flight: InFlight,
    pub attempts: u32,
}

/// A failed exchange, with what the client should learn.
#[derive(Debug)]
pub struct SendError {
    /// `None` when no endpoint was available at all.
    pub failure: Option<UpstreamFailure>,
    pub endpoint: Option<Arc<str>>,
    pub attempts: u32,
}

/// The parts of a request that every attempt sends.
pub struct RequestHead {
    pub method: Method,
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
    pub extensions: http::Extensions,
    /// Send `Host: <endpoint address>` (the route does not preserve the client's host and
    /// the upstream names none).
    pub host_from_endpoint: bool,
}

impl Upstream {
    /// The stand-in upstream of a topic route, named `topic:NAME` in metrics and logs.
    pub fn topic(topic: &str) -> Arc<Self> {
        Arc::new(Self {
            name: format!("topic:{topic}").into(),
            config: UpstreamConfig::default(),
            kind: UpstreamKind::Topic(topic.into()),
        })
    }

    pub fn ai(route: &str) -> Arc<Self> {
        Arc::new(Self {
            name: format!("ai:{route}").into(),
            config: UpstreamConfig::default(),
            kind: UpstreamKind::Ai,
        })
    }

    pub fn build(name: &str, config: &UpstreamConfig, workers: usize) -> Result<Arc<Self>, String> {
        let name: Arc<str> = name.into();
        let kind = match config.builtin {
            Some(b) => UpstreamKind::Builtin(b),
            None => UpstreamKind::Http(Arc::new(UpstreamShared::build(&name, config, workers)?)),
        };
        Ok(Arc::new(Self {
            name,
            config: config.clone(),
            kind,
        }))
    }
}

impl UpstreamShared {
    fn build(name: &Arc<str>, config: &UpstreamConfig, workers: usize) -> Result<Self, String> {
        let endpoints = config
            .targets
            .iter()
            .map(|t| Endpoint::new(&t.address, t.weight))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match &config.tls {
            None => None,
            Some(t) => {
                if !t.verify {
                    tracing::warn!(upstream = %name, "TLS certificate verification is off for this upstream");
                }
                let offer_h2 = config.protocol == UpstreamProtocol::Auto;
                let cfg = client_tls_config(t.ca.as_deref(), t.verify, offer_h2)?;
                let sni = match &t.sni {
                    Some(s) => Some(
                        rustls::pki_types::ServerName::try_from(s.clone())
                            .map_err(|_| format!("invalid sni {s:?}"))?,
                    ),
                    None => None,
                };
                Some(connector::TlsSettings { config: cfg, sni })
            }
        };
        let scheme = if tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let connector = Connector::new(config.timeouts.connect.get(), tls);
        let pools = pool::Pools::new(
            workers,
            endpoints.len(),
            connector,
            config.protocol == UpstreamProtocol::H2c,
            config.max_idle_per_endpoint,
            config.idle_timeout.get(),
        );
        Ok(Self {
            name: Arc::clone(name),
            balancer: balance::Balancer::new(config.balance, &endpoints),
            endpoints,
            pools,
            scheme,
            request_timeout: config.timeouts.request.get(),
            retries: config.retries,
            passive: config.health.passive.clone(),
        })
    }

    /// One request to endpoint `idx`, with the request timeout.
    pub(crate) async fn exchange(
        &self,
        worker: usize,
        idx: usize,
        req: Request<RequestBody>,
        path: PathAndQuery,
    ) -> Result<pool::Exchanged, UpstreamFailure> {
        let endpoint = &self.endpoints[idx];
        let fut = self
            .pools
            .exchange(worker, idx, &self.scheme, &endpoint.authority, path, req);
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(Ok(x)) => Ok(x),
            Ok(Err(pool::ExchangeError::Connect(ConnectError::Timeout))) | Err(_) => {
                Err(UpstreamFailure::Timeout)
            }
            Ok(Err(pool::ExchangeError::Connect(_))) => Err(UpstreamFailure::Connect),
            Ok(Err(pool::ExchangeError::Sent(e))) => {
                tracing::debug!(upstream = %self.name, endpoint = %endpoint.address, error = %e, "exchange failed");
                Err(UpstreamFailure::Protocol)
            }
        }
    }

    /// Sends `head` + `body` to one endpoint, retrying on another endpoint when that is
    /// safe: the method is idempotent or the connect failed, and the body was not read yet.
    pub async fn send(
        self: &Arc<Self>,
        mut head: RequestHead,
        body: BodySource,
        hash: Option<u64>,
    ) -> Result<Sent, SendError> {
        let idempotent = matches!(
            head.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        let max_attempts = 1 + self.retries;
        let mut tried: u64 = 0;
        let mut attempts = 0;
        let mut last: Option<(UpstreamFailure, Arc<str>)> = None;
        while attempts < max_attempts {
            let Some(idx) = self.balancer.pick(&self.endpoints, hash, tried) else {
                break;
            };
            tried |= 1u64 << (idx % 64);
            attempts += 1;
            let endpoint = &self.endpoints[idx];
            let Some(attempt_body) = body.attempt() else {
                break;
            };
            let last_try = attempts == max_attempts || !(idempotent || body.replayable());
            let (headers, extensions) = if last_try {
                (
                    std::mem::take(&mut head.headers),
                    std::mem::take(&mut head.extensions),
                )
            } else {
                (head.headers.clone(), http::Extensions::new())
            };
            let mut req = Request::new(attempt_body);
            *req.method_mut() = head.method.clone();
            *req.uri_mut() = Uri::from(head.path_and_query.clone());
            *req.version_mut() = Version::HTTP_11;
            *req.headers_mut() = headers;
            *req.extensions_mut() = extensions;
            if head.host_from_endpoint
                && let Ok(v) = http::HeaderValue::from_str(endpoint.authority.as_str())
            {
                req.headers_mut().insert(http::header::HOST, v);
            }
            let worker = self.pools.worker_slot();
            let in_flight = InFlight::new(Arc::clone(self), idx, worker);
            let failure = match self
                .exchange(worker, idx, req, head.path_and_query.clone())
                .await
            {
                Ok(x) => {
                    let s = x.response.status().as_u16();
                    if matches!(s, 502..=504) {
                        self.on_failure(idx);
                    } else {
                        endpoint.record_success();
                    }
                    let in_flight = in_flight.with_conn(x.conn);
                    return Ok(Sent {
                        response: x.response,
                        endpoint: Arc::clone(&endpoint.address),
                        in_flight,
                        attempts,
                    });
                }
                Err(f) => f,
            };
            drop(in_flight);
            if body.client_fault() {
                // The client's body was too large or malformed: not the endpoint's fault.
                last = Some((failure, Arc::clone(&endpoint.address)));
                break;
            }
            self.on_failure(idx);
            tracing::debug!(upstream = %self.name, endpoint = %endpoint.address, ?failure, "attempt failed");
            last = Some((failure, Arc::clone(&endpoint.address)));
            let may_retry =
                (idempotent || failure == UpstreamFailure::Connect) && body.replayable();
            if !may_retry {
                break;
            }
        }
        Err(match last {
            Some((f, ep)) => SendError {
                failure: Some(f),
                endpoint: Some(ep),
                attempts,
            },
            None => SendError {
                failure: None,
                endpoint: None,
                attempts,
            },
        })
    }

    fn on_failure(&self, idx: usize) {
        let e = &self.endpoints[idx];
        if e.record_failure(self.passive.as_ref()) {
            tracing::warn!(upstream = %self.name, endpoint = %e.address, "circuit opened after repeated failures");
            weir_telemetry::metrics::endpoint_health(&self.name, &e.address, false);
        }
    }

    /// Per-endpoint view for `/metrics`.
    pub fn health_report(&self) -> impl Iterator<Item = (&str, bool)> {
        self.endpoints
            .iter()
            .map(|e| (e.address.as_ref(), e.is_healthy()))
    }

    /// Every endpoint with its live state, for the admin API.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }
}

/// All upstreams of one configuration. Built from the previous registry so unchanged
/// upstreams (same name and same config) are reused with their pools and health state.
#[derive(Default, Clone)]
pub struct Registry {
    pub upstreams: HashMap<Arc<str>, Arc<Upstream>>,
}

impl Registry {
    pub fn build(
        configs: &std::collections::BTreeMap<String, UpstreamConfig>,
        previous: &Registry,
        workers: usize,
    ) -> Result<(Registry, Vec<Arc<Upstream>>), String> {
        let mut upstreams = HashMap::new();
        let mut fresh = Vec::new();
        for (name, cfg) in configs {
            let reused = previous
                .upstreams
                .get(name.as_str())
                .filter(|u| u.config == *cfg);
            let up = match reused {
                Some(u) => Arc::clone(u),
                None => {
                    let u = Upstream::build(name, cfg, workers)
                        .map_err(|e| format!("upstreams.{name}: {e}"))?;
                    fresh.push(Arc::clone(&u));
                    u
                }
            };
            upstreams.insert(Arc::clone(&up.name), up);
        }
        Ok((Registry { upstreams }, fresh))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(name)
    }
}

pub use health::spawn_active_checks;
