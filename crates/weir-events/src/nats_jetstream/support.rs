//! The NATS queue's parts below the trait: opening the streams, reading events back from
//! stored messages, consumers and their ack waits, per-subscription state, dead-letter
//! records, replay copies and scans through ephemeral consumers.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::message::Message;
use async_nats::jetstream::stream::{self, Stream};
use bytes::Bytes;
use futures_util::StreamExt as _;
use parking_lot::Mutex;

use super::{DEFAULT_ACK_WAIT, NatsJetStream, consumer_name, unavailable};
use crate::{ATTEMPT_RETENTION, ATTEMPTS_KEPT, DeadLetter, Event, QueueError, Result, now_ms};

/// Longest a pull waits for the server's answer. Pulls are `no_wait` (the server answers
/// at once with what there is); no `expires` is set, as the server then holds a pull that
/// found fewer messages than asked for until it expires.
const FETCH_BOUND: Duration = Duration::from_secs(2);
/// The same for each batch of a scan (up to a thousand messages).
const SCAN_BOUND: Duration = Duration::from_secs(10);

pub(super) fn header(h: Option<&HeaderMap>, name: &str) -> Option<String> {
    h?.get(name).map(|v| v.as_str().to_owned())
}

pub(super) fn event_of(
    subject: &str,
    seq: i64,
    headers: Option<&HeaderMap>,
    payload: Bytes,
) -> Result<Event> {
    let id = header(headers, "Nats-Msg-Id")
        .or_else(|| subject.rsplit('.').next().map(str::to_owned))
        .unwrap_or_default();
    let stored: Vec<(String, String)> = match header(headers, "Weir-Headers") {
        Some(h) => serde_json::from_str(&h).map_err(|e| QueueError::Corrupt(e.to_string()))?,
        None => Vec::new(),
    };
    Ok(Event {
        seq: header(headers, "Weir-Seq")
            .and_then(|s| s.parse().ok())
            .unwrap_or(seq),
        id: header(headers, "Weir-Id").unwrap_or(id),
        topic: header(headers, "Weir-Topic").unwrap_or_default(),
        key: header(headers, "Weir-Key"),
        headers: stored,
        body: payload,
        created_ms: header(headers, "Weir-Created")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    })
}

/// The first message at or after `from` on `subject`.
pub(super) async fn next_by_subject(
    stream: &Stream,
    subject: &str,
    from: u64,
) -> std::result::Result<async_nats::jetstream::message::StreamMessage, impl std::fmt::Display> {
    stream
        .raw_message_builder()
        .sequence(from)
        .next_by_subject(subject)
        .send()
        .await
}

/// Makes the stream if it is missing, and brings an existing one's age limit to `config`'s
/// (it changes with the topics' retention, and from older versions of Weir).
async fn ensure_stream(js: &jetstream::Context, config: stream::Config) -> Result<Stream> {
    let mut s = js
        .get_or_create_stream(config.clone())
        .await
        .map_err(unavailable)?;
    if s.cached_info().config.max_age != config.max_age {
        let mut updated = s.cached_info().config.clone();
        updated.max_age = config.max_age;
        js.update_stream(&updated).await.map_err(unavailable)?;
        s.info().await.map_err(unavailable)?;
    }
    Ok(s)
}

/// Whether an error says there is no such message or consumer.
pub(super) fn missing(e: &impl std::fmt::Display) -> bool {
    let s = e.to_string().to_ascii_lowercase();
    s.contains("not found") || s.contains("no message found")
}

