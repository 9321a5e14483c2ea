//! JSON string escaping for the lines and bodies Weir writes by hand on hot paths (the
//! access log, error answers), where building a `serde_json::Value` would cost more than
//! the answer itself.

use std::fmt::{self, Write as _};

/// Appends `v` to `s` as a JSON string, quotes included.
pub fn push_str(s: &mut String, v: &str) {
    s.push('"');
    push_escaped(s, v);
    s.push('"');
}

/// Appends `v` escaped for the inside of a JSON string.
fn push_escaped(s: &mut String, v: &str) {
    // Most values need no escape: runs of plain text are copied whole.
    let mut plain = 0;
    for (i, b) in v.bytes().enumerate() {
        if b == b'"' || b == b'\\' || b < 0x20 {
            s.push_str(&v[plain..i]);
            match b {
                b'"' => s.push_str("\\\""),
                b'\\' => s.push_str("\\\\"),
                b'\n' => s.push_str("\\n"),
                _ => {
                    let _ = write!(s, "\\u{b:04x}");
                }
            }
            // An ASCII byte is a whole character, so the next run starts on a boundary.
            plain = i + 1;
        }
    }
    s.push_str(&v[plain..]);
}

/// Appends `n` in decimal, at least `width` digits (zero-padded): the integer fields of the
/// lines written per request, without `fmt` machinery.
pub fn push_u64(s: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = i.min(digits.len().saturating_sub(width));
    // Only ASCII digits were written, so the bytes are valid UTF-8.
    s.push_str(std::str::from_utf8(&digits[start..]).unwrap_or("0"));
}

/// Appends an IP address as text (IPv4 by hand, the common case; IPv6 through `Display`).
pub fn push_ip(s: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                push_u64(s, u64::from(octet), 1);
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(s, "{v6}");
        }
    }
}

/// A `fmt::Write` that escapes what is written into a JSON string's inside, so a
/// `Display` value goes into JSON without a `String` of its own: `write!(Escaped(&mut s), "{e}")`.
pub struct Escaped<'a>(pub &'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, v: &str) -> fmt::Result {
        push_escaped(self.0, v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_addresses_as_text() {
        let mut s = String::new();
        for (n, w) in [(0, 1), (7, 3), (1234, 2), (u64::MAX, 1), (42, 5)] {
            push_u64(&mut s, n, w);
            s.push(' ');
        }
        assert_eq!(s, format!("0 007 1234 {} 00042 ", u64::MAX));
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.20.3.4",
            "::1",
            "2001:db8::7",
        ] {
            let mut s = String::new();
            push_ip(&mut s, ip.parse().unwrap());
            assert_eq!(s, ip);
        }
    }

    #[test]
    fn escapes_round_trip_through_a_json_parser() {
        for v in [
            "plain",
            "q\"uote",
            "back\\slash",
            "line\nfeed\ttab\u{1}",
            "ünïcødé ✓",
            "",
        ] {
            let mut s = String::new();
            push_str(&mut s, v);
            let back: String = serde_json::from_str(&s).unwrap();
            assert_eq!(back, v, "{s}");
            let mut d = String::from("\"");
            write!(Escaped(&mut d), "{v}-{}", 7).unwrap();
            d.push('"');
            let back: String = serde_json::from_str(&d).unwrap();
            assert_eq!(back, format!("{v}-7"));
        }
    }
}
