//! SQLite through sqlx: one file, WAL journal, migrations embedded in the binary.

use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr, SqlitePool};

use crate::record;
use tessera_core::{
    KeyStore, Session, SessionStore, StoreError, StoreResult, StoredKey, TokenHash, User, UserStore,
};

/// The embedded schema, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "users and sessions",
        include_str!("../migrations/sqlite/0001_users_sessions.sql"),
    ),
    (
        2,
        "revocation generation",
        include_str!("../migrations/sqlite/0002_revocation_generation.sql"),
    ),
    (
        3,
        "signing keys",
        include_str!("../migrations/sqlite/0003_signing_keys.sql"),
    ),
    (
        4,
        "refresh tokens",
        include_str!("../migrations/sqlite/0004_refresh_tokens.sql"),
    ),
    (
        5,
        "access token denylist",
        include_str!("../migrations/sqlite/0005_denylist.sql"),
    ),
    (
        6,
        "oauth clients, codes and consents",
        include_str!("../migrations/shared/oauth.sql"),
    ),
    (
        7,
        "access tokens by family, denylist catch-up",
        include_str!("../migrations/shared/token_state.sql"),
    ),
];

/// The SQLite store. Clones share the connection pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Unavailable(e.to_string()),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`)
    /// and brings its schema up to date.
    pub async fn open(url: &str) -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(unavailable)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // An in-memory database lives in one connection: give it exactly one.
        let max = if url.contains(":memory:") { 1 } else { 8 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        let migrations = MIGRATIONS
            .iter()
            .map(|(v, d, sql)| {
                Migration::new(
                    *v,
                    (*d).into(),
                    MigrationType::Simple,
                    (*sql).into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating the SQLite schema: {e}")))?;
        Ok(SqliteStore { pool })
    }

    /// Called after the change it announces has been committed.
    async fn bump_generation(&self) -> StoreResult<()> {
        sqlx::query("UPDATE meta SET value = value + 1 WHERE key = 'revocation_generation'")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

crate::record::columns_of!(SqliteRow);
crate::token_sql::token_store_sql!(SqliteStore, sqlx::Sqlite);
crate::oauth_sql::client_store_sql!(SqliteStore);

impl UserStore for SqliteStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query("INSERT INTO users (id, username, password_hash, disabled, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&user.id)
            .bind(&user.username)
            .bind(&user.password_hash)
            .bind(i64::from(user.disabled))
            .bind(user.created_at)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM users WHERE username = ?",
            record::USER_COLUMNS
        )))
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.as_ref()
            .map(record::user)
            .transpose()
            .map_err(unavailable)
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM users WHERE id = ?",
            record::USER_COLUMNS
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.as_ref()
            .map(record::user)
            .transpose()
            .map_err(unavailable)
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM users ORDER BY username",
            record::USER_COLUMNS
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(record::user)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    async fn set_disabled(&self, id: &str, disabled: bool) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE users SET disabled = ? WHERE id = ?")
            .bind(i64::from(disabled))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        self.bump_generation().await?;
        Ok(r.rows_affected() > 0)
    }

    async fn set_password_hash(&self, id: &str, hash: &str) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(hash)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        self.bump_generation().await?;
        Ok(r.rows_affected() > 0)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

impl SessionStore for SqliteStore {
    async fn create_session(&self, hash: &TokenHash, s: &Session) -> StoreResult<()> {
        sqlx::query("INSERT INTO sessions (token_hash, handle, user_id, created_at, last_seen_at, expires_at, idle_timeout, user_agent, ip, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(hash.to_hex())
            .bind(&s.handle)
            .bind(&s.user_id)
            .bind(s.created_at)
            .bind(s.last_seen_at)
            .bind(s.expires_at)
            .bind(s.idle_timeout)
            .bind(&s.user_agent)
            .bind(&s.ip)
            .bind(s.data.to_string())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn session(&self, hash: &TokenHash) -> StoreResult<Option<Session>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM sessions WHERE token_hash = ?",
            record::SESSION_COLUMNS
        )))
        .bind(hash.to_hex())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.as_ref()
            .map(|r| record::session(r).map(|(_, s)| s))
            .transpose()
            .map_err(unavailable)
    }

    async fn touch_session(&self, hash: &TokenHash, last_seen_at: i64) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE token_hash = ?")
            .bind(last_seen_at)
            .bind(hash.to_hex())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn set_session_data(&self, hash: &TokenHash, data: &Value) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE sessions SET data = ? WHERE token_hash = ?")
            .bind(data.to_string())
            .bind(hash.to_hex())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_session(&self, hash: &TokenHash) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
            .bind(hash.to_hex())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(r.rows_affected() > 0)
    }

    async fn sessions_of(&self, user_id: &str) -> StoreResult<Vec<(TokenHash, Session)>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM sessions WHERE user_id = ?",
            record::SESSION_COLUMNS
        )))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(record::session)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    async fn delete_sessions_of(
        &self,
        user_id: &str,
        except: Option<&TokenHash>,
    ) -> StoreResult<u64> {
        let r = match except {
            Some(keep) => {
                sqlx::query("DELETE FROM sessions WHERE user_id = ? AND token_hash <> ?")
                    .bind(user_id)
                    .bind(keep.to_hex())
                    .execute(&self.pool)
                    .await
            }
            None => {
                sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                    .bind(user_id)
                    .execute(&self.pool)
                    .await
            }
        }
        .map_err(unavailable)?;
        self.bump_generation().await?;
        Ok(r.rows_affected())
    }

    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        let r = sqlx::query(
            "DELETE FROM sessions WHERE expires_at <= ? OR last_seen_at + idle_timeout <= ?",
        )
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(r.rows_affected())
    }

    async fn count_sessions(&self) -> StoreResult<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM sessions")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        let n: i64 = row.try_get("n").map_err(unavailable)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

impl KeyStore for SqliteStore {
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM signing_keys ORDER BY activates_at, created_at",
            record::KEY_COLUMNS
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(record::stored_key)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    async fn add_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        sqlx::query("INSERT INTO signing_keys (kid, alg, sealed, created_at, activates_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.sealed)
            .bind(key.created_at)
            .bind(key.activates_at)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// The generation moves with every revoking write (see `bump_generation`).
impl crate::Generation for SqliteStore {
    async fn revocation_generation(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = 'revocation_generation'")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        row.try_get("value").map_err(unavailable)
    }
}

/// Each process counts login failures for itself (a single instance, or a cluster without
/// Redis).
impl tessera_core::ThrottleStore for SqliteStore {}

impl crate::guard::Probe for SqliteStore {
    async fn probe(&self) -> StoreResult<()> {
        UserStore::ping(self).await
    }
}
