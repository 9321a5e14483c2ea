//! The RabbitMQ queue's connection and the broker objects it declares: the events exchange,
//! topic streams, subscription queues, the retry ladder, and node ids claimed through
//! exclusive queues; plus reading a stream to its end (a marker published first).

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::Confirmation;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use parking_lot::Mutex;

use crate::{QueueError, Result};

pub(super) fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

/// The broker's soft error, if that is what `e` is (the channel it came on is closed).
pub(super) fn soft(e: &lapin::Error) -> Option<AMQPSoftError> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => match p.kind() {
            AMQPErrorKind::Soft(s) => Some(s.clone()),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    }
}

/// Retries wait in queues whose messages expire into the subscription queue: level `k`
/// holds them `LADDER_BASE_MS · 8^k`. A wait goes to the longest level that does not
/// overshoot it and comes back for the rest; the longest level is 6.2 days.
pub(super) const LADDER_BASE_MS: i64 = 250;
pub(super) const LADDER_LEVELS: u32 = 8;

pub(super) fn ladder_ms(k: u32) -> i64 {
    LADDER_BASE_MS * 8i64.pow(k)
}

/// The level for a wait of `ms` (level 0 for anything shorter than it).
pub(super) fn ladder_level(ms: i64) -> u32 {
    (0..LADDER_LEVELS)
        .rev()
        .find(|&k| ladder_ms(k) <= ms)
        .unwrap_or(0)
}

/// Names of everything the queue keeps in the broker, under `events.namespace`.
#[derive(Clone)]
pub(super) struct Names {
    pub prefix: String,
}

impl Names {
    pub fn exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
    pub fn log(&self, topic: &str) -> String {
        format!("{}.log.{topic}", self.prefix)
    }
    pub fn sub(&self, sub: &str) -> String {
        format!("{}.sub.{sub}", self.prefix)
    }
    pub fn dead(&self, sub: &str) -> String {
        format!("{}.dead.{sub}", self.prefix)
    }
    pub fn attempts(&self, sub: &str) -> String {
        format!("{}.att.{sub}", self.prefix)
    }
    pub fn state(&self) -> String {
        format!("{}.state", self.prefix)
    }
    pub fn ladder(&self, k: u32) -> String {
        format!("{}.delay.{k}", self.prefix)
    }
    pub fn node(&self, n: u32) -> String {
        format!("{}.node.{n}", self.prefix)
    }
}

pub(super) fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

pub(super) fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

pub(super) fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

pub(super) fn stream_args(max_age: Duration, max_bytes: Option<u64>) -> FieldTable {
    let mut a = vec![
        ("x-queue-type", text("stream")),
        ("x-max-age", text(&format!("{}s", max_age.as_secs().max(1)))),
        (
            "x-stream-max-segment-size-bytes",
            AMQPValue::LongLongInt(16 * 1024 * 1024),
        ),
    ];
    if let Some(b) = max_bytes {
        a.push(("x-max-length-bytes", AMQPValue::LongLongInt(b as i64)));
    }
    args(&a)
}

pub(super) fn quorum_args() -> FieldTable {
    args(&[("x-queue-type", text("quorum"))])
}

/// One connection with the channel publishes go through (confirms on), a channel per
/// subscription for leases, and the node id this connection holds.
pub(super) struct Link {
    pub conn: Connection,
    pub publish: Channel,
    /// Each subscription's lease channel, with the consumer the broker pushes its
    /// messages to (within a prefetch window).
    pub leases: Mutex<HashMap<String, (Channel, lapin::Consumer)>>,
    /// Unique among the nodes connected to the broker while this connection lives.
    pub node: u32,
}

/// How long a publish waits for the broker's confirm.
pub(super) const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Node ids are 8 bits of an event position.
const NODES: u32 = 256;

