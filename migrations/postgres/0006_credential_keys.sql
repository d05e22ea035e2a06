-- Version 6 (PostgreSQL): credential keys. The table of signing keys now
-- also holds the keys that sign credentials (and status lists), apart from
-- the Notary keys that sign access tokens: `purpose` says which. Every key
-- recorded before this version signs tokens. Each purpose has at most one
-- active key, so a rotation of one purpose never touches the other's.
--
-- x5c: the certificate chain a CA issued for a credential key, as a JSON
-- array of base64 (standard alphabet) DER certificates, leaf first; NULL
-- until `notary keys certificate` attaches one.
ALTER TABLE signing_keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'token'
    CHECK (purpose IN ('token', 'credential'));
ALTER TABLE signing_keys ADD COLUMN x5c TEXT;
ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_x5c_credential_only
    CHECK (x5c IS NULL OR purpose = 'credential');

DROP INDEX signing_keys_one_active;
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (purpose) WHERE state = 'active';
