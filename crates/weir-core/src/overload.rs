//! The node's overload state, one per gateway and shared by every worker and plane: the
//! budget for bodies held whole in memory, the open client connections against their cap,
//! and the memory-pressure level a sampler sets. Atomics only, so a request consults it
//! for a few nanoseconds; the actions it takes are counted here and exported as metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

/// How short of memory the process is, from the sampler's last reading. Each level also
/// takes the actions of the levels below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Pressure {
    Normal = 0,
    /// Kept-alive client connections are closed once idle (or after their current request).
    ShedKeepAlive = 1,
    /// New requests that would hold a body whole are refused with `503`.
    RefuseBuffered = 2,
    /// No new client connections are accepted (they wait in the listen backlog).
    StopAccepting = 3,
}

impl Pressure {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Normal,
            1 => Self::ShedKeepAlive,
            2 => Self::RefuseBuffered,
            _ => Self::StopAccepting,
        }
    }
}

/// What the overload manager did, each counted (`weir_overload_actions_total{action}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The accept loop paused because memory is critical.
    StopAccepting,
    /// A buffered request was refused because memory is short.
    RefuseBuffered,
    /// Kept-alive connections were told to close (counted once per connection).
    ShedKeepAlive,
    /// A new connection was closed at once: the connection cap was reached.
    ConnectionCap,
    /// A buffered body was refused: the node's budget for them was spent.
    BodyBudget,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Self::StopAccepting,
        Self::RefuseBuffered,
        Self::ShedKeepAlive,
        Self::ConnectionCap,
        Self::BodyBudget,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::StopAccepting => "stop_accepting",
            Self::RefuseBuffered => "refuse_buffered",
            Self::ShedKeepAlive => "shed_keep_alive",
            Self::ConnectionCap => "connection_cap",
            Self::BodyBudget => "body_budget",
        }
    }
}

/// Why a body may not be held: both answer `503` with `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Memory is short (the sampler's pressure level).
    Pressure,
    /// The budget for buffered bodies is spent.
    Budget,
}

pub struct Overload {
    pressure: AtomicU8,
    buffered: AtomicU64,
    budget: AtomicU64,
    connections: AtomicU64,
    max_connections: AtomicU64,
    counts: [AtomicU64; Action::ALL.len()],
}

impl Default for Overload {
    fn default() -> Self {
        Self::new()
    }
}

impl Overload {
    /// No budget and no cap until [`Overload::set_limits`].
    pub const fn new() -> Self {
        Self {
            pressure: AtomicU8::new(0),
            buffered: AtomicU64::new(0),
            budget: AtomicU64::new(u64::MAX),
            connections: AtomicU64::new(0),
            max_connections: AtomicU64::new(u64::MAX),
            counts: [const { AtomicU64::new(0) }; Action::ALL.len()],
        }
    }

    pub fn set_limits(&self, body_budget: u64, max_connections: u64) {
        self.budget.store(body_budget, Relaxed);
        self.max_connections.store(max_connections, Relaxed);
    }

    pub fn set_pressure(&self, p: Pressure) {
        self.pressure.store(p as u8, Relaxed);
    }

    #[inline]
    pub fn pressure(&self) -> Pressure {
        Pressure::from_u8(self.pressure.load(Relaxed))
    }

    #[inline]
    pub fn count(&self, a: Action) {
        self.counts[a as usize].fetch_add(1, Relaxed);
    }

    pub fn counted(&self, a: Action) -> u64 {
        self.counts[a as usize].load(Relaxed)
    }

    /// Bytes of bodies held whole right now.
    pub fn buffered(&self) -> u64 {
        self.buffered.load(Relaxed)
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Relaxed)
    }

    /// Reserves `bytes` for a body about to be held whole (more can be added as it
    /// arrives). Refused, and counted, when memory is short or the budget would be passed.
    pub fn hold(self: &Arc<Self>, bytes: u64) -> Result<Held, Refusal> {
        if self.pressure() >= Pressure::RefuseBuffered {
            self.count(Action::RefuseBuffered);
            return Err(Refusal::Pressure);
        }
        let mut held = Held {
            node: Arc::clone(self),
            bytes: 0,
        };
        held.grow(bytes)?;
        Ok(held)
    }

    /// A slot for a new client connection, or `None` (counted) at the cap.
    pub fn connection(self: &Arc<Self>) -> Option<Connection> {
        let before = self.connections.fetch_add(1, Relaxed);
        if before >= self.max_connections.load(Relaxed) {
            self.connections.fetch_sub(1, Relaxed);
            self.count(Action::ConnectionCap);
            return None;
        }
        Some(Connection {
            node: Arc::clone(self),
        })
    }
}

/// Bytes of one body counted against the budget until dropped.
#[must_use = "the bytes are released when this is dropped"]
pub struct Held {
    node: Arc<Overload>,
    bytes: u64,
}

impl Held {
    /// Counts `more` bytes; refused (and counted) when that would pass the budget.
    pub fn grow(&mut self, more: u64) -> Result<(), Refusal> {
        if more == 0 {
            return Ok(());
        }
        let before = self.node.buffered.fetch_add(more, Relaxed);
        if before.saturating_add(more) > self.node.budget.load(Relaxed) {
            self.node.buffered.fetch_sub(more, Relaxed);
            self.node.count(Action::BodyBudget);
            return Err(Refusal::Budget);
        }
        self.bytes += more;
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.node.buffered.fetch_sub(self.bytes, Relaxed);
    }
}

/// One open client connection, counted until dropped.
#[must_use = "the slot is released when this is dropped"]
pub struct Connection {
    node: Arc<Overload>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.node.connections.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_what_would_pass_it_and_frees_on_drop() {
        let node = Arc::new(Overload::new());
        node.set_limits(100, 10);
        let a = node.hold(60).unwrap();
        assert_eq!(node.hold(41).err(), Some(Refusal::Budget));
        let mut b = node.hold(40).unwrap();
        assert_eq!(b.grow(1), Err(Refusal::Budget));
        assert_eq!(node.buffered(), 100);
        drop(a);
        b.grow(50).unwrap();
        assert_eq!((b.bytes(), node.buffered()), (90, 90));
        drop(b);
        assert_eq!(node.buffered(), 0);
        assert_eq!(node.counted(Action::BodyBudget), 2);
    }

    #[test]
    fn memory_pressure_refuses_buffered_bodies() {
        let node = Arc::new(Overload::new());
        node.set_pressure(Pressure::ShedKeepAlive);
        assert!(node.hold(1).is_ok());
        node.set_pressure(Pressure::RefuseBuffered);
        assert_eq!(node.hold(1).err(), Some(Refusal::Pressure));
        node.set_pressure(Pressure::StopAccepting);
        assert_eq!(node.hold(0).err(), Some(Refusal::Pressure));
        assert_eq!(node.counted(Action::RefuseBuffered), 2);
        assert_eq!(node.buffered(), 0);
    }

    #[test]
    fn connections_stop_at_the_cap_and_free_on_drop() {
        let node = Arc::new(Overload::new());
        node.set_limits(u64::MAX, 2);
        let a = node.connection().unwrap();
        let _b = node.connection().unwrap();
        assert!(node.connection().is_none());
        drop(a);
        assert!(node.connection().is_some());
        assert_eq!(node.counted(Action::ConnectionCap), 1);
        assert_eq!(node.connections(), 1);
    }
}
