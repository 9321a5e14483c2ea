//! Accounts and their tokens: users with argon2 password hashes and roles, and sessions and
//! API tokens kept only as SHA-256 digests of their secrets.

use sqlx::Row;

use crate::{Result, Store, StoreError, Token, User, now};

impl Store {
    pub async fn user_count(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM weir_users")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }

    pub async fn user(&self, username: &str) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT username, password_hash, role, created_at FROM weir_users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_of(&r)).transpose()
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(
            "SELECT username, password_hash, role, created_at FROM weir_users ORDER BY username",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_of).collect()
    }

    /// Adds an account; `Exists` when the name is taken. Audited.
    pub async fn create_user(
        &self,
        actor: &str,
        username: &str,
        password_hash: &str,
        role: &str,
    ) -> Result<User> {
        let mut tx = self.pool.begin().await?;
        let taken = sqlx::query("SELECT 1 FROM weir_users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if taken {
            return Err(StoreError::Exists);
        }
        let at = now();
        sqlx::query(
            "INSERT INTO weir_users (username, password_hash, role, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(username)
        .bind(password_hash)
        .bind(role)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        self.audit_account(&mut tx, actor, "create", username, Some(role))
            .await?;
        tx.commit().await?;
        Ok(User {
            username: username.to_owned(),
            password_hash: password_hash.to_owned(),
            role: role.to_owned(),
            created_at: at,
        })
    }

    /// Removes an account and its tokens. Audited.
    pub async fn delete_user(&self, actor: &str, username: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query("DELETE FROM weir_users WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM weir_tokens WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        self.audit_account(&mut tx, actor, "delete", username, None)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Changes an account's role and ends its sessions (a session carries the rights it
    /// was opened with in the user's mind, so a new role means a new login); its API
    /// tokens stay and take the new role. Audited.
    pub async fn set_role(&self, actor: &str, username: &str, role: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("UPDATE weir_users SET role = $1 WHERE username = $2")
            .bind(role)
            .bind(username)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM weir_tokens WHERE username = $1 AND kind = 'session'")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        self.audit_account(&mut tx, actor, "update", username, Some(role))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves a session's expiry (the idle timeout slides with use; the caller keeps it
    /// within the absolute one).
    pub async fn extend_session(&self, id: &str, expires_at: i64) -> Result<()> {
        sqlx::query("UPDATE weir_tokens SET expires_at = $1 WHERE id = $2 AND kind = 'session'")
            .bind(expires_at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn audit_account(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        actor: &str,
        action: &str,
        username: &str,
        role: Option<&str>,
    ) -> Result<()> {
        let version = self.version_in(tx).await?;
        sqlx::query(
            "INSERT INTO weir_audit (at, actor, action, kind, name, before_body, after_body, version) \
             VALUES ($1, $2, $3, 'users', $4, NULL, $5, $6)",
        )
        .bind(now())
        .bind(actor)
        .bind(action)
        .bind(username)
        .bind(role.map(|r| serde_json::json!({ "role": r }).to_string()))
        .bind(version)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn version_in(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<i64> {
        Ok(
            sqlx::query("SELECT value FROM weir_meta WHERE key = 'version'")
                .fetch_one(&mut **tx)
                .await?
                .try_get(0)?,
        )
    }

    /// Records a token by the digest of its secret (the secret itself is never stored).
    pub async fn add_token(&self, token: &Token, digest: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO weir_tokens (id, username, name, digest, kind, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(token.id.as_str())
        .bind(token.username.as_str())
        .bind(token.name.as_str())
        .bind(digest)
        .bind(token.kind.as_str())
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The token with this digest, if it has not expired, and its account.
    pub async fn token_by_digest(&self, digest: &str) -> Result<Option<(Token, User)>> {
        let row = sqlx::query(
            "SELECT t.id, t.username, t.name, t.kind, t.created_at, t.expires_at, \
             u.password_hash, u.role, u.created_at AS user_created \
             FROM weir_tokens t JOIN weir_users u ON u.username = t.username \
             WHERE t.digest = $1 AND (t.expires_at IS NULL OR t.expires_at > $2)",
        )
        .bind(digest)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let token = Token {
            id: r.try_get("id")?,
            username: r.try_get("username")?,
            name: r.try_get("name")?,
            kind: r.try_get("kind")?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
        };
        let user = User {
            username: token.username.clone(),
            password_hash: r.try_get("password_hash")?,
            role: r.try_get("role")?,
            created_at: r.try_get("user_created")?,
        };
        Ok(Some((token, user)))
    }

    pub async fn tokens(&self, username: &str) -> Result<Vec<Token>> {
        let rows = sqlx::query(
            "SELECT id, username, name, kind, created_at, expires_at FROM weir_tokens \
             WHERE username = $1 AND kind = 'api' ORDER BY created_at, id",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Token {
                    id: r.try_get("id")?,
                    username: r.try_get("username")?,
                    name: r.try_get("name")?,
                    kind: r.try_get("kind")?,
                    created_at: r.try_get("created_at")?,
                    expires_at: r.try_get("expires_at")?,
                })
            })
            .collect()
    }

    /// Revokes a token of `username`.
    pub async fn delete_token(&self, username: &str, id: &str) -> Result<()> {
        let n = sqlx::query("DELETE FROM weir_tokens WHERE id = $1 AND username = $2")
            .bind(id)
            .bind(username)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Drops expired sessions.
    pub async fn sweep_tokens(&self) -> Result<u64> {
        Ok(
            sqlx::query(
                "DELETE FROM weir_tokens WHERE expires_at IS NOT NULL AND expires_at <= $1",
            )
            .bind(now())
            .execute(&self.pool)
            .await?
            .rows_affected(),
        )
    }
}

fn user_of(r: &sqlx::any::AnyRow) -> Result<User> {
    Ok(User {
        username: r.try_get("username")?,
        password_hash: r.try_get("password_hash")?,
        role: r.try_get("role")?,
        created_at: r.try_get("created_at")?,
    })
}
