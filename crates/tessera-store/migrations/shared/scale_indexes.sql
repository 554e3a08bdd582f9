-- What a store of millions of sessions and refresh tokens needs: indexes, and an end for each
-- refresh family.
-- One file: SQLite (migration 9) and PostgreSQL (6) run it as is.
--
-- The purge (every minute, and at start) removes sessions past their absolute or their idle
-- end. The idle end (`last_seen_at + idle_timeout`) had no index, so the purge read every
-- session, holding SQLite's write lock while it did (109 ms at 10^6 sessions). With this one,
-- each half of its condition is an index search (SQLite's multi-index OR, PostgreSQL's bitmap
-- OR); the expression is written as the purge writes it, which is what lets them match.
CREATE INDEX sessions_by_idle_end ON sessions ((last_seen_at + idle_timeout));
-- Nothing has read refresh tokens by their access token's id since `refresh_access` (migration
-- 7 / 4) holds every access token of a family; each rotation still wrote this index, at a
-- random place of it.
DROP INDEX IF EXISTS refresh_tokens_by_access;
-- Refresh tokens were never removed: every rotation ever made stayed. A family past its absolute
-- end (`family_expires_at`, the same on each of its tokens) can never issue again, so the purge
-- removes it with its tokens; the family's row now carries that end (0: it has no token, and
-- is gone at the first purge), indexed so that the purge finds ended families by a search (and
-- their tokens by `refresh_tokens_by_family`: no index on the tokens' end, which every rotation
-- would write).
ALTER TABLE refresh_families ADD COLUMN expires_at BIGINT NOT NULL DEFAULT 0;
UPDATE refresh_families SET expires_at = COALESCE(
    (SELECT MAX(t.family_expires_at) FROM refresh_tokens t WHERE t.family = refresh_families.family), 0);
CREATE INDEX refresh_families_by_end ON refresh_families (expires_at);
