//! Who is calling the admin API: sessions (login, a cookie) and named API tokens (a
//! bearer), both kept in the store only as SHA-256 digests; roles; argon2 passwords; and
//! the limit on failed logins.

use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};
use weir_store::{Store, Token, User};

use crate::error::{ApiError, ApiResult};

pub const SESSION_COOKIE: &str = "weir_session";
/// Failed logins allowed per user name within [`FAIL_WINDOW`].
pub const MAX_FAILURES_USER: u32 = 5;
/// Failed logins allowed per client address within [`FAIL_WINDOW`] (a little more: several
/// people may share one address).
pub const MAX_FAILURES_ADDR: u32 = 20;
const FAIL_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Editor,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "editor" => Some(Self::Editor),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Editor => "editor",
            Self::Admin => "admin",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub username: String,
    pub role: Role,
    pub token_id: String,
}

impl Caller {
    /// Refuses callers below `role`.
    pub fn require(&self, role: Role) -> ApiResult<()> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(match role {
                Role::Admin => "this needs the admin role",
                Role::Editor => "this needs the editor or admin role",
                Role::Viewer => "this needs an account",
            }))
        }
    }
}

/// A new secret: 32 random bytes, URL-safe base64, with a prefix that says what it is.
pub fn new_secret(prefix: &str) -> ApiResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("no randomness available: {e}")))?;
    Ok(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

pub fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// argon2id with a fresh salt; runs on the blocking pool (it costs milliseconds on purpose).
pub async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(format!("cannot hash the password: {e}")))
    })
    .await
    .map_err(|_| ApiError::Internal("the password hash task failed".to_owned()))?
}

async fn verify_password(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// A password that is long enough to be worth hashing.
pub fn check_password(p: &str) -> ApiResult<()> {
    if p.chars().count() < 12 {
        return Err(ApiError::BadRequest(
            "password: at least 12 characters".to_owned(),
        ));
    }
    if p.len() > 1024 {
        return Err(ApiError::BadRequest(
            "password: at most 1024 bytes".to_owned(),
        ));
    }
    Ok(())
}

/// Failed logins by user name and by client address.
#[derive(Default)]
pub struct LoginGuard {
    failures: Mutex<FxHashMap<String, (u32, Instant)>>,
}

impl LoginGuard {
    /// `Err` (with seconds to wait) while any key has failed its limit of times.
    pub fn check(&self, keys: &[(String, u32)]) -> ApiResult<()> {
        let map = self.failures.lock();
        for (k, limit) in keys {
            if let Some((n, since)) = map.get(k)
                && *n >= *limit
                && since.elapsed() < FAIL_WINDOW
            {
                let wait = FAIL_WINDOW.saturating_sub(since.elapsed()).as_secs().max(1);
                return Err(ApiError::TooManyRequests(wait));
            }
        }
        Ok(())
    }

    pub fn failed(&self, keys: &[(String, u32)]) {
        let mut map = self.failures.lock();
        if map.len() > 100_000 {
            map.retain(|_, (_, since)| since.elapsed() < FAIL_WINDOW);
        }
        for (k, _) in keys {
            let e = map.entry(k.clone()).or_insert((0, Instant::now()));
            if e.1.elapsed() >= FAIL_WINDOW {
                *e = (0, Instant::now());
            }
            e.0 += 1;
        }
    }

    /// Forgets the user name's failures (not the address's: one success must not reset
    /// a guessing run from that address).
    pub fn succeeded(&self, keys: &[(String, u32)]) {
        let mut map = self.failures.lock();
        for (k, _) in keys.iter().filter(|(k, _)| k.starts_with("u:")) {
            map.remove(k);
        }
    }
}

/// Checks a user name and password; `None` for any mismatch (the same answer, and about
/// the same time, whether the user exists or not).
pub async fn login(store: &Store, username: &str, password: &str) -> ApiResult<Option<User>> {
    let user = store.user(username).await?;
    // Unknown users are checked against a fixed hash, so timing does not tell them apart.
    static DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$FFX4UgXcHo3k4cR+0s7mkUxvA0f6RzYpGQj0Y3rRK9Q";
    let phc = user
        .as_ref()
        .map_or(DECOY.to_owned(), |u| u.password_hash.clone());
    let ok = verify_password(password.to_owned(), phc).await;
    Ok(user.filter(|_| ok))
}

/// Makes a token for `user` and records its digest. Returns the secret (shown once).
pub async fn issue(
    store: &Store,
    user: &str,
    name: &str,
    kind: &str,
    ttl: Option<Duration>,
) -> ApiResult<(Token, String)> {
    let secret = new_secret(if kind == "session" { "wss_" } else { "wat_" })?;
    let id = new_secret("")?.chars().take(16).collect::<String>();
    let now = weir_store::now();
    let token = Token {
        id,
        username: user.to_owned(),
        name: name.to_owned(),
        kind: kind.to_owned(),
        created_at: now,
        expires_at: ttl.map(|t| now + t.as_secs() as i64),
    };
    store.add_token(&token, &digest(&secret)).await?;
    Ok((token, secret))
}

/// The secret a request presents: `Authorization: Bearer`, else the session cookie.
pub fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, rest) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim().to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// How long a login lasts: it ends after `idle` without a request, and after `absolute`
/// whatever happens.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub idle: Duration,
    pub absolute: Duration,
}

