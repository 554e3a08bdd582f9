//! PostgreSQL through sqlx: the shared store of a cluster. Migrations are embedded and applied
//! under sqlx's advisory lock, so instances starting together migrate once. Every revoking
//! change moves a generation number that each instance watches, so caches in front of this
//! store learn of changes made by any instance within the watch interval.

use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row, SqlSafeStr};

use crate::record;
use tessera_core::{
    KeyStore, Session, SessionStore, StoreError, StoreResult, StoredKey, TokenHash, User, UserStore,
};

/// The embedded schema, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "schema",
        include_str!("../migrations/postgres/0001_schema.sql"),
    ),
    (
        2,
        "audit events",
        include_str!("../migrations/postgres/0002_audit_events.sql"),
    ),
    (
        3,
        "oauth clients, codes and consents",
        include_str!("../migrations/shared/oauth.sql"),
    ),
    (
        4,
        "access tokens by family, denylist catch-up",
        include_str!("../migrations/shared/token_state.sql"),
    ),
];

/// How long a statement may wait for a pooled connection, and a connection for the server:
/// a PostgreSQL that does not answer makes requests fail in this time, never hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The PostgreSQL store. Clones share the connection pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Unavailable(e.to_string()),
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…`; `?options[search_path]=SCHEMA` picks a schema) and
    /// brings the schema up to date. Connections are made lazily, so a PostgreSQL that is down
    /// at start is an error here (the migration needs it) but not later: requests then fail
    /// with [`StoreError::Unavailable`] until it is back.
    pub async fn open(url: &str) -> StoreResult<PostgresStore> {
        let store = PostgresStore::connect(url)?;
        store.migrate().await?;
        Ok(store)
    }

    /// A store on `url` without touching the schema (the pool connects on first use).
    pub fn connect(url: &str) -> StoreResult<PostgresStore> {
        // A transaction left open by a connection cut in the middle of it (its row locks held,
        // its family's rotations waiting) is ended by the server after this.
        let options = PgConnectOptions::from_str(url)
            .map_err(unavailable)?
            .options([("idle_in_transaction_session_timeout", "10s")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(PostgresStore { pool })
    }

    /// Applies the embedded migrations not yet applied (under an advisory lock); how many ran.
    pub async fn migrate(&self) -> StoreResult<usize> {
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
        let migrator = Migrator::with_migrations(migrations);
        let before = self.applied_migrations().await?;
        migrator.run(&self.pool).await.map_err(|e| {
            StoreError::Unavailable(format!("migrating the PostgreSQL schema: {e}"))
        })?;
        Ok(self.applied_migrations().await?.saturating_sub(before))
    }

    async fn applied_migrations(&self) -> StoreResult<usize> {
        let exists: bool =
            sqlx::query("SELECT to_regclass('_sqlx_migrations') IS NOT NULL AS present")
                .fetch_one(&self.pool)
                .await
                .and_then(|r| r.try_get("present"))
                .map_err(unavailable)?;
        if !exists {
            return Ok(0);
        }
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("n"))
            .map_err(unavailable)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Called after the change it announces has been committed.
    async fn bump_generation(&self) -> StoreResult<()> {
        sqlx::query("UPDATE meta SET value = value + 1 WHERE key = 'revocation_generation'")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Appends audit events `(at, event, fields as JSON text)` in one statement.
    pub async fn record_audit(&self, events: &[(i64, String, String)]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut q = sqlx::QueryBuilder::new("INSERT INTO audit_events (at, event, fields) ");
        q.push_values(events, |mut b, (at, event, fields)| {
            b.push_bind(*at).push_bind(event).push_bind(fields);
        });
        q.build().execute(&self.pool).await.map_err(unavailable)?;
        Ok(())
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

crate::record::columns_of!(PgRow);
crate::token_sql::token_store_sql!(PostgresStore, sqlx::Postgres);
crate::oauth_sql::client_store_sql!(PostgresStore);

impl UserStore for PostgresStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query("INSERT INTO users (id, username, password_hash, disabled, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&user.id)
            .bind(&user.username)
            .bind(&user.password_hash)
            .bind(user.disabled)
            .bind(user.created_at)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM users WHERE username = $1",
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
            "SELECT {} FROM users WHERE id = $1",
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
        let r = sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
            .bind(disabled)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        self.bump_generation().await?;
        Ok(r.rows_affected() > 0)
    }

    async fn set_password_hash(&self, id: &str, hash: &str) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM users WHERE id = $1")
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

impl SessionStore for PostgresStore {
    async fn create_session(&self, hash: &TokenHash, s: &Session) -> StoreResult<()> {
        sqlx::query("INSERT INTO sessions (token_hash, handle, user_id, created_at, last_seen_at, expires_at, idle_timeout, user_agent, ip, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
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
            "SELECT {} FROM sessions WHERE token_hash = $1",
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
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_hash = $2")
            .bind(last_seen_at)
            .bind(hash.to_hex())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn set_session_data(&self, hash: &TokenHash, data: &Value) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE sessions SET data = $1 WHERE token_hash = $2")
            .bind(data.to_string())
            .bind(hash.to_hex())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_session(&self, hash: &TokenHash) -> StoreResult<bool> {
        let r = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(hash.to_hex())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        if r.rows_affected() > 0 {
            self.bump_generation().await?;
        }
        Ok(r.rows_affected() > 0)
    }

    async fn sessions_of(&self, user_id: &str) -> StoreResult<Vec<(TokenHash, Session)>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM sessions WHERE user_id = $1",
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
        let r = sqlx::query(
            "DELETE FROM sessions WHERE user_id = $1 AND ($2::TEXT IS NULL OR token_hash <> $2)",
        )
        .bind(user_id)
        .bind(except.map(TokenHash::to_hex))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        self.bump_generation().await?;
        Ok(r.rows_affected())
    }

    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        let r = sqlx::query(
            "DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at + idle_timeout <= $1",
        )
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

impl KeyStore for PostgresStore {
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
        sqlx::query("INSERT INTO signing_keys (kid, alg, sealed, created_at, activates_at) VALUES ($1, $2, $3, $4, $5)")
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
impl crate::Generation for PostgresStore {
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
impl tessera_core::ThrottleStore for PostgresStore {}

impl crate::guard::Probe for PostgresStore {
    async fn probe(&self) -> StoreResult<()> {
        UserStore::ping(self).await
    }
}
