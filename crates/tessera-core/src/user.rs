//! Users: an id that never changes, a case-insensitive username, an Argon2id hash.

use serde::{Deserialize, Serialize};

/// A user account.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable id (`usr_…`), the `sub` of everything issued to the user.
    pub id: String,
    /// Normalized username (see [`normalize_username`]).
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// A disabled user cannot log in and has no sessions.
    pub disabled: bool,
    /// Seconds since the epoch.
    pub created_at: i64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// The longest username.
pub const MAX_USERNAME: usize = 64;

/// Usernames are case-insensitive: trimmed and lowercased. 1 to 64 characters of letters,
/// digits and `.`, `_`, `-`, `@`, `+`; `None` for anything else.
pub fn normalize_username(raw: &str) -> Option<String> {
    let name = raw.trim().to_lowercase();
    let len = name.chars().count();
    let ok = (1..=MAX_USERNAME).contains(&len)
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'));
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(normalize_username(" Alice "), Some("alice".into()));
        assert_eq!(
            normalize_username("bob.smith+1@example.com"),
            Some("bob.smith+1@example.com".into())
        );
        assert_eq!(normalize_username("Zoë"), Some("zoë".into()));
        for bad in ["", " ", "a b", "a/b", "a\u{0}b", &"x".repeat(65)] {
            assert_eq!(normalize_username(bad), None, "{bad:?}");
        }
    }
}
