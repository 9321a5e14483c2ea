//! The AI gateway as the control plane sees it: call records from the store (database
//! mode with analytics on: every node's, kept for the retention) or from this node's
//! memory (otherwise), in one shape, and usage summed by any of their dimensions. The
//! control plane never calls a provider itself.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;
use weir_store::{AiCallFilter, AiCallRow, AiUsage};

/// What the node keeps of its AI calls in memory (the newest few thousand).
pub trait AiCalls: Send + Sync {
    /// The newest call records first.
    fn recent(&self, limit: usize) -> Vec<AiCallRow>;
}

/// One call as the admin API answers it.
pub fn call_json(r: &AiCallRow) -> serde_json::Value {
    serde_json::json!({
        "at_ms": r.at_ms,
        "route": r.route,
        "consumer": r.consumer,
        "key": r.key,
        "model": r.model,
        "target": r.target,
        "status": r.status,
        "usage": {
            "input": r.input_tokens,
            "cached_input": r.cached_tokens,
            "output": r.output_tokens,
        },
        "estimated": r.estimated,
        "cost_usd": r.cost_micro_usd as f64 / 1e6,
        "latency_ms": r.latency_ms,
        "ttft_ms": r.ttft_ms,
        "stream": r.stream,
        "fallbacks": r.fallbacks,
    })
}

/// Whether a record is one `filter` asks for.
pub fn matches(r: &AiCallRow, f: &AiCallFilter) -> bool {
    let eq =
        |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| Some(w) == have);
    (f.from_ms..f.to_ms).contains(&r.at_ms)
        && eq(&f.consumer, r.consumer.as_deref())
        && eq(&f.key, r.key.as_deref())
        && eq(&f.model, Some(&r.model))
}

/// Use summed over one group of calls.
#[derive(Serialize, ToSchema, Debug, PartialEq)]
pub struct UsageRow {
    /// The group's value of each dimension asked for (`by`), null for calls without one
    /// (as calls without a consumer).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub group: BTreeMap<String, Option<String>>,
    pub requests: i64,
    /// Answers with status 400 or above.
    pub errors: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    pub avg_latency_ms: f64,
    pub avg_ttft_ms: f64,
}

impl UsageRow {
    pub fn new(by: &[&str], u: AiUsage) -> Self {
        Self {
            group: by.iter().map(|d| (*d).to_owned()).zip(u.group).collect(),
            requests: u.requests,
            errors: u.errors,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cost_usd: u.cost_micro_usd as f64 / 1e6,
            avg_latency_ms: u.avg_latency_ms,
            avg_ttft_ms: u.avg_ttft_ms,
        }
    }
}

/// Sums records by the dimensions `by` (names from [`weir_store::AI_DIMENSIONS`]), as the
/// store does in SQL: largest spend first.
pub fn summarize(records: &[AiCallRow], by: &[&str]) -> Vec<AiUsage> {
    let value = |r: &AiCallRow, d: &str| -> Option<String> {
        match d {
            "route" => Some(r.route.clone()),
            "consumer" => r.consumer.clone(),
            "key" => r.key.clone(),
            "model" => Some(r.model.clone()),
            _ => Some(r.target.clone()),
        }
    };
    let mut groups: BTreeMap<Vec<Option<String>>, (AiUsage, i64, i64)> = BTreeMap::new();
    for r in records {
        let group: Vec<Option<String>> = by.iter().map(|d| value(r, d)).collect();
        let (u, lat, ttft) = groups.entry(group.clone()).or_insert_with(|| {
            (
                AiUsage {
                    group,
                    ..AiUsage::default()
                },
                0,
                0,
            )
        });
        u.requests += 1;
        u.errors += i64::from(r.status >= 400);
        u.input_tokens += r.input_tokens;
        u.output_tokens += r.output_tokens;
        u.cost_micro_usd += r.cost_micro_usd;
        *lat += r.latency_ms;
        *ttft += r.ttft_ms;
    }
    let mut rows: Vec<AiUsage> = groups
        .into_values()
        .map(|(mut u, lat, ttft)| {
            u.avg_latency_ms = lat as f64 / u.requests as f64;
            u.avg_ttft_ms = ttft as f64 / u.requests as f64;
            u
        })
        .collect();
    rows.sort_by_key(|u| std::cmp::Reverse((u.cost_micro_usd, u.requests)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        at_ms: i64,
        consumer: &str,
        key: &str,
        model: &str,
        status: i64,
        cost: i64,
    ) -> AiCallRow {
        AiCallRow {
            at_ms,
            route: "llm".into(),
            consumer: Some(consumer.into()),
            key: Some(key.into()),
            model: model.into(),
            target: format!("p/{model}"),
            status,
            input_tokens: 10,
            output_tokens: 5,
            cost_micro_usd: cost,
            latency_ms: 100 * at_ms,
            ..AiCallRow::default()
        }
    }

    #[test]
    fn records_sum_by_the_dimensions_asked_for_largest_spend_first() {
        let calls = [
            row(1, "a", "ci", "x", 200, 500),
            row(2, "a", "laptop", "x", 429, 0),
            row(3, "b", "k", "x", 200, 900),
        ];
        let rows = summarize(&calls, &["consumer", "model"]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].group, [Some("b".to_owned()), Some("x".to_owned())]);
        let a = &rows[1];
        assert_eq!(
            (
                a.requests,
                a.errors,
                a.input_tokens,
                a.output_tokens,
                a.cost_micro_usd
            ),
            (2, 1, 20, 10, 500)
        );
        assert!((a.avg_latency_ms - 150.0).abs() < 1e-9);
        assert_eq!(summarize(&calls, &["key"]).len(), 3);
        assert_eq!(summarize(&calls, &[])[0].requests, 3);
        let f = AiCallFilter {
            from_ms: 2,
            to_ms: 10,
            consumer: Some("a".into()),
            ..AiCallFilter::default()
        };
        assert_eq!(calls.iter().filter(|r| matches(r, &f)).count(), 1);
    }
}
