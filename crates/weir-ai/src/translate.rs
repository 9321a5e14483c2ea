//! Translation between OpenAI's Chat Completions and Anthropic's Messages, both ways, for
//! requests and whole answers (streams are in [`crate::translate_stream`]). Used only when
//! the client and the provider speak different APIs; the same API passes through as is.

use serde_json::{Map, Value, json};

use crate::usage::Usage;

/// The output cap sent to Anthropic when an OpenAI request gives none (Anthropic needs one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// An Anthropic Messages request as an OpenAI chat request.
pub fn anthropic_request_to_openai(a: &Value) -> Result<Value, String> {
    let mut messages = Vec::new();
    if !a["system"].is_null() {
        messages.push(json!({"role": "system", "content": text_of(&a["system"])}));
    }
    for m in a["messages"]
        .as_array()
        .ok_or("\"messages\" must be a list")?
    {
        let role = m["role"].as_str().ok_or("every message needs a role")?;
        let blocks = match &m["content"] {
            Value::String(s) => {
                messages.push(json!({"role": role, "content": s}));
                continue;
            }
            Value::Array(b) => b,
            _ => return Err("a message's content is a string or a list of blocks".into()),
        };
        if role == "assistant" {
            let text: String = blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect();
            let calls: Vec<Value> = blocks
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .map(|b| {
                    let input = if b["input"].is_null() {
                        json!({})
                    } else {
                        b["input"].clone()
                    };
                    json!({"id": b["id"], "type": "function",
                        "function": {"name": b["name"], "arguments": input.to_string()}})
                })
                .collect();
            let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
            if !calls.is_empty() {
                msg["tool_calls"] = Value::Array(calls);
            }
            messages.push(msg);
            continue;
        }
        // A user turn: tool results first (as tool messages), then the rest.
        let mut parts = Vec::new();
        for b in blocks {
            match b["type"].as_str() {
                Some("tool_result") => messages.push(json!({"role": "tool",
                    "tool_call_id": b["tool_use_id"], "content": text_of(&b["content"])})),
                Some("text") => parts.push(json!({"type": "text", "text": b["text"]})),
                Some("image") => {
                    let s = &b["source"];
                    let url = match s["type"].as_str() {
                        Some("base64") => format!(
                            "data:{};base64,{}",
                            s["media_type"].as_str().unwrap_or("image/png"),
                            s["data"].as_str().unwrap_or_default()
                        ),
                        _ => s["url"].as_str().unwrap_or_default().to_owned(),
                    };
                    parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                }
                _ => {}
            }
        }
        if !parts.is_empty() {
            messages.push(json!({"role": role, "content": parts}));
        }
    }
    let mut o = json!({"model": a["model"], "messages": messages});
    copy(a, "max_tokens", &mut o, "max_tokens");
    copy(a, "temperature", &mut o, "temperature");
    copy(a, "top_p", &mut o, "top_p");
    copy(a, "stop_sequences", &mut o, "stop");
    copy(a, "stream", &mut o, "stream");
    if let Some(tools) = a["tools"].as_array() {
        o["tools"] = tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {"name": t["name"],
                "description": t["description"], "parameters": t["input_schema"]}})
            })
            .collect();
    }
    if let Some(choice) = a["tool_choice"]["type"].as_str() {
        o["tool_choice"] = match choice {
            "any" => json!("required"),
            "tool" => json!({"type": "function", "function": {"name": a["tool_choice"]["name"]}}),
            "none" => json!("none"),
            _ => json!("auto"),
        };
    }
    if let Some(user) = a["metadata"]["user_id"].as_str() {
        o["user"] = json!(user);
    }
    Ok(o)
}

fn copy(from: &Value, key: &str, to: &mut Value, as_key: &str) {
    if !from[key].is_null() {
        to[as_key] = from[key].clone();
    }
}

