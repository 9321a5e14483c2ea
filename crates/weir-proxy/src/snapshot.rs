//! The compiled, immutable configuration that the data plane reads: the route table, each
//! route's compiled form, upstreams, and the listener-wide settings. Published with one
//! atomic swap per change; a request loads it once and keeps it to the end.

use std::sync::Arc;

use http::HeaderValue;
use ipnet::IpNet;
use weir_config::{AccessLogConfig, AccessLogTarget, Config, EncodedSlashAction};
use weir_core::{EncodedSlash, PathOptions};
use weir_policy::{Consumers, PolicyChain};
use weir_router::RouteTable;
use weir_telemetry::access_log::AccessLog;
use weir_telemetry::metrics::RouteMetrics;
use weir_upstream::{Registry, Upstream};

pub struct Snapshot {
    pub version: u64,
    pub config: Config,
    pub table: RouteTable,
    pub routes: Vec<Arc<Route>>,
    pub registry: Registry,
    pub trusted_proxies: Vec<IpNet>,
    pub path_options: PathOptions,
    pub max_body_size: u64,
    pub access_log: AccessLog,
    /// Metrics for requests that matched no route.
    pub unmatched: Arc<RouteMetrics>,
    /// The AI gateway's client, health and records, kept across reloads once an AI route
    /// needed them.
    pub ai_plane: Option<Arc<weir_ai::AiPlane>>,
    /// The node's overload state (kept across reloads; the sampler applies each
    /// snapshot's `overload` settings to it).
    pub overload: Arc<weir_core::overload::Overload>,
}

/// A compiled route: what the pipeline needs after the router picked it.
pub struct Route {
    pub name: Arc<str>,
    pub upstream: Arc<Upstream>,
    pub strip_prefix: bool,
    pub rewrite: Option<String>,
    pub preserve_host: bool,
    /// `Host` to send when not preserving the client's (the upstream's `host` setting).
    pub host_header: Option<HeaderValue>,
    pub hash_on: HashOn,
    pub max_body_size: u64,
    pub metrics: Arc<RouteMetrics>,
    pub policies: PolicyChain,
    /// Where finished requests are recorded for analytics, when it is on.
    pub calls: Option<weir_telemetry::calls::CallSink>,
    /// For a topic route: where its requests are published.
    pub topic: Option<TopicTarget>,
    /// For an AI route: its models and providers.
    pub ai: Option<Arc<weir_ai::AiRoute>>,
}

/// A topic route's target.
pub struct TopicTarget {
    pub ingest: Arc<weir_events::ingest::Ingest>,
    pub topic: weir_events::ingest::Topic,
    /// Fires when the gateway shuts down: streams to clients end then.
    pub closing: Option<tokio::sync::watch::Receiver<bool>>,
    /// Webhooks from a sender: their signature is checked before publishing.
    pub inbound: Option<Arc<weir_events::inbound::Inbound>>,
    /// Published bodies are held whole: they count against the node's budget.
    pub overload: Arc<weir_core::overload::Overload>,
}

/// The key of consistent hashing, compiled from `hash_on`.
#[derive(Debug, Clone)]
pub enum HashOn {
    None,
    Header(http::HeaderName),
    Cookie(String),
    ClientIp,
}

