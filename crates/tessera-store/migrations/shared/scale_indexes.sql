-- What a store of millions of sessions and refresh tokens needs of its indexes.
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
