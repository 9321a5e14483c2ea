//! The Redis store behind cluster-wide rate limits and shared caches: one GCRA step per
//! request as one atomic script (one round trip), plain commands for the cache, over one
//! multiplexed connection per worker thread so requests never hop between threads.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use rustc_hash::FxHashMap;

/// GCRA against the server's clock, so every node agrees on "now". Stores the theoretical
/// arrival time (µs) with an expiry once it has fully recovered. Returns `{admitted, µs}`:
/// when admitted, how far the arrival time runs ahead of now; when not, how far the
/// current one does.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local nxt = tat + interval
if nxt - now <= tolerance then
  redis.call('SET', KEYS[1], nxt, 'PX', math.ceil((nxt - now) / 1000) + 1)
  return {1, nxt - now}
end
return {0, tat - now}
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA));

/// After a failed connect, requests skip Redis (and apply `on_store_error`) this long.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// Why the store gave no answer.
#[derive(Debug)]
pub enum StoreError {
    /// A recent connect failed; not retried yet.
    Down,
    Timeout,
    Redis(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Down => f.write_str("unreachable (waiting to reconnect)"),
            Self::Timeout => f.write_str("timed out"),
            Self::Redis(e) => f.write_str(e),
        }
    }
}

/// A Redis server, shared by every policy that names the same URL (and across reloads).
pub struct RedisStore {
    id: u64,
    client: redis::Client,
    /// `host:port`, for logs: never the URL, which may hold a password.
    pub display: String,
    /// Whether the last call failed: logs only state changes, not every request.
    failing: AtomicBool,
}

static STORES: Mutex<Vec<(String, Weak<RedisStore>)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Clone)]
enum Slot {
    Ready(MultiplexedConnection),
    Down(Instant),
}

thread_local! {
    /// This worker thread's connection to each store, by store id.
    static CONNS: RefCell<FxHashMap<u64, Slot>> = RefCell::new(FxHashMap::default());
}

impl RedisStore {
    /// The store for `url`, reusing a live one. Fails on a URL Redis cannot use.
    pub fn for_url(url: &str) -> Result<Arc<Self>, String> {
        let mut stores = STORES.lock();
        stores.retain(|(_, w)| w.strong_count() > 0);
        if let Some(s) = stores
            .iter()
            .find(|(u, _)| u == url)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(s);
        }
        let client = redis::Client::open(url).map_err(|e| format!("{e}"))?;
        let display = match &client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(h, p)
            | redis::ConnectionAddr::TcpTls {
                host: h, port: p, ..
            } => {
                format!("{h}:{p}")
            }
            redis::ConnectionAddr::Unix(p) => p.display().to_string(),
            _ => "redis".to_owned(),
        };
        let store = Arc::new(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            client,
            display,
            failing: AtomicBool::new(false),
        });
        stores.push((url.to_owned(), Arc::downgrade(&store)));
        Ok(store)
    }

    /// This thread's connection, connecting when there is none (within `timeout`).
    async fn conn(&self, timeout: Duration) -> Result<MultiplexedConnection, StoreError> {
        let slot = CONNS.with(|c| c.borrow().get(&self.id).cloned());
        match slot {
            Some(Slot::Ready(c)) => return Ok(c),
            Some(Slot::Down(until)) if Instant::now() < until => return Err(StoreError::Down),
            _ => {}
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let made = tokio::time::timeout(
            timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        let result = match made {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(StoreError::Redis(e.to_string())),
            Err(_) => Err(StoreError::Timeout),
        };
        CONNS.with(|c| {
            let mut map = c.borrow_mut();
            match &result {
                Ok(conn) => {
                    // Another request on this thread may have connected meanwhile: keep one.
                    if let Some(Slot::Ready(existing)) = map.get(&self.id) {
                        return Ok(existing.clone());
                    }
                    map.insert(self.id, Slot::Ready(conn.clone()));
                }
                Err(_) => {
                    map.insert(self.id, Slot::Down(Instant::now() + RECONNECT_AFTER));
                }
            }
            result
        })
    }

    /// Forgets this thread's connection after a transport failure; the next request
    /// reconnects.
    fn drop_conn(&self) {
        CONNS.with(|c| {
            c.borrow_mut()
                .insert(self.id, Slot::Down(Instant::now() + RECONNECT_AFTER / 5));
        });
    }

    /// One GCRA step for `key`. `Ok((admitted, µs))` as the script returns it.
    pub async fn gcra(
        &self,
        key: &str,
        interval_us: u64,
        tolerance_us: u64,
        timeout: Duration,
    ) -> Result<(bool, u64), StoreError> {
        let out = async {
            let mut conn = self.conn(timeout).await?;
            let mut call = SCRIPT.key(key);
            call.arg(interval_us).arg(tolerance_us);
            let answer =
                tokio::time::timeout(timeout, call.invoke_async::<(i64, i64)>(&mut conn)).await;
            self.settle(answer)
        }
        .await
        .map(|(admitted, us)| (admitted == 1, us.max(0) as u64));
        self.note(&out, "rate-limit");
        out
    }

    /// Runs a Lua script on this thread's connection.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[i64],
        timeout: Duration,
        what: &'static str,
    ) -> Result<T, StoreError> {
        let out = async {
            let mut conn = self.conn(timeout).await?;
            let mut call = script.prepare_invoke();
            for k in keys {
                call.key(k);
            }
            for a in args {
                call.arg(*a);
            }
            let answer = tokio::time::timeout(timeout, call.invoke_async::<T>(&mut conn)).await;
            self.settle(answer)
        }
        .await;
        self.note(&out, what);
        out
    }

    /// Runs one command on this thread's connection.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        timeout: Duration,
        what: &'static str,
    ) -> Result<T, StoreError> {
        let out = async {
            let mut conn = self.conn(timeout).await?;
            let answer = tokio::time::timeout(timeout, cmd.query_async::<T>(&mut conn)).await;
            self.settle(answer)
        }
        .await;
        self.note(&out, what);
        out
    }

    fn settle<T>(
        &self,
        answer: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        match answer {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.drop_conn();
                }
                Err(StoreError::Redis(e.to_string()))
            }
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// Logs the store going bad and coming back, once each.
    fn note<T>(&self, out: &Result<T, StoreError>, what: &'static str) {
        match out {
            Ok(_) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(store = %self.display, "Redis store reachable again");
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(store = %self.display, error = %e, "Redis store failing ({what}); rate limits apply their on_store_error and caches pass requests to the upstream until it is back");
                }
            }
        }
    }
}
