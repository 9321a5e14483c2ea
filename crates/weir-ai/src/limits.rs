//! `ai_limits`: requests and tokens per minute and a monthly USD budget, per consumer,
//! group or route. Before a call its cost is reserved (prompt estimate plus its output
//! cap) in every scope at once, atomically (a Lua script in Redis shared by every node, or
//! this node's memory); after it the reservation is settled to what the call really used,
//! off the request path. A call is refused when its reservation would pass the budget, so
//! the spend passes a budget by at most what one call used beyond its estimate.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use weir_config::AiLimitsConfig;
use weir_policy::RedisStore;

/// What refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Requests,
    Tokens,
    Budget,
    /// The counter store did not answer: budgets fail closed.
    StoreDown,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::Requests => "rate_limit_exceeded",
            Self::Tokens => "tokens_limit_exceeded",
            Self::Budget => "budget_exceeded",
            Self::StoreDown => "limit_store_unavailable",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::Requests => "requests per minute used up; retry after the time given",
            Self::Tokens => "tokens per minute used up; retry after the time given",
            Self::Budget => {
                "this month's budget is used up (ask for a larger budget, or wait for the next month)"
            }
            Self::StoreDown => "the limit store is unreachable; try again shortly",
        }
    }
}

/// Who a call counts against: the consumer, the key it used (if any) and its groups.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub consumer: &'a str,
    pub key: Option<&'a str>,
    pub groups: &'a [String],
}

/// A call let through: what it reserved where, to settle when it is done.
pub struct Admission {
    keys: Vec<[String; 3]>,
    reserved_micro: i64,
    limits: Arc<Limits>,
}

pub struct Limits {
    rpm: Option<u64>,
    tpm: Option<u64>,
    budget_micro: Option<i64>,
    per: String,
    pub default_max_tokens: u64,
    prefix: String,
    store: Store,
}

enum Store {
    Memory(Arc<Memory>),
    Redis(Arc<RedisStore>),
}

/// This node's counters (kept by the AI plane, so a reload keeps them).
#[derive(Default)]
pub struct Memory {
    counts: Mutex<HashMap<String, (i64, Instant)>>,
}

const STORE_TIMEOUT: Duration = Duration::from_millis(250);
/// Minute counters outlive their minute a little; the month's spend lasts 32 days.
const MINUTE_TTL: i64 = 120;
const MONTH_TTL: i64 = 32 * 86_400;

static ADMIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local n, rpm, tpm, budget, est = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 0, n - 1 do
  if rpm >= 0 and tonumber(redis.call('GET', KEYS[i*3+1]) or '0') >= rpm then return 1 end
  if tpm >= 0 and tonumber(redis.call('GET', KEYS[i*3+2]) or '0') >= tpm then return 2 end
  if budget >= 0 and tonumber(redis.call('GET', KEYS[i*3+3]) or '0') + est > budget then return 3 end
end
for i = 0, n - 1 do
  redis.call('INCR', KEYS[i*3+1]); redis.call('EXPIRE', KEYS[i*3+1], ARGV[6])
  redis.call('INCRBY', KEYS[i*3+3], est); redis.call('EXPIRE', KEYS[i*3+3], ARGV[7])
end
return 0
",
    )
});

static SETTLE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
for i = 0, tonumber(ARGV[1]) - 1 do
  redis.call('INCRBY', KEYS[i*2+1], ARGV[2]); redis.call('EXPIRE', KEYS[i*2+1], ARGV[4])
  redis.call('INCRBY', KEYS[i*2+2], ARGV[3]); redis.call('EXPIRE', KEYS[i*2+2], ARGV[5])
end
return 0
",
    )
});

fn micro(usd: f64) -> i64 {
    (usd * 1e6).round() as i64
}

impl Limits {
    pub fn compile(c: &AiLimitsConfig, route: &str, memory: &Arc<Memory>) -> Result<Self, String> {
        let url = c
            .store
            .resolve(&|n| std::env::var(n).ok())
            .map_err(|e| format!("ai_limits.store: {e}"))?;
        let store = if url == "memory" {
            Store::Memory(Arc::clone(memory))
        } else {
            Store::Redis(RedisStore::for_url(&url)?)
        };
        Ok(Self {
            rpm: c.requests_per_minute,
            tpm: c.tokens_per_minute,
            budget_micro: c.budget_usd_per_month.map(micro),
            per: c.per.clone(),
            default_max_tokens: c.default_max_tokens,
            prefix: format!("weir:ai:{route}"),
            store,
        })
    }

