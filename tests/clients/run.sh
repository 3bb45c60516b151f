#!/usr/bin/env bash
# Ferry's "real clients" suite: tuspy, tus-js-client (Node and, in
# tests/clients/web/, a browser) and a scripted IETF-draft client, all against
# one live `ferry serve` on 127.0.0.1. See tests/clients/README.md.
#
#   tests/clients/run.sh                  # builds target/debug/ferry first
#   FERRY_BIN=path/to/ferry tests/clients/run.sh
#   tests/clients/run.sh -k hand_over     # only pytest, with these arguments
#
# Installs what it needs: a venv in tests/clients/.venv (pip), node_modules
# (npm ci) and, as root, Debian's chromium when /usr/bin/chromium is missing.
# Ends with one line `clients: N passed, M failed` and exits non-zero on
# any failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

say() { printf '== %s\n' "$*"; }
loud() {
    {
        printf '\n%s\n' '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'
        printf '!!! %s\n' "$@"
        printf '%s\n\n' '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'
    } >&2
}
is_root() { [ "$(id -u)" = 0 ]; }
in_ci() { [ -n "${CI:-}" ] && [ "${CI:-}" != "false" ] && [ "${CI:-}" != "0" ]; }

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# Every request of this suite goes to 127.0.0.1: never through a proxy.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"
export PYTHONDONTWRITEBYTECODE=1

ARTIFACTS="${ARTIFACTS:-target/client-artifacts}"
mkdir -p "$ARTIFACTS"
ARTIFACTS="$(cd "$ARTIFACTS" && pwd)"
export ARTIFACTS

# ---------------------------------------------------------------- installs

say "python: venv $HERE/.venv"
VENV="$HERE/.venv"
if [ ! -x "$VENV/bin/python" ]; then
    if ! python3 -m venv "$VENV"; then
        rm -rf "$VENV"
        if is_root; then
            say "python3 -m venv failed: installing Debian's python3-venv"
            apt_install python3-venv
            python3 -m venv "$VENV"
        else
            loud "python3 -m venv failed: install python3-venv (sudo apt-get install python3-venv)"
            exit 1
        fi
    fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/python/requirements.txt"

say "node: npm ci in tests/clients/node"
(cd "$HERE/node" && npm ci --no-audit --no-fund --loglevel=error)
if [ -f "$HERE/web/package.json" ]; then
    say "node: npm ci in tests/clients/web"
    (cd "$HERE/web" && npm ci --no-audit --no-fund --loglevel=error)
fi

WEB_TEST="$HERE/web/page.test.mjs"
RUN_WEB=0
WEB_SKIPPED=0
if [ -f "$WEB_TEST" ]; then
    if [ ! -x /usr/bin/chromium ]; then
        if is_root; then
            say "browser: installing Debian's chromium"
            apt_install chromium
        else
            loud "/usr/bin/chromium is missing and this is not root: the BROWSER TEST IS SKIPPED." \
                "Install it with: sudo apt-get install -y chromium"
        fi
    fi
    if [ -x /usr/bin/chromium ]; then
        RUN_WEB=1
        export CHROMIUM=/usr/bin/chromium
    elif in_ci; then
        loud "CI: the browser test must run, and /usr/bin/chromium is missing"
        exit 1
    else
        WEB_SKIPPED=1
    fi
else
    say "browser: $WEB_TEST not present, nothing to run"
fi

# ------------------------------------------------------------------- build

if [ -z "${FERRY_BIN:-}" ]; then
    say "build: cargo build --locked -p ferry-cli"
    cargo build --locked -p ferry-cli
    FERRY_BIN="$ROOT/target/debug/ferry"
fi
[ -x "$FERRY_BIN" ] || { loud "FERRY_BIN=$FERRY_BIN is not an executable"; exit 1; }
export FERRY_BIN  # test_ucloud.py and test_veeva.py start short-lived servers of their own

# ------------------------------------------------------------------ server

ADMIN_TOKEN="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
SERVER_OUT="$ARTIFACTS/ferry.stdout.log"
SERVER_ERR="$ARTIFACTS/ferry.stderr.log"
SERVER_PID=""
# FERRY_CLUSTER=1: instead of one server, the scale-out recipe
# (scripts/cluster-local.sh: PostgreSQL, an S3 server, 3 nodes and nginx
# round-robin in front of them); every client talks to nginx, so the
# requests of one upload land on different nodes.
CLUSTER="${FERRY_CLUSTER:-0}"
CLUSTER_ROOT=""
if [ "$CLUSTER" = 1 ]; then
    CLUSTER_ROOT="${FERRY_CLUSTER_ROOT:-$(mktemp -d "${TMPDIR:-/tmp}/ferry-clients-cluster.XXXXXX")}"
fi

