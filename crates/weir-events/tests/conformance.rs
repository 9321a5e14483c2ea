//! The conformance suite every queue backend passes against a real server (or file): publish
//! order and idempotency, independent cursors, leases and redelivery, retries, dead
//! letters, replay, depth, durability across a reopen, concurrent publishes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use weir_events::{
    Attempt, Declaration, Embedded, NatsJetStream, NewEvent, Queue, RabbitMq, RedisStreams,
    StartAt, new_event_id, now_ms,
};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "weir-events-{tag}-{}-{}",
        std::process::id(),
        now_ms()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn event(topic: &str, body: &str) -> NewEvent {
    NewEvent {
        id: new_event_id(),
        topic: topic.to_owned(),
        key: None,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Bytes::from(body.to_owned()),
    }
}

const LEASE: Duration = Duration::from_secs(30);

/// Leases until something comes (or two seconds pass): brokers hand redeliveries back
/// asynchronously.
async fn lease_soon(q: &dyn Queue, sub: &str, max: usize) -> Vec<weir_events::Leased> {
    for _ in 0..100 {
        let got = q.lease(sub, max, LEASE).await.unwrap();
        if !got.is_empty() {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Vec::new()
}

/// Leases and acknowledges until nothing comes for a while; the bodies, sorted.
async fn drain(q: &dyn Queue, sub: &str) -> Vec<String> {
    let mut got = Vec::new();
    let mut idle = 0;
    while idle < 15 {
        let leased = q.lease(sub, 10, LEASE).await.unwrap();
        if leased.is_empty() {
            idle += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        idle = 0;
        for l in leased {
            got.push(String::from_utf8_lossy(&l.event.body).into_owned());
            q.ack(sub, l.event.seq).await.unwrap();
        }
    }
    got.sort();
    got
}

/// The suite; `t` makes topic and subscription names unique to this run.
async fn conformance(q: &dyn Queue, t: &str) {
    let orders = format!("orders-{t}");
    let other = format!("other-{t}");
    let early = q.publish(vec![event(&orders, "{\"n\":0}")]).await.unwrap();
    let (billing, audit, late) = (
        format!("billing-{t}"),
        format!("audit-{t}"),
        format!("late-{t}"),
    );
    q.subscribe(&billing, &orders, StartAt::Beginning)
        .await
        .unwrap();
    q.subscribe(&audit, &orders, StartAt::Beginning)
        .await
        .unwrap();
    q.subscribe(&late, &orders, StartAt::Now).await.unwrap();

    // Publish: in order, and idempotent by id.
    let batch: Vec<NewEvent> = (1..=3)
        .map(|n| event(&orders, &format!("{{\"n\":{n}}}")))
        .collect();
    let again = batch[1].clone();
    let seqs = q.publish(batch.clone()).await.unwrap();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]) && seqs[0] > early[0],
        "{seqs:?}"
    );
    assert_eq!(
        q.publish(vec![again]).await.unwrap(),
        vec![seqs[1]],
        "same id, same event"
    );
    q.publish(vec![event(&other, "not for orders")])
        .await
        .unwrap();

    // Each subscription has its own cursor; `late` starts after the first event.
    let b = q.lease(&billing, 10, LEASE).await.unwrap();
    assert_eq!(b.len(), 4, "billing sees every orders event, none of other");
    assert_eq!(b[0].event.body, "{\"n\":0}");
    assert!(b.iter().all(|l| l.attempt == 1 && l.event.topic == orders));
    assert_eq!(b[1].event.id, batch[0].id);
    assert_eq!(b[1].event.headers, batch[0].headers);
    let l = q.lease(&late, 10, LEASE).await.unwrap();
    assert_eq!(
        l.len(),
        3,
        "a subscription made 'now' skips what came before"
    );
    // Leased events are not leased again while the lease holds.
    assert!(q.lease(&billing, 10, LEASE).await.unwrap().is_empty());

    // Ack one, retry one later, dead-letter one, leave one leased (a crashed worker).
    q.ack(&billing, b[0].event.seq).await.unwrap();
    q.retry_at(&billing, b[1].event.seq, now_ms() + 60_000)
        .await
        .unwrap();
    q.dead(&billing, b[2].event.seq, "410 Gone").await.unwrap();
    let depth = q.depth(&billing).await.unwrap();
    assert_eq!((depth.pending, depth.dead), (2, 1), "{depth:?}");
    assert!(depth.oldest_ms.is_some());
    // Audit is untouched by all of that.
    let a = q.lease(&audit, 2, LEASE).await.unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(q.depth(&audit).await.unwrap().pending, 4);

    // A retry due now is leased again, with its attempt counted.
    q.retry_at(&billing, b[1].event.seq, now_ms() - 1)
        .await
        .unwrap();
    let r = lease_soon(q, &billing, 10).await;
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].event.seq, r[0].attempt), (b[1].event.seq, 2));
    q.ack(&billing, r[0].event.seq).await.unwrap();

    // An expired lease (the worker died) is redelivered, same event id.
    let short = q.lease(&audit, 10, Duration::from_millis(1)).await.unwrap();
    assert_eq!(short.len(), 2, "the rest of audit's events");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut redo = lease_soon(q, &audit, 10).await;
    if redo.len() < 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        redo.extend(q.lease(&audit, 10, LEASE).await.unwrap());
    }
    assert_eq!(redo.len(), 2);
    assert!(redo.iter().all(|l| l.attempt == 2));
    assert_eq!(redo[0].event.id, short[0].event.id);

    // Dead letters: listed, replayed one at a time or all.
    let dead = q.dead_letters(&billing, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].id.as_str(), dead[0].reason.as_str()),
        (b[2].event.id.as_str(), "410 Gone")
    );
    assert_eq!(q.replay_dead(&billing, Some(dead[0].seq)).await.unwrap(), 1);
    let replayed = lease_soon(q, &billing, 10).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].event.id, b[2].event.id);
    q.ack(&billing, replayed[0].event.seq).await.unwrap();
    // b[3] is still leased to billing (30 s): replay-since does not take it twice.
    let n = q.replay_since(&billing, 0).await.unwrap();
    assert_eq!(
        n, 3,
        "every delivered orders event except the one still leased"
    );
    let mut again = lease_soon(q, &billing, 10).await;
    for _ in 0..50 {
        if again.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        again.extend(q.lease(&billing, 10, LEASE).await.unwrap());
    }
    assert_eq!(again.len(), 3);

    assert!(q.lease(&format!("nobody-{t}"), 1, LEASE).await.is_err());

    // Reading a topic from a position, as streams to clients do.
    let all = q.read(&orders, 0, 100).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].seq, early[0]);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let rest = q.read(&orders, all[1].seq, 100).await.unwrap();
    assert_eq!(rest, all[2..].to_vec());
    assert_eq!(q.read(&orders, all[0].seq, 1).await.unwrap(), all[1..2]);
    assert_eq!(q.latest(&orders).await.unwrap(), all[3].seq);
    assert!(q.read(&orders, all[3].seq, 10).await.unwrap().is_empty());
    assert_eq!(q.latest(&format!("empty-{t}")).await.unwrap(), 0);

    // Attempt records: newest first, of one event or of all.
    let attempt = |n: u32, id: &str, outcome: &str| Attempt {
        seq: i64::from(n),
        event_id: id.to_owned(),
        attempt: n,
        at_ms: now_ms() + i64::from(n),
        status: (outcome != "error").then_some(503),
        latency_ms: 12,
        outcome: outcome.to_owned(),
        answer: "busy".to_owned(),
    };
    q.record(&billing, attempt(1, "ev-a", "retry"))
        .await
        .unwrap();
    q.record(&billing, attempt(2, "ev-b", "error"))
        .await
        .unwrap();
    q.record(&billing, attempt(3, "ev-a", "delivered"))
        .await
        .unwrap();
    let mut all = Vec::new();
    for _ in 0..100 {
        all = q.attempts(&billing, None, 10).await.unwrap();
        if all.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let order: Vec<u32> = all.iter().map(|a| a.attempt).collect();
    assert_eq!(order, [3, 2, 1], "newest first");
    assert_eq!(all[1].status, None);
    assert_eq!(all[0], attempt_like(&all[0], 3, "ev-a", "delivered"));
    let one = q.attempts(&billing, Some("ev-a"), 10).await.unwrap();
    assert_eq!(one.len(), 2);
    assert_eq!(q.attempts(&billing, None, 1).await.unwrap().len(), 1);
    assert!(q.attempts(&audit, None, 10).await.unwrap().is_empty());

    // Disabled (410 Gone) is kept, and cleared.
    assert_eq!(q.disabled(&billing).await.unwrap(), None);
    q.set_disabled(&billing, Some("410 Gone")).await.unwrap();
    assert_eq!(
        q.disabled(&billing).await.unwrap().as_deref(),
        Some("410 Gone")
    );
    assert_eq!(q.disabled(&audit).await.unwrap(), None);
    q.set_disabled(&billing, None).await.unwrap();
    assert_eq!(q.disabled(&billing).await.unwrap(), None);
}

