-- Version 4: DPoP and client attestation replay cache, offers by reference,
-- token introspection, and the introspect role for credential issuers.

-- Proof jtis seen (DPoP proofs, attestation PoPs), shared by every instance.
-- key = SHA-256(domain || signer || jti); kept until the proof's iat could no
-- longer pass the age check, then swept.
CREATE TABLE proof_jtis (
    key         BYTEA PRIMARY KEY,
    keep_until  BIGINT NOT NULL
);
CREATE INDEX proof_jtis_keep_until ON proof_jtis (keep_until);

-- HMAC("notary/offer-ref/v1" || reference) of a by-reference offer's URL
-- reference; NULL for offers by value. The code is derived from the
-- reference in the HSM and is not stored either.
ALTER TABLE offers ADD COLUMN ref_hash BYTEA;
CREATE UNIQUE INDEX offers_ref_hash ON offers (ref_hash) WHERE ref_hash IS NOT NULL;

-- Introspection looks tokens up by jti.
CREATE INDEX offers_token_jti ON offers (token_jti) WHERE token_jti IS NOT NULL;

ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('admin', 'issuer', 'auditor', 'introspect'));
