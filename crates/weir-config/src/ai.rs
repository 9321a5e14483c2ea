//! The AI gateway's configuration: LLM providers and their credentials, the model names
//! clients ask for (each a list of provider targets in fallback order, or weighted), token
//! prices, and what an `ai` route serves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::units::Duration;

/// The largest request body an `ai` route takes unless the route sets `max_body_size`
/// (and `limits.max_body_size` is not lower): an AI request is parsed whole, so its memory
/// grows with its size, where a proxied body streams through.
pub const AI_DEFAULT_MAX_BODY: crate::ByteSize = crate::ByteSize(32 << 20);

/// How deep a JSON body an AI route parses may nest (objects and arrays): the limit of the
/// parser, stated here so that errors and docs name it.
pub const MAX_JSON_DEPTH: usize = 128;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiConfig {
    /// Providers by the name targets use (`openai/gpt-4.1` is model `gpt-4.1` of `openai`).
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// The model names clients ask for.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// USD per million tokens by `provider/model`, over the defaults Weir ships.
    #[serde(default)]
    pub prices: BTreeMap<String, PriceConfig>,
    /// Image URLs in prompts, for providers that take images only inline (Gemini).
    #[serde(default)]
    pub images: ImageFetchConfig,
}

/// Where Weir may download an image a prompt gives by URL, and how much: the SSRF guard.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageFetchConfig {
    /// `public` (outside loopback, private, link-local and other internal ranges) and
    /// CIDR blocks; the address actually dialled is checked, redirects are not followed.
    #[serde(default = "default_image_networks")]
    pub allowed_networks: Vec<String>,
    /// Largest image downloaded.
    #[serde(default = "default_image_size")]
    pub max_size: crate::ByteSize,
    /// For the whole download of one image.
    #[serde(default = "default_image_timeout")]
    pub timeout: Duration,
}

impl Default for ImageFetchConfig {
    fn default() -> Self {
        Self {
            allowed_networks: default_image_networks(),
            max_size: default_image_size(),
            timeout: default_image_timeout(),
        }
    }
}

fn default_image_networks() -> Vec<String> {
    vec!["public".to_owned()]
}

fn default_image_size() -> crate::ByteSize {
    crate::ByteSize(20 * 1024 * 1024)
}

fn default_image_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Openai,
    AzureOpenai,
    Anthropic,
    Gemini,
    Mistral,
    /// Any server speaking OpenAI's API (Ollama, vLLM, llama.cpp, LM Studio…).
    OpenaiCompatible,
}

impl ProviderKind {
    /// Where the provider's API is, up to its version (`…/v1`).
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            Self::Openai => Some("https://api.openai.com/v1"),
            Self::Anthropic => Some("https://api.anthropic.com/v1"),
            Self::Gemini => Some("https://generativelanguage.googleapis.com/v1beta"),
            Self::Mistral => Some("https://api.mistral.ai/v1"),
            Self::AzureOpenai | Self::OpenaiCompatible => None,
        }
    }

    /// Whether calls need a key (self-hosted servers often have none).
    pub fn needs_key(self) -> bool {
        !matches!(self, Self::OpenaiCompatible)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The provider's API: its wire format and authentication.
    pub kind: ProviderKind,
    /// Keys to balance over (`env:NAME`, `file:PATH` or the key itself); a failing key
    /// cools down while the others carry on.
    #[serde(default)]
    pub api_keys: Vec<crate::Secret>,
    /// The API up to its version (`http://127.0.0.1:11434/v1`); Weir appends the
    /// endpoint path. Required for `openai_compatible` and `azure_openai`
    /// (`https://RESOURCE.openai.azure.com/openai`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Azure OpenAI's `api-version` query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// How long a call may take before it counts as failed (and falls back); for a
    /// stream, until its first byte.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// How long a key or target that failed (429, 5xx, refused) is left out.
    #[serde(default = "default_cooldown")]
    pub cooldown: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_cooldown() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// What clients put in `model`.
    pub name: String,
    /// `provider/model` targets: tried in order, or chosen by weight when weights are
    /// given; the rest are the fallbacks.
    pub targets: Vec<TargetConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(untagged)]
#[schema(as = AiTargetConfig)]
pub enum TargetConfig {
    /// `provider/model`, tried in the order written.
    Plain(String),
    /// `provider/model` with a share of traffic among the weighted targets.
    Weighted {
        /// `provider/model`.
        target: String,
        /// The target's share relative to the others.
        #[serde(default = "default_weight")]
        weight: u32,
    },
}

fn default_weight() -> u32 {
    1
}

impl TargetConfig {
    pub fn target(&self) -> &str {
        match self {
            Self::Plain(t) | Self::Weighted { target: t, .. } => t,
        }
    }

    /// None when no weight was given (plain fallback order).
    pub fn weight(&self) -> Option<u32> {
        match self {
            Self::Plain(_) => None,
            Self::Weighted { weight, .. } => Some(*weight),
        }
    }
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input: f64,
    pub output: f64,
    /// Input read from the provider's prompt cache (defaults to `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
}

/// What an `ai` route serves.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiRouteConfig {
    /// Without a template: the model used when a request names none. With one: the model
    /// the prompt goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Turns a JSON object of variables into one user message: `{{name}}` is replaced by
    /// the variable's value. The route answers `{"output": …}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template: Option<String>,
    /// Log prompts and completions of whole (not streamed) calls at info level (off: they
    /// are never logged).
    #[serde(default)]
    pub log_bodies: bool,
    /// Answer repeated identical requests (same caller, API and body) from memory;
    /// streamed calls are never cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<AiCacheConfig>,
    /// Replace these in prompts before they leave: `email`, `phone`, `card`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mask: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiCacheConfig {
    #[serde(default = "default_cache_ttl")]
    pub ttl: Duration,
    /// Answers kept (the oldest go first).
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_cache_entries() -> usize {
    10_000
}
