-- Version 2: the Notary signing keys' lifecycle, and signed audit checkpoints.

-- Which keys on the token sign and verify. The private keys stay in the HSM;
-- this table holds their labels, public keys and states.
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    label         TEXT NOT NULL UNIQUE,
    alg           TEXT NOT NULL CHECK (alg IN ('EdDSA', 'ES256')),
    public_jwk    TEXT NOT NULL,
    -- pending: generated, not used yet; active: signs; retiring: no longer
    -- signs, still in the JWKS until verify_until; retired: gone from the JWKS.
    state         TEXT NOT NULL CHECK (state IN ('pending', 'active', 'retiring', 'retired')),
    created_at    INTEGER NOT NULL,
    activated_at  INTEGER,
    verify_until  INTEGER,
    retired_at    INTEGER
);

CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 'active';

-- C2SP signed-note checkpoints of the audit chain head, signed by the audit key.
CREATE TABLE audit_checkpoints (
    size        INTEGER PRIMARY KEY,
    head_hash   BLOB NOT NULL,
    note        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
