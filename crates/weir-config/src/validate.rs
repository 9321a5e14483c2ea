//! Whole-config validation: walks every part of a [`Config`] and returns every problem with
//! its path, so `weir validate` and reloads can report all of them at once.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use crate::model::{Balance, Config, InboundConfig, RouteConfig, UpstreamConfig, UpstreamProtocol};

/// Largest compiled size of one route regex; keeps hostile or careless patterns from
/// costing memory (matching itself is linear-time in the `regex` engine).
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

pub(crate) struct Errors(pub(crate) Vec<ValidationError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError::new(path, message));
    }
}

/// Returns every error in `config`; an empty list means it may be compiled.
pub fn validate(config: &Config) -> Vec<ValidationError> {
    let mut e = Errors(Vec::new());
    validate_listen(config, &mut e);
    if let Some(w) = config.workers
        && !(1..=1024).contains(&w)
    {
        e.push("workers", "must be between 1 and 1024");
    }
    if let Err(err) = crate::net::NetworkPolicy::parse(&config.events.allowed_networks) {
        e.push("events.allowed_networks", err);
    }
    crate::validate_ai::validate(&config.ai, &mut e);
    validate_queue_and_topics(config, &mut e);
    validate_subscriptions(config, &mut e);
    if let Some(store) = &config.store {
        let store = store.as_written();
        let ok = ["sqlite://", "postgres://", "postgresql://"]
            .iter()
            .any(|p| store.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
            || store.strip_prefix("env:").is_some_and(|n| !n.is_empty())
            || store.strip_prefix("file:").is_some_and(|p| !p.is_empty());
        if !ok {
            e.push(
                "store",
                "expected sqlite://FILE or postgres://USER@HOST:PORT/DB (or env:NAME / file:PATH holding one)",
            );
        }
        if config.listen.admin.is_none() {
            e.push(
                "listen.admin",
                "a store is managed through the admin API: set listen.admin (for example 127.0.0.1:9080)",
            );
        }
    }
    for (i, cidr) in config.trusted_proxies.iter().enumerate() {
        if parse_cidr(cidr).is_none() {
            e.push(
                format!("trusted_proxies[{i}]"),
                format!("{cidr:?} is not an IP address or CIDR"),
            );
        }
    }
    if config.limits.max_header_size.0 < 1024 {
        e.push("limits.max_header_size", "must be at least 1KiB");
    }
    if config.limits.header_timeout.get().is_zero() {
        e.push("limits.header_timeout", "must be greater than 0");
    }
    if config.limits.body_timeout.get().is_zero() {
        e.push("limits.body_timeout", "must be greater than 0");
    }
    if config.limits.max_concurrent_streams == 0 {
        e.push("limits.max_concurrent_streams", "must be greater than 0");
    }
    validate_overload(&config.overload, &mut e);
    for (name, up) in &config.upstreams {
        validate_upstream(name, up, &mut e);
    }
    crate::validate_policy::validate_consumers(config, &mut e);
    for (i, p) in config.policy_defaults.iter().enumerate() {
        crate::validate_policy::validate_policy(p, &format!("policy_defaults[{i}]"), &mut e);
    }
    let mut seen_names: HashMap<&str, usize> = HashMap::new();
    let mut seen_matches: HashMap<String, usize> = HashMap::new();
    for (i, route) in config.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if let Some(first) = seen_names.insert(route.name.as_str(), i) {
            e.push(
                format!("{at}.name"),
                format!("{:?} is already used by routes[{first}]", route.name),
            );
        }
        validate_route(config, route, &at, &mut e);
        for key in match_keys(route) {
            if let Some(first) = seen_matches.insert(key, i) {
                e.push(
                    format!("{at}.match"),
                    format!(
                        "matches the same requests as routes[{first}] with the same priority; \
                         set a different priority or narrow one of them"
                    ),
                );
                break;
            }
        }
    }
    e.0
}

