//! Sessions: what the server keeps behind a `tss_` token, and the timeouts that end them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A session. Stored under the SHA-256 of its token; `handle` is the public name used in
/// `/auth/sessions`, never the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Public id (`ses_…`).
    pub handle: String,
    /// The user's id.
    pub user_id: String,
    /// Seconds since the epoch.
    pub created_at: i64,
    /// Last request seen (written at most once a minute).
    pub last_seen_at: i64,
    /// Absolute end: `created_at` + absolute timeout.
    pub expires_at: i64,
    /// Idle timeout in seconds, fixed at creation.
    pub idle_timeout: i64,
    /// The login request's `User-Agent`, truncated.
    pub user_agent: Option<String>,
    /// The client's IP at login.
    pub ip: Option<String>,
    /// Free-form JSON the application reads and writes (an object).
    pub data: Value,
}

impl Session {
    /// When the session ends if nothing more happens: the earlier of idle and absolute expiry.
    pub fn ends_at(&self) -> i64 {
        self.expires_at
            .min(self.last_seen_at.saturating_add(self.idle_timeout))
    }

    /// Whether it is still alive at `now`.
    pub fn alive_at(&self, now: i64) -> bool {
        now < self.ends_at()
    }
}

/// Session lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Seconds without a request before the session ends (default 30 min).
    pub idle_timeout: i64,
    /// Seconds after login when the session ends regardless (default 12 h).
    pub absolute_timeout: i64,
    /// "last seen" is written at most this often (default 60 s).
    pub touch_interval: i64,
    /// Live sessions one user may hold (default 100; 0: no bound); a login past it ends the
    /// oldest.
    pub max_per_user: usize,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle_timeout: 30 * 60,
            absolute_timeout: 12 * 3600,
            touch_interval: 60,
            max_per_user: 100,
        }
    }
}
