-- Version 9: audit entries are staged, then chained.
--
-- A write transaction records its audit entries here, committed with the
-- state change they describe, without reading the chain's head; so writers
-- on several instances no longer take turns on one cluster-wide lock. A
-- chainer (any instance, under the writer lock) moves staged entries into
-- `audit_log` in `id` order, giving each its `seq` and hashes, in one
-- transaction: an entry is either staged or chained, never both or lost.
-- `id` comes from a sequence taken at insert, so an entry caused by another
-- committed entry always has the larger id and is chained after it.
CREATE TABLE audit_pending (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    event       TEXT NOT NULL,
    subject     TEXT,
    details     TEXT NOT NULL
);