fn validate_inbound(route: &RouteConfig, inbound: &InboundConfig, at: &str, e: &mut Errors) {
    let at = format!("{at}.inbound");
    if route.topic.is_none() {
        e.push(&at, "inbound verification is for topic routes");
    }
    let secret = inbound.secret();
    if !secret.is_reference() {
        let ok = match inbound {
            InboundConfig::StandardWebhooks { .. } => secret.parts().all(|p| match p {
                crate::SecretSource::Literal(s) => s.starts_with("whsec_"),
                _ => true,
            }),
            _ => secret.as_written().len() >= 8,
        };
        if !ok {
            e.push(
                format!("{at}.secret"),
                "give whsec_… (Standard Webhooks), a secret of 8 characters or more, or env:NAME / file:PATH",
            );
        }
    }
    match inbound {
        InboundConfig::StandardWebhooks { tolerance, .. } if tolerance.get().is_zero() => {
            e.push(format!("{at}.tolerance"), "must be greater than 0");
        }
        InboundConfig::Hmac {
            header,
            encoding,
            id_header,
            ..
        } => {
            for (field, h) in [("header", Some(header)), ("id_header", id_header.as_ref())] {
                if let Some(h) = h
                    && http::HeaderName::from_bytes(h.as_bytes()).is_err()
                {
                    e.push(format!("{at}.{field}"), "not a valid header name");
                }
            }
            if !matches!(encoding.as_str(), "hex" | "base64") {
                e.push(format!("{at}.encoding"), "hex or base64");
            }
        }
        _ => {}
    }
}

fn validate_listen(config: &Config, e: &mut Errors) {
    let mut addrs: Vec<(String, SocketAddr)> = Vec::new();
    let mut check = |path: &str, value: &str, e: &mut Errors| match value.parse::<SocketAddr>() {
        Ok(a) => {
            // Port 0 asks the system for a free port, so it never collides.
            if let Some((other, _)) = addrs.iter().find(|(_, b)| *b == a && a.port() != 0) {
                e.push(path, format!("{value} is also used by {other}"));
            }
            addrs.push((path.to_owned(), a));
        }
        Err(_) => e.push(
            path,
            format!("{value:?} is not an IP:port address (like 127.0.0.1:8080)"),
        ),
    };
    check("listen.proxy", &config.listen.proxy, e);
    if let Some(admin) = &config.listen.admin {
        check("listen.admin", admin, e);
    }
    if let Some(tls) = &config.listen.tls {
        check("listen.tls.address", &tls.address, e);
        if tls.certificates.is_empty() {
            e.push(
                "listen.tls.certificates",
                "at least one certificate is needed",
            );
        }
        for (i, c) in tls.certificates.iter().enumerate() {
            for (field, file) in [("cert", &c.cert), ("key", &c.key.as_written().to_owned())] {
                // PEM text (certificates kept in the store) is checked when compiled.
                if file.trim_start().starts_with("-----BEGIN") {
                    continue;
                }
                if let Err(err) = std::fs::metadata(file) {
                    e.push(
                        format!("listen.tls.certificates[{i}].{field}"),
                        format!("cannot read {file:?}: {err}"),
                    );
                }
            }
        }
    }
}

