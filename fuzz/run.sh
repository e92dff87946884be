#!/usr/bin/env bash
# Runs one cargo-fuzz target for a set time on the stable toolchain.
# Usage: fuzz/run.sh TARGET [SECONDS]   targets: record_decode json_request config_parse
#
# cargo-fuzz wants nightly-only flags (-Z sanitizer, coverage instrumentation);
# RUSTC_BOOTSTRAP=1 lets the installed stable compiler accept them. Installs cargo-fuzz
# (with --locked, about a minute) if it is missing. New inputs that raise coverage are
# added to fuzz/corpus/TARGET; a crash leaves its input in fuzz/artifacts/TARGET and
# makes this script fail. The last line is libFuzzer's count of executions.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh TARGET [SECONDS]}
seconds=${2:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# A target dir of its own: the fuzz build uses other flags than the main crate's.
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target}
mkdir -p "corpus/$target"
cargo fuzz run --sanitizer none "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 2>&1 \
    | tee "/tmp/creditsd-fuzz-$target.log" | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+== ERROR|SUMMARY|thread .* panicked)' || true
if grep -q -E 'panicked|ERROR: libFuzzer|SUMMARY' "/tmp/creditsd-fuzz-$target.log"; then
    echo "fuzz/run.sh: $target found a failure; input in fuzz/artifacts/$target" >&2
    exit 1
fi
