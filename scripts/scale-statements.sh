#!/usr/bin/env bash
# Counts the PostgreSQL statements and S3 requests one small upload
# costs, by kind: one node on PostgreSQL + S3 takes N uploads of 4 KiB
# each way (a whole-file PUT, a tus creation carrying the file, a tus
# creation then a PATCH, create + part + commit, and a tus creation on
# this node whose PATCH goes to a second node), pg_stat_statements says
# what each statement ran, per upload, and the nodes' AWS SDK logs which
# S3 requests they sent, and (a server on this machine) the CPU the
# database's backends used per upload (docs/SCALE.md). Reads the environment of scripts/pg-local.sh (its
# server preloads pg_stat_statements) and scripts/s3-local.sh:
#   eval "$(scripts/pg-local.sh)"; eval "$(scripts/s3-local.sh)"
#   scripts/scale-statements.sh [N]        # N = 50 by default
# FERRY_BIN names the server binary (default target/release/ferry).
set -euo pipefail
N="${1:-50}"
BIN="${FERRY_BIN:-target/release/ferry}"
: "${FERRY_DATABASE_URL:?eval \"\$(scripts/pg-local.sh)\" first}"
: "${FERRY_S3_ENDPOINT:?eval \"\$(scripts/s3-local.sh)\" first}"
SERVER="${FERRY_DATABASE_URL%/*}"
DB="ferry_statements_$(date +%s%N)"
psql "$SERVER/postgres" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $DB"
URL="$SERVER/$DB"
psql "$URL" -v ON_ERROR_STOP=1 -qc "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
DATA=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
PORT2=$((PORT + 1))
# The SDK logs each attempt of each S3 request, named by its operation.
export RUST_LOG="warn,aws_sdk_s3=debug,aws_smithy_runtime::client::orchestrator=debug"
node() { # node DIR PORT
    mkdir -p "$1"
    FERRY_STORE=s3 FERRY_S3_PREFIX="statements-$DB/" "$BIN" serve --data-dir "$1" \
        --listen "127.0.0.1:$2" --database-url "$URL" >>"$1/ferry.log" 2>&1 &
}
node "$DATA/a" "$PORT"
PID=$!
trap 'kill $PID $PID2 2>/dev/null; wait $PID $PID2 2>/dev/null; rm -rf "$DATA"' EXIT
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 100); do
    [ -f "$DATA/a/admin.token" ] && curl -sf "$BASE/v1/health" >/dev/null && break
    sleep 0.1
done
node "$DATA/b" "$PORT2"
PID2=$!
BASE2="http://127.0.0.1:$PORT2"
for _ in $(seq 100); do
    curl -sf "$BASE2/v1/health" >/dev/null && break
    sleep 0.1
done
TOK=$(cat "$DATA/a/admin.token")
FILE="$DATA/4k"
head -c 4096 /dev/urandom >"$FILE"
auth=(-H "Authorization: Bearer $TOK")
put() { curl -sf -X PUT "${auth[@]}" -H "Content-Type: application/octet-stream" --data-binary @"$FILE" "$BASE$1" >/dev/null; }
for i in 1 2 3; do put "/v1/spaces/admin/files/warm/$i"; done
sleep 0.5
# The CPU this database's backends have used, in clock ticks (the server
# on this machine: /proc; nothing when it is elsewhere).
ticks() {
    local t=0 p
    for p in $(psql "$URL" -At -c "SELECT pid FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()"); do
        [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
    done
    echo "$t"
}
count() {
    local used=$(($(ticks) - TICKS))
    [ "$used" -gt 0 ] && awk -v t="$used" -v n="$N" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "PostgreSQL CPU per upload, one at a time: %.2f ms\n", 1000 * t / hz / n }'
    psql "$URL" -At -F ' | ' -c "SELECT round(sum(calls)::numeric / $N, 2),
        round((sum(total_exec_time) / sum(calls))::numeric, 3) || ' ms',
        left(regexp_replace(query, '\s+', ' ', 'g'), 110) FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND query NOT LIKE '%pg_stat_statements%'
        GROUP BY query ORDER BY 1 DESC, 2"
    psql "$URL" -At -c "SELECT 'per upload: ' || round(sum(calls)::numeric / $N, 2) FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND query NOT LIKE '%pg_stat_statements%'"
    cat "$DATA"/?/ferry.log | grep -o 'rpc.method="[A-Za-z]*".*beginning attempt' |
        sed 's/rpc.method="\([A-Za-z]*\)".*/\1/' | sort | uniq -c |
        awk -v n="$N" '{ printf "S3 %s: %.2f\n", $2, $1 / n; t += $1 } END { printf "S3 per upload: %.2f\n", t / n }'
}
reset() {
    sleep 0.5
    psql "$URL" -Atqc "SELECT pg_stat_statements_reset()" >/dev/null
    # (The nodes append to their logs, so each can be emptied.)
    for f in "$DATA"/?/ferry.log; do : >"$f"; done
    TICKS=$(ticks)
}

