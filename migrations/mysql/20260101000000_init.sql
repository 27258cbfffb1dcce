-- The dtx schema on MySQL 8 / MariaDB 10.6+: the same tables, columns and meanings as
-- migrations/sqlite and migrations/postgres, so rows map identically. All times are
-- milliseconds since the Unix epoch (UTC) in BIGINT; next_cron_interval is in milliseconds.
-- next_cron_time and lease_until are written from the database clock (see dtx-store-mysql).
-- Identifiers (gid, branch_id, op, owner, kv keys) compare byte for byte (utf8mb4_bin), as on
-- the other backends.

CREATE TABLE trans_global (
    id                 BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    gid                VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    trans_type         VARCHAR(45)  NOT NULL,
    status             VARCHAR(45)  NOT NULL,
    protocol           VARCHAR(45)  NOT NULL,
    query_prepared     TEXT         NOT NULL,
    custom_data        MEDIUMTEXT   NOT NULL,
    options            TEXT         NOT NULL,
    rollback_reason    TEXT         NOT NULL,
    result             MEDIUMTEXT   NOT NULL,
    create_time        BIGINT       NOT NULL,
    update_time        BIGINT       NOT NULL,
    finish_time        BIGINT       NULL,
    rollback_time      BIGINT       NULL,
    next_cron_time     BIGINT       NOT NULL,
    next_cron_interval BIGINT       NOT NULL,
    owner              VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    lease_until        BIGINT       NULL,
    UNIQUE KEY trans_global_gid (gid),
    -- The scheduler's scan (MySQL has no partial index): the unfinished statuses are a few
    -- ranges of this index, ordered by due time within each.
    KEY trans_global_due (status, next_cron_time),
    -- The admin listing filters by creation time.
    KEY trans_global_create_time (create_time)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE trans_branch_op (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    gid         VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    branch_id   VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    op          VARCHAR(45)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    url         TEXT         NOT NULL,
    payload     LONGBLOB     NOT NULL,
    status      VARCHAR(45)  NOT NULL,
    attempts    BIGINT       NOT NULL DEFAULT 0,
    last_error  TEXT         NOT NULL,
    create_time BIGINT       NOT NULL,
    update_time BIGINT       NOT NULL,
    finish_time BIGINT       NULL,
    UNIQUE KEY trans_branch_op_key (gid, branch_id, op)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Key-value rows (topics and other small settings), versioned for compare-and-set.
CREATE TABLE kv (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    cat         VARCHAR(45)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    k           VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    v           MEDIUMTEXT   NOT NULL,
    version     BIGINT       NOT NULL DEFAULT 1,
    create_time BIGINT       NOT NULL,
    update_time BIGINT       NOT NULL,
    UNIQUE KEY kv_cat_k (cat, k)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
