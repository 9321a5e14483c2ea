//! CloudEvents 1.0 over HTTP, both ways. Every event is stored one way whatever mode it
//! came in: its attributes as `ce-<name>` headers (values decoded, `ce-specversion`
//! included), its `datacontenttype` as `content-type`, and its data as the body. A plain
//! request keeps its content type only. Delivery renders that form as binary mode,
//! structured mode, or plain (the data as published, with the attributes it came with), so
//! an event keeps its attributes whatever the modes in and out.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::Event;

pub const STRUCTURED: &str = "application/cloudevents+json";
pub const BATCH: &str = "application/cloudevents-batch+json";
/// The source and type given to an event that came in without CloudEvents attributes.
pub const PLAIN_TYPE: &str = "weir.event";

/// An event's stored headers and body: what the queue keeps of one CloudEvent.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Stored {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The ordering key: the `partitionkey` attribute.
    pub fn partition_key(&self) -> Option<String> {
        self.get("ce-partitionkey").map(str::to_owned)
    }
}

pub use weir_config::CloudEventsMode as Egress;

/// Whether a content type (lower case, parameters allowed) carries JSON.
fn is_json(ctype: &str) -> bool {
    let base = ctype.split(';').next().unwrap_or("").trim();
    base == "application/json" || base.ends_with("+json") || base == "text/json"
}

/// Characters a `ce-*` header value percent-encodes (HTTP binding 3.1.3.2): space, `"`,
/// `%`, and everything outside printable ASCII.
fn encode_header(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_header(v: &str) -> Option<String> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Attribute names are lower-case ASCII letters and digits (CloudEvents 1.0, 3.1.1).
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A plain or binary-mode request: the body is the data; `ce-*` headers (decoded) and the
/// content type are kept. With `ce-specversion` it must be a whole CloudEvent.
pub fn from_binary(headers: &http::HeaderMap, body: Bytes) -> Result<Stored, &'static str> {
    let mut kept = Vec::new();
    for (name, value) in headers {
        let n = name.as_str();
        if n == "content-type" {
            let v = value
                .to_str()
                .map_err(|_| "the content type must be printable ASCII")?;
            kept.push((n.to_owned(), v.to_owned()));
        } else if let Some(attr) = n.strip_prefix("ce-") {
            if !valid_name(attr) {
                return Err("CloudEvents attribute names are lower-case letters and digits");
            }
            let v = value.to_str().ok().and_then(decode_header).ok_or(
                "CloudEvents headers must be printable ASCII, the rest percent-encoded UTF-8",
            )?;
            kept.push((n.to_owned(), v));
        }
    }
    let stored = Stored {
        headers: kept,
        body,
    };
    if let Some(v) = stored.get("ce-specversion") {
        if v != "1.0" {
            return Err("ce-specversion must be 1.0");
        }
        let present = |n: &str| stored.get(n).is_some_and(|v| !v.is_empty());
        if !(present("ce-id") && present("ce-source") && present("ce-type")) {
            return Err("a binary-mode CloudEvent needs ce-id, ce-source and ce-type");
        }
    }
    Ok(stored)
}

/// One structured-mode CloudEvent (alone or from a batch) as stored: its attributes as
/// headers, its data as the body (`data_base64` decoded; JSON data kept as sent).
pub fn from_structured(item: &Map<String, Value>) -> Result<Stored, &'static str> {
    if item.get("specversion").and_then(Value::as_str) != Some("1.0") {
        return Err("a CloudEvent needs specversion \"1.0\"");
    }
    let attr = |k: &str| {
        item.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if attr("id").is_none() || attr("source").is_none() || attr("type").is_none() {
        return Err("a CloudEvent needs id, source and type");
    }
    let mut headers = Vec::with_capacity(item.len());
    let mut ctype = None;
    for (k, v) in item {
        if k == "data" || k == "data_base64" {
            continue;
        }
        if !valid_name(k) {
            return Err("CloudEvents attribute names are lower-case letters and digits");
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            _ => return Err("CloudEvents attributes are strings, numbers or booleans"),
        };
        if k == "datacontenttype" {
            ctype = Some(text);
        } else {
            headers.push((format!("ce-{k}"), text));
        }
    }
    let body = match (item.get("data"), item.get("data_base64")) {
        (Some(_), Some(_)) => return Err("a CloudEvent has data or data_base64, not both"),
        (None, Some(Value::String(b64))) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| "data_base64 is not valid base64")?,
        ),
        (None, Some(_)) => return Err("data_base64 is a base64 string"),
        (Some(Value::String(s)), None) if ctype.as_deref().is_some_and(|c| !is_json(c)) => {
            Bytes::from(s.clone())
        }
        (Some(data), None) => {
            // JSON data: absent a datacontenttype, JSON is what it is (JSON format 3.1).
            ctype.get_or_insert_with(|| "application/json".to_owned());
            Bytes::from(data.to_string())
        }
        (None, None) => Bytes::new(),
    };
    if let Some(c) = ctype {
        headers.push(("content-type".to_owned(), c));
    }
    Ok(Stored { headers, body })
}

