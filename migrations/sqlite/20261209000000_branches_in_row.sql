-- A transaction's branches packed into its global row (ADR 26): one row per transaction,
-- written by one statement. Rows of `trans_branch_op` written before this are moved into
-- the new column by the store when it opens (the packing is the store's format, not SQL's),
-- and that table is then dropped.
ALTER TABLE trans_global ADD COLUMN branches BLOB NOT NULL DEFAULT x'';
