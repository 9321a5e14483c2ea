//! Splits a Server-Sent Events byte stream into whole events as bytes arrive, so a stream
//! can be passed on event by event (and read for usage) without waiting for more.

use bytes::{Bytes, BytesMut};

#[derive(Default)]
pub struct Splitter {
    buf: BytesMut,
}

/// A whole event: its raw bytes (blank line included) and its `data` joined.
pub struct SseEvent {
    pub raw: Bytes,
    pub event: Option<String>,
    pub data: String,
}

/// Events are capped so a provider that never ends one cannot grow the buffer forever.
pub const MAX_EVENT: usize = 8 * 1024 * 1024;

impl Splitter {
    /// Adds bytes; returns the events they complete. An event longer than [`MAX_EVENT`]
    /// is an error.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, &'static str> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = event_end(&self.buf) {
            let raw = self.buf.split_to(end).freeze();
            out.push(parse(raw));
        }
        if self.buf.len() > MAX_EVENT {
            return Err("an event of the stream is larger than 8 MiB");
        }
        Ok(out)
    }

    /// What is left when the stream ends (an event without its blank line).
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.buf.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        Some(parse(self.buf.split().freeze()))
    }
}

/// The end (exclusive) of the first complete event: after `\n\n`, `\r\n\r\n` or `\r\r`.
fn event_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' {
            if b.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

fn parse(raw: Bytes) -> SseEvent {
    let text = String::from_utf8_lossy(&raw);
    let mut event = None;
    let mut data: Vec<&str> = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        } else if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim().to_owned());
        }
    }
    let data = data.join("\n");
    SseEvent { raw, event, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_whole_however_the_bytes_are_cut() {
        let stream = b"data: {\"a\":1}\n\nevent: ping\ndata: {}\n\r\ndata: [DONE]\n\n";
        for cut in 1..stream.len() {
            let mut s = Splitter::default();
            let mut got = s.push(&stream[..cut]).unwrap();
            got.extend(s.push(&stream[cut..]).unwrap());
            let data: Vec<_> = got.iter().map(|e| e.data.as_str()).collect();
            assert_eq!(data, ["{\"a\":1}", "{}", "[DONE]"], "cut at {cut}");
            assert_eq!(got[1].event.as_deref(), Some("ping"));
            let raw: Vec<u8> = got.iter().flat_map(|e| e.raw.to_vec()).collect();
            assert_eq!(raw, stream);
        }
    }

    #[test]
    fn a_never_ending_event_is_refused() {
        let mut s = Splitter::default();
        let big = vec![b'x'; MAX_EVENT + 1];
        assert!(s.push(&big).is_err());
    }
}
