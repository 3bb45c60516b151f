#!/usr/bin/env bash
# Installs the peer tus servers ferry-bench compares against:
#   @tus/server (npm, into peers/tus-node/node_modules)
#   rustus 0.5.10 (cargo install into peers/rustus; ~5 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")"
(cd tus-node && npm install --no-audit --no-fund --silent)
if [ ! -x rustus/bin/rustus ]; then
  cargo install rustus --version 0.5.10 --locked --root "$PWD/rustus"
fi
echo "peers ready: node $(pwd)/tus-node/server.mjs, rustus $(pwd)/rustus/bin/rustus"
