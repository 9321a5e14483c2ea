//! Google Gemini's native API, spoken from OpenAI's shape: chat requests become
//! `generateContent` (system instruction, contents with `model` turns, function
//! declarations, calls and responses, inline images, generation config), answers and
//! `alt=sse` stream chunks become OpenAI's, embeddings go through `batchEmbedContents`.
//! Gemini gives function calls no ids: Weir numbers them (`call_N`) and finds a result's
//! function by the id the client sends back.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::usage::Usage;

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

/// An OpenAI chat request as a Gemini `generateContent` body.
pub fn request_from_openai(o: &Value) -> Result<Value, String> {
    let mut system = Vec::new();
    let mut contents: Vec<(String, Vec<Value>)> = Vec::new();
    // Function names by call id, for the results that come back by id.
    let mut names: HashMap<String, String> = HashMap::new();
    let mut push = |role: &str, parts: Vec<Value>| match contents.last_mut() {
        Some((r, p)) if r == role => p.extend(parts),
        _ => contents.push((role.to_owned(), parts)),
    };
    for m in o["messages"]
        .as_array()
        .ok_or("\"messages\" must be a list")?
    {
        match m["role"].as_str() {
            Some("system" | "developer") => system.push(json!({"text": text_of(&m["content"])})),
            Some("assistant") => {
                let mut parts = Vec::new();
                let text = text_of(&m["content"]);
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for c in m["tool_calls"].as_array().into_iter().flatten() {
                    let name = c["function"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    if let Some(id) = c["id"].as_str() {
                        names.insert(id.to_owned(), name.clone());
                    }
                    let raw = c["function"]["arguments"].as_str().unwrap_or("{}");
                    let args: Value = if raw.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(raw).map_err(|_| {
                            format!("tool call {} has arguments that are not JSON", c["id"])
                        })?
                    };
                    parts.push(json!({"functionCall": {"name": name, "args": args}}));
                }
                push("model", parts);
            }
            Some("tool") => {
                let id = m["tool_call_id"].as_str().unwrap_or_default();
                let name = names.get(id).cloned().unwrap_or_else(|| id.to_owned());
                push(
                    "user",
                    vec![
                        json!({"functionResponse": {"name": name, "response": {"result": text_of(&m["content"])}}}),
                    ],
                );
            }
            Some("user") => {
                let parts = match &m["content"] {
                    Value::Array(ps) => ps.iter().filter_map(user_part).collect(),
                    c => vec![json!({"text": text_of(c)})],
                };
                push("user", parts);
            }
            _ => {
                return Err(
                    "a message's role is system, developer, user, assistant or tool".into(),
                );
            }
        }
    }
    let contents: Vec<Value> = contents
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    let mut g = json!({"contents": contents});
    if !system.is_empty() {
        g["systemInstruction"] = json!({"parts": system});
    }
    let mut config = serde_json::Map::new();
    if let Some(n) = o["max_completion_tokens"]
        .as_u64()
        .or(o["max_tokens"].as_u64())
    {
        config.insert("maxOutputTokens".into(), json!(n));
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
    ] {
        if !o[from].is_null() {
            config.insert(to.into(), o[from].clone());
        }
    }
    match &o["stop"] {
        Value::String(s) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Value::Array(s) => {
            config.insert("stopSequences".into(), json!(s));
        }
        _ => {}
    }
    if matches!(
        o["response_format"]["type"].as_str(),
        Some("json_object" | "json_schema")
    ) {
        config.insert("responseMimeType".into(), json!("application/json"));
    }
    if !config.is_empty() {
        g["generationConfig"] = Value::Object(config);
    }
    if let Some(tools) = o["tools"].as_array() {
        let decls: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                let mut d = json!({"name": f["name"]});
                if !f["description"].is_null() {
                    d["description"] = f["description"].clone();
                }
                if !f["parameters"].is_null() {
                    d["parameters"] = f["parameters"].clone();
                }
                d
            })
            .collect();
        g["tools"] = json!([{"functionDeclarations": decls}]);
    }
    let mode = match &o["tool_choice"] {
        Value::String(s) if s == "required" => Some(json!({"mode": "ANY"})),
        Value::String(s) if s == "none" => Some(json!({"mode": "NONE"})),
        Value::String(s) if s == "auto" => Some(json!({"mode": "AUTO"})),
        Value::Object(c) => Some(
            json!({"mode": "ANY", "allowedFunctionNames": [c.get("function").map_or(Value::Null, |f| f["name"].clone())]}),
        ),
        _ => None,
    };
    if let Some(m) = mode {
        g["toolConfig"] = json!({"functionCallingConfig": m});
    }
    Ok(g)
}