/// Mistral's dialect of OpenAI's API: tool-call ids of exactly nine letters and digits
/// (ids from another provider earlier in a conversation are mapped, the same id to the
/// same one, so calls and results still pair), and `random_seed` for `seed`.
pub fn to_mistral(body: &mut Value) {
    fn nine(id: &str) -> String {
        if id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return id.to_owned();
        }
        use sha2::{Digest, Sha256};
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        Sha256::digest(id.as_bytes())
            .iter()
            .take(9)
            .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
            .collect()
    }
    // Only objects are changed: indexing anything else to assign would panic, and a
    // client's body may hold anything where a message or a call belongs.
    let Some(body) = body.as_object_mut() else {
        return;
    };
    let messages = body.get_mut("messages").and_then(Value::as_array_mut);
    for m in messages
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        if let Some(Value::String(id)) = m.get_mut("tool_call_id") {
            *id = nine(id);
        }
        let calls = m.get_mut("tool_calls").and_then(Value::as_array_mut);
        for c in calls.into_iter().flatten().filter_map(Value::as_object_mut) {
            if let Some(Value::String(id)) = c.get_mut("id") {
                *id = nine(id);
            }
        }
    }
    if let Some(seed) = body.remove("seed") {
        body.insert("random_seed".to_owned(), seed);
    }
}

/// An OpenAI chat request as an Anthropic Messages request for `model`.
pub fn openai_request_to_anthropic(o: &Value, model: &str) -> Result<Value, String> {
    if o["n"].as_u64().is_some_and(|n| n > 1) {
        return Err("\"n\" above 1 is not available from this model's provider".into());
    }
    let mut system = Vec::new();
    let mut turns: Vec<(String, Vec<Value>)> = Vec::new();
    let mut push = |role: &str, blocks: Vec<Value>| {
        // Anthropic wants turns that alternate: consecutive ones of a role merge.
        match turns.last_mut() {
            Some((r, b)) if r == role => b.extend(blocks),
            _ => turns.push((role.to_owned(), blocks)),
        }
    };
    for m in o["messages"]
        .as_array()
        .ok_or("\"messages\" must be a list")?
    {
        match m["role"].as_str() {
            Some("system" | "developer") => system.push(text_of(&m["content"])),
            Some("tool") => push(
                "user",
                vec![
                    json!({"type": "tool_result", "tool_use_id": m["tool_call_id"],
                    "content": text_of(&m["content"])}),
                ],
            ),
            Some("assistant") => {
                let mut blocks = Vec::new();
                let text = text_of(&m["content"]);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for c in m["tool_calls"].as_array().into_iter().flatten() {
                    let args = c["function"]["arguments"].as_str().unwrap_or("{}");
                    let input: Value = if args.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(args).map_err(|_| {
                            format!("tool call {} has arguments that are not JSON", c["id"])
                        })?
                    };
                    blocks.push(json!({"type": "tool_use", "id": c["id"],
                        "name": c["function"]["name"], "input": input}));
                }
                push("assistant", blocks);
            }
            Some("user") => {
                let blocks = match &m["content"] {
                    Value::Array(parts) => parts.iter().filter_map(user_part).collect(),
                    c => vec![json!({"type": "text", "text": text_of(c)})],
                };
                push("user", blocks);
            }
            _ => {
                return Err(
                    "a message's role is system, developer, user, assistant or tool".into(),
                );
            }
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let max = o["max_completion_tokens"]
        .as_u64()
        .or(o["max_tokens"].as_u64())
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let mut a = json!({"model": model, "max_tokens": max, "messages": messages});
    if !system.is_empty() {
        a["system"] = json!(system.join("\n\n"));
    }
    if let Some(t) = o["temperature"].as_f64() {
        // OpenAI's range is 0–2, Anthropic's 0–1.
        a["temperature"] = json!(t.min(1.0));
    }
    copy(o, "top_p", &mut a, "top_p");
    match &o["stop"] {
        Value::String(s) => a["stop_sequences"] = json!([s]),
        Value::Array(s) => a["stop_sequences"] = json!(s),
        _ => {}
    }
    copy(o, "stream", &mut a, "stream");
    if let Some(tools) = o["tools"].as_array() {
        a["tools"] = tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                let schema = if f["parameters"].is_null() {
                    json!({"type": "object"})
                } else {
                    f["parameters"].clone()
                };
                let mut tool = json!({"name": f["name"], "input_schema": schema});
                if !f["description"].is_null() {
                    tool["description"] = f["description"].clone();
                }
                tool
            })
            .collect();
    }
    match &o["tool_choice"] {
        Value::String(s) if s == "required" => a["tool_choice"] = json!({"type": "any"}),
        Value::String(s) if s == "none" => a["tool_choice"] = json!({"type": "none"}),
        Value::String(s) if s == "auto" => a["tool_choice"] = json!({"type": "auto"}),
        Value::Object(c) => {
            a["tool_choice"] = json!({"type": "tool", "name": c.get("function").map_or(Value::Null, |f| f["name"].clone())});
        }
        _ => {}
    }
    if let Some(u) = o["user"].as_str() {
        a["metadata"] = json!({"user_id": u});
    }
    Ok(a)
}

