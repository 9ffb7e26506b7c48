#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for FUZZ_SECONDS each: 10 in `make test` (a smoke),
# 300 in `make fuzz`. FUZZ_TARGETS="a b" runs only those. Each target starts from the seeds
# committed in fuzz/seeds/<target> plus what earlier runs found (target/fuzz/corpus/<target>,
# kept between runs); a crash stops the script with the input saved under
# target/fuzz/artifacts/<target>/ (keep it as a regression test: fuzz/README.md).
#
# cargo-fuzz needs nightly rustc flags: `+nightly` when a nightly toolchain is installed, else
# the stable toolchain with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-10}
# No sanitizer by default: the code is safe Rust, and the build and runs are much faster.
# Overflow and other debug assertions are on (-a): an overflow is a crash.
sanitizer=${FUZZ_SANITIZER:-none}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "hack/fuzz.sh: cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 1
fi
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi
# Its own target directory: the sanitizer flags would otherwise rebuild the main one.
export CARGO_TARGET_DIR="$PWD/target/fuzz/build"
targets=${FUZZ_TARGETS:-$(cargo "${toolchain[@]}" fuzz list --fuzz-dir fuzz)}

echo "hack/fuzz.sh: building the targets (${toolchain[*]:-stable, RUSTC_BOOTSTRAP=1}, sanitizer $sanitizer)"
if [ -n "${FUZZ_TARGETS:-}" ]; then
    for target in $targets; do
        cargo "${toolchain[@]}" fuzz build --fuzz-dir fuzz -a -s "$sanitizer" "$target"
    done
else
    cargo "${toolchain[@]}" fuzz build --fuzz-dir fuzz -a -s "$sanitizer"
fi

for target in $targets; do
    corpus="target/fuzz/corpus/$target"
    artifacts="target/fuzz/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    echo "hack/fuzz.sh: $target for ${seconds}s"
    # New inputs go to the first directory (target/, never the committed seeds).
    log="target/fuzz/$target.log"
    status=0
    cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz -a -s "$sanitizer" "$target" \
        "$corpus" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E 'stat::number_of_executed_units|panicked at|^SUMMARY|Test unit written' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "hack/fuzz.sh: $target FAILED (exit $status); the input is in $artifacts/, the log in $log" >&2
        exit 1
    fi
done
echo "hack/fuzz.sh: every target ran ${seconds}s without a crash"
