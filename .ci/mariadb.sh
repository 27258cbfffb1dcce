# Sourced by .ci/run: a throwaway MariaDB server for the MySQL test suites.
#
# Unless DTX_TEST_MYSQL_URL is already set (an existing server to test against), this installs
# MariaDB from Debian packages when `mariadbd` is missing, creates a data directory under /tmp
# (`mariadb-install-db`), starts `mariadbd` on a free loopback port with its socket in that
# directory (as the `mysql` user when run as root), creates a user allowed to create databases,
# exports DTX_TEST_MYSQL_URL=mysql://dtx:dtx@127.0.0.1:PORT/dtx, and stops the server and
# removes the directory when the calling script exits (chained with any EXIT trap already set,
# e.g. PostgreSQL's).

dtx_mysql_stop() {
    if [ -n "${DTX_MYSQL_DIR:-}" ] && [ -f "$DTX_MYSQL_DIR/mariadbd.pid" ]; then
        local pid
        pid=$(cat "$DTX_MYSQL_DIR/mariadbd.pid" 2>/dev/null || true)
        if [ -n "$pid" ]; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    if [ -n "${DTX_MYSQL_DIR:-}" ]; then
        rm -rf "$DTX_MYSQL_DIR"
    fi
}

dtx_mysql_start() {
    if [ -n "${DTX_TEST_MYSQL_URL:-}" ]; then
        echo "MySQL suites: using DTX_TEST_MYSQL_URL from the environment"
        return 0
    fi
    if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
        echo "MariaDB server not found: installing the Debian package 'mariadb-server'"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq mariadb-server >/dev/null
    fi
    local mariadbd
    mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
    [ -x "$mariadbd" ] || { echo "MariaDB install failed" >&2; return 1; }
    DTX_MYSQL_DIR=$(mktemp -d /tmp/dtx-mysql.XXXXXX)
    local previous
    previous=$(trap -p EXIT | sed -e "s/^trap -- '\(.*\)' EXIT$/\1/")
    # shellcheck disable=SC2064
    trap "dtx_mysql_stop; ${previous:-true}" EXIT
    local user_opt=()
    if [ "$(id -u)" = 0 ]; then
        chown mysql: "$DTX_MYSQL_DIR"
        user_opt=(--user=mysql)
    fi
    mariadb-install-db --no-defaults "${user_opt[@]}" --datadir="$DTX_MYSQL_DIR/data" \
        --auth-root-authentication-method=normal --skip-test-db >"$DTX_MYSQL_DIR/install.log" 2>&1 \
        || { cat "$DTX_MYSQL_DIR/install.log" >&2; return 1; }
    local port=${DTX_MYSQL_PORT:-33069} ok= attempt pid
    # Another run (or another helper) may take the port between the check and the bind: then
    # the server exits and the next free port is tried.
    for attempt in 1 2 3 4 5 6 7 8; do
        while [ -z "${DTX_MYSQL_PORT:-}" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
            port=$((port + 1))
        done
        # Durability off: a test server need not survive power loss, and CI time is short.
        "$mariadbd" --no-defaults "${user_opt[@]}" --datadir="$DTX_MYSQL_DIR/data" \
            --socket="$DTX_MYSQL_DIR/mariadbd.sock" --pid-file="$DTX_MYSQL_DIR/mariadbd.pid" \
            --bind-address=127.0.0.1 --port="$port" --skip-log-bin --max-connections=300 \
            --innodb-flush-log-at-trx-commit=0 --innodb-buffer-pool-size=64M --skip-name-resolve \
            --log-error="$DTX_MYSQL_DIR/server.log" >/dev/null 2>&1 &
        pid=$!
        for _ in $(seq 1 100); do
            if mariadb-admin --no-defaults --socket="$DTX_MYSQL_DIR/mariadbd.sock" -uroot ping >/dev/null 2>&1; then
                ok=1
                break
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        [ -n "$ok" ] && break
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        port=$((port + 1))
    done
    [ -n "$ok" ] || { cat "$DTX_MYSQL_DIR/server.log" >&2; return 1; }
    mariadb --no-defaults --socket="$DTX_MYSQL_DIR/mariadbd.sock" -uroot -e \
        "CREATE USER 'dtx'@'127.0.0.1' IDENTIFIED BY 'dtx'; GRANT ALL ON *.* TO 'dtx'@'127.0.0.1' WITH GRANT OPTION; CREATE DATABASE dtx;" \
        || { cat "$DTX_MYSQL_DIR/server.log" >&2; return 1; }
    export DTX_TEST_MYSQL_URL="mysql://dtx:dtx@127.0.0.1:$port/dtx"
    echo "MySQL suites: throwaway MariaDB at 127.0.0.1:$port ($DTX_MYSQL_DIR)"
}