impl Link {
    pub async fn open(url: &str, names: &Names) -> Result<Self> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("weir {}", names.prefix).into());
        let conn = Connection::connect(url, props).await.map_err(unavailable)?;
        let publish = conn.create_channel().await.map_err(unavailable)?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unavailable)?;
        let exchange = |name: String, kind: ExchangeKind| {
            let publish = publish.clone();
            async move {
                let opts = ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                publish
                    .exchange_declare(name.as_str().into(), kind, opts, FieldTable::default())
                    .await
                    .map_err(unavailable)
            }
        };
        exchange(names.exchange(), ExchangeKind::Direct).await?;
        for k in 0..LADDER_LEVELS {
            let name = names.ladder(k);
            exchange(name.clone(), ExchangeKind::Fanout).await?;
            // Expired messages go back through the default exchange under the routing key
            // they were published with: their subscription queue. At-least-once
            // dead-lettering needs overflow to reject publishes rather than drop.
            let ladder = args(&[
                ("x-queue-type", text("quorum")),
                ("x-message-ttl", AMQPValue::LongLongInt(ladder_ms(k))),
                ("x-dead-letter-exchange", text("")),
                ("x-dead-letter-strategy", text("at-least-once")),
                ("x-overflow", text("reject-publish")),
            ]);
            publish
                .queue_declare(name.as_str().into(), durable(), ladder)
                .await
                .map_err(unavailable)?;
            publish
                .queue_bind(
                    name.as_str().into(),
                    name.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(unavailable)?;
        }
        // Per-subscription state is kept for good: no retention on its stream.
        let state = args(&[
            ("x-queue-type", text("stream")),
            (
                "x-stream-max-segment-size-bytes",
                AMQPValue::LongLongInt(1024 * 1024),
            ),
        ]);
        publish
            .queue_declare(names.state().as_str().into(), durable(), state)
            .await
            .map_err(unavailable)?;
        let node = Self::claim_node(&conn, names).await?;
        Ok(Self {
            conn,
            publish,
            leases: Mutex::new(HashMap::new()),
            node,
        })
    }

    /// The lowest node id no other live connection holds: its exclusive queue can be
    /// declared only by one connection at a time, and goes when that connection does.
    async fn claim_node(conn: &Connection, names: &Names) -> Result<u32> {
        for n in 0..NODES {
            let ch = conn.create_channel().await.map_err(unavailable)?;
            let claim = ch
                .queue_declare(
                    names.node(n).as_str().into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            match claim {
                Ok(_) => return Ok(n),
                Err(e) if soft(&e) == Some(AMQPSoftError::RESOURCELOCKED) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(QueueError::Unavailable(format!(
            "{NODES} Weir nodes already use this broker under {:?}",
            names.prefix
        )))
    }

    pub fn healthy(&self) -> bool {
        self.conn.status().connected() && self.publish.status().connected()
    }

    /// Publishes and waits for the broker's confirm (for a quorum queue or stream, it
    /// has the message on disk on a majority of its replicas).
    pub async fn confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<()> {
        let confirm = self
            .publish
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await
            .map_err(unavailable)?;
        // A confirm lost with its connection never comes: waited for only so long.
        match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Ok(c) => check(c.map_err(unavailable)?, routing_key),
            Err(_) => Err(QueueError::Unavailable(
                "RabbitMQ did not confirm the message in time".to_owned(),
            )),
        }
    }

    /// Declares on a channel of its own: a refused declaration closes the channel.
    pub async fn declare(
        &self,
        name: &str,
        opts: QueueDeclareOptions,
        a: FieldTable,
    ) -> lapin::Result<u32> {
        let ch = self.conn.create_channel().await?;
        let r = ch.queue_declare(name.into(), opts, a).await;
        if ch.status().connected() {
            let _ = ch.close(200, "done".into()).await;
        }
        r.map(|q| q.message_count())
    }

    /// The ready messages of an existing queue (an error when there is no such queue).
    pub async fn count(&self, name: &str) -> lapin::Result<u32> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.declare(name, passive, FieldTable::default()).await
    }

    pub async fn bind(&self, queue: &str, exchange: &str, key: &str) -> Result<()> {
        self.publish
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)
    }

    /// Reads stream `queue` from `offset` (an `x-stream-offset` value): with `marker`,
    /// to the end as of the call (a marker is published first and reading stops at it);
    /// without, until `max` or no message came for `idle`. `f` returns false to stop.
    pub async fn scan(
        &self,
        queue: &str,
        offset: AMQPValue,
        marker: bool,
        idle: Duration,
        mut f: impl FnMut(&Delivery) -> bool,
    ) -> Result<()> {
        let token = crate::new_event_id();
        if marker {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_headers(args(&[("weir-marker", text(&token))]));
            self.confirmed("", queue, b"", props).await?;
        }
        let ch = self.conn.create_channel().await.map_err(unavailable)?;
        ch.basic_qos(1000, BasicQosOptions::default())
            .await
            .map_err(unavailable)?;
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                format!("scan-{token}").as_str().into(),
                BasicConsumeOptions::default(),
                args(&[("x-stream-offset", offset)]),
            )
            .await
            .map_err(unavailable)?;
        // A marker is found within this long, or the broker is not answering.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut first = true;
        let mut outcome = Ok(());
        let mut unacked = 0;
        loop {
            let wait = if marker {
                deadline.saturating_duration_since(tokio::time::Instant::now())
            } else if first {
                idle.max(Duration::from_millis(300))
            } else {
                idle
            };
            let d = match tokio::time::timeout(wait, consumer.next()).await {
                Ok(Some(Ok(d))) => d,
                Ok(Some(Err(e))) => {
                    outcome = Err(unavailable(e));
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    if marker {
                        outcome = Err(QueueError::Unavailable(format!(
                            "reading {queue} did not reach its end in 30 s"
                        )));
                    }
                    break;
                }
            };
            first = false;
            unacked += 1;
            // Stream consumers are given credit back as they acknowledge.
            if unacked >= 500 {
                unacked = 0;
                let _ = d.acker.ack(BasicAckOptions { multiple: true }).await;
            }
            match header_str(&d, "weir-marker") {
                Some(t) if t == token => break,
                Some(_) => continue,
                None => {}
            }
            if !f(&d) {
                break;
            }
        }
        let _ = ch.close(200, "done".into()).await;
        outcome
    }
}

pub(super) fn check(c: Confirmation, key: &str) -> Result<()> {
    match c {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(QueueError::Unavailable(format!(
            "the broker had nowhere to route {key:?}"
        ))),
        Confirmation::Nack(_) => Err(QueueError::Unavailable(
            "the broker did not store the message (nack)".to_owned(),
        )),
        Confirmation::NotRequested => Err(QueueError::Unavailable(
            "publisher confirms are off on this channel".to_owned(),
        )),
    }
}

pub(super) fn header<'a>(d: &'a Delivery, name: &str) -> Option<&'a AMQPValue> {
    d.properties.headers().as_ref()?.inner().get(name)
}

pub(super) fn header_str(d: &Delivery, name: &str) -> Option<String> {
    match header(d, name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

pub(super) fn header_i64(d: &Delivery, name: &str) -> Option<i64> {
    match header(d, name)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}
