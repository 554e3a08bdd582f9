-- Refresh tokens, keyed by the hex SHA-256 of their value, and their families.
CREATE TABLE refresh_families (
    family     TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX refresh_families_by_user ON refresh_families (user_id);

CREATE TABLE refresh_tokens (
    token_hash        TEXT PRIMARY KEY,
    family            TEXT NOT NULL REFERENCES refresh_families (family),
    user_id           TEXT NOT NULL,
    client_id         TEXT NOT NULL,
    scope             TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    family_expires_at INTEGER NOT NULL,
    used_at           INTEGER,
    access_jti        TEXT
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_by_access ON refresh_tokens (access_jti);
