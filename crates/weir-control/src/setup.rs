//! First run without a password in the environment: a one-time setup token, written to a
//! file only Weir's user can read, that lets the console create the first admin. Never a
//! default password: whoever creates the first account proved they can read `data_dir`.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::auth;
use crate::error::{ApiError, ApiResult};

/// The token file's name in `data_dir`.
pub const TOKEN_FILE: &str = "setup-token";

/// The setup token's digest and file while no account exists.
#[derive(Default)]
pub struct Setup {
    pending: Mutex<Option<(String, PathBuf)>>,
    /// One setup at a time: two racing forms must not make two first admins.
    pub(crate) lock: tokio::sync::Mutex<()>,
}

impl Setup {
    /// Writes a fresh token to `data_dir/setup-token` (mode 0600) and logs the file's path
    /// (never the token). Each start makes a new one; the old file is replaced.
    pub fn prepare(&self, data_dir: &Path) -> ApiResult<()> {
        let token = auth::new_secret("wst_")?;
        let path = data_dir.join(TOKEN_FILE);
        write_private(&path, &format!("{token}\n")).map_err(|e| {
            ApiError::Internal(format!(
                "cannot write the setup token to {}: {e}; make data_dir writable, or set WEIR_ADMIN_PASSWORD to create the first admin",
                path.display()
            ))
        })?;
        // The absolute path, so the operator finds it whatever directory they are in.
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        tracing::warn!(
            file = %path.display(),
            "no admin account yet: open the console and create one with the setup token in this file (readable only by this user)"
        );
        *self.pending.lock() = Some((auth::digest(&token), path));
        Ok(())
    }

    /// Whether a first admin is still to be made.
    pub fn needed(&self) -> bool {
        self.pending.lock().is_some()
    }

    /// The token's file while a first admin is still to be made.
    pub fn file(&self) -> Option<PathBuf> {
        self.pending.lock().as_ref().map(|(_, p)| p.clone())
    }

    /// Whether `token` is the setup token.
    pub fn matches(&self, token: &str) -> bool {
        // Digests compared, so the comparison's timing tells nothing about the token.
        let presented = auth::digest(token);
        self.pending
            .lock()
            .as_ref()
            .is_some_and(|(d, _)| *d == presented)
    }

    /// The first admin exists: the token is spent and its file removed.
    pub fn done(&self) {
        if let Some((_, path)) = self.pending.lock().take()
            && let Err(e) = std::fs::remove_file(&path)
        {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove the spent setup token file; delete it by hand");
        }
    }
}

/// Writes `text` to a file only its owner can read or write, whatever mode an earlier file
/// at `path` had.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A file left by someone else could be read by them: start from a new one.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_private_and_spent_once() {
        let dir = std::env::temp_dir().join(format!("weir-setup-{}", std::process::id()));
        let s = Setup::default();
        s.prepare(&dir).unwrap();
        let path = dir.join(TOKEN_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let token = std::fs::read_to_string(&path).unwrap();
        assert!(s.needed());
        assert!(!s.matches("wst_guess"));
        assert!(s.matches(token.trim()));
        s.done();
        assert!(!s.needed() && !s.matches(token.trim()) && !path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
