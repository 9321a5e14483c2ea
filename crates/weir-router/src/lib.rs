//! The route table: compiles validated routes into host and path indexes and finds the one
//! route that serves a request. Pure and synchronous; benchmarked in `benches/lookup.rs`.
//!
//! Precedence is a total order (see `docs/routing.md`); the first rule that differs decides:
//! 1. higher `priority`;
//! 2. host: exact name, then `*.domain` wildcard, then no host condition;
//! 3. path: exact, then prefix (longer first), then regex;
//! 4. more method and header conditions;
//! 5. earlier in the configuration.

use rustc_hash::FxHashMap as HashMap;
use std::cmp::Reverse;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use weir_config::RouteConfig;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("routes[{route}].match.paths[{path}]: {message}")]
    BadPath {
        route: usize,
        path: usize,
        message: String,
    },
}

/// What a request looks like to the router: one canonical view, made once per request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Lower-case host without port or trailing dot; empty when the request has none.
    pub host: &'a str,
    /// The normalized path (see `weir_core::path`).
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

/// How the path matched, for prefix stripping and rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMatch {
    Exact,
    /// The matched prefix is `path[..len]` (without the final `/`).
    Prefix {
        len: usize,
    },
    /// Matched by the regex of entry `entry` (see [`RouteTable::regex`]).
    Regex {
        entry: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched {
    /// Index of the route in the configuration's `routes` list.
    pub route: usize,
    pub path: PathMatch,
}

type Key = (Reverse<i32>, u8, u8, Reverse<usize>, Reverse<usize>, usize);

#[derive(Debug)]
struct Entry {
    route: usize,
    key: Key,
    cond: usize,
    regex: Option<regex::Regex>,
}

#[derive(Debug)]
struct Conditions {
    methods: Vec<Method>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Conditions {
    #[inline]
    fn accept(&self, req: &RequestView<'_>) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == req.method))
            && self
                .headers
                .iter()
                .all(|(n, v)| req.headers.get_all(n).iter().any(|have| have == v))
    }
}

/// Routes of one host condition. Keys come from the configuration only, so a fast hasher
/// without flooding resistance is safe: requests look keys up, they never insert them.
#[derive(Debug, Default)]
struct Bucket {
    exact: HashMap<Box<str>, Vec<usize>>,
    prefix: HashMap<Box<str>, Vec<usize>>,
    regex: Vec<usize>,
    /// Highest priority of any entry here: a bucket that cannot beat the best match so far
    /// is not searched.
    max_priority: i32,
    host_rank: u8,
}

impl Bucket {
    fn with_rank(host_rank: u8) -> Self {
        Self {
            host_rank,
            max_priority: i32::MIN,
            ..Self::default()
        }
    }

    /// Whether any entry of this bucket could rank before `best`.
    fn can_beat(&self, best: &Option<(Key, Matched)>) -> bool {
        match best {
            None => true,
            Some((k, _)) => {
                self.max_priority > k.0.0 || (self.max_priority == k.0.0 && self.host_rank <= k.1)
            }
        }
    }
}

/// The compiled, immutable route index. Cloning is not offered: it is built once per
/// configuration and shared inside the snapshot.
#[derive(Debug, Default)]
pub struct RouteTable {
    entries: Vec<Entry>,
    conditions: Vec<Conditions>,
    exact_hosts: HashMap<Box<str>, Bucket>,
    wildcard_hosts: HashMap<Box<str>, Bucket>,
    any_host: Bucket,
}

const HOST_EXACT: u8 = 0;
const HOST_WILDCARD: u8 = 1;
const HOST_ANY: u8 = 2;
const PATH_EXACT: u8 = 0;
const PATH_PREFIX: u8 = 1;
const PATH_REGEX: u8 = 2;

impl RouteTable {
    /// Compiles validated routes. Errors only for what validation also reports, so a
    /// validated configuration always compiles.
    pub fn compile(routes: &[RouteConfig]) -> Result<Self, RouterError> {
        let mut t = RouteTable {
            any_host: Bucket::with_rank(HOST_ANY),
            ..RouteTable::default()
        };
        for (ri, r) in routes.iter().enumerate() {
            let m = &r.matcher;
            let cond_index = t.conditions.len();
            let mut headers = Vec::new();
            for (k, v) in &m.headers {
                // Validation checked both; skip rather than panic if it was bypassed.
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    headers.push((n, v));
                }
            }
            let methods: Vec<Method> = m
                .methods
                .iter()
                .filter_map(|s| Method::from_bytes(s.as_bytes()).ok())
                .collect();
            let ncond = methods.len().min(1) + headers.len();
            t.conditions.push(Conditions { methods, headers });

            let hosts: Vec<Option<&str>> = if m.hosts.is_empty() {
                vec![None]
            } else {
                m.hosts.iter().map(|h| Some(h.as_str())).collect()
            };
            let default_path = ["/*".to_owned()];
            let paths: &[String] = if m.paths.is_empty() {
                &default_path
            } else {
                &m.paths
            };
            for host in &hosts {
                for (pi, p) in paths.iter().enumerate() {
                    let (prank, literal, regex) = if let Some(re) = p.strip_prefix('~') {
                        let regex = weir_config::compile_route_regex(re).map_err(|e| {
                            RouterError::BadPath {
                                route: ri,
                                path: pi,
                                message: e.to_string(),
                            }
                        })?;
                        (PATH_REGEX, String::new(), Some(regex))
                    } else if let Some(prefix) = p.strip_suffix("/*") {
                        (PATH_PREFIX, prefix.to_owned(), None)
                    } else {
                        (PATH_EXACT, p.clone(), None)
                    };
                    let (hrank, host_key) = match host {
                        None => (HOST_ANY, None),
                        Some(h) => match h.strip_prefix("*.") {
                            Some(suffix) => (HOST_WILDCARD, Some(suffix.to_ascii_lowercase())),
                            None => (HOST_EXACT, Some(h.to_ascii_lowercase())),
                        },
                    };
                    let key: Key = (
                        Reverse(r.priority),
                        hrank,
                        prank,
                        Reverse(literal.len()),
                        Reverse(ncond),
                        ri,
                    );
                    let id = t.entries.len();
                    t.entries.push(Entry {
                        route: ri,
                        key,
                        cond: cond_index,
                        regex,
                    });
                    let bucket = match (hrank, host_key) {
                        (HOST_EXACT, Some(h)) => t
                            .exact_hosts
                            .entry(h.into())
                            .or_insert_with(|| Bucket::with_rank(HOST_EXACT)),
                        (HOST_WILDCARD, Some(h)) => t
                            .wildcard_hosts
                            .entry(h.into())
                            .or_insert_with(|| Bucket::with_rank(HOST_WILDCARD)),
                        _ => &mut t.any_host,
                    };
                    bucket.max_priority = bucket.max_priority.max(r.priority);
                    match prank {
                        PATH_EXACT => bucket.exact.entry(literal.into()).or_default().push(id),
                        PATH_PREFIX => bucket.prefix.entry(literal.into()).or_default().push(id),
                        _ => bucket.regex.push(id),
                    }
                }
            }
        }
        let entries = &t.entries;
        let sort = |b: &mut Bucket| {
            for v in b.exact.values_mut().chain(b.prefix.values_mut()) {
                v.sort_by_key(|&i| entries[i].key);
            }
            b.regex.sort_by_key(|&i| entries[i].key);
        };
        t.exact_hosts.values_mut().for_each(sort);
        t.wildcard_hosts.values_mut().for_each(sort);
        sort(&mut t.any_host);
        Ok(t)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The regex of a [`PathMatch::Regex`] entry, for rewrite templates.
    pub fn regex(&self, entry: usize) -> Option<&regex::Regex> {
        self.entries.get(entry).and_then(|e| e.regex.as_ref())
    }

    /// Finds the route for `req`, or `None` (the gateway answers 404).
    pub fn find(&self, req: &RequestView<'_>) -> Option<Matched> {
        let mut best: Option<(Key, Matched)> = None;
        if !req.host.is_empty() {
            if let Some(b) = self.exact_hosts.get(req.host) {
                self.search(b, req, &mut best);
            }
            if let Some((_, parent)) = req.host.split_once('.')
                && let Some(b) = self.wildcard_hosts.get(parent)
            {
                self.search(b, req, &mut best);
            }
        }
        self.search(&self.any_host, req, &mut best);
        best.map(|(_, m)| m)
    }

    fn search(&self, b: &Bucket, req: &RequestView<'_>, best: &mut Option<(Key, Matched)>) {
        if !b.can_beat(best) {
            return;
        }
        let path = req.path;
        if let Some(list) = b.exact.get(path) {
            self.first_in(list, req, PathMatch::Exact, best);
        }
        if !b.prefix.is_empty() {
            // The path itself and each ancestor at a segment boundary: "/a/b" → "/a/b", "/a", "".
            let mut end = path.len();
            loop {
                let candidate = &path[..end];
                if let Some(list) = b.prefix.get(candidate) {
                    self.first_in(list, req, PathMatch::Prefix { len: end }, best);
                }
                if end == 0 {
                    break;
                }
                end = candidate.rfind('/').unwrap_or(0);
            }
        }
        for &id in &b.regex {
            let e = &self.entries[id];
            if best.as_ref().is_some_and(|(k, _)| *k <= e.key) {
                break;
            }
            if e.regex.as_ref().is_some_and(|r| r.is_match(path))
                && self.conditions[e.cond].accept(req)
            {
                *best = Some((
                    e.key,
                    Matched {
                        route: e.route,
                        path: PathMatch::Regex { entry: id },
                    },
                ));
                break;
            }
        }
    }

    #[inline]
    fn first_in(
        &self,
        list: &[usize],
        req: &RequestView<'_>,
        pm: PathMatch,
        best: &mut Option<(Key, Matched)>,
    ) {
        for &id in list {
            let e = &self.entries[id];
            if best.as_ref().is_some_and(|(k, _)| *k <= e.key) {
                return;
            }
            if self.conditions[e.cond].accept(req) {
                *best = Some((
                    e.key,
                    Matched {
                        route: e.route,
                        path: pm,
                    },
                ));
                return;
            }
        }
    }
}

/// The host a request addresses, as the router wants it: lower-case, without port or
/// trailing dot. Returns `None` for a malformed host (the gateway answers 400).
pub fn canonical_host(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content as is.
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        if !(after.is_empty() || valid_port(after.strip_prefix(':')?)) {
            return None;
        }
        &raw[..end + 2]
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) => {
                if !valid_port(port) {
                    return None;
                }
                h
            }
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:_".contains(&b))
    {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(std::borrow::Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(std::borrow::Cow::Borrowed(host))
    }
}

fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok_and(|n| n > 0)
}

#[cfg(test)]
mod tests;
