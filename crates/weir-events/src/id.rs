//! Event ids: UUIDv7 (RFC 9562), so ids sort by creation time and never repeat.

/// A new UUIDv7: 48 bits of Unix milliseconds, the version, 74 random bits.
pub fn new_event_id() -> String {
    let ms = crate::now_ms().max(0) as u64;
    let mut rand = [0u8; 10];
    // A failing system RNG leaves zeros; the timestamp still orders, and ids published
    // twice are deduplicated by the queue.
    let _ = getrandom::fill(&mut rand);
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6..].copy_from_slice(&rand);
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(&b)
}

/// The id of the event published under an idempotency key: the same `scope` (route and
/// caller) and key always give the same id, so a retried publish is the same event. A
/// UUIDv8 made of the SHA-256 of both.
pub fn event_id_for_key(scope: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((scope.len() as u64).to_be_bytes());
    h.update(scope.as_bytes());
    h.update(key.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(&b)
}

fn format_uuid(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_7_variant_rfc_and_ordered() {
        let a = new_event_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_event_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert!(a < b, "{a} < {b}");
        assert_ne!(new_event_id(), new_event_id());
    }

    #[test]
    fn keyed_ids_are_stable_per_scope_and_key() {
        let a = event_id_for_key("route|acme", "k-1");
        assert_eq!(a, event_id_for_key("route|acme", "k-1"));
        assert_ne!(a, event_id_for_key("route|beta", "k-1"));
        assert_ne!(a, event_id_for_key("route|acme", "k-2"));
        assert_eq!(&a[14..15], "8");
    }
}
