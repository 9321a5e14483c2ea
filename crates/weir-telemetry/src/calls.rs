//! Call records for traffic analytics: one small record per finished request, handed to a
//! bounded channel that the control plane drains and writes to its store in batches. The
//! request path never waits: when the channel is full the record is dropped and counted.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use metrics::Counter;

/// One finished request.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// Unix milliseconds when the request finished.
    pub at_ms: i64,
    pub route: Arc<str>,
    pub upstream: Arc<str>,
    pub consumer: Option<Arc<str>>,
    pub status: u16,
    pub latency_us: u64,
    pub bytes_out: u64,
}

/// Where a gateway hands its call records.
#[derive(Clone)]
pub struct CallSink {
    tx: SyncSender<CallRecord>,
    dropped: Counter,
}

impl std::fmt::Debug for CallSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallSink")
    }
}

/// Records dropped because the writer fell behind.
pub const CALLS_DROPPED: &str = "weir_call_records_dropped_total";

impl CallSink {
    /// A sink holding up to `capacity` records, and the receiver its writer drains.
    pub fn new(capacity: usize) -> (Self, Receiver<CallRecord>) {
        let (tx, rx) = sync_channel(capacity);
        (
            Self {
                tx,
                dropped: metrics::counter!(CALLS_DROPPED),
            },
            rx,
        )
    }

    pub fn record(&self, r: CallRecord) {
        match self.tx.try_send(r) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.increment(1);
            }
        }
    }
}