fn validate_upstream(name: &str, up: &UpstreamConfig, e: &mut Errors) {
    let at = format!("upstreams.{name}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        e.push(&at, "names may use only letters, digits, '-', '_' and '.'");
    }
    match (&up.builtin, up.targets.is_empty()) {
        (Some(_), false) => e.push(format!("{at}.targets"), "a builtin upstream has no targets"),
        (None, true) => e.push(format!("{at}.targets"), "at least one target is needed"),
        _ => {}
    }
    for (i, t) in up.targets.iter().enumerate() {
        if let Err(msg) = parse_host_port(&t.address) {
            e.push(format!("{at}.targets[{i}].address"), msg);
        }
        if !(1..=1000).contains(&t.weight) {
            e.push(
                format!("{at}.targets[{i}].weight"),
                "must be between 1 and 1000",
            );
        }
    }
    match (up.balance, &up.hash_on) {
        (Balance::ConsistentHash, None) => {
            e.push(
                format!("{at}.hash_on"),
                "consistent_hash needs hash_on: header:NAME, cookie:NAME or ip",
            );
        }
        (_, Some(h)) => {
            let ok = h == "ip"
                || h.strip_prefix("header:").is_some_and(valid_header_name)
                || h.strip_prefix("cookie:").is_some_and(|c| !c.is_empty());
            if !ok {
                e.push(
                    format!("{at}.hash_on"),
                    format!("{h:?}: expected header:NAME, cookie:NAME or ip"),
                );
            }
        }
        _ => {}
    }
    if let Some(a) = &up.health.active {
        if !a.path.starts_with('/') {
            e.push(format!("{at}.health.active.path"), "must start with '/'");
        }
        if a.interval.get().is_zero() {
            e.push(
                format!("{at}.health.active.interval"),
                "must be greater than 0",
            );
        }
        if a.timeout.get().is_zero() {
            e.push(
                format!("{at}.health.active.timeout"),
                "must be greater than 0",
            );
        }
        if a.healthy == 0 || a.unhealthy == 0 {
            e.push(
                format!("{at}.health.active"),
                "healthy and unhealthy must be at least 1",
            );
        }
    }
    if let Some(p) = &up.health.passive {
        if p.failures == 0 {
            e.push(
                format!("{at}.health.passive.failures"),
                "must be at least 1",
            );
        }
        if p.cooldown.get().is_zero() {
            e.push(
                format!("{at}.health.passive.cooldown"),
                "must be greater than 0",
            );
        }
    }
    if up.timeouts.connect.get().is_zero() {
        e.push(format!("{at}.timeouts.connect"), "must be greater than 0");
    }
    if up.timeouts.request.get().is_zero() {
        e.push(format!("{at}.timeouts.request"), "must be greater than 0");
    }
    if up.retries > 10 {
        e.push(format!("{at}.retries"), "at most 10");
    }
    if up.protocol == UpstreamProtocol::H2c && up.tls.is_some() {
        e.push(
            format!("{at}.protocol"),
            "h2c is HTTP/2 without TLS; with tls, use auto (h2 by ALPN)",
        );
    }
    if let Some(tls) = &up.tls {
        if let Some(ca) = &tls.ca
            && let Err(err) = std::fs::metadata(ca)
        {
            e.push(format!("{at}.tls.ca"), format!("cannot read {ca:?}: {err}"));
        }
        if let Some(sni) = &tls.sni
            && !valid_host(sni)
        {
            e.push(
                format!("{at}.tls.sni"),
                format!("{sni:?} is not a valid server name"),
            );
        }
    }
    if let Some(h) = &up.host
        && http::HeaderValue::from_str(h).is_err()
    {
        e.push(format!("{at}.host"), "not a valid Host header value");
    }
}

