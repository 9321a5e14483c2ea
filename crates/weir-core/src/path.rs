//! The one path normalizer: every request path is normalized once, before routing, and the
//! same normalized path is used for matching, policies, logging and forwarding.
//!
//! Rules (documented for users in `docs/configuration.md`, "Path normalization"):
//! - the path must start with `/`; raw control bytes, spaces, non-ASCII and `\` are refused;
//! - `%XX` is decoded exactly once, and only when it encodes an unreserved character
//!   (`A-Z a-z 0-9 - . _ ~`); every other escape is kept, with its hex in upper case;
//! - `%00` and other encoded control bytes are refused;
//! - `%2F` and `%5C` (encoded `/` and `\`) are refused by default, or kept encoded, never
//!   turned into separators ([`EncodedSlash`]);
//! - repeated `/` collapse to one; `.` and `..` segments (also `%2e` forms) are resolved
//!   and can never climb above `/`;
//! - `;` is an ordinary character, but a segment that starts with `.;` or `..;` is refused,
//!   because servlet-style upstreams would collapse it after routing.

use std::borrow::Cow;

/// What to do with `%2F` and `%5C` in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodedSlash {
    /// Answer 400 (the default).
    #[default]
    Reject,
    /// Keep the escape as it is: it is part of a segment, never a separator.
    Keep,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PathOptions {
    pub encoded_slash: EncodedSlash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("the request path must start with '/'")]
    NotAbsolute,
    #[error("the request path contains a control byte, space, backslash or non-ASCII byte")]
    ForbiddenByte,
    #[error("the request path contains an invalid percent-escape")]
    BadEscape,
    #[error("the request path contains an encoded control byte")]
    EncodedControl,
    #[error("the request path contains an encoded slash or backslash")]
    EncodedSlash,
    #[error("the request path contains a dot-segment with a ';' parameter")]
    DotSemicolon,
}

/// Normalizes `raw` (the path without the query). Borrows when nothing changes, which is
/// the common case, so most requests pay one scan and no allocation.
pub fn normalize_path(raw: &str, opts: PathOptions) -> Result<Cow<'_, str>, NormalizeError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(NormalizeError::NotAbsolute);
    }
    let mut needs_work = false;
    let mut prev = 0u8;
    for &b in bytes {
        match b {
            0..=0x20 | 0x7f..=0xff | b'\\' => return Err(NormalizeError::ForbiddenByte),
            b'%' => needs_work = true,
            b'/' if prev == b'/' => needs_work = true,
            b'.' if prev == b'/' => needs_work = true,
            _ => {}
        }
        prev = b;
    }
    if !needs_work {
        return Ok(Cow::Borrowed(raw));
    }
    slow_path(bytes, opts).map(Cow::Owned)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes escapes segment by segment, then resolves dot-segments on the decoded segments.
