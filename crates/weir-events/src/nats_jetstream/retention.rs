//! Retention on JetStream: Weir trims the event stream itself, so that what a subscription
//! still owed becomes its dead letter before the event goes (the stream's own `max_age` is
//! only a backstop for a system where no Weir node ran for a long time).

use std::collections::HashSet;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::message::AckKind;
use bytes::Bytes;
use futures_util::StreamExt as _;

use super::support::{event_of, missing};
use super::{NatsJetStream, STATE_TTL_MS, unavailable};
use crate::{RETAINED_PAST, Result, Trimmed, now_ms};

/// How much longer than the longest topic retention the stream itself keeps events: Weir
/// trims (dead-lettering what is owed) long before the broker's own limit is reached.
pub(super) fn backstop(retention: Duration) -> Duration {
    retention.saturating_mul(3)
}

impl NatsJetStream {
    /// Retention for `topic`: see [`crate::Queue::trim`].
    pub(super) async fn trim_topic(&self, topic: &str, before_ms: i64) -> Result<Trimmed> {
        let old = self.older_than(topic, before_ms).await?;
        let Some(&(last, _)) = old.last() else {
            return Ok(Trimmed::default());
        };
        // Every event of the topic below `cut` is past retention.
        let cut = last + 1;
        let mut out = Trimmed::default();
        let mut needed: HashSet<u64> = HashSet::new();
        for sub in self.subscribers(topic).await? {
            let info = self
                .consumer(&sub, false)
                .await?
                .info()
                .await
                .map_err(unavailable)?
                .clone();
            let retired = self.retired_fresh(&sub).await?;
            let done_below = (info.ack_floor.stream_sequence + 1).max(retired);
            let dead: HashSet<u64> = self
                .dead_records(&sub, usize::MAX)
                .await?
                .into_iter()
                .map(|(_, d)| d.seq as u64)
                .collect();
            let mut n = 0;
            for (seq, id) in old.iter().filter(|(s, _)| *s >= done_below) {
                // A pass cut short before it wrote the boundary made this one already.
                if !dead.contains(seq) {
                    self.dead_record(&sub, *seq, id, 0, RETAINED_PAST).await?;
                    n += 1;
                }
                needed.insert(*seq);
            }
            needed.extend(dead);
            if done_below < cut {
                self.set_state("retired", &sub, &cut.to_string()).await?;
                self.retired_seen
                    .lock()
                    .insert(sub.clone(), (cut, now_ms()));
            }
            if n > 0 {
                out.dead_lettered.push((sub.clone(), n));
            }
            self.drop_replayed(&sub).await?;
        }
        out.dropped = self.drop_unneeded(topic, &old, cut, &needed).await?;
        Ok(out)
    }

    /// The topic's events published before `before_ms`, oldest first, with their ids.
    async fn older_than(&self, topic: &str, before_ms: i64) -> Result<Vec<(u64, String)>> {
        let mut old = Vec::new();
        let mut bad = None;
        self.scan(
            &self.events,
            self.topic_filter(topic),
            DeliverPolicy::All,
            |m| {
                let Ok(i) = m.info() else { return false };
                let seq = i.stream_sequence;
                match event_of(&m.subject, seq as i64, m.headers.as_ref(), Bytes::new()) {
                    Ok(e) if e.created_ms < before_ms => {
                        old.push((seq, e.id));
                        true
                    }
                    Ok(_) => false,
                    Err(e) => {
                        bad = Some(e);
                        false
                    }
                }
            },
        )
        .await?;
        match bad {
            Some(e) => Err(e),
            None => Ok(old),
        }
    }

    /// The subscriptions whose main consumer reads `topic`.
    async fn subscribers(&self, topic: &str) -> Result<Vec<String>> {
        let filter = self.topic_filter(topic);
        let mut consumers = self.events.consumers();
        let mut subs = Vec::new();
        while let Some(info) = consumers.next().await {
            let info = info.map_err(unavailable)?;
            if info.config.filter_subject == filter && info.config.durable_name.is_some() {
                subs.push(info.name.replace("_dot_", "."));
            }
        }
        Ok(subs)
    }

    /// Removes the topic's old events that no subscription owes and no dead letter needs:
    /// the run of them at the front in one purge, any after a needed one one by one.
    async fn drop_unneeded(
        &self,
        topic: &str,
        old: &[(u64, String)],
        cut: u64,
        needed: &HashSet<u64>,
    ) -> Result<u64> {
        let front = old
            .iter()
            .map(|(s, _)| *s)
            .find(|s| needed.contains(s))
            .unwrap_or(cut);
        let mut dropped = 0;
        if old.first().is_some_and(|(s, _)| *s < front) {
            let purged = self
                .events
                .purge()
                .filter(self.topic_filter(topic))
                .sequence(front)
                .await
                .map_err(unavailable)?;
            dropped += purged.purged;
        }
        for (seq, _) in old.iter().filter(|(s, _)| *s > front) {
            if needed.contains(seq) {
                continue;
            }
            match self.events.delete_message(*seq).await {
                Ok(_) => dropped += 1,
                Err(e) if missing(&e) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(dropped)
    }

    /// Replay copies that `sub` has had are of no more use.
    async fn drop_replayed(&self, sub: &str) -> Result<()> {
        let floor = self
            .consumer(sub, true)
            .await?
            .info()
            .await
            .map_err(unavailable)?
            .ack_floor
            .stream_sequence;
        if floor > 0 {
            self.events
                .purge()
                .filter(self.replay_filter(sub))
                .sequence(floor + 1)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Records that `sub` gave up the event at `seq` (`id`), with `reason`.
    pub(super) async fn dead_record(
        &self,
        sub: &str,
        seq: u64,
        id: &str,
        attempts: u32,
        reason: &str,
    ) -> Result<()> {
        let mut rec = HeaderMap::new();
        rec.insert("Weir-Seq", seq.to_string().as_str());
        rec.insert("Weir-Id", id);
        rec.insert("Weir-Attempts", attempts.to_string().as_str());
        self.js
            .publish_with_headers(
                format!("{}.dead.{sub}", self.prefix),
                rec,
                Bytes::from(reason.to_owned()),
            )
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The position below which `sub`'s events went to dead letters by retention (0:
    /// none), read from the broker.
    async fn retired_fresh(&self, sub: &str) -> Result<u64> {
        Ok(self
            .state_of("retired", sub)
            .await?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }

    /// Lets go of events held here that retention made dead letters since they were
    /// leased (they come again only by replay).
    pub(super) async fn drop_retired(&self, sub: &str, below: u64) {
        let main = format!("{}.ev.", self.prefix);
        for h in self
            .holds
            .take_below(sub, below as i64, |m| m.subject.starts_with(main.as_str()))
        {
            let _ = h.msg.double_ack_with(AckKind::Term).await;
            if let Ok(i) = h.msg.info() {
                self.holds
                    .release(sub, h.key.as_deref(), i.stream_sequence as i64);
            }
        }
    }

    /// [`Self::retired_fresh`], read at most every few seconds: a lease checks it.
    pub(super) async fn retired(&self, sub: &str) -> Result<u64> {
        let now = now_ms();
        if let Some((below, at)) = self.retired_seen.lock().get(sub)
            && now - at < STATE_TTL_MS
        {
            return Ok(*below);
        }
        let below = self.retired_fresh(sub).await?;
        self.retired_seen
            .lock()
            .insert(sub.to_owned(), (below, now));
        Ok(below)
    }
}
