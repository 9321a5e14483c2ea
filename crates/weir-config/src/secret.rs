//! One type for every secret in the model: written as `env:NAME`, `file:PATH` or the value
//! itself, read by one set of rules, and shown by one redaction rule.
//!
//! A secret serializes as written (the store and the file keep it), except while
//! [`redacting`] runs: then every secret anywhere in the value serializes as
//! [`Secret::shown`]. Output paths (the admin API, exports) serialize inside
//! [`redacting`], so a new secret field is redacted by its type alone. `Debug` always
//! shows the redacted form, so a secret never reaches a log line.

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Shown in place of a secret's value.
pub const REDACTED: &str = "(redacted)";

/// A secret as written in the configuration.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret(String);

/// Where one secret (or one of several, for rotation) comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// `env:NAME`: the environment variable (read at start and on every reload).
    Env(&'a str),
    /// `file:PATH`: the file's content without surrounding whitespace (read again on
    /// every reload, so it rotates without a restart).
    File(&'a str),
    /// The value itself.
    Literal(&'a str),
}

impl<'a> Source<'a> {
    fn of(s: &'a str) -> Self {
        if let Some(name) = s.strip_prefix("env:") {
            Self::Env(name)
        } else if let Some(path) = s.strip_prefix("file:") {
            Self::File(path)
        } else {
            Self::Literal(s)
        }
    }

    fn read(self, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        match self {
            Self::Env(name) => env(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("environment variable {name} is not set")),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|v| v.trim().to_owned())
                .map_err(|e| format!("cannot read {path:?}: {e}")),
            Self::Literal(v) => Ok(v.to_owned()),
        }
    }
}

impl Secret {
    pub fn new(written: impl Into<String>) -> Self {
        Self(written.into())
    }

    /// The secret as written (a reference, or the value itself): for the store and for
    /// checks of its form, never for output.
    pub fn as_written(&self) -> &str {
        &self.0
    }

    /// Where it comes from, taking the whole text as one secret.
    pub fn source(&self) -> Source<'_> {
        Source::of(&self.0)
    }

    /// Its parts, for a field that takes several separated by spaces (rotation: the new
    /// one and the old one while both are valid).
    pub fn parts(&self) -> impl Iterator<Item = Source<'_>> {
        self.0.split_whitespace().map(Source::of)
    }

    /// Whether it names where the value is (`env:`/`file:`) rather than holding it.
    pub fn is_reference(&self) -> bool {
        self.parts().all(|p| !matches!(p, Source::Literal(_)))
    }

    /// The value, reading the environment or the file it names.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        self.source().read(env)
    }

    /// Every value, for a field that takes several: each part read, and what a file or
    /// variable holds split at whitespace too.
    pub fn resolve_all(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for part in self.parts() {
            out.extend(part.read(env)?.split_whitespace().map(str::to_owned));
        }
        Ok(out)
    }

    /// What output shows: references as written (they name where the value is, not the
    /// value), a public key or certificate as written, anything else as `(redacted)`.
    pub fn shown(&self) -> &str {
        let public = ["-----BEGIN PUBLIC KEY-----", "-----BEGIN CERTIFICATE-----"]
            .iter()
            .any(|p| self.0.trim_start().starts_with(p));
        if self.is_reference() || public || self.0.is_empty() {
            &self.0
        } else {
            REDACTED
        }
    }

    /// Whether it is `(redacted)` as output shows it (a body read and written back).
    pub fn is_redacted(&self) -> bool {
        self.0 == REDACTED
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({:?})", self.shown())
    }
}

thread_local! {
    static REDACTING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (a serialization) with every [`Secret`] serializing as [`Secret::shown`].
pub fn redacting<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            REDACTING.with(|r| r.set(self.0));
        }
    }
    let _reset = Reset(REDACTING.with(|r| r.replace(true)));
    f()
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if REDACTING.with(Cell::get) {
            s.serialize_str(self.shown())
        } else {
            s.serialize_str(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// A service URL that may carry a password (`redis://:PASSWORD@host:6379`), or a keyword
/// (`memory`, `embedded`): written as itself, or as `env:NAME`/`file:PATH` holding it, read
/// by the rules of [`Secret`]. Output shows references and keywords as written and a
/// URL with its password as `(redacted)`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(written: impl Into<String>) -> Self {
        Self(written.into())
    }

    /// As written (a reference, a keyword or the URL): for checks of its form and the
    /// store, never for output.
    pub fn as_written(&self) -> &str {
        &self.0
    }

    /// The URL or keyword, reading the variable or the file it names.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        Source::of(&self.0).read(env)
    }

    /// What output shows: `scheme://user:(redacted)@host…` for a URL with a password.
    pub fn shown(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://") else {
            return url.clone();
        };
        let rest = &url[scheme_end + 3..];
        let Some(at) = rest.rfind('@') else {
            return url.clone();
        };
        match rest[..at].split_once(':') {
            Some((user, _)) => format!(
                "{}{user}:{REDACTED}@{}",
                &url[..scheme_end + 3],
                &rest[at + 1..]
            ),
            None => url.clone(),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", self.shown())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if REDACTING.with(Cell::get) {
            s.serialize_str(&self.shown())
        } else {
            s.serialize_str(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

impl From<&str> for SecretUrl {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl PartialEq<&str> for SecretUrl {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_set_of_reading_rules_and_one_redaction_rule() {
        let dir = std::env::temp_dir().join(format!("weir-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("k");
        std::fs::write(&file, "  from-file \n").unwrap();
        let env = |n: &str| (n == "K").then(|| "from-env".to_owned());
        let by_file = Secret::new(format!("file:{}", file.display()));
        assert_eq!(by_file.resolve(&env).unwrap(), "from-file");
        assert_eq!(Secret::from("env:K").resolve(&env).unwrap(), "from-env");
        assert!(Secret::from("env:NOPE").resolve(&env).is_err());
        assert_eq!(
            Secret::from("literal-value").resolve(&env).unwrap(),
            "literal-value"
        );
        let rotating = Secret::new(format!("env:K lit-2 file:{}", file.display()));
        assert_eq!(
            rotating.resolve_all(&env).unwrap(),
            ["from-env", "lit-2", "from-file"]
        );
        assert!(!rotating.is_reference(), "one inline part hides the lot");
        assert_eq!(rotating.shown(), REDACTED);
        assert_eq!(Secret::from("env:A file:/b").shown(), "env:A file:/b");
        assert_eq!(
            Secret::from("-----BEGIN PUBLIC KEY-----\nMFk=\n").shown(),
            "-----BEGIN PUBLIC KEY-----\nMFk=\n"
        );
        assert_eq!(
            Secret::from("-----BEGIN PRIVATE KEY-----\n").shown(),
            REDACTED
        );
        assert_eq!(
            format!("{:?}", Secret::from("hunter2-hunter2")),
            "Secret(\"(redacted)\")"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
