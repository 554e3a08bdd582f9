-- Signing keys held by a hardware security module (keys.backend = "pkcs11"): the store keeps
-- their public JWK and their life, and no private material (`sealed` is empty for them). NULL:
-- the key is sealed in `sealed` under the master key, as before.
-- One file: SQLite (migration 8) and PostgreSQL (5) run it as is.
ALTER TABLE signing_keys ADD COLUMN public_jwk TEXT;