fn user_part(p: &Value) -> Option<Value> {
    match p["type"].as_str()? {
        "text" => Some(json!({"text": p["text"]})),
        "image_url" => {
            let url = p["image_url"]["url"].as_str()?;
            let (mime, data) = url.strip_prefix("data:")?.split_once(";base64,")?;
            Some(json!({"inlineData": {"mimeType": mime, "data": data}}))
        }
        _ => None,
    }
}

/// Tokens of a Gemini `usageMetadata` (thoughts are output).
pub fn usage(u: &Value) -> Option<Usage> {
    let input = u["promptTokenCount"].as_u64()?;
    Some(Usage {
        input,
        cached_input: u["cachedContentTokenCount"].as_u64().unwrap_or(0),
        output: u["candidatesTokenCount"].as_u64().unwrap_or(0)
            + u["thoughtsTokenCount"].as_u64().unwrap_or(0),
    })
}

fn finish(reason: Option<&str>, called: bool) -> Option<&'static str> {
    Some(match reason? {
        // A function call still ends with STOP.
        "STOP" if called => "tool_calls",
        "STOP" => "stop",
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" => "content_filter",
        _ => "stop",
    })
}

/// The text and function calls of a candidate, calls numbered from `first_call`.
fn parts_of(candidate: &Value, first_call: usize) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in candidate["content"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if p["thought"].as_bool() == Some(true) {
            continue;
        }
        if let Some(t) = p["text"].as_str() {
            text.push_str(t);
        }
        if let Some(fc) = p.get("functionCall") {
            let args = if fc["args"].is_null() {
                json!({})
            } else {
                fc["args"].clone()
            };
            let n = first_call + calls.len();
            calls.push(json!({"id": format!("call_{n}"), "type": "function",
                "function": {"name": fc["name"], "arguments": args.to_string()}}));
        }
    }
    (text, calls)
}

/// A Gemini answer as an OpenAI chat answer.
pub fn response_to_openai(g: &Value, model: &str) -> Value {
    let c = &g["candidates"][0];
    let (text, calls) = parts_of(c, 0);
    let blocked = g["candidates"].as_array().is_none_or(Vec::is_empty)
        && !g["promptFeedback"]["blockReason"].is_null();
    let reason = if blocked {
        "content_filter"
    } else {
        finish(c["finishReason"].as_str(), !calls.is_empty()).unwrap_or("stop")
    };
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let u = usage(&g["usageMetadata"]).unwrap_or_default();
    json!({"id": format!("chatcmpl-{}", g["responseId"].as_str().unwrap_or("gemini")), "object": "chat.completion",
        "created": crate::unix_now(), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reason}],
        "usage": crate::translate::openai_usage(&u)})
}

/// An OpenAI embeddings request as a `batchEmbedContents` body for `model`.
pub fn embed_request(o: &Value, model: &str) -> Result<Value, String> {
    let inputs: Vec<String> = match &o["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or("Gemini embeds text inputs only")
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("\"input\" is a string or a list of strings".into()),
    };
    let requests: Vec<Value> = inputs
        .iter()
        .map(|t| {
            let mut r =
                json!({"model": format!("models/{model}"), "content": {"parts": [{"text": t}]}});
            if let Some(d) = o["dimensions"].as_u64() {
                r["outputDimensionality"] = json!(d);
            }
            r
        })
        .collect();
    Ok(json!({"requests": requests}))
}

/// A `batchEmbedContents` answer as OpenAI's; Gemini counts no tokens, so they are
/// estimated from the text (about four bytes a token).
pub fn embed_response(g: &Value, model: &str, input_bytes: usize) -> (Value, Usage) {
    let data: Vec<Value> = g["embeddings"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e["values"]}))
        .collect();
    let tokens = (input_bytes as u64 / 4).max(1);
    let u = Usage {
        input: tokens,
        cached_input: 0,
        output: 0,
    };
    (
        json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
        u,
    )
}

/// Gemini `alt=sse` chunks (each a whole answer with only the new parts) → OpenAI chunks.
pub struct GeminiToOpenAi {
    model: String,
    created: u64,
    wants_usage: bool,
    started: bool,
    calls: usize,
    pub usage: Option<Usage>,
    finished: bool,
}

