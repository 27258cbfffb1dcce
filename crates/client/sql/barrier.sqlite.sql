-- dtx-client's barrier table on SQLite (DTM's columns and unique key). SQLite has no schemas:
-- the table lives in the business database itself, named dtm_barrier.
-- barrier::create_table runs exactly these statements.
CREATE TABLE IF NOT EXISTS dtm_barrier (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  trans_type varchar(45) DEFAULT '',
  gid varchar(128) DEFAULT '',
  branch_id varchar(128) DEFAULT '',
  op varchar(45) DEFAULT '',
  barrier_id varchar(45) DEFAULT '',
  reason varchar(45) DEFAULT '',
  create_time datetime DEFAULT CURRENT_TIMESTAMP,
  update_time datetime DEFAULT CURRENT_TIMESTAMP,
  UNIQUE (gid, branch_id, op, barrier_id)
);
CREATE INDEX IF NOT EXISTS dtm_barrier_create_time ON dtm_barrier (create_time);
CREATE INDEX IF NOT EXISTS dtm_barrier_update_time ON dtm_barrier (update_time);
