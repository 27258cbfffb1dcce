-- Participant health (ADR 0007): the host a transaction's next call waits for while a node sees
-- that host down. A host that comes back releases the rows held for it; only held rows enter
-- this index, so it stays small and live writes to other rows never maintain it.
ALTER TABLE trans_global ADD COLUMN held_host VARCHAR(256) NULL;
CREATE INDEX trans_global_held ON trans_global (held_host) WHERE held_host IS NOT NULL;
