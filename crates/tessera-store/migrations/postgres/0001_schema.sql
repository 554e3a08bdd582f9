-- tessera on PostgreSQL: the same tables as on SQLite, in one step (this backend has no older
-- schema to migrate from). Token values are never stored, only the hex SHA-256 of each.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL
);

-- Sessions live here when no Redis is configured.
CREATE TABLE sessions (
    token_hash   TEXT PRIMARY KEY,
    handle       TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    idle_timeout BIGINT NOT NULL,
    user_agent   TEXT,
    ip           TEXT,
    data         TEXT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- Moves whenever something is revoked (a session ended, a user disabled or deleted, an access
-- token denylisted), so that every instance caching those drops its cache.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('revocation_generation', 0);

-- `sealed` is the private JWK encrypted under the master key, which is never here.
CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    alg          TEXT NOT NULL,
    sealed       BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    activates_at BIGINT NOT NULL
);

CREATE TABLE refresh_families (
    family  TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX refresh_families_by_user ON refresh_families (user_id);

CREATE TABLE refresh_tokens (
    token_hash        TEXT PRIMARY KEY,
    family            TEXT NOT NULL REFERENCES refresh_families (family),
    user_id           TEXT NOT NULL,
    client_id         TEXT NOT NULL,
    scope             TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    family_expires_at BIGINT NOT NULL,
    used_at           BIGINT,
    access_jti        TEXT
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_by_access ON refresh_tokens (access_jti);

CREATE TABLE access_denylist (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX access_denylist_by_expiry ON access_denylist (expires_at);
