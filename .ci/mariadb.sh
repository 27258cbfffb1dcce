# Sourced by .ci/run: a throwaway MariaDB server for the MySQL/MariaDB test suites.
#
# Unless DTX_TEST_MYSQL_URL is already set (an existing server to test against), this installs
# MariaDB from Debian packages when no server is present, creates a data directory in /tmp
# (owned by the `mysql` user when run as root), starts `mariadbd` on a free loopback port with
# its socket in that directory, creates a user allowed to create databases, exports
# DTX_TEST_MYSQL_URL=mysql://dtx:dtx@127.0.0.1:PORT/dtx, and stops and removes the server when
# the calling script exits (after whatever EXIT trap was already set, e.g. PostgreSQL's).
#
# Functions: dtx_mysql_start, dtx_mysql_stop.

dtx_mysql_server() {
    command -v mariadbd 2>/dev/null || command -v mysqld 2>/dev/null \
        || { [ -x /usr/sbin/mariadbd ] && echo /usr/sbin/mariadbd; } \
        || { [ -x /usr/sbin/mysqld ] && echo /usr/sbin/mysqld; }
}

dtx_mysql_stop() {
    if [ -n "${DTX_MYSQL_DIR:-}" ] && [ -f "$DTX_MYSQL_DIR/mariadbd.pid" ]; then
        local pid
        pid=$(cat "$DTX_MYSQL_DIR/mariadbd.pid" 2>/dev/null)
        if [ -n "$pid" ]; then
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
    local server
    if ! server=$(dtx_mysql_server) || ! command -v mariadb-install-db >/dev/null; then
        echo "MariaDB server not found: installing the Debian package 'mariadb-server'"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq mariadb-server >/dev/null
        server=$(dtx_mysql_server) || { echo "MariaDB install failed" >&2; return 1; }
    fi
    export DTX_TEST_MYSQL_SERVER="$server"
    local port=${DTX_MYSQL_PORT:-}
    if [ -z "$port" ]; then
        # The first loopback port from 33069 that nothing listens on.
        for port in $(seq 33069 33199); do
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                break
            fi
        done
    fi
    DTX_MYSQL_DIR=$(mktemp -d /tmp/dtx-mariadb.XXXXXX)
    local prev
    prev=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")
    # shellcheck disable=SC2064
    trap "dtx_mysql_stop${prev:+; $prev}" EXIT
    local user_args=()
    if [ "$(id -u)" = 0 ]; then
        chown mysql: "$DTX_MYSQL_DIR"
        user_args=(--user=mysql)
    fi
    mariadb-install-db --no-defaults "${user_args[@]}" --datadir="$DTX_MYSQL_DIR/data" \
        --auth-root-authentication-method=socket --skip-test-db >"$DTX_MYSQL_DIR/install.log" 2>&1 \
        || { cat "$DTX_MYSQL_DIR/install.log" >&2; return 1; }
    # A throwaway server: no binary log, no flush per commit (CI time is short).
    "$server" --no-defaults "${user_args[@]}" --datadir="$DTX_MYSQL_DIR/data" \
        --bind-address=127.0.0.1 --port="$port" --socket="$DTX_MYSQL_DIR/mariadbd.sock" \
        --pid-file="$DTX_MYSQL_DIR/mariadbd.pid" --log-error="$DTX_MYSQL_DIR/server.log" \
        --skip-name-resolve --skip-log-bin --innodb-flush-log-at-trx-commit=2 \
        --max-connections=500 --character-set-server=utf8mb4 >/dev/null 2>&1 &
    # Stopped by dtx_mysql_stop (by its pid file), not as a job of this shell.
    disown $!
    local i
    for i in $(seq 1 100); do
        if mariadb-admin --no-defaults --socket="$DTX_MYSQL_DIR/mariadbd.sock" -uroot ping >/dev/null 2>&1; then
            break
        fi
        sleep 0.2
    done
    mariadb --no-defaults --socket="$DTX_MYSQL_DIR/mariadbd.sock" -uroot -e \
        "CREATE USER 'dtx'@'%' IDENTIFIED BY 'dtx'; GRANT ALL ON *.* TO 'dtx'@'%'; CREATE DATABASE dtx;" \
        || { cat "$DTX_MYSQL_DIR/server.log" >&2; return 1; }
    export DTX_TEST_MYSQL_URL="mysql://dtx:dtx@127.0.0.1:$port/dtx"
    echo "MySQL suites: throwaway MariaDB at 127.0.0.1:$port ($DTX_MYSQL_DIR)"
}
