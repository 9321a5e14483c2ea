//! The Redis Streams queue: a stream per topic is the log (entry id `SEQ-0`, so the global
//! sequence number is the stream id), a consumer group per subscription is its cursor for
//! new events, and sorted sets hold what it owes (leased, due for retry, dead). Every
//! operation is one atomic script, so several Weir nodes share one queue safely.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script, Value};

mod scripts;
use scripts::Scripts;

use crate::{
    ATTEMPT_RETENTION, ATTEMPTS_KEPT, Attempt, DeadLetter, Declaration, Depth, Event, Leased,
    NewEvent, Queue, QueueError, Result, StartAt, Trimmed, now_ms,
};

/// The Redis Streams queue. Durability is the server's: see ADR 0006 (AOF with
/// `appendfsync always` for no loss on a crash of the server).
pub struct RedisStreams {
    client: redis::Client,
    prefix: String,
    /// One multiplexed connection, replaced after it fails.
    conn: Mutex<Option<MultiplexedConnection>>,
    scripts: Scripts,
    /// Wakes this node's idle workers after its own publishes.
    published: tokio::sync::Notify,
    /// Per subscription, the token of a lease call whose answer did not arrive: the next
    /// call sends it again and gets what that one leased.
    unanswered: Mutex<HashMap<String, String>>,
    /// `host:port` for messages; never the URL, which may hold a password.
    pub display: String,
}

fn unavailable(e: &redis::RedisError) -> QueueError {
    // A group removed outside Weir answers NOGROUP (inside a script, in its message).
    if e.code() == Some("NOSUB") || e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
    {
        return QueueError::NoSubscription(String::new());
    }
    QueueError::Unavailable(e.to_string())
}

fn text(v: Vec<u8>) -> Result<String> {
    String::from_utf8(v).map_err(|e| QueueError::Corrupt(e.to_string()))
}

fn headers_of(h: &[u8]) -> Result<Vec<(String, String)>> {
    serde_json::from_slice(h).map_err(|e| QueueError::Corrupt(e.to_string()))
}

/// Keys are stored with a marker byte, so an empty key and no key differ.
fn key_of(k: Vec<u8>) -> Result<Option<String>> {
    match k.split_first() {
        Some((b'1', rest)) => Ok(Some(text(rest.to_vec())?)),
        _ => Ok(None),
    }
}

