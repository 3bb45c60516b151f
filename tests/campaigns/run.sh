#!/usr/bin/env bash
# Issue 11's campaigns, bounded, with their figures (run as root in CI so
# that the disk-full campaign can mount its tmpfs).
#   FERRY_KILLS=100 tests/campaigns/run.sh     # a longer kill loop
set -euo pipefail
cd "$(dirname "$0")/../.."
export FERRY_KILLS="${FERRY_KILLS:-30}"
if [ "$(id -u)" = 0 ]; then export FERRY_REQUIRE_DISK_FULL=1; fi
# Fuzzing: proptest properties of every parser, then cargo-fuzz when installed.
cargo test -p ferry-http --test parser_properties
cargo test -p ferry-dialects -p ferry-engine --lib properties
if cargo fuzz --version >/dev/null 2>&1; then tests/fuzz/run.sh; fi
# Torn reads, disk full, kill loop (ignored tests included: they fail until
# the fixes of other branches are merged, then the ignores come off).
cargo test -p ferry-cli --test torn_reads -- --nocapture
failed=0
cargo test -p ferry-cli --test isolation_matrix --test bad_input_tables -- --nocapture --include-ignored || failed=1
cargo test -p ferry-cli --test disk_full -- --nocapture --include-ignored --test-threads 1 || failed=1
cargo test -p ferry-cli --test kill_loop -- --nocapture --include-ignored || failed=1
exit "$failed"
