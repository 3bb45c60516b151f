#!/usr/bin/env bash
# Runs the ferry binary under a profiler or a syscall counter, for
# `ferry-bench --ferry crates/bench/tools/ferry-under.sh`: each server the
# bench starts is then recorded into its own file under $FERRY_UNDER_OUT.
#
#   FERRY_UNDER=perf    perf record --call-graph dwarf (perf report -i …)
#   FERRY_UNDER=strace  strace -f -c: the count of each system call
#
# FERRY_BIN is the binary to run (default target/release/ferry). The tool
# attaches to this script's own PID, which then becomes ferry's (exec), so
# the bench's CPU and RSS readings still name the server.
set -euo pipefail
out=${FERRY_UNDER_OUT:-target/profile}
bin=${FERRY_BIN:-target/release/ferry}
mkdir -p "$out"
case "${FERRY_UNDER:-perf}" in
  perf) perf record -F 999 --call-graph dwarf,32768 -o "$out/perf-$$.data" -p $$ >/dev/null 2>&1 & ;;
  strace) strace -f -c -o "$out/strace-$$.txt" -p $$ >/dev/null 2>&1 & ;;
  *) echo "FERRY_UNDER must be perf or strace" >&2; exit 2 ;;
esac
sleep 0.3 # let the tool attach before the server starts
exec "$bin" "$@"
