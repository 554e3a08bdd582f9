//! One SQL store for SQLite and PostgreSQL: every statement is written once, in the plain SQL
//! both accept (`$N` placeholders, which sqlx binds positionally on SQLite too; booleans bound
//! as `bool`, which sqlx writes as 0/1 on SQLite), and compiled against each database by
//! [`sql_store!`]. The backends' own files keep only what really differs: how to connect, the
//! migrations, and PostgreSQL's audit table.
//!
//! Why a macro rather than code generic over `sqlx::Database`: sqlx's generic form needs a
//! higher-ranked bound for every bound value's type and for the executor of every statement
//! (`for<'q> String: Encode<'q, DB> + Type<DB>`, `for<'c> &'c mut DB::Connection: Executor<'c>`,
//! …), which would outgrow the statements. The macro gives the same thing, each statement once
//! and checked by the compiler for both databases, with none of that.
//!
//! ## What moves the revocation generation
//!
//! The generation is how an instance without Redis learns that another changed something its
//! caches hold ([`crate::watch_generation`]). Decided here, for both databases, and pinned by
//! the conformance suite: a write moves it when it ends or narrows what a cached record allows:
//! - disabling, enabling or deleting a user (`set_disabled`, `delete_user`);
//! - deleting a session that existed, or a user's sessions (`delete_session`,
//!   `delete_sessions_of`);
//! - removing a client (`delete_client`).
//!
//! Denylist entries do not: every instance catches up with them on its own
//! ([`DenylistStore::denied_since`](tessera_core::DenylistStore::denied_since)), and a hot
//! counter row would order every revocation of a cluster behind one lock. Refresh-token and
//! code state is never cached, so its changes do not either.

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// Removes up to `$2` sessions past their absolute or their idle end (`$1` now); the purge
/// calls again while a batch was full (`tessera_core::Purged`). Each half of the condition is an
/// index search (`sessions_by_expiry`, `sessions_by_idle_end`, whose expression this must keep
/// as written): a purge costs what it removes, not the sessions held. The condition is said again outside the
/// batch so that PostgreSQL checks it anew on a row another transaction changed meanwhile.
pub(crate) const PURGE_SESSIONS: &str = "DELETE FROM sessions WHERE token_hash IN (SELECT token_hash FROM sessions WHERE expires_at <= $1 OR last_seen_at + idle_timeout <= $1 LIMIT $2) AND (expires_at <= $1 OR last_seen_at + idle_timeout <= $1)";

/// How many rows (sessions, denylist entries, records of access tokens, codes) one statement of
/// a purge removes, or ended refresh families one transaction takes, a call each: the write lock
/// is held, and the write timeout runs, for a batch, not for a backlog (a mass expiry after an
/// outage or a bulk load; the first family purge after an upgrade has every family ever ended:
/// 10^6 sessions took 10 s in one statement, five times the write timeout), and a purge cut short
/// keeps the batches it committed.
pub(crate) const PURGE_BATCH: i64 = 500;

/// A batch of a purge that removed `removed` of the `taken` it found (`PURGE_BATCH` at most;
/// a single `DELETE` tells only what it removed, so a batch short of rows a concurrent write
/// kept, or another instance's purge took, ends the purge early: the rest goes the next minute).
pub(crate) fn purged(removed: u64, taken: u64) -> tessera_core::Purged {
    tessera_core::Purged::of(removed, taken, PURGE_BATCH.unsigned_abs())
}

/// The purges of what ends by a time `$1`, `$2` rows at most, found by the time's index; as
/// `PURGE_SESSIONS`, the condition is checked again on each row removed (PostgreSQL's subquery
/// may see a row a concurrent write has since changed: a denylist entry extended meanwhile
/// stays).
pub(crate) const PURGE_ACCESS: &str = "DELETE FROM refresh_access WHERE jti IN (SELECT jti FROM refresh_access WHERE issued_at < $1 LIMIT $2) AND issued_at < $1";
pub(crate) const PURGE_DENIED: &str = "DELETE FROM access_denylist WHERE jti IN (SELECT jti FROM access_denylist WHERE expires_at <= $1 LIMIT $2) AND expires_at <= $1";
pub(crate) const PURGE_CODES: &str = "DELETE FROM oauth_codes WHERE code_hash IN (SELECT code_hash FROM oauth_codes WHERE expires_at <= $1 LIMIT $2) AND expires_at <= $1";

