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
    DenylistStore, KeyStore, RefreshRecord, RefreshStore, Session, SessionStore, StoreError,
    StoreResult, StoredKey, TokenHash, User, UserStore,
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
        let options = PgConnectOptions::from_str(url).map_err(unavailable)?;
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

impl RefreshStore for PostgresStore {
    async fn create_refresh(&self, hash: &TokenHash, r: &RefreshRecord) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO refresh_families (family, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&r.family)
        .bind(&r.user_id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query("INSERT INTO refresh_tokens (token_hash, family, user_id, client_id, scope, created_at, expires_at, family_expires_at, used_at, access_jti) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(hash.to_hex())
            .bind(&r.family)
            .bind(&r.user_id)
            .bind(&r.client_id)
            .bind(&r.scope)
            .bind(r.created_at)
            .bind(r.expires_at)
            .bind(r.family_expires_at)
            .bind(r.used_at)
            .bind(&r.access_jti)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn refresh_token(&self, hash: &TokenHash) -> StoreResult<Option<(RefreshRecord, bool)>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {} FROM refresh_tokens t JOIN refresh_families f ON f.family = t.family WHERE t.token_hash = $1", record::REFRESH_COLUMNS)))
            .bind(hash.to_hex())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        let Some(r) = row else { return Ok(None) };
        record::refresh(&r).map(Some).map_err(unavailable)
    }

    async fn mark_refresh_used(&self, hash: &TokenHash, at: i64) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
        )
        .bind(at)
        .bind(hash.to_hex())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(r.rows_affected() == 1)
    }

    async fn set_access_jti(&self, hash: &TokenHash, jti: &str) -> StoreResult<()> {
        sqlx::query("UPDATE refresh_tokens SET access_jti = $1 WHERE token_hash = $2")
            .bind(jti)
            .bind(hash.to_hex())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn family_of_access(&self, jti: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT family FROM refresh_tokens WHERE access_jti = $1 LIMIT 1")
            .bind(jti)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.map(|r| r.try_get("family"))
            .transpose()
            .map_err(unavailable)
    }

    async fn family_access(&self, family: &str, since: i64) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT access_jti, created_at FROM refresh_tokens WHERE family = $1 AND created_at > $2 AND access_jti IS NOT NULL",
        )
        .bind(family)
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| Ok((r.try_get("access_jti")?, r.try_get("created_at")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(unavailable)
    }

    async fn revoke_family(&self, family: &str) -> StoreResult<()> {
        sqlx::query("UPDATE refresh_families SET revoked = TRUE WHERE family = $1")
            .bind(family)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn revoke_families_of(&self, user_id: &str) -> StoreResult<u64> {
        let r = sqlx::query(
            "UPDATE refresh_families SET revoked = TRUE WHERE user_id = $1 AND NOT revoked",
        )
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(r.rows_affected())
    }

    async fn live_families(
        &self,
        user_id: &str,
        client_id: &str,
        now: i64,
    ) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT t.family AS family, MIN(t.created_at) AS started FROM refresh_tokens t JOIN refresh_families f ON f.family = t.family WHERE f.user_id = $1 AND NOT f.revoked AND t.client_id = $2 GROUP BY t.family HAVING MAX(CASE WHEN t.used_at IS NULL AND t.expires_at > $3 AND t.family_expires_at > $3 THEN 1 ELSE 0 END) = 1 ORDER BY started, family",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| Ok((r.try_get("family")?, r.try_get("started")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(unavailable)
    }
}

impl DenylistStore for PostgresStore {
    async fn deny_access(&self, jti: &str, exp: i64) -> StoreResult<()> {
        sqlx::query("INSERT INTO access_denylist (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO UPDATE SET expires_at = GREATEST(access_denylist.expires_at, excluded.expires_at)")
            .bind(jti)
            .bind(exp)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        self.bump_generation().await
    }

    async fn denied_access(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT jti, expires_at FROM access_denylist WHERE expires_at > $1")
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(record::denied)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    async fn purge_denied(&self, now: i64) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM access_denylist WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(r.rows_affected())
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
