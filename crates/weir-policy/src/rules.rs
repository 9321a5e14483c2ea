//! The built-in policies, each compiled from its config into what the request path needs.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use ipnet::IpNet;
use metrics::Counter;
use weir_config::{
    AclConfig, CorsConfig, HeaderOps as HeaderOpsConfig, IpConfig, KeyAuthConfig,
    StaticResponseConfig,
};
use weir_core::GatewayError;

use crate::{Consumers, Flow, PolicyCtx, Reply, admit, repeated_credential};

pub const POLICY_OUTCOMES: &str = "weir_policy_outcomes_total";

fn outcome(policy: &'static str, outcome: &'static str) -> Counter {
    metrics::counter!(POLICY_OUTCOMES, "policy" => policy, "outcome" => outcome)
}

fn parse_nets(list: &[String]) -> Vec<IpNet> {
    list.iter()
        .filter_map(|c| weir_config::parse_cidr(c))
        .collect()
}

// === impl IpRule ===

pub struct IpRule {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    denied: Counter,
}

impl IpRule {
    pub fn compile(c: &IpConfig) -> Self {
        Self {
            allow: parse_nets(&c.allow),
            deny: parse_nets(&c.deny),
            denied: outcome("ip", "denied"),
        }
    }

    /// Uses only the client address the pipeline derived (forwarding headers count only
    /// from `trusted_proxies`).
    pub fn check(&self, ctx: &PolicyCtx) -> Flow {
        let ip = ctx.client_ip;
        let denied = self.deny.iter().any(|n| n.contains(&ip))
            || (!self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)));
        if denied {
            self.denied.increment(1);
            return Flow::Respond(Reply::Error(
                GatewayError::Forbidden {
                    reason: "the client address is not allowed",
                },
                Vec::new(),
            ));
        }
        Flow::Continue
    }
}

// === impl KeyAuth ===

pub struct KeyAuth {
    header: HeaderName,
    bearer: bool,
    query: Option<String>,
    hide: bool,
    consumers: Arc<Consumers>,
    missing: Counter,
    invalid: Counter,
    ok: Counter,
}

impl KeyAuth {
    pub fn compile(c: &KeyAuthConfig, consumers: Arc<Consumers>) -> Result<Self, String> {
        let header = HeaderName::from_bytes(c.header.as_bytes())
            .map_err(|_| format!("key_auth.header: {:?} is not a header name", c.header))?;
        Ok(Self {
            header,
            bearer: c.bearer,
            query: c.query.clone(),
            hide: c.hide_credentials,
            consumers,
            missing: outcome("key_auth", "missing"),
            invalid: outcome("key_auth", "invalid"),
            ok: outcome("key_auth", "ok"),
        })
    }

    pub fn check(&self, uri: &http::Uri, headers: &mut HeaderMap, ctx: &mut PolicyCtx) -> Flow {
        let challenge = || {
            vec![(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"weir\""),
            )]
        };
        let repeated = repeated_credential(headers, &self.header).or_else(|| {
            self.bearer
                .then(|| repeated_credential(headers, &header::AUTHORIZATION))
                .flatten()
        });
        if let Some(flow) = repeated {
            return flow;
        }
        // Looked up while borrowed from the request: no copy of the key is made.
        let mut found: Option<(Option<&Arc<crate::Consumer>>, Source)> = None;
        if let Some(v) = headers.get(&self.header) {
            found = Some((self.consumers.by_key(v.as_bytes()), Source::Header));
        } else if self.bearer
            && let Some(v) = headers.get(header::AUTHORIZATION)
            && let Some(token) = strip_bearer(v.as_bytes())
        {
            found = Some((self.consumers.by_key(token), Source::Bearer));
        } else if let Some(param) = &self.query
            && let Some(q) = uri.query()
            && let Some(v) = query_value(q, param)
        {
            found = Some((self.consumers.by_key(&v), Source::Query));
        }
        let Some((consumer, source)) = found else {
            self.missing.increment(1);
            return Flow::Respond(Reply::Error(
                GatewayError::Unauthorized {
                    reason: "an API key is required",
                },
                challenge(),
            ));
        };
        let Some(consumer) = consumer else {
            self.invalid.increment(1);
            tracing::debug!("request refused: unknown API key");
            return Flow::Respond(Reply::Error(
                GatewayError::Unauthorized {
                    reason: "the API key is not valid",
                },
                challenge(),
            ));
        };
        self.ok.increment(1);
        if self.hide {
            match source {
                Source::Header => {
                    headers.remove(&self.header);
                }
                Source::Bearer => {
                    headers.remove(header::AUTHORIZATION);
                }
                Source::Query => {
                    if let (Some(param), Some(q)) = (&self.query, uri.query()) {
                        ctx.query = Some(remove_query_param(q, param));
                    }
                }
            }
        }
        admit(consumer, headers, ctx);
        Flow::Continue
    }
}

