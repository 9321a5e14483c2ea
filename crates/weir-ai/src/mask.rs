//! Masking of personal data in prompts before they leave Weir: e-mail addresses, card
//! numbers (13–19 digits passing the Luhn check) and phone numbers become `[EMAIL]`,
//! `[CARD]` and `[PHONE]` in every text of the request's messages.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

// The patterns are constants that compile; a failure would be a bug caught by the tests.
#[allow(clippy::expect_used)]
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
        .expect("a valid pattern")
});
#[allow(clippy::expect_used)]
static DIGITS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+?\(?\d[\d\s().-]{6,}\d").expect("a valid pattern"));

#[derive(Clone, Copy, Default)]
pub struct Mask {
    pub email: bool,
    pub phone: bool,
    pub card: bool,
}

impl Mask {
    pub fn from_names(names: &[String]) -> Option<Self> {
        let m = Self {
            email: names.iter().any(|n| n == "email"),
            phone: names.iter().any(|n| n == "phone"),
            card: names.iter().any(|n| n == "card"),
        };
        (m.email || m.phone || m.card).then_some(m)
    }

    /// Masks `text`.
    pub fn text(&self, text: &str) -> String {
        let mut out = if self.email {
            EMAIL.replace_all(text, "[EMAIL]").into_owned()
        } else {
            text.to_owned()
        };
        if self.card || self.phone {
            out = DIGITS
                .replace_all(&out, |c: &regex::Captures<'_>| {
                    let found = &c[0];
                    let digits: Vec<u32> = found.chars().filter_map(|ch| ch.to_digit(10)).collect();
                    if self.card && (13..=19).contains(&digits.len()) && luhn(&digits) {
                        "[CARD]".to_owned()
                    } else if self.phone && (8..=15).contains(&digits.len()) {
                        "[PHONE]".to_owned()
                    } else {
                        found.to_owned()
                    }
                })
                .into_owned();
        }
        out
    }

    /// Masks the system prompt and every text block of an Anthropic Messages request.
    pub fn anthropic(&self, request: &mut Value) {
        let texts = |v: &mut Value| match v {
            Value::String(s) => *s = self.text(s),
            Value::Array(blocks) => {
                for b in blocks {
                    if let Some(Value::String(s)) = b.get_mut("text") {
                        *s = self.text(s);
                    }
                }
            }
            _ => {}
        };
        // `get_mut`, never indexing: an index adds the field as null when it is missing,
        // and a provider may refuse what the client never sent (`"system": null`).
        if let Some(system) = request.get_mut("system") {
            texts(system);
        }
        for m in messages(request) {
            if let Some(content) = m.get_mut("content") {
                texts(content);
            }
        }
    }

    /// Masks every text of an OpenAI-shaped request's messages (and `input`).
    pub fn request(&self, request: &mut Value) {
        for m in messages(request) {
            match m.get_mut("content") {
                Some(Value::String(s)) => *s = self.text(s),
                Some(Value::Array(parts)) => {
                    for p in parts {
                        if let Some(Value::String(s)) = p.get_mut("text") {
                            *s = self.text(s);
                        }
                    }
                }
                _ => {}
            }
        }
        match request.get_mut("input") {
            Some(Value::String(s)) => *s = self.text(s),
            Some(Value::Array(items)) => {
                for i in items {
                    if let Value::String(s) = i {
                        *s = self.text(s);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The request's messages, if it has any.
fn messages(request: &mut Value) -> impl Iterator<Item = &mut Value> {
    request
        .get_mut("messages")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_cards_and_phones_are_masked_and_the_rest_kept() {
        let m = Mask::from_names(&["email".into(), "phone".into(), "card".into()]).unwrap();
        assert_eq!(
            m.text("Mail jane.doe+x@mail.example.co.uk or call +47 912 34 567; card 4111 1111 1111 1111, order 12345, year 2026."),
            "Mail [EMAIL] or call [PHONE]; card [CARD], order 12345, year 2026."
        );
        // Not a card (fails Luhn), but phone-length digits are a phone.
        assert_eq!(m.text("id 4111-1111-1111-1112"), "id 4111-1111-1111-1112");
        let only_email = Mask::from_names(&["email".into()]).unwrap();
        assert_eq!(
            only_email.text("a@b.io 4111111111111111"),
            "[EMAIL] 4111111111111111"
        );
        let mut req = serde_json::json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "me@x.org"}]}, {"role": "system", "content": "call 555-123-4567"}]});
        m.request(&mut req);
        assert_eq!(req["messages"][0]["content"][0]["text"], "[EMAIL]");
        assert_eq!(req["messages"][1]["content"], "call [PHONE]");
    }

    #[test]
    fn masking_never_adds_a_field() {
        let m = Mask::from_names(&["email".into()]).unwrap();
        let mut chat = serde_json::json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": []}, {"role": "user", "content": "a@b.io"}]});
        m.request(&mut chat);
        assert_eq!(
            chat,
            serde_json::json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": []}, {"role": "user", "content": "[EMAIL]"}]})
        );
        let mut embeddings = serde_json::json!({"model": "m", "input": "a@b.io"});
        m.request(&mut embeddings);
        assert_eq!(
            embeddings,
            serde_json::json!({"model": "m", "input": "[EMAIL]"})
        );
        let mut anthropic = serde_json::json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "a@b.io"}]});
        m.anthropic(&mut anthropic);
        assert_eq!(
            anthropic,
            serde_json::json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "[EMAIL]"}]})
        );
    }
}
