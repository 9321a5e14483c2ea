//! A provider's stream on its way to the client: passed on event by event (or translated
//! event by event when the client speaks the other API), with usage read as it goes by;
//! the call is recorded when the stream ends or the client leaves.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::AiPlane;
use crate::call::ms;
use crate::catalog::Catalog;
use crate::gemini::GeminiToOpenAi;
use crate::sse::Splitter;
use crate::translate_stream::{AnthropicToOpenAi, OpenAiToAnthropic};
use crate::usage::{CallRecord, Usage};

/// Provider API → client API.
pub enum Mode {
    /// OpenAI both sides; the usage chunk reaches the client only if it asked for it.
    OpenAi {
        wants_usage: bool,
    },
    /// Anthropic both sides.
    Anthropic,
    ToAnthropic(Box<OpenAiToAnthropic>),
    ToOpenAi(Box<AnthropicToOpenAi>),
    /// Gemini's chunks become OpenAI's, and those Anthropic's when the client speaks it.
    FromGemini(Box<GeminiToOpenAi>, Option<Box<OpenAiToAnthropic>>),
}

pub struct StreamTap {
    pub record: CallRecord,
    pub plane: Arc<AiPlane>,
    pub catalog: Arc<Catalog>,
    pub mode: Mode,
    pub started: Instant,
    /// What the route's limits reserved for the call.
    pub admission: Option<crate::limits::Admission>,
    /// The prompt's size, for an estimate when the stream ends without usage.
    pub prompt_bytes: usize,
}

impl StreamTap {
    /// What the client gets for one provider event (`parsed`: its data as JSON, read once
    /// by the caller), and the usage it carried.
    fn convert(
        &mut self,
        raw: Bytes,
        data: &str,
        parsed: Option<&Value>,
        usage: &mut Option<Usage>,
    ) -> Vec<Bytes> {
        match &mut self.mode {
            Mode::OpenAi { wants_usage } => {
                if let Some(v) = parsed
                    && let Some(u) = Usage::from_openai(&v["usage"])
                {
                    *usage = Some(u);
                    // The usage-only chunk the client did not ask for stays here.
                    if !*wants_usage && v["choices"].as_array().is_none_or(Vec::is_empty) {
                        return Vec::new();
                    }
                }
                vec![raw]
            }
            Mode::Anthropic => {
                if let Some(v) = parsed {
                    let u = usage.get_or_insert_with(Usage::default);
                    match v["type"].as_str() {
                        Some("message_start") => {
                            if let Some(s) = Usage::from_anthropic(&v["message"]["usage"]) {
                                (u.input, u.cached_input) = (s.input, s.cached_input);
                            }
                        }
                        Some("message_delta") => {
                            if let Some(n) = v["usage"]["output_tokens"].as_u64() {
                                u.output = n;
                            }
                        }
                        _ => {}
                    }
                }
                vec![raw]
            }
            Mode::ToAnthropic(t) => {
                let out = t.push(data);
                if t.usage.is_some() {
                    *usage = t.usage;
                }
                out
            }
            Mode::ToOpenAi(t) => {
                let out = t.push(data);
                if t.saw_usage {
                    *usage = Some(t.usage);
                }
                out
            }
            Mode::FromGemini(g, then) => {
                let chunks = g.push(data);
                if g.usage.is_some() {
                    *usage = g.usage;
                }
                relay(chunks, then)
            }
        }
    }

    /// The client's last events when the provider's stream ended without its own end.
    fn finish(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        match &mut self.mode {
            Mode::ToAnthropic(t) => t.finish(&mut out),
            Mode::ToOpenAi(t) => t.finish(&mut out),
            Mode::FromGemini(g, then) => {
                let mut chunks = Vec::new();
                g.finish(&mut chunks);
                out = relay(chunks, then);
            }
            _ => {}
        }
        out
    }

    pub async fn run(mut self, mut body: Incoming, tx: mpsc::Sender<Bytes>) {
        let mut split = Splitter::default();
        let mut usage = None;
        let mut first = None;
        let mut gone = false;
        let mut generated = 0usize;
        'read: while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                self.record.status = 502;
                break;
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let Ok(events) = split.push(&data) else {
                self.record.status = 502;
                break;
            };
            for ev in events {
                let parsed = serde_json::from_str::<Value>(&ev.data).ok();
                if let Some(v) = &parsed {
                    generated += crate::usage::generated_bytes(v);
                }
                for out in self.convert(ev.raw, &ev.data, parsed.as_ref(), &mut usage) {
                    if first.is_none() {
                        first = Some(self.started.elapsed());
                    }
                    if tx.send(out).await.is_err() {
                        // The client left: dropping the provider's stream stops the
                        // generation it would be billed for.
                        self.record.status = 499;
                        gone = true;
                        break 'read;
                    }
                }
            }
        }
        if !gone {
            let mut tail = Vec::new();
            if let Some(rest) = split.finish() {
                let parsed = serde_json::from_str::<Value>(&rest.data).ok();
                tail = self.convert(rest.raw, &rest.data, parsed.as_ref(), &mut usage);
            }
            tail.extend(self.finish());
            for out in tail {
                if tx.send(out).await.is_err() {
                    break;
                }
            }
        }
        // A stream cut short (or a server that counts nothing) is estimated, so limits
        // and budgets still see it.
        self.record.usage = usage.unwrap_or_else(|| Usage::estimate(self.prompt_bytes, generated));
        self.record.estimated = usage.is_none();
        self.record.cost_usd = self
            .catalog
            .prices
            .cost(&self.record.target, &self.record.usage);
        self.record.ttft_ms = first.map_or(0, ms);
        self.record.latency_ms = ms(self.started.elapsed());
        if let Some(a) = self.admission.take() {
            a.settle(
                self.record.usage.input + self.record.usage.output,
                self.record.cost_usd,
            );
        }
        self.plane.recorder.record(self.record);
    }
}

/// OpenAI chunks as they are, or through `then` into Anthropic events.
fn relay(chunks: Vec<Bytes>, then: &mut Option<Box<OpenAiToAnthropic>>) -> Vec<Bytes> {
    let Some(t) = then else { return chunks };
    let mut out = Vec::new();
    for c in chunks {
        let text = String::from_utf8_lossy(&c);
        if let Some(data) = text.trim_end().strip_prefix("data: ") {
            out.extend(t.push(data));
        }
    }
    out
}
