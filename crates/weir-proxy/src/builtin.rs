//! Built-in targets served inside Weir. `echo` answers with a JSON description of the
//! request as it would reach an upstream: the quick-start's target and a debugging aid.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use weir_config::Builtin;

use crate::body::ProxyBody;

pub async fn serve(
    kind: Builtin,
    parts: &http::request::Parts,
    path: &str,
    client: IpAddr,
    mut body: Incoming,
    limit: u64,
) -> Response<ProxyBody> {
    match kind {
        Builtin::Echo => {
            // Count the body without keeping it, so large uploads cost no memory.
            let mut bytes: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            bytes += d.len() as u64;
                        }
                        if bytes > limit {
                            return status(StatusCode::PAYLOAD_TOO_LARGE);
                        }
                    }
                    Err(_) => return status(StatusCode::BAD_REQUEST),
                }
            }
            let headers: serde_json::Map<String, serde_json::Value> = parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                    )
                })
                .collect();
            let v = serde_json::json!({
                "method": parts.method.as_str(),
                "path": path,
                "query": parts.uri.query(),
                "client": client.to_string(),
                "headers": headers,
                "body_bytes": bytes,
            });
            let mut out = serde_json::to_vec_pretty(&v).unwrap_or_default();
            out.push(b'\n');
            let mut rsp = Response::new(ProxyBody::full(Bytes::from(out)));
            rsp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            rsp
        }
    }
}

fn status(s: StatusCode) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::empty());
    *r.status_mut() = s;
    r
}
