# Sourced by .ci/run: a throwaway PostgreSQL cluster for the PostgreSQL test suites.
#
# Unless DTX_TEST_POSTGRES_URL is already set (an existing server to test against), this
# installs PostgreSQL from Debian packages when no server binaries are present, creates a
# cluster in a temp dir (owned by the `postgres` user when run as root: initdb refuses root),
# starts it on a loopback port with its unix socket in that dir, creates a user and database,
# exports DTX_TEST_POSTGRES_URL (and DTX_TEST_POSTGRES_BIN, for tests that start clusters of
# their own), and stops and removes the cluster when the calling script exits.

dtx_pg_bin_dir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

# Runs a command as the cluster's owner (`postgres` when we are root, else ourselves).
dtx_pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

dtx_pg_stop() {
    if [ -n "${DTX_PG_DIR:-}" ] && [ -f "$DTX_PG_DIR/data/postmaster.pid" ]; then
        dtx_pg_as_owner "$DTX_PG_BIN/pg_ctl" -D "$DTX_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ -n "${DTX_PG_DIR:-}" ]; then
        rm -rf "$DTX_PG_DIR"
    fi
}

dtx_pg_start() {
    if [ -n "${DTX_TEST_POSTGRES_URL:-}" ]; then
        echo "PostgreSQL suites: using DTX_TEST_POSTGRES_URL from the environment"
        return 0
    fi
    if ! DTX_PG_BIN=$(dtx_pg_bin_dir); then
        echo "PostgreSQL server binaries not found: installing the Debian package 'postgresql'"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq postgresql >/dev/null
        DTX_PG_BIN=$(dtx_pg_bin_dir) || { echo "PostgreSQL install failed" >&2; return 1; }
    fi
    export DTX_PG_BIN
    local port=${DTX_PG_PORT:-}
    if [ -z "$port" ]; then
        # The first loopback port from 54329 that nothing listens on (another run may be using
        # one on this machine).
        for port in $(seq 54329 54399); do
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                break
            fi
        done
    fi
    DTX_PG_DIR=$(mktemp -d /tmp/dtx-pg.XXXXXX)
    trap dtx_pg_stop EXIT
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$DTX_PG_DIR"
    fi
    # Trust on loopback and the private socket: a throwaway cluster only this run can reach.
    dtx_pg_as_owner "$DTX_PG_BIN/initdb" -D "$DTX_PG_DIR/data" -U postgres --auth=trust \
        --encoding=UTF8 --no-locale >"$DTX_PG_DIR/initdb.log" 2>&1 \
        || { cat "$DTX_PG_DIR/initdb.log" >&2; return 1; }
    # fsync off: a test cluster need not survive power loss, and CI time is short. Prepared
    # transactions on: dtx-client's XA suite prepares its branches (PREPARE TRANSACTION).
    dtx_pg_as_owner "$DTX_PG_BIN/pg_ctl" -D "$DTX_PG_DIR/data" -l "$DTX_PG_DIR/server.log" -w \
        -o "-h 127.0.0.1 -p $port -k $DTX_PG_DIR -c fsync=off -c full_page_writes=off -c max_connections=300 -c max_prepared_transactions=100" \
        start >/dev/null \
        || { cat "$DTX_PG_DIR/server.log" >&2; return 1; }
    dtx_pg_as_owner "$DTX_PG_BIN/psql" -h "$DTX_PG_DIR" -p "$port" -U postgres -d postgres -q -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE dtx LOGIN CREATEDB PASSWORD 'dtx'" -c "CREATE DATABASE dtx OWNER dtx" >/dev/null
    export DTX_TEST_POSTGRES_BIN="$DTX_PG_BIN"
    export DTX_TEST_POSTGRES_URL="postgres://dtx:dtx@127.0.0.1:$port/dtx"
    echo "PostgreSQL suites: throwaway cluster at 127.0.0.1:$port ($DTX_PG_DIR)"
}