/// Per-key ordering: one open delivery per key, in publish order; other keys (and events
/// without a key) flow past a failing head.
async fn ordering(q: &dyn Queue, t: &str) {
    let (topic, sub) = (format!("keyed-{t}"), format!("fifo-{t}"));
    q.subscribe(&sub, &topic, StartAt::Beginning).await.unwrap();
    q.set_ordered(&sub, true).await.unwrap();
    let keyed = |key: Option<&str>, body: &str| NewEvent {
        key: key.map(str::to_owned),
        ..event(&topic, body)
    };
    let seqs = q
        .publish(vec![
            keyed(Some("a"), "a1"),
            keyed(Some("b"), "b1"),
            keyed(Some("a"), "a2"),
            keyed(None, "n1"),
            keyed(Some("a"), "a3"),
        ])
        .await
        .unwrap();
    let bodies = |l: &[weir_events::Leased]| -> Vec<String> {
        l.iter()
            .map(|l| String::from_utf8_lossy(&l.event.body).into_owned())
            .collect()
    };
    let first = q.lease(&sub, 10, LEASE).await.unwrap();
    assert_eq!(
        bodies(&first),
        ["a1", "b1", "n1"],
        "a2 and a3 wait behind a1"
    );
    assert!(q.lease(&sub, 10, LEASE).await.unwrap().is_empty());
    // A failing head keeps its key blocked, and comes back first.
    q.retry_at(&sub, seqs[0], now_ms() - 1).await.unwrap();
    let again = lease_soon(q, &sub, 10).await;
    assert_eq!(bodies(&again), ["a1"]);
    assert_eq!(again[0].attempt, 2);
    q.ack(&sub, seqs[0]).await.unwrap();
    let next = q.lease(&sub, 10, LEASE).await.unwrap();
    assert_eq!(bodies(&next), ["a2"], "delivered head: the next of its key");
    assert_eq!(next[0].attempt, 1);
    q.dead(&sub, seqs[2], "gave up").await.unwrap();
    let last = q.lease(&sub, 10, LEASE).await.unwrap();
    assert_eq!(bodies(&last), ["a3"], "a dead head unblocks its key");
    for s in [seqs[1], seqs[3], seqs[4]] {
        q.ack(&sub, s).await.unwrap();
    }
    let d = q.depth(&sub).await.unwrap();
    assert_eq!((d.pending, d.dead), (0, 1), "{d:?}");
}

