//! Human-friendly units in the config: durations (`500ms`, `2s`, `5m`, `1h`, `7d`) and byte
//! sizes (`512`, `64KiB`, `1MiB`, `2GB`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A duration written as a number with a unit: `ms`, `s`, `m`, `h` or `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }
    pub fn get(self) -> std::time::Duration {
        self.0
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("invalid duration {s:?}: expected a number and a unit, like 5s")
        })?;
        let ms = match unit {
            "ms" => Some(n),
            "s" => n.checked_mul(1_000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            "d" => n.checked_mul(86_400_000),
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit (ms, s, m, h or d)"
                ));
            }
            _ => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {unit:?} (ms, s, m, h or d)"
                ));
            }
        };
        ms.map(Self::from_millis)
            .ok_or_else(|| format!("duration {s:?} is too large"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(de::Error::custom)
    }
}

/// A byte count: a plain number, or a number with `B`, `KB`, `MB`, `GB` (powers of 1000)
/// or `KiB`, `MiB`, `GiB` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("invalid size {s:?}: expected a number with an optional unit, like 1MiB")
        })?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            other => {
                return Err(format!(
                    "invalid size {s:?}: unknown unit {other:?} (B, KiB, MiB, GiB, KB, MB, GB)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(Self)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 1048576 or 1MiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("size must not be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A part of a whole: a percentage (`25%`, of a total known only at run time) or an
/// absolute size (`512MiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// 1 to 100.
    Percent(u8),
    Size(ByteSize),
}

impl Share {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n @ 1..=100) => Ok(Self::Percent(n)),
                _ => Err(format!(
                    "invalid share {s:?}: a percentage from 1% to 100%, or a size like 512MiB"
                )),
            },
            None => ByteSize::parse(s).map(Self::Size),
        }
    }

    /// This share of `whole` bytes.
    pub fn of(self, whole: u64) -> u64 {
        match self {
            Self::Percent(p) => whole / 100 * u64::from(p) + whole % 100 * u64::from(p) / 100,
            Self::Size(b) => b.0,
        }
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Percent(p) => write!(f, "{p}%"),
            Self::Size(b) => write!(f, "{}", b.0),
        }
    }
}

impl Serialize for Share {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Share;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage such as 25% or a size such as 512MiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Share, E> {
                Ok(Share::Size(ByteSize(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Share, E> {
                Share::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(
            Duration::parse("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(Duration::parse("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(
            Duration::parse("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(Duration::parse("2").is_err());
        assert!(Duration::parse("2w").is_err());
        assert!(Duration::parse("s").is_err());
        assert!(Duration::parse("99999999999999999999d").is_err());
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(ByteSize::parse("1MiB").unwrap(), ByteSize(1 << 20));
        assert_eq!(ByteSize::parse("2GB").unwrap(), ByteSize(2_000_000_000));
        assert_eq!(ByteSize::parse("512").unwrap(), ByteSize(512));
        assert!(ByteSize::parse("1XB").is_err());
    }

    #[test]
    fn parses_shares() {
        assert_eq!(Share::parse("25%").unwrap(), Share::Percent(25));
        assert_eq!(
            Share::parse("1GiB").unwrap(),
            Share::Size(ByteSize(1 << 30))
        );
        assert_eq!(Share::Percent(25).of(1 << 30), 1 << 28);
        assert_eq!(Share::Percent(100).of(u64::MAX), u64::MAX);
        assert_eq!(Share::Size(ByteSize(7)).of(1), 7);
        for bad in ["0%", "101%", "-5%", "x%", "5 parsecs"] {
            assert!(Share::parse(bad).is_err(), "{bad}");
        }
    }
}

/// Where a subscription new to the queue starts reading its topic: `new` (events
/// acknowledged from its declaration on), `earliest` (everything the topic still holds),
/// or an RFC 3339 time (what the topic still holds from then on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    #[default]
    New,
    Earliest,
    /// Unix milliseconds.
    At(i64),
}

impl Start {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "new" => Ok(Self::New),
            "earliest" => Ok(Self::Earliest),
            t => parse_rfc3339(t).map(Self::At).ok_or_else(|| {
                format!(
                    "{t:?} is not new, earliest or an RFC 3339 time such as 2026-01-02T03:04:05Z"
                )
            }),
        }
    }
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::New => f.write_str("new"),
            Self::Earliest => f.write_str("earliest"),
            Self::At(ms) => f.write_str(&rfc3339(*ms)),
        }
    }
}

impl Serialize for Start {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Start {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(de::Error::custom)
    }
}

pub use weir_core::time::{parse_rfc3339, rfc3339};

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn rfc3339_both_ways() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_445_412_480_123), "2015-10-21T07:28:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        for ms in [0, 1_445_412_480_123, 951_782_400_000, 1_798_000_000_999] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(
            parse_rfc3339("2015-10-21T09:28:00+02:00"),
            Some(1_445_412_480_000)
        );
        assert_eq!(
            parse_rfc3339("2015-10-21T07:28:00.5Z"),
            Some(1_445_412_480_500)
        );
        for bad in [
            "2015-10-21",
            "2015-13-21T07:28:00Z",
            "2015-10-21T07:28:00",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(Start::parse("earliest"), Ok(Start::Earliest));
        assert!(Start::parse("yesterday").is_err());
    }
}
