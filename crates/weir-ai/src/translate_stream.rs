//! Stream translation, one typed state machine per direction: OpenAI chunks become
//! Anthropic's event sequence (message_start, content blocks, message_delta,
//! message_stop), and Anthropic's events become OpenAI chunks ending in `[DONE]`. Each
//! takes one provider event and gives the client's events for it, at once.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::translate::{
    anthropic_usage, finish_to_stop_reason, openai_usage, stop_reason_to_finish,
};
use crate::usage::Usage;

fn anthropic_event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn openai_event(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Block {
    None,
    Text,
    Tool,
}

/// The end of an OpenAI stream Weir writes: the usage chunk (when the client asked for
/// usage), then `[DONE]`.
pub fn openai_tail(id: &str, created: u64, model: &str, usage: Option<&Usage>) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(2);
    if let Some(u) = usage {
        out.push(openai_event(
            &json!({"id": id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": [], "usage": openai_usage(u)}),
        ));
    }
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

/// OpenAI chunks → Anthropic events.
pub struct OpenAiToAnthropic {
    model: String,
    started: bool,
    block: Block,
    index: i64,
    stop_reason: Option<&'static str>,
    pub usage: Option<Usage>,
    finished: bool,
}

impl OpenAiToAnthropic {
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            started: false,
            block: Block::None,
            index: -1,
            stop_reason: None,
            usage: None,
            finished: false,
        }
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if self.block != Block::None {
            out.push(anthropic_event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.index}),
            ));
            self.block = Block::None;
        }
    }

    fn open(&mut self, kind: Block, block: Value, out: &mut Vec<Bytes>) {
        self.close(out);
        self.index += 1;
        self.block = kind;
        out.push(anthropic_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.index, "content_block": block}),
        ));
    }

    /// One `data:` payload of the OpenAI stream.
    pub fn push(&mut self, data: &str) -> Vec<Bytes> {
        let mut out = Vec::new();
        if data == "[DONE]" {
            self.finish(&mut out);
            return out;
        }
        let Ok(c) = serde_json::from_str::<Value>(data) else {
            return out;
        };
        if !c["error"].is_null() {
            let (_, message) = crate::translate::error_parts(&c);
            out.push(anthropic_event(
                "error",
                &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
            ));
            self.finished = true;
            return out;
        }
        if !self.started {
            self.started = true;
            out.push(anthropic_event("message_start", &json!({"type": "message_start", "message": {
                "id": format!("msg_{}", c["id"].as_str().unwrap_or("weir")), "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}})));
        }
        if let Some(u) = Usage::from_openai(&c["usage"]) {
            self.usage = Some(u);
        }
        let choice = &c["choices"][0];
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str()
            && !text.is_empty()
        {
            if self.block != Block::Text {
                self.open(Block::Text, json!({"type": "text", "text": ""}), &mut out);
            }
            out.push(anthropic_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": self.index,
                "delta": {"type": "text_delta", "text": text}}),
            ));
        }
        for tc in delta["tool_calls"].as_array().into_iter().flatten() {
            if !tc["id"].is_null() {
                self.open(Block::Tool, json!({"type": "tool_use", "id": tc["id"], "name": tc["function"]["name"], "input": {}}), &mut out);
            }
            if let Some(args) = tc["function"]["arguments"].as_str()
                && !args.is_empty()
            {
                out.push(anthropic_event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": self.index,
                    "delta": {"type": "input_json_delta", "partial_json": args}}),
                ));
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.stop_reason = Some(finish_to_stop_reason(f));
            self.close(&mut out);
        }
        out
    }

    /// The end of the stream (`[DONE]`, or the provider closed it).
    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.finished || !self.started {
            return;
        }
        self.finished = true;
        self.close(out);
        let usage = anthropic_usage(&self.usage.unwrap_or_default());
        out.push(anthropic_event("message_delta", &json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null}, "usage": usage})));
        out.push(anthropic_event(
            "message_stop",
            &json!({"type": "message_stop"}),
        ));
    }
}

/// Anthropic events → OpenAI chunks.
pub struct AnthropicToOpenAi {
    model: String,
    id: String,
    created: u64,
    wants_usage: bool,
    /// The OpenAI tool-call index of each Anthropic block that is a tool use.
    tool_of_block: std::collections::HashMap<i64, usize>,
    tools: usize,
    pub usage: Usage,
    pub saw_usage: bool,
    finished: bool,
}

