-- Version 2 (PostgreSQL): signing key lifecycle and signed audit checkpoints.

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    label         TEXT NOT NULL UNIQUE,
    alg           TEXT NOT NULL CHECK (alg IN ('EdDSA', 'ES256')),
    public_jwk    TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'active', 'retiring', 'retired')),
    created_at    BIGINT NOT NULL,
    activated_at  BIGINT,
    verify_until  BIGINT,
    retired_at    BIGINT
);

CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 'active';

CREATE TABLE audit_checkpoints (
    size        BIGINT PRIMARY KEY,
    head_hash   BYTEA NOT NULL,
    note        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
