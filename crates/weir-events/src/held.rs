//! Events a broker-backed queue (NATS JetStream, RabbitMQ) has leased to this node, and
//! per-key ordering over them: which are with a delivery worker, which wait behind an
//! earlier event of their key, and when this node's lease on each runs out. The brokers
//! keep the durable state; this is what one node adds on top of them.

use std::collections::{BTreeSet, HashMap};

use parking_lot::Mutex;

/// One leased message.
pub(crate) struct Held<M> {
    pub msg: M,
    /// The ordering key, when the subscription is ordered and the event has one.
    pub key: Option<String>,
    /// Given to a delivery worker (false: waiting behind an earlier event of its key).
    pub given: bool,
    /// Unix milliseconds when this node's lease ends (a worker that hangs past it gets
    /// the event handed out again).
    pub until: i64,
    pub attempt: u32,
    /// Unix milliseconds of the last progress sent to the broker for it.
    pub progressed: i64,
    /// Unix milliseconds when the event was published.
    pub created_ms: i64,
}

type Slot = (String, i64);

pub(crate) struct Holds<M> {
    held: Mutex<HashMap<Slot, Held<M>>>,
    /// Per ordered subscription and key: the positions open (leased or waiting), in order.
    open: Mutex<HashMap<(String, String), BTreeSet<i64>>>,
}

impl<M> Default for Holds<M> {
    fn default() -> Self {
        Self {
            held: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
        }
    }
}

impl<M> Holds<M> {
    /// Held events of `sub` to hand out again — leases that ran out (their attempt
    /// counted), events whose key's turn has come — each given until `until`, through `f`.
    pub fn due<T>(
        &self,
        sub: &str,
        max: usize,
        now: i64,
        until: i64,
        mut f: impl FnMut(i64, &Held<M>) -> crate::Result<T>,
    ) -> crate::Result<Vec<T>> {
        let mut out = Vec::new();
        let open = self.open.lock();
        let mut held = self.held.lock();
        for ((s, seq), h) in held.iter_mut() {
            if out.len() >= max || s != sub {
                continue;
            }
            let turn = !h.given
                && h.key.as_ref().is_some_and(|k| {
                    open.get(&(s.clone(), k.clone()))
                        .and_then(|set| set.first().copied())
                        == Some(*seq)
                });
            let expired = h.given && h.until <= now;
            if turn || expired {
                if expired {
                    h.attempt += 1;
                }
                h.given = true;
                h.until = until;
                out.push(f(*seq, h)?);
            }
        }
        Ok(out)
    }

    /// Takes in a message fetched from the broker; true when it goes to a worker now
    /// (false: it waits behind an earlier event of its key).
    pub fn admit(&self, sub: &str, seq: i64, mut h: Held<M>) -> bool {
        let mut give = true;
        if let Some(k) = &h.key {
            let mut open = self.open.lock();
            let set = open.entry((sub.to_owned(), k.clone())).or_default();
            set.insert(seq);
            give = set.first() == Some(&seq);
        }
        h.given = give;
        self.held.lock().insert((sub.to_owned(), seq), h);
        give
    }

    pub fn take(&self, sub: &str, seq: i64) -> Option<Held<M>> {
        self.held.lock().remove(&(sub.to_owned(), seq))
    }

    /// Whether the event at `seq` is held here, and if so whether a worker has it.
    pub fn given(&self, sub: &str, seq: i64) -> Option<bool> {
        self.held
            .lock()
            .get(&(sub.to_owned(), seq))
            .map(|h| h.given)
    }

    pub fn contains(&self, sub: &str, seq: i64) -> bool {
        self.held.lock().contains_key(&(sub.to_owned(), seq))
    }

    /// Takes out the held events of `sub` below `below` that `pick` names (retention made
    /// them dead letters meanwhile).
    pub fn take_below(&self, sub: &str, below: i64, pick: impl Fn(&M) -> bool) -> Vec<Held<M>> {
        let mut held = self.held.lock();
        let gone: Vec<Slot> = held
            .iter()
            .filter(|((s, seq), h)| s == sub && *seq < below && pick(&h.msg))
            .map(|(slot, _)| slot.clone())
            .collect();
        gone.iter().filter_map(|slot| held.remove(slot)).collect()
    }

    /// The event at `seq` is done (delivered or dead): the next of its key may go.
    pub fn release(&self, sub: &str, key: Option<&str>, seq: i64) {
        if let Some(k) = key {
            let mut open = self.open.lock();
            let slot = (sub.to_owned(), k.to_owned());
            if let Some(set) = open.get_mut(&slot) {
                set.remove(&seq);
                if set.is_empty() {
                    open.remove(&slot);
                }
            }
        }
    }

    /// Messages of `sub` that waited or were re-leased, whose broker lease needs a sign
    /// of progress (none for `every` milliseconds).
    pub fn stale(&self, sub: &str, now: i64, every: i64) -> Vec<M>
    where
        M: Clone,
    {
        self.held
            .lock()
            .iter_mut()
            .filter(|((s, _), h)| {
                s == sub && (!h.given || h.attempt > 1) && now - h.progressed >= every
            })
            .map(|(_, h)| {
                h.progressed = now;
                h.msg.clone()
            })
            .collect()
    }

    /// How many of `sub`'s events this node holds, and when the oldest was published.
    pub fn count(&self, sub: &str) -> (u64, Option<i64>) {
        let held = self.held.lock();
        let mine = held.iter().filter(|((s, _), _)| s == sub);
        let (mut n, mut oldest) = (0u64, None::<i64>);
        for (_, h) in mine {
            n += 1;
            oldest = Some(oldest.map_or(h.created_ms, |o| o.min(h.created_ms)));
        }
        (n, oldest)
    }

    /// The first open position of each of `sub`'s keys that this node does not hold
    /// (a head that is retrying, or that another node took).
    pub fn heads_elsewhere(&self, sub: &str) -> Vec<(String, i64)> {
        let open = self.open.lock();
        let held = self.held.lock();
        open.iter()
            .filter(|((s, _), _)| s == sub)
            .filter_map(|((s, k), set)| {
                let first = *set.first()?;
                (!held.contains_key(&(s.clone(), first))).then(|| (k.clone(), first))
            })
            .collect()
    }

    /// The broker took back everything this node held for `sub` (its channel closed):
    /// forget it, order included.
    pub fn forget_all(&self) {
        self.held.lock().clear();
        self.open.lock().clear();
    }

    pub fn forget(&self, sub: &str) {
        self.held.lock().retain(|(s, _), _| s != sub);
        self.open.lock().retain(|(s, _), _| s != sub);
    }
}
