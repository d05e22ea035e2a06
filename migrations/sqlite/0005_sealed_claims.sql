-- Version 5: offer claims are stored only sealed: AES-256-GCM with the claims
-- key, inside the HSM, per credential configuration, bound to the offer (see
-- src/issuance/claims.rs). JSON object: configuration id -> base64url(iv ||
-- ciphertext || tag). Set to NULL when the offer is revoked, locked or
-- expires, or its token is revoked; gone with the row after retention.
--
-- The plaintext column cannot be encrypted here (the key is in the HSM, not
-- in SQL), and it held another shape (one object copied into the access
-- token, not claims per credential configuration): its values are dropped,
-- for every offer. secure_delete makes SQLite overwrite the freed content
-- in the database file instead of leaving it in free pages. Backups made
-- before this version still hold those claims: see docs/operations.md.
PRAGMA secure_delete = ON;
UPDATE offers SET claims = NULL WHERE claims IS NOT NULL;
ALTER TABLE offers DROP COLUMN claims;
ALTER TABLE offers ADD COLUMN claims_sealed TEXT;