/// Retention: events older than the cut go, but what a subscription still owed of them
/// (leased, or not yet read) becomes its dead letter instead, kept until replayed; events
/// every subscription had are dropped.
async fn retention(q: &dyn Queue, t: &str) {
    let (topic, sub) = (format!("kept-{t}"), format!("keeper-{t}"));
    q.subscribe(&sub, &topic, StartAt::Beginning).await.unwrap();
    let old = q
        .publish((0..3).map(|n| event(&topic, &format!("old {n}"))).collect())
        .await
        .unwrap();
    // One more that the subscription gets before the cut.
    let done = q.publish(vec![event(&topic, "done")]).await.unwrap();
    let first = q.lease(&sub, 1, Duration::from_millis(1)).await.unwrap();
    assert_eq!(first[0].event.seq, old[0]);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cut = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let new = q
        .publish((0..2).map(|n| event(&topic, &format!("new {n}"))).collect())
        .await
        .unwrap();
    // "done" is delivered now; the old three are still owed at the cut.
    let _ = done;
    let trimmed = q.trim(&topic, cut).await.unwrap();
    assert_eq!(trimmed.dead_lettered, vec![(sub.clone(), 4)], "{t}");
    assert_eq!(trimmed.dropped, 0, "{t}: owed events stay as dead letters");
    let dead = q.dead_letters(&sub, 10).await.unwrap();
    assert_eq!(dead.len(), 4, "{t}");
    assert!(
        dead.iter().all(|d| d.reason == weir_events::RETAINED_PAST),
        "{t}"
    );
    assert!(q.get(&first[0].event.id).await.unwrap().is_some(), "{t}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut leased: Vec<i64> = Vec::new();
    for l in q.lease(&sub, 10, LEASE).await.unwrap() {
        leased.push(l.event.seq);
        q.ack(&sub, l.event.seq).await.unwrap();
    }
    assert_eq!(leased, new, "{t}: the new ones are delivered as usual");
    // Replayed, the dead letters are delivered after all; once done, retention drops them.
    assert_eq!(q.replay_dead(&sub, None).await.unwrap(), 4, "{t}");
    let mut again = Vec::new();
    for l in lease_soon(q, &sub, 10).await {
        again.push(l.event.seq);
        q.ack(&sub, l.event.seq).await.unwrap();
    }
    again.sort();
    let mut want = old.clone();
    want.extend(&done);
    assert_eq!(again, want, "{t}");
    let trimmed = q.trim(&topic, cut).await.unwrap();
    assert_eq!(
        (trimmed.dropped, trimmed.dead_lettered.len()),
        (4, 0),
        "{t}"
    );
    assert!(q.get(&first[0].event.id).await.unwrap().is_none(), "{t}");
}

/// `a` with the fields the test set checked.
fn attempt_like(a: &Attempt, n: u32, id: &str, outcome: &str) -> Attempt {
    assert_eq!(
        (a.attempt, a.event_id.as_str(), a.outcome.as_str()),
        (n, id, outcome)
    );
    assert_eq!((a.latency_ms, a.answer.as_str()), (12, "busy"));
    a.clone()
}

/// Two declarations that disagree (nodes during a rolling edit): the newer holds whatever
/// order they come in, and the older is told which topic is in force.
async fn generations(q: &dyn Queue, t: &str) {
    let (a, b, sub) = (format!("ga-{t}"), format!("gb-{t}"), format!("gen-{t}"));
    let declare = async |topic: &str, generation: i64| {
        let d = Declaration {
            name: &sub,
            topic,
            start: StartAt::Now,
            generation,
        };
        q.declare(&d).await.unwrap()
    };
    assert_eq!(declare(&a, 100).await, None, "{t}");
    assert_eq!(declare(&b, 50).await.as_deref(), Some(a.as_str()), "{t}");
    assert_eq!(declare(&a, 100).await, None, "{t}");
    q.publish(vec![event(&a, "a1"), event(&b, "b1")])
        .await
        .unwrap();
    assert_eq!(declare(&b, 200).await, None, "{t}: the newer moves it");
    assert_eq!(declare(&a, 150).await.as_deref(), Some(b.as_str()), "{t}");
    q.publish(vec![event(&a, "a2"), event(&b, "b2")])
        .await
        .unwrap();
    let got = drain(q, &sub).await;
    assert_eq!(got, ["a1", "b2"], "{t}");
}

/// A subscription new to the queue that starts at a time gets what the topic holds from
/// then on, and nothing before.
async fn starting(q: &dyn Queue, t: &str) {
    let (topic, sub) = (format!("hist-{t}"), format!("since-{t}"));
    q.publish(vec![event(&topic, "old")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let at = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    q.publish(vec![event(&topic, "new1"), event(&topic, "new2")])
        .await
        .unwrap();
    q.subscribe(&sub, &topic, StartAt::Since(at)).await.unwrap();
    let mut got = Vec::new();
    for l in lease_soon(q, &sub, 10).await {
        got.push(String::from_utf8_lossy(&l.event.body).into_owned());
        q.ack(&sub, l.event.seq).await.unwrap();
    }
    got.sort();
    assert_eq!(got, ["new1", "new2"], "{t}");
}

/// A subscription moved to another topic: what it had leased and what it still owed of
/// the old topic is delivered, the old topic's later events are not, the new topic's are
/// from the move on; nothing twice.
async fn moving(q: &dyn Queue, t: &str) {
    let (from, to, sub) = (format!("from-{t}"), format!("to-{t}"), format!("mover-{t}"));
    q.publish(vec![event(&to, "before")]).await.unwrap();
    q.subscribe(&sub, &from, StartAt::Now).await.unwrap();
    q.publish(vec![event(&from, "a1"), event(&from, "a2")])
        .await
        .unwrap();
    let first = lease_soon(q, &sub, 1).await;
    assert_eq!(first.len(), 1);
    q.subscribe(&sub, &to, StartAt::Now).await.unwrap();
    q.subscribe(&sub, &to, StartAt::Now).await.unwrap();
    q.publish(vec![event(&from, "a3"), event(&to, "b1")])
        .await
        .unwrap();
    q.ack(&sub, first[0].event.seq).await.unwrap();
    let mut got = drain(q, &sub).await;
    got.push(String::from_utf8_lossy(&first[0].event.body).into_owned());
    got.sort();
    assert_eq!(got, ["a1", "a2", "b1"], "{t}");
}

#[tokio::test]
async fn the_embedded_queue_conforms() {
    let dir = temp_dir("conf");
    let q = Embedded::open(&dir).await.unwrap();
    conformance(&q, "embedded").await;
    ordering(&q, "embedded").await;
    moving(&q, "embedded").await;
    starting(&q, "embedded").await;
    generations(&q, "embedded").await;
    retention(&q, "embedded").await;
    q.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_embedded_queue_keeps_everything_across_a_reopen() {
    let dir = temp_dir("reopen");
    let q = Embedded::open(&dir).await.unwrap();
    q.subscribe("s", "t", StartAt::Beginning).await.unwrap();
    let seqs = q
        .publish((0..5).map(|n| event("t", &n.to_string())).collect())
        .await
        .unwrap();
    let leased = q.lease("s", 2, Duration::from_millis(1)).await.unwrap();
    q.ack("s", leased[0].event.seq).await.unwrap();
    q.close().await;
    drop(q);

    // As after a crash: the acknowledged one is done, the leased one comes back when its
    // lease runs out, the rest are still new.
    let q = Embedded::open(&dir).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = q.lease("s", 10, LEASE).await.unwrap();
    let got: Vec<i64> = again.iter().map(|l| l.event.seq).collect();
    assert_eq!(got, seqs[1..].to_vec());
    assert_eq!(again[0].attempt, 2, "redelivered after the crash");
    q.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// New events are leased in memory and only the cursor is stored (ADR 0010): what was
/// acknowledged before a clean stop is never delivered again, a declaration while events
/// are in flight (a worker restarted by a change) neither loses nor repeats them, and the
/// depth counts what is in flight.
#[tokio::test]
async fn the_embedded_queue_stores_the_cursor_of_leases_held_in_memory() {
    let dir = temp_dir("memory");
    let q = Embedded::open(&dir).await.unwrap();
    q.subscribe("s", "t", StartAt::Beginning).await.unwrap();
    let seqs = q
        .publish((0..6).map(|n| event("t", &n.to_string())).collect())
        .await
        .unwrap();
    let first = q.lease("s", 4, LEASE).await.unwrap();
    assert_eq!(first.len(), 4);
    // Finished out of order: the cursor waits for the first.
    for l in &first[1..3] {
        q.ack("s", l.event.seq).await.unwrap();
    }
    assert_eq!(q.depth("s").await.unwrap().pending, 4, "two open, two new");
    // A new declaration of the same subscription (its worker restarted) while two are out.
    q.subscribe("s", "t", StartAt::Now).await.unwrap();
    let rest = q.lease("s", 10, LEASE).await.unwrap();
    let got: Vec<i64> = rest.iter().map(|l| l.event.seq).collect();
    assert_eq!(got, seqs[4..].to_vec(), "what is out is not leased twice");
    for l in first.iter().take(1).chain(&first[3..]).chain(&rest) {
        q.ack("s", l.event.seq).await.unwrap();
    }
    assert_eq!(q.depth("s").await.unwrap().pending, 0);
    let more = q
        .publish((6..9).map(|n| event("t", &n.to_string())).collect())
        .await
        .unwrap();
    for l in q.lease("s", 10, LEASE).await.unwrap() {
        q.ack("s", l.event.seq).await.unwrap();
    }
    q.close().await;
    drop(q);
    let q = Embedded::open(&dir).await.unwrap();
    assert!(
        q.lease("s", 10, LEASE).await.unwrap().is_empty(),
        "nothing acknowledged comes again after a clean stop"
    );
    let last = q.publish(vec![event("t", "9")]).await.unwrap();
    let l = q.lease("s", 10, LEASE).await.unwrap();
    assert_eq!((l.len(), l[0].event.seq, l[0].attempt), (1, last[0], 1));
    assert!(last[0] > more[2]);
    q.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A Redis Streams queue under a key prefix of its own (tests never share data).
async fn redis_queue(tag: &str) -> RedisStreams {
    let prefix = format!("weir-test:{{{tag}-{}-{}}}:", std::process::id(), now_ms());
    RedisStreams::open("redis://127.0.0.1:6379", &prefix)
        .await
        .expect("Redis on 127.0.0.1:6379 (scripts/services.sh starts it)")
}

/// A NATS JetStream queue with streams and subjects of its own.
async fn nats_queue(tag: &str) -> NatsJetStream {
    let prefix = format!("wt{tag}{}x{}", std::process::id(), now_ms());
    NatsJetStream::open("nats://127.0.0.1:4222", &prefix, Duration::from_secs(3600))
        .await
        .expect("NATS with JetStream on 127.0.0.1:4222 (scripts/services.sh starts it)")
}

#[tokio::test]
async fn the_nats_jetstream_queue_conforms() {
    let q = nats_queue("conf").await;
    conformance(&q, "nats").await;
    ordering(&q, "nats").await;
    moving(&q, "nats").await;
    starting(&q, "nats").await;
    generations(&q, "nats").await;
    retention(&q, "nats").await;
    q.delete_streams().await.unwrap();
}

/// The broker does not drop an event at the topic's retention by itself (its own limit is
/// a backstop well past it): Weir's trim makes what a subscription owed a dead letter
/// first. Also brings a stream made with the old, shorter limit up to the backstop.
#[tokio::test]
async fn nats_keeps_events_past_retention_until_weir_trims_them() {
    let prefix = format!("wtret{}x{}", std::process::id(), now_ms());
    let url = "nats://127.0.0.1:4222";
    drop(
        NatsJetStream::open(url, &prefix, Duration::from_millis(500))
            .await
            .unwrap(),
    );
    let q = NatsJetStream::open(url, &prefix, Duration::from_secs(1))
        .await
        .unwrap();
    q.subscribe("short-sub", "short", StartAt::Now)
        .await
        .unwrap();
    q.publish(vec![event("short", "x")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        q.read("short", 0, 10).await.unwrap().len(),
        1,
        "the broker dropped an owed event at the retention"
    );
    let trimmed = q.trim("short", now_ms() - 1000).await.unwrap();
    assert_eq!(trimmed.dead_lettered, vec![("short-sub".to_owned(), 1)]);
    assert!(q.lease("short-sub", 10, LEASE).await.unwrap().is_empty());
    assert_eq!(q.dead_letters("short-sub", 10).await.unwrap().len(), 1);
    q.delete_streams().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_to_nats_are_kept_without_loss() {
    let q = Arc::new(nats_queue("group").await);
    concurrent(Arc::clone(&q) as Arc<dyn Queue>).await;
    q.delete_streams().await.unwrap();
}

/// A RabbitMQ queue with exchanges, queues and streams of its own.
async fn rabbit_queue(tag: &str) -> RabbitMq {
    let prefix = format!("wt{tag}{}x{}", std::process::id(), now_ms());
    RabbitMq::open(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        &prefix,
        Duration::from_secs(3600),
    )
    .await
    .expect("RabbitMQ on 127.0.0.1:5672 (scripts/services.sh starts it)")
}

#[tokio::test]
async fn the_rabbitmq_queue_conforms() {
    let q = rabbit_queue("conf").await;
    conformance(&q, "rabbit").await;
    ordering(&q, "rabbit").await;
    moving(&q, "rabbit").await;
    starting(&q, "rabbit").await;
    generations(&q, "rabbit").await;
    let subs = [
        "billing-rabbit",
        "audit-rabbit",
        "late-rabbit",
        "fifo-rabbit",
        "mover-rabbit",
        "since-rabbit",
        "gen-rabbit",
    ];
    let topics = [
        "orders-rabbit",
        "other-rabbit",
        "keyed-rabbit",
        "from-rabbit",
        "to-rabbit",
        "hist-rabbit",
        "ga-rabbit",
        "gb-rabbit",
    ];
    q.delete_all(&subs, &topics).await.unwrap();
}

/// RabbitMQ retries wait in expiring queues and come back through the subscription
/// queue: not before their time, with their attempt, however many levels they pass.
#[tokio::test]
async fn rabbitmq_retries_come_back_at_their_time() {
    let q = rabbit_queue("ladder").await;
    q.subscribe("s", "t", StartAt::Beginning).await.unwrap();
    q.publish(vec![event("t", "a"), event("t", "b")])
        .await
        .unwrap();
    let got = q.lease("s", 10, LEASE).await.unwrap();
    assert_eq!(got.len(), 2);
    let start = now_ms();
    // 600 ms: three passes through the 250 ms level; 2.3 s: the 2 s level, then 250 ms.
    q.retry_at("s", got[0].event.seq, start + 600)
        .await
        .unwrap();
    q.retry_at("s", got[1].event.seq, start + 2_300)
        .await
        .unwrap();
    assert_eq!(q.depth("s").await.unwrap().pending, 2);
    let mut back = Vec::new();
    while back.len() < 2 && now_ms() - start < 10_000 {
        for l in q.lease("s", 10, LEASE).await.unwrap() {
            back.push((l.event.body.clone(), l.attempt, now_ms() - start));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(back.len(), 2, "{back:?}");
    assert_eq!((back[0].0.as_ref(), back[0].1), (&b"a"[..], 2));
    assert_eq!((back[1].0.as_ref(), back[1].1), (&b"b"[..], 2));
    assert!(back[0].2 >= 600 && back[0].2 < 2_000, "{back:?}");
    assert!(back[1].2 >= 2_300 && back[1].2 < 4_500, "{back:?}");
    q.delete_all(&["s"], &["t"]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_to_rabbitmq_are_kept_without_loss() {
    let q = Arc::new(rabbit_queue("conc").await);
    concurrent(q.clone()).await;
    q.delete_all(&["all"], &["g"]).await.unwrap();
}

#[tokio::test]
async fn the_redis_streams_queue_conforms() {
    let q = redis_queue("conf").await;
    conformance(&q, "redis").await;
    ordering(&q, "redis").await;
    moving(&q, "redis").await;
    starting(&q, "redis").await;
    generations(&q, "redis").await;
    retention(&q, "redis").await;
    q.delete_keys().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_to_redis_are_kept_without_loss() {
    let q = Arc::new(redis_queue("group").await);
    concurrent(Arc::clone(&q) as Arc<dyn Queue>).await;
    q.delete_keys().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_are_group_committed_without_loss() {
    let dir = temp_dir("group");
    let q = Arc::new(Embedded::open(&dir).await.unwrap());
    concurrent(Arc::clone(&q) as Arc<dyn Queue>).await;
    q.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// 400 publishes at once: each gets its own sequence number, and every one is delivered.
async fn concurrent(q: Arc<dyn Queue>) {
    q.subscribe("all", "g", StartAt::Beginning).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..400 {
        let q = Arc::clone(&q);
        tasks.push(tokio::spawn(async move {
            q.publish(vec![event("g", &n.to_string())]).await.unwrap()[0]
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 400, "one sequence number per event");
    let mut seen = 0;
    loop {
        let batch = q.lease("all", 100, LEASE).await.unwrap();
        if batch.is_empty() {
            break;
        }
        seen += batch.len();
    }
    assert_eq!(seen, 400);
}

/// A broker that is not there is reported within 2 s (and a little for the machine), with
/// the cause and the address but never the URL's password.
#[tokio::test]
async fn every_backend_reports_an_unreachable_server_at_once_with_the_cause() {
    let bound = Duration::from_millis(2500);
    let check = |what: &str, started: std::time::Instant, e: String| {
        assert!(started.elapsed() < bound, "{what}: {:?}", started.elapsed());
        assert!(e.to_lowercase().contains("refused"), "{what}: {e}");
        assert!(e.contains("127.0.0.1:1"), "{what}: {e}");
        assert!(!e.contains("hunter2"), "{what}: {e}");
    };
    let t = std::time::Instant::now();
    let e = NatsJetStream::open("nats://u:hunter2@127.0.0.1:1", "weir", LEASE)
        .await
        .err()
        .unwrap();
    check("nats", t, e.to_string());
    let t = std::time::Instant::now();
    let e = RedisStreams::open("redis://:hunter2@127.0.0.1:1", "weir:{ev}:")
        .await
        .err()
        .unwrap();
    check("redis", t, e.to_string());
    let t = std::time::Instant::now();
    let e = RabbitMq::open("amqp://u:hunter2@127.0.0.1:1/%2f", "weir", LEASE)
        .await
        .err()
        .unwrap();
    check("rabbitmq", t, e.to_string());
}
