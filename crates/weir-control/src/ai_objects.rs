//! AI providers and models as stored objects (database mode): `ai-providers` (a provider
//! with the prices of its models) and `ai-models` (a model name and its targets), added to
//! the node's own `ai` section. A provider's keys are stored only as `env:`/`file:`
//! references: the store never holds a provider key.

use std::collections::BTreeMap;

use serde_json::Value;
use weir_config::Config;
use weir_config::ai::{ModelConfig, PriceConfig, ProviderConfig};

pub const PROVIDERS: &str = "ai-providers";
pub const MODELS: &str = "ai-models";

/// A stored provider body: the provider's fields, and `prices` by model name (USD per
/// million tokens), which the configuration keeps as `ai.prices["NAME/MODEL"]`.
pub fn provider_of(
    body: &Value,
) -> Result<(ProviderConfig, BTreeMap<String, PriceConfig>), serde_json::Error> {
    let mut inner = body.clone();
    let prices = match inner.as_object_mut() {
        Some(m) => {
            m.remove("name");
            m.remove("prices")
        }
        None => None,
    };
    let provider = serde_json::from_value(inner)?;
    let prices = match prices {
        Some(p) => serde_json::from_value(p)?,
        None => BTreeMap::new(),
    };
    Ok((provider, prices))
}

/// Checks a provider or model body. Literal provider keys are refused.
pub fn prepare(kind: &str, name: &str, body: &Value) -> Result<(), Vec<String>> {
    let at = format!("{kind}[{name}]");
    if kind == MODELS {
        return serde_json::from_value::<ModelConfig>(body.clone())
            .map(drop)
            .map_err(|e| vec![format!("{at}: {e}")]);
    }
    let (provider, _) = provider_of(body).map_err(|e| vec![format!("{at}: {e}")])?;
    let literal: Vec<String> = provider
        .api_keys
        .iter()
        .enumerate()
        .filter(|(_, k)| !k.is_reference() && !k.is_redacted())
        .map(|(i, _)| {
            format!(
                "{at}.api_keys[{i}]: give the key as env:NAME or file:PATH; the store never holds a provider key"
            )
        })
        .collect();
    if literal.is_empty() {
        Ok(())
    } else {
        Err(literal)
    }
}

/// Adds a stored provider or model to `cfg`; one the node's own file declares is an error.
pub fn add(
    cfg: &mut Config,
    base: &Config,
    kind: &str,
    name: &str,
    body: &Value,
) -> Result<(), String> {
    let at = format!("{kind}[{name}]");
    if kind == MODELS {
        let m: ModelConfig =
            serde_json::from_value(body.clone()).map_err(|e| format!("{at}: {e}"))?;
        if base.ai.models.iter().any(|b| b.name == m.name) {
            return Err(format!(
                "{at}: the node's configuration file declares this model"
            ));
        }
        cfg.ai.models.push(m);
        return Ok(());
    }
    let (provider, prices) = provider_of(body).map_err(|e| format!("{at}: {e}"))?;
    if base.ai.providers.contains_key(name) {
        return Err(format!(
            "{at}: the node's configuration file declares this provider"
        ));
    }
    cfg.ai.providers.insert(name.to_owned(), provider);
    for (model, price) in prices {
        cfg.ai.prices.insert(format!("{name}/{model}"), price);
    }
    Ok(())
}

/// The providers (with their prices) and models of `cfg` as objects.
pub fn objects_of(cfg: &Config, out: &mut Vec<(String, String, Value)>) {
    for (name, p) in &cfg.ai.providers {
        let Ok(mut v) = serde_json::to_value(p) else {
            continue;
        };
        let prefix = format!("{name}/");
        let prices: BTreeMap<&str, &PriceConfig> = cfg
            .ai
            .prices
            .iter()
            .filter_map(|(k, price)| k.strip_prefix(&prefix).map(|m| (m, price)))
            .collect();
        if let Some(m) = v.as_object_mut() {
            m.insert("name".to_owned(), Value::String(name.clone()));
            if !prices.is_empty()
                && let Ok(p) = serde_json::to_value(&prices)
            {
                m.insert("prices".to_owned(), p);
            }
        }
        out.push((PROVIDERS.to_owned(), name.clone(), v));
    }
    for m in &cfg.ai.models {
        if let Ok(v) = serde_json::to_value(m) {
            out.push((MODELS.to_owned(), m.name.clone(), v));
        }
    }
}

/// Whether the node's own file declares this provider or model.
pub fn node_owns(base: &Config, kind: &str, name: &str) -> bool {
    match kind {
        PROVIDERS => base.ai.providers.contains_key(name),
        MODELS => base.ai.models.iter().any(|m| m.name == name),
        _ => false,
    }
}
