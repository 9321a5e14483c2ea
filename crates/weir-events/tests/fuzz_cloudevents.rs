//! Structure-aware fuzzing on stable for CloudEvents parsing (structured, batch and binary
//! mode): random documents built from the specification's attribute names, whole and cut
//! short, must be taken or refused with a reason, never panic. Fixed seed;
//! `WEIR_FUZZ_ROUNDS` runs a longer hunt than CI's.

// Tests: a panic is the failure being looked for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use serde_json::{Map, Value};
use weir_events::cloudevents;

const ATTRIBUTES: [&str; 13] = [
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
    "data_base64",
    "traceparent",
    "partitionkey",
    "weirext",
];
const WORDS: [&str; 9] = [
    "1.0",
    "0.3",
    "application/json",
    "text/plain",
    "2026-12-06T04:00:00Z",
    "not-a-time",
    "aGVsbG8=",
    "!!not base64!!",
    "https://example.com/schema",
];

fn value(rng: &mut fastrand::Rng, depth: u32) -> Value {
    weir_testkit::fuzz::value(rng, depth, &ATTRIBUTES, &WORDS)
}

/// An event-like object: most attributes present, with values of any type.
fn event(rng: &mut fastrand::Rng, depth: u32) -> Value {
    let mut m = Map::new();
    for a in ATTRIBUTES {
        if rng.u8(0..4) > 0 {
            let v = if rng.bool() {
                Value::String(WORDS[rng.usize(..WORDS.len())].to_owned())
            } else {
                value(rng, depth)
            };
            m.insert(a.to_owned(), v);
        }
    }
    Value::Object(m)
}

#[test]
fn cloudevents_are_taken_or_refused_never_a_panic() {
    let mut rng = fastrand::Rng::with_seed(0xC10D_2026_1206);
    let (mut taken, mut refused) = (0usize, 0usize);
    for _ in 0..weir_testkit::fuzz::rounds(20_000) {
        let doc = if rng.bool() {
            event(&mut rng, 3)
        } else {
            Value::Array((0..rng.usize(0..4)).map(|_| event(&mut rng, 2)).collect())
        };
        let mut bytes = doc.to_string().into_bytes();
        if rng.u8(0..5) == 0 {
            bytes.truncate(rng.usize(0..=bytes.len()));
        }
        for batch in [false, true] {
            match cloudevents::from_json(&bytes, batch) {
                Ok(_) => taken += 1,
                Err(why) => {
                    assert!(!why.is_empty());
                    refused += 1;
                }
            }
        }
        // Binary mode: the attributes as ce-* headers, the data as the body.
        let mut headers = http::HeaderMap::new();
        if let Value::Object(m) = &doc {
            for (k, v) in m {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                if let (Ok(name), Ok(value)) = (
                    http::HeaderName::from_bytes(format!("ce-{k}").as_bytes()),
                    http::HeaderValue::from_str(&text),
                ) {
                    headers.insert(name, value);
                }
            }
        }
        let _ = cloudevents::from_binary(&headers, Bytes::from(bytes));
    }
    assert!(taken > 0 && refused > 0, "taken {taken}, refused {refused}");
}
