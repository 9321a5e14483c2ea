//! The AI configuration compiled for serving: providers with their keys read and their
//! URLs parsed, model names with their targets, prices. Built with each snapshot; the
//! health of keys and targets lives in [`crate::Health`], which outlives reloads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use weir_config::ai::{AiConfig, ProviderKind};

use crate::usage::Prices;

/// One provider, ready to call.
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// Up to the API version, without a trailing `/`.
    pub base: String,
    /// Each key as the header it is sent in (values marked sensitive: never logged).
    pub keys: Vec<(http::HeaderName, HeaderValue)>,
    pub api_version: Option<String>,
    pub timeout: Duration,
    pub cooldown: Duration,
}

impl Provider {
    /// The URL of an endpoint (`chat/completions`, `embeddings`) for `model`.
    pub fn url(&self, endpoint: &str, model: &str) -> String {
        match self.kind {
            ProviderKind::AzureOpenai => format!(
                "{}/deployments/{model}/{endpoint}?api-version={}",
                self.base,
                self.api_version.as_deref().unwrap_or_default()
            ),
            _ => format!("{}/{endpoint}", self.base),
        }
    }

    /// The header a key goes in, and its value (made once, when the catalog compiles).
    fn auth_header(kind: ProviderKind, key: &str) -> Option<(http::HeaderName, HeaderValue)> {
        let (name, value) = match kind {
            ProviderKind::AzureOpenai => (http::HeaderName::from_static("api-key"), key.to_owned()),
            ProviderKind::Anthropic => (http::HeaderName::from_static("x-api-key"), key.to_owned()),
            ProviderKind::Gemini => (
                http::HeaderName::from_static("x-goog-api-key"),
                key.to_owned(),
            ),
            _ => (http::header::AUTHORIZATION, format!("Bearer {key}")),
        };
        let mut v = HeaderValue::from_str(&value).ok()?;
        v.set_sensitive(true);
        Some((name, v))
    }
}

/// A `provider/model` target of a model name.
#[derive(Clone)]
pub struct Target {
    pub provider: Arc<Provider>,
    /// The model name sent to the provider.
    pub model: String,
    /// `provider/model`, as prices, records and health know it.
    pub label: String,
    pub weight: Option<u32>,
}

pub struct Model {
    pub name: String,
    pub targets: Vec<Target>,
}

pub struct Catalog {
    pub models: Vec<Model>,
    by_name: HashMap<String, usize>,
    pub prices: Prices,
    /// Downloads image URLs for providers that take images only inline.
    pub images: crate::images::ImageFetch,
}

impl Catalog {
    /// Compiles `ai`, reading keys through `env`; errors name the place.
    pub fn compile(ai: &AiConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut providers = HashMap::new();
        for (name, p) in &ai.providers {
            let base = p
                .base_url
                .as_deref()
                .or(p.kind.default_base_url())
                .ok_or_else(|| format!("ai.providers.{name}.base_url: required"))?
                .trim_end_matches('/')
                .to_owned();
            let mut keys = Vec::new();
            for (i, k) in p.api_keys.iter().enumerate() {
                let secret = k
                    .resolve(env)
                    .map_err(|e| format!("ai.providers.{name}.api_keys[{i}]: {e}"))?;
                let header = Provider::auth_header(p.kind, secret.trim()).ok_or_else(|| {
                    format!("ai.providers.{name}.api_keys[{i}]: not usable in a header")
                })?;
                keys.push(header);
            }
            providers.insert(
                name.clone(),
                Arc::new(Provider {
                    name: name.clone(),
                    kind: p.kind,
                    base,
                    keys,
                    api_version: p.api_version.clone(),
                    timeout: p.timeout.get(),
                    cooldown: p.cooldown.get(),
                }),
            );
        }
        let mut models = Vec::new();
        let mut by_name = HashMap::new();
        for (i, m) in ai.models.iter().enumerate() {
            let mut targets = Vec::new();
            for (j, t) in m.targets.iter().enumerate() {
                let label = t.target().to_owned();
                let (p, model) = label
                    .split_once('/')
                    .ok_or_else(|| format!("ai.models[{i}].targets[{j}]: give provider/model"))?;
                let provider = providers
                    .get(p)
                    .ok_or_else(|| format!("ai.models[{i}].targets[{j}]: no provider {p:?}"))?;
                targets.push(Target {
                    provider: Arc::clone(provider),
                    model: model.to_owned(),
                    label: label.clone(),
                    weight: t.weight(),
                });
            }
            by_name.insert(m.name.clone(), models.len());
            models.push(Model {
                name: m.name.clone(),
                targets,
            });
        }
        Ok(Self {
            models,
            by_name,
            prices: Prices::with_overrides(&ai.prices),
            images: crate::images::ImageFetch::compile(&ai.images)?,
        })
    }

    pub fn model(&self, name: &str) -> Option<&Model> {
        self.by_name.get(name).map(|&i| &self.models[i])
    }
}

impl Model {
    /// The targets in the order to try them: by weight (a weighted draw for the first,
    /// then the next draws among the rest) or as written.
    pub fn plan(&self) -> Vec<&Target> {
        let mut rest: Vec<&Target> = self.targets.iter().collect();
        if rest.iter().all(|t| t.weight.is_none()) {
            return rest;
        }
        let mut out = Vec::with_capacity(rest.len());
        while !rest.is_empty() {
            let total: u64 = rest.iter().map(|t| u64::from(t.weight.unwrap_or(1))).sum();
            let mut pick = fastrand::u64(0..total.max(1));
            let mut idx = 0;
            for (i, t) in rest.iter().enumerate() {
                let w = u64::from(t.weight.unwrap_or(1));
                if pick < w {
                    idx = i;
                    break;
                }
                pick -= w;
            }
            out.push(rest.remove(idx));
        }
        out
    }
}