fn validate_route(config: &Config, route: &RouteConfig, at: &str, e: &mut Errors) {
    if route.name.is_empty() {
        e.push(format!("{at}.name"), "must not be empty");
    }
    if let Some(inbound) = &route.inbound {
        validate_inbound(route, inbound, at, e);
    }
    if let Some(ai) = &route.ai {
        crate::validate_ai::route(config, route, ai, at, e);
        return;
    }
    crate::validate_ai::non_ai_route(route, at, e);
    match (&route.topic, route.upstream.is_empty()) {
        (Some(_), false) => e.push(
            format!("{at}.topic"),
            "a route goes to an upstream or a topic, not both",
        ),
        (Some(topic), true) => {
            if !config.topics.contains_key(topic) {
                let hint = did_you_mean(topic, config.topics.keys().map(String::as_str))
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default();
                e.push(
                    format!("{at}.topic"),
                    format!("no topic named {topic:?}{hint}; declare it under topics"),
                );
            }
        }
        (None, true) => e.push(format!("{at}.upstream"), "required (or a topic, or ai)"),
        (None, false) => {
            if !config.upstreams.contains_key(&route.upstream) {
                let hint =
                    did_you_mean(&route.upstream, config.upstreams.keys().map(String::as_str))
                        .map(|s| format!(" (did you mean {s:?}?)"))
                        .unwrap_or_default();
                e.push(
                    format!("{at}.upstream"),
                    format!("no upstream named {:?}{hint}", route.upstream),
                );
            }
        }
    }
    let m = &route.matcher;
    for (i, h) in m.hosts.iter().enumerate() {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        if !valid_host(bare) {
            e.push(
                format!("{at}.match.hosts[{i}]"),
                format!("{h:?} is not a host name or *.domain wildcard"),
            );
        }
    }
    let mut has_prefix = false;
    let mut has_regex = false;
    for (i, p) in m.paths.iter().enumerate() {
        let pat = format!("{at}.match.paths[{i}]");
        if let Some(re) = p.strip_prefix('~') {
            has_regex = true;
            if let Err(err) = compile_route_regex(re) {
                e.push(pat, format!("invalid regex: {err}"));
            }
        } else if !p.starts_with('/') {
            e.push(
                pat,
                format!("{p:?}: a path starts with '/' (or '~' for a regex)"),
            );
        } else {
            let lit = p.strip_suffix("/*").unwrap_or(p);
            has_prefix |= p.ends_with("/*");
            if lit.contains('*') {
                e.push(pat, format!("{p:?}: '*' is allowed only as a final '/*'"));
            } else if weir_core::normalize_path(
                if lit.is_empty() { "/" } else { lit },
                Default::default(),
            )
            .map(|n| n != (if lit.is_empty() { "/" } else { lit }))
            .unwrap_or(true)
            {
                e.push(pat, format!("{p:?} is not in normalized form (no '//', '.', '..' or escapes of plain characters)"));
            }
        }
    }
    for (i, method) in m.methods.iter().enumerate() {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            e.push(
                format!("{at}.match.methods[{i}]"),
                format!("{method:?}: methods are upper-case, like GET"),
            );
        }
    }
    for (name, value) in &m.headers {
        if !valid_header_name(name) {
            e.push(
                format!("{at}.match.headers.{name}"),
                "not a valid header name",
            );
        }
        if http::HeaderValue::from_str(value).is_err() {
            e.push(
                format!("{at}.match.headers.{name}"),
                "not a valid header value",
            );
        }
    }
    if route.strip_prefix && !has_prefix {
        e.push(
            format!("{at}.strip_prefix"),
            "needs a prefix path (ending in /*) to strip",
        );
    }
    if let Some(rw) = &route.rewrite {
        if route.strip_prefix {
            e.push(
                format!("{at}.rewrite"),
                "use either strip_prefix or rewrite, not both",
            );
        }
        if !rw.starts_with('/') {
            e.push(format!("{at}.rewrite"), "must start with '/'");
        } else if !has_regex
            && weir_core::normalize_path(rw, Default::default())
                .map(|n| n != *rw)
                .unwrap_or(true)
        {
            // A static rewrite that climbs or hides separators is caught here, at load.
            e.push(
                format!("{at}.rewrite"),
                format!("{rw:?} is not a normalized path"),
            );
        }
    }
    if route.max_body_size.is_some_and(|s| s.0 == 0) {
        e.push(format!("{at}.max_body_size"), "must be greater than 0");
    }
    let mut kinds: HashMap<&'static str, usize> = HashMap::new();
    for (i, p) in route.policies.iter().enumerate() {
        let pat = format!("{at}.policies[{i}]");
        if let Some(first) = kinds.insert(p.kind(), i) {
            e.push(
                &pat,
                format!("{} is already in this chain at policies[{first}]", p.kind()),
            );
        }
        crate::validate_policy::validate_policy(p, &pat, e);
    }
}

/// The keys under which two routes would compete for the same requests at the same
/// priority; identical keys are refused at load (see docs/routing.md).
fn match_keys(route: &RouteConfig) -> Vec<String> {
    let m = &route.matcher;
    let mut methods = m.methods.clone();
    methods.sort();
    let headers: Vec<String> = m
        .headers
        .iter()
        .map(|(k, v)| format!("{}={v}", k.to_ascii_lowercase()))
        .collect();
    let hosts: Vec<String> = if m.hosts.is_empty() {
        vec!["*".into()]
    } else {
        m.hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
    };
    let paths: Vec<&str> = if m.paths.is_empty() {
        vec!["/*"]
    } else {
        m.paths.iter().map(String::as_str).collect()
    };
    let mut keys = Vec::new();
    for h in &hosts {
        for p in &paths {
            keys.push(format!(
                "{}|{h}|{p}|{}|{}",
                route.priority,
                methods.join(","),
                headers.join(",")
            ));
        }
    }
    keys
}

/// Compiles a route regex anchored at both ends with a bounded compiled size.
pub fn compile_route_regex(re: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}