impl SessionLimits {
    /// When a session opened at `created_at` and used at `now` expires.
    pub fn expiry(&self, created_at: i64, now: i64) -> i64 {
        (now + self.idle.as_secs() as i64).min(created_at + self.absolute.as_secs() as i64)
    }
}

/// The token a console sends with each write it makes on a session cookie
/// (`X-CSRF-Token`): derived from the session's secret, so only a page that could read the
/// login's answer (same origin) knows it, and it dies with the session.
pub fn csrf_token(secret: &str) -> String {
    digest(&format!("csrf:{secret}"))
}

/// The caller behind a request's token or session. A session's expiry slides forward with
/// use (written at most once a minute), never past its absolute limit; background
/// refreshes do not count as use.
pub async fn authenticate(
    store: &Store,
    headers: &HeaderMap,
    limits: SessionLimits,
) -> ApiResult<Caller> {
    let Some(secret) = presented(headers) else {
        return Err(ApiError::Unauthorized(
            "log in (POST /api/v1/login) or send Authorization: Bearer TOKEN",
        ));
    };
    if secret.len() > 256 {
        return Err(ApiError::Unauthorized("the token is not valid"));
    }
    let Some((token, user)) = store.token_by_digest(&digest(&secret)).await? else {
        return Err(ApiError::Unauthorized(
            "the token is not valid or has expired",
        ));
    };
    // A page's own refresh (`X-Weir-Background`) is not a person at work: it must not keep
    // an unattended console logged in past the idle limit.
    if token.kind == "session" && !headers.contains_key("x-weir-background") {
        let now = weir_store::now();
        let due = limits.expiry(token.created_at, now);
        if token.expires_at.is_some_and(|at| due - at >= 60) {
            store.extend_session(&token.id, due).await?;
        }
    }
    let role = Role::parse(&user.role).ok_or_else(|| {
        ApiError::Internal(format!("account {:?} has an unknown role", user.username))
    })?;
    Ok(Caller {
        username: user.username,
        role,
        token_id: token.id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_slides_with_use_up_to_its_absolute_limit() {
        let l = SessionLimits {
            idle: Duration::from_secs(1800),
            absolute: Duration::from_secs(12 * 3600),
        };
        // Used an hour after login: 30 more minutes.
        assert_eq!(l.expiry(1_000, 1_000 + 3600), 1_000 + 3600 + 1800);
        // Used near the end: never past 12 hours after login.
        assert_eq!(l.expiry(1_000, 1_000 + 12 * 3600 - 60), 1_000 + 12 * 3600);
    }

    #[test]
    fn the_csrf_token_is_the_sessions_own() {
        assert_eq!(csrf_token("wss_a"), csrf_token("wss_a"));
        assert_ne!(csrf_token("wss_a"), csrf_token("wss_b"));
        assert_ne!(
            csrf_token("wss_a"),
            digest("wss_a"),
            "not the stored digest"
        );
    }
}
