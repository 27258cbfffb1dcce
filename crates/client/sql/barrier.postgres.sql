-- DTM's barrier table on PostgreSQL (schema dtm_barrier, constraint uniq_barrier), except that
-- create_time / update_time default to now() so barrier::cleanup can age rows.
-- barrier::create_table runs exactly these statements.
CREATE SCHEMA IF NOT EXISTS dtm_barrier;
CREATE SEQUENCE IF NOT EXISTS dtm_barrier.barrier_seq;
CREATE TABLE IF NOT EXISTS dtm_barrier.barrier (
  id bigint NOT NULL DEFAULT nextval('dtm_barrier.barrier_seq'),
  trans_type varchar(45) DEFAULT '',
  gid varchar(128) DEFAULT '',
  branch_id varchar(128) DEFAULT '',
  op varchar(45) DEFAULT '',
  barrier_id varchar(45) DEFAULT '',
  reason varchar(45) DEFAULT '',
  create_time timestamp(0) with time zone DEFAULT now(),
  update_time timestamp(0) with time zone DEFAULT now(),
  PRIMARY KEY (id),
  CONSTRAINT uniq_barrier UNIQUE (gid, branch_id, op, barrier_id)
);
CREATE INDEX IF NOT EXISTS barrier_create_time ON dtm_barrier.barrier (create_time);
CREATE INDEX IF NOT EXISTS barrier_update_time ON dtm_barrier.barrier (update_time);
