//! [`RefreshStore`](tessera_core::RefreshStore) and
//! [`DenylistStore`](tessera_core::DenylistStore) for both SQL backends, in the plain SQL both
//! accept (`$N` placeholders, which sqlx binds positionally on SQLite too; `TRUE` and `NOT` on
//! SQLite's 0/1 flags).
//!
//! Every change of a token's state is one transaction. Issuing in a family (a rotation, an
//! honest retry's access token) and revoking it are ordered by the family's row: an issue
//! first takes it with a no-op update that matches only a live family, a revocation takes it
//! by revoking. A revocation that comes second therefore sees every access token recorded
//! before it (and denylists them in the same transaction); an issue that comes second finds
//! the family revoked and records nothing. On SQLite the first write of a transaction takes
//! the database's write lock, which orders them the same way; there a rotation (the backend's
//! `ROTATE_BATCH`) checks its family as a condition of the spend, its first write.
//!
//! Denylist entries do not move the revocation generation: every server catches up with them
//! on its own (`DenylistStore::denied_since`), and a hot counter row would order every
//! revocation of a cluster behind one lock.

/// Implements `RefreshStore` and `DenylistStore` for `$store` over database `$db`
/// (`sqlx::Sqlite`, `sqlx::Postgres`): a struct with a `pool` field and a `writes()` method, in a
/// module that has an `unavailable(sqlx::Error) -> StoreError` function and the row decoders of
/// `crate::record`.
/// Also defines `insert_refresh`, which the client store's code redemption shares.
macro_rules! token_store_sql {
    ($store:ty, $db:ty) => {
        /// The upsert of a denylist entry: the later expiry wins, and the entry is stamped
        /// again so that the instances' catch-up sees the change.
        const DENY: &str = "INSERT INTO access_denylist (jti, expires_at, added_at) VALUES ($1, $2, $3) ON CONFLICT (jti) DO UPDATE SET expires_at = CASE WHEN excluded.expires_at > access_denylist.expires_at THEN excluded.expires_at ELSE access_denylist.expires_at END, added_at = excluded.added_at";

        /// Stores a refresh token (creating its family with the first) and records its access
        /// token, inside `tx`; a token stored already is a conflict.
        async fn insert_refresh(
            tx: &mut sqlx::Transaction<'_, $db>,
            hash: &tessera_core::TokenHash,
            r: &tessera_core::RefreshRecord,
        ) -> tessera_core::StoreResult<()> {
            sqlx::query("INSERT INTO refresh_families (family, user_id, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(&r.family)
                .bind(&r.user_id)
                .bind(r.family_expires_at)
                .execute(&mut **tx)
                .await
                .map_err(unavailable)?;
            if !insert_token(tx, hash, r).await? {
                return Err(tessera_core::StoreError::Conflict);
            }
            if let Some(jti) = &r.access_jti {
                record_access_in(tx, &r.family, jti, r.created_at).await?;
            }
            Ok(())
        }

        /// `query` with a refresh token's columns bound as `$1`..`$10`: its hash, family, user,
        /// client, scope, creation, expiry, family's end, use and access token's id.
        fn bind_token<'q>(
            query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>,
            hash: &tessera_core::TokenHash,
            r: &'q tessera_core::RefreshRecord,
        ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
            query
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
        }

        /// Stores a refresh token of an existing family inside `tx`, unless one is stored under
        /// `hash` already; whether it was.
        async fn insert_token(
            tx: &mut sqlx::Transaction<'_, $db>,
            hash: &tessera_core::TokenHash,
            r: &tessera_core::RefreshRecord,
        ) -> tessera_core::StoreResult<bool> {
            let r = bind_token(sqlx::query("INSERT INTO refresh_tokens (token_hash, family, user_id, client_id, scope, created_at, expires_at, family_expires_at, used_at, access_jti) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (token_hash) DO NOTHING"), hash, r)
                .execute(&mut **tx)
                .await
                .map_err(unavailable)?;
            Ok(r.rows_affected() == 1)
        }

        async fn record_access_in(
            tx: &mut sqlx::Transaction<'_, $db>,
            family: &str,
            jti: &str,
            issued_at: i64,
        ) -> tessera_core::StoreResult<()> {
            sqlx::query("INSERT INTO refresh_access (jti, family, issued_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(jti)
                .bind(family)
                .bind(issued_at)
                .execute(&mut **tx)
                .await
                .map_err(unavailable)?;
            Ok(())
        }

        /// Denylists inside `tx` the access tokens `live` (`(jti, issued_at)`) and
        /// `rev.also`; returns the entries, one per key with its latest expiry.
        async fn deny_in(
            tx: &mut sqlx::Transaction<'_, $db>,
            live: Vec<(String, i64)>,
            rev: &tessera_core::FamilyRevocation<'_>,
        ) -> tessera_core::StoreResult<Vec<(String, i64)>> {
            let mut denied: Vec<(String, i64)> = live
                .into_iter()
                .map(|(jti, issued)| (jti, issued + rev.access_ttl))
                .chain(rev.also.iter().cloned())
                .collect();
            denied.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            denied.dedup_by(|a, b| a.0 == b.0);
            for (key, exp) in &denied {
                sqlx::query(DENY)
                    .bind(key)
                    .bind(*exp)
                    .bind(rev.now)
                    .execute(&mut **tx)
                    .await
                    .map_err(unavailable)?;
            }
            Ok(denied)
        }

        /// [`RefreshStore::rotate_refresh`](tessera_core::RefreshStore::rotate_refresh) as the
        /// statements of `batch` (the backend's `ROTATE_BATCH`), sent in one go inside `tx`:
        /// the token spent if unused and its family live, then the successor and the access
        /// token stored. The spend decides: unless it changed the token, the transaction is
        /// rolled back (what the inserts did goes with it) and the rotation lost.
        async fn rotate_in_one(
            mut tx: sqlx::Transaction<'_, $db>,
            batch: &'static str,
            hash: &tessera_core::TokenHash,
            at: i64,
            successor: &tessera_core::TokenHash,
            r: &tessera_core::RefreshRecord,
        ) -> tessera_core::StoreResult<bool> {
            use futures_util::TryStreamExt as _;
            // Each statement's outcome, in order (none of them returns rows).
            #[allow(deprecated)] // one prepared string of several statements: SQLite's driver only
            let outcomes: Vec<_> = bind_token(sqlx::query(sqlx::AssertSqlSafe(batch)), successor, r)
                .bind(at)
                .bind(hash.to_hex())
                .fetch_many(&mut *tx)
                .try_filter_map(|step| async move { Ok(step.left()) })
                .try_collect()
                .await
                .map_err(unavailable)?;
            let [spent, _successor, _access] = outcomes.as_slice() else {
                return Err(tessera_core::StoreError::Unavailable(format!(
                    "the rotation ran {} statements of 3",
                    outcomes.len()
                )));
            };
            if spent.rows_affected() != 1 {
                // Dropped: rolled back.
                return Ok(false);
            }
            tx.commit().await.map_err(unavailable)?;
            Ok(true)
        }

        /// Takes `family`'s row for an issue; false if the family is revoked (or unknown).
        async fn hold_live_family(
            tx: &mut sqlx::Transaction<'_, $db>,
            family: &str,
        ) -> tessera_core::StoreResult<bool> {
            let r = sqlx::query("UPDATE refresh_families SET revoked = revoked WHERE family = $1 AND NOT revoked")
                .bind(family)
                .execute(&mut **tx)
                .await
                .map_err(unavailable)?;
            Ok(r.rows_affected() == 1)
        }

        impl tessera_core::RefreshStore for $store {
            async fn create_refresh(
                &self,
                hash: &tessera_core::TokenHash,
                r: &tessera_core::RefreshRecord,
            ) -> tessera_core::StoreResult<()> {
                let mut tx = self.writes().begin().await.map_err(unavailable)?;
                insert_refresh(&mut tx, hash, r).await?;
                tx.commit().await.map_err(unavailable)
            }

            async fn refresh_token(
                &self,
                hash: &tessera_core::TokenHash,
            ) -> tessera_core::StoreResult<Option<(tessera_core::RefreshRecord, bool)>> {
                let sql = crate::record::select!(refresh, "FROM refresh_tokens t JOIN refresh_families f ON f.family = t.family WHERE t.token_hash = $1");
                self.row(sqlx::query(sql).bind(hash.to_hex()), crate::record::refresh).await
            }

            async fn rotate_refresh(
                &self,
                hash: &tessera_core::TokenHash,
                at: i64,
                successor: &tessera_core::TokenHash,
                record: &tessera_core::RefreshRecord,
            ) -> tessera_core::StoreResult<bool> {
                let mut tx = self.writes().begin().await.map_err(unavailable)?;
                if let Some(batch) = ROTATE_BATCH {
                    return rotate_in_one(tx, batch, hash, at, successor, record).await;
                }
                if !hold_live_family(&mut tx, &record.family).await? {
                    return Ok(false);
                }
                let used = sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL")
                    .bind(at)
                    .bind(hash.to_hex())
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                if used.rows_affected() != 1 {
                    // Dropped: rolled back.
                    return Ok(false);
                }
                // The successor, in the family held above; if an earlier rotation stored it
                // already, it is kept as it is, and the new access token recorded in the family
                // either way. Two statements, where SQLite's every one is a round trip to the
                // connection's thread.
                insert_token(&mut tx, successor, record).await?;
                if let Some(jti) = &record.access_jti {
                    record_access_in(&mut tx, &record.family, jti, record.created_at).await?;
                }
                tx.commit().await.map_err(unavailable)?;
                Ok(true)
            }

            async fn record_access(
                &self,
                family: &str,
                jti: &str,
                issued_at: i64,
            ) -> tessera_core::StoreResult<bool> {
                let mut tx = self.writes().begin().await.map_err(unavailable)?;
                if !hold_live_family(&mut tx, family).await? {
                    return Ok(false);
                }
                record_access_in(&mut tx, family, jti, issued_at).await?;
                tx.commit().await.map_err(unavailable)?;
                Ok(true)
            }

            async fn family_of_access(&self, jti: &str) -> tessera_core::StoreResult<Option<String>> {
                let row: Option<(String,)> = sqlx::query_as("SELECT family FROM refresh_access WHERE jti = $1")
                    .bind(jti)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(row.map(|(f,)| f))
            }

            async fn revoke_family(
                &self,
                family: &str,
                rev: &tessera_core::FamilyRevocation<'_>,
            ) -> tessera_core::StoreResult<Vec<(String, i64)>> {
                let mut tx = self.writes().begin().await.map_err(unavailable)?;
                // Taking the family's row first: issues in it are before or after, never beside.
                sqlx::query("UPDATE refresh_families SET revoked = TRUE WHERE family = $1")
                    .bind(family)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                let live: Vec<(String, i64)> = sqlx::query_as("SELECT jti, issued_at FROM refresh_access WHERE family = $1 AND issued_at > $2")
                    .bind(family)
                    .bind(rev.since)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                let denied = deny_in(&mut tx, live, rev).await?;
                tx.commit().await.map_err(unavailable)?;
                Ok(denied)
            }

            async fn revoke_families_of(
                &self,
                user_id: &str,
                rev: &tessera_core::FamilyRevocation<'_>,
            ) -> tessera_core::StoreResult<(u64, Vec<(String, i64)>)> {
                let mut tx = self.writes().begin().await.map_err(unavailable)?;
                // Every family's row first, as `revoke_family` takes one.
                let n = sqlx::query("UPDATE refresh_families SET revoked = TRUE WHERE user_id = $1 AND NOT revoked")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?
                    .rows_affected();
                let live: Vec<(String, i64)> = sqlx::query_as("SELECT a.jti, a.issued_at FROM refresh_access a JOIN refresh_families f ON f.family = a.family WHERE f.user_id = $1 AND a.issued_at > $2")
                    .bind(user_id)
                    .bind(rev.since)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                let denied = deny_in(&mut tx, live, rev).await?;
                tx.commit().await.map_err(unavailable)?;
                Ok((n, denied))
            }

            async fn live_families(
                &self,
                user_id: &str,
                client_id: &str,
                now: i64,
            ) -> tessera_core::StoreResult<Vec<(String, i64)>> {
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT t.family AS family, MIN(t.created_at) AS started FROM refresh_tokens t JOIN refresh_families f ON f.family = t.family WHERE f.user_id = $1 AND NOT f.revoked AND t.client_id = $2 GROUP BY t.family HAVING MAX(CASE WHEN t.used_at IS NULL AND t.expires_at > $3 AND t.family_expires_at > $3 THEN 1 ELSE 0 END) = 1 ORDER BY started, family",
                )
                .bind(user_id)
                .bind(client_id)
                .bind(now)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(rows)
            }

            async fn purge_access(&self, before: i64) -> tessera_core::StoreResult<tessera_core::Purged> {
                self.purge_batch(crate::sql::PURGE_ACCESS, before).await
            }

            async fn purge_families(&self, before: i64) -> tessera_core::StoreResult<tessera_core::Purged> {
                let [tokens, ends, family, mend] = crate::sql::PURGE_FAMILY;
                let mut removed = 0;
                // One batch, one transaction, the families' rows taken first (as every other
                // change of a family takes them). Each family taken is removed or gets a
                // later end, so every batch shrinks what is left and the caller's loop ends.
                let mut tx = self.writes().begin().await.map_err(unavailable)?;
                let ended: Vec<(String,)> = sqlx::query_as(ENDED_FAMILIES)
                    .bind(before)
                    .bind(crate::sql::PURGE_BATCH)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                for (f,) in &ended {
                    sqlx::query(tokens)
                        .bind(f)
                        .bind(before)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                    let left: Option<i64> = sqlx::query_scalar(ends)
                        .bind(f)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                    let q = match left {
                        None => sqlx::query(family).bind(f),
                        Some(end) => sqlx::query(mend).bind(f).bind(end),
                    };
                    q.execute(&mut *tx).await.map_err(unavailable)?;
                    removed += u64::from(left.is_none());
                }
                tx.commit().await.map_err(unavailable)?;
                Ok(crate::sql::purged(removed, ended.len() as u64))
            }
        }

        impl tessera_core::DenylistStore for $store {
            async fn deny_access(&self, jti: &str, exp: i64, now: i64) -> tessera_core::StoreResult<()> {
                sqlx::query(DENY)
                    .bind(jti)
                    .bind(exp)
                    .bind(now)
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }

            async fn denied_access(&self, now: i64) -> tessera_core::StoreResult<tessera_core::Denied> {
                let mut all = tessera_core::Denied::default();
                tessera_core::DenylistStore::each_denied(self, now, &mut all).await?;
                Ok(all)
            }

            async fn each_denied(
                &self,
                now: i64,
                sink: &mut dyn tessera_core::DeniedSink,
            ) -> tessera_core::StoreResult<()> {
                use crate::record::Columns as _;
                let mut conn = self.pool.acquire().await.map_err(unavailable)?;
                self.bulk_read(&mut conn).await?;
                // One read transaction: the count and every page see one snapshot, so nothing
                // committed meanwhile shifts a page boundary past an entry.
                let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(unavailable)?;
                if let Some(sql) = SNAPSHOT {
                    sqlx::query(sql).execute(&mut *tx).await.map_err(unavailable)?;
                }
                let count = sqlx::query(DENIED_COUNT)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                let n = count.maybe_int("n").map_err(unavailable)?.unwrap_or(0);
                sink.expect(usize::try_from(n).unwrap_or(0));
                let mut after = DENIED_FROM.to_owned();
                loop {
                    // One row a page, the page's entries aggregated (`record::denied_page`):
                    // a row per entry costs a hand-off from SQLite's worker thread each, which
                    // was most of a start with 10^5 revocations in force.
                    let row = sqlx::query(DENIED_PAGE)
                        .bind(now)
                        .bind(&after)
                        .bind(crate::sql::DENIED_PAGE_SIZE)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                    let page = crate::record::denied_page(&row).map_err(unavailable)?;
                    sink.page(&page);
                    match row.maybe_text("last").map_err(unavailable)? {
                        Some(last) if row.int("n").map_err(unavailable)? == crate::sql::DENIED_PAGE_SIZE => {
                            after = last;
                        }
                        _ => break,
                    }
                }
                tx.commit().await.map_err(unavailable)
            }

            async fn denied_since(
                &self,
                since: i64,
                now: i64,
            ) -> tessera_core::StoreResult<tessera_core::Denied> {
                let rows = sqlx::query("SELECT jti, expires_at FROM access_denylist WHERE added_at >= $1 AND expires_at > $2")
                    .bind(since)
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?;
                let mut denied = tessera_core::Denied::default();
                for row in &rows {
                    let (key, exp) = crate::record::denied(row).map_err(unavailable)?;
                    denied.push(&key, exp);
                }
                Ok(denied)
            }

            async fn purge_denied(&self, now: i64) -> tessera_core::StoreResult<tessera_core::Purged> {
                self.purge_batch(crate::sql::PURGE_DENIED, now).await
            }
        }
    };
}
pub(crate) use token_store_sql;
