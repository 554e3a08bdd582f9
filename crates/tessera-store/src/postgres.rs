//! PostgreSQL through sqlx: the shared store of a cluster. Migrations are embedded and applied
//! under sqlx's advisory lock, so instances starting together migrate once. Every revoking
//! change moves a generation number that each instance watches, so caches in front of this
//! store learn of changes made by any instance within the watch interval.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use tessera_core::{StoreError, StoreResult};

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
    (
        5,
        "signing keys held by an HSM",
        include_str!("../migrations/shared/held_keys.sql"),
    ),
    (
        6,
        "indexes at scale",
        include_str!("../migrations/shared/scale_indexes.sql"),
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
        let migrator = crate::sql::migrator(MIGRATIONS);
        let before = self.applied_migrations().await?;
        migrator.run(self.writes()).await.map_err(|e| {
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

    /// Appends audit events `(at, event, fields as JSON text)` in one statement.
    pub async fn record_audit(&self, events: &[(i64, String, String)]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut q = sqlx::QueryBuilder::new("INSERT INTO audit_events (at, event, fields) ");
        q.push_values(events, |mut b, (at, event, fields)| {
            b.push_bind(*at).push_bind(event).push_bind(fields);
        });
        q.build()
            .execute(self.writes())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The pool writes go through: the one pool (PostgreSQL takes row locks, and queues its
    /// writers itself).
    fn writes(&self) -> &PgPool {
        &self.pool
    }

    /// The writes' pool is the one pool: closed with it.
    async fn close_writes(&self) {}

    /// Nothing to ready for a bulk read: what it reads is cached in the server, not here.
    async fn bulk_read(
        &self,
        _conn: &mut sqlx::pool::PoolConnection<sqlx::Postgres>,
    ) -> StoreResult<()> {
        Ok(())
    }
}

/// Up to `$2` refresh families ended at or before `$1`, oldest end first, their rows locked (see
/// `sql::PURGE_FAMILY`); a row another transaction holds is left for the next purge, so the purge
/// never waits on a family and cannot deadlock with a rotation or a revocation.
const ENDED_FAMILIES: &str = "SELECT family FROM refresh_families WHERE expires_at <= $1 ORDER BY expires_at, family LIMIT $2 FOR UPDATE SKIP LOCKED";

/// A page of the denylist entries in force at `$1`: up to `$3` after key `$2` in the primary
/// key's order, aggregated (`record::denied_page`), with the page's last key and its size.
const DENIED_PAGE: &str = "SELECT string_agg(expires_at::text || ' ' || length(jti)::text || ' ' || jti, '') AS list, max(jti) AS last, count(*) AS n FROM (SELECT expires_at, jti FROM access_denylist WHERE jti >= $2 AND (jti > $2 OR $2 = '') AND expires_at > $1 ORDER BY jti LIMIT $3) p";

/// Where the first page begins: before every key (the empty key included, by `DENIED_PAGE`).
const DENIED_FROM: &str = "";

/// How many denylist entries are in force at `$1` (`n`), from the expiry index (the table's
/// rows are not read to add up their keys): the room a reload makes first.
const DENIED_COUNT: &str = "SELECT COUNT(*) AS n FROM access_denylist WHERE expires_at > $1";

/// A rotation's statements one by one (PostgreSQL prepares one statement at a time), the
/// family's row taken first.
const ROTATE_BATCH: Option<&str> = None;

/// Every page of a reload in one snapshot (READ COMMITTED takes one a statement).
const SNAPSHOT: Option<&str> = Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");

crate::sql::sql_store!(PostgresStore, sqlx::Postgres, PgRow);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failure is a panic

    use sqlx::Row;

    use crate::sql::plans::Param;

    /// The machine's PostgreSQL (`TEST_POSTGRES_URL`); not there fails the test, never skips it.
    fn url() -> String {
        std::env::var("TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    #[tokio::test]
    async fn the_purges_read_only_what_they_remove() {
        let schema = format!("tessera_test_purge_plan_{}", std::process::id());
        let admin = sqlx::PgPool::connect(&url()).await.unwrap();
        let create = format!("CREATE SCHEMA {schema}");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&admin)
            .await
            .unwrap();
        let sep = if url().contains('?') { '&' } else { '?' };
        let store =
            super::PostgresStore::open(&format!("{}{sep}options[search_path]={schema}", url()))
                .await;
        let mut plans = Vec::new();
        if let Ok(store) = &store {
            // On tables this small the planner would scan whatever the indexes; with
            // sequential scans priced out, it scans only if no index can answer.
            let mut tx = store.pool.begin().await.unwrap();
            sqlx::query("SET LOCAL enable_seqscan = off")
                .execute(&mut *tx)
                .await
                .unwrap();
            let page: (&str, &[Param]) =
                (super::DENIED_PAGE, &[Param::Int, Param::Text, Param::Int]);
            for (sql, params) in crate::sql::plans::purges(super::ENDED_FAMILIES)
                .into_iter()
                .chain([page])
            {
                let explain = format!("EXPLAIN {sql}");
                let mut q = sqlx::query(sqlx::AssertSqlSafe(explain));
                for p in params {
                    q = match p {
                        Param::Int => q.bind(0_i64),
                        Param::Text => q.bind("fam"),
                    };
                }
                let rows = q.fetch_all(&mut *tx).await;
                let plan = match rows {
                    Ok(rows) => rows.iter().map(|r| r.get::<String, _>(0)).collect(),
                    Err(e) => vec![format!("EXPLAIN failed: {e}")],
                };
                plans.push((sql, plan));
            }
        }
        let drop = format!("DROP SCHEMA {schema} CASCADE");
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&admin)
            .await
            .unwrap();
        store.unwrap();
        assert!(
            plans[0]
                .1
                .iter()
                .any(|s| s.contains("sessions_by_idle_end")),
            "{plans:?}"
        );
        // A page of the denylist's reload walks the primary key from where the last ended,
        // never sorting what is left.
        let (_, page) = plans.last().unwrap();
        assert!(
            page.iter().any(|s| s.contains("access_denylist_pkey"))
                && page.iter().all(|s| !s.contains("Sort")),
            "{page:?}"
        );
        for (sql, plan) in plans {
            assert!(
                plan.iter()
                    .all(|step| !step.contains("Seq Scan") && !step.starts_with("EXPLAIN failed")),
                "{sql}: {plan:?}"
            );
        }
    }
}
