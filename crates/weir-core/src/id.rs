//! Request ids: accepted from the client when well-formed, generated otherwise, and passed on
//! to the upstream and back to the client as `X-Request-Id`.

use http::HeaderValue;

/// Longest client-supplied id that is kept; longer ones are replaced, so a client cannot
/// make every log line carry kilobytes.
pub const MAX_CLIENT_ID_LEN: usize = 128;

#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A fresh 128-bit random id as 32 lowercase hex characters.
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut n = fastrand::u128(..);
        let mut buf = [0u8; 32];
        for b in buf.iter_mut().rev() {
            *b = HEX[(n & 0xf) as usize];
            n >>= 4;
        }
        // The buffer holds only ASCII hex digits, which are valid header bytes.
        let value = HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"));
        Self(value)
    }

    /// Keeps a client's id only if it is short and made of visible ASCII without quotes or
    /// backslashes (so it can be written into a JSON log line unescaped).
    pub fn from_client(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= MAX_CLIENT_ID_LEN
            && bytes
                .iter()
                .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        ok.then(|| Self(value.clone()))
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Both constructors admit only visible ASCII.
        self.0.to_str().unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_32_hex_and_distinct() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.as_str(), b.as_str());
    }

    #[test]
    fn client_ids_are_kept_only_when_safe() {
        assert!(RequestId::from_client(&HeaderValue::from_static("abc-123")).is_some());
        assert!(RequestId::from_client(&HeaderValue::from_static("a\"b")).is_none());
        assert!(RequestId::from_client(&HeaderValue::from_static("a b")).is_none());
        let long = "x".repeat(MAX_CLIENT_ID_LEN + 1);
        assert!(RequestId::from_client(&HeaderValue::from_str(&long).unwrap()).is_none());
    }
}
