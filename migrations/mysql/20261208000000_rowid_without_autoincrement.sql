-- SQLite rebuilds trans_global and trans_branch_op without AUTOINCREMENT (ADR 18: it cost a
-- sqlite_sequence write per insert). This database's ids come from its own sequences, so
-- nothing changes here. The file exists so that every backend lists the same migrations.
SELECT 1;