impl AnthropicToOpenAi {
    pub fn new(model: &str, wants_usage: bool) -> Self {
        Self {
            model: model.to_owned(),
            id: "chatcmpl-weir".to_owned(),
            created: crate::unix_now(),
            wants_usage,
            tool_of_block: std::collections::HashMap::new(),
            tools: 0,
            usage: Usage::default(),
            saw_usage: false,
            finished: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Value) -> Bytes {
        let mut c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if self.wants_usage {
            c["usage"] = Value::Null;
        }
        openai_event(&c)
    }

    /// One Anthropic event (its `data:` payload).
    pub fn push(&mut self, data: &str) -> Vec<Bytes> {
        let mut out = Vec::new();
        let Ok(e) = serde_json::from_str::<Value>(data) else {
            return out;
        };
        match e["type"].as_str() {
            Some("message_start") => {
                let m = &e["message"];
                if let Some(id) = m["id"].as_str() {
                    self.id = format!("chatcmpl-{id}");
                }
                if let Some(u) = Usage::from_anthropic(&m["usage"]) {
                    self.usage.input = u.input;
                    self.usage.cached_input = u.cached_input;
                    self.saw_usage = true;
                }
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), Value::Null));
            }
            Some("content_block_start") if e["content_block"]["type"] == "tool_use" => {
                let b = &e["content_block"];
                let idx = self.tools;
                self.tools += 1;
                self.tool_of_block
                    .insert(e["index"].as_i64().unwrap_or(0), idx);
                out.push(self.chunk(
                    json!({"tool_calls": [{"index": idx, "id": b["id"], "type": "function",
                    "function": {"name": b["name"], "arguments": ""}}]}),
                    Value::Null,
                ));
            }
            Some("content_block_delta") => {
                let d = &e["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        out.push(self.chunk(json!({"content": d["text"]}), Value::Null))
                    }
                    Some("input_json_delta") => {
                        let idx = self
                            .tool_of_block
                            .get(&e["index"].as_i64().unwrap_or(0))
                            .copied()
                            .unwrap_or(0);
                        out.push(self.chunk(json!({"tool_calls": [{"index": idx, "function": {"arguments": d["partial_json"]}}]}), Value::Null));
                    }
                    // Thinking and signatures have no place in OpenAI's chunks.
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(n) = e["usage"]["output_tokens"].as_u64() {
                    self.usage.output = n;
                    self.saw_usage = true;
                }
                if let Some(r) = e["delta"]["stop_reason"].as_str() {
                    out.push(self.chunk(json!({}), json!(stop_reason_to_finish(r))));
                }
            }
            Some("message_stop") => self.finish(&mut out),
            Some("error") => {
                out.push(openai_event(&json!({"error": {"message": e["error"]["message"], "type": e["error"]["type"], "param": null, "code": null}})));
                self.finished = true;
            }
            _ => {}
        }
        out
    }

    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let usage = self.wants_usage.then_some(&self.usage);
        out.extend(openai_tail(&self.id, self.created, &self.model, usage));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(out: &[Bytes]) -> Vec<(String, Value)> {
        out.iter()
            .map(|b| {
                let s = String::from_utf8_lossy(b);
                let name = s
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .unwrap_or("")
                    .to_owned();
                let data = s.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                (name, serde_json::from_str(data).unwrap_or(Value::Null))
            })
            .collect()
    }

    #[test]
    fn an_openai_tool_stream_becomes_anthropic_blocks() {
        let mut t = OpenAiToAnthropic::new("smart");
        let mut out = Vec::new();
        for d in [
            r#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Let me check."},"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}"#,
            "[DONE]",
        ] {
            out.extend(t.push(d));
        }
        let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let ev = events(&out);
        assert_eq!(ev[4].1["content_block"]["name"], "get_weather");
        assert_eq!(ev[4].1["index"], 1);
        assert_eq!(ev[5].1["delta"]["partial_json"], "{\"city\":");
        assert_eq!(ev[7].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(ev[7].1["usage"]["output_tokens"], 4);
    }

    #[test]
    fn an_anthropic_stream_becomes_openai_chunks_with_usage_when_asked() {
        let mut t = AnthropicToOpenAi::new("smart", true);
        let mut out = Vec::new();
        for d in [
            r#"{"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":12,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":6}}"#,
            r#"{"type":"message_stop"}"#,
        ] {
            out.extend(t.push(d));
        }
        let text: Vec<String> = out
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert_eq!(text.last().unwrap(), "data: [DONE]\n\n");
        let chunks: Vec<Value> = text[..text.len() - 1]
            .iter()
            .map(|s| serde_json::from_str(s.trim().strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(
            chunks[2]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "toolu_1"
        );
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            chunks[5]["usage"],
            json!({"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18, "prompt_tokens_details": {"cached_tokens": 0}})
        );
    }
}