/// Parses a structured document or a batch (`batch`), as stored events.
pub fn from_json(bytes: &[u8], batch: bool) -> Result<Vec<Stored>, &'static str> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|_| {
        if batch {
            "a CloudEvents batch is a JSON array of events"
        } else {
            "a structured CloudEvent is a JSON object"
        }
    })?;
    let items = match (doc, batch) {
        (Value::Array(items), true) if !items.is_empty() => items,
        (Value::Array(_), true) => return Err("the CloudEvents batch is empty"),
        (_, true) => return Err("a CloudEvents batch is a JSON array of events"),
        (one, false) => vec![one],
    };
    items
        .iter()
        .map(|item| {
            item.as_object()
                .ok_or("each CloudEvent is a JSON object")
                .and_then(from_structured)
        })
        .collect()
}

/// The event's attributes, in stored order, and its content type: those it came with, or
/// for an event that came in plain (and `synthesize`), the required ones made from it.
fn attributes(
    e: &Event,
    headers: &[(String, String)],
    synthesize: bool,
) -> (Vec<(String, String)>, Option<String>) {
    let mut ctype = None;
    let mut attrs = Vec::new();
    for (k, v) in headers {
        if k == "content-type" {
            ctype = Some(v.clone());
        } else if let Some(a) = k.strip_prefix("ce-") {
            attrs.push((a.to_owned(), v.clone()));
        }
    }
    let is_cloudevent = attrs.iter().any(|(k, _)| k == "specversion");
    if synthesize && !is_cloudevent {
        let mut add = |k: &str, v: String| {
            if !attrs.iter().any(|(a, _)| a == k) {
                attrs.push((k.to_owned(), v));
            }
        };
        add("specversion", "1.0".to_owned());
        add("id", e.id.clone());
        add("source", format!("/weir/topics/{}", e.topic));
        add("type", PLAIN_TYPE.to_owned());
        add("time", crate::rfc3339(e.created_ms));
        if let Some(k) = &e.key {
            add("partitionkey", k.clone());
        }
    }
    (attrs, ctype)
}

/// Events stored before attributes were kept as headers held a structured document whole
/// as the body: those are read as the form above (`None` for every other event).
fn legacy(e: &Event) -> Option<Stored> {
    let whole = e
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with(STRUCTURED));
    if !whole {
        return None;
    }
    match serde_json::from_slice::<Value>(&e.body) {
        Ok(Value::Object(item)) => from_structured(&item).ok(),
        _ => None,
    }
}

/// The headers and body that deliver `e` in `mode`.
pub fn render(e: &Event, mode: Egress) -> (Vec<(String, String)>, Bytes) {
    let old = legacy(e);
    let (stored, body) = old
        .as_ref()
        .map_or((&e.headers[..], &e.body), |s| (&s.headers[..], &s.body));
    match mode {
        Egress::Structured => (
            vec![("content-type".to_owned(), STRUCTURED.to_owned())],
            structured(e, stored, body),
        ),
        Egress::Binary | Egress::Plain => {
            let (attrs, ctype) = attributes(e, stored, mode == Egress::Binary);
            let mut headers: Vec<(String, String)> = attrs
                .into_iter()
                .map(|(k, v)| (format!("ce-{k}"), encode_header(&v)))
                .collect();
            if let Some(c) = ctype {
                headers.push(("content-type".to_owned(), c));
            }
            (headers, Bytes::clone(body))
        }
    }
}

