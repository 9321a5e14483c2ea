//! The newest events of each topic, kept in memory as they are committed (up to a byte
//! budget): a lease of new events reads them here instead of from the file, which under
//! load is most of what the file was read for. Older events are read from the file.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;

use crate::Event;

/// Bytes of events kept in memory, all topics together.
const BUDGET: usize = 16 << 20;

/// One topic's newest events: every event of the topic after `floor`, in order.
struct Ring {
    floor: i64,
    events: VecDeque<Event>,
}

#[derive(Default)]
struct Inner {
    topics: HashMap<String, Ring>,
    bytes: usize,
}

#[derive(Default)]
pub(super) struct Recent(Mutex<Inner>);

fn size(e: &Event) -> usize {
    let headers: usize = e.headers.iter().map(|(k, v)| k.len() + v.len() + 48).sum();
    e.body.len() + e.id.len() + e.topic.len() + headers + 128
}

impl Recent {
    /// Events just committed, in the order of their positions (the writer is the only one
    /// that adds, one commit after the other, so each topic's events arrive in order).
    pub fn add(&self, events: Vec<Event>) {
        let mut inner = self.0.lock();
        for e in events {
            let n = size(&e);
            inner.bytes += n;
            let ring = inner.topics.entry(e.topic.clone()).or_insert_with(|| Ring {
                floor: e.seq - 1,
                events: VecDeque::new(),
            });
            ring.events.push_back(e);
            while inner.bytes > BUDGET {
                if !inner.evict_one() {
                    break;
                }
            }
        }
    }

    /// Up to `max` events of `topic` after position `after`, when memory holds every event
    /// of the topic from there on; `None` when the file must be read.
    pub fn after(&self, topic: &str, after: i64, max: usize) -> Option<Vec<crate::Event>> {
        let inner = self.0.lock();
        let ring = inner.topics.get(topic)?;
        if after < ring.floor {
            return None;
        }
        let from = ring.events.partition_point(|e| e.seq <= after);
        Some(ring.events.range(from..).take(max).cloned().collect())
    }
}

impl Inner {
    /// Drops the oldest event of the topic that holds the most; false when none is held.
    fn evict_one(&mut self) -> bool {
        let Some(ring) = self
            .topics
            .values_mut()
            .max_by_key(|r| r.events.len())
            .filter(|r| !r.events.is_empty())
        else {
            return false;
        };
        if let Some(e) = ring.events.pop_front() {
            ring.floor = e.seq;
            self.bytes -= size(&e);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, topic: &str, body: usize) -> Event {
        Event {
            seq,
            id: format!("e{seq}"),
            topic: topic.to_owned(),
            key: None,
            headers: Vec::new(),
            body: bytes::Bytes::from(vec![b'x'; body]),
            created_ms: 0,
        }
    }

    #[test]
    fn serves_only_what_it_holds_entirely() {
        let r = Recent::default();
        assert!(r.after("a", 0, 10).is_none(), "nothing held: read the file");
        r.add(vec![event(5, "a", 1), event(6, "b", 1), event(7, "a", 1)]);
        let seqs = |v: Option<Vec<Event>>| v.map(|v| v.iter().map(|e| e.seq).collect::<Vec<_>>());
        assert_eq!(seqs(r.after("a", 4, 10)), Some(vec![5, 7]));
        assert_eq!(seqs(r.after("a", 5, 1)), Some(vec![7]));
        assert_eq!(seqs(r.after("a", 7, 10)), Some(vec![]));
        assert_eq!(
            r.after("a", 3, 10).map(|v| v.len()),
            None,
            "before its first"
        );
        assert_eq!(seqs(r.after("b", 5, 10)), Some(vec![6]));
    }

    #[test]
    fn stays_within_its_budget_by_dropping_the_oldest() {
        let r = Recent::default();
        let big = 1 << 20;
        r.add((1..=40).map(|s| event(s, "a", big)).collect());
        let inner = r.0.lock();
        assert!(inner.bytes <= BUDGET, "{}", inner.bytes);
        let ring = &inner.topics["a"];
        assert_eq!(ring.events.back().map(|e| e.seq), Some(40));
        assert_eq!(ring.floor, ring.events[0].seq - 1);
        drop(inner);
        assert!(r.after("a", 1, 10).is_none(), "dropped: read the file");
    }
}
