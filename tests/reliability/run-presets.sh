#!/usr/bin/env bash
# tests/reliability/run-presets.sh <build-prefix> [preset...]
#
# The reliability programs, the ABI tests and the thread stress test for every hardening preset
# (default: none light default paranoid). Each preset gets its own Release build in
# <build-prefix>/<preset>, which builds only the targets these tests need, then runs
# `ctest -L '^(reliability|abi)$'` and stress_threads there. Every preset runs even when an
# earlier one fails; the script fails at the end naming those that did. Build trees are kept,
# so a rerun only rebuilds what changed.
# Environment: CC/CXX choose the compilers (default: cmake's), JOBS the build parallelism.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 <build-prefix> [preset...]" >&2
    exit 2
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
prefix="$1"
shift
presets=("$@")
((${#presets[@]})) || presets=(none light default paranoid)
jobs="${JOBS:-$(nproc 2>/dev/null || echo 2)}"

mkdir -p "$prefix"
targets=(starmalloc stress_threads rel_oom rel_mapcount rel_thread_churn rel_spawn rel_concurrency
         rel_fuzz_replay test_abi_prefixed test_abi_override abi_fatal_prefixed abi_fatal_override)
failed=()

for preset in "${presets[@]}"; do
    dir="$prefix/$preset"
    start=$SECONDS
    echo "run-presets: $preset: configuring and building in $dir"
    if ! cmake -S "$repo" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DSTARMALLOC_HARDENING="$preset" \
        -DSTARMALLOC_BUILD_TESTS=ON -DSTARMALLOC_BUILD_BENCHMARKS=OFF >"$dir.configure.log" 2>&1; then
        cat "$dir.configure.log"
        failed+=("$preset (configure)")
        continue
    fi
    grep -E "StarMalloc policies:" "$dir.configure.log" | sed "s/^-- /run-presets: $preset: /" || true
    if ! cmake --build "$dir" -j "$jobs" --target "${targets[@]}" >"$dir.build.log" 2>&1; then
        cat "$dir.build.log"
        failed+=("$preset (build)")
        continue
    fi
    if ! (cd "$dir" && ctest -L '^(reliability|abi)$' --output-on-failure -j "$jobs"); then
        failed+=("$preset (reliability and ABI tests)")
    fi
    # The stress test's own ctest run (label stress) is longer; here it runs with a
    # preset-specific seed so the matrix covers different interleavings.
    if ! "$dir/tests/stress/stress_threads" 8 50000 "$(cksum <<<"$preset" | cut -d' ' -f1)"; then
        failed+=("$preset (stress_threads)")
    fi
    echo "run-presets: $preset: done in $((SECONDS - start)) s"
done

if ((${#failed[@]})); then
    echo "run-presets: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "run-presets: every preset passed (${presets[*]})"
