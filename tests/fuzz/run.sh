#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (issue 11, G).
#   FUZZ_SECONDS=60 tests/fuzz/run.sh      # per target; default 20
# Needs cargo-fuzz (`cargo install cargo-fuzz`); works on the stable
# toolchain with RUSTC_BOOTSTRAP=1 and no sanitizer (the parsers are safe
# Rust: what is hunted is panics and broken invariants). New inputs that
# widen coverage land in fuzz/corpus/<target>; commit the interesting ones.
# A crash is saved under fuzz/artifacts/<target>/: turn it into a named
# regression test next to the parser.
set -euo pipefail
cd "$(dirname "$0")/../../fuzz"
secs="${FUZZ_SECONDS:-20}"
export RUSTC_BOOTSTRAP=1
for t in $(cargo fuzz list); do
    echo "== $t (${secs}s)"
    cargo fuzz run -s none "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=256
done
