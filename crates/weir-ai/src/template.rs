//! Prompt templates as APIs: a JSON object of variables fills `{{name}}` places in the
//! route's template; the text goes to the route's model as one user message and the
//! route answers `{"output": …, "model": …, "usage": …}`.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::{Value, json};

use crate::errors;
use crate::serve::{AiBody, AiResponse, AiRoute, chat_once};

/// Fills `template` from `vars`; the name of the first variable missing.
pub fn render(template: &str, vars: &serde_json::Map<String, Value>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = after[..end].trim();
        match vars.get(name) {
            Some(Value::String(s)) => out.push_str(s),
            Some(other) => out.push_str(&other.to_string()),
            None => return Err(name.to_owned()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

pub(crate) async fn answer(
    route: &AiRoute,
    template: &str,
    body: Bytes,
    consumer: crate::serve::Caller<'_>,
) -> AiResponse {
    let vars = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        Err(e) => {
            return errors::openai(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &crate::serve::not_json(&e),
            );
        }
        _ => {
            return errors::openai(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "POST a JSON object of the template's variables",
            );
        }
    };
    let prompt = match render(template, &vars) {
        Ok(p) => p,
        Err(name) => {
            return errors::openai(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("the variable {name:?} is missing from the body"),
            );
        }
    };
    let Some(name) = route.default_model.as_deref() else {
        return errors::openai(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "the route names no model",
        );
    };
    if consumer
        .and_then(|c| c.models.as_ref())
        .is_some_and(|m| !m.iter().any(|x| x == name))
    {
        return errors::openai(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            &format!("this key may not use the model {name:?}"),
        );
    }
    let Some(model) = route.catalog.model(name) else {
        return errors::model_not_found(name);
    };
    let mut request = json!({"model": name, "messages": [{"role": "user", "content": prompt}]});
    // As on every AI route: masked before it is cached or sent.
    if let Some(m) = &route.mask {
        m.request(&mut request);
    }
    let cache_key = route.cache.as_ref().map(|_| {
        let who = consumer.map_or("-", |c| &*c.name);
        crate::cache::AiCache::key(who, "template", &request)
    });
    if let (Some(c), Some(k)) = (&route.cache, &cache_key)
        && let Some(hit) = c.get(k)
    {
        let mut rsp = AiResponse::json(StatusCode::OK, &Value::Null);
        rsp.body = AiBody::Full(hit);
        rsp.headers
            .insert("x-weir-cache", HeaderValue::from_static("hit"));
        return rsp;
    }
    let rsp = chat_once(route, model, request, consumer).await;
    if !rsp.status.is_success() {
        return rsp;
    }
    let AiBody::Full(bytes) = &rsp.body else {
        return rsp;
    };
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return errors::openai(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "the provider's answer was not JSON",
        );
    };
    let output = v["choices"][0]["message"]["content"].clone();
    let mut answer = AiResponse::json(
        StatusCode::OK,
        &json!({"output": output, "model": name, "usage": v["usage"]}),
    );
    if let (Some(c), Some(k), AiBody::Full(b)) = (&route.cache, cache_key, &answer.body) {
        c.put(k, b.clone());
        answer
            .headers
            .insert("x-weir-cache", HeaderValue::from_static("miss"));
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_fill_their_places() {
        let vars: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"text":"a {{b}} c","max_words":12}"#).unwrap();
        assert_eq!(
            render("Summarize in {{max_words}} words:\n{{ text }}", &vars).unwrap(),
            "Summarize in 12 words:\na {{b}} c",
            "values are not templates themselves"
        );
        assert_eq!(render("{{nope}}", &vars).unwrap_err(), "nope");
    }
}
