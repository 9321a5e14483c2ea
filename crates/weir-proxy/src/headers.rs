//! Header hygiene on the way in and out: hop-by-hop removal (also of headers named in
//! `Connection`, except a protected set), `X-Forwarded-*` with `trusted_proxies`, removal
//! of client-sent internal `x-weir-*` headers, and the client address derived once.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers a client may not remove by naming them in `Connection`.
const PROTECTED: &[&str] = &[
    "authorization",
    "host",
    "content-length",
    "content-type",
    "cookie",
    "forwarded",
    "x-request-id",
    "x-real-ip",
];

/// Forwarding headers that an untrusted peer is not allowed to set.
const UNTRUSTED_DROP: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-client-cert",
];

/// What a one-pass scan found among the header names, so the common request that carries
/// none of these pays one walk over its names instead of a dozen hash lookups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan(u8);

impl Scan {
    const CONNECTION: u8 = 1;
    const HOP: u8 = 2;
    const UPGRADE: u8 = 4;
    const INTERNAL: u8 = 8;
    const FORWARDING: u8 = 16;

    pub fn of(h: &HeaderMap) -> Self {
        let mut f = 0;
        for name in h.keys() {
            f |= Self::classify(name);
        }
        Self(f)
    }

    fn classify(n: &HeaderName) -> u8 {
        if n == header::CONNECTION {
            Self::CONNECTION
        } else if n == header::TE
            || n == header::TRAILER
            || n == header::TRANSFER_ENCODING
            || n == header::PROXY_AUTHORIZATION
        {
            Self::HOP
        } else if n == header::UPGRADE {
            Self::UPGRADE
        } else {
            let s = n.as_str();
            if s.starts_with("x-weir-") || s.starts_with("x-consumer-") {
                Self::INTERNAL
            } else if s == "keep-alive" || s == "proxy-connection" {
                Self::HOP
            } else if s == "forwarded" || s == "x-real-ip" || s.starts_with("x-forwarded-") {
                Self::FORWARDING
            } else {
                0
            }
        }
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// Removes hop-by-hop headers from a request or response. `upgrade` keeps `Upgrade` and a
/// `Connection: upgrade` for a WebSocket handshake.
pub fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool, scan: Scan) {
    if scan.has(Scan::CONNECTION)
        && !h
            .get_all(header::CONNECTION)
            .iter()
            .all(is_plain_connection)
    {
        // Every Connection line counts; only then are the names it lists copied out.
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(str::trim)
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case("close")
                    && !t.eq_ignore_ascii_case("keep-alive")
                    && !t.eq_ignore_ascii_case("upgrade")
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            let s = name.as_str();
            if PROTECTED.contains(&s)
                || s.starts_with("x-forwarded-")
                || s.starts_with("x-weir-")
                || s.starts_with("x-consumer-")
            {
                tracing::debug!(header = s, "ignored a protected header named in Connection");
                continue;
            }
            h.remove(&name);
        }
    }
    if scan.has(Scan::CONNECTION) {
        h.remove(header::CONNECTION);
    }
    if scan.has(Scan::HOP) {
        h.remove(&KEEP_ALIVE);
        h.remove(&PROXY_CONNECTION);
        h.remove(header::TE);
        h.remove(header::TRAILER);
        h.remove(header::TRANSFER_ENCODING);
        h.remove(header::PROXY_AUTHORIZATION);
    }
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if scan.has(Scan::UPGRADE) {
        h.remove(header::UPGRADE);
    }
}

/// `Connection: keep-alive` or `close` alone (the usual case) names no header to remove.
fn is_plain_connection(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    b.eq_ignore_ascii_case(b"keep-alive") || b.eq_ignore_ascii_case(b"close")
}

/// Drops client-sent `x-weir-*` and `x-consumer-*` headers: Weir alone sets them (the
/// consumer headers tell upstreams who authenticated, so a client must never forge them).
pub fn remove_internal(h: &mut HeaderMap, scan: Scan) {
    if !scan.has(Scan::INTERNAL) {
        return;
    }
    let internal: Vec<HeaderName> = h
        .keys()
        .filter(|n| n.as_str().starts_with("x-weir-") || n.as_str().starts_with("x-consumer-"))
        .cloned()
        .collect();
    for n in internal {
        h.remove(n);
    }
}

