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
        api::openapi, api::login, api::logout, api::setup_state, api::setup, api::session, api::status, api::config, api::apply_config,
        api::list_objects, api::create_object, api::get_object, api::put_object, api::delete_object,
        api::get_defaults, api::put_defaults, api::audit, api::analytics,
        api::list_users, api::create_user, api::set_role, api::delete_user,
        api::list_tokens, api::create_token, api::delete_token,
        api::list_credentials, api::add_credential, api::delete_credential, api::upstream_health,
        api::publish_event, api::get_event, api::list_subscriptions, api::get_subscription,
        api::dead_letters,
        api::attempts, api::replay, api::enable, api::ai_calls, api::ai_usage,
    ),
    components(schemas(
        shapes::Upstream, weir_config::RouteConfig, weir_config::ConsumerConfig,
        shapes::Certificate, shapes::Topic, weir_config::SubscriptionConfig,
        shapes::AiProvider, weir_config::ai::ModelConfig, weir_config::PolicyConfig,
        weir_config::Config,
    )),
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
        // The router serves /api/v1/{kind} for three kinds; the document names them one by
        // one, so the template never overlaps /api/v1/users and the like.
        let templated: Vec<(String, utoipa::openapi::path::PathItem)> = doc
            .paths
            .paths
            .iter()
            .filter(|(p, _)| p.starts_with("/api/v1/{kind}"))
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        for (path, item) in templated {
            doc.paths.paths.remove(&path);
            for kind in crate::assemble::KINDS {
                let mut item = item.clone();
                for op in operations(&mut item) {
                    if let Some(params) = &mut op.parameters {
                        params.retain(|p| match p {
                            utoipa::openapi::RefOr::T(p) => p.name != "kind",
                            utoipa::openapi::RefOr::Ref(_) => true,
                        });
                    }
                    op.operation_id = op.operation_id.as_ref().map(|id| format!("{id}_{kind}"));
                    op.tags = Some(vec![kind.to_owned()]);
                }
                shape_bodies(&mut item, shapes::name_of(kind));
                doc.paths.paths.insert(path.replace("{kind}", kind), item);
            }
        }
        // Every call reads the store (to check the caller at least): any of them can meet
        // it unavailable.
        let unavailable = utoipa::openapi::ResponseBuilder::new()
            .description("The configuration store is unavailable; traffic is still served")
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                op.responses
                    .responses
                    .entry("503".to_owned())
                    .or_insert_with(|| unavailable.clone().into());
            }
        }
    }
}

/// Gives a kind's operations its shape: the body of POST and PUT, and the object GET
/// answers (the list's items stay free-form: every kind shares that operation's shape).
fn shape_bodies(item: &mut utoipa::openapi::path::PathItem, schema: &str) {
    use utoipa::openapi::{ContentBuilder, Ref, Required, request_body::RequestBodyBuilder};
    let content = || {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(schema)))
            .build()
    };
    for op in [&mut item.post, &mut item.put].into_iter().flatten() {
        let description = match &op.request_body {
            Some(utoipa::openapi::RefOr::T(b)) => b.description.clone(),
            _ => None,
        };
        op.request_body = Some(
            RequestBodyBuilder::new()
                .description(description)
                .content("application/json", content())
                .required(Some(Required::True))
                .build()
                .into(),
        );
    }
    // The path without POST is the one object's (`/api/v1/KIND/{name}`).
    let single = item.post.is_none();
    if single
        && let Some(get) = &mut item.get
        && let Some(utoipa::openapi::RefOr::T(ok)) = get.responses.responses.get_mut("200")
        && ok.content.contains_key("application/json")
    {
        ok.content
            .insert("application/json".to_owned(), content().into());
    }
}

/// Each kind's object as the API takes it: its configuration shape with its name.
mod shapes {
    #![allow(dead_code)]

    use serde::Deserialize;
    use utoipa::ToSchema;

