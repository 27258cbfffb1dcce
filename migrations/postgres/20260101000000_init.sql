-- The dtx schema on PostgreSQL: the same tables, columns and meanings as migrations/sqlite, so
-- rows map identically. All times are milliseconds since the Unix epoch (UTC) in BIGINT;
-- next_cron_interval is in milliseconds. next_cron_time and lease_until are written from the
-- database clock (see dtx-store-postgres), the other times as the writing node gives them.

CREATE TABLE trans_global (
    id                 BIGSERIAL PRIMARY KEY,
    gid                TEXT    NOT NULL UNIQUE,
    trans_type         TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    protocol           TEXT    NOT NULL DEFAULT '',
    query_prepared     TEXT    NOT NULL DEFAULT '',
    custom_data        TEXT    NOT NULL DEFAULT '',
    options            TEXT    NOT NULL DEFAULT '',
    rollback_reason    TEXT    NOT NULL DEFAULT '',
    result             TEXT    NOT NULL DEFAULT '',
    create_time        BIGINT  NOT NULL,
    update_time        BIGINT  NOT NULL,
    finish_time        BIGINT,
    rollback_time      BIGINT,
    next_cron_time     BIGINT  NOT NULL,
    next_cron_interval BIGINT  NOT NULL,
    owner              TEXT,
    lease_until        BIGINT
);

-- The scheduler's scan: only non-final rows are ever due, so final rows (the vast majority over
-- time) stay out of the index. The claim query repeats this predicate so the planner uses it.
CREATE INDEX trans_global_due ON trans_global (next_cron_time)
    WHERE status IN ('prepared', 'submitted', 'aborting');

-- The admin listing filters by creation time.
CREATE INDEX trans_global_create_time ON trans_global (create_time);

CREATE TABLE trans_branch_op (
    id          BIGSERIAL PRIMARY KEY,
    gid         TEXT    NOT NULL,
    branch_id   TEXT    NOT NULL,
    op          TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    payload     BYTEA   NOT NULL,
    status      TEXT    NOT NULL,
    attempts    BIGINT  NOT NULL DEFAULT 0,
    last_error  TEXT    NOT NULL DEFAULT '',
    create_time BIGINT  NOT NULL,
    update_time BIGINT  NOT NULL,
    finish_time BIGINT,
    UNIQUE (gid, branch_id, op)
);

-- Key-value rows (topics and other small settings), versioned for compare-and-set.
CREATE TABLE kv (
    id          BIGSERIAL PRIMARY KEY,
    cat         TEXT    NOT NULL,
    k           TEXT    NOT NULL,
    v           TEXT    NOT NULL,
    version     BIGINT  NOT NULL DEFAULT 1,
    create_time BIGINT  NOT NULL,
    update_time BIGINT  NOT NULL,
    UNIQUE (cat, k)
);