fn user_part(p: &Value) -> Option<Value> {
    match p["type"].as_str()? {
        "text" => Some(json!({"type": "text", "text": p["text"]})),
        "image_url" => {
            let url = p["image_url"]["url"].as_str()?;
            if let Some(rest) = url.strip_prefix("data:") {
                let (media, data) = rest.split_once(";base64,")?;
                Some(
                    json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}),
                )
            } else {
                Some(json!({"type": "image", "source": {"type": "url", "url": url}}))
            }
        }
        _ => None,
    }
}

pub fn finish_to_stop_reason(f: &str) -> &'static str {
    match f {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

pub fn stop_reason_to_finish(s: &str) -> &'static str {
    match s {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Anthropic's usage object for `u`.
pub fn anthropic_usage(u: &Usage) -> Value {
    json!({"input_tokens": u.input - u.cached_input.min(u.input), "output_tokens": u.output,
        "cache_read_input_tokens": u.cached_input, "cache_creation_input_tokens": 0})
}

/// OpenAI's usage object for `u`.
pub fn openai_usage(u: &Usage) -> Value {
    json!({"prompt_tokens": u.input, "completion_tokens": u.output, "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cached_input}})
}

/// An OpenAI chat answer as an Anthropic message (for model name `model`).
pub fn openai_response_to_anthropic(o: &Value, model: &str) -> Result<Value, String> {
    let choice = &o["choices"][0];
    let msg = &choice["message"];
    let mut content = Vec::new();
    let text = text_of(&msg["content"]);
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for c in msg["tool_calls"].as_array().into_iter().flatten() {
        let args = c["function"]["arguments"].as_str().unwrap_or("{}");
        let input: Value = if args.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(args)
                .map_err(|_| "the model gave tool arguments that are not JSON".to_owned())?
        };
        content.push(json!({"type": "tool_use", "id": c["id"], "name": c["function"]["name"], "input": input}));
    }
    let usage = Usage::from_openai(&o["usage"]).unwrap_or_default();
    Ok(
        json!({"id": format!("msg_{}", o["id"].as_str().unwrap_or("weir")), "type": "message", "role": "assistant",
        "model": model, "content": content,
        "stop_reason": finish_to_stop_reason(choice["finish_reason"].as_str().unwrap_or("stop")),
        "stop_sequence": null, "usage": anthropic_usage(&usage)}),
    )
}

/// An Anthropic message as an OpenAI chat answer (for model name `model`).
pub fn anthropic_response_to_openai(a: &Value, model: &str) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in a["content"].as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or_default()),
            Some("tool_use") => {
                let input = if b["input"].is_null() {
                    json!({})
                } else {
                    b["input"].clone()
                };
                calls.push(json!({"id": b["id"], "type": "function",
                    "function": {"name": b["name"], "arguments": input.to_string()}}));
            }
            _ => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        },
    );
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let usage = Usage::from_anthropic(&a["usage"]).unwrap_or_default();
    json!({"id": a["id"], "object": "chat.completion", "created": crate::unix_now(), "model": model,
        "choices": [{"index": 0, "message": message,
            "finish_reason": stop_reason_to_finish(a["stop_reason"].as_str().unwrap_or("end_turn"))}],
        "usage": openai_usage(&usage)})
}

