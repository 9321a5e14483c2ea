//! Delivery: one worker per subscription leases its due events and POSTs each to the
//! subscription's endpoint, signed per Standard Webhooks (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`), at most `max_in_flight` at once. A 2xx is
//! done; `410 Gone` dead-letters the event and stops the subscription; anything else is
//! tried again on the schedule (±20% jitter, `Retry-After` honoured within [wait, 2×wait])
//! until the schedule or `max_age` runs out, then the event is a dead letter. Leases outlive
//! the attempt's deadline, so a crash mid-delivery only means a redelivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderName, HeaderValue, StatusCode, Uri};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, watch};
use weir_config::SubscriptionConfig;
use weir_upstream::Poster;

use crate::cloudevents::{Egress, render};
use crate::{Attempt, Leased, Queue, StartAt, now_ms};

/// Bytes of an endpoint's answer kept with a failed attempt's reason.
const SNIPPET: usize = 256;
/// Deliveries by outcome: `delivered`, `retry`, `dead`, `gone`, `filtered`.
pub const DELIVERIES: &str = "weir_event_deliveries_total";
/// Events a subscription still owes (new, due for retry, or leased).
pub const PENDING: &str = "weir_event_pending";
/// Age in seconds of the oldest event a subscription still owes.
pub const OLDEST_AGE: &str = "weir_event_oldest_age_seconds";
/// Dead letters a subscription holds.
pub const DEAD_LETTERS: &str = "weir_event_dead_letters";

