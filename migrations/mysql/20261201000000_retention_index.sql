-- Retention (`--retention`, `dtx purge`) deletes finished rows, oldest written first. MySQL has
-- no partial indexes: the status leads, so the purge's range scan reads only final rows.
CREATE INDEX trans_global_finished ON trans_global (status, update_time);