/// Denylist entries a page of [`tessera_core::DenylistStore::each_denied`] reads (the backend's
/// `DENIED_PAGE`): about 50 KB aggregated, and as much read from it, each below the size from
/// which glibc maps (and, once one such buffer is freed, keeps up to twice its size of freed
/// memory in the heap).
pub(crate) const DENIED_PAGE_SIZE: i64 = 1000;

/// The purge of one ended family (`$1`; `$2` the bound, then the end found), after the backend's
/// `ENDED_FAMILIES` took its row (oldest end first, up to `PURGE_BATCH`): its tokens ended by the
/// bound go; then the family goes if none is left, or, if some are (a family made by a version
/// that did not record its end: its row says 0), it gets their end and is taken again only then.
/// Each an index search.
pub(crate) const PURGE_FAMILY: [&str; 4] = [
    "DELETE FROM refresh_tokens WHERE family = $1 AND family_expires_at <= $2",
    "SELECT MAX(family_expires_at) AS ends FROM refresh_tokens WHERE family = $1",
    "DELETE FROM refresh_families WHERE family = $1",
    "UPDATE refresh_families SET expires_at = $2 WHERE family = $1",
];

/// The migrator of `migrations` (`(version, description, sql)`, in order).
pub(crate) fn migrator(migrations: &[(i64, &str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|(v, d, sql)| {
                Migration::new(
                    *v,
                    (*d).to_owned().into(),
                    MigrationType::Simple,
                    (*sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Implements every store trait of tessera-core for `$store` (a struct with a `pool` field to
/// read through and a `writes()` method giving the pool to write through)
/// over database `$db` with rows `$row`: users, sessions, signing keys, the revocation
/// generation, and (through `token_store_sql!` and `client_store_sql!`) refresh tokens, the
/// denylist, clients, codes and consents.
macro_rules! sql_store {
    ($store:ty, $db:ty, $row:ty) => {
        fn unavailable(e: sqlx::Error) -> tessera_core::StoreError {
            match &e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    tessera_core::StoreError::Conflict
                }
                _ => tessera_core::StoreError::Unavailable(e.to_string()),
            }
        }

        impl $store {
            /// One batch of a purge by `sql` (one statement: `$1` the time, `$2` the batch).
            async fn purge_batch(
                &self,
                sql: &'static str,
                until: i64,
            ) -> tessera_core::StoreResult<tessera_core::Purged> {
                let n = sqlx::query(sql)
                    .bind(until)
                    .bind(crate::sql::PURGE_BATCH)
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?
                    .rows_affected();
                Ok(crate::sql::purged(n, n))
            }

            /// Moves the revocation generation (see the module's list of the writes that do);
            /// called after the change it announces has been committed.
            async fn bump_generation(&self) -> tessera_core::StoreResult<()> {
                sqlx::query("UPDATE meta SET value = value + 1 WHERE key = 'revocation_generation'")
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }

            /// Every row `query` selects, decoded.
            async fn rows<'q, T>(
                &self,
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>,
                decode: impl Fn(&$row) -> Result<T, sqlx::Error>,
            ) -> tessera_core::StoreResult<Vec<T>> {
                let rows = query.fetch_all(&self.pool).await.map_err(unavailable)?;
                rows.iter().map(decode).collect::<Result<_, _>>().map_err(unavailable)
            }

            /// The row `query` selects, if any, decoded.
            async fn row<'q, T>(
                &self,
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>,
                decode: impl Fn(&$row) -> Result<T, sqlx::Error>,
            ) -> tessera_core::StoreResult<Option<T>> {
                let row = query.fetch_optional(&self.pool).await.map_err(unavailable)?;
                row.as_ref().map(decode).transpose().map_err(unavailable)
            }

            /// Closes the pools (waits for connections to be returned).
            pub async fn close(&self) {
                self.pool.close().await;
                self.close_writes().await;
            }
        }

        tessera_core::stores_in_one!($store);
        crate::record::columns_of!($row);
        crate::token_sql::token_store_sql!($store, $db);
        crate::oauth_sql::client_store_sql!($store);

        impl tessera_core::UserStore for $store {
            async fn create_user(&self, user: &tessera_core::User) -> tessera_core::StoreResult<()> {
                sqlx::query("INSERT INTO users (id, username, password_hash, disabled, created_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(&user.id)
                    .bind(&user.username)
                    .bind(&user.password_hash)
                    .bind(user.disabled)
                    .bind(user.created_at)
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }

            async fn user_by_name(&self, username: &str) -> tessera_core::StoreResult<Option<tessera_core::User>> {
                let sql = crate::record::select!(user, "FROM users WHERE username = $1");
                self.row(sqlx::query(sql).bind(username), crate::record::user).await
            }

            async fn user_by_id(&self, id: &str) -> tessera_core::StoreResult<Option<tessera_core::User>> {
                let sql = crate::record::select!(user, "FROM users WHERE id = $1");
                self.row(sqlx::query(sql).bind(id), crate::record::user).await
            }

            async fn list_users(&self) -> tessera_core::StoreResult<Vec<tessera_core::User>> {
                let sql = crate::record::select!(user, "FROM users ORDER BY username");
                self.rows(sqlx::query(sql), crate::record::user).await
            }

            async fn set_disabled(&self, id: &str, disabled: bool) -> tessera_core::StoreResult<bool> {
                let r = sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
                    .bind(disabled)
                    .bind(id)
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                self.bump_generation().await?;
                Ok(r.rows_affected() > 0)
            }

            async fn set_password_hash(&self, id: &str, hash: &str) -> tessera_core::StoreResult<bool> {
                let r = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                    .bind(hash)
                    .bind(id)
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                Ok(r.rows_affected() > 0)
            }

            async fn delete_user(&self, id: &str) -> tessera_core::StoreResult<bool> {
                let r = sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(id)
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                self.bump_generation().await?;
                Ok(r.rows_affected() > 0)
            }

            async fn ping(&self) -> tessera_core::StoreResult<()> {
                sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }
        }

        impl tessera_core::SessionStore for $store {
            async fn create_session(
                &self,
                hash: &tessera_core::TokenHash,
                s: &tessera_core::Session,
            ) -> tessera_core::StoreResult<()> {
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
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }

            async fn session(
                &self,
                hash: &tessera_core::TokenHash,
            ) -> tessera_core::StoreResult<Option<tessera_core::Session>> {
                let sql = crate::record::select!(session, "FROM sessions WHERE token_hash = $1");
                self.row(sqlx::query(sql).bind(hash.to_hex()), |r| {
                    crate::record::session(r).map(|(_, s)| s)
                })
                .await
            }

            async fn touch_session(
                &self,
                hash: &tessera_core::TokenHash,
                last_seen_at: i64,
            ) -> tessera_core::StoreResult<()> {
                sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_hash = $2")
                    .bind(last_seen_at)
                    .bind(hash.to_hex())
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }

            async fn set_session_data(
                &self,
                hash: &tessera_core::TokenHash,
                data: &serde_json::Value,
            ) -> tessera_core::StoreResult<bool> {
                let r = sqlx::query("UPDATE sessions SET data = $1 WHERE token_hash = $2")
                    .bind(data.to_string())
                    .bind(hash.to_hex())
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                Ok(r.rows_affected() > 0)
            }

            async fn delete_session(&self, hash: &tessera_core::TokenHash) -> tessera_core::StoreResult<bool> {
                let r = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                    .bind(hash.to_hex())
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                let deleted = r.rows_affected() > 0;
                if deleted {
                    self.bump_generation().await?;
                }
                Ok(deleted)
            }

            async fn sessions_of(
                &self,
                user_id: &str,
            ) -> tessera_core::StoreResult<Vec<(tessera_core::TokenHash, tessera_core::Session)>> {
                let sql = crate::record::select!(session, "FROM sessions WHERE user_id = $1");
                self.rows(sqlx::query(sql).bind(user_id), crate::record::session).await
            }

            async fn delete_sessions_of(
                &self,
                user_id: &str,
                except: Option<&tessera_core::TokenHash>,
            ) -> tessera_core::StoreResult<u64> {
                let r = sqlx::query(
                    "DELETE FROM sessions WHERE user_id = $1 AND (CAST($2 AS TEXT) IS NULL OR token_hash <> $2)",
                )
                .bind(user_id)
                .bind(except.map(tessera_core::TokenHash::to_hex))
                .execute(self.writes())
                .await
                .map_err(unavailable)?;
                self.bump_generation().await?;
                Ok(r.rows_affected())
            }

            async fn purge_expired_sessions(&self, now: i64) -> tessera_core::StoreResult<tessera_core::Purged> {
                self.purge_batch(crate::sql::PURGE_SESSIONS, now).await
            }

            async fn count_sessions(&self) -> tessera_core::StoreResult<u64> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(u64::try_from(n).unwrap_or(0))
            }
        }

        impl tessera_core::KeyStore for $store {
            async fn signing_keys(&self) -> tessera_core::StoreResult<Vec<tessera_core::StoredKey>> {
                let sql = crate::record::select!(key, "FROM signing_keys ORDER BY activates_at, created_at");
                self.rows(sqlx::query(sql), crate::record::stored_key).await
            }

            async fn add_signing_key(&self, key: &tessera_core::StoredKey) -> tessera_core::StoreResult<()> {
                sqlx::query("INSERT INTO signing_keys (kid, alg, sealed, public_jwk, created_at, activates_at) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(&key.kid)
                    .bind(&key.alg)
                    .bind(&key.sealed)
                    .bind(&key.public_jwk)
                    .bind(key.created_at)
                    .bind(key.activates_at)
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }
        }

        /// The generation moves with the writes `crate::sql` lists.
        impl crate::Generation for $store {
            async fn revocation_generation(&self) -> tessera_core::StoreResult<i64> {
                sqlx::query_scalar("SELECT value FROM meta WHERE key = 'revocation_generation'")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(unavailable)
            }
        }

        /// Each process counts login failures for itself (a single instance, or a cluster
        /// without Redis).
        impl tessera_core::ThrottleStore for $store {}

        impl crate::guard::Probe for $store {
            async fn probe(&self) -> tessera_core::StoreResult<()> {
                tessera_core::UserStore::ping(self).await
            }
        }
    };
}
pub(crate) use sql_store;

/// The purges' statements, for the plan tests of each backend.
#[cfg(test)]
pub(crate) mod plans {
    /// A parameter's type (what EXPLAIN is given for it).
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Param {
        Int,
        Text,
    }

    /// Every statement of the purges with its parameters; `ended` is the backend's
    /// `ENDED_FAMILIES`.
    pub(crate) fn purges(ended: &'static str) -> [(&'static str, &'static [Param]); 9] {
        use Param::{Int, Text};
        let [tokens, ends, family, mend] = super::PURGE_FAMILY;
        [
            (super::PURGE_SESSIONS, &[Int, Int]),
            (ended, &[Int, Int]),
            (tokens, &[Text, Int]),
            (ends, &[Text]),
            (family, &[Text]),
            (mend, &[Text, Int]),
            (super::PURGE_ACCESS, &[Int, Int]),
            (super::PURGE_DENIED, &[Int, Int]),
            (super::PURGE_CODES, &[Int, Int]),
        ]
    }
}
