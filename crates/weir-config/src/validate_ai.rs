//! Validation of the `ai` section and of `ai` routes: providers and their keys, model
//! names and their `provider/model` targets, prices, templates.

use std::collections::BTreeSet;

use crate::ai::{AiConfig, AiRouteConfig, ProviderKind};
use crate::model::{Config, RouteConfig};
use crate::validate::{Errors, did_you_mean};
use crate::validate_policy::check_secret_ref;

fn name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
}

pub(crate) fn validate(ai: &AiConfig, e: &mut Errors) {
    for (name, p) in &ai.providers {
        let at = format!("ai.providers.{name}");
        if !name_ok(name) {
            e.push(&at, "a provider name is letters, digits, '-' or '_'");
        }
        match (&p.base_url, p.kind.default_base_url()) {
            (None, None) => e.push(
                format!("{at}.base_url"),
                "required for this kind (the API up to its version, like http://127.0.0.1:11434/v1)",
            ),
            (Some(u), _) => {
                let scheme_ok = u.starts_with("http://") || u.starts_with("https://");
                if !scheme_ok || u.contains(['?', '#']) || u.parse::<http::Uri>().is_err() {
                    e.push(
                        format!("{at}.base_url"),
                        "an http:// or https:// URL without query (like https://api.openai.com/v1)",
                    );
                }
            }
            (None, Some(_)) => {}
        }
        if p.kind == ProviderKind::AzureOpenai && p.api_version.is_none() {
            e.push(
                format!("{at}.api_version"),
                "required for azure_openai (like 2024-10-21)",
            );
        }
        if p.api_keys.is_empty() && p.kind.needs_key() {
            e.push(
                format!("{at}.api_keys"),
                "give at least one key (env:NAME keeps it out of the file)",
            );
        }
        for (i, k) in p.api_keys.iter().enumerate() {
            if let Err(m) = check_secret_ref(k) {
                e.push(format!("{at}.api_keys[{i}]"), m);
            }
        }
        if p.timeout.get().is_zero() {
            e.push(format!("{at}.timeout"), "must be greater than 0");
        }
    }
    let mut seen = BTreeSet::new();
    for (i, m) in ai.models.iter().enumerate() {
        let at = format!("ai.models[{i}]");
        if m.name.is_empty() || m.name.len() > 128 || m.name.chars().any(char::is_control) {
            e.push(format!("{at}.name"), "1 to 128 printable characters");
        }
        if !seen.insert(m.name.as_str()) {
            e.push(format!("{at}.name"), format!("{:?} is named twice", m.name));
        }
        if m.targets.is_empty() {
            e.push(format!("{at}.targets"), "give at least one provider/model");
        }
        let weighted = m.targets.iter().filter(|t| t.weight().is_some()).count();
        if weighted != 0 && weighted != m.targets.len() {
            e.push(
                format!("{at}.targets"),
                "give every target a weight, or none (plain targets are tried in order)",
            );
        }
        for (j, t) in m.targets.iter().enumerate() {
            let tat = format!("{at}.targets[{j}]");
            if t.weight() == Some(0) {
                e.push(&tat, "a weight is at least 1");
            }
            check_target(ai, t.target(), &tat, e);
        }
    }
    for (key, price) in &ai.prices {
        let at = format!("ai.prices.{key}");
        if !key.contains('/') {
            e.push(&at, "prices are keyed by provider/model");
        }
        let values = [Some(price.input), Some(price.output), price.cached_input];
        if values.iter().flatten().any(|v| !v.is_finite() || *v < 0.0) {
            e.push(&at, "prices are USD per million tokens, 0 or more");
        }
    }
    if let Err(msg) = crate::net::NetworkPolicy::parse(&ai.images.allowed_networks) {
        e.push("ai.images.allowed_networks", msg);
    }
    if ai.images.max_size.0 == 0 {
        e.push("ai.images.max_size", "must be greater than 0");
    }
    if ai.images.timeout.get().is_zero() {
        e.push("ai.images.timeout", "must be greater than 0");
    }
}

fn check_target(ai: &AiConfig, target: &str, at: &str, e: &mut Errors) {
    let Some((provider, model)) = target.split_once('/') else {
        e.push(
            at,
            format!("{target:?}: give provider/model (like openai/gpt-4.1)"),
        );
        return;
    };
    if model.is_empty() {
        e.push(
            at,
            format!("{target:?}: the model after the '/' is missing"),
        );
    }
    if !ai.providers.contains_key(provider) {
        let hint = did_you_mean(provider, ai.providers.keys().map(String::as_str))
            .map(|s| format!(" (did you mean {s:?}?)"))
            .unwrap_or_default();
        e.push(
            at,
            format!("no provider named {provider:?}{hint}; declare it under ai.providers"),
        );
    }
}