impl Snapshot {
    /// Compiles a validated configuration. `previous` lends its upstreams (pools, health),
    /// access-log writer and route metrics when they are unchanged.
    pub fn compile(
        config: Config,
        version: u64,
        previous: Option<&Snapshot>,
        workers: usize,
        recording: &crate::gateway::Recording,
        ingest: Option<&Arc<weir_events::ingest::Ingest>>,
        closing: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<(Snapshot, Vec<Arc<Upstream>>), Vec<String>> {
        let errors = weir_config::validate(&config);
        if !errors.is_empty() {
            return Err(errors.iter().map(ToString::to_string).collect());
        }
        let empty = Registry::default();
        let (registry, fresh) = Registry::build(
            &config.upstreams,
            previous.map_or(&empty, |p| &p.registry),
            workers,
        )
        .map_err(|e| vec![e])?;
        let table = RouteTable::compile(&config.routes).map_err(|e| vec![e.to_string()])?;
        if ingest.is_some() {
            check_subscriptions(&config)?;
        }
        let consumers = Arc::new(Consumers::compile(&config.consumers, &|name| {
            std::env::var(name).ok()
        })?);
        let mut policy_errors = Vec::new();
        // Documents policies read for themselves (JWKS): Weir's own one-shot client.
        let fetcher: weir_policy::Fetcher = Arc::new(|url: String| {
            Box::pin(async move {
                weir_upstream::fetch(&url, std::time::Duration::from_secs(5), 1 << 20).await
            })
        });
        let max_body_size = config.limits.max_body_size.0;
        let overload = previous.map_or_else(Arc::default, |p| Arc::clone(&p.overload));
        let ai_plane = match previous.and_then(|p| p.ai_plane.clone()) {
            Some(p) => Some(p),
            None if config.routes.iter().any(|r| r.ai.is_some()) => Some(Arc::new(
                weir_ai::AiPlane::new(recording.ai.clone(), Arc::clone(&overload))
                    .map_err(|e| vec![format!("ai: {e}")])?,
            )),
            None => None,
        };
        let catalog = match &ai_plane {
            Some(_) => Some(Arc::new(
                weir_ai::Catalog::compile(&config.ai, &|n| std::env::var(n).ok())
                    .map_err(|e| vec![e])?,
            )),
            None => None,
        };
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let ai = match (&r.ai, &ai_plane, &catalog) {
                (Some(a), Some(plane), Some(catalog)) => {
                    // The route's own ai_limits, else the defaults'.
                    let limits = r
                        .policies
                        .iter()
                        .chain(config.policy_defaults.iter())
                        .find_map(|p| match p {
                            weir_config::PolicyConfig::AiLimits(l) => Some(l),
                            _ => None,
                        })
                        .map(|l| weir_ai::limits::Limits::compile(l, &r.name, &plane.memory))
                        .transpose()
                        .map_err(|e| vec![format!("route {:?}: ai_limits: {e}", r.name)])?
                        .map(Arc::new);
                    Some(Arc::new(weir_ai::AiRoute {
                        name: r.name.clone(),
                        catalog: Arc::clone(catalog),
                        plane: Arc::clone(plane),
                        default_model: a.model.clone(),
                        template: a.prompt_template.clone(),
                        limits,
                        cache: a
                            .cache
                            .as_ref()
                            .map(|c| plane.cache_for(&r.name, c.ttl.get(), c.max_entries)),
                        mask: weir_ai::mask::Mask::from_names(&a.mask),
                        log_bodies: a.log_bodies,
                    }))
                }
                _ => None,
            };
            let (upstream, topic) = match &r.topic {
                _ if ai.is_some() => (weir_upstream::Upstream::ai(&r.name), None),
                Some(name) => {
                    let Some(ingest) = ingest else {
                        return Err(vec![format!(
                            "route {:?}: topic routes need the event queue; run them with `weir serve`",
                            r.name
                        )]);
                    };
                    let target = TopicTarget {
                        ingest: Arc::clone(ingest),
                        topic: topic_of(&config, name),
                        closing: Some(closing.clone()),
                        overload: Arc::clone(&overload),
                        inbound: match &r.inbound {
                            Some(c) => Some(Arc::new(
                                weir_events::inbound::Inbound::compile(c, &|n| {
                                    std::env::var(n).ok()
                                })
                                .map_err(|e| vec![format!("route {:?}: {e}", r.name)])?,
                            )),
                            None => None,
                        },
                    };
                    (weir_upstream::Upstream::topic(name), Some(target))
                }
                None => match registry.get(&r.upstream) {
                    Some(u) => (Arc::clone(u), None),
                    None => {
                        return Err(vec![format!(
                            "route {:?}: upstream {:?} is missing",
                            r.name, r.upstream
                        )]);
                    }
                },
            };
            let upstream = &upstream;
            let metrics = previous
                .and_then(|p| p.routes.iter().find(|old| *old.name == *r.name))
                .map(|old| Arc::clone(&old.metrics))
                .unwrap_or_else(|| Arc::new(RouteMetrics::new(&r.name)));
            let host_header = upstream
                .config
                .host
                .as_deref()
                .and_then(|h| HeaderValue::from_str(h).ok());
            let hash_on = match upstream.config.hash_on.as_deref() {
                Some("ip") => HashOn::ClientIp,
                Some(h) => match (h.strip_prefix("header:"), h.strip_prefix("cookie:")) {
                    (Some(n), _) => http::HeaderName::from_bytes(n.as_bytes())
                        .map(HashOn::Header)
                        .unwrap_or(HashOn::None),
                    (_, Some(c)) => HashOn::Cookie(c.to_owned()),
                    _ => HashOn::None,
                },
                None => HashOn::None,
            };
            let policies = match PolicyChain::compile(
                &r.policies,
                &config.policy_defaults,
                &consumers,
                &r.name,
                &fetcher,
            ) {
                Ok(p) => p,
                Err(e) => {
                    policy_errors.push(format!("route {:?}: {e}", r.name));
                    PolicyChain::default()
                }
            };
            // AI routes parse their bodies whole: a lower default keeps memory per request
            // bounded; a route's own max_body_size still wins.
            let default_limit = if r.ai.is_some() {
                max_body_size.min(weir_config::ai::AI_DEFAULT_MAX_BODY.0)
            } else {
                max_body_size
            };
            let route_limit = r.max_body_size.map_or(default_limit, |s| s.0);
            routes.push(Arc::new(Route {
                name: r.name.as_str().into(),
                upstream: Arc::clone(upstream),
                strip_prefix: r.strip_prefix,
                rewrite: r.rewrite.clone(),
                preserve_host: r.preserve_host,
                host_header,
                hash_on,
                max_body_size: policies
                    .max_body_size
                    .map_or(route_limit, |p| p.min(route_limit)),
                metrics,
                policies,
                calls: recording.calls.clone(),
                topic,
                ai,
            }));
        }
        if !policy_errors.is_empty() {
            return Err(policy_errors);
        }
        let access_log = match previous {
            Some(p) if p.config.access_log == config.access_log => p.access_log.clone(),
            _ => {
                open_access_log(&config.access_log).map_err(|e| vec![format!("access_log: {e}")])?
            }
        };
        let trusted_proxies = config
            .trusted_proxies
            .iter()
            .filter_map(|c| weir_config::parse_cidr(c))
            .collect();
        let path_options = PathOptions {
            encoded_slash: match config.paths.encoded_slash {
                EncodedSlashAction::Reject => EncodedSlash::Reject,
                EncodedSlashAction::Keep => EncodedSlash::Keep,
            },
        };
        let unmatched = previous
            .map(|p| Arc::clone(&p.unmatched))
            .unwrap_or_else(|| Arc::new(RouteMetrics::new("")));
        Ok((
            Snapshot {
                version,
                config,
                table,
                routes,
                registry,
                trusted_proxies,
                path_options,
                max_body_size,
                access_log,
                unmatched,
                ai_plane,
                overload,
            },
            fresh,
        ))
    }

    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

fn open_access_log(cfg: &AccessLogConfig) -> std::io::Result<AccessLog> {
    match cfg {
        AccessLogConfig::Named(AccessLogTarget::Off) => Ok(AccessLog::off()),
        AccessLogConfig::Named(AccessLogTarget::Stdout) => {
            AccessLog::start(Box::new(std::io::stdout()))
        }
        AccessLogConfig::Named(AccessLogTarget::Stderr) => {
            AccessLog::start(Box::new(std::io::stderr()))
        }
        AccessLogConfig::File { file } => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)?;
            AccessLog::start(Box::new(f))
        }
    }
}

/// Subscriptions are part of the whole: one whose worker could not start (a secret
/// missing, an endpoint that is no URL) refuses the change rather than leave the old worker
/// running beside a configuration that no longer says so.
fn check_subscriptions(config: &Config) -> Result<(), Vec<String>> {
    let env = |n: &str| std::env::var(n).ok();
    let errors: Vec<String> = config
        .subscriptions
        .iter()
        .filter_map(|s| weir_events::delivery::Subscription::compile(s, &env).err())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A topic as `config` serves it: its size limit and the subscriptions that read it.
pub fn topic_of(config: &Config, name: &str) -> weir_events::ingest::Topic {
    weir_events::ingest::Topic {
        name: name.to_owned(),
        max_event_size: config
            .topics
            .get(name)
            .map_or(1 << 20, |t| t.max_event_size.0),
        subscriptions: config
            .subscriptions
            .iter()
            .filter(|s| s.topic == name)
            .map(|s| (s.name.clone(), weir_events::ingest::fingerprint(s)))
            .collect(),
    }
}
