-- Version 9: how an offer's code and PIN are stored.
--
-- 1: stored before 2026-12-05: `code_hash` is the code's keyed hash made
--    in the HSM (the code key) and `pin_hash` an HSM-made hash of the PIN.
--    Such rows are converted when notary migrates the schema or a server
--    starts: `code_hash` becomes SHA-256 of the code key (form 2).
-- 2: converted: `code_hash` as in form 3, `pin_hash` still the HSM's.
-- 3: `code_hash` is SHA-256 of the code key, and `pin_hash` a verifier
--    keyed by the code key, which is never stored.
ALTER TABLE offers ADD COLUMN stored_form INTEGER NOT NULL DEFAULT 1;