/// `ai_limits` counts tokens and spend: only AI routes have them.
pub(crate) fn non_ai_route(route: &RouteConfig, at: &str, e: &mut Errors) {
    if route.ai.is_none()
        && route
            .policies
            .iter()
            .any(|p| matches!(p, crate::policy::PolicyConfig::AiLimits(_)))
    {
        e.push(
            format!("{at}.policies"),
            "ai_limits is for ai routes (use rate_limit on other routes)",
        );
    }
}

pub(crate) fn route(
    config: &Config,
    route: &RouteConfig,
    ai: &AiRouteConfig,
    at: &str,
    e: &mut Errors,
) {
    if !route.upstream.is_empty() || route.topic.is_some() {
        e.push(
            format!("{at}.ai"),
            "an ai route has no upstream or topic: the providers under ai are its upstreams",
        );
    }
    if config.ai.models.is_empty() {
        e.push(format!("{at}.ai"), "declare models under ai.models first");
    }
    if let Some(m) = &ai.model
        && !config.ai.models.iter().any(|x| &x.name == m)
    {
        let hint = did_you_mean(m, config.ai.models.iter().map(|x| x.name.as_str()))
            .map(|s| format!(" (did you mean {s:?}?)"))
            .unwrap_or_default();
        e.push(
            format!("{at}.ai.model"),
            format!("no model named {m:?}{hint} under ai.models"),
        );
    }
    for (i, m) in ai.mask.iter().enumerate() {
        if !["email", "phone", "card"].contains(&m.as_str()) {
            e.push(format!("{at}.ai.mask[{i}]"), "email, phone or card");
        }
    }
    if let Some(c) = &ai.cache
        && (c.ttl.get().is_zero() || c.max_entries == 0)
    {
        e.push(
            format!("{at}.ai.cache"),
            "ttl and max_entries must be greater than 0",
        );
    }
    if let Some(t) = &ai.prompt_template {
        if ai.model.is_none() {
            e.push(
                format!("{at}.ai.model"),
                "a prompt template needs the model it is sent to",
            );
        }
        if t.trim().is_empty() {
            e.push(format!("{at}.ai.prompt_template"), "must not be empty");
        }
        if t.matches("{{").count() != t.matches("}}").count() {
            e.push(
                format!("{at}.ai.prompt_template"),
                "unbalanced {{ and }}: variables are written {{name}}",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{from_yaml, validate};

    fn errors(yaml: &str) -> Vec<String> {
        let c = from_yaml(yaml, "test").unwrap();
        validate(&c).into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn the_issue_example_is_valid() {
        let errs = errors(
            r#"
ai:
  providers:
    openai:    { kind: openai,    api_keys: ["env:OPENAI_KEY_1", "env:OPENAI_KEY_2"] }
    anthropic: { kind: anthropic, api_keys: ["env:ANTHROPIC_KEY"] }
    gemini:    { kind: gemini,    api_keys: ["env:GEMINI_KEY"] }
    local:     { kind: openai_compatible, base_url: http://127.0.0.1:11434/v1 }
  models:
    - name: smart
      targets: [anthropic/claude-sonnet-4-5, openai/gpt-4.1]
    - name: cheap
      targets: [{ target: local/llama3.1, weight: 3 }, { target: openai/gpt-4.1-mini, weight: 1 }]
  prices:
    openai/gpt-4.1: { input: 2.0, output: 8.0 }
routes:
  - name: llm
    match: { paths: [/v1/*] }
    ai: {}
  - name: summarize
    match: { paths: [/ai/summarize], methods: [POST] }
    ai: { model: cheap, prompt_template: "Summarize in {{max_words}} words:\n{{text}}" }
"#,
        );
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn mistakes_are_named_with_their_place() {
        let errs = errors(
            r#"
ai:
  providers:
    openai: { kind: openai }
    local: { kind: openai_compatible }
  models:
    - { name: smart, targets: [opena/gpt-4.1, "gpt-4.1"] }
    - { name: smart, targets: [{ target: openai/x, weight: 1 }, openai/y] }
  prices: { gpt-4.1: { input: -1, output: 1 } }
routes:
  - { name: a, match: { paths: [/v1/*] }, ai: { model: smrt } }
  - { name: b, match: { paths: [/p] }, ai: { prompt_template: "{{x}" } }
"#,
        );
        let all = errs.join("\n");
        for want in [
            "ai.providers.openai.api_keys: give at least one key",
            "ai.providers.local.base_url: required",
            "ai.models[0].targets[0]: no provider named \"opena\" (did you mean \"openai\"?)",
            "ai.models[0].targets[1]: \"gpt-4.1\": give provider/model",
            "ai.models[1].name: \"smart\" is named twice",
            "ai.models[1].targets: give every target a weight, or none",
            "ai.prices.gpt-4.1: prices are keyed by provider/model",
            "routes[0].ai.model: no model named \"smrt\" (did you mean \"smart\"?)",
            "routes[1].ai.model: a prompt template needs the model",
            "routes[1].ai.prompt_template: unbalanced",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }
}
