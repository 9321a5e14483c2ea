//! Structure-aware fuzzing on stable, for tests: random JSON documents built from the words
//! a format uses (so most reach deep into its parser), from a fixed seed.

use serde_json::{Map, Value, json};

/// `WEIR_FUZZ_ROUNDS` when set (a longer hunt), else `default` (what CI runs).
pub fn rounds(default: usize) -> usize {
    std::env::var("WEIR_FUZZ_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// A random JSON value at most `depth` deep: objects keyed by `keys`, strings often from
/// `words`, and every other JSON type.
pub fn value(rng: &mut fastrand::Rng, depth: u32, keys: &[&str], words: &[&str]) -> Value {
    let pick = if depth == 0 {
        rng.u8(0..5)
    } else {
        rng.u8(0..8)
    };
    match pick {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => json!(rng.i64(-3..100_000)),
        3 => Value::String(words[rng.usize(..words.len())].to_owned()),
        4 => Value::String((0..rng.usize(0..20)).map(|_| rng.alphanumeric()).collect()),
        5 | 6 => {
            let mut m = Map::new();
            for _ in 0..rng.usize(0..6) {
                let k = keys[rng.usize(..keys.len())].to_owned();
                m.insert(k, value(rng, depth - 1, keys, words));
            }
            Value::Object(m)
        }
        _ => Value::Array(
            (0..rng.usize(0..4))
                .map(|_| value(rng, depth - 1, keys, words))
                .collect(),
        ),
    }
}
