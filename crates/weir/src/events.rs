//! The node's event plane as the admin API sees it: publishing goes through the same code
//! as topic routes; subscription state, dead letters, replay and attempts come from the
//! queue and the delivery workers.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::HeaderMap;
use weir_control::events::{
    AttemptItem, BoxFuture, DeadLetterItem, DeliveryNote, EventItem, Events, EventsError, Replay,
    SubscriptionState,
};
use weir_core::GatewayError;
use weir_events::delivery::Supervisor;
use weir_events::{Queue, QueueError, now_ms};
use weir_proxy::gateway::Gateway;
use weir_proxy::snapshot::topic_of;

pub struct NodeEvents {
    pub ingest: Arc<weir_events::ingest::Ingest>,
    pub deliveries: Arc<Supervisor>,
    pub gateway: Arc<Gateway>,
}

fn queue_error(e: QueueError) -> EventsError {
    match e {
        QueueError::NoSubscription(s) => EventsError::NotFound(format!("no subscription {s:?}")),
        other => EventsError::Unavailable(other.to_string()),
    }
}

fn refused(e: &GatewayError) -> EventsError {
    match e {
        GatewayError::QueueUnavailable => {
            EventsError::Unavailable("the queue did not take the event".to_owned())
        }
        other => EventsError::Refused {
            status: other.status().as_u16(),
            kind: other.kind(),
            message: other.to_string(),
        },
    }
}

impl NodeEvents {
    fn queue(&self) -> &Arc<dyn Queue> {
        self.ingest.queue()
    }

    /// A running subscription's state: its worker's report, and what the queue says of
    /// its cursor. A queue that cannot answer makes it `degraded`, not an error.
    async fn state(&self, name: &str) -> Result<SubscriptionState, EventsError> {
        let Some(sub) = self.deliveries.get(name) else {
            return Err(EventsError::NotFound(format!(
                "no subscription {name:?} is configured on this node"
            )));
        };
        let queue = self.queue();
        let (depth, disabled) = match (queue.depth(name).await, queue.disabled(name).await) {
            (Ok(d), Ok(off)) => (d, off),
            (Err(e), _) | (_, Err(e)) => {
                sub.health.degrade(format!("cannot read its cursor: {e}"));
                (weir_events::Depth::default(), None)
            }
        };
        let report = sub.health.report();
        let (state, reason) = match (&report.degraded, &disabled) {
            (Some(why), _) => ("degraded", Some(why.clone())),
            (None, Some(why)) => ("disabled", Some(why.clone())),
            (None, None) => ("active", None),
        };
        let note = |n: weir_events::health::Note| DeliveryNote {
            at_ms: n.at_ms,
            event_id: n.event_id,
            status: n.status,
            detail: n.detail,
        };
        Ok(SubscriptionState {
            name: sub.name.clone(),
            topic: sub.topic.clone(),
            endpoint: sub.endpoint_shown(),
            state: state.to_owned(),
            reason,
            backend_object: queue.object(&sub.name, &sub.topic),
            pending: depth.pending,
            oldest_age_seconds: depth
                .oldest_ms
                .map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0),
            in_flight: report.in_flight,
            dead_letters: depth.dead,
            last_delivery: report.last_delivery.map(note),
            last_error: report.last_error.map(note),
            disabled,
        })
    }

    fn known(&self, subscription: &str) -> Result<(), EventsError> {
        match self.deliveries.get(subscription) {
            Some(_) => Ok(()),
            None => Err(EventsError::NotFound(format!(
                "no subscription {subscription:?} is configured on this node"
            ))),
        }
    }
}

