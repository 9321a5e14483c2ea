//! The opt-in exact-match cache of whole answers: keyed by a digest of the caller, the
//! API, and the request body as parsed JSON (so key order and spacing do not matter), kept
//! for the route's TTL, the oldest going first past its size.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

pub struct AiCache {
    ttl: Duration,
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<[u8; 32], (Bytes, Instant)>,
    order: VecDeque<[u8; 32]>,
}

impl AiCache {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The key of a request: who asks, through which API, for what (the JSON value, whose
    /// objects serialize with sorted keys).
    pub fn key(caller: &str, api: &str, request: &serde_json::Value) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [caller, "\0", api, "\0"] {
            h.update(part.as_bytes());
        }
        h.update(request.to_string().as_bytes());
        h.finalize().into()
    }

    pub fn settings(&self) -> (Duration, usize) {
        (self.ttl, self.max)
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<Bytes> {
        let inner = self.inner.lock();
        inner
            .map
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(b, _)| b.clone())
    }

    pub fn put(&self, key: [u8; 32], answer: Bytes) {
        let mut inner = self.inner.lock();
        if inner.map.insert(key, (answer, Instant::now())).is_none() {
            inner.order.push_back(key);
        }
        while inner.order.len() > self.max {
            if let Some(old) = inner.order.pop_front() {
                inner.map.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_request_same_key_whatever_the_key_order() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#)
                .unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{ "messages":[{"content":"x","role":"user"}], "model":"m" }"#)
                .unwrap();
        assert_eq!(AiCache::key("c", "chat", &a), AiCache::key("c", "chat", &b));
        assert_ne!(
            AiCache::key("c", "chat", &a),
            AiCache::key("d", "chat", &a),
            "callers do not share answers"
        );
        let c = AiCache::new(Duration::from_secs(60), 1);
        c.put([1; 32], Bytes::from_static(b"one"));
        c.put([2; 32], Bytes::from_static(b"two"));
        assert_eq!(c.get(&[1; 32]), None, "the oldest went");
        assert_eq!(c.get(&[2; 32]).unwrap(), "two");
    }
}
