//! Refresh tokens: opaque, stored hashed, grouped in families that rotate on every use.

use serde::{Deserialize, Serialize};

/// A refresh token as the store keeps it (under the hash of its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// The family: every token descended from one login.
    pub family: String,
    /// The user.
    pub user_id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The scope it carries.
    pub scope: String,
    /// Seconds since the epoch.
    pub created_at: i64,
    /// Unused past this, it is dead (idle lifetime, capped by the family's end).
    pub expires_at: i64,
    /// The family ends here, however used.
    pub family_expires_at: i64,
    /// When it was exchanged for its successor.
    pub used_at: Option<i64>,
    /// The `jti` of the last access token issued with it (logout by access token finds the
    /// family through it).
    pub access_jti: Option<String>,
}
