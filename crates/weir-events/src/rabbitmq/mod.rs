//! The RabbitMQ queue (ADR 0008). Events go to a direct exchange under their topic; a
//! stream per topic is the log (reads, replay-since, lookups) and a quorum queue per
//! subscription its cursor, leased with `basic.get` (unacknowledged until delivered; a
//! closed channel hands them back). Retries wait in a ladder of expiring queues; dead
//! letters, attempt records and per-subscription state are streams read to their end.
//! Positions are assigned by the publishing node: time, node id, counter.

mod events;
mod link;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapin::Acker;
use lapin::protocol::AMQPSoftError;
use lapin::types::AMQPValue;
use parking_lot::Mutex;

use crate::held::Holds;
use crate::{DeadLetter, Event, QueueError, Result, now_ms};
use events::{Clock, IdCache, event_of, props, seq_time_ms};
use link::{Link, Names, durable, header_i64, header_str, ladder_level, soft, unavailable};

/// Every record of the state stream, folded to the last value of each kind and
/// subscription. Read to where messages stop coming (no marker: the stream has no
/// retention to drop markers with); a read cut short is corrected by the next one.
async fn read_state(l: &Link, stream: &str) -> Result<StateMap> {
    let mut folded = HashMap::new();
    l.scan(
        stream,
        link::text("first"),
        false,
        Duration::from_millis(100),
        |d| {
            if let (Some(k), Some(s)) = (header_str(d, "weir-kind"), header_str(d, "weir-sub")) {
                folded.insert((k, s), String::from_utf8_lossy(&d.data).into_owned());
            }
            true
        },
    )
    .await?;
    Ok(folded)
}

/// A message this node leased: how to acknowledge it, and what it carries.
struct Msg {
    acker: Acker,
    event: Event,
}

/// State records by (kind, subscription or topic): the last value of each.
type StateMap = HashMap<(String, String), String>;

/// A retry this node sent.
#[derive(Clone, Copy)]
struct Waiting {
    due: i64,
    attempt: u32,
    created_ms: i64,
    /// In the ladder (not yet back in the subscription queue).
    laddered: bool,
}

/// How long a subscription's state (ordering, disabled) read from the broker is trusted.
const STATE_TTL_MS: i64 = 5_000;
/// How long a dead-letter count is trusted (this node's own dead letters and replays
/// count at once).
const DEAD_COUNT_TTL_MS: i64 = 30_000;
/// A retrying head of an ordered key that has not come back this long after it was due
/// went to another node: the key's later events here stop waiting for it.
const HEAD_GRACE_MS: i64 = 60_000;
/// Attempt records kept per subscription, in bytes of the stream.
const ATTEMPT_BYTES: u64 = 64 * 1024 * 1024;

pub struct RabbitMq {
    url: String,
    names: Names,
    retention: Duration,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    /// Connections opened (a reconnect forgets what the old one held).
    connections: AtomicU64,
    holds: Holds<Msg>,
    clock: Mutex<Clock>,
    ids: Mutex<IdCache>,
    /// Topics whose stream this connection has declared.
    topics: Mutex<HashSet<String>>,
    /// Events waiting in the retry ladder, by (subscription, position): when due, the
    /// attempt they come back as, when published.
    retrying: Mutex<HashMap<(String, i64), Waiting>>,
    /// Ladder copies replaced by a later retry (by subscription, position, due time):
    /// dropped when they come back.
    superseded: Mutex<HashSet<(String, i64, i64)>>,
    /// Folded state records by (kind, subscription), and when they were read.
    state: Arc<Mutex<(StateMap, i64)>>,
    /// A read of the state stream is under way in the background.
    refreshing: Arc<std::sync::atomic::AtomicBool>,
    /// Each subscription's dead-letter count and when it was counted (metrics ask every
    /// few seconds; counting reads the whole dead-letter stream).
    dead_counts: Mutex<HashMap<String, (u64, i64)>>,
    /// Where recent reads stopped, by (topic, position): the stream offset after it.
    offsets: Mutex<HashMap<(String, i64), u64>>,
    published: tokio::sync::Notify,
    /// Messages the broker pushed to a subscription's consumer here and no lease took
    /// yet (they count as pending).
    buffered: Mutex<HashMap<String, std::collections::VecDeque<lapin::message::Delivery>>>,
    /// When the last attempt to connect failed, and why: callers within
    /// [`RECONNECT_PAUSE`] of it get that answer at once instead of each waiting on a
    /// broker that does not answer.
    failed: Mutex<Option<(std::time::Instant, String)>>,
    pub display: String,
}

