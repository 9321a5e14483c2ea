//! Image URLs in prompts made inline for providers that take images only as base64
//! (Gemini), just before such a target is called: each image downloaded through the SSRF
//! guard (only addresses `ai.images.allowed_networks` allows, checked on the address
//! dialled; no redirects; a deadline and a size cap) and written back as a `data:` URL.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value;
use weir_config::ai::ImageFetchConfig;

/// Most images one request may have downloaded.
const MOST: usize = 16;

pub struct ImageFetch {
    how: weir_upstream::Fetch,
}

impl ImageFetch {
    pub fn compile(c: &ImageFetchConfig) -> Result<Self, String> {
        let policy = weir_config::net::NetworkPolicy::parse(&c.allowed_networks)
            .map_err(|e| format!("ai.images.allowed_networks: {e}"))?;
        Ok(Self {
            how: weir_upstream::Fetch {
                timeout: c.timeout.get(),
                max_bytes: usize::try_from(c.max_size.0).unwrap_or(usize::MAX),
                accept: "image/*",
                allow: Some(Arc::new(move |ip| policy.allows(ip))),
            },
        })
    }

    /// The request with every `image_url` part given by an http(s) URL replaced by the
    /// downloaded image as a `data:` URL; `None` when it has none. Errors say which part
    /// and why, for the client.
    pub async fn inline(&self, request: &Value) -> Result<Option<Value>, String> {
        let places = url_images(request);
        if places.is_empty() {
            return Ok(None);
        }
        if places.len() > MOST {
            return Err(format!(
                "at most {MOST} images given by URL per request; send the rest inline (data: URLs)"
            ));
        }
        let mut out = request.clone();
        for (m, p) in places {
            let at = format!("messages[{m}].content[{p}].image_url");
            let part = &mut out["messages"][m]["content"][p]["image_url"]["url"];
            let url = part.as_str().unwrap_or_default().to_owned();
            let got = weir_upstream::fetch_with(&url, &self.how)
                .await
                .map_err(|e| format!("{at}: cannot download the image: {e}"))?;
            let mime = got
                .content_type
                .as_deref()
                .and_then(|t| t.split(';').next())
                .map(str::trim)
                .filter(|t| t.starts_with("image/"))
                .ok_or_else(|| {
                    format!(
                        "{at}: the URL's answer is not an image (content-type {})",
                        got.content_type.as_deref().unwrap_or("missing")
                    )
                })?
                .to_owned();
            let data = base64::engine::general_purpose::STANDARD.encode(&got.body);
            *part = Value::String(format!("data:{mime};base64,{data}"));
        }
        Ok(Some(out))
    }
}

/// (message, part) of each image given by an http(s) URL.
fn url_images(request: &Value) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let Some(messages) = request["messages"].as_array() else {
        return out;
    };
    for (m, msg) in messages.iter().enumerate() {
        let Some(parts) = msg["content"].as_array() else {
            continue;
        };
        for (p, part) in parts.iter().enumerate() {
            let url = part["image_url"]["url"].as_str().unwrap_or_default();
            if part["type"] == "image_url"
                && (url.starts_with("http://") || url.starts_with("https://"))
            {
                out.push((m, p));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fetcher(networks: &[&str]) -> ImageFetch {
        ImageFetch::compile(&ImageFetchConfig {
            allowed_networks: networks.iter().map(|s| (*s).to_owned()).collect(),
            ..ImageFetchConfig::default()
        })
        .unwrap()
    }

    /// A server answering every GET with `content_type` and `body`, and its image URL.
    async fn server(
        content_type: &'static str,
        body: &'static [u8],
    ) -> (weir_testkit::MockUpstream, String) {
        let s =
            weir_testkit::MockUpstream::start(weir_testkit::Behavior::Fixed { content_type, body })
                .await;
        let url = format!("http://{}/cat.png", s.address());
        (s, url)
    }

    fn with_image(url: &str) -> Value {
        json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}}
        ]}]})
    }

    #[tokio::test]
    async fn allowed_images_are_downloaded_and_inlined() {
        let (_s, url) = server("image/png; charset=binary", b"\x89PNG-bytes").await;
        let f = fetcher(&["127.0.0.0/8"]);
        let out = f.inline(&with_image(&url)).await.unwrap().unwrap();
        assert_eq!(
            out["messages"][0]["content"][1]["image_url"]["url"],
            format!(
                "data:image/png;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(b"\x89PNG-bytes")
            )
        );
        assert!(
            f.inline(&with_image("data:image/png;base64,AAAA"))
                .await
                .unwrap()
                .is_none(),
            "inline images are left alone"
        );
    }

    #[tokio::test]
    async fn internal_addresses_and_non_images_are_refused() {
        let (_s, url) = server("image/png", b"x").await;
        let err = fetcher(&["public"])
            .inline(&with_image(&url))
            .await
            .unwrap_err();
        assert!(
            err.starts_with("messages[0].content[1].image_url: cannot download")
                && err.contains("outside the allowed networks"),
            "{err}"
        );
        let (_h, html) = server("text/html", b"<html>").await;
        let err = fetcher(&["127.0.0.0/8"])
            .inline(&with_image(&html))
            .await
            .unwrap_err();
        assert!(
            err.contains("not an image (content-type text/html)"),
            "{err}"
        );
    }
}