# Whether every node of the cluster still runs.
cluster_alive() {
    local pid
    for pid in "$CLUSTER_ROOT"/node-*.pid; do
        [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null || return 1
    done
}
stop_server() {
    if [ "$CLUSTER" = 1 ]; then
        FERRY_CLUSTER_ROOT="$CLUSTER_ROOT" scripts/cluster-local.sh stop >/dev/null 2>&1 || true
        return 0
    fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            say "server $SERVER_PID did not stop on SIGTERM within 10 s: SIGKILL"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
cleanup() {
    stop_server
    if [ "$CLUSTER" = 1 ]; then
        # The nodes' logs are kept with the other artifacts.
        cp "$CLUSTER_ROOT"/node-*.log "$CLUSTER_ROOT"/nginx-error.log "$ARTIFACTS/" 2>/dev/null || true
        rm -rf "$CLUSTER_ROOT"
    else
        rm -rf "$DATA_DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$CLUSTER" = 1 ]; then
    say "cluster: scripts/cluster-local.sh in $CLUSTER_ROOT (3 nodes on PostgreSQL + S3, nginx in front)"
    DATA_DIR="$CLUSTER_ROOT/node-1"
    env -u FERRY_DATABASE_URL -u FERRY_S3_ENDPOINT -u FERRY_S3_BUCKET -u FERRY_S3_PREFIX \
        -u FERRY_STORE -u FERRY_CONFIG -u FERRY_TUS_PATH -u FERRY_LISTEN \
        FERRY_CLUSTER_ROOT="$CLUSTER_ROOT" FERRY_BIN="$FERRY_BIN" FERRY_ADMIN_TOKEN="$ADMIN_TOKEN" \
        RUST_LOG="${RUST_LOG:-info}" scripts/cluster-local.sh >"$SERVER_OUT" 2>"$SERVER_ERR" || {
        loud "scripts/cluster-local.sh failed"
        tail -n 30 "$SERVER_ERR" >&2 || true
        exit 1
    }
    URL="$(sed -n 's/^export FERRY_URL=//p' "$SERVER_OUT")"
    [ -n "$URL" ] || { loud "scripts/cluster-local.sh printed no URL"; exit 1; }
    say "cluster: $URL (node logs in $CLUSTER_ROOT, copied to $ARTIFACTS at the end)"
else
    DATA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/ferry-clients.XXXXXX")"
    say "server: $FERRY_BIN serve --listen 127.0.0.1:0 --data-dir $DATA_DIR"
    # stdout and stderr go to files: the server never blocks on a full pipe.
    env -u FERRY_CONFIG -u FERRY_PUBLIC_URL -u FERRY_TUS_PATH -u FERRY_LISTEN \
        FERRY_ADMIN_TOKEN="$ADMIN_TOKEN" RUST_LOG="${RUST_LOG:-info}" \
        "$FERRY_BIN" serve --listen 127.0.0.1:0 --data-dir "$DATA_DIR" \
        >"$SERVER_OUT" 2>"$SERVER_ERR" &
    SERVER_PID=$!

    URL=""
    for _ in $(seq 1 300); do
        first="$(head -n 1 "$SERVER_OUT" 2>/dev/null || true)"
        case "$first" in
        "Ferry listening on http://"*)
            URL="${first#Ferry listening on }"
            break
            ;;
        esac
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            loud "ferry serve exited before listening"
            tail -n 30 "$SERVER_ERR" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    [ -n "$URL" ] || { loud "ferry serve did not print its address within 30 s"; exit 1; }
    say "server: $URL (pid $SERVER_PID, logs in $ARTIFACTS)"
fi

# The user the clients upload as: alice, whose home space is "alice".
USER_INFO="$(python3 - "$URL" "$ADMIN_TOKEN" <<'EOF'
import json, sys, urllib.request
url, admin = sys.argv[1:3]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
req = urllib.request.Request(
    url + "/v1/admin/users", method="POST",
    data=json.dumps({"name": "alice"}).encode(),
    headers={"Authorization": "Bearer " + admin, "Content-Type": "application/json"},
)
with opener.open(req, timeout=30) as r:
    if r.status != 201:
        sys.exit(f"POST /v1/admin/users answered {r.status}")
    j = json.load(r)
print(j["token"])
print(j["home_space"])
EOF
)"
FERRY_TOKEN="$(sed -n 1p <<<"$USER_INFO")"
FERRY_SPACE="$(sed -n 2p <<<"$USER_INFO")"
export FERRY_URL="$URL" FERRY_TOKEN FERRY_SPACE FERRY_ADMIN_TOKEN="$ADMIN_TOKEN" FERRY_DATA_DIR="$DATA_DIR"
say "user: alice, home space $FERRY_SPACE"

# ------------------------------------------------------------------- tests

PASSED=0
FAILED=0
SKIPPED=0