pub(crate) fn valid_header_name(name: &str) -> bool {
    http::HeaderName::from_bytes(name.as_bytes()).is_ok()
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `host:port` with a valid port; the host may be a name or an IP (IPv6 in brackets).
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err(format!("{s:?}: port 0 is not allowed"));
        }
        return Ok((a.ip().to_string(), a.port()));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?}: expected host:port"));
    };
    let port: u16 = port.parse().map_err(|_| format!("{s:?}: invalid port"))?;
    if port == 0 {
        return Err(format!("{s:?}: port 0 is not allowed"));
    }
    if !valid_host(host) {
        return Err(format!("{s:?}: invalid host name"));
    }
    Ok((host.to_owned(), port))
}

/// An IP address or CIDR block.
pub fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// The closest candidate within a small edit distance, for "did you mean" hints.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.len() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Each subscription: a unique name, a known topic, its endpoint and delivery settings.
fn validate_subscriptions(config: &Config, e: &mut Errors) {
    let mut names = std::collections::HashSet::new();
    for (i, sub) in config.subscriptions.iter().enumerate() {
        let at = format!("subscriptions[{i}]");
        if sub.name.is_empty()
            || !sub
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            e.push(format!("{at}.name"), "letters, digits, '-', '_' or '.'");
        }
        if !names.insert(sub.name.as_str()) {
            e.push(
                format!("{at}.name"),
                format!("{:?} is used twice", sub.name),
            );
        }
        if !config.topics.contains_key(&sub.topic) {
            e.push(
                format!("{at}.topic"),
                format!("no topic named {:?}; declare it under topics", sub.topic),
            );
        }
        let endpoint_ok = ["http://", "https://"].iter().any(|p| {
            sub.endpoint
                .strip_prefix(p)
                .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        }) && sub.endpoint.parse::<http::Uri>().is_ok();
        if !endpoint_ok {
            e.push(
                format!("{at}.endpoint"),
                format!("{:?}: expected http(s)://host[:port]/path", sub.endpoint),
            );
        }
        if sub.from_api
            && let Ok(policy) = crate::net::NetworkPolicy::parse(&config.events.allowed_networks)
            && let Ok(uri) = sub.endpoint.parse::<http::Uri>()
            && let Some(host) = uri.host()
            && let Ok(ip) = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
            && !policy.allows(ip)
        {
            e.push(
                format!("{at}.endpoint"),
                format!("{ip} is outside events.allowed_networks (subscriptions made through the API may not reach internal addresses)"),
            );
        }
        if let Some(r) = &sub.rate_limit
            && (r.limit == 0 || r.per.get().is_zero())
        {
            e.push(
                format!("{at}.rate_limit"),
                "limit and per must be greater than 0",
            );
        }
        if !(1..=1000).contains(&sub.max_in_flight) {
            e.push(format!("{at}.max_in_flight"), "must be between 1 and 1000");
        }
        if sub.timeout.get().is_zero() {
            e.push(format!("{at}.timeout"), "must be greater than 0");
        }
        if let Some(secret) = &sub.signing_secret {
            for part in secret.parts() {
                let ok = match part {
                    crate::SecretSource::Literal(s) => s.starts_with("whsec_"),
                    _ => true,
                };
                if !ok {
                    e.push(
                        format!("{at}.signing_secret"),
                        "whsec_ followed by base64 (or env:NAME / file:PATH)",
                    );
                }
            }
        }
    }
}

