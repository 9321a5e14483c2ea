//! Tokens and what they cost: reading usage from OpenAI-shaped answers and stream
//! chunks, the price table (defaults for common models, overridden by `ai.prices`), and
//! the per-call record every AI request leaves.

use std::collections::{BTreeMap, HashMap};

use weir_config::ai::PriceConfig;

/// Tokens of one call, as the provider counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub input: u64,
    /// Of the input, read from the provider's prompt cache.
    pub cached_input: u64,
    pub output: u64,
}

impl Usage {
    /// From an OpenAI-shaped `usage` object (chat completions and embeddings).
    pub fn from_openai(u: &serde_json::Value) -> Option<Self> {
        let n = |v: &serde_json::Value| v.as_u64();
        let input = n(&u["prompt_tokens"])?;
        Some(Self {
            input,
            cached_input: n(&u["prompt_tokens_details"]["cached_tokens"]).unwrap_or(0),
            output: n(&u["completion_tokens"]).unwrap_or(0),
        })
    }
}

impl Usage {
    /// From an Anthropic `usage` object: its `input_tokens` leave out cache reads and
    /// writes, which are input too.
    pub fn from_anthropic(u: &serde_json::Value) -> Option<Self> {
        let n = |k: &str| u[k].as_u64().unwrap_or(0);
        if u.get("input_tokens").is_none() && u.get("output_tokens").is_none() {
            return None;
        }
        let cached = n("cache_read_input_tokens");
        Some(Self {
            input: n("input_tokens") + cached + n("cache_creation_input_tokens"),
            cached_input: cached,
            output: n("output_tokens"),
        })
    }
}

impl Usage {
    /// An estimate for a call the provider gave no usage for (a stream cut short, a
    /// server that counts nothing): about four bytes a token.
    pub fn estimate(prompt_bytes: usize, output_bytes: usize) -> Self {
        Self {
            input: (prompt_bytes as u64).div_ceil(4),
            cached_input: 0,
            output: (output_bytes as u64).div_ceil(4),
        }
    }
}

/// The bytes of generated text in one stream event or answer, whichever API it is in:
/// OpenAI's content and tool arguments, Anthropic's text and partial JSON, Gemini's parts.
pub fn generated_bytes(v: &serde_json::Value) -> usize {
    let len = |v: &serde_json::Value| v.as_str().map_or(0, str::len);
    let mut n = 0;
    for c in v["choices"].as_array().into_iter().flatten() {
        for m in [&c["delta"], &c["message"]] {
            n += len(&m["content"]);
            for t in m["tool_calls"].as_array().into_iter().flatten() {
                n += len(&t["function"]["arguments"]);
            }
        }
    }
    n += len(&v["delta"]["text"]) + len(&v["delta"]["partial_json"]);
    for b in v["content"].as_array().into_iter().flatten() {
        n += len(&b["text"])
            + if b["input"].is_null() {
                0
            } else {
                b["input"].to_string().len()
            };
    }
    for p in v["candidates"][0]["content"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        n += len(&p["text"])
            + if p["functionCall"].is_null() {
                0
            } else {
                p["functionCall"]["args"].to_string().len()
            };
    }
    n
}

/// USD per million tokens by `provider/model`.
pub struct Prices {
    table: HashMap<String, PriceConfig>,
}

/// Shipped prices (USD per million tokens) for common models; `ai.prices` overrides and
/// extends them.
const DEFAULT_PRICES: &[(&str, f64, f64, f64)] = &[
    ("gpt-4.1", 2.0, 8.0, 0.5),
    ("gpt-4.1-mini", 0.4, 1.6, 0.1),
    ("gpt-4.1-nano", 0.1, 0.4, 0.025),
    ("gpt-4o", 2.5, 10.0, 1.25),
    ("gpt-4o-mini", 0.15, 0.6, 0.075),
    ("o3", 2.0, 8.0, 0.5),
    ("o4-mini", 1.1, 4.4, 0.275),
    ("text-embedding-3-small", 0.02, 0.0, 0.02),
    ("text-embedding-3-large", 0.13, 0.0, 0.13),
    ("claude-sonnet-4-5", 3.0, 15.0, 0.3),
    ("claude-opus-4-1", 15.0, 75.0, 1.5),
    ("claude-haiku-4-5", 1.0, 5.0, 0.1),
    ("gemini-2.5-pro", 1.25, 10.0, 0.31),
    ("gemini-2.5-flash", 0.3, 2.5, 0.075),
    ("mistral-large-latest", 2.0, 6.0, 2.0),
    ("mistral-small-latest", 0.1, 0.3, 0.1),
    ("mistral-embed", 0.1, 0.0, 0.1),
];

