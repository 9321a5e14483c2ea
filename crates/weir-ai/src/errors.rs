//! Errors in the shape of the API the client called (OpenAI's `{"error": {…}}`), with
//! messages that say what to do next.

use http::StatusCode;
use serde_json::json;

use crate::serve::AiResponse;

pub fn openai(status: StatusCode, kind: &str, message: &str) -> AiResponse {
    AiResponse::json(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
    )
}

pub fn model_not_found(model: &str) -> AiResponse {
    AiResponse::json(
        StatusCode::NOT_FOUND,
        &json!({"error": {
            "message": format!("The model `{model}` does not exist here; GET /v1/models lists the models this gateway serves."),
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found"
        }}),
    )
}

/// An error in the shape of the API the client called.
pub fn for_client(anthropic: bool, status: StatusCode, message: &str) -> AiResponse {
    if anthropic {
        AiResponse::json(
            status,
            &json!({"type": "error", "error": {"type": crate::translate::anthropic_error_type(status.as_u16()), "message": message}}),
        )
    } else {
        let kind = if status.is_server_error() {
            "api_error"
        } else {
            "invalid_request_error"
        };
        openai(status, kind, message)
    }
}
