-- OAuth clients, authorization codes and consents. Records are JSON documents (the domain's
-- own serde form); the columns beside them are the ones queries select or order by. Secrets and
-- codes appear only as SHA-256 hashes. One file: SQLite (migration 6) and PostgreSQL (3) run it as is.
CREATE TABLE oauth_clients (
    id         TEXT PRIMARY KEY,
    record     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE oauth_codes (
    code_hash  TEXT PRIMARY KEY,
    record     TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX oauth_codes_by_expiry ON oauth_codes (expires_at);
CREATE TABLE oauth_consents (
    user_id   TEXT NOT NULL,
    client_id TEXT NOT NULL,
    record    TEXT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
