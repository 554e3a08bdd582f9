-- The access tokens issued in each refresh family, every one of them (the rotation's, an
-- honest retry's, the code exchange's), so that revoking the family refuses them all; rows
-- are forgotten once the tokens have expired. And when each denylist entry was added, so that
-- instances catch up with each other's revocations from the database alone.
-- One file: SQLite (migration 7) and PostgreSQL (4) run it as is.
CREATE TABLE refresh_access (
    jti       TEXT PRIMARY KEY,
    family    TEXT NOT NULL,
    issued_at BIGINT NOT NULL
);
CREATE INDEX refresh_access_by_family ON refresh_access (family, issued_at);
CREATE INDEX refresh_access_by_issue ON refresh_access (issued_at);
INSERT INTO refresh_access (jti, family, issued_at)
    SELECT access_jti, family, created_at FROM refresh_tokens WHERE access_jti IS NOT NULL
    ON CONFLICT DO NOTHING;
ALTER TABLE access_denylist ADD COLUMN added_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX access_denylist_by_added ON access_denylist (added_at);
