-- Version 7: credentials issued at notary's credential endpoint.
--
-- One row per (offer, credential configuration) issued: its primary key is
-- what makes issuance exactly-once. The insert, the deletion of that
-- configuration's sealed claims and the audit entries are one transaction.
-- Rows outlive the offer (offers are purged after retention; these are
-- metadata only, never a claim value).
CREATE TABLE credential_issuances (
    offer_id          TEXT NOT NULL,
    configuration_id  TEXT NOT NULL,
    token_jti         TEXT NOT NULL,
    notification_id   TEXT NOT NULL UNIQUE,
    issued_at         INTEGER NOT NULL,
    -- Wallet notifications recorded (each one an audit entry); bounded so
    -- that a token holder cannot grow the audit log without limit.
    notifications     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (offer_id, configuration_id)
);

-- Each credential issued (one per proven holder key): what relying parties
-- and auditors may ask about, never its content.
CREATE TABLE credentials (
    id                TEXT PRIMARY KEY,
    offer_id          TEXT NOT NULL,
    configuration_id  TEXT NOT NULL,
    format            TEXT NOT NULL,
    kid               TEXT NOT NULL,
    holder_jkt        TEXT NOT NULL,
    -- SHA-256 of the credential as issued, hex
    sha256            TEXT NOT NULL,
    issued_at         INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL
);
CREATE INDEX credentials_offer ON credentials (offer_id);

-- An SD-JWT VC's holder key binds one credential only: wallets prove a
-- fresh key per credential (unlinkability, HAIP's batch issuance), and a
-- key proven again is refused. W3C credentials name their holder by a
-- long-lived DID (dataspace connectors have one), so their keys may repeat.
CREATE UNIQUE INDEX credentials_sd_jwt_holder ON credentials (holder_jkt)
    WHERE format = 'dc+sd-jwt';