impl RedisStreams {
    /// Connects to `url` (`redis://` or `rediss://`) and checks the server can hold a queue.
    /// Every key starts with `prefix`; one with a hash tag (`weir:{ev}:`) keeps them all on
    /// one shard of a Redis Cluster, as the scripts touch several at once.
    pub async fn open(url: &str, prefix: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| unavailable(&e))?;
        let display = client.get_connection_info().addr().to_string();
        let q = Self {
            client,
            prefix: prefix.to_owned(),
            conn: Mutex::new(None),
            scripts: Scripts::new(),
            published: tokio::sync::Notify::new(),
            unanswered: Mutex::new(HashMap::new()),
            display,
        };
        let mut c = q.conn().await?;
        q.warn_about_durability(&mut c).await;
        Ok(q)
    }

    /// Deletes every key of this queue (decommissioning; tests).
    pub async fn delete_keys(&self) -> Result<()> {
        let mut c = self.conn().await?;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!(
                    "{}*",
                    self.prefix.replace('{', "\\{").replace('}', "\\}")
                ))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(|e| unavailable(&e))?;
            if !keys.is_empty() {
                redis::cmd("DEL")
                    .arg(keys)
                    .query_async::<i64>(&mut c)
                    .await
                    .map_err(|e| unavailable(&e))?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn warn_about_durability(&self, c: &mut MultiplexedConnection) {
        // CONFIG may be renamed away on managed servers; then there is nothing to check.
        let Ok(cfg) = redis::cmd("CONFIG")
            .arg("GET")
            .arg("*")
            .query_async::<std::collections::HashMap<String, String>>(c)
            .await
        else {
            return;
        };
        let get = |k: &str| cfg.get(k).map_or("", String::as_str);
        if get("appendonly") != "yes" || get("appendfsync") != "always" {
            tracing::warn!(
                server = %self.display,
                "Redis acknowledges events held in memory only: set `appendonly yes` and \
                 `appendfsync always` so an acknowledged event survives a crash of the server"
            );
        }
        if get("maxmemory-policy").is_empty() || !get("maxmemory-policy").starts_with("noev") {
            tracing::warn!(
                server = %self.display,
                policy = get("maxmemory-policy"),
                "Redis may evict queued events: set `maxmemory-policy noeviction`"
            );
        }
    }

    async fn conn(&self) -> Result<MultiplexedConnection> {
        if let Some(c) = self.conn.lock().clone() {
            return Ok(c);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| QueueError::Unavailable(format!("{}: {e}", self.display)))?;
        *self.conn.lock() = Some(c.clone());
        Ok(c)
    }

    /// Runs a plain command; a failed connection is dropped so the next call reconnects.
    async fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let mut c = self.conn().await?;
        cmd.query_async(&mut c).await.map_err(|e| {
            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                *self.conn.lock() = None;
            }
            unavailable(&e)
        })
    }

    /// Runs a script with (prefix, subscription, args…); a failed connection is dropped so
    /// the next call reconnects.
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        subscription: Option<&str>,
        args: &[String],
    ) -> Result<T> {
        let mut c = self.conn().await?;
        let mut call = script.prepare_invoke();
        call.arg(&self.prefix);
        if let Some(s) = subscription {
            call.arg(s);
        }
        for a in args {
            call.arg(a);
        }
        match call.invoke_async::<T>(&mut c).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    *self.conn.lock() = None;
                }
                Err(match (unavailable(&e), subscription) {
                    (QueueError::NoSubscription(_), Some(s)) => {
                        QueueError::NoSubscription(s.to_owned())
                    }
                    (other, _) => other,
                })
            }
        }
    }
}

/// A stream entry: its id and its fields.
type Entry = (String, Vec<(String, Vec<u8>)>);
type GetRow = (i64, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, i64);
type Row = (i64, i64, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, i64, Vec<u8>);