    /// The schema a kind's objects have.
    pub fn name_of(kind: &str) -> &'static str {
        match kind {
            "upstreams" => "Upstream",
            "routes" => "RouteConfig",
            "consumers" => "ConsumerConfig",
            "certificates" => "Certificate",
            "topics" => "Topic",
            "subscriptions" => "SubscriptionConfig",
            crate::ai_objects::PROVIDERS => "AiProvider",
            _ => "ModelConfig",
        }
    }

    #[derive(Deserialize, ToSchema)]
    pub struct Upstream {
        /// The upstream's name: 1-128 letters, digits, '-', '_' or '.'; routes name it.
        pub name: String,
        #[serde(flatten)]
        pub config: weir_config::UpstreamConfig,
    }

    #[derive(Deserialize, ToSchema)]
    pub struct Certificate {
        /// The certificate's name: 1-128 letters, digits, '-', '_' or '.'.
        pub name: String,
        #[serde(flatten)]
        pub config: weir_config::CertificateConfig,
    }

    #[derive(Deserialize, ToSchema)]
    pub struct Topic {
        /// The topic's name: 1-128 letters, digits, '-', '_' or '.'; routes and
        /// subscriptions name it.
        pub name: String,
        #[serde(flatten)]
        pub config: weir_config::TopicConfig,
    }

    #[derive(Deserialize, ToSchema)]
    pub struct AiProvider {
        /// The provider's name: 1-128 letters, digits, '-', '_' or '.'; model targets
        /// name it (`provider/model`).
        pub name: String,
        #[serde(flatten)]
        pub config: weir_config::ai::ProviderConfig,
    }
}

/// The document as JSON (made once).
pub fn document() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        merge_named_shapes(&mut doc);
        constrain_names(&mut doc);
        doc.to_pretty_json().unwrap_or_else(|e| {
            format!("{{\"error\": \"cannot render the OpenAPI document: {e}\"}}")
        })
    })
    .clone()
}

/// The shapes that add `name` to a configuration type (serde's flatten) come out of the
/// derive as `allOf: [Config, {name}]`, and the config type forbids unknown fields, so no
/// body could satisfy both. Each becomes one object: `name` first, then the type's fields
/// in their declared order.
fn merge_named_shapes(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{AdditionalProperties, Object, Schema};
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let schemas = &mut components.schemas;
    for name in ["Upstream", "Certificate", "Topic", "AiProvider"] {
        let Some(RefOr::T(Schema::AllOf(all))) = schemas.get(name).cloned() else {
            continue;
        };
        let mut merged = Object::new();
        // The wrapper's own part (the name) first, then the type it flattens.
        for part in all.items.iter().rev() {
            let part = match part {
                RefOr::Ref(r) => schemas.get(r.ref_location.rsplit('/').next().unwrap_or("")),
                t => Some(t),
            };
            let Some(RefOr::T(Schema::Object(o))) = part else {
                continue;
            };
            merged.properties.extend(o.properties.clone());
            merged.required.extend(o.required.iter().cloned());
            if matches!(
                o.additional_properties.as_deref(),
                Some(AdditionalProperties::FreeForm(false))
            ) {
                merged.additional_properties = o.additional_properties.clone();
            }
            if merged.description.is_none() {
                merged.description = o.description.clone();
            }
        }
        merged.schema_type = utoipa::openapi::schema::Type::Object.into();
        schemas.insert(name.to_owned(), RefOr::T(Schema::Object(merged)));
    }
}

/// What [`crate::check_name`] takes, as a pattern: 1-128 letters, digits, '-', '_' or
/// '.', not starting with '.'.
const NAME_PATTERN: &str = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$";

/// Object names, in bodies and in paths, documented with the rule the API applies.
fn constrain_names(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::schema::Schema;
    let rule = |s: &mut RefOr<Schema>| {
        if let RefOr::T(Schema::Object(o)) = s {
            o.pattern = Some(NAME_PATTERN.to_owned());
            o.max_length = Some(128);
        }
    };
    if let Some(c) = doc.components.as_mut() {
        for schema in [
            "Upstream",
            "Certificate",
            "Topic",
            "AiProvider",
            "RouteConfig",
            "ConsumerConfig",
            "SubscriptionConfig",
            "ModelConfig",
        ] {
            if let Some(RefOr::T(Schema::Object(o))) = c.schemas.get_mut(schema)
                && let Some(name) = o.properties.get_mut("name")
            {
                rule(name);
            }
        }
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        // Only objects' names: users, tokens and events have rules of their own.
        let kind = path
            .trim_start_matches("/api/v1/")
            .split('/')
            .next()
            .unwrap_or("");
        if !crate::assemble::KINDS.contains(&kind) {
            continue;
        }
        for op in operations(item) {
            for p in op.parameters.iter_mut().flatten() {
                if let RefOr::T(p) = p
                    && p.parameter_in == ParameterIn::Path
                    && p.name == "name"
                    && let Some(s) = p.schema.as_mut()
                {
                    rule(s);
                }
            }
        }
    }
}

/// The operations of a path the admin API uses (it has no PATCH, HEAD or OPTIONS).
fn operations(
    item: &mut utoipa::openapi::path::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.delete,
    ]
    .into_iter()
    .flatten()
}
