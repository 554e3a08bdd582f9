//! [`ClientStore`](tessera_core::ClientStore) for both SQL backends: one migration makes the
//! tables for both (`migrations/shared/oauth.sql`), and every statement here is plain SQL both
//! accept, with `$N` placeholders (sqlx binds them positionally on SQLite too). Records travel
//! as JSON.

/// Implements `ClientStore` for `$store`, a struct with a `pool` field, a `writes()` method and a
/// `bump_generation` method, in a module that has an `unavailable(sqlx::Error) -> StoreError`
/// function and `token_store_sql!`'s `insert_refresh` (a code is redeemed with its grant's
/// first refresh token in one transaction).
macro_rules! client_store_sql {
    ($store:ty) => {
        fn to_json<T: serde::Serialize>(value: &T) -> tessera_core::StoreResult<String> {
            serde_json::to_string(value)
                .map_err(|e| tessera_core::StoreError::Unavailable(e.to_string()))
        }

        fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> tessera_core::StoreResult<T> {
            serde_json::from_str(text).map_err(|e| {
                tessera_core::StoreError::Unavailable(format!("a stored record is unreadable: {e}"))
            })
        }

        impl tessera_core::ClientStore for $store {
            async fn create_client(&self, client: &tessera_core::Client) -> tessera_core::StoreResult<()> {
                sqlx::query("INSERT INTO oauth_clients (id, record, created_at) VALUES ($1, $2, $3)")
                    .bind(&client.id)
                    .bind(to_json(client)?)
                    .bind(client.created_at)
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }

            async fn client(&self, id: &str) -> tessera_core::StoreResult<Option<tessera_core::Client>> {
                let row: Option<(String,)> = sqlx::query_as("SELECT record FROM oauth_clients WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?;
                row.map(|(r,)| from_json(&r)).transpose()
            }

            async fn list_clients(&self) -> tessera_core::StoreResult<Vec<tessera_core::Client>> {
                let rows: Vec<(String,)> = sqlx::query_as("SELECT record FROM oauth_clients ORDER BY id")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?;
                rows.iter().map(|(r,)| from_json(r)).collect()
            }

            async fn delete_client(&self, id: &str) -> tessera_core::StoreResult<bool> {
                sqlx::query("DELETE FROM oauth_consents WHERE client_id = $1")
                    .bind(id)
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                let r = sqlx::query("DELETE FROM oauth_clients WHERE id = $1")
                    .bind(id)
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                // Servers caching the client learn of it through the generation.
                self.bump_generation().await?;
                Ok(r.rows_affected() > 0)
            }

            async fn create_code(
                &self,
                hash: &tessera_core::TokenHash,
                record: &tessera_core::CodeRecord,
            ) -> tessera_core::StoreResult<()> {
                sqlx::query("INSERT INTO oauth_codes (code_hash, record, expires_at) VALUES ($1, $2, $3)")
                    .bind(hash.to_hex())
                    .bind(to_json(record)?)
                    .bind(record.expires_at)
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }

            async fn use_code(
                &self,
                hash: &tessera_core::TokenHash,
                at: i64,
            ) -> tessera_core::StoreResult<Option<(tessera_core::CodeRecord, bool)>> {
                let hex = hash.to_hex();
                // One conditional update picks the single winner among concurrent uses.
                let won = sqlx::query("UPDATE oauth_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL")
                    .bind(at)
                    .bind(&hex)
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?
                    .rows_affected()
                    > 0;
                let row: Option<(String,)> = sqlx::query_as("SELECT record FROM oauth_codes WHERE code_hash = $1")
                    .bind(&hex)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?;
                row.map(|(r,)| Ok((from_json(&r)?, won))).transpose()
            }

            async fn code(
                &self,
                hash: &tessera_core::TokenHash,
            ) -> tessera_core::StoreResult<Option<(tessera_core::CodeRecord, bool)>> {
                let row: Option<(String, Option<i64>)> = sqlx::query_as("SELECT record, used_at FROM oauth_codes WHERE code_hash = $1")
                    .bind(hash.to_hex())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?;
                row.map(|(r, used)| Ok((from_json(&r)?, used.is_some()))).transpose()
            }

            async fn redeem_code(
                &self,
                hash: &tessera_core::TokenHash,
                at: i64,
                refresh: &tessera_core::TokenHash,
                record: &tessera_core::RefreshRecord,
            ) -> tessera_core::StoreResult<bool> {
                let mut tx = self.writes().begin().await.map_err(unavailable)?;
                let won = sqlx::query("UPDATE oauth_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL")
                    .bind(at)
                    .bind(hash.to_hex())
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?
                    .rows_affected()
                    > 0;
                if !won {
                    return Ok(false);
                }
                insert_refresh(&mut tx, refresh, record).await?;
                tx.commit().await.map_err(unavailable)?;
                Ok(true)
            }

            async fn purge_codes(&self, now: i64) -> tessera_core::StoreResult<tessera_core::Purged> {
                self.purge_batch(crate::sql::PURGE_CODES, now).await
            }

            async fn set_consent(
                &self,
                user_id: &str,
                consent: &tessera_core::Consent,
            ) -> tessera_core::StoreResult<()> {
                sqlx::query("INSERT INTO oauth_consents (user_id, client_id, record) VALUES ($1, $2, $3) ON CONFLICT (user_id, client_id) DO UPDATE SET record = excluded.record")
                    .bind(user_id)
                    .bind(&consent.client_id)
                    .bind(to_json(consent)?)
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }

            async fn consents_of(&self, user_id: &str) -> tessera_core::StoreResult<Vec<tessera_core::Consent>> {
                let rows: Vec<(String,)> = sqlx::query_as("SELECT record FROM oauth_consents WHERE user_id = $1 ORDER BY client_id")
                    .bind(user_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?;
                rows.iter().map(|(r,)| from_json(r)).collect()
            }

            async fn delete_consent(&self, user_id: &str, client_id: &str) -> tessera_core::StoreResult<bool> {
                let r = sqlx::query("DELETE FROM oauth_consents WHERE user_id = $1 AND client_id = $2")
                    .bind(user_id)
                    .bind(client_id)
                    .execute(self.writes())
                    .await
                    .map_err(unavailable)?;
                Ok(r.rows_affected() > 0)
            }
        }
    };
}
pub(crate) use client_store_sql;
