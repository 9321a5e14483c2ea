//! The one place where gateway-made errors become HTTP responses, all with one JSON shape:
//! `{"error":{"type":…,"message":…,"request_id":…}}`.

use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response};
use weir_core::{GatewayError, json};

use crate::body::ProxyBody;

pub fn render(err: &GatewayError, request_id: &str) -> Response<ProxyBody> {
    // Written by hand: a refusal is the answer abuse gets most, so it must cost little.
    let mut body = String::with_capacity(160);
    body.push_str("{\"error\":{\"type\":");
    json::push_str(&mut body, err.kind());
    body.push_str(",\"message\":\"");
    let _ = write!(json::Escaped(&mut body), "{err}");
    body.push_str("\",\"request_id\":");
    json::push_str(&mut body, request_id);
    body.push_str("}}\n");
    let mut rsp = Response::new(ProxyBody::full(Bytes::from(body)));
    *rsp.status_mut() = err.status();
    let h = rsp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = err.retry_after() {
        h.insert(RETRY_AFTER, HeaderValue::from_static(secs));
    }
    if err.closes_connection() {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    rsp
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Arc;

    #[tokio::test]
    async fn errors_are_json_and_name_the_upstream_only() {
        let err = GatewayError::UpstreamConnect {
            upstream: Arc::from("orders"),
        };
        let rsp = render(&err, "rid-1");
        assert_eq!(rsp.status(), 502);
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["type"], "upstream_unreachable");
        assert_eq!(v["error"]["request_id"], "rid-1");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("\"orders\"")
        );
    }
}