/// The event queue's namespace and backend, and each topic's name and sizes.
fn validate_queue_and_topics(config: &Config, e: &mut Errors) {
    let ns = &config.events.namespace;
    if ns.is_empty()
        || ns.len() > 32
        || !ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    {
        e.push("events.namespace", "1 to 32 letters, digits, '-' or '_'");
    }
    let backend = config.events.backend.as_written();
    let known = backend == "embedded"
        || backend.starts_with("redis://")
        || backend.starts_with("rediss://")
        || backend.starts_with("nats://")
        || backend.starts_with("amqp://")
        || backend.starts_with("amqps://")
        || backend.strip_prefix("env:").is_some_and(|n| {
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
    if !known {
        e.push(
            "events.backend",
            format!(
                "{backend:?}: give `embedded`, a `redis://`, `rediss://`, `nats://`, `amqp://` or `amqps://` URL, or `env:NAME` naming a variable that holds one"
            ),
        );
    }
    for (name, t) in &config.topics {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            e.push(
                format!("topics.{name}"),
                "a topic name is letters, digits, '-', '_' or '.'",
            );
        }
        if t.max_event_size.0 == 0 || t.max_event_size.0 > 64 << 20 {
            e.push(
                format!("topics.{name}.max_event_size"),
                "must be between 1B and 64MiB",
            );
        }
        if t.retention.get().is_zero() {
            e.push(format!("topics.{name}.retention"), "must be greater than 0");
        }
    }
}

/// Thresholds given as percentages must rise in the order their actions escalate.
fn validate_overload(o: &crate::OverloadConfig, e: &mut Errors) {
    use crate::Share::Percent;
    if o.memory_limit.is_some_and(|m| m.0 < 16 << 20) {
        e.push("overload.memory_limit", "must be at least 16MiB");
    }
    if o.max_connections == Some(0) {
        e.push("overload.max_connections", "must be greater than 0");
    }
    let steps = [
        ("shed_keep_alive_at", o.shed_keep_alive_at),
        ("refuse_buffered_at", o.refuse_buffered_at),
        ("stop_accepting_at", o.stop_accepting_at),
    ];
    for pair in steps.windows(2) {
        if let ((a, Percent(x)), (b, Percent(y))) = (pair[0], pair[1])
            && x > y
        {
            e.push(
                format!("overload.{b}"),
                format!(
                    "must not be below overload.{a} ({x}%): the actions escalate in that order"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_yaml;

    fn errors(yaml: &str) -> Vec<String> {
        validate(&from_yaml(yaml, "t").unwrap())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn reports_every_error_with_its_path() {
        let errs = errors(
            r#"
listen: { proxy: "nope" }
upstreams:
  orders: { targets: [ { address: "127.0.0.1:0" } ] }
  empty: {}
routes:
  - { name: a, upstream: orders, match: { paths: [/a] } }
  - { name: b, upstream: orders, match: { paths: ["/b/../c"] } }
  - { name: c, upstream: ordres, match: { paths: ["~(unclosed"] } }
  - { name: a, upstream: orders, match: { paths: [/d], methods: [get] } }
"#,
        );
        let want = [
            "listen.proxy: \"nope\" is not an IP:port address",
            "upstreams.orders.targets[0].address",
            "upstreams.empty.targets: at least one target is needed",
            "routes[1].match.paths[0]",
            "routes[2].upstream: no upstream named \"ordres\" (did you mean \"orders\"?)",
            "routes[2].match.paths[0]: invalid regex",
            "routes[3].name: \"a\" is already used by routes[0]",
            "routes[3].match.methods[0]",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.contains(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
    }

    #[test]
    fn refuses_two_routes_competing_at_one_priority() {
        let errs = errors(
            r#"
upstreams: { u: { targets: [ { address: "127.0.0.1:1" } ] } }
routes:
  - { name: a, upstream: u, match: { paths: [/x/*], methods: [GET, POST] } }
  - { name: b, upstream: u, match: { paths: [/x/*], methods: [POST, GET] } }
  - { name: c, upstream: u, priority: 1, match: { paths: [/x/*], methods: [POST, GET] } }
"#,
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("routes[1].match"));
    }

    #[test]
    fn did_you_mean_finds_close_names() {
        assert_eq!(did_you_mean("ordres", ["orders", "users"]), Some("orders"));
        assert_eq!(did_you_mean("zzzzzz", ["orders", "users"]), None);
    }

    #[test]
    fn overload_thresholds_escalate_in_order() {
        let mut c = Config::default();
        c.overload.refuse_buffered_at = crate::Share::Percent(80);
        c.overload.memory_limit = Some(crate::ByteSize(1 << 20));
        c.overload.max_connections = Some(0);
        let errors: Vec<String> = validate(&c).iter().map(ToString::to_string).collect();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("overload.refuse_buffered_at")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("overload.memory_limit")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("overload.max_connections")),
            "{errors:?}"
        );
        assert!(validate(&Config::default()).is_empty());
    }
}