    /// The counters of each scope the call counts against: requests and tokens of this
    /// minute, spend of this month.
    fn keys(&self, who: Option<Who<'_>>) -> Vec<[String; 3]> {
        let now = crate::unix_now();
        let minute = now / 60;
        let month = month_of(now);
        let scopes: Vec<String> = match (self.per.as_str(), who) {
            ("route", _) => vec!["all".to_owned()],
            ("group", Some(w)) if !w.groups.is_empty() => {
                w.groups.iter().map(|g| format!("g:{g}")).collect()
            }
            (
                "key",
                Some(Who {
                    consumer,
                    key: Some(key),
                    ..
                }),
            ) => {
                vec![format!("k:{consumer}/{key}")]
            }
            (_, Some(w)) => vec![format!("c:{}", w.consumer)],
            (_, None) => vec!["anonymous".to_owned()],
        };
        scopes
            .into_iter()
            .map(|s| {
                let p = format!("{}:{{{s}}}", self.prefix);
                [
                    format!("{p}:rpm:{minute}"),
                    format!("{p}:tpm:{minute}"),
                    format!("{p}:usd:{month}"),
                ]
            })
            .collect()
    }

    /// Reserves `estimate_usd` for a call, or says what refuses it.
    pub async fn admit(
        self: &Arc<Self>,
        who: Option<Who<'_>>,
        estimate_usd: f64,
    ) -> Result<Admission, Refusal> {
        let keys = self.keys(who);
        let est = if self.budget_micro.is_some() {
            micro(estimate_usd).max(0)
        } else {
            0
        };
        let lim = |v: Option<u64>| v.map_or(-1, |n| n as i64);
        let (rpm, tpm, budget) = (
            lim(self.rpm),
            lim(self.tpm),
            self.budget_micro.unwrap_or(-1),
        );
        let verdict = match &self.store {
            Store::Memory(m) => {
                let now = Instant::now();
                let mut counts = m.counts.lock();
                counts.retain(|_, (_, until)| *until > now);
                let get = |k: &str| counts.get(k).map_or(0, |(v, _)| *v);
                let mut v = 0;
                for [r, t, u] in &keys {
                    if rpm >= 0 && get(r) >= rpm {
                        v = 1;
                    } else if tpm >= 0 && get(t) >= tpm {
                        v = 2;
                    } else if budget >= 0 && get(u) + est > budget {
                        v = 3;
                    }
                    if v != 0 {
                        break;
                    }
                }
                if v == 0 {
                    for [r, _, u] in &keys {
                        bump(&mut counts, r, 1, now, MINUTE_TTL);
                        bump(&mut counts, u, est, now, MONTH_TTL);
                    }
                }
                Ok(v)
            }
            Store::Redis(s) => {
                let flat: Vec<String> = keys.iter().flatten().cloned().collect();
                s.invoke::<i64>(
                    &ADMIT,
                    &flat,
                    &[
                        keys.len() as i64,
                        rpm,
                        tpm,
                        budget,
                        est,
                        MINUTE_TTL,
                        MONTH_TTL,
                    ],
                    STORE_TIMEOUT,
                    "ai limits",
                )
                .await
            }
        };
        match verdict {
            Ok(0) => Ok(Admission {
                keys,
                reserved_micro: est,
                limits: Arc::clone(self),
            }),
            Ok(1) => Err(Refusal::Requests),
            Ok(2) => Err(Refusal::Tokens),
            Ok(_) => Err(Refusal::Budget),
            Err(e) => {
                tracing::warn!(error = %e, "AI limit store failed; the call is refused (budgets fail closed)");
                Err(Refusal::StoreDown)
            }
        }
    }

    /// Seconds until the limit that refused frees up.
    pub fn retry_after(r: Refusal) -> u64 {
        match r {
            Refusal::Requests | Refusal::Tokens => 60 - crate::unix_now() % 60,
            Refusal::StoreDown => 1,
            Refusal::Budget => 3600,
        }
    }
}

fn bump(counts: &mut HashMap<String, (i64, Instant)>, k: &str, by: i64, now: Instant, ttl: i64) {
    let until = now + Duration::from_secs(ttl as u64);
    let e = counts.entry(k.to_owned()).or_insert((0, until));
    e.0 += by;
    e.1 = until;
}

