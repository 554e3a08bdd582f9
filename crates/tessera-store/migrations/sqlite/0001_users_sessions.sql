CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

-- Sessions are keyed by the SHA-256 of their token (hex); the token itself is never stored.
CREATE TABLE sessions (
    token_hash   TEXT PRIMARY KEY,
    handle       TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    idle_timeout INTEGER NOT NULL,
    user_agent   TEXT,
    ip           TEXT,
    data         TEXT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
