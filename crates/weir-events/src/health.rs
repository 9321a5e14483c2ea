//! What a subscription's worker knows of itself, for the admin API and `weir events
//! status`: deliveries in flight, the last delivery and the last failure, and whether it
//! is degraded (it cannot read its object in the queue), with the reason. Becoming
//! degraded is logged once as a warning and shown in a metric; recovering is logged too.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::now_ms;

/// 1 while a subscription cannot read its object in the queue, else 0.
pub const DEGRADED: &str = "weir_event_subscription_degraded";
/// Times a subscription became degraded.
pub const DEGRADED_TOTAL: &str = "weir_event_subscription_degraded_total";

/// One delivery attempt, as last seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Note {
    /// Unix milliseconds.
    pub at_ms: i64,
    pub event_id: String,
    /// The endpoint's status; none when it gave no answer.
    pub status: Option<u16>,
    /// What went wrong (empty for a delivery).
    pub detail: String,
}

/// A snapshot of [`Health`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub in_flight: u64,
    pub last_delivery: Option<Note>,
    pub last_error: Option<Note>,
    /// Why it cannot read its object in the queue, when it cannot.
    pub degraded: Option<String>,
}

#[derive(Default)]
pub struct Health {
    name: String,
    in_flight: AtomicU64,
    last_delivery: Mutex<Option<Note>>,
    last_error: Mutex<Option<Note>>,
    degraded: Mutex<Option<String>>,
}

/// Counts one delivery in flight while held.
pub struct Sending<'a>(&'a Health);

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Health {
    pub fn new(name: &str) -> Self {
        metrics::gauge!(DEGRADED, "subscription" => name.to_owned()).set(0.0);
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    pub fn sending(&self) -> Sending<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Sending(self)
    }

    pub fn delivered(&self, event_id: &str, status: u16) {
        *self.last_delivery.lock() = Some(Note {
            at_ms: now_ms(),
            event_id: event_id.to_owned(),
            status: Some(status),
            detail: String::new(),
        });
    }

    pub fn failed(&self, event_id: &str, status: Option<u16>, detail: &str) {
        *self.last_error.lock() = Some(Note {
            at_ms: now_ms(),
            event_id: event_id.to_owned(),
            status,
            detail: detail.chars().take(300).collect(),
        });
    }

    /// It cannot read its object in the queue: said once, until it recovers.
    pub fn degrade(&self, why: String) {
        let mut d = self.degraded.lock();
        if d.is_none() {
            tracing::warn!(subscription = %self.name, reason = %why, "subscription degraded: it cannot read its object in the queue; its events wait there");
            metrics::gauge!(DEGRADED, "subscription" => self.name.clone()).set(1.0);
            metrics::counter!(DEGRADED_TOTAL, "subscription" => self.name.clone()).increment(1);
        }
        *d = Some(why);
    }

    pub fn recovered(&self) {
        if self.degraded.lock().take().is_some() {
            tracing::info!(subscription = %self.name, "subscription reads its object in the queue again");
            metrics::gauge!(DEGRADED, "subscription" => self.name.clone()).set(0.0);
        }
    }

    pub fn report(&self) -> Report {
        Report {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            last_delivery: self.last_delivery.lock().clone(),
            last_error: self.last_error.lock().clone(),
            degraded: self.degraded.lock().clone(),
        }
    }
}
