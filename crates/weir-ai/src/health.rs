//! Which provider keys and targets failed lately and sit out their cooldown. Kept by the
//! node across reloads (a reload does not bring a rate-limited key straight back).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[derive(Default)]
pub struct Health {
    /// Until when each key (`provider#index`) or target (`provider/model`) sits out.
    cool: Mutex<HashMap<String, Instant>>,
}

impl Health {
    pub fn cool_down(&self, what: &str, for_: Duration) {
        let until = Instant::now() + for_;
        let mut m = self.cool.lock();
        if m.len() > 10_000 {
            let now = Instant::now();
            m.retain(|_, t| *t > now);
        }
        let e = m.entry(what.to_owned()).or_insert(until);
        *e = (*e).max(until);
    }

    pub fn cooling(&self, what: &str) -> bool {
        self.cool
            .lock()
            .get(what)
            .is_some_and(|t| *t > Instant::now())
    }

    pub fn recover(&self, what: &str) {
        self.cool.lock().remove(what);
    }
}

/// The key slot name of key `index` of `provider`.
pub fn key_slot(provider: &str, index: usize) -> String {
    format!("{provider}#{index}")
}