# count LOG RC: adds a runner's own totals (pytest's summary line, node's
# `pass N`/`fail N`); a runner that failed without reporting a failure counts
# as one failure, one that reported nothing and passed as one pass.
count_pytest() {
    local log="$1" rc="$2" line p f e s
    line="$(grep -E '[0-9]+ (passed|failed|errors?|skipped)' "$log" | tail -n 1 || true)"
    p="$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || echo 0)"
    f="$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+' || echo 0)"
    e="$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '[0-9]+' || echo 0)"
    s="$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '[0-9]+' || echo 0)"
    add "$rc" "$p" "$((f + e))" "$s"
}
count_node() {
    local log="$1" rc="$2" p f s
    p="$(grep -E '^(ℹ|#) pass [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+$' || echo 0)"
    f="$(grep -E '^(ℹ|#) fail [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+$' || echo 0)"
    s="$(grep -E '^(ℹ|#) skipped [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+$' || echo 0)"
    add "$rc" "$p" "$f" "$s"
}
add() {
    local rc="$1" p="$2" f="$3" s="$4"
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi
    if [ "$rc" = 0 ] && [ "$p" = 0 ] && [ "$f" = 0 ] && [ "$s" = 0 ]; then p=1; fi
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    SKIPPED=$((SKIPPED + s))
}
# run NAME TIMEOUT CMD...: runs with a time limit, output to the terminal and
# to $ARTIFACTS/NAME.log; sets RC.
run() {
    local name="$1" limit="$2"
    shift 2
    say "run: $*"
    set +e
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$ARTIFACTS/$name.log"
    RC=${PIPESTATUS[0]}
    set -e
    [ "$RC" = 124 ] && loud "$name: timed out after $limit s"
    return 0
}

run pytest 1500 "$VENV/bin/python" -m pytest -q tests/clients/python \
    --junitxml="$ARTIFACTS/pytest.xml" "$@"
count_pytest "$ARTIFACTS/pytest.log" "$RC"

# Arguments select pytest cases: the other runners are left out.
if [ $# != 0 ]; then RUN_NODE=0 RUN_WEB=0 WEB_SKIPPED=0; else RUN_NODE=1; fi

[ "$RUN_NODE" = 1 ] && run node 900 node --test --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=junit --test-reporter-destination="$ARTIFACTS/node.xml" tests/clients/node/
[ "$RUN_NODE" = 1 ] && count_node "$ARTIFACTS/node.log" "$RC"

if [ "$RUN_WEB" = 1 ]; then
    run web 900 node tests/clients/web/page.test.mjs
    count_node "$ARTIFACTS/web.log" "$RC"
    # The console (Files, Sessions, Admin, Activity) as the admin.
    run web-console 600 env FERRY_TOKEN="$ADMIN_TOKEN" node tests/clients/web/console.test.mjs
    count_node "$ARTIFACTS/web-console.log" "$RC"
elif [ "$WEB_SKIPPED" = 1 ]; then
    loud "the BROWSER TESTS WERE SKIPPED (no /usr/bin/chromium): sudo apt-get install -y chromium"
    SKIPPED=$((SKIPPED + 2))
fi

# Ferry's own CLI through the balancer: a file in 8 MiB parts, 4 at a
# time (so they land on every node), then the same straight into the
# bucket (presigned parts of the store's size), each downloaded again
# (parallel ranges, through every node) and compared.
if [ "$CLUSTER" = 1 ] && [ $# = 0 ]; then
    BIG="$CLUSTER_ROOT/cli-big.bin"
    head -c $((40 << 20)) /dev/urandom >"$BIG"
    for how in parts direct; do
        run "cli-$how" 300 bash -c 'set -e
            how=$1 big=$2
            flags="--part-size 8MiB"
            [ "$how" = direct ] && flags="--direct"
            "$FERRY_BIN" upload -q -j 4 $flags --state-dir "$big.state" "$big" "$FERRY_SPACE/cli/$how.bin"
            "$FERRY_BIN" download "$FERRY_SPACE/cli/$how.bin" "$big.$how"
            cmp "$big" "$big.$how"
            echo "ferry upload ($how) and ferry download through the cluster: the same bytes"' \
            _ "$how" "$BIG"
        add "$RC" 0 0 0
    done
fi

if [ "$CLUSTER" = 1 ] && ! cluster_alive; then
    loud "a node of the cluster died during the run (see $ARTIFACTS/node-*.log)"
    FAILED=$((FAILED + 1))
elif [ "$CLUSTER" != 1 ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
    loud "ferry serve died during the run (see $SERVER_ERR)"
    tail -n 30 "$SERVER_ERR" >&2 || true
    FAILED=$((FAILED + 1))
fi
stop_server

summary="clients: $PASSED passed, $FAILED failed"
[ "$SKIPPED" != 0 ] && summary="$summary, $SKIPPED skipped"
echo "$summary"
[ "$FAILED" = 0 ]
