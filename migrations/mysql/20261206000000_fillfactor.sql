-- PostgreSQL leaves free room on the pages of trans_branch_op and trans_global (fillfactor) so
-- that a save updates their rows in place; this database has no such per-table setting. The
-- file exists so that every backend lists the same migrations.
SELECT 1;
