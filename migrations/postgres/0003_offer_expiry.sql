-- Version 3: the sweeper records each offer's expiry in the audit log once,
-- and deletes finished offers after the retention period (their audit
-- entries stay).
ALTER TABLE offers ADD COLUMN expiry_recorded_at BIGINT;