enum Source {
    Header,
    Bearer,
    Query,
}

fn strip_bearer(v: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = (v.get(..7)?, &v[7..]);
    (scheme.eq_ignore_ascii_case(b"bearer ") && !rest.is_empty()).then_some(rest)
}

/// The percent-decoded value of `name` in a query string (first occurrence).
fn query_value(q: &str, name: &str) -> Option<Vec<u8>> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

fn remove_query_param(q: &str, name: &str) -> String {
    q.split('&')
        .filter(|kv| kv.split_once('=').map_or(*kv, |(k, _)| k) != name)
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

// === impl Acl ===

pub struct Acl {
    allow: Vec<String>,
    deny: Vec<String>,
    denied: Counter,
}

impl Acl {
    pub fn compile(c: &AclConfig) -> Self {
        Self {
            allow: c.allow.clone(),
            deny: c.deny.clone(),
            denied: outcome("acl", "denied"),
        }
    }

    pub fn check(&self, ctx: &PolicyCtx) -> Flow {
        let groups: &[String] = ctx.consumer.as_ref().map_or(&[], |c| &c.groups);
        let in_any = |list: &[String]| groups.iter().any(|g| list.contains(g));
        if ctx.consumer.is_none()
            || in_any(&self.deny)
            || (!self.allow.is_empty() && !in_any(&self.allow))
        {
            self.denied.increment(1);
            return Flow::Respond(Reply::Error(
                GatewayError::Forbidden {
                    reason: "the consumer may not use this route",
                },
                Vec::new(),
            ));
        }
        Flow::Continue
    }
}

// === impl HeaderOps ===

pub struct HeaderOps {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn compile(c: &HeaderOpsConfig) -> Result<Self, String> {
        let pair = |(k, v): (&String, &String)| -> Result<(HeaderName, HeaderValue), String> {
            Ok((
                HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("headers: {k:?} is not a header name"))?,
                HeaderValue::from_str(v)
                    .map_err(|_| format!("headers.{k}: not a valid header value"))?,
            ))
        };
        Ok(Self {
            set: c.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: c.add.iter().map(pair).collect::<Result<_, _>>()?,
            remove: c
                .remove
                .iter()
                .map(|k| {
                    HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("headers: {k:?} is not a header name"))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, h: &mut HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n, v.clone());
        }
        for (n, v) in &self.add {
            h.append(n, v.clone());
        }
    }
}

// === impl StaticReply ===

pub struct StaticReply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl StaticReply {
    pub fn compile(c: &StaticResponseConfig) -> Result<Self, String> {
        let status = StatusCode::from_u16(c.status)
            .map_err(|_| format!("static_response.status: {} is not a status", c.status))?;
        let mut headers = HeaderMap::new();
        for (k, v) in &c.headers {
            let n = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("static_response.headers: {k:?} is not a header name"))?;
            let v = HeaderValue::from_str(v)
                .map_err(|_| format!("static_response.headers.{k}: not a valid header value"))?;
            headers.insert(n, v);
        }
        if let Some(l) = &c.location {
            headers.insert(
                header::LOCATION,
                HeaderValue::from_str(l)
                    .map_err(|_| "static_response.location: not a valid header value".to_owned())?,
            );
        }
        let body = Bytes::from(c.body.clone().unwrap_or_default());
        if !body.is_empty() {
            let ct = c
                .content_type
                .as_deref()
                .unwrap_or("text/plain; charset=utf-8");
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(ct).map_err(|_| {
                    "static_response.content_type: not a valid header value".to_owned()
                })?,
            );
        }
        Ok(Self {
            status,
            headers,
            body,
        })
    }

    pub fn reply(&self) -> Reply {
        Reply::Static {
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
        }
    }
}