fn slow_path(bytes: &[u8], opts: PathOptions) -> Result<String, NormalizeError> {
    const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut segments: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut i = 1; // skip the leading '/'
    let trailing_slash = bytes.len() > 1 && bytes[bytes.len() - 1] == b'/';
    let push_segment = |segments: &mut Vec<String>, seg: String| -> Result<(), NormalizeError> {
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s if s.starts_with(".;") || s.starts_with("..;") => {
                return Err(NormalizeError::DotSemicolon);
            }
            _ => segments.push(seg),
        }
        Ok(())
    };
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' => {
                push_segment(&mut segments, std::mem::take(&mut current))?;
                i += 1;
            }
            b'%' => {
                let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                    return Err(NormalizeError::BadEscape);
                };
                let (Some(h), Some(l)) = (hex_val(h), hex_val(l)) else {
                    return Err(NormalizeError::BadEscape);
                };
                let v = h << 4 | l;
                if v < 0x20 || v == 0x7f {
                    return Err(NormalizeError::EncodedControl);
                }
                if (v == b'/' || v == b'\\') && opts.encoded_slash == EncodedSlash::Reject {
                    return Err(NormalizeError::EncodedSlash);
                }
                if is_unreserved(v) {
                    current.push(v as char);
                } else {
                    current.push('%');
                    current.push(UPPER_HEX[(v >> 4) as usize] as char);
                    current.push(UPPER_HEX[(v & 0xf) as usize] as char);
                }
                i += 3;
            }
            _ => {
                current.push(b as char);
                i += 1;
            }
        }
    }
    let last_is_dot = matches!(current.as_str(), "." | "..");
    push_segment(&mut segments, current)?;
    let mut out = String::with_capacity(bytes.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || ((trailing_slash || last_is_dot) && !segments.is_empty()) {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, NormalizeError> {
        normalize_path(p, PathOptions::default()).map(|c| c.into_owned())
    }

    fn keep(p: &str) -> Result<String, NormalizeError> {
        let opts = PathOptions {
            encoded_slash: EncodedSlash::Keep,
        };
        normalize_path(p, opts).map(|c| c.into_owned())
    }

    #[test]
    fn plain_paths_are_borrowed() {
        let p = "/orders/42";
        assert!(matches!(
            normalize_path(p, PathOptions::default()),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn normalization_table() {
        let table: &[(&str, Result<&str, NormalizeError>)] = &[
            ("/", Ok("/")),
            ("/a/b/", Ok("/a/b/")),
            ("//admin", Ok("/admin")),
            ("/a//b///c", Ok("/a/b/c")),
            ("/public/../admin", Ok("/admin")),
            ("/./admin", Ok("/admin")),
            ("/../../admin", Ok("/admin")),
            ("/%2e%2e/admin", Ok("/admin")),
            ("/public/%2e%2e/admin", Ok("/admin")),
            ("/public/.%2e/admin", Ok("/admin")),
            ("/public/%2e./admin", Ok("/admin")),
            ("/public/%2E%2E/admin", Ok("/admin")),
            ("/%252e%252e/admin", Ok("/%252e%252e/admin")),
            ("/a/b/..", Ok("/a/")),
            ("/a/.", Ok("/a/")),
            ("/..", Ok("/")),
            ("/%7euser", Ok("/~user")),
            ("/caf%c3%a9", Ok("/caf%C3%A9")),
            ("/a%20b", Ok("/a%20b")),
            ("/admin;x=1", Ok("/admin;x=1")),
            ("/q%3Fx", Ok("/q%3Fx")),
            ("/f%23x", Ok("/f%23x")),
            ("/public/..;/admin", Err(NormalizeError::DotSemicolon)),
            ("/public/.;/admin", Err(NormalizeError::DotSemicolon)),
            ("/api%2Fadmin", Err(NormalizeError::EncodedSlash)),
            ("/api%5cadmin", Err(NormalizeError::EncodedSlash)),
            ("/a%00b", Err(NormalizeError::EncodedControl)),
            ("/a%0d%0ab", Err(NormalizeError::EncodedControl)),
            ("/a%zz", Err(NormalizeError::BadEscape)),
            ("/a%2", Err(NormalizeError::BadEscape)),
            ("/a\\b", Err(NormalizeError::ForbiddenByte)),
            ("/a\u{0}b", Err(NormalizeError::ForbiddenByte)),
            ("/a b", Err(NormalizeError::ForbiddenByte)),
            ("admin", Err(NormalizeError::NotAbsolute)),
            ("", Err(NormalizeError::NotAbsolute)),
        ];
        for (input, want) in table {
            let got = n(input);
            let want = want.map(str::to_owned);
            assert_eq!(got, want, "normalize({input:?})");
        }
    }

    #[test]
    fn kept_encoded_slash_is_never_a_separator() {
        assert_eq!(keep("/api%2Fadmin").unwrap(), "/api%2Fadmin");
        assert_eq!(keep("/api%2fadmin/../x").unwrap(), "/x");
        assert_eq!(keep("/a/..%2F..%2Fadmin").unwrap(), "/a/..%2F..%2Fadmin");
    }

    #[test]
    fn normalizing_is_idempotent_and_never_climbs() {
        // A small deterministic property test over random paths from a hostile alphabet.
        let alphabet = [
            "/", ".", "..", "%2e", "%2E", "a", "b", "%41", "%25", ";", "//",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let mut p = String::from("/");
            for _ in 0..rng.usize(0..12) {
                p.push_str(alphabet[rng.usize(0..alphabet.len())]);
            }
            if let Ok(once) = n(&p) {
                assert!(once.starts_with('/'), "{p:?} -> {once:?}");
                assert!(!once.contains("//"), "{p:?} -> {once:?}");
                assert!(
                    !once.split('/').any(|s| s == "." || s == ".."),
                    "{p:?} -> {once:?}"
                );
                assert_eq!(n(&once).unwrap(), once, "not idempotent for {p:?}");
            }
        }
    }
}
