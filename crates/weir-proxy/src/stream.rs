//! Stream routes: `GET` on a topic route serves the topic's events to the client as
//! Server-Sent Events, each with its event id as the SSE `id`, so a client that reconnects
//! with `Last-Event-ID` resumes right after the last event it saw. Without one it starts
//! at the events published from then on. The client's buffer is bounded: one that stops
//! reading is disconnected (and resumes with `Last-Event-ID`).

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use tokio::sync::mpsc;
use weir_core::GatewayError;
use weir_events::{Event, Queue};

use crate::body::ProxyBody;
use crate::snapshot::TopicTarget;

/// Frames queued for one client before it counts as slow.
const BUFFER: usize = 64;
/// How long a full buffer may stay full before the client is let go.
const SLOW_CLIENT: Duration = Duration::from_secs(10);
/// A comment line this often keeps idle connections (and proxies between) open.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How often an idle stream looks for events other nodes published.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Events read from the queue at a time.
const BATCH: usize = 256;

/// Where the stream starts: `Last-Event-ID` (header, or `last_event_id` in the query for
/// clients that cannot set headers), else the topic's newest event.
async fn start(target: &TopicTarget, parts: &http::request::Parts) -> Result<i64, GatewayError> {
    let from_query = parts.uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("last_event_id="))
            .map(str::to_owned)
    });
    let last = parts
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
        .or(from_query)
        .filter(|s| !s.is_empty());
    let queue = target.ingest.queue();
    match last {
        None => queue
            .latest(&target.topic.name)
            .await
            .map_err(|_| GatewayError::QueueUnavailable),
        Some(id) => {
            if id.len() > 200 {
                return Err(GatewayError::BadRequest("Last-Event-ID is too long"));
            }
            match queue.get(&id).await {
                Ok(Some(e)) if e.topic == target.topic.name => Ok(e.seq),
                // Unknown (or past retention): everything the topic still holds, so nothing
                // the client may have missed is skipped.
                Ok(_) => Ok(0),
                Err(_) => Err(GatewayError::QueueUnavailable),
            }
        }
    }
}

/// One event as an SSE frame: `id`, `event` (the CloudEvents type, when there is one) and
/// the body as `data` lines (base64 when it is not UTF-8).
fn frame(e: &Event) -> Bytes {
    let mut out = BytesMut::with_capacity(e.body.len() + 96);
    out.put_slice(b"id: ");
    out.put_slice(e.id.as_bytes());
    out.put_u8(b'\n');
    if let Some((_, ty)) = e.headers.iter().find(|(k, _)| k == "ce-type") {
        // Stored header values never hold line breaks; strip them anyway (they would
        // end the field).
        out.put_slice(b"event: ");
        out.put_slice(ty.replace(['\r', '\n'], "").as_bytes());
        out.put_u8(b'\n');
    }
    let text = match std::str::from_utf8(&e.body) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => std::borrow::Cow::Owned(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            &e.body,
        )),
    };
    for line in text.split('\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.trim_end_matches('\r').as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// The `200 text/event-stream` answer; a task feeds it until the client goes away or
/// falls too far behind.
pub(crate) async fn serve(
    target: &TopicTarget,
    parts: &http::request::Parts,
) -> Result<Response<ProxyBody>, GatewayError> {
    let after = start(target, parts).await?;
    let (queue, topic) = (Arc::clone(target.ingest.queue()), target.topic.name.clone());
    let (tx, rx) = mpsc::channel(BUFFER);
    let closing = target
        .closing
        .clone()
        .unwrap_or_else(|| tokio::sync::watch::channel(false).1);
    tokio::spawn(async move {
        let mut closing = closing;
        tokio::select! {
            () = feed(queue, topic, after, tx) => {}
            _ = closing.wait_for(|c| *c) => {}
        }
    });
    let mut rsp = Response::new(ProxyBody::channel(rx));
    *rsp.status_mut() = StatusCode::OK;
    let h = rsp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(rsp)
}

async fn feed(queue: Arc<dyn Queue>, topic: String, mut after: i64, tx: mpsc::Sender<Bytes>) {
    // Opens the stream at once (clients see the connection is live), and tells them to
    // reconnect after a second if it drops.
    if tx
        .send(Bytes::from_static(b"retry: 1000\n: stream open\n\n"))
        .await
        .is_err()
    {
        return;
    }
    let mut idle_since = tokio::time::Instant::now();
    loop {
        let events = match queue.read(&topic, after, BATCH).await {
            Ok(e) => e,
            Err(_) => {
                // The queue is away: keep the client, try again shortly.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = tx.closed() => return,
                }
            }
        };
        if events.is_empty() {
            if idle_since.elapsed() >= KEEPALIVE {
                idle_since = tokio::time::Instant::now();
                if !send(&tx, Bytes::from_static(b": keepalive\n\n")).await {
                    return;
                }
            }
            tokio::select! {
                // This node's publishes wake it at once; other nodes' show within IDLE_POLL.
                _ = queue.published(IDLE_POLL) => {}
                _ = tx.closed() => return,
            }
            continue;
        }
        idle_since = tokio::time::Instant::now();
        for e in &events {
            if !send(&tx, frame(e)).await {
                return;
            }
            after = e.seq;
        }
    }
}

/// Sends one frame; false when the client is gone or has not read for [`SLOW_CLIENT`].
async fn send(tx: &mpsc::Sender<Bytes>, frame: Bytes) -> bool {
    matches!(
        tokio::time::timeout(SLOW_CLIENT, tx.send(frame)).await,
        Ok(Ok(()))
    )
}