impl Events for NodeEvents {
    fn publish(
        &self,
        topic: String,
        headers: HeaderMap,
        body: Bytes,
    ) -> BoxFuture<'_, Result<Vec<String>, EventsError>> {
        Box::pin(async move {
            let snapshot = self.gateway.snapshot();
            if !snapshot.config.topics.contains_key(&topic) {
                return Err(EventsError::NotFound(format!(
                    "no topic {topic:?}; declare it under topics:"
                )));
            }
            let target = topic_of(&snapshot.config, &topic);
            // Idempotency keys sent here belong to the admin API's own scope.
            self.ingest
                .publish(&target, &headers, body, &format!("admin|{topic}"))
                .await
                .map(|(ids, _)| ids)
                .map_err(|e| refused(&e))
        })
    }

    fn subscriptions(&self) -> BoxFuture<'_, Result<Vec<SubscriptionState>, EventsError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for name in self.deliveries.names() {
                out.push(self.state(&name).await?);
            }
            Ok(out)
        })
    }

    fn subscription(&self, name: String) -> BoxFuture<'_, Result<SubscriptionState, EventsError>> {
        Box::pin(async move { self.state(&name).await })
    }

    fn dead_letters(
        &self,
        subscription: String,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetterItem>, EventsError>> {
        Box::pin(async move {
            self.known(&subscription)?;
            let dead = self
                .queue()
                .dead_letters(&subscription, limit)
                .await
                .map_err(queue_error)?;
            Ok(dead
                .into_iter()
                .map(|d| DeadLetterItem {
                    seq: d.seq,
                    event_id: d.id,
                    attempts: d.attempts,
                    reason: d.reason,
                })
                .collect())
        })
    }

    fn replay(
        &self,
        subscription: String,
        what: Replay,
    ) -> BoxFuture<'_, Result<u64, EventsError>> {
        Box::pin(async move {
            self.known(&subscription)?;
            let n = match what {
                Replay::One(seq) => self.queue().replay_dead(&subscription, Some(seq)).await,
                Replay::AllDead => self.queue().replay_dead(&subscription, None).await,
                Replay::Since { unix_ms } => {
                    self.queue().replay_since(&subscription, unix_ms).await
                }
            }
            .map_err(queue_error)?;
            if n > 0 {
                tracing::info!(subscription = %subscription, replayed = n, "deliveries replayed");
            }
            Ok(n)
        })
    }

    fn attempts(
        &self,
        subscription: String,
        event_id: Option<String>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AttemptItem>, EventsError>> {
        Box::pin(async move {
            self.known(&subscription)?;
            let attempts = self
                .queue()
                .attempts(&subscription, event_id.as_deref(), limit)
                .await
                .map_err(queue_error)?;
            Ok(attempts
                .into_iter()
                .map(|a| AttemptItem {
                    seq: a.seq,
                    event_id: a.event_id,
                    attempt: a.attempt,
                    at_ms: a.at_ms,
                    status: a.status,
                    latency_ms: a.latency_ms,
                    outcome: a.outcome,
                    answer: a.answer,
                })
                .collect())
        })
    }

    fn enable(&self, subscription: String) -> BoxFuture<'_, Result<(), EventsError>> {
        Box::pin(async move {
            self.known(&subscription)?;
            self.deliveries
                .enable(&subscription)
                .await
                .map_err(queue_error)?;
            tracing::info!(subscription = %subscription, "subscription enabled through the admin API");
            Ok(())
        })
    }

    fn event(&self, id: String) -> BoxFuture<'_, Result<Option<EventItem>, EventsError>> {
        Box::pin(async move {
            let Some(e) = self.queue().get(&id).await.map_err(queue_error)? else {
                return Ok(None);
            };
            let (body, body_encoding) = match String::from_utf8(e.body.to_vec()) {
                Ok(text) => (text, "utf-8"),
                Err(_) => (
                    base64::engine::general_purpose::STANDARD.encode(&e.body),
                    "base64",
                ),
            };
            Ok(Some(EventItem {
                id: e.id,
                seq: e.seq,
                topic: e.topic,
                key: e.key,
                headers: e.headers,
                body,
                body_encoding: body_encoding.to_owned(),
                created_ms: e.created_ms,
            }))
        })
    }
}
