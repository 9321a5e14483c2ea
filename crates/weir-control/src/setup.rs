//! First run without a password in the environment: a one-time setup token, written to a
//! file only Weir's user can read, that lets the console create the first admin. Never a
//! default password: whoever creates the first account proved they can read `data_dir`.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::auth;
use crate::error::ApiResult;

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
    /// Keeps a setup token in `data_dir/setup-token` (mode 0600) and logs the file's path
    /// (never the token). A token already there, private and well-formed, is kept: nodes
    /// that share a `data_dir` (or a restart before setup) agree on one. A file that cannot
    /// be written is logged, not fatal: `WEIR_ADMIN_PASSWORD` and `weir admin create-user`
    /// still make the first admin.
    pub fn prepare(&self, data_dir: &Path) -> ApiResult<()> {
        let path = data_dir.join(TOKEN_FILE);
        let token = match kept_token(&path) {
            Some(t) => t,
            None => {
                let t = auth::new_secret("wst_")?;
                if let Err(e) = write_private(&path, &format!("{t}\n")) {
                    tracing::error!(
                        file = %path.display(),
                        error = %e,
                        "no admin account yet and the setup token cannot be written: make data_dir writable, or set WEIR_ADMIN_PASSWORD, or run weir admin create-user"
                    );
                    return Ok(());
                }
                t
            }
        };
        // The absolute path, so the operator finds it whatever directory they are in.
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        tracing::warn!(
            file = %path.display(),
            "no admin account yet: open the console and create one with the setup token in this file (readable only by this user)"
        );
        *self.pending.lock() = Some((auth::digest(&token), path));
        Ok(())
    }

    /// An account exists: a token file left from before (a restart with
    /// `WEIR_ADMIN_PASSWORD`, an account made by the CLI) is removed, and none is pending.
    pub fn discard(&self, data_dir: &Path) {
        self.done();
        let path = data_dir.join(TOKEN_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(file = %path.display(), "removed the setup token file: an account exists")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove the unused setup token file; delete it by hand")
            }
        }
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

/// The token in `path` if the file is private (only its owner may read it) and holds one.
fn kept_token(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::symlink_metadata(path).ok()?;
        if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
            return None;
        }
    }
    let text = std::fs::read_to_string(path).ok()?;
    let t = text.trim();
    (t.starts_with("wst_") && t.len() > 20 && t.len() < 100).then(|| t.to_owned())
}

/// Writes `text` to a file only its owner can read or write: a new file of this process,
/// renamed over `path` (atomic, so a reader never sees half a token and two writers never
/// fail on each other's file).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
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
        // Another node on the same data_dir keeps the same token.
        let other = Setup::default();
        other.prepare(&dir).unwrap();
        assert!(other.matches(token.trim()));
        s.done();
        assert!(!s.needed() && !s.matches(token.trim()) && !path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_token_file_others_could_read_is_replaced() {
        let dir = std::env::temp_dir().join(format!("weir-setup-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(TOKEN_FILE);
        std::fs::write(&path, "wst_known_to_everyone_0000000000\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let s = Setup::default();
        s.prepare(&dir).unwrap();
        assert!(!s.matches("wst_known_to_everyone_0000000000"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