impl Queue for RedisStreams {
    fn publish(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<i64>>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(Vec::new());
            }
            let mut c = self.conn().await?;
            let mut call = self.scripts.publish.prepare_invoke();
            call.arg(&self.prefix).arg(now_ms());
            for e in &events {
                let headers = serde_json::to_vec(&e.headers)
                    .map_err(|err| QueueError::Corrupt(err.to_string()))?;
                let key = match &e.key {
                    Some(k) => format!("1{k}"),
                    None => "0".to_owned(),
                };
                call.arg(&e.id)
                    .arg(&e.topic)
                    .arg(key)
                    .arg(headers)
                    .arg(e.body.as_ref());
            }
            let seqs: Vec<i64> = call.invoke_async(&mut c).await.map_err(|e| {
                *self.conn.lock() = None;
                unavailable(&e)
            })?;
            self.published.notify_waiters();
            Ok(seqs)
        })
    }

    fn declare<'a>(&'a self, d: &'a Declaration<'a>) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            let Declaration {
                name,
                topic,
                start,
                generation,
            } = *d;
            let mut c = self.conn().await?;
            let key = format!("{}s:{name}", self.prefix);
            let (before, held): (Option<String>, Option<i64>) = redis::cmd("HMGET")
                .arg(&key)
                .arg("topic")
                .arg("gen")
                .query_async(&mut c)
                .await
                .map_err(|e| unavailable(&e))?;
            if let Some(old) = before.filter(|t| t != topic) {
                if generation < held.unwrap_or(0) {
                    return Ok(Some(old));
                }
                // Moved: one script, so no event of either topic falls between the two.
                self.run::<i64>(
                    &self.scripts.moved,
                    Some(name),
                    &[topic.to_owned(), now_ms().to_string()],
                )
                .await?;
            }
            if generation > held.unwrap_or(0) {
                redis::cmd("HSET")
                    .arg(&key)
                    .arg("gen")
                    .arg(generation)
                    .query_async::<Value>(&mut c)
                    .await
                    .map_err(|e| unavailable(&e))?;
            }
            let stream = format!("{}t:{topic}", self.prefix);
            let from = match start {
                StartAt::Now => "$".to_owned(),
                StartAt::Beginning => "0".to_owned(),
                // After the last event published before then.
                StartAt::Since(ms) => {
                    let before: Vec<i64> = redis::cmd("ZREVRANGEBYSCORE")
                        .arg(format!("{}time:{topic}", self.prefix))
                        .arg(format!("({ms}"))
                        .arg("-inf")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(1)
                        .query_async(&mut c)
                        .await
                        .map_err(|e| unavailable(&e))?;
                    before.first().map_or("0".to_owned(), |s| format!("{s}-0"))
                }
            };
            let made: redis::RedisResult<Value> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(name)
                .arg(from)
                .arg("MKSTREAM")
                .query_async(&mut c)
                .await;
            match made {
                Ok(_) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(unavailable(&e)),
            }
            redis::cmd("HSETNX")
                .arg(&key)
                .arg("topic")
                .arg(topic)
                .query_async::<Value>(&mut c)
                .await
                .map_err(|e| unavailable(&e))?;
            // The topic's subscriptions, for retention to find what they still owe.
            redis::cmd("SADD")
                .arg(format!("{}subs:{topic}", self.prefix))
                .arg(name)
                .query_async::<Value>(&mut c)
                .await
                .map_err(|e| unavailable(&e))?;
            Ok(None)
        })
    }

    fn object(&self, subscription: &str, topic: &str) -> String {
        format!(
            "consumer group {subscription:?} on stream {}t:{topic}",
            self.prefix
        )
    }

    fn lease<'a>(
        &'a self,
        subscription: &'a str,
        max: usize,
        lease_for: Duration,
    ) -> BoxFuture<'a, Result<Vec<Leased>>> {
        Box::pin(async move {
            let now = now_ms();
            let until = now + lease_for.as_millis() as i64;
            let token = self
                .unanswered
                .lock()
                .remove(subscription)
                .unwrap_or_else(crate::new_event_id);
            let args = [
                now.to_string(),
                until.to_string(),
                (max as i64).to_string(),
                token.clone(),
            ];
            let rows: Vec<Row> = match self
                .run(&self.scripts.lease, Some(subscription), &args)
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    if matches!(e, QueueError::Unavailable(_)) {
                        self.unanswered
                            .lock()
                            .insert(subscription.to_owned(), token);
                    }
                    return Err(e);
                }
            };
            rows.into_iter()
                .map(
                    |(seq, attempt, id, key, headers, body, created_ms, topic)| {
                        Ok(Leased {
                            event: Event {
                                seq,
                                id: text(id)?,
                                topic: text(topic)?,
                                key: key_of(key)?,
                                headers: headers_of(&headers)?,
                                body: Bytes::from(body),
                                created_ms,
                            },
                            attempt: attempt.max(1) as u32,
                        })
                    },
                )
                .collect()
        })
    }

    fn ack<'a>(&'a self, subscription: &'a str, seq: i64) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.run::<i64>(&self.scripts.ack, Some(subscription), &[seq.to_string()])
                .await
                .map(drop)
        })
    }

    fn retry_at<'a>(
        &'a self,
        subscription: &'a str,
        seq: i64,
        at_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.run::<i64>(
                &self.scripts.retry,
                Some(subscription),
                &[seq.to_string(), at_ms.to_string()],
            )
            .await
            .map(drop)
        })
    }

    fn dead<'a>(
        &'a self,
        subscription: &'a str,
        seq: i64,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.run::<i64>(
                &self.scripts.dead,
                Some(subscription),
                &[seq.to_string(), reason.to_string()],
            )
            .await
            .map(drop)
        })
    }

    fn dead_letters<'a>(
        &'a self,
        subscription: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>> {
        Box::pin(async move {
            let rows: Vec<(i64, Vec<u8>, i64, Vec<u8>)> = self
                .run(
                    &self.scripts.dead_letters,
                    Some(subscription),
                    &[(limit as i64).to_string()],
                )
                .await?;
            rows.into_iter()
                .map(|(seq, id, attempts, reason)| {
                    Ok(DeadLetter {
                        seq,
                        id: text(id)?,
                        attempts: attempts.max(0) as u32,
                        reason: text(reason)?,
                    })
                })
                .collect()
        })
    }

    fn replay_dead<'a>(
        &'a self,
        subscription: &'a str,
        seq: Option<i64>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let which = seq.map(|s| s.to_string()).unwrap_or_default();
            let n: i64 = self
                .run(
                    &self.scripts.replay_dead,
                    Some(subscription),
                    &[now_ms().to_string(), which.to_string()],
                )
                .await?;
            Ok(n.max(0) as u64)
        })
    }

    fn replay_since<'a>(
        &'a self,
        subscription: &'a str,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let n: i64 = self
                .run(
                    &self.scripts.replay_since,
                    Some(subscription),
                    &[now_ms().to_string(), since_ms.to_string()],
                )
                .await?;
            Ok(n.max(0) as u64)
        })
    }

    fn depth<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Depth>> {
        Box::pin(async move {
            let (pending, oldest, dead): (i64, i64, i64) = self
                .run(&self.scripts.depth, Some(subscription), &[])
                .await?;
            Ok(Depth {
                pending: pending.max(0) as u64,
                oldest_ms: (oldest > 0).then_some(oldest),
                dead: dead.max(0) as u64,
            })
        })
    }

    fn read<'a>(
        &'a self,
        topic: &'a str,
        after: i64,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Event>>> {
        Box::pin(async move {
            let entries: Vec<Entry> = self
                .command(
                    redis::cmd("XRANGE")
                        .arg(format!("{}t:{topic}", self.prefix))
                        .arg(format!("({}-0", after.max(0)))
                        .arg("+")
                        .arg("COUNT")
                        .arg(max),
                )
                .await?;
            entries
                .into_iter()
                .map(|(id, fields)| {
                    let field = |name: &str| {
                        fields
                            .iter()
                            .find(|(k, _)| k == name)
                            .map_or_else(Vec::new, |(_, v)| v.clone())
                    };
                    let seq = id
                        .split('-')
                        .next()
                        .and_then(|s| s.parse::<i64>().ok())
                        .ok_or_else(|| QueueError::Corrupt(format!("stream entry id {id:?}")))?;
                    Ok(Event {
                        seq,
                        id: text(field("id"))?,
                        topic: topic.to_owned(),
                        key: key_of(field("k"))?,
                        headers: headers_of(&field("h"))?,
                        body: Bytes::from(field("b")),
                        created_ms: text(field("c"))?.parse().unwrap_or(0),
                    })
                })
                .collect()
        })
    }

    fn trim<'a>(&'a self, topic: &'a str, before_ms: i64) -> BoxFuture<'a, Result<Trimmed>> {
        Box::pin(async move {
            let mut out = Trimmed::default();
            let mut made: std::collections::BTreeMap<String, u64> = Default::default();
            loop {
                let answer: Vec<Value> = self
                    .run(
                        &self.scripts.trim,
                        None,
                        &[
                            topic.to_owned(),
                            before_ms.to_string(),
                            crate::RETAINED_PAST.to_owned(),
                        ],
                    )
                    .await?;
                let count = |i: usize| -> i64 {
                    answer
                        .get(i)
                        .and_then(|v| redis::from_redis_value_ref(v).ok())
                        .unwrap_or(0)
                };
                let (n, dropped) = (count(0), count(1));
                for pair in answer.get(2..).unwrap_or_default().chunks(2) {
                    if let [sub, count] = pair
                        && let (Ok(sub), Ok(count)) = (
                            redis::from_redis_value_ref::<String>(sub),
                            redis::from_redis_value_ref::<u64>(count),
                        )
                    {
                        *made.entry(sub).or_default() += count;
                    }
                }
                out.dropped += dropped.max(0) as u64;
                if n < 1000 {
                    out.dead_lettered = made.into_iter().collect();
                    return Ok(out);
                }
            }
        })
    }

    fn latest<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async move {
            let last: Vec<Entry> = self
                .command(
                    redis::cmd("XREVRANGE")
                        .arg(format!("{}t:{topic}", self.prefix))
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1),
                )
                .await?;
            Ok(last
                .first()
                .and_then(|(id, _)| id.split('-').next()?.parse().ok())
                .unwrap_or(0))
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Event>>> {
        Box::pin(async move {
            let row: Option<GetRow> = self.run(&self.scripts.get, None, &[id.to_string()]).await?;
            row.map(|(seq, topic, key, headers, body, created_ms)| {
                Ok(Event {
                    seq,
                    id: id.to_owned(),
                    topic: text(topic)?,
                    key: key_of(key)?,
                    headers: headers_of(&headers)?,
                    body: Bytes::from(body),
                    created_ms,
                })
            })
            .transpose()
        })
    }

    fn record<'a>(&'a self, subscription: &'a str, attempt: Attempt) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let json =
                serde_json::to_vec(&attempt).map_err(|e| QueueError::Corrupt(e.to_string()))?;
            let key = format!("{}log:{subscription}", self.prefix);
            let mut c = self.conn().await?;
            redis::pipe()
                .atomic()
                .lpush(&key, json)
                .ignore()
                .ltrim(&key, 0, ATTEMPTS_KEPT as isize - 1)
                .ignore()
                .query_async::<()>(&mut c)
                .await
                .map_err(|e| unavailable(&e))
        })
    }

    fn attempts<'a>(
        &'a self,
        subscription: &'a str,
        event_id: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Attempt>>> {
        Box::pin(async move {
            // Newest first; one event's attempts may be anywhere in the capped list.
            let end = if event_id.is_some() {
                ATTEMPTS_KEPT
            } else {
                limit
            };
            let raw: Vec<Vec<u8>> = self
                .command(
                    redis::cmd("LRANGE")
                        .arg(format!("{}log:{subscription}", self.prefix))
                        .arg(0)
                        .arg(end as i64 - 1),
                )
                .await?;
            let since = now_ms() - ATTEMPT_RETENTION.as_millis() as i64;
            let mut out = Vec::new();
            for r in raw {
                let a: Attempt =
                    serde_json::from_slice(&r).map_err(|e| QueueError::Corrupt(e.to_string()))?;
                if a.at_ms >= since && event_id.is_none_or(|id| a.event_id == id) {
                    out.push(a);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    fn set_ordered<'a>(
        &'a self,
        subscription: &'a str,
        ordered: bool,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let key = format!("{}s:{subscription}", self.prefix);
            let cmd = if ordered {
                redis::cmd("HSET").arg(&key).arg("ordered").arg("1").clone()
            } else {
                redis::cmd("HDEL").arg(&key).arg("ordered").clone()
            };
            self.command::<i64>(&cmd).await.map(drop)
        })
    }

    fn set_disabled<'a>(
        &'a self,
        subscription: &'a str,
        reason: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let key = format!("{}s:{subscription}", self.prefix);
            let cmd = match reason {
                Some(r) => redis::cmd("HSET").arg(&key).arg("disabled").arg(r).clone(),
                None => redis::cmd("HDEL").arg(&key).arg("disabled").clone(),
            };
            self.command::<i64>(&cmd).await.map(drop)
        })
    }

    fn disabled<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            self.command(
                redis::cmd("HGET")
                    .arg(format!("{}s:{subscription}", self.prefix))
                    .arg("disabled"),
            )
            .await
        })
    }

    fn published(&self, max_wait: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Other nodes' publishes and retries that fall due are found by the timeout.
            let _ = tokio::time::timeout(max_wait, self.published.notified()).await;
        })
    }
}
