//! Load balancing over an upstream's endpoints: weighted round robin, least connections,
//! consistent hashing (a ring with virtual nodes) and weighted random. Each skips endpoints
//! that are down, open-circuited or already tried by this request.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

use weir_config::Balance;

use crate::endpoint::{Endpoint, now_ms};

/// Virtual nodes per unit of weight on the hash ring.
const VNODES: u32 = 64;

#[derive(Debug)]
pub(crate) enum Balancer {
    /// A smooth weighted schedule (nginx's algorithm) expanded once at build time.
    RoundRobin {
        schedule: Vec<u16>,
        next: AtomicUsize,
    },
    LeastConn {
        next: AtomicUsize,
    },
    ConsistentHash {
        ring: Vec<(u64, u16)>,
        fallback: Vec<u16>,
        next: AtomicUsize,
    },
    Random {
        total: u32,
    },
}

impl Balancer {
    pub(crate) fn new(kind: Balance, endpoints: &[Endpoint]) -> Self {
        match kind {
            Balance::RoundRobin => Self::RoundRobin {
                schedule: smooth_schedule(endpoints),
                next: AtomicUsize::new(0),
            },
            Balance::LeastConn => Self::LeastConn {
                next: AtomicUsize::new(0),
            },
            Balance::ConsistentHash => {
                let mut ring = Vec::new();
                for (i, e) in endpoints.iter().enumerate() {
                    for v in 0..VNODES * e.weight {
                        ring.push((hash_of(&(e.address.as_ref(), v)), i as u16));
                    }
                }
                ring.sort_unstable();
                Self::ConsistentHash {
                    ring,
                    fallback: smooth_schedule(endpoints),
                    next: AtomicUsize::new(0),
                }
            }
            Balance::Random => Self::Random {
                total: endpoints.iter().map(|e| e.weight).sum(),
            },
        }
    }

    /// Picks an endpoint index, or `None` when every endpoint is unavailable or tried.
    /// `tried` is a bit set of indexes (upstreams with more than 64 endpoints reuse bits,
    /// which only makes a retry skip an untried endpoint, never pick a tried one twice).
    pub(crate) fn pick(
        &self,
        endpoints: &[Endpoint],
        hash: Option<u64>,
        tried: u64,
    ) -> Option<usize> {
        let now = now_ms();
        let usable =
            |i: usize| tried & (1u64 << (i % 64)) == 0 && endpoints[i].looks_available(now);
        let acquire = |i: usize| endpoints[i].try_acquire(now);
        match self {
            Self::RoundRobin { schedule, next } => rotate(schedule, next, usable, acquire),
            Self::LeastConn { next } => {
                let n = endpoints.len();
                let start = next.fetch_add(1, Ordering::Relaxed);
                let mut order: Vec<usize> = (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| usable(i))
                    .collect();
                // Lowest in-flight per unit of weight first; rotation breaks ties fairly.
                order.sort_by_key(|&i| {
                    (endpoints[i].in_flight() as u64 * 1000) / u64::from(endpoints[i].weight)
                });
                order.into_iter().find(|&i| acquire(i))
            }
            Self::ConsistentHash {
                ring,
                fallback,
                next,
            } => match hash {
                Some(h) if !ring.is_empty() => {
                    let start = ring.partition_point(|(p, _)| *p < h);
                    (0..ring.len())
                        .map(|k| ring[(start + k) % ring.len()].1 as usize)
                        .find(|&i| usable(i) && acquire(i))
                }
                _ => rotate(fallback, next, usable, acquire),
            },
            Self::Random { total } => {
                let mut r = fastrand::u32(0..(*total).max(1));
                let first = endpoints.iter().position(|e| {
                    if r < e.weight {
                        true
                    } else {
                        r -= e.weight;
                        false
                    }
                })?;
                let n = endpoints.len();
                (0..n)
                    .map(|k| (first + k) % n)
                    .find(|&i| usable(i) && acquire(i))
            }
        }
    }
}

fn rotate(
    schedule: &[u16],
    next: &AtomicUsize,
    usable: impl Fn(usize) -> bool,
    acquire: impl Fn(usize) -> bool,
) -> Option<usize> {
    if schedule.is_empty() {
        return None;
    }
    let start = next.fetch_add(1, Ordering::Relaxed);
    (0..schedule.len())
        .map(|k| schedule[(start + k) % schedule.len()] as usize)
        .find(|&i| usable(i) && acquire(i))
}

/// nginx's smooth weighted round robin, unrolled over one full cycle (sum of weights).
fn smooth_schedule(endpoints: &[Endpoint]) -> Vec<u16> {
    let total: i64 = endpoints.iter().map(|e| i64::from(e.weight)).sum();
    let mut current = vec![0i64; endpoints.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, e) in endpoints.iter().enumerate() {
            current[i] += i64::from(e.weight);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u16);
    }
    out
}

/// A stable hash (SipHash with fixed keys), so every node and every restart maps a key to
/// the same endpoint.
pub fn hash_of<T: Hash + ?Sized>(v: &T) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    v.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(weights: &[u32]) -> Vec<Endpoint> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Endpoint::new(&format!("127.0.0.1:{}", 7000 + i), *w).unwrap())
            .collect()
    }

    #[test]
    fn weighted_round_robin_is_smooth_and_exact() {
        let e = eps(&[2, 1]);
        let b = Balancer::new(Balance::RoundRobin, &e);
        let picks: Vec<usize> = (0..6).map(|_| b.pick(&e, None, 0).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 0, 0, 1, 0]);
    }

    #[test]
    fn skips_tried_and_down_endpoints() {
        let e = eps(&[1, 1, 1]);
        let b = Balancer::new(Balance::RoundRobin, &e);
        e[1].set_active(false);
        for _ in 0..10 {
            let p = b.pick(&e, None, 0b001).unwrap();
            assert_eq!(p, 2);
        }
        assert_eq!(b.pick(&e, None, 0b101), None);
    }

    #[test]
    fn least_conn_prefers_idle_endpoints() {
        let e = eps(&[1, 1]);
        let b = Balancer::new(Balance::LeastConn, &e);
        e[0].state.in_flight.store(5, Ordering::Relaxed);
        for _ in 0..5 {
            assert_eq!(b.pick(&e, None, 0), Some(1));
        }
    }

    #[test]
    fn consistent_hash_is_sticky_and_moves_little() {
        let e = eps(&[1, 1, 1, 1]);
        let b = Balancer::new(Balance::ConsistentHash, &e);
        let before: Vec<usize> = (0..1000)
            .map(|k| b.pick(&e, Some(hash_of(&k)), 0).unwrap())
            .collect();
        let again: Vec<usize> = (0..1000)
            .map(|k| b.pick(&e, Some(hash_of(&k)), 0).unwrap())
            .collect();
        assert_eq!(before, again);
        e[2].set_active(false);
        let after: Vec<usize> = (0..1000)
            .map(|k| b.pick(&e, Some(hash_of(&k)), 0).unwrap())
            .collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let on_two = before.iter().filter(|&&i| i == 2).count();
        assert_eq!(moved, on_two, "only keys of the removed endpoint move");
        for i in 0..4 {
            let share = before.iter().filter(|&&p| p == i).count();
            assert!(
                (120..=380).contains(&share),
                "endpoint {i} got {share} of 1000"
            );
        }
    }

    #[test]
    fn random_respects_weights() {
        let e = eps(&[3, 1]);
        let b = Balancer::new(Balance::Random, &e);
        let zeros = (0..4000).filter(|_| b.pick(&e, None, 0) == Some(0)).count();
        assert!((2700..=3300).contains(&zeros), "{zeros}");
    }
}
