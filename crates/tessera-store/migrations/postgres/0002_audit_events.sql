-- Audit events (logins, sessions, tokens, keys, users), as logged under the `audit` target,
-- kept in the shared database so a cluster has one trail. Never holds a token or a password.
CREATE TABLE audit_events (
    id     BIGSERIAL PRIMARY KEY,
    at     BIGINT NOT NULL,
    event  TEXT NOT NULL,
    fields TEXT NOT NULL
);
CREATE INDEX audit_events_by_at ON audit_events (at);
