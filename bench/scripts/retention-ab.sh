#!/bin/bash
# Retention vs. live traffic, A/B: saga throughput and latency of one dtx node (SQLite) holding N
# old finished sagas (inserted with SQL, 4 branch rows each), with its retention task deleting
# them during the load (`--retention 1d`) and without (`--retention 0`), alternated ROUNDS times
# on fresh copies of the same database. Needs sqlite3, curl, python3 and a release dtx-bench:
#   cargo build --release -p dtx-bench && bash bench/scripts/retention-ab.sh
set -eu
BENCH=${BENCH:-$(pwd)/target/release/dtx-bench}
N=${N:-300000}; TX=${TX:-20000}; ROUNDS=${ROUNDS:-3}; DIR=${DIR:-$(mktemp -d)}
cd "$DIR"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start() { # $1 database file, $2 retention; sets PID and HP
    HP=$(port); GP=$(port)
    RUST_LOG=warn "$BENCH" coordinator --database-url "sqlite://$1" --http-listen "127.0.0.1:$HP" \
        --grpc-listen "127.0.0.1:$GP" --retention "$2" > coordinator.log 2>&1 &
    PID=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HP/api/ping" > /dev/null && return; sleep 0.1; done
    cat coordinator.log; exit 1
}
purged() { curl -s "http://127.0.0.1:$HP/api/metrics" | awk '/^dtx_transactions_purged_total/ {print $2}'; }
if [ ! -f template.db ]; then
    start "$DIR/template.db" 0; kill "$PID"; wait "$PID" || true   # creates the schema
    T=$(( $(date +%s) * 1000 - 30 * 86400 * 1000 ))                    # written 30 days ago
    sqlite3 template.db <<SQL
PRAGMA journal_mode=WAL;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
INSERT INTO trans_global (gid, trans_type, status, options, create_time, update_time, finish_time,
                          next_cron_time, next_cron_interval)
SELECT 'old-' || i, 'saga', 'succeed', '{}', $T - i, $T - i, $T - i, $T - i, 10000 FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
INSERT INTO trans_branch_op (gid, branch_id, op, url, payload, status, attempts, create_time,
                             update_time, finish_time)
SELECT 'old-' || i, printf('%02d', b), op, 'http://127.0.0.1:1/x', X'7B7D',
       CASE op WHEN 'action' THEN 'succeed' ELSE 'prepared' END, 1, $T - i, $T - i, $T - i
FROM n, (SELECT 1 AS b UNION ALL SELECT 2), (SELECT 'compensate' AS op UNION ALL SELECT 'action');
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
fi
for r in $(seq "$ROUNDS"); do
    for retention in 0 1d; do
        rm -f run.db run.db-wal run.db-shm; cp template.db run.db
        start "$DIR/run.db" "$retention"; sleep 1
        p0=$(purged)
        "$BENCH" --dtx "http://127.0.0.1:$HP" --dtx-grpc "127.0.0.1:$GP" --cases saga -n "$TX" -c 64 --json "r$r-$retention.json" > "r$r-$retention.txt" 2>&1
        p1=$(purged)
        kill "$PID"; wait "$PID" || true
        python3 - "r$r-$retention.json" "$retention" "$p0" "$p1" <<'PY'
import json, sys
c = [c for c in json.load(open(sys.argv[1]))["cases"] if c["case"].startswith("saga")][0]
purged = float(sys.argv[4] or 0) - float(sys.argv[3] or 0)
print(f'retention {sys.argv[2]:>2}: {c["tx_per_s"]:6.0f} saga/s  p50 {c["p50_ms"]:5.1f} ms  p99 {c["p99_ms"]:6.1f} ms  '
      f'max {c["max_ms"]:5.0f} ms  errors {c["errors"]}  verified {c["verified"]}  purged during the load {purged:.0f}')
PY
    done
done