impl RabbitMq {
    /// Connects (`amqp://` or `amqps://`) and declares what the queue needs under `prefix`;
    /// topic logs keep events for `retention`.
    pub async fn open(url: &str, prefix: &str, retention: Duration) -> Result<Self> {
        let q = Self {
            url: url.to_owned(),
            names: Names {
                prefix: prefix.to_owned(),
            },
            retention,
            link: tokio::sync::Mutex::new(None),
            connections: AtomicU64::new(0),
            holds: Holds::default(),
            clock: Mutex::new(Clock::default()),
            ids: Mutex::new(IdCache::default()),
            topics: Mutex::new(HashSet::new()),
            retrying: Mutex::new(HashMap::new()),
            superseded: Mutex::new(HashSet::new()),
            state: Arc::new(Mutex::new((HashMap::new(), 0))),
            refreshing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            dead_counts: Mutex::new(HashMap::new()),
            offsets: Mutex::new(HashMap::new()),
            published: tokio::sync::Notify::new(),
            buffered: Mutex::new(HashMap::new()),
            failed: Mutex::new(None),
            display: redact(url),
        };
        q.link().await.map_err(|e| match e {
            QueueError::Unavailable(m) => QueueError::Unavailable(format!("{}: {m}", q.display)),
            other => other,
        })?;
        Ok(q)
    }

