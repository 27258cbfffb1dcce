-- DTM's barrier table on MySQL / MariaDB (database dtm_barrier).
-- barrier::create_table runs exactly these statements.
CREATE DATABASE IF NOT EXISTS dtm_barrier;
CREATE TABLE IF NOT EXISTS dtm_barrier.barrier (
  id bigint(22) PRIMARY KEY AUTO_INCREMENT,
  trans_type varchar(45) DEFAULT '',
  gid varchar(128) DEFAULT '',
  branch_id varchar(128) DEFAULT '',
  op varchar(45) DEFAULT '',
  barrier_id varchar(45) DEFAULT '',
  reason varchar(45) DEFAULT '',
  create_time datetime DEFAULT now(),
  update_time datetime DEFAULT now(),
  KEY (create_time),
  KEY (update_time),
  UNIQUE KEY (gid, branch_id, op, barrier_id)
);
