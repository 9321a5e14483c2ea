//! AI routes in the request lifecycle: the body is read within the route's limit and
//! handed to the AI gateway (`weir-ai`), whose answer — whole, or a stream passed on as it
//! comes — becomes the response.

use http::Response;
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::error_response;
use crate::snapshot::Route;

pub(crate) async fn answer(
    route: &Route,
    parts: &http::request::Parts,
    body: Incoming,
    consumer: Option<&weir_policy::Consumer>,
    idle: std::time::Duration,
) -> Response<ProxyBody> {
    let Some(ai) = &route.ai else {
        return error_response::render(&weir_core::GatewayError::Internal, "");
    };
    // The hold on the node's budget for buffered bodies lasts until the answer is made.
    let (bytes, _held) =
        match crate::ingest::read_body(body, route.max_body_size, &ai.plane.overload, idle).await {
            Ok(b) => b,
            Err(e) => return error_response::render(&e, ""),
        };
    let out = weir_ai::answer(
        ai,
        &parts.method,
        parts.uri.path(),
        &parts.headers,
        bytes,
        consumer,
    )
    .await;
    let mut rsp = Response::new(match out.body {
        weir_ai::AiBody::Full(b) => ProxyBody::full(b),
        weir_ai::AiBody::Stream(rx) => ProxyBody::channel(rx),
    });
    *rsp.status_mut() = out.status;
    *rsp.headers_mut() = out.headers;
    rsp
}
