//! Row decoding shared by the SQL backends: SQLite and PostgreSQL have the same tables and
//! columns, so one decoder per record serves both. [`Columns`] is the little each backend's row
//! type must offer.

use serde_json::Value;
use tessera_core::{RefreshRecord, Session, StoredKey, TokenHash, User};

/// Reading a column by name, as the records here need it.
pub(crate) trait Columns {
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    fn maybe_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
    fn maybe_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    /// A boolean: BOOLEAN in PostgreSQL, INTEGER 0/1 in SQLite.
    fn flag(&self, column: &str) -> Result<bool, sqlx::Error>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error>;
}

macro_rules! columns_of {
    ($row:ty) => {
        impl crate::record::Columns for $row {
            fn text(&self, column: &str) -> Result<String, sqlx::Error> {
                sqlx::Row::try_get(self, column)
            }
            fn maybe_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
                sqlx::Row::try_get(self, column)
            }
            fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
                sqlx::Row::try_get(self, column)
            }
            fn maybe_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
                sqlx::Row::try_get(self, column)
            }
            fn flag(&self, column: &str) -> Result<bool, sqlx::Error> {
                sqlx::Row::try_get(self, column)
            }
            fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error> {
                sqlx::Row::try_get(self, column)
            }
        }
    };
}
pub(crate) use columns_of;

/// `SELECT` statements of the records' columns, made at compile time (one `&'static str` a
/// statement: nothing built per call, and the statement caches key on it):
/// `select!(user, "FROM users WHERE id = $1")`.
macro_rules! select {
    (user, $rest:literal) => {
        concat!("SELECT id, username, password_hash, disabled, created_at ", $rest)
    };
    (session, $rest:literal) => {
        concat!(
            "SELECT token_hash, handle, user_id, created_at, last_seen_at, expires_at, idle_timeout, user_agent, ip, data ",
            $rest
        )
    };
    (key, $rest:literal) => {
        concat!("SELECT kid, alg, sealed, public_jwk, created_at, activates_at ", $rest)
    };
    // Of `refresh_tokens t JOIN refresh_families f`.
    (refresh, $rest:literal) => {
        concat!(
            "SELECT t.family, t.user_id, t.client_id, t.scope, t.created_at, t.expires_at, t.family_expires_at, t.used_at, t.access_jti, f.revoked ",
            $rest
        )
    };
}
pub(crate) use select;

pub(crate) fn user(row: &impl Columns) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.text("id")?,
        username: row.text("username")?,
        password_hash: row.text("password_hash")?,
        disabled: row.flag("disabled")?,
        created_at: row.int("created_at")?,
    })
}

pub(crate) fn session(row: &impl Columns) -> Result<(TokenHash, Session), sqlx::Error> {
    let hash = TokenHash::from_hex(&row.text("token_hash")?)
        .ok_or_else(|| sqlx::Error::Decode("malformed token hash in the sessions table".into()))?;
    let data: Value =
        serde_json::from_str(&row.text("data")?).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok((
        hash,
        Session {
            handle: row.text("handle")?,
            user_id: row.text("user_id")?,
            created_at: row.int("created_at")?,
            last_seen_at: row.int("last_seen_at")?,
            expires_at: row.int("expires_at")?,
            idle_timeout: row.int("idle_timeout")?,
            user_agent: row.maybe_text("user_agent")?,
            ip: row.maybe_text("ip")?,
            data,
        },
    ))
}

pub(crate) fn stored_key(row: &impl Columns) -> Result<StoredKey, sqlx::Error> {
    Ok(StoredKey {
        kid: row.text("kid")?,
        alg: row.text("alg")?,
        sealed: row.bytes("sealed")?,
        public_jwk: row.maybe_text("public_jwk")?,
        created_at: row.int("created_at")?,
        activates_at: row.int("activates_at")?,
    })
}

/// A refresh token and whether its family is revoked ([`REFRESH_COLUMNS`]).
pub(crate) fn refresh(row: &impl Columns) -> Result<(RefreshRecord, bool), sqlx::Error> {
    Ok((
        RefreshRecord {
            family: row.text("family")?,
            user_id: row.text("user_id")?,
            client_id: row.text("client_id")?,
            scope: row.text("scope")?,
            created_at: row.int("created_at")?,
            expires_at: row.int("expires_at")?,
            family_expires_at: row.int("family_expires_at")?,
            used_at: row.maybe_int("used_at")?,
            access_jti: row.maybe_text("access_jti")?,
        },
        row.flag("revoked")?,
    ))
}

/// Reads a page of the denylist as the backend's `DENIED_PAGE` aggregates it
/// ([`tessera_core::Denied::from_list`]; NULL for no entry).
pub(crate) fn denied_page(row: &impl Columns) -> Result<tessera_core::Denied, sqlx::Error> {
    let list = row.maybe_text("list")?.unwrap_or_default();
    tessera_core::Denied::from_list(&list)
        .ok_or_else(|| sqlx::Error::Decode("malformed denylist page".into()))
}

/// A denylist entry `(jti, expires_at)`.
pub(crate) fn denied(row: &impl Columns) -> Result<(String, i64), sqlx::Error> {
    Ok((row.text("jti")?, row.int("expires_at")?))
}
