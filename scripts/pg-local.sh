#!/usr/bin/env bash
# Starts a throwaway PostgreSQL (Debian's package) on 127.0.0.1 for Ferry's
# PostgreSQL tests and the README scale-out recipe.
#   scripts/pg-local.sh            # start (idempotent: restarts a running one)
#   scripts/pg-local.sh stop       # stop it
# Installs `postgresql` with apt when it is missing (needs root). The
# cluster lives in $FERRY_PG_ROOT (default /tmp/ferry-pg), listens on
# $FERRY_PG_PORT (default 15432: below the kernel's ephemeral ports, which a
# busy machine's outgoing connections may hold) and trusts local connections.
# It is durable as PostgreSQL's defaults are (a commit waits for its WAL on
# disk), so that a 2xx from Ferry on it means what it means on a real
# server; FERRY_PG_FSYNC=off makes it a throwaway that never syncs (the
# test suites' data, which nothing needs after a crash). Creates the
# database `ferry` and prints the environment Ferry and the tests read
# (FERRY_DATABASE_URL).
set -euo pipefail
ROOT="${FERRY_PG_ROOT:-/tmp/ferry-pg}"
PORT="${FERRY_PG_PORT:-15432}"
case "${FERRY_PG_FSYNC:-on}" in
on) SYNC="" ;;
off) SYNC="-c fsync=off -c synchronous_commit=off -c full_page_writes=off" ;;
*) echo "FERRY_PG_FSYNC is on (the default) or off" >&2; exit 1 ;;
esac

pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
stop() {
    local bin
    bin=$(pgbin)
    if [ -n "$bin" ] && [ -f "$ROOT/postmaster.pid" ]; then
        as_pg "$bin/pg_ctl" -D "$ROOT" -m immediate stop >/dev/null 2>&1 || true
    fi
}
if [ "${1:-}" = stop ]; then stop; exit 0; fi

if [ -z "$(pgbin)" ] || [ ! -x "$(pgbin)/initdb" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    else
        echo "needs PostgreSQL: sudo apt-get install -y postgresql" >&2
        exit 1
    fi
fi
BIN=$(pgbin)
stop
rm -rf "$ROOT"
mkdir -p "$ROOT"
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$ROOT"; fi
chmod 700 "$ROOT"
as_pg "$BIN/initdb" -D "$ROOT" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
# pg_stat_statements (in the server package's contrib) counts the
# statements ferry-bench reports per upload; preloaded when present.
PRELOAD=""
if [ -f "$("$BIN/pg_config" --pkglibdir 2>/dev/null || echo "$BIN/../lib")/pg_stat_statements.so" ]; then
    PRELOAD="-c shared_preload_libraries=pg_stat_statements"
fi
as_pg "$BIN/pg_ctl" -D "$ROOT" -l "$ROOT/server.log" -w -t 60 \
    -o "-p $PORT -k $ROOT -c listen_addresses=127.0.0.1 -c max_connections=300 $SYNC $PRELOAD" \
    start >/dev/null
"$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qc "CREATE DATABASE ferry" >&2
echo "export FERRY_DATABASE_URL=postgres://postgres@127.0.0.1:$PORT/ferry"
