//! The AI gateway as the control plane sees it: a trait the node implements over its call
//! records, and the usage summary the admin API answers with. The control plane never
//! calls a provider itself.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

/// What the node keeps of its AI calls.
pub trait AiCalls: Send + Sync {
    /// The newest call records first (consumer, model, target, status, tokens in and out,
    /// cost, latency, time to first token, fallbacks), as JSON objects.
    fn recent(&self, limit: usize) -> Vec<serde_json::Value>;
}

/// Use by consumer and model, over the calls kept.
#[derive(Serialize, ToSchema, Default, Debug, PartialEq)]
pub struct UsageRow {
    pub consumer: String,
    pub model: String,
    pub requests: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

/// Sums records into rows by (consumer, model).
pub fn summarize(records: &[serde_json::Value]) -> Vec<UsageRow> {
    let mut rows: BTreeMap<(String, String), UsageRow> = BTreeMap::new();
    for r in records {
        let consumer = r["consumer"].as_str().unwrap_or("-").to_owned();
        let model = r["model"].as_str().unwrap_or("-").to_owned();
        let row = rows
            .entry((consumer.clone(), model.clone()))
            .or_insert_with(|| UsageRow {
                consumer,
                model,
                ..UsageRow::default()
            });
        row.requests += 1;
        if r["status"].as_u64().is_none_or(|s| s >= 400) {
            row.errors += 1;
        }
        row.input_tokens += r["usage"]["input"].as_u64().unwrap_or(0);
        row.output_tokens += r["usage"]["output"].as_u64().unwrap_or(0);
        row.cost_usd += r["cost_usd"].as_f64().unwrap_or(0.0);
    }
    rows.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_sum_by_consumer_and_model() {
        let r = |c: &str, m: &str, s: u16, i: u64, o: u64, usd: f64| serde_json::json!({"consumer": c, "model": m, "status": s, "usage": {"input": i, "output": o}, "cost_usd": usd});
        let rows = summarize(&[
            r("a", "x", 200, 10, 5, 0.5),
            r("a", "x", 429, 0, 0, 0.0),
            r("b", "x", 200, 1, 1, 0.1),
        ]);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (
                rows[0].requests,
                rows[0].errors,
                rows[0].input_tokens,
                rows[0].output_tokens
            ),
            (2, 1, 10, 5)
        );
        assert_eq!(rows[1].consumer, "b");
    }
}
