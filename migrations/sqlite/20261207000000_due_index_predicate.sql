-- The due index's predicate without a three-value IN list (ADR 16). SQLite evaluates a partial
-- index's predicate on every insert and on both row versions of every update; an IN list of
-- more than two constants is built into an ephemeral b-tree each time, two per save of a
-- transaction. `NOT IN` of the two final statuses selects the same rows (status is NOT NULL and
-- has five values) and is compiled into plain comparisons. The statements that use the index
-- say the same (the SQLite dialect's `UNFINISHED`), so the planner still matches it.
DROP INDEX trans_global_due;
CREATE INDEX trans_global_due ON trans_global (next_cron_time)
    WHERE status NOT IN ('succeed', 'failed');
