#!/usr/bin/env bash
# A short fuzz run of every cargo-fuzz target, for CI and by hand.
#
#   bash fuzz/run-smoke.sh              # each target for 45 s
#   FUZZ_SECONDS=300 bash fuzz/run-smoke.sh
#
# Runs on the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the
# nightly-only flags it needs (sanitizers, coverage instrumentation).
# Installs cargo-fuzz if it is missing.
#
# Each target starts from its committed corpus (fuzz/corpus/<target>/,
# read only) and writes what it discovers into a temporary directory that
# is removed afterwards, so the committed corpus never grows by itself. A
# crash is saved under fuzz/artifacts/<target>/ (ignored by git) and makes
# the script exit non-zero; to keep it as a regression, minimize it
# (`cargo fuzz tmin --fuzz-dir fuzz <target> <artifact>`) and copy it into
# fuzz/corpus/<target>/, where `cargo test -p farmlog-engine --test
# fuzz_corpus` replays it.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

seconds="${FUZZ_SECONDS:-45}"
# One input taking longer than this is reported as a hang.
input_timeout_seconds=10
# Slack on top of the run time before the run itself counts as hung.
run_slack_seconds=120
targets=(open_dir decode_record apply_batch)

export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

cargo fuzz build --fuzz-dir fuzz

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in "${targets[@]}"; do
    echo "== fuzzing $target for ${seconds} s =="
    mkdir -p "$scratch/$target"
    if timeout "$((seconds + run_slack_seconds))" \
        cargo fuzz run --fuzz-dir fuzz "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout="$input_timeout_seconds" -print_final_stats=1; then
        echo "== $target: no failure in ${seconds} s =="
    else
        echo "== $target: FAILED (artifacts in fuzz/artifacts/$target/) =="
        failed+=("$target")
    fi
done

if ((${#failed[@]} > 0)); then
    echo "fuzz smoke run failed: ${failed[*]}"
    exit 1
fi
echo "fuzz smoke run passed: ${targets[*]}"
