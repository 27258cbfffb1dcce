-- Participant health (ADR 0007): the host a transaction's next call waits for while a node sees
-- that host down. A host that comes back releases the rows held for it (MySQL has no partial
-- indexes: NULLs are in the index too, but the lookup is by one host).
ALTER TABLE trans_global ADD COLUMN held_host VARCHAR(256) NULL;
CREATE INDEX trans_global_held ON trans_global (held_host);
