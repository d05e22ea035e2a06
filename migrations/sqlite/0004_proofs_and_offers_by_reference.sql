-- Version 4: DPoP and client attestation replay cache, offers by reference,
-- token introspection, and the introspect role for credential issuers.

-- Proof jtis seen (DPoP proofs, attestation PoPs), shared by every instance.
-- key = SHA-256(domain || signer || jti); kept until the proof's iat could no
-- longer pass the age check, then swept.
CREATE TABLE proof_jtis (
    key         BLOB PRIMARY KEY,
    keep_until  INTEGER NOT NULL
);
CREATE INDEX proof_jtis_keep_until ON proof_jtis (keep_until);

-- HMAC("notary/offer-ref/v1" || reference) of a by-reference offer's URL
-- reference; NULL for offers by value. The code is derived from the
-- reference in the HSM and is not stored either.
ALTER TABLE offers ADD COLUMN ref_hash BLOB;
CREATE UNIQUE INDEX offers_ref_hash ON offers (ref_hash) WHERE ref_hash IS NOT NULL;

-- Introspection looks tokens up by jti.
CREATE INDEX offers_token_jti ON offers (token_jti) WHERE token_jti IS NOT NULL;

-- SQLite cannot alter a CHECK constraint: rebuild api_keys with the new role.
CREATE TABLE api_keys_v4 (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'issuer', 'auditor', 'introspect')),
    -- HMAC("notary/api-key/v1" || key)
    secret_hash BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
INSERT INTO api_keys_v4 (id, name, role, secret_hash, created_at, revoked_at)
    SELECT id, name, role, secret_hash, created_at, revoked_at FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_v4 RENAME TO api_keys;
