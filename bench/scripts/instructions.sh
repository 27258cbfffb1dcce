#!/bin/bash
# Instructions the coordinator executes per transaction, counted by valgrind's callgrind: the
# same count on every run whatever else the VM is doing, where tx/s and CPU time drift by
# 10-30 % within minutes (ab.sh needs many cycles to see a 5 % change; this sees 1 %).
#   bash bench/scripts/instructions.sh target/release/dtx-bench [OTHER_BINARY ...]
# Each binary's coordinator (`dtx-bench coordinator`, on a fresh SQLite file) runs under
# callgrind twice, driven by the first binary's load generator with N1 and then N2
# transactions; the difference over N2 - N1 is the count per transaction, without start-up and
# shutdown. Settings (environment): CASE (saga), N1 (1000), N2 (3000), C (64 in flight),
# KEEP (a directory to keep the callgrind files in, for callgrind_annotate), SEED (a SQLite
# database file each run starts from instead of an empty one: a store filled by
# `dtx-bench --dtx … --mode growth`, for the growth case's cost per saga). The final-status
# check of the load generator is off (--no-verify): its queries are not a transaction's cost.
# Under valgrind the coordinator runs ~50x slower, so its write batches are fuller than at full
# speed: compare builds with each other, not with the CPU column of a normal run.
set -eu
command -v valgrind > /dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
CASE=${CASE:-saga}; N1=${N1:-1000}; N2=${N2:-3000}; C=${C:-64}
DRIVER=$1
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

count() { # $1 binary, $2 n: prints the instructions of one coordinator run
    local http grpc pid out=$OUT/cg.$2 log=$OUT/log
    http=$(free_port); grpc=$(free_port)
    rm -rf "$OUT/db"; mkdir "$OUT/db"
    if [ -n "${SEED:-}" ]; then cp "$SEED" "$OUT/db/d.db"; fi
    valgrind --tool=callgrind --callgrind-out-file="$out" "$1" coordinator \
        --database-url "sqlite://$OUT/db/d.db" --http-listen "127.0.0.1:$http" \
        --grpc-listen "127.0.0.1:$grpc" > "$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 240); do
        curl -s -o /dev/null "http://127.0.0.1:$http/api/ping" && break
        sleep 0.5
    done
    if ! RUST_LOG=warn "$DRIVER" --dtx "http://127.0.0.1:$http" --dtx-grpc "127.0.0.1:$grpc" \
        -n "$2" -c "$C" --cases "$CASE" --no-verify > "$OUT/run" 2>&1; then
        echo "the load generator failed:" >&2; tail -20 "$OUT/run" >&2; kill -TERM $pid; exit 1
    fi
    kill -TERM $pid; wait $pid || true
    if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cp "$out" "$KEEP/$(basename "$1").$2.callgrind"; fi
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$log"
}

for bin in "$@"; do
    a=$(count "$bin" "$N1"); b=$(count "$bin" "$N2")
    echo "$bin: $(( (b - a) / (N2 - N1) )) instructions per $CASE  ($N1: $a, $N2: $b)"
done
