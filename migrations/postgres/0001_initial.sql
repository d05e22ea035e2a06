-- notary schema, version 1 (PostgreSQL). Same versions and meaning as
-- migrations/sqlite/. Codes, PINs and API keys are stored only as
-- HMAC-SHA256 computed inside the HSM; nothing here can be read back.

CREATE TABLE offers (
    id                  TEXT PRIMARY KEY,
    code_hash           BYTEA NOT NULL UNIQUE,
    pin_hash            BYTEA,
    tx_code             TEXT,
    subject             TEXT,
    credential_ids      TEXT NOT NULL,
    claims              TEXT,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'redeemed', 'locked', 'revoked')),
    attempts            BIGINT NOT NULL DEFAULT 0,
    max_attempts        BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    redeemed_at         BIGINT,
    locked_at           BIGINT,
    revoked_at          BIGINT,
    token_jti           TEXT,
    token_expires_at    BIGINT,
    token_revoked_at    BIGINT,
    created_by          TEXT
);

CREATE INDEX offers_state_created ON offers (state, created_at);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'issuer', 'auditor')),
    secret_hash BYTEA NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    at          BIGINT NOT NULL,
    event       TEXT NOT NULL,
    subject     TEXT,
    details     TEXT NOT NULL,
    prev_hash   BYTEA NOT NULL,
    hash        BYTEA NOT NULL
);
