#!/usr/bin/env python3
"""SQLite's work per 2-step saga under three storage layouts (ADR 24, "Measured for the next step").

Replays the writes dtx makes for a saga -- a global row and four branch rows, then a save of the
global row and the two action rows -- through Debian's `sqlite3` shell under valgrind's
callgrind, 20 sagas per transaction (each transaction also saving the previous 20), and prints
the instructions of `sqlite3_step` per saga: the difference between a run of N1 and one of N2
sagas, divided by N2 - N1. Parsing is not counted (the statements carry literals, so each is
parsed anew; `sqlite3_step` is execution only).

Layouts:
  A  today's schema (the repository's SQLite migrations): branch rows keyed by gid text
  C  branch rows keyed by the global row's integer id instead of its gid
  B  a transaction's branches as one JSON column of its global row: 2 statements per saga

Needs `sqlite3` and `valgrind` (Debian packages). Run from the repository's root:
  python3 bench/scripts/layout-replay.py [N1 N2]      (default 2000 6000)
"""
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

PER_COMMIT = 20
NOW = 1765000000000
RUN = "d41c9a7e"
STEP_URL, UNDO_URL = "http://127.0.0.1:35747/busi/step", "http://127.0.0.1:35747/busi/undo"
PAYLOAD = '{"amount":30}'
GLOBAL_COLUMNS = ("gid, trans_type, status, protocol, query_prepared, custom_data, options, "
                  "rollback_reason, result, create_time, update_time, finish_time, rollback_time, "
                  "next_cron_time, next_cron_interval, owner, lease_until")


def schema_a(work):
    """Today's schema: the repository's SQLite migrations, applied in order."""
    db = os.path.join(work, "schema.db")
    for path in sorted(glob.glob("migrations/sqlite/*.sql")):
        with open(path) as f:
            subprocess.run(["sqlite3", db], stdin=f, check=True, stdout=subprocess.DEVNULL)
    text = subprocess.run(["sqlite3", db, ".schema"], check=True, capture_output=True, text=True).stdout
    return re.sub(r"CREATE TABLE sqlite_sequence.*?;\n", "", text)


def schema_b(a):
    with_column = re.sub(r"(held_host\s+VARCHAR\(256\) NULL)\n\);", r"\1,\n    branches BLOB\n);", a, count=1)
    assert with_column != a, "trans_global's last column moved: update layout-replay.py"
    return with_column


def schema_c(a):
    keyed = a.replace("    gid         TEXT    NOT NULL,\n    branch_id", "    global_id   INTEGER NOT NULL,\n    branch_id")
    keyed = keyed.replace("UNIQUE (gid, branch_id, op)", "UNIQUE (global_id, branch_id, op)")
    assert keyed.count("global_id") == 2, "trans_branch_op changed: update layout-replay.py"
    return keyed


def gid(i):
    return f"bench-saga-{RUN}-{i}"


def branch_json(done):
    rows = []
    for k in (1, 2):
        for op, url, status in (("compensate", UNDO_URL, "prepared"),
                                ("action", STEP_URL, "succeed" if done else "prepared")):
            rows.append({"branch_id": f"{k:02d}", "op": op, "url": url, "payload": PAYLOAD,
                         "status": status, "attempts": 0 if op == "compensate" else 1,
                         "last_error": "", "create_time": NOW, "update_time": NOW + 5,
                         "finish_time": NOW + 5 if done and op == "action" else None})
    return json.dumps(rows, separators=(",", ":")).replace("'", "''")


