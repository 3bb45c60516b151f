#!/usr/bin/env bash
# Starts a local Ferry cluster on 127.0.0.1: PostgreSQL (scripts/pg-local.sh),
# an S3 server (scripts/s3-local.sh), N Ferry nodes sharing both, and nginx
# in front of them, round-robin. Prints the URL and the admin token.
#   scripts/cluster-local.sh          # start (3 nodes; FERRY_NODES=N for more)
#   scripts/cluster-local.sh stop     # stop all of it
# Needs a built `ferry` (FERRY_BIN, default target/release/ferry: build it
# with `cargo build --release`) and nginx (installed with apt when missing,
# as root). The nodes listen on 127.0.0.1:18181…, nginx on
# $FERRY_CLUSTER_PORT (default 18180); logs and data in $FERRY_CLUSTER_ROOT
# (default /tmp/ferry-cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${FERRY_CLUSTER_ROOT:-/tmp/ferry-cluster}"
PORT="${FERRY_CLUSTER_PORT:-18180}"
NODES="${FERRY_NODES:-3}"
BIN="${FERRY_BIN:-target/release/ferry}"
TOKEN="${FERRY_ADMIN_TOKEN:-cluster-admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')}"

stop() {
    if [ -f "$ROOT/nginx.pid" ]; then
        kill "$(cat "$ROOT/nginx.pid")" 2>/dev/null || true
    fi
    for pid in "$ROOT"/node-*.pid; do
        [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    rm -f "$ROOT"/*.pid
    FERRY_S3_ROOT="$ROOT/s3" scripts/s3-local.sh stop
    FERRY_PG_ROOT="$ROOT/pg" scripts/pg-local.sh stop
}
if [ "${1:-}" = stop ]; then stop; exit 0; fi

if [ ! -x "$BIN" ]; then
    echo "no ferry binary at $BIN: cargo build --release (or set FERRY_BIN)" >&2
    exit 1
fi
if ! command -v nginx >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >&2 ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >&2
    else
        echo "needs nginx: sudo apt-get install -y nginx" >&2
        exit 1
    fi
fi
stop 2>/dev/null || true
mkdir -p "$ROOT"
chmod 755 "$ROOT"
# Whatever fails from here stops what was started.
trap 'echo "cluster start failed; stopping what started" >&2; stop' ERR
unset FERRY_DATABASE_URL FERRY_S3_ENDPOINT
pgenv=$(FERRY_PG_ROOT="$ROOT/pg" scripts/pg-local.sh)
eval "$pgenv"
s3env=$(FERRY_S3_ROOT="$ROOT/s3" scripts/s3-local.sh)
eval "$s3env"
if [ -z "${FERRY_DATABASE_URL:-}" ] || [ -z "${FERRY_S3_ENDPOINT:-}" ]; then
    echo "PostgreSQL or S3 did not start" >&2
    stop
    exit 1
fi
export FERRY_STORE=s3 FERRY_ADMIN_TOKEN="$TOKEN" FERRY_PUBLIC_URL="http://127.0.0.1:$PORT"

upstream=""
for i in $(seq 1 "$NODES"); do
    node_port=$((PORT + i))
    FERRY_LISTEN="127.0.0.1:$node_port" FERRY_DATA_DIR="$ROOT/node-$i" \
        nohup "$BIN" serve >"$ROOT/node-$i.log" 2>&1 &
    echo $! >"$ROOT/node-$i.pid"
    upstream="$upstream    server 127.0.0.1:$node_port;"$'\n'
    # One at a time: the first migrates the database and creates the admin.
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$node_port/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fsS "http://127.0.0.1:$node_port/readyz" >/dev/null || {
        echo "node $i did not start; see $ROOT/node-$i.log" >&2
        tail -5 "$ROOT/node-$i.log" >&2
        stop
        exit 1
    }
done

# Round-robin; bodies stream through (no buffering, no size limit) and
# WebSocket upgrades (UCloud) pass.
cat >"$ROOT/nginx.conf" <<EOF
daemon on;
pid $ROOT/nginx.pid;
error_log $ROOT/nginx-error.log;
worker_processes 1;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $ROOT/nginx-body;
  proxy_temp_path $ROOT/nginx-proxy;
  upstream ferry {
$upstream  }
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:$PORT;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_http_version 1.1;
    proxy_read_timeout 3600s;
    proxy_send_timeout 3600s;
    location / {
      proxy_pass http://ferry;
      proxy_set_header Host \$http_host;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header X-Forwarded-For \$remote_addr;
    }
  }
}
EOF
nginx -c "$ROOT/nginx.conf"
for _ in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
echo "export FERRY_URL=http://127.0.0.1:$PORT"
echo "export FERRY_TOKEN=$TOKEN"
echo "# $NODES nodes behind nginx; logs in $ROOT; stop: scripts/cluster-local.sh stop" >&2