reset
for i in $(seq "$N"); do put "/v1/spaces/admin/files/put/$i"; done
sleep 0.5
echo "== PUT of the whole file (1 request)"; count

reset
for i in $(seq "$N"); do
    curl -sf -X POST "${auth[@]}" -H "Tus-Resumable: 1.0.0" -H "Upload-Length: 4096" \
        -H "Content-Type: application/offset+octet-stream" \
        -H "Upload-Metadata: filename $(printf 'tus/%s' "$i" | base64)" \
        --data-binary @"$FILE" "$BASE/tus/" >/dev/null
done
sleep 0.5
echo "== tus creation with the whole file (1 request)"; count

reset
for i in $(seq "$N"); do
    loc=$(curl -sf -o /dev/null -w '%header{location}' -X POST "${auth[@]}" -H "Tus-Resumable: 1.0.0" \
        -H "Upload-Length: 4096" -H "Upload-Metadata: filename $(printf 'tus2/%s' "$i" | base64)" "$BASE/tus/")
    curl -sf -X PATCH "${auth[@]}" -H "Tus-Resumable: 1.0.0" -H "Upload-Offset: 0" \
        -H "Content-Type: application/offset+octet-stream" --data-binary @"$FILE" "$BASE${loc#"$BASE"}" >/dev/null
done
sleep 0.5
echo "== tus creation, then the file in a PATCH (2 requests)"; count

three() { # NAME PART_BASE COMMIT_BASE: create on this node, the part and the commit where told
    for i in $(seq "$N"); do
        s=$(curl -sf -X POST "${auth[@]}" -H "Content-Type: application/json" \
            -d "{\"path\": \"$1/$i\", \"size\": 4096}" "$BASE/v1/sessions")
        sid=$(printf '%s' "$s" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
        up=$(printf '%s' "$s" | python3 -c 'import json, sys; print(json.load(sys.stdin)["uploads"][0]["id"])')
        curl -sf -X PUT "${auth[@]}" --data-binary @"$FILE" "$2/v1/uploads/$up/parts/1" >/dev/null
        curl -sf -X POST "${auth[@]}" "$3/v1/sessions/$sid/commit" >/dev/null
    done
    sleep 0.5
}
reset
three three "$BASE" "$BASE"
echo "== create + part + commit (3 requests)"; count

reset
three three2 "$BASE2" "$BASE2"
echo "== create + part + commit, the part and the commit on another node (3 requests)"; count
reset
three three3 "$BASE2" "$BASE"
echo "== create + part + commit, the part on another node, the commit back on the first (3 requests)"; count

reset
for i in $(seq "$N"); do
    loc=$(curl -sf -o /dev/null -w '%header{location}' -X POST "${auth[@]}" -H "Tus-Resumable: 1.0.0" \
        -H "Upload-Length: 4096" -H "Upload-Metadata: filename $(printf 'tus3/%s' "$i" | base64)" "$BASE/tus/")
    curl -sf -X PATCH "${auth[@]}" -H "Tus-Resumable: 1.0.0" -H "Upload-Offset: 0" \
        -H "Content-Type: application/offset+octet-stream" --data-binary @"$FILE" "$BASE2${loc#"$BASE"}" >/dev/null
done
sleep 0.5
echo "== tus creation on one node, the PATCH on another (2 requests)"; count
psql "$SERVER/postgres" -qc "DROP DATABASE $DB WITH (FORCE)" 2>/dev/null || true