/// Sets `X-Forwarded-For/-Proto/-Host` and returns the client address to use for policies
/// and logs. From a peer outside `trusted_proxies` the client's own forwarding headers are
/// replaced; from a trusted peer `X-Forwarded-For` is appended to and the client is the
/// right-most address that is not itself trusted.
/// The connection's peer as forwarding sees it.
pub struct Peer<'a> {
    pub ip: IpAddr,
    /// `ip` formatted as a header value (once per connection).
    pub header: &'a HeaderValue,
    /// Whether `ip` is in `trusted_proxies`.
    pub trusted: bool,
}

pub fn apply_forwarded(
    h: &mut HeaderMap,
    peer: Peer<'_>,
    scan: Scan,
    is_trusted: impl Fn(IpAddr) -> bool,
    scheme: &'static str,
    host: Option<&HeaderValue>,
) -> IpAddr {
    let Peer {
        ip: peer,
        header: peer_header,
        trusted: peer_trusted,
    } = peer;
    let mut client = peer;
    if peer_trusted {
        let mut chain = String::new();
        for v in h.get_all(&X_FORWARDED_FOR) {
            if let Ok(s) = v.to_str() {
                if !chain.is_empty() {
                    chain.push_str(", ");
                }
                chain.push_str(s);
            }
        }
        for hop in chain.rsplit(',').map(str::trim) {
            match hop.parse::<IpAddr>() {
                Ok(ip) if is_trusted(ip) => client = ip,
                Ok(ip) => {
                    client = ip;
                    break;
                }
                Err(_) => break,
            }
        }
        let value = if chain.is_empty() {
            peer.to_string()
        } else {
            format!("{chain}, {peer}")
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(&X_FORWARDED_FOR, v);
        }
        if !h.contains_key(&X_FORWARDED_PROTO) {
            h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
        }
        if !h.contains_key(&X_FORWARDED_HOST)
            && let Some(host) = host
        {
            h.insert(&X_FORWARDED_HOST, host.clone());
        }
    } else {
        if scan.has(Scan::FORWARDING) {
            for name in UNTRUSTED_DROP {
                h.remove(*name);
            }
        }
        h.insert(&X_FORWARDED_FOR, peer_header.clone());
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
        match host {
            Some(host) => {
                h.insert(&X_FORWARDED_HOST, host.clone());
            }
            None => {
                h.remove(&X_FORWARDED_HOST);
            }
        }
    }
    client
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn connection_named_headers_go_but_protected_ones_stay() {
        let mut h = map(&[
            (
                "connection",
                "close, x-secret, authorization, x-forwarded-for",
            ),
            ("x-secret", "1"),
            ("authorization", "Bearer t"),
            ("x-forwarded-for", "1.2.3.4"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
        ]);
        let scan = Scan::of(&h);
        strip_hop_by_hop(&mut h, false, scan);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("authorization").is_some());
        assert!(h.get("x-forwarded-for").is_some());
        for gone in ["connection", "keep-alive", "te", "upgrade"] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
    }

    #[test]
    fn every_connection_line_is_honoured() {
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
        ]);
        let scan = Scan::of(&h);
        strip_hop_by_hop(&mut h, false, scan);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("connection").is_none());
    }

    #[test]
    fn untrusted_peer_cannot_spoof_forwarding() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let ph = HeaderValue::from_static("10.1.1.1");
        let scan = Scan::of(&h);
        let client = apply_forwarded(
            &mut h,
            Peer {
                ip: peer,
                header: &ph,
                trusted: false,
            },
            scan,
            |_| false,
            "http",
            None,
        );
        assert_eq!(client, peer);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "10.1.1.1");
        assert!(h.get("x-real-ip").is_none() && h.get("forwarded").is_none());
    }

    #[test]
    fn trusted_peer_appends_and_client_is_rightmost_untrusted() {
        let mut h = map(&[("x-forwarded-for", "6.6.6.6, 7.7.7.7, 10.0.0.2")]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        let ph = HeaderValue::from_static("10.0.0.1");
        let scan = Scan::of(&h);
        let client = apply_forwarded(
            &mut h,
            Peer {
                ip: peer,
                header: &ph,
                trusted: true,
            },
            scan,
            trusted,
            "https",
            None,
        );
        assert_eq!(client, "7.7.7.7".parse::<IpAddr>().unwrap());
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 7.7.7.7, 10.0.0.2, 10.0.0.1");
    }

    #[test]
    fn internal_headers_are_removed() {
        let mut h = map(&[("x-weir-consumer", "admin"), ("x-other", "1")]);
        let scan = Scan::of(&h);
        remove_internal(&mut h, scan);
        assert!(h.get("x-weir-consumer").is_none());
        assert!(h.get("x-other").is_some());
    }
}
