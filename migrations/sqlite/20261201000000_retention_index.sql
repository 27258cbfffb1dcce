-- Retention (`--retention`, `dtx purge`) deletes finished rows, oldest written first. Only final
-- rows enter this index, so live writes to unfinished transactions never maintain it.
CREATE INDEX trans_global_finished ON trans_global (update_time)
    WHERE status IN ('succeed', 'failed');
