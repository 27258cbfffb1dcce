-- SQLite rewrites the predicate of its partial index trans_global_due (ADR 16: an IN list of
-- three constants costs SQLite an ephemeral b-tree per row write). This database evaluates the
-- list directly, so nothing changes here. The file exists so that every backend lists the same
-- migrations.
SELECT 1;
