-- SQLite packs a transaction's branches into its global row (ADR 26: one row per transaction,
-- one statement per write). This database keeps its trans_branch_op rows (the layout was
-- measured on SQLite only), so nothing changes here. The file exists so that every backend
-- lists the same migrations.
SELECT 1;
