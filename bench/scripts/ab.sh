#!/bin/bash
# Two builds of dtx-bench compared in A-B-B-A order, so that the VM's steady drift in speed
# cancels out (a run's rows are only comparable with runs of the same minutes). Each run is a
# fresh store; PostgreSQL runs recreate the database first. Prints every run and the means.
#   cp target/release/dtx-bench /tmp/bench-before     # build A, then change and rebuild
#   cargo build --release -p dtx-bench
#   bash bench/scripts/ab.sh /tmp/bench-before target/release/dtx-bench
# Settings (environment): CASE (saga), N (15000), CYCLES (3), ARGS (extra dtx-bench flags), and
# DATABASE_URL (postgres://…; default: SQLite) with PGADMIN (a URL psql can use to drop and
# create it; default: the same server's `postgres` database).
set -eu
A=$1; B=$2
CASE=${CASE:-saga}; N=${N:-15000}; CYCLES=${CYCLES:-3}; ARGS=${ARGS:-}
DATABASE_URL=${DATABASE_URL:-}
OUT=$(mktemp -d)

run() { # $1 binary, $2 label: one run, appended to $OUT/$2
    local db=()
    if [ -n "$DATABASE_URL" ]; then
        local admin=${PGADMIN:-${DATABASE_URL%/*}/postgres} name=${DATABASE_URL##*/}
        PGOPTIONS=--client-min-messages=warning psql "$admin" -q -c "DROP DATABASE IF EXISTS $name" \
            -c "CREATE DATABASE $name" > /dev/null
        db=(--database-url "$DATABASE_URL")
    fi
    # shellcheck disable=SC2086
    if ! RUST_LOG=warn "$1" -n "$N" --cases "$CASE" --no-verify "${db[@]}" --json "$OUT/run.json" $ARGS \
        > "$OUT/log" 2>&1; then
        echo "$2: $1 failed:" >&2; tail -20 "$OUT/log" >&2; exit 1
    fi
    python3 - "$OUT/run.json" "$CASE" "$2" >> "$OUT/$2" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
case = next(c for c in report["cases"] if c["case"] == sys.argv[2])
db = case["database_cpu_us_per_tx"]
print(f'{case["tx_per_s"]:.0f} {case["p50_ms"]:.2f} {case["coordinator_cpu_us_per_tx"] or 0:.0f} '
      f'{db or 0:.0f} {case["db_statements_per_tx"] or 0:.1f}')
PY
    echo "$2: $(tail -1 "$OUT/$2")  (tx/s p50_ms cpu_us db_cpu_us statements)"
}

for _ in $(seq "$CYCLES"); do
    run "$A" A; run "$B" B; run "$B" B; run "$A" A
done
for side in A B; do
    awk -v side="$side" '{t += $1; p += $2; c += $3; d += $4; s += $5; n++}
        END {printf "%s mean of %d: %.0f tx/s, p50 %.2f ms, cpu %.0f us, db cpu %.0f us, %.1f statements\n",
             side, n, t / n, p / n, c / n, d / n, s / n}' "$OUT/$side"
done
rm -rf "$OUT"