impl GeminiToOpenAi {
    pub fn new(model: &str, wants_usage: bool) -> Self {
        Self {
            model: model.to_owned(),
            created: crate::unix_now(),
            wants_usage,
            started: false,
            calls: 0,
            usage: None,
            finished: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        let mut c = json!({"id": "chatcmpl-gemini", "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if self.wants_usage {
            c["usage"] = Value::Null;
        }
        Bytes::from(format!("data: {c}\n\n"))
    }

    /// One `data:` payload of the Gemini stream; OpenAI's chunks for it.
    pub fn push(&mut self, data: &str) -> Vec<Bytes> {
        let mut out = Vec::new();
        let Ok(g) = serde_json::from_str::<Value>(data) else {
            return out;
        };
        if !g["error"].is_null() {
            out.push(Bytes::from(format!("data: {}\n\n", json!({"error": {"message": g["error"]["message"], "type": "api_error", "param": null, "code": null}}))));
            self.finished = true;
            return out;
        }
        if !self.started {
            self.started = true;
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        if let Some(u) = usage(&g["usageMetadata"]) {
            self.usage = Some(u);
        }
        let c = &g["candidates"][0];
        let (text, calls) = parts_of(c, self.calls);
        if !text.is_empty() {
            out.push(self.chunk(json!({"content": text}), None));
        }
        for call in &calls {
            let idx = self.calls;
            self.calls += 1;
            let mut tc = call.clone();
            tc["index"] = json!(idx);
            out.push(self.chunk(json!({"tool_calls": [tc]}), None));
        }
        if let Some(f) = finish(c["finishReason"].as_str(), self.calls > 0) {
            out.push(self.chunk(json!({}), Some(f)));
        }
        out
    }

    /// The stream ended (Gemini sends no `[DONE]`).
    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let usage = self.usage.unwrap_or_default();
        let usage = self.wants_usage.then_some(&usage);
        out.extend(crate::translate_stream::openai_tail(
            "chatcmpl-gemini",
            self.created,
            &self.model,
            usage,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_conversation_becomes_gemini_contents() {
        let o = json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "12C"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "tool_choice": "required", "max_tokens": 50, "stop": "END"});
        let g = request_from_openai(&o).unwrap();
        assert_eq!(
            g["systemInstruction"],
            json!({"parts": [{"text": "Be brief."}]})
        );
        assert_eq!(g["contents"][0]["parts"][1]["inlineData"]["data"], "AAAA");
        assert_eq!(g["contents"][1]["role"], "model");
        assert_eq!(
            g["contents"][1]["parts"][0]["functionCall"]["args"],
            json!({"city": "Oslo"})
        );
        assert_eq!(
            g["contents"][2]["parts"][0]["functionResponse"]["name"], "get_weather",
            "found by the call's id"
        );
        assert_eq!(g["toolConfig"]["functionCallingConfig"]["mode"], "ANY");
        assert_eq!(
            g["generationConfig"],
            json!({"maxOutputTokens": 50, "stopSequences": ["END"]})
        );
    }

    #[test]
    fn answers_and_streams_become_openai() {
        let g = json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 2, "thoughtsTokenCount": 3}});
        let o = response_to_openai(&g, "m");
        assert_eq!(
            o["choices"][0]["finish_reason"], "tool_calls",
            "a call ends with STOP but is a tool call"
        );
        assert_eq!(
            o["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
        assert_eq!(o["usage"]["completion_tokens"], 5, "thoughts are output");
        let blocked =
            response_to_openai(&json!({"promptFeedback": {"blockReason": "SAFETY"}}), "m");
        assert_eq!(blocked["choices"][0]["finish_reason"], "content_filter");

        let mut t = GeminiToOpenAi::new("m", true);
        let mut out = t.push(r#"{"candidates":[{"content":{"parts":[{"text":"Hel"}]}}]}"#);
        out.extend(t.push(r#"{"candidates":[{"content":{"parts":[{"text":"lo"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2}}"#));
        t.finish(&mut out);
        let text: Vec<String> = out
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert!(text[1].contains("\"Hel\"") && text[2].contains("\"lo\""));
        assert!(text[3].contains("\"finish_reason\":\"stop\""));
        assert!(text[4].contains("\"completion_tokens\":2"));
        assert_eq!(text[5], "data: [DONE]\n\n");
    }
}
