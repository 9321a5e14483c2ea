//! Gateway-made errors and their classification (status, type label, retryability); the one
//! place that turns them into HTTP responses is `weir_proxy::error_response`.

use std::sync::Arc;

use http::StatusCode;

/// Why a call to an upstream failed. Kept small and `Copy` so the hot path never allocates
/// to describe a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No TCP (or TLS) connection could be made; the request was never sent.
    Connect,
    /// The connect or response-header deadline passed.
    Timeout,
    /// The upstream broke the protocol or closed the connection mid-request.
    Protocol,
}

/// Every error that Weir itself answers, as opposed to answers it relays from upstreams.
///
/// Messages are written for the client: they may name a route or an upstream, never an
/// address, a stack of causes, or a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("request headers are too large")]
    HeadersTooLarge,
    #[error("the request body stopped arriving; send it within limits.body_timeout")]
    RequestTimeout,
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{0}")]
    Unprocessable(&'static str),
    #[error("{reason}")]
    Unauthorized { reason: &'static str },
    #[error("{reason}")]
    Forbidden { reason: &'static str },
    #[error("too many requests; retry later")]
    TooManyRequests,
    #[error("too many requests in progress on this route; retry later")]
    Overloaded,
    /// The node's overload manager refused a request that would hold its body whole.
    #[error("{}", match .0 {
        crate::overload::Refusal::Pressure => "the gateway is short of memory; retry later",
        crate::overload::Refusal::Budget => "the gateway holds as many request bodies as it may; retry later",
    })]
    NodeOverloaded(crate::overload::Refusal),
    #[error("the rate-limit store is unavailable; retry later")]
    LimitStoreUnavailable,
    #[error("the event queue is unavailable; nothing was published; retry later")]
    QueueUnavailable,
    #[error("upstream \"{upstream}\" has no healthy endpoint")]
    NoHealthyEndpoint { upstream: Arc<str> },
    #[error("upstream \"{upstream}\" could not be reached")]
    UpstreamConnect { upstream: Arc<str> },
    #[error("upstream \"{upstream}\" did not answer in time")]
    UpstreamTimeout { upstream: Arc<str> },
    #[error("upstream \"{upstream}\" sent an invalid response")]
    UpstreamProtocol { upstream: Arc<str> },
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("internal error")]
    Internal,
}

impl GatewayError {
    pub fn upstream(upstream: &Arc<str>, failure: UpstreamFailure) -> Self {
        let upstream = Arc::clone(upstream);
        match failure {
            UpstreamFailure::Connect => Self::UpstreamConnect { upstream },
            UpstreamFailure::Timeout => Self::UpstreamTimeout { upstream },
            UpstreamFailure::Protocol => Self::UpstreamProtocol { upstream },
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded
            | Self::NodeOverloaded(_)
            | Self::LimitStoreUnavailable
            | Self::QueueUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::NoHealthyEndpoint { .. } | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamConnect { .. } | Self::UpstreamProtocol { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable, low-cardinality name: the `type` field of the JSON error and a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::BadRequest(_) => "bad_request",
            Self::HeadersTooLarge => "headers_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::Unprocessable(_) => "unprocessable",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::TooManyRequests => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::NodeOverloaded(_) => "node_overloaded",
            Self::LimitStoreUnavailable => "limit_store_unavailable",
            Self::QueueUnavailable => "queue_unavailable",
            Self::NoHealthyEndpoint { .. } => "no_healthy_endpoint",
            Self::UpstreamConnect { .. } => "upstream_unreachable",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::UpstreamProtocol { .. } => "upstream_protocol_error",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal",
        }
    }

    /// Seconds a client should wait before trying again (`Retry-After`), for refusals that
    /// pass on their own.
    pub fn retry_after(&self) -> Option<&'static str> {
        match self {
            Self::QueueUnavailable | Self::Overloaded | Self::LimitStoreUnavailable => Some("1"),
            Self::NodeOverloaded(_) => Some("2"),
            _ => None,
        }
    }

    /// Whether the client connection must be closed after the answer, because the request
    /// framing can no longer be trusted (request smuggling defence).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::BadRequest(_) | Self::PayloadTooLarge { .. } | Self::RequestTimeout
        )
    }
}
