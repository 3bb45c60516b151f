#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (issue 11, G) and prints
# its figures (executions, corpus size).
#   FUZZ_SECONDS=60 tests/fuzz/run.sh      # per target; default 15
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); works on the stable
# toolchain with RUSTC_BOOTSTRAP=1 and no sanitizer (the parsers are safe
# Rust: what is hunted is panics and broken invariants). New inputs that
# widen coverage land in fuzz/corpus/<target>; minimize them before a commit
# (`cargo fuzz cmin -s none <target> corpus/<target>`). A crash is saved
# under fuzz/artifacts/<target>/ and fails this script: turn it into a
# named regression test next to the parser, with the fix.
set -euo pipefail
cd "$(dirname "$0")/../../fuzz"
secs="${FUZZ_SECONDS:-15}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
summary=()
failed=0
for t in $(cargo fuzz list); do
    echo "== $t (${secs}s)"
    mkdir -p "corpus/$t"
    log=$(mktemp)
    rc=0
    cargo fuzz run -s none "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=256 2>&1 | tee "$log" >/dev/null || rc=$?
    execs=$(grep -oE 'Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' | tail -1 || true)
    tail -3 "$log"
    if [ "$rc" != 0 ]; then
        failed=1
        grep -E 'panicked|SUMMARY|artifact' "$log" || true
        summary+=("$t: FAILED (see fuzz/artifacts/$t)")
    else
        summary+=("$t: ${execs:-?} execs, $(ls "corpus/$t" | wc -l) corpus inputs")
    fi
    rm -f "$log"
done
echo "== fuzz figures (${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
