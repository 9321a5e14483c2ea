//! The request body sent upstream: streams the client's body through without buffering,
//! enforces the route's size limit while streaming, and can be handed to a second attempt
//! when the first one never read it (failed connect).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use parking_lot::Mutex;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// Shared between attempts: the client body waits here until an attempt first polls it.
type Slot = Arc<Mutex<Option<Incoming>>>;

pub struct RequestBody {
    kind: Kind,
    limit: u64,
    seen: u64,
    stats: Option<Arc<BodyStats>>,
}

/// What the proxy learns about a streamed body: bytes read, and whether the limit was
/// crossed mid-stream (so it can answer 413 rather than 502).
#[derive(Debug, Default)]
pub struct BodyStats {
    pub bytes: AtomicU64,
    pub over_limit: AtomicBool,
    /// The client's body broke off or was malformed (bad chunk framing, reset).
    pub client_error: AtomicBool,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Slot(Slot),
    Stream(Incoming),
}

impl RequestBody {
    pub fn empty() -> Self {
        Self {
            kind: Kind::Empty,
            limit: u64::MAX,
            seen: 0,
            stats: None,
        }
    }

    pub fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full(Some(bytes)),
            limit: u64::MAX,
            seen: 0,
            stats: None,
        }
    }

    /// Wraps the client's body; `limit` is enforced as frames pass.
    pub fn streaming(body: Incoming, limit: u64) -> BodySource {
        if body.is_end_stream() {
            return BodySource::Empty;
        }
        BodySource::Stream {
            slot: Arc::new(Mutex::new(Some(body))),
            limit,
            stats: Arc::default(),
        }
    }
}

/// Where each attempt's body comes from.
pub enum BodySource {
    Empty,
    Stream {
        slot: Slot,
        limit: u64,
        stats: Arc<BodyStats>,
    },
}

impl BodySource {
    /// A body for one attempt; `None` when an earlier attempt already consumed it.
    pub fn attempt(&self) -> Option<RequestBody> {
        match self {
            BodySource::Empty => Some(RequestBody::empty()),
            BodySource::Stream { slot, limit, stats } => {
                slot.lock().is_some().then(|| RequestBody {
                    kind: Kind::Slot(Arc::clone(slot)),
                    limit: *limit,
                    seen: 0,
                    stats: Some(Arc::clone(stats)),
                })
            }
        }
    }

    /// True while no attempt has started reading the body, so another attempt may send it.
    pub fn replayable(&self) -> bool {
        match self {
            BodySource::Empty => true,
            BodySource::Stream { slot, .. } => slot.lock().is_some(),
        }
    }

    /// True when an attempt failed because of the client's body, not the upstream.
    pub fn client_fault(&self) -> bool {
        match self {
            BodySource::Empty => false,
            BodySource::Stream { stats, .. } => {
                stats.over_limit.load(Ordering::Relaxed)
                    || stats.client_error.load(Ordering::Relaxed)
            }
        }
    }

    pub fn stats(&self) -> Option<Arc<BodyStats>> {
        match self {
            BodySource::Empty => None,
            BodySource::Stream { stats, .. } => Some(Arc::clone(stats)),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match &mut this.kind {
                Kind::Empty => return Poll::Ready(None),
                Kind::Full(b) => return Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
                Kind::Slot(slot) => {
                    let taken = slot.lock().take();
                    match taken {
                        Some(body) => this.kind = Kind::Stream(body),
                        None => return Poll::Ready(None),
                    }
                }
                Kind::Stream(body) => {
                    let frame = match Pin::new(body).poll_frame(cx) {
                        Poll::Ready(Some(Ok(f))) => f,
                        Poll::Ready(Some(Err(e))) => {
                            if let Some(stats) = &this.stats {
                                stats.client_error.store(true, Ordering::Relaxed);
                            }
                            return Poll::Ready(Some(Err(Box::new(e))));
                        }
                        Poll::Ready(None) => return Poll::Ready(None),
                        Poll::Pending => return Poll::Pending,
                    };
                    if let Some(data) = frame.data_ref() {
                        let n = data.len() as u64;
                        this.seen += n;
                        if let Some(stats) = &this.stats {
                            stats.bytes.fetch_add(n, Ordering::Relaxed);
                        }
                        if this.seen > this.limit {
                            if let Some(stats) = &this.stats {
                                stats.over_limit.store(true, Ordering::Relaxed);
                            }
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge(this.limit)))));
                        }
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Slot(_) => false,
            Kind::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Slot(slot) => slot
                .lock()
                .as_ref()
                .map(Body::size_hint)
                .unwrap_or_default(),
            Kind::Stream(b) => b.size_hint(),
        }
    }
}