def create(layout, i):
    values = (f"'{gid(i)}','saga','submitted','','','','{{\"concurrent\":false}}','','',{NOW},{NOW},"
              f"NULL,NULL,{NOW + 10000},10000,'node-{i}',{NOW + 30000}")
    if layout == "B":
        return [f"INSERT INTO trans_global ({GLOBAL_COLUMNS}, branches) VALUES ({values}, '{branch_json(False)}');"]
    key, col = (f"'{gid(i)}'", "gid") if layout == "A" else (str(i + 1), "global_id")
    rows = []
    for k in (1, 2):
        for op, url, attempts in (("compensate", UNDO_URL, 0), ("action", STEP_URL, 1)):
            rows.append(f"({key},'{k:02d}','{op}','{url}',X'{PAYLOAD.encode().hex()}','prepared',"
                        f"{attempts},'',{NOW},{NOW},NULL)")
    return [f"INSERT INTO trans_global ({GLOBAL_COLUMNS}) VALUES ({values});",
            f"INSERT OR IGNORE INTO trans_branch_op ({col}, branch_id, op, url, payload, status, attempts, "
            f"last_error, create_time, update_time, finish_time) VALUES {', '.join(rows)};"]


def save(layout, i):
    head = (f"UPDATE trans_global SET update_time = {NOW + 5}, status = 'succeed', finish_time = {NOW + 5}, "
            f"owner = NULL, lease_until = NULL, next_cron_time = {NOW + 5}, next_cron_interval = 10000, "
            f"held_host = NULL")
    fence = f" WHERE gid = '{gid(i)}' AND owner = 'node-{i}';"
    if layout == "B":
        return [f"{head}, branches = '{branch_json(True)}'{fence}"]
    key = f"gid = '{gid(i)}'" if layout == "A" else f"global_id = {i + 1}"
    return [head + fence] + [
        f"UPDATE trans_branch_op SET status = 'succeed', attempts = 1, last_error = '', finish_time = {NOW + 5}, "
        f"update_time = {NOW + 5} WHERE {key} AND branch_id = '{k:02d}' AND op = 'action';" for k in (1, 2)]


def workload(layout, n):
    out = ["PRAGMA journal_mode=WAL;", "PRAGMA synchronous=OFF;"]
    saved = 0  # sagas created in earlier transactions are saved in the next one
    for start in range(0, n, PER_COMMIT):
        out.append("BEGIN IMMEDIATE;")
        for i in range(start, min(n, start + PER_COMMIT)):
            out += create(layout, i)
        for i in range(saved, start):
            out += save(layout, i)
        saved = start
        out.append("COMMIT;")
    out.append("BEGIN IMMEDIATE;")
    for i in range(saved, n):
        out += save(layout, i)
    out.append("COMMIT;")
    return "\n".join(out) + "\n"


def step_instructions(work, layout, schema, n):
    db, script, out = (os.path.join(work, f"{layout}{n}.{ext}") for ext in ("db", "sql", "callgrind"))
    subprocess.run(["sqlite3", db], input=schema, text=True, check=True)
    with open(script, "w") as f:
        f.write(workload(layout, n))
    with open(script) as f:
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "sqlite3", db],
                       stdin=f, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = subprocess.run(["callgrind_annotate", "--inclusive=yes", out], check=True,
                            capture_output=True, text=True).stdout
    line = next(l for l in report.splitlines() if re.search(r"sqlite3_step \[", l))
    done = subprocess.run(["sqlite3", db, "SELECT count(*) FROM trans_global WHERE status = 'succeed'"],
                          check=True, capture_output=True, text=True).stdout.strip()
    assert done == str(n), f"layout {layout}: {done} of {n} sagas saved"
    return int(line.split()[0].replace(",", "")), os.path.getsize(db)


def main():
    n1, n2 = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (2000, 6000)
    with tempfile.TemporaryDirectory() as work:
        a = schema_a(work)
    print(f"{'layout':<60} {'sqlite3_step per saga':>22} {'file after ' + str(n2):>18}")
    for layout, name, schema in (("A", "today's: branch rows keyed by gid text", a),
                                 ("C", "branch rows keyed by the global row's integer id", schema_c(a)),
                                 ("B", "branches as one JSON column of the global row", schema_b(a))):
        with tempfile.TemporaryDirectory() as work:
            s1, _ = step_instructions(work, layout, schema, n1)
            s2, size = step_instructions(work, layout, schema, n2)
        print(f"{layout}: {name:<57} {(s2 - s1) / (n2 - n1) / 1000:>20.1f} k {size / 1e6:>15.1f} MB")


if __name__ == "__main__":
    main()
