#!/usr/bin/env bash
# Issue 11's campaigns, longer than in `cargo test --workspace`, with their
# figures printed. CI runs this as its own stage, as root, so that the
# disk-full campaign can mount its tmpfs (a skip fails there).
#   FERRY_KILLS=300 tests/campaigns/run.sh     # a longer kill loop
set -euo pipefail
cd "$(dirname "$0")/../.."
export FERRY_KILLS="${FERRY_KILLS:-100}"
if [ "$(id -u)" = 0 ]; then export FERRY_REQUIRE_DISK_FULL=1; fi
failed=0
run() {
    echo "== campaign: $1"
    shift
    "$@" || { echo "!! campaign failed: $*"; failed=1; }
}
# Fuzzing: proptest properties of every parser, then cargo-fuzz when
# installed (tests/fuzz/run.sh says how).
# `--workspace` everywhere: the same features as README's test command, so
# nothing is built a second time with other features.
run "parser properties" cargo test --workspace --test parser_properties
run "dialect and token properties" cargo test --workspace --lib properties
# cargo-fuzz: FERRY_FUZZ=1 installs it when missing (~6 min on 2 cores),
# builds the targets (~5 min) and fuzzes each ${FUZZ_SECONDS:-15} s. Off by
# default: CI's time budget keeps the proptest properties above, which run
# the same parsers on every `cargo test`.
if [ -n "${FERRY_FUZZ:-}" ]; then
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "== installing cargo-fuzz"
        cargo install cargo-fuzz --locked || echo "!! cargo-fuzz could not be installed"
    fi
    run "cargo-fuzz (${FUZZ_SECONDS:-15} s per target)" tests/fuzz/run.sh
else
    echo "== campaign: cargo-fuzz skipped (FERRY_FUZZ=1 tests/campaigns/run.sh runs it)"
fi
run "torn reads" cargo test --workspace --test torn_reads -- --nocapture
run "isolation and bad input" cargo test --workspace --test isolation_matrix --test bad_input_tables -- --nocapture
run "disk full" cargo test --workspace --test disk_full -- --nocapture --test-threads 1
run "kill loop ($FERRY_KILLS kills)" cargo test --workspace --test kill_loop -- --nocapture
exit "$failed"