fn outcome(sub: &str, outcome: &'static str) {
    metrics::counter!(DELIVERIES, "subscription" => sub.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// A subscription ready to run.
pub struct Subscription {
    pub name: String,
    pub topic: String,
    endpoint: Uri,
    types: Vec<String>,
    max_in_flight: usize,
    ordered: bool,
    /// How events go out: binary, structured or plain.
    egress: Egress,
    /// (burst, interval between deliveries) when the endpoint's rate is limited.
    rate: Option<(u32, Duration)>,
    schedule: Vec<Duration>,
    max_age: Duration,
    /// HMAC keys (decoded), all used to sign during a rotation.
    secrets: Vec<Vec<u8>>,
    timeout: Duration,
    /// Where its cursor starts when the queue has none yet.
    start: StartAt,
    /// When its declaration was written (the newer of two that disagree holds).
    generation: i64,
    /// In flight, last delivery and failure, degraded or not.
    pub health: crate::health::Health,
    /// Stopped by a `410 Gone` or an operator; the queue keeps it across restarts.
    disabled: AtomicBool,
    /// Unix milliseconds of the last `410 Gone` here: a read of the queue's state that
    /// began before it must not enable the subscription again.
    gone_at: AtomicI64,
}

impl Subscription {
    /// Resolves secrets (`env:`, `file:` or inline `whsec_…`) and the endpoint's port.
    pub fn compile(
        c: &SubscriptionConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let at = format!("subscription {:?}", c.name);
        let uri: Uri = c
            .endpoint
            .parse()
            .map_err(|_| format!("{at}: endpoint is not a URL"))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or(format!("{at}: endpoint names no host"))?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let endpoint: Uri = format!(
            "{}://{host}:{port}{}",
            if https { "https" } else { "http" },
            uri.path_and_query().map_or("/", |p| p.as_str())
        )
        .parse()
        .map_err(|_| format!("{at}: endpoint is not a usable URL"))?;
        let mut secrets = Vec::new();
        let values = match &c.signing_secret {
            Some(s) => s.resolve_all(env).map_err(|e| format!("{at}: {e}"))?,
            None => Vec::new(),
        };
        for one in values {
            let b64 = one.strip_prefix("whsec_").ok_or(format!(
                "{at}: a signing secret is whsec_ followed by base64"
            ))?;
            let key = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| format!("{at}: the signing secret is not valid base64"))?;
            if key.len() < 16 {
                return Err(format!("{at}: the signing secret is shorter than 16 bytes"));
            }
            secrets.push(key);
        }
        Ok(Self {
            name: c.name.clone(),
            topic: c.topic.clone(),
            endpoint,
            types: c
                .filter
                .as_ref()
                .map(|f| f.types.clone())
                .unwrap_or_default(),
            max_in_flight: c.max_in_flight as usize,
            ordered: c.ordered,
            egress: c.cloudevents,
            rate: c
                .rate_limit
                .map(|r| (r.limit, r.per.get() / r.limit.max(1))),
            schedule: c.retry.schedule.iter().map(|d| d.get()).collect(),
            max_age: c.retry.max_age.get(),
            secrets,
            timeout: c.timeout.get(),
            start: c.start.into(),
            generation: c.generation.0,
            health: crate::health::Health::new(&c.name),
            disabled: AtomicBool::new(false),
            gone_at: AtomicI64::new(0),
        })
    }

    /// The endpoint as configured (its URL with host and port made explicit).
    pub fn endpoint_shown(&self) -> String {
        self.endpoint.to_string()
    }

    /// Whether a `410 Gone` (or an operator) stopped it.
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// Reads the disabled state the queue keeps (set here on `410 Gone`, cleared through
    /// the admin API).
    async fn refresh_disabled(&self, queue: &dyn Queue) {
        let began = now_ms();
        if let Ok(state) = queue.disabled(&self.name).await {
            if state.is_some() {
                self.disabled.store(true, Ordering::Relaxed);
            } else if began > self.gone_at.load(Ordering::Relaxed)
                && self.disabled.swap(false, Ordering::Relaxed)
            {
                tracing::info!(subscription = %self.name, "subscription enabled again; delivering");
            }
        }
    }
}

/// HMAC-SHA256 (RFC 2104).
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The `webhook-signature` value: `v1,<base64>` per secret, space-separated.
pub fn sign(secrets: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut content = Vec::with_capacity(id.len() + body.len() + 24);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    secrets
        .iter()
        .map(|k| {
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(hmac_sha256(k, &content))
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A running worker: what it was started from, and how to stop it.
struct Worker {
    config: SubscriptionConfig,
    /// `events.allowed_networks` when it started (an API-made one restarts on a change).
    networks: Vec<String>,
    sub: Arc<Subscription>,
    stop: watch::Sender<bool>,
}

/// Keeps one worker per configured subscription: [`Supervisor::reconcile`] starts new
/// ones, restarts changed ones and stops removed ones, on every configuration change.
pub struct Supervisor {
    queue: Arc<dyn Queue>,
    /// Told when a subscription's cursor is in the queue (publishes to its topic wait).
    ingest: Arc<crate::ingest::Ingest>,
    workers: parking_lot::Mutex<std::collections::HashMap<String, Worker>>,
}

impl Supervisor {
    /// Every worker stops when `stop` fires.
    pub fn new(ingest: Arc<crate::ingest::Ingest>, mut stop: watch::Receiver<bool>) -> Arc<Self> {
        let me = Arc::new(Self {
            queue: Arc::clone(ingest.queue()),
            ingest,
            workers: parking_lot::Mutex::new(std::collections::HashMap::new()),
        });
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
            if let Some(me) = weak.upgrade() {
                for w in me.workers.lock().values() {
                    let _ = w.stop.send(true);
                }
            }
        });
        me
    }

    /// Matches the workers to `configs`. A subscription that cannot be compiled (a secret
    /// missing, say) is reported and keeps its previous worker, if any.
    pub fn reconcile(
        &self,
        configs: &[SubscriptionConfig],
        allowed_networks: &[String],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Vec<String> {
        // Subscriptions made through the admin API reach only the allowed networks.
        let filter: Option<weir_upstream::AddressFilter> =
            match weir_config::net::NetworkPolicy::parse(allowed_networks) {
                Ok(p) => Some(Arc::new(move |ip| p.allows(ip))),
                Err(e) => {
                    return vec![format!("events.allowed_networks: {e}")];
                }
            };
        let mut errors = Vec::new();
        let mut workers = self.workers.lock();
        let wanted: std::collections::HashSet<&str> =
            configs.iter().map(|c| c.name.as_str()).collect();
        workers.retain(|name, w| {
            let keep = wanted.contains(name.as_str());
            if !keep {
                let _ = w.stop.send(true);
                tracing::info!(subscription = %name, "subscription removed; its worker stopped");
            }
            keep
        });
        for c in configs {
            if workers
                .get(&c.name)
                .is_some_and(|w| w.config == *c && w.networks == allowed_networks)
            {
                continue;
            }
            let sub = match Subscription::compile(c, env) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let allow = if c.from_api { filter.clone() } else { None };
            let poster = match Poster::new(sub.timeout, allow) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(format!("subscription {:?}: {e}", c.name));
                    continue;
                }
            };
            let (tx, rx) = watch::channel(false);
            if let Some(old) = workers.insert(
                c.name.clone(),
                Worker {
                    config: c.clone(),
                    networks: allowed_networks.to_vec(),
                    sub: Arc::clone(&sub),
                    stop: tx,
                },
            ) {
                // Its leases run out and the new worker delivers what it held.
                let _ = old.stop.send(true);
            }
            tokio::spawn(run(
                Arc::clone(&self.queue),
                (Arc::clone(&self.ingest), crate::ingest::fingerprint(c)),
                sub,
                poster,
                rx,
            ));
        }
        errors
    }

    /// The running subscription of that name.
    pub fn get(&self, name: &str) -> Option<Arc<Subscription>> {
        self.workers.lock().get(name).map(|w| Arc::clone(&w.sub))
    }

    /// Names of the running subscriptions, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.workers.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Enables a subscription again at once (its worker would notice within seconds).
    pub async fn enable(&self, name: &str) -> crate::Result<()> {
        self.queue.set_disabled(name, None).await?;
        if let Some(sub) = self.get(name) {
            sub.refresh_disabled(&*self.queue).await;
        }
        Ok(())
    }
}

/// One subscription's worker. `declared` is the ingest to tell while it runs (from the
/// moment its cursor is in the queue), and the fingerprint of the declaration it runs.
async fn run(
    queue: Arc<dyn Queue>,
    declared: (Arc<crate::ingest::Ingest>, u64),
    sub: Arc<Subscription>,
    poster: Poster,
    mut stop: watch::Receiver<bool>,
) {
    if !declare(&*queue, &sub, &mut stop).await {
        return;
    }
    // Publishes to its topic wait for this (and for the worker it replaces to end).
    let _running = declared.0.running(&sub.name, &sub.topic, declared.1);
    while let Err(e) = queue.set_ordered(&sub.name, sub.ordered).await {
        tracing::warn!(subscription = %sub.name, error = %e, "cannot set the ordering yet");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
    let slots = Arc::new(Semaphore::new(sub.max_in_flight));
    let mut pace = sub.rate.map(|(burst, every)| Pacer::new(burst, every));
    let lease_for = sub.timeout * 2 + Duration::from_secs(10);
    let mut measured = tokio::time::Instant::now() - Duration::from_secs(60);
    loop {
        if *stop.borrow() {
            return;
        }
        if measured.elapsed() >= Duration::from_secs(5) {
            measured = tokio::time::Instant::now();
            sub.refresh_disabled(&*queue).await;
            if let Ok(d) = queue.depth(&sub.name).await {
                let name = sub.name.clone();
                metrics::gauge!(PENDING, "subscription" => name.clone()).set(d.pending as f64);
                metrics::gauge!(DEAD_LETTERS, "subscription" => name.clone()).set(d.dead as f64);
                let age = d
                    .oldest_ms
                    .map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
                metrics::gauge!(OLDEST_AGE, "subscription" => name).set(age);
            }
        }
        if sub.is_disabled() {
            // Events keep arriving in its queue; they go out once it is enabled again.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let free = fill(&slots, sub.max_in_flight, &mut stop).await;
        let leased = if free == 0 {
            Vec::new()
        } else {
            match queue.lease(&sub.name, free, lease_for).await {
                Ok(l) => {
                    sub.health.recovered();
                    l
                }
                Err(e) => {
                    lease_failed(&*queue, &sub, e).await;
                    Vec::new()
                }
            }
        };
        if leased.is_empty() {
            tokio::select! {
                // Short: retries that fall due, and other nodes' publishes, are found by it.
                _ = queue.published(Duration::from_millis(20)) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let mut leased = leased.into_iter();
        while let Some(l) = leased.next() {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            if let Some(p) = &mut pace {
                let wait = p.take();
                if !wait.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
            // Stopped (a change restarted or removed the subscription): what is leased but
            // not sent goes back at once, for the worker of the new declaration.
            if *stop.borrow() {
                release(&*queue, &sub.name, std::iter::once(l).chain(leased)).await;
                return;
            }
            let (queue, sub, poster) = (Arc::clone(&queue), Arc::clone(&sub), poster.clone());
            tokio::spawn(async move {
                deliver(&*queue, &sub, &poster, l).await;
                drop(permit);
            });
        }
    }
}

/// The slots free for the next lease. Under load only a few are free at a time, and a
/// lease is a transaction (or a broker round trip) whatever it takes: wait a moment for a
/// quarter of the slots, so one lease takes many events instead of one each.
async fn fill(slots: &Arc<Semaphore>, max: usize, stop: &mut watch::Receiver<bool>) -> usize {
    let want = (max / 4).max(1);
    let free = slots.available_permits();
    if free >= want {
        return free;
    }
    tokio::select! {
        // Taken and given back at once: this only waits until that many are free.
        _ = slots.acquire_many(want as u32) => {}
        _ = tokio::time::sleep(Duration::from_millis(2)) => {}
        _ = stop.changed() => {}
    }
    slots.available_permits()
}

/// Declares the subscription until the queue takes it (false: stopped meanwhile). A newer
/// declaration elsewhere (another node's file) stays in force, said once.
async fn declare(queue: &dyn Queue, sub: &Subscription, stop: &mut watch::Receiver<bool>) -> bool {
    let d = crate::Declaration {
        name: &sub.name,
        topic: &sub.topic,
        start: sub.start,
        generation: sub.generation,
    };
    loop {
        match queue.declare(&d).await {
            Ok(newer) => {
                sub.health.recovered();
                if let Some(topic) = newer {
                    tracing::warn!(subscription = %sub.name, configured = %sub.topic, in_force = %topic, "a newer declaration of this subscription (another node's configuration) binds it to another topic; this node's is older and does not change it");
                }
                return true;
            }
            Err(e) => sub.health.degrade(format!(
                "cannot make or find its cursor ({e}); events for its topic are refused (503) until it can"
            )),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return false,
        }
    }
}

/// A lease failed: the subscription is degraded with the reason. A cursor that is gone
/// (removed outside Weir) is made again, from now on.
async fn lease_failed(queue: &dyn Queue, sub: &Subscription, e: crate::QueueError) {
    if let crate::QueueError::NoSubscription(_) = e {
        sub.health.degrade(
            "the queue has no cursor for it (removed outside Weir?); making it again, from now on"
                .to_owned(),
        );
        // Its own declaration, from now on (what the lost cursor held is gone with it).
        let d = crate::Declaration {
            name: &sub.name,
            topic: &sub.topic,
            start: StartAt::Now,
            generation: sub.generation,
        };
        let _ = queue.declare(&d).await;
    } else {
        sub.health.degrade(format!("cannot lease its events: {e}"));
    }
}

/// Hands leased events back, due now (a stopped worker's, so they do not wait out their
/// lease).
async fn release(queue: &dyn Queue, sub: &str, leased: impl Iterator<Item = Leased>) {
    let now = now_ms();
    for l in leased {
        let _ = queue.retry_at(sub, l.event.seq, now).await;
    }
}

/// `Retry-After` in either form: seconds, or an HTTP date (a date past means now).
fn retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// GCRA: deliveries start at most one per `every`, with bursts of up to `burst`.
struct Pacer {
    every: Duration,
    burst: Duration,
    /// When the next delivery would be on time.
    tat: tokio::time::Instant,
}

impl Pacer {
    fn new(burst: u32, every: Duration) -> Self {
        Self {
            every,
            burst: every * burst.saturating_sub(1),
            tat: tokio::time::Instant::now(),
        }
    }

    /// Claims the next slot; how long to wait before using it.
    fn take(&mut self) -> Duration {
        let now = tokio::time::Instant::now();
        let tat = self.tat.max(now);
        let start = tat.checked_sub(self.burst).unwrap_or(now).max(now);
        self.tat = tat + self.every;
        start - now
    }
}

async fn deliver(queue: &dyn Queue, sub: &Subscription, poster: &Poster, l: Leased) {
    let _sending = sub.health.sending();
    let e = &l.event;
    let seq = e.seq;
    if sub.is_disabled() {
        // Stopped meanwhile (410 Gone): the event waits, undelivered, for the subscription
        // to be enabled again.
        let _ = queue.retry_at(&sub.name, seq, now_ms()).await;
        return;
    }
    let header = |name: &str| {
        e.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if !sub.types.is_empty() && !header("ce-type").is_some_and(|t| sub.types.iter().any(|x| x == t))
    {
        // Not for this subscription: done without a delivery.
        outcome(&sub.name, "filtered");
        let _ = queue.ack(&sub.name, seq).await;
        return;
    }
    let ts = now_ms() / 1000;
    let (rendered, body) = render(e, sub.egress);
    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(rendered.len() + 3);
    for (k, v) in &rendered {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.push((n, v));
        }
    }
    let id_value = HeaderValue::from_str(&e.id).unwrap_or(HeaderValue::from_static("invalid"));
    headers.push((HeaderName::from_static("webhook-id"), id_value.clone()));
    headers.push((
        HeaderName::from_static("webhook-timestamp"),
        HeaderValue::from(ts),
    ));
    if !sub.secrets.is_empty()
        && let Ok(sig) = HeaderValue::from_str(&sign(&sub.secrets, &e.id, ts, &body))
    {
        headers.push((HeaderName::from_static("webhook-signature"), sig));
    }
    let sent_at = now_ms();
    let started = std::time::Instant::now();
    let answer = poster.post(&sub.endpoint, &headers, body, SNIPPET).await;
    let mut record = Attempt {
        seq,
        event_id: e.id.clone(),
        attempt: l.attempt,
        at_ms: sent_at,
        status: answer.as_ref().ok().map(|a| a.status.as_u16()),
        latency_ms: started.elapsed().as_millis() as u64,
        outcome: String::new(),
        answer: match &answer {
            Ok(a) => String::from_utf8_lossy(&a.snippet).into_owned(),
            Err(e) => e.clone(),
        },
    };
    let (reason, retry_after) = match answer {
        Ok(a) if a.status.is_success() => {
            sub.health.delivered(&e.id, a.status.as_u16());
            outcome(&sub.name, "delivered");
            record.outcome = "delivered".to_owned();
            let _ = queue.record(&sub.name, record).await;
            let _ = queue.ack(&sub.name, seq).await;
            return;
        }
        Ok(a) if a.status == StatusCode::GONE => {
            sub.health
                .failed(&e.id, Some(410), "410 Gone: the subscription was disabled");
            const GONE: &str = "410 Gone: the endpoint asked to stop; subscription disabled";
            outcome(&sub.name, "gone");
            record.outcome = "gone".to_owned();
            let _ = queue.record(&sub.name, record).await;
            if let Err(e) = queue.set_disabled(&sub.name, Some(GONE)).await {
                tracing::warn!(subscription = %sub.name, error = %e, "cannot keep the disabled state; it holds until a restart");
            }
            sub.gone_at.store(now_ms(), Ordering::Relaxed);
            sub.disabled.store(true, Ordering::Relaxed);
            tracing::warn!(subscription = %sub.name, "the endpoint answered 410 Gone: subscription stopped; its events wait");
            let _ = queue.dead(&sub.name, seq, GONE).await;
            return;
        }
        Ok(a) => {
            let retry_after = a
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| retry_after(v.to_str().ok()?, std::time::SystemTime::now()));
            let snippet = String::from_utf8_lossy(&a.snippet).into_owned();
            let why = format!("answered {}: {snippet}", a.status);
            sub.health.failed(&e.id, Some(a.status.as_u16()), &why);
            (why, retry_after)
        }
        Err(why) => {
            sub.health.failed(&e.id, None, &why);
            (why, None)
        }
    };
    let age = Duration::from_millis((now_ms() - e.created_ms).max(0) as u64);
    let attempt = l.attempt as usize;
    let Some(base) = sub
        .schedule
        .get(attempt - 1)
        .copied()
        .filter(|_| age < sub.max_age)
    else {
        outcome(&sub.name, "dead");
        record.outcome = "dead".to_owned();
        let _ = queue.record(&sub.name, record).await;
        let why = format!("gave up after {attempt} attempts: {reason}");
        let _ = queue.dead(&sub.name, seq, &why).await;
        return;
    };
    // ±20% jitter, then Retry-After within [wait, 2×wait].
    let jitter = 0.8 + fastrand::f64() * 0.4;
    let mut wait = base.mul_f64(jitter);
    if let Some(ra) = retry_after {
        wait = ra.clamp(wait, wait * 2);
    }
    outcome(&sub.name, "retry");
    record.outcome = "retry".to_owned();
    let _ = queue.record(&sub.name, record).await;
    let at = now_ms() + wait.as_millis() as i64;
    tracing::debug!(subscription = %sub.name, event = %e.id, attempt, reason = %reason, "delivery failed; will retry");
    let _ = queue.retry_at(&sub.name, seq, at).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        // Wed, 21 Oct 2015 07:28:00 GMT is 1445412480.
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[tokio::test]
    async fn the_pacer_allows_a_burst_then_one_per_interval() {
        let mut p = Pacer::new(3, Duration::from_millis(100));
        let waits: Vec<u128> = (0..5).map(|_| p.take().as_millis()).collect();
        assert_eq!(&waits[..3], [0, 0, 0], "{waits:?}");
        assert!((90..=100).contains(&waits[3]), "{waits:?}");
        assert!((190..=200).contains(&waits[4]), "{waits:?}");
    }

    /// RFC 4231 test case 2.
    #[test]
    fn hmac_matches_the_rfc() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// The Standard Webhooks reference example.
    #[test]
    fn signatures_follow_standard_webhooks() {
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let sig = sign(
            &[key],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
