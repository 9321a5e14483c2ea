//! Inbound webhooks: a topic route that receives a sender's webhooks checks their
//! signature on the raw body before anything is published (Standard Webhooks/Svix,
//! GitHub, or any HMAC-SHA256 in a header), and names the sender's delivery id, which
//! becomes the event id's source so a redelivered webhook is the same event.

use std::time::Duration;

use base64::Engine as _;
use http::{HeaderMap, HeaderName};
use weir_config::InboundConfig;

use crate::delivery::hmac_sha256;

/// A compiled inbound check.
pub struct Inbound {
    scheme: Scheme,
}

enum Scheme {
    StandardWebhooks {
        keys: Vec<Vec<u8>>,
        tolerance: Duration,
    },
    Github {
        key: Vec<u8>,
    },
    Hmac {
        key: Vec<u8>,
        header: HeaderName,
        prefix: String,
        base64: bool,
        id_header: Option<HeaderName>,
    },
}

/// Why a webhook was refused; the message is safe to show the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub &'static str);

/// Equal in time independent of the inputs: both sides are hashed to fixed-length
/// digests first, then compared in constant time.
fn same(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest as _;
    use subtle::ConstantTimeEq as _;
    bool::from(sha2::Sha256::digest(a).ct_eq(&sha2::Sha256::digest(b)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn header<'a>(h: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| h.get(*n))
        .and_then(|v| v.to_str().ok())
}

impl Inbound {
    /// Resolves the secret (`env:`, `file:` or inline).
    pub fn compile(
        c: &InboundConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let secret = c.secret();
        let unreadable = |e: String| format!("inbound secret: {e}");
        let scheme = match c {
            InboundConfig::StandardWebhooks { tolerance, .. } => {
                let mut keys = Vec::new();
                for s in secret.resolve_all(env).map_err(unreadable)? {
                    let b64 = s
                        .strip_prefix("whsec_")
                        .ok_or("inbound secret: whsec_ followed by base64")?;
                    keys.push(
                        base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .map_err(|_| "inbound secret: not valid base64 after whsec_")?,
                    );
                }
                if keys.is_empty() {
                    return Err("inbound secret is empty".to_owned());
                }
                Scheme::StandardWebhooks {
                    keys,
                    tolerance: tolerance.get(),
                }
            }
            InboundConfig::Github { .. } => Scheme::Github {
                key: secret.resolve(env).map_err(unreadable)?.into_bytes(),
            },
            InboundConfig::Hmac {
                header,
                prefix,
                encoding,
                id_header,
                ..
            } => Scheme::Hmac {
                key: secret.resolve(env).map_err(unreadable)?.into_bytes(),
                header: HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| format!("inbound header {header:?} is not a header name"))?,
                prefix: prefix.clone(),
                base64: encoding == "base64",
                id_header: id_header
                    .as_deref()
                    .map(|h| HeaderName::from_bytes(h.as_bytes()))
                    .transpose()
                    .map_err(|_| "inbound id_header is not a header name")?,
            },
        };
        Ok(Self { scheme })
    }

    /// Checks the signature over the exact body received; the sender's delivery id, if
    /// the scheme has one. `now` is Unix seconds.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Option<String>, Refused> {
        match &self.scheme {
            Scheme::StandardWebhooks { keys, tolerance } => {
                let id = header(headers, &["webhook-id", "svix-id"])
                    .ok_or(Refused("webhook-id is missing"))?;
                let ts = header(headers, &["webhook-timestamp", "svix-timestamp"])
                    .ok_or(Refused("webhook-timestamp is missing"))?;
                let sigs = header(headers, &["webhook-signature", "svix-signature"])
                    .ok_or(Refused("webhook-signature is missing"))?;
                if id.is_empty() || id.len() > 255 || id.contains('.') {
                    return Err(Refused("webhook-id is not a valid id"));
                }
                let t: i64 = ts
                    .trim()
                    .parse()
                    .map_err(|_| Refused("webhook-timestamp is not a number"))?;
                if (now - t).unsigned_abs() > tolerance.as_secs() {
                    return Err(Refused("webhook-timestamp is too far from now"));
                }
                let mut content = Vec::with_capacity(id.len() + ts.len() + body.len() + 2);
                content.extend_from_slice(id.as_bytes());
                content.push(b'.');
                content.extend_from_slice(ts.trim().as_bytes());
                content.push(b'.');
                content.extend_from_slice(body);
                let given: Vec<Vec<u8>> = sigs
                    .split_whitespace()
                    .filter_map(|s| s.strip_prefix("v1,"))
                    .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .collect();
                let ok = keys.iter().any(|k| {
                    let want = hmac_sha256(k, &content);
                    given.iter().any(|g| same(g, &want))
                });
                if !ok {
                    return Err(Refused("webhook-signature does not match"));
                }
                Ok(Some(id.to_owned()))
            }
            Scheme::Github { key } => {
                let sig = header(headers, &["x-hub-signature-256"])
                    .ok_or(Refused("X-Hub-Signature-256 is missing"))?;
                let given = sig
                    .trim()
                    .strip_prefix("sha256=")
                    .ok_or(Refused("X-Hub-Signature-256 is not sha256=<hex>"))?;
                let want = hex(&hmac_sha256(key, body));
                if !same(given.to_ascii_lowercase().as_bytes(), want.as_bytes()) {
                    return Err(Refused("X-Hub-Signature-256 does not match"));
                }
                Ok(header(headers, &["x-github-delivery"])
                    .filter(|d| !d.is_empty() && d.len() <= 255)
                    .map(str::to_owned))
            }
            Scheme::Hmac {
                key,
                header: name,
                prefix,
                base64,
                id_header,
            } => {
                let sig = headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .ok_or(Refused("the signature header is missing"))?;
                let given = sig
                    .trim()
                    .strip_prefix(prefix.as_str())
                    .ok_or(Refused("the signature header has the wrong form"))?;
                let mac = hmac_sha256(key, body);
                let ok = if *base64 {
                    base64::engine::general_purpose::STANDARD
                        .decode(given)
                        .is_ok_and(|g| same(&g, &mac))
                } else {
                    same(given.to_ascii_lowercase().as_bytes(), hex(&mac).as_bytes())
                };
                if !ok {
                    return Err(Refused("the signature does not match"));
                }
                Ok(id_header
                    .as_ref()
                    .and_then(|h| headers.get(h))
                    .and_then(|v| v.to_str().ok())
                    .filter(|d| !d.is_empty() && d.len() <= 255)
                    .map(str::to_owned))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn compile(json: &str) -> Inbound {
        let c: InboundConfig = serde_json::from_str(json).unwrap();
        Inbound::compile(&c, &|_| None).unwrap()
    }

    /// The Standard Webhooks reference example, as a receiver sees it.
    #[test]
    fn standard_webhooks_reference_vector_verifies() {
        let v = compile(
            r#"{"scheme": "standard_webhooks", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}"#,
        );
        let body = br#"{"test": 2432232314}"#;
        let good = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,bm9ldHUjKzFob2VudXRob2VodWUzMjRvdWVvdW9ldQo= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        assert_eq!(
            v.verify(&good, body, 1614265330 + 10),
            Ok(Some("msg_p5jXN8AQM9LWM0D4loKWxJek".to_owned()))
        );
        assert!(v.verify(&good, b"{\"test\": 1}", 1614265330).is_err());
        assert_eq!(
            v.verify(&good, body, 1614265330 + 301),
            Err(Refused("webhook-timestamp is too far from now"))
        );
        let forged = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", "v1,AAAA"),
        ]);
        assert!(v.verify(&forged, body, 1614265330).is_err());
        assert!(v.verify(&HeaderMap::new(), body, 1614265330).is_err());
    }

    /// GitHub's documented example (secret "It's a Secret to Everybody").
    #[test]
    fn github_example_verifies() {
        let v = compile(r#"{"scheme": "github", "secret": "It's a Secret to Everybody"}"#);
        let h = headers(&[
            (
                "x-hub-signature-256",
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ]);
        assert_eq!(
            v.verify(&h, b"Hello, World!", 0),
            Ok(Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned()))
        );
        assert!(v.verify(&h, b"Hello, World?", 0).is_err());
    }

    #[test]
    fn generic_hmac_in_base64_with_an_id_header() {
        let v = compile(
            r#"{"scheme": "hmac", "secret": "shopify-secret-1", "header": "x-shopify-hmac-sha256", "encoding": "base64", "id_header": "x-shopify-webhook-id"}"#,
        );
        let sig = base64::engine::general_purpose::STANDARD
            .encode(hmac_sha256(b"shopify-secret-1", b"{}"));
        let h = headers(&[
            ("x-shopify-hmac-sha256", sig.as_str()),
            ("x-shopify-webhook-id", "w-1"),
        ]);
        assert_eq!(v.verify(&h, b"{}", 0), Ok(Some("w-1".to_owned())));
        assert!(v.verify(&h, b"{ }", 0).is_err());
    }
}