// === impl Cors ===

pub struct Cors {
    any_origin: bool,
    origins: Vec<HeaderValue>,
    methods: HeaderValue,
    allowed_methods: Vec<Method>,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
    preflights: Counter,
    rejected: Counter,
}

impl Cors {
    pub fn compile(c: &CorsConfig) -> Result<Self, String> {
        let join = |v: &[String]| -> Result<Option<HeaderValue>, String> {
            if v.is_empty() {
                return Ok(None);
            }
            HeaderValue::from_str(&v.join(", "))
                .map(Some)
                .map_err(|_| "cors: invalid header list".to_owned())
        };
        Ok(Self {
            any_origin: c.origins.iter().any(|o| o == "*"),
            origins: c
                .origins
                .iter()
                .filter(|o| *o != "*")
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
            methods: join(&c.methods)?.unwrap_or(HeaderValue::from_static("GET, HEAD, POST")),
            allowed_methods: c
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            headers: join(&c.headers)?,
            expose: join(&c.expose_headers)?,
            credentials: c.credentials,
            max_age: HeaderValue::from(c.max_age.get().as_secs()),
            preflights: outcome("cors", "preflight"),
            rejected: outcome("cors", "origin_rejected"),
        })
    }

    fn allowed(&self, origin: &HeaderValue) -> bool {
        self.any_origin
            || self
                .origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
    }

    /// The `Access-Control-Allow-Origin` value for an allowed origin.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    pub fn on_request(&self, method: &Method, headers: &HeaderMap, ctx: &mut PolicyCtx) -> Flow {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Flow::Continue;
        };
        let preflight = *method == Method::OPTIONS
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !self.allowed(origin) {
            self.rejected.increment(1);
            if preflight {
                return Flow::Respond(Reply::Error(
                    GatewayError::Forbidden {
                        reason: "the origin is not allowed",
                    },
                    Vec::new(),
                ));
            }
            return Flow::Continue;
        }
        if !preflight {
            ctx.cors_origin = Some(origin.clone());
            return Flow::Continue;
        }
        self.preflights.increment(1);
        let requested = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
        if !requested.is_some_and(|m| self.allowed_methods.contains(&m)) {
            return Flow::Respond(Reply::Error(
                GatewayError::Forbidden {
                    reason: "the method is not allowed by CORS",
                },
                Vec::new(),
            ));
        }
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        match (
            &self.headers,
            headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS),
        ) {
            (Some(list), _) => {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, list.clone());
            }
            // No list configured: the requested headers are allowed.
            (None, Some(asked)) => {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
            (None, None) => {}
        }
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        h.insert(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        Flow::Respond(Reply::Static {
            status: StatusCode::NO_CONTENT,
            headers: h,
            body: Bytes::new(),
        })
    }

    pub fn on_response(&self, h: &mut HeaderMap, ctx: &PolicyCtx) {
        let Some(origin) = &ctx.cors_origin else {
            return;
        };
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(e) = &self.expose {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_helpers() {
        assert_eq!(
            query_value("a=1&api_key=k%2Bx&b=2", "api_key").unwrap(),
            b"k+x"
        );
        assert_eq!(query_value("a=1", "api_key"), None);
        assert_eq!(
            remove_query_param("a=1&api_key=k&b=2", "api_key"),
            "a=1&b=2"
        );
        assert_eq!(percent_decode("%zz%41+"), b"%zzA ");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(strip_bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(strip_bearer(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(strip_bearer(b"Basic abc"), None);
        assert_eq!(strip_bearer(b"Bearer "), None);
    }
}
