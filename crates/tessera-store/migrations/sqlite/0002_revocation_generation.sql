-- Moves whenever sessions are ended or users disabled or deleted, so that a server caching
-- sessions notices changes made by another process (the CLI) and drops its cache.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('revocation_generation', 0);
