//! The OpenAPI 3.1 document of the admin API, generated from the handlers' annotations and
//! the request and response types (nothing written by hand).

use std::sync::OnceLock;

use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weir admin API",
        description = "Manage a Weir gateway: configuration objects (upstreams, routes, consumers, policy defaults), accounts and tokens, the audit log. Log in with POST /api/v1/login, then send the token as `Authorization: Bearer` (or keep the session cookie).",
    ),
    paths(
        api::openapi, api::login, api::logout, api::status, api::config, api::apply_config,
        api::list_objects, api::create_object, api::get_object, api::put_object, api::delete_object,
        api::get_defaults, api::put_defaults, api::audit,
        api::list_users, api::create_user, api::delete_user,
        api::list_tokens, api::create_token, api::delete_token,
    ),
    modifiers(&Security),
    security(("bearer" = []), ("session" = [])),
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::SESSION_COOKIE,
            ))),
        );
    }
}

/// The document as JSON (made once).
pub fn document() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| {
            format!("{{\"error\": \"cannot render the OpenAPI document: {e}\"}}")
        })
    })
    .clone()
}
