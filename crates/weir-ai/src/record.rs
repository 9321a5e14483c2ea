//! Where call records go, off the request path: a bounded queue to a thread that counts
//! them into metrics and hands them on to the node's store writer (analytics), or, when
//! there is none, keeps the recent ones for the admin API.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::usage::CallRecord;

/// Records kept in memory for reading back.
const KEPT: usize = 10_000;
/// Records waiting for the task; past it they are counted as dropped, never waited on.
const QUEUED: usize = 65_536;

/// Where the node's store writer takes records from (batches, once a second).
#[derive(Clone)]
pub struct RecordSink(std::sync::mpsc::SyncSender<CallRecord>);

impl std::fmt::Debug for RecordSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordSink")
    }
}

impl RecordSink {
    /// A sink holding up to `capacity` records, and the receiver the writer drains.
    pub fn new(capacity: usize) -> (Self, std::sync::mpsc::Receiver<CallRecord>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        (Self(tx), rx)
    }
}

pub struct Recorder {
    tx: mpsc::Sender<CallRecord>,
    recent: Arc<Mutex<VecDeque<CallRecord>>>,
}

impl Recorder {
    /// Starts the thread that takes records (its own: the gateway's worker runtimes
    /// never wait on it).
    pub fn start(sink: Option<RecordSink>) -> Self {
        let (tx, mut rx) = mpsc::channel::<CallRecord>(QUEUED);
        let recent = Arc::new(Mutex::new(VecDeque::with_capacity(1024)));
        let keep = Arc::clone(&recent);
        let spawned = std::thread::Builder::new()
            .name("weir-ai-records".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(256);
                while let Some(first) = rx.blocking_recv() {
                    batch.push(first);
                    while batch.len() < 256 {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                    for r in &batch {
                        count(r);
                    }
                    // With a store the records are read back from it; only without one
                    // does this node keep the recent ones itself.
                    if let Some(s) = &sink {
                        for r in batch.drain(..) {
                            // A writer that fell behind (the store away) loses records,
                            // counted; this thread never waits on it.
                            if s.0.try_send(r).is_err() {
                                metrics::counter!("weir_ai_records_dropped_total").increment(1);
                            }
                        }
                        continue;
                    }
                    let mut k = keep.lock();
                    for r in batch.drain(..) {
                        if k.len() >= KEPT {
                            k.pop_front();
                        }
                        k.push_back(r);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the AI call-record thread; records are counted as dropped");
        }
        Self { tx, recent }
    }

    pub fn record(&self, r: CallRecord) {
        if self.tx.try_send(r).is_err() {
            metrics::counter!("weir_ai_records_dropped_total").increment(1);
        }
    }

    /// The newest records first.
    pub fn recent(&self, limit: usize) -> Vec<CallRecord> {
        self.recent
            .lock()
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }
}

fn count(r: &CallRecord) {
    let labels = [
        ("model", r.model.clone()),
        ("target", r.target.clone()),
        ("status", r.status.to_string()),
    ];
    metrics::counter!("weir_ai_requests_total", &labels).increment(1);
    let tokens = |kind: &'static str, n: u64| {
        metrics::counter!("weir_ai_tokens_total", "model" => r.model.clone(), "target" => r.target.clone(), "kind" => kind)
            .increment(n);
    };
    tokens("input", r.usage.input);
    tokens("output", r.usage.output);
    metrics::counter!("weir_ai_cost_microusd_total", "model" => r.model.clone(), "target" => r.target.clone())
        .increment((r.cost_usd * 1e6).round() as u64);
    if r.fallbacks > 0 {
        metrics::counter!("weir_ai_fallbacks_total", "model" => r.model.clone())
            .increment(u64::from(r.fallbacks));
    }
    metrics::histogram!("weir_ai_ttft_seconds", "model" => r.model.clone())
        .record(r.ttft_ms as f64 / 1000.0);
}
