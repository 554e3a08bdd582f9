//! SQLite through sqlx: one file, WAL journal, migrations embedded in the binary.

use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use tessera_core::{StoreError, StoreResult};

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
    (
        8,
        "signing keys held by an HSM",
        include_str!("../migrations/shared/held_keys.sql"),
    ),
    (
        9,
        "indexes at scale",
        include_str!("../migrations/shared/scale_indexes.sql"),
    ),
];

/// The SQLite store. Clones share the connection pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
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
        crate::sql::migrator(MIGRATIONS)
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating the SQLite schema: {e}")))?;
        Ok(SqliteStore { pool })
    }
}

/// Every denylist entry in force, in one row (see `record::denied_snapshot`).
const DENYLIST_SNAPSHOT: &str = "SELECT group_concat(expires_at || ' ' || length(jti) || ' ' || jti, '') AS list FROM access_denylist WHERE expires_at > $1";

crate::sql::sql_store!(SqliteStore, sqlx::Sqlite, SqliteRow);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failure is a panic

    use sqlx::Row;

    /// How SQLite runs `sql`: the detail of each step of its plan.
    async fn plan(store: &super::SqliteStore, sql: &str) -> Vec<String> {
        sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .bind(0_i64)
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect()
    }

    #[tokio::test]
    async fn the_purges_read_only_what_they_remove() {
        let store = super::SqliteStore::open("sqlite::memory:").await.unwrap();
        let sessions = plan(&store, crate::sql::PURGE_SESSIONS).await;
        assert!(
            sessions.iter().any(|s| s.contains("sessions_by_idle_end")),
            "{sessions:?}"
        );
        // Every step a search by index; a `SCAN` would read every session or refresh token,
        // under the write lock, every minute.
        for sql in std::iter::once(crate::sql::PURGE_SESSIONS).chain(crate::sql::PURGE_FAMILIES) {
            let plan = plan(&store, sql).await;
            assert!(
                plan.iter().all(|step| !step.starts_with("SCAN")),
                "{sql}: {plan:?}"
            );
        }
    }
}