impl Admission {
    /// The call used `tokens` costing `cost_usd`: counts the tokens and trades the
    /// reservation for the real spend, without making the caller wait.
    pub fn settle(self, tokens: u64, cost_usd: f64) {
        let delta = micro(cost_usd) - self.reserved_micro;
        let tokens = tokens as i64;
        match &self.limits.store {
            Store::Memory(m) => {
                let now = Instant::now();
                let mut counts = m.counts.lock();
                for [_, t, u] in &self.keys {
                    bump(&mut counts, t, tokens, now, MINUTE_TTL);
                    bump(&mut counts, u, delta, now, MONTH_TTL);
                }
            }
            Store::Redis(s) => {
                let s = Arc::clone(s);
                let keys: Vec<String> = self
                    .keys
                    .iter()
                    .flat_map(|[_, t, u]| [t.clone(), u.clone()])
                    .collect();
                let n = self.keys.len() as i64;
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                rt.spawn(async move {
                    let args = [n, tokens, delta, MINUTE_TTL, MONTH_TTL];
                    if let Err(e) = s.invoke::<i64>(&SETTLE, &keys, &args, Duration::from_secs(2), "ai limits").await {
                        tracing::warn!(error = %e, "AI usage could not be counted against the limits");
                    }
                });
            }
        }
    }
}

/// `YYYYMM` (UTC) of a Unix time.
fn month_of(unix: u64) -> u32 {
    // Civil-from-days (Howard Hinnant's algorithm), for the year and month only.
    let days = (unix / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year * 100 + month) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months() {
        assert_eq!(month_of(0), 197001);
        assert_eq!(month_of(1_795_701_884), 202611); // 2026-11-26
        assert_eq!(month_of(1_798_761_599), 202612); // 2026-12-31 23:59:59
        assert_eq!(month_of(1_798_761_600), 202701);
        assert_eq!(month_of(951_782_400), 200002); // 2000-02-29
    }

    fn limits(c: &str) -> Arc<Limits> {
        let c: AiLimitsConfig = serde_json::from_str(c).unwrap();
        Arc::new(Limits::compile(&c, "r", &Arc::new(Memory::default())).unwrap())
    }

    #[tokio::test]
    async fn budgets_reserve_then_settle_and_minute_limits_count() {
        let l = limits(r#"{"budget_usd_per_month": 1.0, "requests_per_minute": 3}"#);
        let me = Some(Who {
            consumer: "acme",
            key: None,
            groups: &[],
        });
        let a = l.admit(me, 0.6).await.unwrap();
        // The reservation holds the budget while the call runs.
        assert_eq!(l.admit(me, 0.6).await.err(), Some(Refusal::Budget));
        a.settle(100, 0.1);
        let b = l.admit(me, 0.6).await.unwrap();
        b.settle(100, 0.5);
        // 0.6 spent: 0.5 more would pass the budget, 0.4 does not.
        assert_eq!(l.admit(me, 0.5).await.err(), Some(Refusal::Budget));
        l.admit(me, 0.4).await.unwrap().settle(10, 0.4);
        assert_eq!(
            l.admit(me, 0.0).await.err(),
            Some(Refusal::Requests),
            "three requests this minute"
        );
        let other = l
            .admit(
                Some(Who {
                    consumer: "beta",
                    key: None,
                    groups: &[],
                }),
                0.5,
            )
            .await;
        assert!(other.is_ok(), "another consumer has its own counters");
    }

    #[tokio::test]
    async fn per_key_limits_count_each_key_and_keyless_callers_per_consumer() {
        let l = limits(r#"{"requests_per_minute": 1, "per": "key"}"#);
        let with = |key| {
            Some(Who {
                consumer: "acme",
                key,
                groups: &[],
            })
        };
        l.admit(with(Some("ci")), 0.0).await.unwrap().settle(0, 0.0);
        assert_eq!(
            l.admit(with(Some("ci")), 0.0).await.err(),
            Some(Refusal::Requests)
        );
        // Another key of the same consumer, and the consumer without a key (JWT), each
        // have their own minute.
        assert!(l.admit(with(Some("laptop")), 0.0).await.is_ok());
        assert!(l.admit(with(None), 0.0).await.is_ok());
        assert_eq!(
            l.admit(with(None), 0.0).await.err(),
            Some(Refusal::Requests)
        );
    }
}
