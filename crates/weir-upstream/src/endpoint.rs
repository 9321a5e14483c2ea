//! One endpoint of an upstream and its live state: in-flight count, active health verdict
//! and the circuit breaker that passive health drives. Shared by every worker; all atomics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use http::uri::Authority;
use weir_config::PassiveHealthConfig;

/// Coarse monotonic milliseconds (10 ms resolution), read with one atomic load. A
/// background thread advances it, so the request path pays no clock read for breaker
/// checks and pool idle times.
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    static NOW: AtomicU64 = AtomicU64::new(1);
    START.get_or_init(|| {
        let start = Instant::now();
        let spawned = std::thread::Builder::new()
            .name("weir-clock".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    NOW.store(start.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
                }
            });
        if spawned.is_err() {
            tracing::error!("cannot start the clock thread; circuit breakers will not reopen");
        }
        start
    });
    NOW.load(Ordering::Relaxed)
}

#[derive(Debug)]
pub struct Endpoint {
    pub address: Arc<str>,
    pub authority: Authority,
    pub weight: u32,
    pub(crate) state: EndpointState,
}

#[derive(Debug)]
pub(crate) struct EndpointState {
    pub in_flight: AtomicUsize,
    /// Verdict of active checks; endpoints start healthy so traffic flows at once.
    pub active_up: AtomicBool,
    pub failures: AtomicU32,
    /// 0 = breaker closed; otherwise the `now_ms` at which it may half-open.
    pub open_until: AtomicU64,
    pub trial_taken: AtomicBool,
}

impl Endpoint {
    pub fn new(address: &str, weight: u32) -> Result<Self, String> {
        let authority: Authority = address
            .parse()
            .map_err(|_| format!("invalid address {address:?}"))?;
        Ok(Self {
            address: address.into(),
            authority,
            weight,
            state: EndpointState {
                in_flight: AtomicUsize::new(0),
                active_up: AtomicBool::new(true),
                failures: AtomicU32::new(0),
                open_until: AtomicU64::new(0),
                trial_taken: AtomicBool::new(false),
            },
        })
    }

    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_active_up(&self) -> bool {
        self.state.active_up.load(Ordering::Relaxed)
    }

    /// Whether the breaker is open (the endpoint is skipped until its cooldown ends).
    pub fn is_open(&self) -> bool {
        let until = self.state.open_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// The breaker as an operator reads it: `closed` (taking traffic), `open` (skipped
    /// until its cooldown ends) or `half_open` (the next request is a trial).
    pub fn circuit(&self) -> &'static str {
        match self.state.open_until.load(Ordering::Relaxed) {
            0 => "closed",
            until if now_ms() < until => "open",
            _ => "half_open",
        }
    }

    /// Failures counted toward opening the breaker.
    pub fn failures(&self) -> u32 {
        self.state.failures.load(Ordering::Relaxed)
    }

    /// Healthy for reporting: up by active checks and not cut off by the breaker.
    pub fn is_healthy(&self) -> bool {
        self.is_active_up() && !self.is_open()
    }

    /// May this endpoint take a request now? After the cooldown exactly one caller gets a
    /// trial (half-open); the others keep skipping it until that trial reports.
    pub(crate) fn try_acquire(&self, now: u64) -> bool {
        if !self.is_active_up() {
            return false;
        }
        let until = self.state.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if now < until {
            return false;
        }
        self.state
            .trial_taken
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Non-mutating view used to rank candidates before acquiring one.
    pub(crate) fn looks_available(&self, now: u64) -> bool {
        if !self.is_active_up() {
            return false;
        }
        let until = self.state.open_until.load(Ordering::Relaxed);
        until == 0 || (now >= until && !self.state.trial_taken.load(Ordering::Relaxed))
    }

    pub(crate) fn record_success(&self) {
        if self.state.failures.load(Ordering::Relaxed) != 0 {
            self.state.failures.store(0, Ordering::Relaxed);
        }
        if self.state.open_until.load(Ordering::Relaxed) != 0 {
            self.state.open_until.store(0, Ordering::Relaxed);
            self.state.trial_taken.store(false, Ordering::Release);
            tracing::info!(endpoint = %self.address, "circuit closed: endpoint answered again");
        }
    }

    /// Returns true when this failure opened the breaker.
    pub(crate) fn record_failure(&self, passive: Option<&PassiveHealthConfig>) -> bool {
        let Some(p) = passive else { return false };
        let n = self.state.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let half_open = self.state.trial_taken.load(Ordering::Acquire);
        if n >= p.failures || half_open {
            let until = now_ms() + p.cooldown.get().as_millis() as u64;
            self.state.open_until.store(until, Ordering::Relaxed);
            self.state.trial_taken.store(false, Ordering::Release);
            return true;
        }
        false
    }

    pub(crate) fn set_active(&self, up: bool) -> bool {
        self.state.active_up.swap(up, Ordering::Relaxed) != up
    }
}

/// Counts a request against an endpoint for least-connections until dropped, and holds
/// the HTTP/1.1 connection until the response body is done. The proxy keeps it inside the
/// response body and calls [`InFlight::finish`] when the body ends.
pub struct InFlight {
    shared: Arc<crate::UpstreamShared>,
    idx: usize,
    worker: usize,
    conn: Option<crate::pool::H1>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("idx", &self.idx)
            .finish_non_exhaustive()
    }
}

impl InFlight {
    pub(crate) fn new(shared: Arc<crate::UpstreamShared>, idx: usize, worker: usize) -> Self {
        shared.endpoints[idx]
            .state
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        Self {
            shared,
            idx,
            worker,
            conn: None,
        }
    }

    pub(crate) fn with_conn(mut self, conn: Option<crate::pool::H1>) -> Self {
        self.conn = conn;
        self
    }

    /// Ends the request. `reusable` means the whole response body was relayed, so the
    /// connection can serve another request; otherwise it is closed.
    pub fn finish(mut self, reusable: bool) {
        if reusable && let Some(conn) = self.conn.take() {
            self.shared.pools.give_back(self.worker, self.idx, conn);
        }
    }

    /// Keeps the connection out of the pool (it was upgraded to a tunnel).
    pub fn detach(&mut self) {
        self.conn = None;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.endpoints[self.idx]
            .state
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}
