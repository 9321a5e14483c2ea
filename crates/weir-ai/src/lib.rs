//! Weir's AI gateway: LLM providers behind one OpenAI-compatible API. Routes with `ai:`
//! hand their requests here ([`serve::answer`]); the configuration compiles into a
//! [`catalog::Catalog`] per snapshot, while the [`AiPlane`] (provider client, key and
//! target health, call records) lives as long as the gateway.

pub mod cache;
mod call;
pub mod catalog;
pub mod client;
mod errors;
pub mod gemini;
pub mod health;
pub mod images;
pub mod limits;
pub mod mask;
pub mod record;
pub mod serve;
pub mod sse;
mod tap;
pub mod template;
pub mod translate;
pub mod translate_stream;
pub mod usage;

pub use catalog::Catalog;
pub use serve::{AiBody, AiResponse, AiRoute, Caller, answer};

/// What outlives reloads: the client to providers, which keys and targets cool down, and
/// where call records go.
pub struct AiPlane {
    pub client: client::ProviderClient,
    pub health: health::Health,
    pub recorder: record::Recorder,
    /// `ai_limits` counters kept in this node's memory.
    pub memory: std::sync::Arc<limits::Memory>,
    /// Each route's answer cache, by route name (a reload keeps them).
    pub caches:
        parking_lot::Mutex<std::collections::HashMap<String, std::sync::Arc<cache::AiCache>>>,
    /// The node's overload state: prompts and provider answers held whole count against
    /// its budget.
    pub overload: std::sync::Arc<weir_core::overload::Overload>,
}

impl AiPlane {
    /// The cache of `route`, made anew when its settings changed.
    pub fn cache_for(
        &self,
        route: &str,
        ttl: std::time::Duration,
        max: usize,
    ) -> std::sync::Arc<cache::AiCache> {
        let mut caches = self.caches.lock();
        match caches.get(route) {
            Some(c) if c.settings() == (ttl, max) => std::sync::Arc::clone(c),
            _ => {
                let c = std::sync::Arc::new(cache::AiCache::new(ttl, max));
                caches.insert(route.to_owned(), std::sync::Arc::clone(&c));
                c
            }
        }
    }
}

impl AiPlane {
    /// `sink` takes every call record for the store (analytics), when it is on.
    pub fn new(
        sink: Option<record::RecordSink>,
        overload: std::sync::Arc<weir_core::overload::Overload>,
    ) -> Result<Self, String> {
        Ok(Self {
            client: client::ProviderClient::new()?,
            health: health::Health::default(),
            recorder: record::Recorder::start(sink),
            memory: std::sync::Arc::default(),
            caches: parking_lot::Mutex::default(),
            overload,
        })
    }
}

/// Unix milliseconds now (when a call record was made).
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Unix seconds now (the `created` of answers Weir writes).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
