//! How the RabbitMQ queue writes an event into a message and reads it back, assigns
//! positions (time, node id, counter: unique among connected nodes, increasing per node)
//! and remembers the ids it published lately (publishing one again is a no-op).

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::AMQPValue;

use super::link::{args, header_i64, header_str, text};
use crate::{Event, QueueError, Result};

/// Positions count milliseconds from 2024-01-01; 41 bits of them last until 2093.
const EPOCH_MS: i64 = 1_704_067_200_000;
const NODE_BITS: u32 = 8;
const COUNTER_BITS: u32 = 14;

/// The time in a position.
pub(super) fn seq_time_ms(seq: i64) -> i64 {
    (seq >> (NODE_BITS + COUNTER_BITS)) + EPOCH_MS
}

/// The time in a UUIDv7 event id (ids made from idempotency keys have none).
pub(super) fn id_time_ms(id: &str) -> Option<i64> {
    let b = id.as_bytes();
    if b.len() != 36 || b[14] != b'7' {
        return None;
    }
    let hex = format!("{}{}", id.get(..8)?, id.get(9..13)?);
    i64::from_str_radix(&hex, 16).ok()
}

/// The last position a node gave out.
#[derive(Default)]
pub(super) struct Clock {
    ms: i64,
    counter: u32,
}

impl Clock {
    /// The next position at `now` for `node`: later than every one before, even when the
    /// clock steps back or more than 16,384 come in one millisecond.
    pub fn next(&mut self, now: i64, node: u32) -> i64 {
        let ms = (now - EPOCH_MS).max(0);
        if ms > self.ms {
            (self.ms, self.counter) = (ms, 0);
        } else if self.counter + 1 < (1 << COUNTER_BITS) {
            self.counter += 1;
        } else {
            (self.ms, self.counter) = (self.ms + 1, 0);
        }
        (self.ms << (NODE_BITS + COUNTER_BITS))
            | (i64::from(node & ((1 << NODE_BITS) - 1)) << COUNTER_BITS)
            | i64::from(self.counter)
    }
}

/// Ids published from this node lately, with their positions.
#[derive(Default)]
pub(super) struct IdCache {
    seqs: HashMap<String, i64>,
    order: VecDeque<String>,
}

/// Ids remembered for idempotent publishing.
const IDS_KEPT: usize = 200_000;

impl IdCache {
    pub fn get(&self, id: &str) -> Option<i64> {
        self.seqs.get(id).copied()
    }
    pub fn insert(&mut self, id: String, seq: i64) {
        if self.seqs.insert(id.clone(), seq).is_none() {
            self.order.push_back(id);
            while self.order.len() > IDS_KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.seqs.remove(&old);
                }
            }
        }
    }
}

/// The message for `e`, as attempt `attempt` due at `due` (0: at once).
pub(super) fn props(e: &Event, attempt: u32, due: i64) -> BasicProperties {
    let stored = serde_json::to_string(&e.headers).unwrap_or_else(|_| "[]".to_owned());
    let mut h = vec![
        ("weir-seq", AMQPValue::LongLongInt(e.seq)),
        ("weir-id", text(&e.id)),
        ("weir-topic", text(&e.topic)),
        ("weir-created", AMQPValue::LongLongInt(e.created_ms)),
        ("weir-headers", text(&stored)),
    ];
    if let Some(k) = &e.key {
        h.push(("weir-key", text(k)));
    }
    if attempt > 1 {
        h.push(("weir-attempt", AMQPValue::LongLongInt(i64::from(attempt))));
    }
    if due > 0 {
        h.push(("weir-due", AMQPValue::LongLongInt(due)));
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(e.id.as_str().into())
        .with_timestamp((e.created_ms / 1000).max(0) as u64)
        .with_headers(args(&h))
}

/// The event a message carries.
pub(super) fn event_of(d: &Delivery) -> Result<Event> {
    let corrupt = |what: &str| QueueError::Corrupt(format!("a message without {what}"));
    let headers: Vec<(String, String)> = match header_str(d, "weir-headers") {
        Some(s) => serde_json::from_str(&s).map_err(|e| QueueError::Corrupt(e.to_string()))?,
        None => Vec::new(),
    };
    Ok(Event {
        seq: header_i64(d, "weir-seq").ok_or_else(|| corrupt("weir-seq"))?,
        id: header_str(d, "weir-id").ok_or_else(|| corrupt("weir-id"))?,
        topic: header_str(d, "weir-topic").ok_or_else(|| corrupt("weir-topic"))?,
        key: header_str(d, "weir-key"),
        headers,
        body: Bytes::from(d.data.clone()),
        created_ms: header_i64(d, "weir-created").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_increase_and_keep_their_time_and_node() {
        let mut c = Clock::default();
        let now = 1_800_000_000_000;
        let a = c.next(now, 3);
        let b = c.next(now, 3);
        let back = c.next(now - 5_000, 3);
        assert!(a < b && b < back, "{a} {b} {back}");
        assert_eq!(seq_time_ms(a), now);
        assert_eq!((a >> COUNTER_BITS) & 0xff, 3);
        // Another node in the same millisecond never gets the same position.
        let mut other = Clock::default();
        assert_ne!(other.next(now, 4), a);
        // A full millisecond moves on to the next.
        let mut full = Clock::default();
        let first = full.next(now, 1);
        let mut last = first;
        for _ in 0..(1 << COUNTER_BITS) {
            let n = full.next(now, 1);
            assert!(n > last);
            last = n;
        }
        assert_eq!(seq_time_ms(last), now + 1);
        assert!(first > 0);
    }

    #[test]
    fn ids_tell_their_time() {
        let before = crate::now_ms();
        let t = id_time_ms(&crate::new_event_id()).unwrap();
        assert!(t >= before && t <= crate::now_ms());
        assert_eq!(id_time_ms(&crate::event_id_for_key("s", "k")), None);
    }
}
