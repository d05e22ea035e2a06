-- Version 8: credential status (revocation and suspension) through status
-- lists.
--
-- A list is an index space of `size` entries. Indexes are handed out as a
-- counter (`allocated`) that a keyed permutation, whose key is derived in
-- the HSM per list, turns into a random-looking index: never reused, and
-- saying nothing about issue order. `version` grows with every status
-- change of a credential in the list; a list is re-signed when its version
-- is newer than the signed one (or the signed one nears its expiry).
CREATE TABLE status_lists (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('token', 'bitstring')),
    size        BIGINT NOT NULL,
    allocated   BIGINT NOT NULL DEFAULT 0,
    version     BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

-- The lists as served, signed by the credential key: a Token Status List
-- list is served under its own id; a bitstring list twice, once per status
-- purpose (`<id>r` revocation, `<id>s` suspension).
CREATE TABLE signed_status_lists (
    uri_id      TEXT PRIMARY KEY,
    list_id     TEXT NOT NULL,
    version     BIGINT NOT NULL,
    token       TEXT NOT NULL,
    signed_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- Each credential's status and its place in a list, and the offer's
-- subject (offers are purged after retention; revoking "every credential
-- of userId X" must still work).
ALTER TABLE credentials ADD COLUMN subject TEXT;
ALTER TABLE credentials ADD COLUMN status_list TEXT;
ALTER TABLE credentials ADD COLUMN status_index BIGINT;
ALTER TABLE credentials ADD COLUMN status TEXT NOT NULL DEFAULT 'valid'
    CHECK (status IN ('valid', 'suspended', 'revoked'));
ALTER TABLE credentials ADD COLUMN status_changed_at BIGINT;
CREATE UNIQUE INDEX credentials_status_slot ON credentials (status_list, status_index)
    WHERE status_list IS NOT NULL;
CREATE INDEX credentials_not_valid ON credentials (status_list) WHERE status <> 'valid';
CREATE INDEX credentials_subject ON credentials (subject) WHERE subject IS NOT NULL;
