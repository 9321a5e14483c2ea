//! `weir login` and `weir logout`: a session token per admin URL, kept in the user's
//! configuration directory in a file only its owner may read (0600), so the commands that
//! call the admin API need no token pasted from curl.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::cli::Target;

/// One stored login.
#[derive(Serialize, Deserialize, Clone)]
struct Saved {
    user: String,
    token: String,
    /// Unix seconds; the token is not offered after it.
    expires_at: i64,
}

/// `$WEIR_CREDENTIALS`, else `$XDG_CONFIG_HOME/weir/credentials.json`, else
/// `~/.config/weir/credentials.json`.
pub fn credentials_file() -> Option<PathBuf> {
    let var = |n: &str| std::env::var_os(n).filter(|v| !v.is_empty());
    if let Some(f) = var("WEIR_CREDENTIALS") {
        return Some(PathBuf::from(f));
    }
    let base = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("weir").join("credentials.json"))
}

fn read_all() -> BTreeMap<String, Saved> {
    credentials_file()
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The stored token for `url`, while it is valid.
pub fn saved_token(url: &str) -> Option<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    read_all()
        .remove(url)
        .filter(|s| s.expires_at == 0 || s.expires_at > now)
        .map(|s| s.token)
}

/// Writes the whole file anew with mode 0600 (a temporary file renamed over the old one,
/// so a reader never sees half of it), its directory 0700.
fn write_all(all: &BTreeMap<String, Saved>) -> Result<PathBuf, String> {
    let file = credentials_file()
        .ok_or("no place for credentials: set HOME, XDG_CONFIG_HOME or WEIR_CREDENTIALS")?;
    let dir = file
        .parent()
        .ok_or("the credentials path names no directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let tmp = file.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(all).map_err(|e| e.to_string())?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::io::Write::write_all(&mut f, &text)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &file).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(file)
}

/// Reads the password: one line of standard input; at a terminal, after a prompt and
/// without echo.
fn read_password() -> Result<String, String> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let stty = |arg: &str| {
        let _ = std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status();
    };
    if tty {
        eprint!("password: ");
        stty("-echo");
    }
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    if tty {
        stty("echo");
        eprintln!();
    }
    read.map_err(|e| format!("cannot read the password: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err("the password is empty; type it, or pipe it in: printf '%s' \"$PW\" | weir login --username NAME".to_owned());
    }
    Ok(password)
}

/// `weir login`: logs in to the admin API at `target` and keeps the session token.
pub async fn login(target: &Target, user: &str) -> ExitCode {
    let password = match read_password() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let body = serde_json::json!({ "username": user, "password": password });
    let answer = target
        .call(Method::POST, "/api/v1/login", Some(&body))
        .await;
    let v = match answer {
        Ok((StatusCode::OK, v)) => v,
        Ok((status, v)) => {
            let msg = v["error"]["message"].as_str().unwrap_or("login refused");
            eprintln!("weir: {msg} ({status})");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(token) = v["token"].as_str() else {
        eprintln!("weir: the admin API answered the login without a token");
        return ExitCode::FAILURE;
    };
    let mut all = read_all();
    all.insert(
        target.url.clone(),
        Saved {
            user: user.to_owned(),
            token: token.to_owned(),
            expires_at: v["expires_at"].as_i64().unwrap_or(0),
        },
    );
    match write_all(&all) {
        Ok(file) => {
            eprintln!(
                "logged in to {} as {user}; the session is kept in {}",
                target.url,
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `weir logout`: ends the session at the admin API and forgets it here.
pub async fn logout(target: &Target) -> ExitCode {
    let mut all = read_all();
    let Some(saved) = all.remove(&target.url) else {
        eprintln!("not logged in to {}", target.url);
        return ExitCode::SUCCESS;
    };
    let with = Target {
        url: target.url.clone(),
        token: Some(saved.token),
    };
    if let Err(e) = with.call(Method::POST, "/api/v1/logout", None).await {
        eprintln!("weir: {e}; the session is forgotten here and ends when it expires");
    }
    match write_all(&all) {
        Ok(_) => {
            eprintln!("logged out of {}", target.url);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}
