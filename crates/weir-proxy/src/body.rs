//! The response body Weir sends: an upstream's streaming body passed through frame by
//! frame, or a small body Weir made itself. When it ends (or the client goes away) it
//! records the request's metrics and access-log line, so durations and byte counts cover
//! the whole stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::finish::Finish;

pub struct ProxyBody {
    inner: Inner,
    bytes: u64,
    finish: Option<Box<Finish>>,
}

enum Inner {
    Upstream(Incoming),
    Full(Option<Bytes>),
    /// The part already read (to fill the cache), then the rest of the upstream's body.
    Prefixed(Option<Bytes>, Incoming),
    /// Chunks Weir produces as it goes (event streams); ends when the sender is dropped.
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
}

impl ProxyBody {
    pub fn full(b: Bytes) -> Self {
        Self {
            inner: Inner::Full(Some(b)),
            bytes: 0,
            finish: None,
        }
    }

    pub fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
            bytes: 0,
            finish: None,
        }
    }

    pub fn upstream(b: Incoming) -> Self {
        Self {
            inner: Inner::Upstream(b),
            bytes: 0,
            finish: None,
        }
    }

    pub fn prefixed(head: Bytes, rest: Incoming) -> Self {
        Self {
            inner: Inner::Prefixed(Some(head).filter(|h| !h.is_empty()), rest),
            bytes: 0,
            finish: None,
        }
    }

    pub fn channel(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Self {
        Self {
            inner: Inner::Channel(rx),
            bytes: 0,
            finish: None,
        }
    }

    pub(crate) fn set_finish(&mut self, f: Box<Finish>) {
        self.finish = Some(f);
        if self.is_end_stream() {
            self.complete(false);
        }
    }

    fn complete(&mut self, aborted: bool) {
        if let Some(f) = self.finish.take() {
            f.done(self.bytes, aborted);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    #[inline]
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Prefixed(head, rest) => match head.take() {
                Some(h) => Poll::Ready(Some(Ok(Frame::data(h)))),
                None => Pin::new(rest).poll_frame(cx),
            },
            Inner::Channel(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if this.finish.is_some() && this.is_end_stream() {
                    this.complete(false);
                }
            }
            Poll::Ready(None) => this.complete(false),
            Poll::Ready(Some(Err(_))) => this.complete(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
            Inner::Prefixed(head, rest) => head.is_none() && rest.is_end_stream(),
            Inner::Channel(rx) => rx.is_closed() && rx.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Prefixed(head, rest) => {
                let extra = head.as_ref().map_or(0, |h| h.len() as u64);
                let r = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(r.lower() + extra);
                if let Some(u) = r.upper() {
                    hint.set_upper(u + extra);
                }
                hint
            }
            Inner::Channel(_) => SizeHint::new(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body dropped before its end means the client went away mid-response.
        let aborted = !self.is_end_stream();
        self.complete(aborted);
    }
}
