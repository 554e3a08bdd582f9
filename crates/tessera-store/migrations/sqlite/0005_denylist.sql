-- Revoked access tokens, kept until they would have expired anyway.
CREATE TABLE access_denylist (
    jti        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX access_denylist_by_expiry ON access_denylist (expires_at);