/// An OpenAI error body as Anthropic's, and back: (type, message).
pub fn error_parts(body: &Value) -> (String, String) {
    let e = &body["error"];
    let message = e["message"]
        .as_str()
        .unwrap_or("the provider refused the request")
        .to_owned();
    let kind = e["type"].as_str().unwrap_or("api_error").to_owned();
    (kind, message)
}

/// Anthropic's error type for a status.
pub fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anthropic_conversation_with_tools_becomes_openai_and_back() {
        let a = json!({"model": "smart", "max_tokens": 100, "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "12C"},
                    {"type": "text", "text": "And tomorrow?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}], "tool_choice": {"type": "any"},
            "stop_sequences": ["END"]});
        let o = anthropic_request_to_openai(&a).unwrap();
        let m = o["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"], "{}",
            "no-argument tools keep {{}}"
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "12C"})
        );
        assert_eq!(
            m[4]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
        assert_eq!(
            (o["tool_choice"].clone(), o["stop"].clone()),
            (json!("required"), json!(["END"]))
        );

        // And back to Anthropic for an Anthropic provider: the same conversation.
        let back = openai_request_to_anthropic(&o, "claude-x").unwrap();
        assert_eq!(back["system"], "Be brief.");
        assert_eq!(back["messages"][1]["content"][0]["input"], json!({}));
        let user = &back["messages"][2]["content"];
        assert_eq!(user[0]["type"], "tool_result");
        assert_eq!(user[2]["source"]["data"], "AAAA");
        assert_eq!(back["tool_choice"], json!({"type": "any"}));
        assert_eq!(back["max_tokens"], 100);
    }

    #[test]
    fn mistral_gets_nine_character_tool_ids_that_still_pair() {
        let mut o = json!({"seed": 7, "messages": [
            {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_01ABCdef", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "toolu_01ABCdef", "content": "x"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "Ab3De6Gh9", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]});
        to_mistral(&mut o);
        let id = o["messages"][0]["tool_calls"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(id.len(), 9);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(
            o["messages"][1]["tool_call_id"],
            id.as_str(),
            "the result still pairs with its call"
        );
        assert_eq!(
            o["messages"][2]["tool_calls"][0]["id"], "Ab3De6Gh9",
            "Mistral's own ids are kept"
        );
        assert_eq!(
            (o["random_seed"].clone(), o.get("seed").is_none()),
            (json!(7), true)
        );
    }

    #[test]
    fn answers_translate_with_stop_reasons_and_usage() {
        let o = json!({"id": "c1", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}});
        let a = openai_response_to_anthropic(&o, "smart").unwrap();
        assert_eq!(a["stop_reason"], "tool_use");
        assert_eq!(
            a["content"][0],
            json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}})
        );
        assert_eq!(a["usage"]["input_tokens"], 6);
        assert_eq!(a["usage"]["cache_read_input_tokens"], 4);
        let o2 = anthropic_response_to_openai(&a, "smart");
        assert_eq!(o2["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            o2["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(o2["usage"]["prompt_tokens"], 10);
        let bad = json!({"choices": [{"message": {"tool_calls": [{"function": {"arguments": "{oops"}}]}}]});
        assert!(
            openai_response_to_anthropic(&bad, "m").is_err(),
            "invalid JSON is not repaired"
        );
        assert!(openai_request_to_anthropic(&json!({"n": 2, "messages": []}), "m").is_err());
    }
}
