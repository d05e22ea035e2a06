-- notary schema, version 1 (SQLite). PostgreSQL keeps the same version numbers
-- in migrations/postgres/. Codes, PINs and API keys are stored only as
-- HMAC-SHA256 computed inside the HSM; nothing here can be read back.

CREATE TABLE offers (
    id                  TEXT PRIMARY KEY,
    -- HMAC("notary/code/v1" || code): the lookup key for a redemption.
    code_hash           BLOB NOT NULL UNIQUE,
    -- HMAC("notary/pin/v1" || offer id || PIN); NULL when the offer has no PIN.
    pin_hash            BLOB,
    -- The tx_code object shown to wallets (length, input_mode, description); never the PIN.
    tx_code             TEXT,
    subject             TEXT,
    credential_ids      TEXT NOT NULL,
    claims              TEXT,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'redeemed', 'locked', 'revoked')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    redeemed_at         INTEGER,
    locked_at           INTEGER,
    revoked_at          INTEGER,
    -- The token issued at redemption, for revocation when the code is replayed.
    token_jti           TEXT,
    token_expires_at    INTEGER,
    token_revoked_at    INTEGER,
    created_by          TEXT
);

CREATE INDEX offers_state_created ON offers (state, created_at);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'issuer', 'auditor')),
    -- HMAC("notary/api-key/v1" || key)
    secret_hash BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

-- Append-only and hash-chained: hash = SHA-256(prev_hash || canonical entry).
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    event       TEXT NOT NULL,
    subject     TEXT,
    details     TEXT NOT NULL,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL
);
