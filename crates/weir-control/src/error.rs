//! The admin API's errors and the one place they become responses: JSON
//! `{"error": {"type", "message", "errors"?}}` with the status that fits.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use weir_store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    /// The change would make the configuration invalid: every error with its path.
    Invalid(Vec<String>),
    Unauthorized(&'static str),
    Forbidden(&'static str),
    NotFound(String),
    Conflict(String),
    PreconditionFailed(String),
    TooManyRequests(u64),
    /// File mode: the file is the truth.
    ReadOnly,
    UnsupportedMediaType,
    /// The body is over the admin API's limit (in bytes).
    TooLarge(usize),
    Unavailable(String),
    /// An event operation refused (a topic route's answer), or the queue unavailable.
    Event {
        status: StatusCode,
        kind: &'static str,
        message: String,
    },
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
            Self::Invalid(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_config",
                "the change would make the configuration invalid".to_owned(),
            ),
            Self::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", (*m).to_owned()),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", (*m).to_owned()),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.clone()),
            Self::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            Self::PreconditionFailed(m) => (
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                m.clone(),
            ),
            Self::TooManyRequests(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many failed logins; wait and try again".to_owned(),
            ),
            Self::ReadOnly => (
                StatusCode::CONFLICT,
                "read_only",
                "Weir runs in file mode: the configuration file is the truth; edit it (or set store: to manage it here)".to_owned(),
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json".to_owned(),
            ),
            Self::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over the admin API's limit of {limit} bytes; split the change (PUT one object at a time)"),
            ),
            Self::Unavailable(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the configuration store is unavailable ({m}); traffic is served on the last good configuration"),
            ),
            Self::Event {
                status,
                kind,
                message,
            } => (*status, kind, message.clone()),
            Self::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", m.clone()),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(errors) => write!(
                f,
                "the configuration would not be valid:\n  {}",
                errors.join("\n  ")
            ),
            other => f.write_str(&other.parts().2),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, message) = self.parts();
        let mut body = serde_json::json!({ "error": { "type": kind, "message": message } });
        if let Self::Invalid(errors) = &self {
            body["error"]["errors"] = serde_json::json!(errors);
        }
        let mut rsp = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE && kind == "queue_unavailable" {
            rsp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::TooManyRequests(secs) = self {
            rsp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            rsp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"weir-admin\""),
            );
        }
        rsp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::BadUrl(m) => Self::Internal(m),
            StoreError::Conflict { expected, actual } => Self::PreconditionFailed(format!(
                "the object changed: If-Match was \"{expected}\", it is now \"{actual}\"; read it again"
            )),
            StoreError::NotFound => Self::NotFound("no such object".to_owned()),
            StoreError::Exists => {
                Self::Conflict("an object of that name exists; use PUT to replace it".to_owned())
            }
            StoreError::Invalid(errors) => Self::Invalid(errors),
            StoreError::Corrupt(m) => Self::Internal(format!("stored data is corrupt: {m}")),
        }
    }
}

impl From<crate::events::EventsError> for ApiError {
    fn from(e: crate::events::EventsError) -> Self {
        use crate::events::EventsError;
        match e {
            EventsError::NotFound(m) => Self::NotFound(m),
            EventsError::Refused {
                status,
                kind,
                message,
            } => Self::Event {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                kind,
                message,
            },
            EventsError::Unavailable(m) => Self::Event {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "queue_unavailable",
                message: format!(
                    "the event queue is unavailable ({m}); nothing was changed, try again"
                ),
            },
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