impl Prices {
    pub fn with_overrides(overrides: &BTreeMap<String, PriceConfig>) -> Self {
        let table = overrides.iter().map(|(k, v)| (k.clone(), *v)).collect();
        Self { table }
    }

    /// The price of `model` at `provider`: configured for `provider/model`, else the
    /// shipped price of the model name; none for models nobody priced (self-hosted).
    pub fn of(&self, label: &str) -> Option<PriceConfig> {
        if let Some(p) = self.table.get(label) {
            return Some(*p);
        }
        let model = label.split_once('/').map_or(label, |(_, m)| m);
        DEFAULT_PRICES
            .iter()
            .find(|(m, ..)| *m == model)
            .map(|&(_, input, output, cached)| PriceConfig {
                input,
                output,
                cached_input: Some(cached),
            })
    }

    /// USD for `usage` of `label` (0 when unpriced).
    pub fn cost(&self, label: &str, usage: &Usage) -> f64 {
        let Some(p) = self.of(label) else { return 0.0 };
        let cached = usage.cached_input.min(usage.input);
        let fresh = usage.input - cached;
        (fresh as f64 * p.input
            + cached as f64 * p.cached_input.unwrap_or(p.input)
            + usage.output as f64 * p.output)
            / 1_000_000.0
    }
}

/// What one AI call did, for analytics and the access log.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// Unix milliseconds when the call finished.
    pub at_ms: i64,
    pub route: String,
    pub consumer: Option<std::sync::Arc<str>>,
    /// The name of the API key used (see the key credential's `name`).
    pub key: Option<std::sync::Arc<str>>,
    /// The model name the client asked for.
    pub model: String,
    /// `provider/model` that answered (or was tried last).
    pub target: String,
    pub status: u16,
    pub usage: Usage,
    /// True when the provider gave no usage and the figures are an estimate.
    pub estimated: bool,
    pub cost_usd: f64,
    pub latency_ms: u64,
    /// Until the first byte of the answer (for a stream, the first chunk).
    pub ttft_ms: u64,
    pub stream: bool,
    /// Targets tried before the one that answered.
    pub fallbacks: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_use_configured_then_shipped_prices() {
        let mut o = BTreeMap::new();
        o.insert(
            "openai/gpt-4.1".to_owned(),
            PriceConfig {
                input: 3.0,
                output: 9.0,
                cached_input: None,
            },
        );
        let p = Prices::with_overrides(&o);
        let u = Usage {
            input: 1_000_000,
            cached_input: 500_000,
            output: 100_000,
        };
        assert!((p.cost("openai/gpt-4.1", &u) - (3.0 + 0.9)).abs() < 1e-9);
        // The shipped price of the model at another provider name: cached input cheaper.
        let c = p.cost("azure/gpt-4.1", &u);
        assert!((c - (1.0 + 0.25 + 0.8)).abs() < 1e-9, "{c}");
        assert_eq!(p.cost("local/llama3.1", &u), 0.0);
    }

    #[test]
    fn calls_without_usage_are_estimated_from_what_was_generated() {
        let j = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        let openai = j(
            r#"{"choices":[{"delta":{"content":"Hello","tool_calls":[{"function":{"arguments":"{}"}}]}}]}"#,
        );
        let anthropic =
            j(r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi!"}}"#);
        let gemini = j(r#"{"candidates":[{"content":{"parts":[{"text":"abcd"}]}}]}"#);
        let whole = j(r#"{"choices":[{"message":{"content":"12345678"}}]}"#);
        assert_eq!(
            [&openai, &anthropic, &gemini, &whole].map(generated_bytes),
            [7, 3, 4, 8]
        );
        assert_eq!(
            Usage::estimate(41, 8),
            Usage {
                input: 11,
                cached_input: 0,
                output: 2
            }
        );
    }

    #[test]
    fn usage_is_read_from_openai_shapes() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4}}"#,
        )
        .unwrap();
        assert_eq!(
            Usage::from_openai(&v),
            Some(Usage {
                input: 10,
                cached_input: 4,
                output: 5
            })
        );
        let emb: serde_json::Value =
            serde_json::from_str(r#"{"prompt_tokens":7,"total_tokens":7}"#).unwrap();
        assert_eq!(Usage::from_openai(&emb).unwrap().input, 7);
    }
}