/// Header values may not hold line breaks.
pub(super) fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// `nats://user:password@host:port` → (`nats://host:port`, user, password); the parts
/// percent-decoded as URLs write them.
fn split_credentials(url: &str) -> (String, Option<String>, Option<String>) {
    let Some(scheme_end) = url.find("://") else {
        return (url.to_owned(), None, None);
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.rfind('@') else {
        return (url.to_owned(), None, None);
    };
    let address = format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]);
    let decode = |s: &str| {
        let mut out = Vec::with_capacity(s.len());
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
                (b'%', Some(v)) => {
                    out.push(v);
                    i += 3;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    match rest[..at].split_once(':') {
        Some((u, p)) => (address, Some(decode(u)), Some(decode(p))),
        None => (address, Some(decode(&rest[..at])), None),
    }
}

impl NatsJetStream {
    /// Connects to `url` (`nats://host:port`) and makes the streams if they are missing.
    /// `retention` bounds how long events are kept.
    pub async fn open(url: &str, prefix: &str, retention: Duration) -> Result<Self> {
        // Never the credentials a URL may hold.
        let display = url.rsplit('@').next().unwrap_or(url).to_owned();
        // The first connection must succeed within 2 s, so a start against a server that
        // is away fails at once with the cause (refused, unknown host, authorization);
        // after it, the client reconnects by itself.
        // Credentials go in the options, never in the address the client logs (at debug,
        // with the password) on every connection attempt.
        let (address, user, password) = split_credentials(url);
        let mut options =
            async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(2));
        options = match (user, password) {
            (Some(u), Some(p)) => options.user_and_password(u, p),
            (Some(token), None) => options.token(token),
            _ => options,
        };
        let client = options
            .connect(address.as_str())
            .await
            .map_err(|e| QueueError::Unavailable(format!("{display}: {e}")))?;
        let js = jetstream::new(client);
        let up = prefix.to_ascii_uppercase().replace(['.', '-'], "_");
        let make = |name: String, subjects: Vec<String>, per_subject: i64, max_age: Duration| {
            stream::Config {
                name,
                subjects,
                storage: stream::StorageType::File,
                max_messages_per_subject: per_subject,
                max_age,
                allow_direct: true,
                ..Default::default()
            }
        };
        let events = ensure_stream(
            &js,
            make(
                format!("{up}_EVENTS"),
                vec![format!("{prefix}.ev.>"), format!("{prefix}.re.>")],
                -1,
                super::retention::backstop(retention),
            ),
        )
        .await?;
        let dead = ensure_stream(
            &js,
            make(
                format!("{up}_DEAD"),
                vec![format!("{prefix}.dead.>")],
                -1,
                // Dead letters stay until replayed.
                Duration::ZERO,
            ),
        )
        .await?;
        let attempts = ensure_stream(
            &js,
            make(
                format!("{up}_ATTEMPTS"),
                vec![format!("{prefix}.att.>")],
                ATTEMPTS_KEPT as i64,
                ATTEMPT_RETENTION,
            ),
        )
        .await?;
        let state = ensure_stream(
            &js,
            make(
                format!("{up}_STATE"),
                vec![format!("{prefix}.state.>")],
                1,
                Duration::ZERO,
            ),
        )
        .await?;
        Ok(Self {
            js,
            prefix: prefix.to_owned(),
            events,
            dead,
            attempts,
            state,
            holds: crate::held::Holds::default(),
            retrying: Mutex::new(HashMap::new()),
            ack_waits: Mutex::new(HashMap::new()),
            replay_polled: Mutex::new(HashMap::new()),
            moved: Mutex::new(std::collections::HashSet::new()),
            ordered_seen: Mutex::new(HashMap::new()),
            retired_seen: Mutex::new(HashMap::new()),
            published: tokio::sync::Notify::new(),
            display,
        })
    }

    /// Deletes the queue's streams and everything in them (decommissioning; tests).
    pub async fn delete_streams(&self) -> Result<()> {
        for s in [&self.events, &self.dead, &self.attempts, &self.state] {
            let name = s.cached_info().config.name.clone();
            self.js.delete_stream(&name).await.map_err(unavailable)?;
        }
        Ok(())
    }

    pub(super) fn topic_filter(&self, topic: &str) -> String {
        format!("{}.ev.{topic}.*", self.prefix)
    }

    /// The topic a consumer's filter (`P.ev.TOPIC.*`) reads.
    pub(super) fn topic_of_filter(&self, filter: &str) -> String {
        filter
            .strip_prefix(&format!("{}.ev.", self.prefix))
            .and_then(|f| f.strip_suffix(".*"))
            .unwrap_or(filter)
            .to_owned()
    }

    pub(super) fn replay_filter(&self, sub: &str) -> String {
        format!("{}.re.{sub}.*", self.prefix)
    }

    pub(super) async fn consumer(&self, sub: &str, replay: bool) -> Result<PullConsumer> {
        let name = format!("{}{}", consumer_name(sub), if replay { "_re" } else { "" });
        self.events
            .get_consumer::<pull::Config>(&name)
            .await
            .map_err(|e| {
                if missing(&e) {
                    QueueError::NoSubscription(sub.to_owned())
                } else {
                    unavailable(e)
                }
            })
    }

    /// Raises both consumers' ack wait to `lease` (never lowers it: shorter leases are
    /// kept by this node itself).
    pub(super) async fn set_ack_wait(&self, sub: &str, lease: Duration) -> Result<()> {
        if self.ack_waits.lock().get(sub).is_some_and(|w| *w >= lease) {
            return Ok(());
        }
        for replay in [false, true] {
            let mut c = self.consumer(sub, replay).await?;
            let info = c.info().await.map_err(unavailable)?;
            let mut config = info.config.clone();
            if config.ack_wait < lease {
                config.ack_wait = lease;
                // A durable created again with other settings is updated (server 2.9+).
                self.events
                    .create_consumer(pull::Config {
                        durable_name: config.durable_name.clone(),
                        deliver_policy: config.deliver_policy,
                        ack_policy: config.ack_policy,
                        ack_wait: lease,
                        max_deliver: config.max_deliver,
                        filter_subject: config.filter_subject.clone(),
                        max_ack_pending: config.max_ack_pending,
                        ..Default::default()
                    })
                    .await
                    .map_err(unavailable)?;
            }
        }
        self.ack_waits
            .lock()
            .insert(sub.to_owned(), lease.max(DEFAULT_ACK_WAIT));
        Ok(())
    }

    /// Pulls what is there now. Bounded: a pull request whose answer died with the server
    /// (killed while it was in flight) is never answered, and without a bound the worker
    /// would wait on it for ever after the server came back. Messages cut off by the bound
    /// stay unacknowledged and come again after their ack wait.
    pub(super) async fn fetch(&self, sub: &str, replay: bool, max: usize) -> Result<Vec<Message>> {
        let deadline = tokio::time::Instant::now() + FETCH_BOUND;
        let c = self.consumer(sub, replay).await?;
        let pull = c.fetch().max_messages(max).messages();
        let mut batch = tokio::time::timeout_at(deadline, pull)
            .await
            .map_err(|_| unavailable("the pull request was not answered in time"))?
            .map_err(unavailable)?;
        let mut out = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, batch.next()).await {
            out.push(m.map_err(unavailable)?);
        }
        Ok(out)
    }

    /// Whether the subscription is ordered: read from the broker at most every few
    /// seconds (another node may have changed it), not on every lease.
    pub(super) async fn ordered(&self, sub: &str) -> Result<bool> {
        let now = now_ms();
        if let Some((on, at)) = self.ordered_seen.lock().get(sub)
            && now - at < super::STATE_TTL_MS
        {
            return Ok(*on);
        }
        let on = self.state_of("ordered", sub).await?.as_deref() == Some("1");
        self.ordered_seen.lock().insert(sub.to_owned(), (on, now));
        Ok(on)
    }

    pub(super) async fn state_of(&self, kind: &str, sub: &str) -> Result<Option<String>> {
        let subject = format!("{}.state.{kind}.{sub}", self.prefix);
        match self.state.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => Ok(
                Some(String::from_utf8_lossy(&m.payload).into_owned()).filter(|s| !s.is_empty())
            ),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    pub(super) async fn set_state(&self, kind: &str, sub: &str, value: &str) -> Result<()> {
        let subject = format!("{}.state.{kind}.{sub}", self.prefix);
        self.js
            .publish(subject, Bytes::from(value.to_owned()))
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Whether the message at `seq` was being delivered here when `sub` moved (forgotten
    /// once asked: it is acknowledged, retried or dead once).
    pub(super) fn was_moved(&self, sub: &str, seq: i64) -> bool {
        let mut moved = self.moved.lock();
        !moved.is_empty() && moved.remove(&(sub.to_owned(), seq))
    }

    /// Moves `sub` (whose consumer is `info`) to `topic`: its consumer is removed, what
    /// it still owed of the old topic is copied for its replay consumer (except what this
    /// node is delivering right now, which finishes as it is), and the new consumer is to
    /// start right after the stream's last message at the move, which is returned.
    pub(super) async fn move_to(
        &self,
        sub: &str,
        info: &jetstream::consumer::Info,
        topic: &str,
    ) -> Result<DeliverPolicy> {
        let mut events = self.events.clone();
        let boundary = events
            .info()
            .await
            .map_err(unavailable)?
            .state
            .last_sequence;
        let floor = info.ack_floor.stream_sequence;
        self.events
            .delete_consumer(&info.name)
            .await
            .map_err(unavailable)?;
        let mut owed = Vec::new();
        if boundary > floor {
            self.scan(
                &self.events,
                info.config.filter_subject.clone(),
                DeliverPolicy::ByStartSequence {
                    start_sequence: floor + 1,
                },
                |m| {
                    let Ok(i) = m.info() else { return false };
                    let seq = i.stream_sequence;
                    if seq <= boundary {
                        owed.push(seq as i64);
                    }
                    seq < boundary
                },
            )
            .await?;
        }
        let mut copied = 0;
        for seq in owed {
            // With a worker now: it finishes as it is. Waiting behind its key: copied
            // like the rest.
            let delivering = match self.holds.given(sub, seq) {
                Some(true) => true,
                Some(false) => {
                    if let Some(h) = self.holds.take(sub, seq) {
                        self.holds.release(sub, h.key.as_deref(), seq);
                    }
                    false
                }
                None => false,
            };
            if delivering {
                self.moved.lock().insert((sub.to_owned(), seq));
            } else if self.replay_one(sub, seq).await? {
                copied += 1;
            }
        }
        self.retrying.lock().retain(|(s, _), _| s != sub);
        self.ack_waits.lock().remove(sub);
        self.replay_polled.lock().remove(sub);
        tracing::info!(subscription = %sub, topic, copied, "subscription moved to another topic; what it owed of the old one is replayed");
        Ok(DeliverPolicy::ByStartSequence {
            start_sequence: boundary + 1,
        })
    }

    /// The leased message at `seq`, taken out of the held set.
    pub(super) async fn dead_records(
        &self,
        sub: &str,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetter)>> {
        let subject = format!("{}.dead.{sub}", self.prefix);
        let mut out = Vec::new();
        let mut from = 1;
        while out.len() < limit {
            let m = match next_by_subject(&self.dead, &subject, from).await {
                Ok(m) => m,
                Err(e) if missing(&e) => break,
                Err(e) => return Err(unavailable(e)),
            };
            from = m.sequence + 1;
            let h = Some(&m.headers);
            out.push((
                m.sequence,
                DeadLetter {
                    seq: header(h, "Weir-Seq")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    id: header(h, "Weir-Id").unwrap_or_default(),
                    attempts: header(h, "Weir-Attempts")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    reason: String::from_utf8_lossy(&m.payload).into_owned(),
                },
            ));
        }
        Ok(out)
    }

    /// Publishes a copy of the event at `seq` for `sub`'s replay consumer.
    pub(super) async fn replay_one(&self, sub: &str, seq: i64) -> Result<bool> {
        let m = match self.events.get_raw_message(seq as u64).await {
            Ok(m) => m,
            Err(e) if missing(&e) => return Ok(false),
            Err(e) => return Err(unavailable(e)),
        };
        let mut h = m.headers.clone();
        let id = header(Some(&h), "Nats-Msg-Id").unwrap_or_default();
        h.insert("Weir-Seq", seq.to_string().as_str());
        h.insert("Weir-Id", id.as_str());
        // A fresh message: the duplicate window must not swallow it.
        h.insert("Nats-Msg-Id", format!("{id}-re-{}", now_ms()).as_str());
        self.js
            .publish_with_headers(format!("{}.re.{sub}.{id}", self.prefix), h, m.payload)
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    /// Streams through an ephemeral consumer; `f` sees each message until it says stop.
    pub(super) async fn scan(
        &self,
        stream: &Stream,
        filter: String,
        deliver: DeliverPolicy,
        mut f: impl FnMut(&Message) -> bool,
    ) -> Result<()> {
        let c = stream
            .create_consumer(pull::Config {
                deliver_policy: deliver,
                ack_policy: AckPolicy::None,
                filter_subject: filter,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let name = c.cached_info().name.clone();
        let result = async {
            // Each batch bounded like `fetch`; a scan cut short is an error, not an answer.
            let late = || unavailable("the scan was not answered in time");
            loop {
                let deadline = tokio::time::Instant::now() + SCAN_BOUND;
                let pull = c.fetch().max_messages(1000).messages();
                let mut batch = tokio::time::timeout_at(deadline, pull)
                    .await
                    .map_err(|_| late())?
                    .map_err(unavailable)?;
                let mut got = 0;
                while let Some(m) = tokio::time::timeout_at(deadline, batch.next())
                    .await
                    .map_err(|_| late())?
                {
                    let m = m.map_err(unavailable)?;
                    got += 1;
                    if !f(&m) {
                        return Ok(());
                    }
                }
                if got == 0 {
                    return Ok(());
                }
            }
        }
        .await;
        let _ = stream.delete_consumer(&name).await;
        result
    }
}