    /// The live connection, opened again when it was lost (what this node held went back
    /// to the broker with it).
    async fn link(&self) -> Result<Arc<Link>> {
        let mut slot = self.link.lock().await;
        if let Some(l) = slot.as_ref()
            && l.healthy()
        {
            return Ok(Arc::clone(l));
        }
        if let Some((at, why)) = self.failed.lock().as_ref()
            && at.elapsed() < RECONNECT_PAUSE
        {
            return Err(QueueError::Unavailable(why.clone()));
        }
        let opened = match tokio::time::timeout(LINK_TIMEOUT, Link::open(&self.url, &self.names))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(QueueError::Unavailable(format!(
                "RabbitMQ at {} accepted the connection but did not finish setting it up within {} s (is the node still starting, or are its queues down?)",
                self.display,
                LINK_TIMEOUT.as_secs()
            ))),
        };
        let l = match opened {
            Ok(l) => Arc::new(l),
            Err(e) => {
                let why = match &e {
                    QueueError::Unavailable(m) => m.clone(),
                    other => other.to_string(),
                };
                *self.failed.lock() = Some((std::time::Instant::now(), why));
                return Err(e);
            }
        };
        *self.failed.lock() = None;
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.holds.forget_all();
        self.topics.lock().clear();
        *slot = Some(Arc::clone(&l));
        Ok(l)
    }

    /// Removes everything this queue declared (tests, and an operator's clean-up).
    pub async fn delete_all(&self, subscriptions: &[&str], topics: &[&str]) -> Result<()> {
        let l = self.link().await?;
        let ch = l.conn.create_channel().await.map_err(unavailable)?;
        let mut queues: Vec<String> = vec![self.names.state()];
        for s in subscriptions {
            queues.extend([
                self.names.sub(s),
                self.names.dead(s),
                self.names.attempts(s),
            ]);
        }
        queues.extend(topics.iter().map(|t| self.names.log(t)));
        queues.extend((0..link::LADDER_LEVELS).map(|k| self.names.ladder(k)));
        for q in queues {
            let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
        }
        for k in 0..link::LADDER_LEVELS {
            let _ = ch
                .exchange_delete(self.names.ladder(k).as_str().into(), Default::default())
                .await;
        }
        let _ = ch
            .exchange_delete(self.names.exchange().as_str().into(), Default::default())
            .await;
        Ok(())
    }

    async fn ensure_topic(&self, l: &Link, topic: &str) -> Result<()> {
        if self.topics.lock().contains(topic) {
            return Ok(());
        }
        let log = self.names.log(topic);
        let declared = l
            .declare(&log, durable(), link::stream_args(self.retention, None))
            .await;
        if let Err(e) = declared {
            // Declared before with other settings (the retention changed): use it as it
            // is; a policy changes a stream's retention.
            if soft(&e) != Some(AMQPSoftError::PRECONDITIONFAILED) {
                return Err(unavailable(e));
            }
            tracing::warn!(stream = %log, "the topic's stream exists with other settings (retention); keeping them — set a RabbitMQ policy to change them");
        }
        l.bind(&log, &self.names.exchange(), topic).await?;
        self.append_state(l, "topic", topic, topic).await?;
        self.topics.lock().insert(topic.to_owned());
        Ok(())
    }

    /// The consumer `sub`'s leases take messages from, on the channel its
    /// acknowledgements go through. The broker pushes up to `prefetch` unacknowledged
    /// messages (held and waiting together): one `basic.get` round trip per message held
    /// a subscription to under a thousand events a second.
    async fn lease_consumer(&self, l: &Link, sub: &str, prefetch: u16) -> Result<lapin::Consumer> {
        if let Some((ch, consumer)) = l.leases.lock().get(sub)
            && ch.status().connected()
        {
            return Ok(consumer.clone());
        }
        // The old channel closed: the broker took back what it had leased and pushed.
        self.holds.forget(sub);
        self.buffered.lock().remove(sub);
        let ch = l.conn.create_channel().await.map_err(unavailable)?;
        ch.basic_qos(prefetch, lapin::options::BasicQosOptions::default())
            .await
            .map_err(unavailable)?;
        let queue = self.names.sub(sub);
        let tag = format!("lease-{}-{}", l.node, crate::new_event_id());
        let consumer = match ch
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                lapin::options::BasicConsumeOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
        {
            Ok(c) => c,
            Err(e) if link::soft(&e) == Some(lapin::protocol::AMQPSoftError::NOTFOUND) => {
                return Err(QueueError::NoSubscription(sub.to_owned()));
            }
            Err(e) => return Err(unavailable(e)),
        };
        l.leases
            .lock()
            .insert(sub.to_owned(), (ch, consumer.clone()));
        Ok(consumer)
    }

    /// Moves what the broker pushed to `sub`'s consumer into the buffer, without waiting.
    /// `Err` when the consumer ended.
    fn pull(&self, sub: &str, consumer: &mut lapin::Consumer) -> Result<()> {
        use futures_util::{FutureExt as _, StreamExt as _};
        let mut buffered = self.buffered.lock();
        let buf = buffered.entry(sub.to_owned()).or_default();
        while buf.len() < usize::from(queue::PREFETCH) {
            match consumer.next().now_or_never() {
                None => break,
                Some(Some(Ok(d))) => buf.push_back(d),
                Some(Some(Err(e))) => return Err(unavailable(e)),
                Some(None) => {
                    return Err(QueueError::Unavailable(
                        "the broker ended the subscription's consumer".to_owned(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Messages pushed here for `sub` and not leased yet (after taking in what arrived).
    fn buffered_count(&self, l: &Link, sub: &str) -> u64 {
        let consumer = l.leases.lock().get(sub).map(|(_, c)| c.clone());
        if let Some(mut c) = consumer
            && self.pull(sub, &mut c).is_err()
        {
            self.end_lease_consumer(l, sub);
        }
        self.buffered.lock().get(sub).map_or(0, |b| b.len() as u64)
    }

    /// Drops `sub`'s lease channel (closing it hands back what it held).
    fn end_lease_consumer(&self, l: &Link, sub: &str) {
        self.buffered.lock().remove(sub);
        if let Some((ch, _)) = l.leases.lock().remove(sub) {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    ch.close(200, "consumer ended".into()),
                )
                .await;
            });
        }
    }

    /// Sends a copy of `e` to `sub` as attempt `attempt`, due at `due` (through the retry
    /// ladder when that is later than now).
    async fn send(&self, l: &Link, sub: &str, e: &Event, attempt: u32, due: i64) -> Result<()> {
        let wait = due - now_ms();
        let queue = self.names.sub(sub);
        let p = props(e, attempt, due.max(0));
        if wait <= 0 {
            l.confirmed("", &queue, &e.body, p).await?;
        } else {
            let level = self.names.ladder(ladder_level(wait));
            l.confirmed(&level, &queue, &e.body, p).await?;
        }
        if attempt > 1 {
            let mut retrying = self.retrying.lock();
            // Bounded: past it, a later retry of an event not held here sends a
            // duplicate, and an ordered key may stop waiting for its retrying head.
            if retrying.len() < 1_000_000 {
                retrying.insert(
                    (sub.to_owned(), e.seq),
                    Waiting {
                        due: due.max(0),
                        attempt,
                        created_ms: e.created_ms,
                        laddered: wait > 0,
                    },
                );
            }
        }
        Ok(())
    }

    fn next_seq(&self, node: u32) -> i64 {
        self.clock.lock().next(now_ms(), node)
    }

    async fn append_state(&self, l: &Link, kind: &str, sub: &str, value: &str) -> Result<()> {
        let p = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(link::args(&[
                ("weir-kind", link::text(kind)),
                ("weir-sub", link::text(sub)),
            ]));
        l.confirmed("", &self.names.state(), value.as_bytes(), p)
            .await?;
        let mut st = self.state.lock();
        st.0.insert((kind.to_owned(), sub.to_owned()), value.to_owned());
        Ok(())
    }

    /// Every state record folded (the last value of each kind and subscription), read
    /// again when older than [`STATE_TTL_MS`]. For what decides a binding (declarations,
    /// the topic a retry comes from).
    async fn state_of(&self, kind: &str, sub: &str) -> Result<Option<String>> {
        if now_ms() - self.state.lock().1 >= STATE_TTL_MS {
            let l = self.link().await?;
            let folded = read_state(&l, &self.names.state()).await?;
            *self.state.lock() = (folded, now_ms());
        }
        Ok(self.cached_state(kind, sub))
    }

    /// [`RabbitMq::state_of`] for the lease path (ordering, disabled): a stale value is
    /// answered at once while a read in the background brings it up to date. A read waits
    /// for the stream to go quiet (100 ms), which on every lease would stall delivery.
    async fn state_soon(&self, kind: &str, sub: &str) -> Result<Option<String>> {
        let at = self.state.lock().1;
        if at == 0 {
            return self.state_of(kind, sub).await;
        }
        if now_ms() - at >= STATE_TTL_MS
            && !self
                .refreshing
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let l = self.link().await?;
            let (state, refreshing, name) = (
                Arc::clone(&self.state),
                Arc::clone(&self.refreshing),
                self.names.state(),
            );
            tokio::spawn(async move {
                if let Ok(folded) = read_state(&l, &name).await {
                    *state.lock() = (folded, now_ms());
                }
                refreshing.store(false, std::sync::atomic::Ordering::Release);
            });
        }
        Ok(self.cached_state(kind, sub))
    }

    fn cached_state(&self, kind: &str, sub: &str) -> Option<String> {
        self.state
            .lock()
            .0
            .get(&(kind.to_owned(), sub.to_owned()))
            .filter(|v| !v.is_empty())
            .cloned()
    }

    /// The topic events of `sub` come from.
    async fn topic_of(&self, sub: &str) -> Result<String> {
        match self.state_of("topic-of", sub).await? {
            Some(t) => Ok(t),
            None => Err(QueueError::NoSubscription(sub.to_owned())),
        }
    }

    /// The live dead letters of `sub`, oldest first, with their events.
    async fn dead_records(&self, sub: &str) -> Result<Vec<(DeadLetter, Event)>> {
        let l = self.link().await?;
        let mut live: HashMap<i64, (usize, DeadLetter, Event)> = HashMap::new();
        let mut n = 0usize;
        let mut bad = None;
        l.scan(
            &self.names.dead(sub),
            link::text("first"),
            true,
            Duration::ZERO,
            |d| {
                n += 1;
                match header_str(d, "weir-kind").as_deref() {
                    Some("replayed") => {
                        if let Some(seq) = header_i64(d, "weir-seq") {
                            live.remove(&seq);
                        }
                    }
                    Some("dead") => match event_of(d) {
                        Ok(e) => {
                            let dl = DeadLetter {
                                seq: e.seq,
                                id: e.id.clone(),
                                attempts: header_i64(d, "weir-attempts").unwrap_or(1) as u32,
                                reason: header_str(d, "weir-reason").unwrap_or_default(),
                            };
                            live.insert(e.seq, (n, dl, e));
                        }
                        Err(e) => bad = Some(e),
                    },
                    _ => {}
                }
                true
            },
        )
        .await?;
        if let Some(e) = bad {
            tracing::warn!(subscription = %sub, error = %e, "a dead-letter record could not be read; skipped");
        }
        let mut out: Vec<_> = live.into_values().collect();
        out.sort_by_key(|(order, _, _)| *order);
        Ok(out.into_iter().map(|(_, d, e)| (d, e)).collect())
    }

    /// The event at `seq` of `topic`, from its log.
    async fn logged_event(&self, l: &Link, topic: &str, seq: i64) -> Result<Option<Event>> {
        let start = (seq_time_ms(seq) - 5_000).max(0) / 1000;
        let mut found = None;
        l.scan(
            &self.names.log(topic),
            AMQPValue::Timestamp(start as u64),
            false,
            Duration::from_millis(200),
            |d| match event_of(d) {
                Ok(e) if e.seq == seq => {
                    found = Some(e);
                    false
                }
                Ok(e) => seq_time_ms(e.seq) <= seq_time_ms(seq) + 60_000,
                Err(_) => true,
            },
        )
        .await?;
        Ok(found)
    }

    /// Events of `topic` published since `since_ms`, to the end of its log.
    async fn log_since(&self, l: &Link, topic: &str, since_ms: i64) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        l.scan(
            &self.names.log(topic),
            AMQPValue::Timestamp((since_ms.max(0) / 1000) as u64),
            true,
            Duration::ZERO,
            |d| {
                if let Ok(e) = event_of(d)
                    && e.created_ms >= since_ms
                {
                    out.push(e);
                }
                true
            },
        )
        .await?;
        Ok(out)
    }
}

/// How long one queue operation may wait on the broker. A connection that dies under
/// a publish or an acknowledgement can leave its answer never coming: the operation
/// fails instead (the caller answers 503 or tries again) and the next one reconnects.
const OP_TIMEOUT: Duration = Duration::from_secs(35);

/// How long connecting and declaring the queue's exchanges and queues may take: a few
/// hundred milliseconds on a healthy broker; past it ingest answers 503 rather than keep a
/// client waiting on a broker that accepts connections but does not serve them.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);

/// After a failed connection, how long other callers get its answer without trying again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

async fn bounded<T>(op: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(OP_TIMEOUT, op).await {
        Ok(r) => r,
        Err(_) => Err(QueueError::Unavailable(format!(
            "RabbitMQ did not answer within {} s",
            OP_TIMEOUT.as_secs()
        ))),
    }
}

/// The URL without its password, for logs and the admin API.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

mod queue;