/// The event as one structured-mode document: its attributes, `datacontenttype`, and the
/// data (JSON kept as JSON, other text as a string, anything else as `data_base64`).
fn structured(e: &Event, stored: &[(String, String)], body: &Bytes) -> Bytes {
    let (attrs, ctype) = attributes(e, stored, true);
    let mut doc = Map::new();
    for (k, v) in attrs {
        doc.insert(k, Value::String(v));
    }
    if !body.is_empty() {
        let json = ctype.as_deref().is_none_or(is_json);
        match std::str::from_utf8(body) {
            Ok(_) if json && let Ok(v) = serde_json::from_slice::<Value>(body) => {
                doc.insert("data".into(), v);
            }
            Ok(text) if !json => {
                doc.insert("data".into(), text.into());
            }
            _ => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(body);
                doc.insert("data_base64".into(), b64.into());
            }
        }
    }
    if let Some(c) = ctype {
        doc.insert("datacontenttype".into(), c.into());
    }
    Bytes::from(Value::Object(doc).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(headers: Vec<(&str, &str)>, body: &'static [u8]) -> Event {
        Event {
            seq: 1,
            id: "e-1".into(),
            topic: "orders".into(),
            key: None,
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            body: Bytes::from_static(body),
            created_ms: 0,
        }
    }

    fn get<'a>(h: &'a [(String, String)], k: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_structured_event_is_stored_as_attributes_and_data_and_sent_back_whole() {
        let doc = br#"{"specversion":"1.0","id":"o-7","source":"/shop","type":"order.created",
            "subject":"order/7","time":"2026-01-02T03:04:05Z","traceparent":"00-ab-cd-01",
            "datacontenttype":"application/json","data":{"total":12.5}}"#;
        let stored = from_json(doc, false).unwrap().remove(0);
        assert_eq!(stored.body.as_ref(), br#"{"total":12.5}"#);
        let e = Event {
            headers: stored.headers,
            body: stored.body,
            ..event(vec![], b"")
        };
        let (_, body) = render(&e, Egress::Structured);
        let out: Value = serde_json::from_slice(&body).unwrap();
        let sent: Value = serde_json::from_slice(doc).unwrap();
        assert_eq!(out, sent, "every attribute kept, nothing wrapped twice");
        let (headers, body) = render(&e, Egress::Binary);
        assert_eq!(get(&headers, "ce-subject"), Some("order/7"));
        assert_eq!(get(&headers, "ce-time"), Some("2026-01-02T03:04:05Z"));
        assert_eq!(get(&headers, "content-type"), Some("application/json"));
        assert_eq!(body.as_ref(), br#"{"total":12.5}"#);
    }

    #[test]
    fn a_plain_event_gets_the_required_attributes_in_binary_mode_only() {
        let e = event(vec![("content-type", "text/plain")], b"hello");
        let (h, body) = render(&e, Egress::Binary);
        assert_eq!(get(&h, "ce-specversion"), Some("1.0"));
        assert_eq!(get(&h, "ce-id"), Some("e-1"));
        assert_eq!(get(&h, "ce-source"), Some("/weir/topics/orders"));
        assert_eq!(get(&h, "ce-type"), Some("weir.event"));
        assert_eq!(get(&h, "ce-time"), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(body.as_ref(), b"hello");
        let (h, _) = render(&e, Egress::Plain);
        assert_eq!(h, vec![("content-type".into(), "text/plain".into())]);
        let (_, doc) = render(&e, Egress::Structured);
        let doc: Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(doc["data"], "hello");
        let bin = event(
            vec![("content-type", "application/octet-stream")],
            &[0xff, 0],
        );
        let (_, doc) = render(&bin, Egress::Structured);
        let doc: Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(doc["data_base64"], "/wA=");
    }

    #[test]
    fn header_values_are_percent_encoded_both_ways() {
        let mut h = http::HeaderMap::new();
        for (k, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("ce-subject", "caf%C3%A9%20au%20lait"),
        ] {
            h.insert(http::HeaderName::from_static(k), v.parse().unwrap());
        }
        let s = from_binary(&h, Bytes::new()).unwrap();
        assert_eq!(s.get("ce-subject"), Some("café au lait"));
        let e = Event {
            headers: s.headers,
            ..event(vec![], b"")
        };
        let (out, _) = render(&e, Egress::Binary);
        assert_eq!(get(&out, "ce-subject"), Some("caf%C3%A9%20au%20lait"));
        h.insert("ce-subject", "%zz".parse().unwrap());
        assert!(from_binary(&h, Bytes::new()).is_err());
    }

    #[test]
    fn base64_and_text_data_round_trip() {
        let doc = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"/wA=","datacontenttype":"application/octet-stream"}"#;
        let s = from_json(doc, false).unwrap().remove(0);
        assert_eq!(s.body.as_ref(), &[0xff, 0]);
        let doc = br#"[{"specversion":"1.0","id":"1","source":"/s","type":"t","data":"<a/>","datacontenttype":"application/xml"}]"#;
        let s = from_json(doc, true).unwrap().remove(0);
        assert_eq!(s.body.as_ref(), b"<a/>");
        assert!(from_json(b"[]", true).is_err());
        assert!(
            from_json(
                br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","x":{}}"#,
                false
            )
            .is_err()
        );
        assert!(
            from_json(
                br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","Bad":"x"}"#,
                false
            )
            .is_err()
        );
    }

    #[test]
    fn events_stored_whole_before_are_read_as_attributes() {
        let e = event(
            vec![
                ("content-type", STRUCTURED),
                ("ce-id", "o-1"),
                ("ce-source", "/shop"),
                ("ce-type", "t"),
            ],
            br#"{"specversion":"1.0","id":"o-1","source":"/shop","type":"t","subject":"s","data":{"a":1}}"#,
        );
        let (_, doc) = render(&e, Egress::Structured);
        let doc: Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(doc["subject"], "s");
        assert_eq!(doc["data"]["a"], 1);
    }
}
