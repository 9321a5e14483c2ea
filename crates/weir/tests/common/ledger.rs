//! The delivery ledger the event suites share: which subscriptions each acknowledged event
//! must reach (and which it must not), checked against what a recording endpoint
//! received (`/hook/SUBSCRIPTION`, by `webhook-id`): every expected delivery at least
//! once, none forbidden, and the duplicates counted.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::*;

#[derive(Default)]
struct Books {
    /// (subscription, event id) that must be delivered.
    expected: HashSet<(String, String)>,
    /// (subscription, event id) that must not be.
    forbidden: HashSet<(String, String)>,
    /// (subscription, event id) → deliveries received.
    received: HashMap<(String, String), usize>,
    accepted: usize,
}

/// What a run came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub accepted: usize,
    pub expected: usize,
    pub missing: Vec<(String, String)>,
    pub forbidden: Vec<(String, String)>,
    pub duplicates: usize,
}

#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<Books>>);

impl Ledger {
    /// An endpoint that records every delivery into the ledger (and answers 204).
    pub async fn endpoint(&self) -> MockUpstream {
        let books = Arc::clone(&self.0);
        MockUpstream::start(Behavior::Custom(Arc::new(move |req| {
            let books = Arc::clone(&books);
            Box::pin(async move {
                let sub = req
                    .uri()
                    .path()
                    .strip_prefix("/hook/")
                    .unwrap_or("")
                    .to_owned();
                let id = req
                    .headers()
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                *books.lock().received.entry((sub, id)).or_insert(0) += 1;
                let mut r = http::Response::new(weir_testkit::upstream::full(""));
                *r.status_mut() = http::StatusCode::NO_CONTENT;
                r
            })
        })))
        .await
    }

    /// An event was acknowledged: it must reach `to` and must not reach `not`.
    pub fn accepted(&self, id: &str, to: &[&str], not: &[&str]) {
        let mut b = self.0.lock();
        b.accepted += 1;
        for s in to {
            b.expected.insert(((*s).to_owned(), id.to_owned()));
        }
        for s in not {
            b.forbidden.insert(((*s).to_owned(), id.to_owned()));
        }
    }

    /// Expected deliveries not received yet.
    pub fn missing(&self) -> usize {
        self.tally().missing.len()
    }

    fn tally(&self) -> Tally {
        let b = self.0.lock();
        let mut missing: Vec<_> = b
            .expected
            .iter()
            .filter(|k| !b.received.contains_key(*k))
            .cloned()
            .collect();
        missing.sort();
        let mut forbidden: Vec<_> = b
            .forbidden
            .iter()
            .filter(|k| b.received.contains_key(*k))
            .cloned()
            .collect();
        forbidden.sort();
        Tally {
            accepted: b.accepted,
            expected: b.expected.len(),
            missing,
            forbidden,
            duplicates: b.received.values().map(|n| n - 1).sum(),
        }
    }

    /// Waits until every expected delivery came (or `within` passed), then a moment more
    /// for strays; the tally.
    pub async fn settle(&self, within: Duration) -> Tally {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline && !self.tally().missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.tally()
    }
}
