-- The dtx schema. All times are milliseconds since the Unix epoch (UTC);
-- next_cron_interval is in milliseconds.

CREATE TABLE trans_global (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
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
    lease_until        INTEGER
);

-- The scheduler's scan: only non-final rows are ever due, so final rows (the vast majority over
-- time) stay out of the index. The WHERE must match the claim query's text for SQLite to use it.
CREATE INDEX trans_global_due ON trans_global (next_cron_time)
    WHERE status IN ('prepared', 'submitted', 'aborting');

-- The admin listing filters by creation time.
CREATE INDEX trans_global_create_time ON trans_global (create_time);

CREATE TABLE trans_branch_op (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
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

-- Key-value rows (topics and other small settings), versioned for compare-and-set.
CREATE TABLE kv (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    cat         TEXT    NOT NULL,
    k           TEXT    NOT NULL,
    v           TEXT    NOT NULL,
    version     INTEGER NOT NULL DEFAULT 1,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    UNIQUE (cat, k)
);
