-- trans_global and trans_branch_op without AUTOINCREMENT (ADR 18). With it, every INSERT reads
-- and rewrites the table's row in sqlite_sequence: five extra b-tree writes per saga, about 12 %
-- of a create's cost. Without it a new row's id is one more than the largest id in the table,
-- so ids still ascend in insertion order (what branch order and keyset paging rely on); only
-- the id of a deleted newest row can come back, and nothing keeps ids of deleted rows.
-- The tables are rebuilt (SQLite cannot drop the keyword in place), ids and rows kept.
CREATE TABLE trans_global_rebuilt (
    id                 INTEGER PRIMARY KEY,
    gid                TEXT    NOT NULL UNIQUE,
    trans_type         TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    protocol           TEXT    NOT NULL DEFAULT '',
    query_prepared     TEXT    NOT NULL DEFAULT '',
    custom_data        TEXT    NOT NULL DEFAULT '',
    options            TEXT    NOT NULL DEFAULT '',
    rollback_reason    TEXT    NOT NULL DEFAULT '',
    result             TEXT    NOT NULL DEFAULT '',
    create_time        INTEGER NOT NULL,
    update_time        INTEGER NOT NULL,
    finish_time        INTEGER,
    rollback_time      INTEGER,
    next_cron_time     INTEGER NOT NULL,
    next_cron_interval INTEGER NOT NULL,
    owner              TEXT,
    lease_until        INTEGER,
    held_host          VARCHAR(256) NULL
);
INSERT INTO trans_global_rebuilt (id, gid, trans_type, status, protocol, query_prepared,
    custom_data, options, rollback_reason, result, create_time, update_time, finish_time,
    rollback_time, next_cron_time, next_cron_interval, owner, lease_until, held_host)
SELECT id, gid, trans_type, status, protocol, query_prepared, custom_data, options,
    rollback_reason, result, create_time, update_time, finish_time, rollback_time,
    next_cron_time, next_cron_interval, owner, lease_until, held_host
FROM trans_global ORDER BY id;
DROP TABLE trans_global;
ALTER TABLE trans_global_rebuilt RENAME TO trans_global;
CREATE INDEX trans_global_due ON trans_global (next_cron_time)
    WHERE status NOT IN ('succeed', 'failed');
CREATE INDEX trans_global_create_time ON trans_global (create_time);
CREATE INDEX trans_global_finished ON trans_global (update_time)
    WHERE status IN ('succeed', 'failed');
CREATE INDEX trans_global_held ON trans_global (held_host) WHERE held_host IS NOT NULL;

CREATE TABLE trans_branch_op_rebuilt (
    id          INTEGER PRIMARY KEY,
    gid         TEXT    NOT NULL,
    branch_id   TEXT    NOT NULL,
    op          TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    status      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT    NOT NULL DEFAULT '',
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    finish_time INTEGER,
    UNIQUE (gid, branch_id, op)
);
INSERT INTO trans_branch_op_rebuilt (id, gid, branch_id, op, url, payload, status, attempts,
    last_error, create_time, update_time, finish_time)
SELECT id, gid, branch_id, op, url, payload, status, attempts, last_error, create_time,
    update_time, finish_time
FROM trans_branch_op ORDER BY id;
DROP TABLE trans_branch_op;
ALTER TABLE trans_branch_op_rebuilt RENAME TO trans_branch_op;
