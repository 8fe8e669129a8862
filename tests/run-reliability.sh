#!/usr/bin/env bash
# tests/run-reliability.sh [build-directory-prefix]
#
# The reliability stage of CI (docs/reliability.md), on a clean Debian machine:
#   presets    every hardening preset (none, light, default, paranoid) built in Release with only
#              the targets needed; `ctest -L '^(reliability|abi)$'` and stress_threads in each
#   asan       clang, AddressSanitizer + UndefinedBehaviorSanitizer: the libraries' unit tests,
#              the prefixed ABI tests, the concurrency test and the fuzz corpus replay
#   fuzz       the libFuzzer harness for $STARMALLOC_FUZZ_SECONDS (default 60) seconds, from the
#              seed corpus (runs in the background while the stages below run)
#   tsan       clang, ThreadSanitizer: the arena unit test and the concurrency test
#   valgrind   gcc with DWARF 4: memcheck on the libraries' unit tests
#   clang-tidy .clang-tidy on libs/ and shim/ (known false positives:
#              tests/reliability/clang-tidy-known.txt)
#   cppcheck   on libs/ and shim/ (suppressions: tests/reliability/cppcheck-suppressions.txt)
# Build trees go to <prefix>/reliability/<stage> (default prefix: <repo>/build). Every stage
# runs even when an earlier one fails; the script fails at the end naming those that did.
# Environment: STARMALLOC_FUZZ_SECONDS, STARMALLOC_RELIABILITY_STAGES (a space-separated subset of
# the stage names above, for local runs).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${1:-$repo/build}/reliability"
jobs="$(nproc 2>/dev/null || echo 2)"
fuzz_seconds="${STARMALLOC_FUZZ_SECONDS:-60}"
stages="${STARMALLOC_RELIABILITY_STAGES:-presets asan fuzz tsan valgrind clang-tidy cppcheck}"
rel="$repo/tests/reliability"

"$repo/cmake/install-deps.sh" build-essential cmake pkg-config libcmocka-dev python3 clang \
    libclang-rt-14-dev valgrind clang-tidy cppcheck
mkdir -p "$prefix"

failed=()
started=$SECONDS
wanted() { [[ " $stages " == *" $1 "* ]]; }

# run_stage <name> <function>: runs the function with `set -e` in a subshell, times it, and
# records a failure instead of stopping.
run_stage() {
    local name="$1" start=$SECONDS rc
    shift
    echo
    echo "==== run-reliability: $name"
    set +e
    ("$@")
    rc=$?
    set -e
    if ((rc != 0)); then
        failed+=("$name")
        echo "==== run-reliability: $name FAILED after $((SECONDS - start)) s"
    else
        echo "==== run-reliability: $name passed in $((SECONDS - start)) s"
    fi
}

# configure <dir> <cmake args...>: quiet unless it fails.
configure() {
    local dir="$1"
    shift
    if ! cmake -S "$repo" -B "$dir" -DSTARMALLOC_WERROR=ON "$@" >"$dir.configure.log" 2>&1; then
        cat "$dir.configure.log"
        return 1
    fi
}

# build <dir> <targets...>: quiet unless it fails.
build() {
    local dir="$1"
    shift
    if ! cmake --build "$dir" -j "$jobs" --target "$@" >"$dir.build.log" 2>&1; then
        cat "$dir.build.log"
        return 1
    fi
}

# The executables (full paths) of the tests with CTest label $2 in build tree $1, once built.
test_executables() {
    (cd "$1" && ctest -N -L "$2" --show-only=json-v1) | python3 -c '
import json, sys
for t in json.load(sys.stdin)["tests"]:
    if "command" in t:
        print(t["command"][0])'
}

# build_unit_tests <dir>: every target under tests/unit (the unit tests and what they link).
build_unit_tests() {
    if ! cmake --build "$1/tests/unit" -j "$jobs" >"$1.build-unit.log" 2>&1; then
        cat "$1.build-unit.log"
        return 1
    fi
}

# ---- presets -------------------------------------------------------------------------------
stage_presets() {
    JOBS="$jobs" "$rel/run-presets.sh" "$prefix/presets"
}

# ---- asan: ASan + UBSan (and libFuzzer coverage, so the fuzzer shares this build) ---------
asan="$prefix/asan"
stage_asan() {
    local flags="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined,fuzzer-no-link"
    flags+=" -fno-sanitize-recover=all"
    configure "$asan" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
        "-DCMAKE_C_FLAGS=$flags" "-DCMAKE_CXX_FLAGS=$flags" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
    build_unit_tests "$asan"
    build "$asan" test_abi_prefixed abi_fatal_prefixed rel_fuzz_abi rel_fuzz_replay rel_concurrency
    export ASAN_OPTIONS=abort_on_error=0:detect_leaks=1:check_initialization_order=1
    export UBSAN_OPTIONS=print_stacktrace=1
    # unit.region is left out: its cases lower RLIMIT_AS, and the sanitizer's shadow memory
    # does not fit under any such limit (valgrind and the normal builds run it).
    cd "$asan"
    ctest --output-on-failure -j "$jobs" -L unit -E '^unit\.region$'
    ctest --output-on-failure -j "$jobs" -R '^abi\.(prefixed$|fatal\.prefixed\.)'
    ctest --output-on-failure -j "$jobs" -R '^reliability\.(fuzz_replay|concurrency)$'
}

# ---- fuzz: libFuzzer, time-bounded, in the background -------------------------------------
fuzz_pid=""
fuzz_log="$prefix/fuzz.log"
start_fuzz() {
    if [ ! -x "$asan/tests/reliability/rel_fuzz_abi" ]; then
        echo "fuzz: no fuzzer binary (the asan stage failed to build it)" >"$fuzz_log"
        fuzz_pid=none
        return
    fi
    mkdir -p "$prefix/fuzz-corpus" "$prefix/fuzz-artifacts"
    # New inputs go to fuzz-corpus (kept between local runs); the seed corpus is read-only.
    ASAN_OPTIONS=detect_leaks=1 "$asan/tests/reliability/rel_fuzz_abi" \
        -max_total_time="$fuzz_seconds" -timeout=30 -max_len=4096 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="$prefix/fuzz-artifacts/" \
        "$prefix/fuzz-corpus" "$rel/corpus" >"$fuzz_log" 2>&1 &
    fuzz_pid=$!
    echo "fuzz: running for $fuzz_seconds s in the background (pid $fuzz_pid, log $fuzz_log)"
}
# The fuzzer is a child of the main shell, so it is waited for there (run_stage's subshell
# cannot); this stage only reports.
fuzz_rc=0
wait_fuzz() {
    [[ -n "$fuzz_pid" && "$fuzz_pid" != none ]] || return 0
    wait "$fuzz_pid" || fuzz_rc=$?
}
stage_fuzz_report() {
    if [ "$fuzz_pid" = none ]; then
        cat "$fuzz_log"
        return 1
    fi
    grep -E "^(Done|stat::)|ERROR|SUMMARY|FAIL|failing input|Test unit written" "$fuzz_log" || true
    if ((fuzz_rc != 0)); then
        tail -n 60 "$fuzz_log"
        echo "fuzz: the harness found a divergence or crash; the input is in $prefix/fuzz-artifacts"
        return 1
    fi
}

# ---- tsan ----------------------------------------------------------------------------------
stage_tsan() {
    local dir="$prefix/tsan" flags="-O1 -g -fno-omit-frame-pointer -fsanitize=thread"
    configure "$dir" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
        "-DCMAKE_C_FLAGS=$flags" "-DCMAKE_CXX_FLAGS=$flags"
    build "$dir" test_arena rel_concurrency
    export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
    cd "$dir"
    ctest --output-on-failure -R '^unit\.arena$'
    ./tests/reliability/rel_concurrency 4 8 6000 2
}

# ---- valgrind ------------------------------------------------------------------------------
stage_valgrind() {
    local dir="$prefix/valgrind"
    # valgrind 3.19 cannot read the DWARF 5 that gcc 12 and clang 14 emit by default. Nor does
    # it know guard markers (MADV_GUARD_INSTALL): it takes guarded pages for readable ones, and
    # its leak check at each exit, forked test children's too, then faults on every word of
    # them (unit.arena ran for more than eight minutes without finishing). The PROT_NONE
    # guards it does know.
    configure "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS=-gdwarf-4 \
        -DCMAKE_CXX_FLAGS=-gdwarf-4 -DSTARMALLOC_GUARD_MARKERS=OFF
    build_unit_tests "$dir"
    # The unit tests link the component libraries, never the overriding shim, so cmocka's own
    # allocations are glibc's and checked like any other (they are clean). unit.region is left
    # out: it reserves 64 GiB, which valgrind's address-space manager refuses, and probes
    # PROT_NONE pages on purpose in child processes.
    # shellcheck disable=SC2016 # $1 belongs to the inner sh
    test_executables "$dir" unit | grep -v '/test_region$' | xargs -P "$jobs" -I{} sh -c '
        log="$1.valgrind.log"
        if valgrind -q --error-exitcode=99 --leak-check=full "$1" >"$log" 2>&1; then
            echo "valgrind: $(basename "$1"): clean"
        else
            cat "$log"
            echo "valgrind: $(basename "$1"): FAILED"
            exit 1
        fi' sh {}
}

# ---- static analysis -----------------------------------------------------------------------
sources_regex="$repo/(libs|shim)/.*\\.c$"
stage_clang_tidy() {
    [ -f "$asan/compile_commands.json" ] || { echo "no compile_commands.json (asan stage)"; return 1; }
    local log="$prefix/clang-tidy.log" findings="$prefix/clang-tidy.findings"
    run-clang-tidy -p "$asan" -j "$jobs" -quiet "$sources_regex" >"$log" 2>&1 || true
    # Findings as "file:line:col: warning|error: message [check]", without colours, minus the
    # known false positives (each line of the known list: <file suffix>|<check>|<message part>).
    sed -r 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^/.*:[0-9]+:[0-9]+: (warning|error): ' |
        sort -u >"$findings" || true
    local known="$rel/clang-tidy-known.txt" unexplained=0 line file check text
    while IFS= read -r line; do
        local is_known=0
        while IFS='|' read -r file check text; do
            [[ -z "$file" || "$file" == \#* ]] && continue
            if [[ "$line" == *"$file:"* && "$line" == *"$check"* && "$line" == *"$text"* ]]; then
                is_known=1
                break
            fi
        done <"$known"
        if ((is_known)); then
            echo "clang-tidy: known false positive: ${line#"$repo"/}"
        else
            echo "clang-tidy: ${line#"$repo"/}"
            unexplained=$((unexplained + 1))
        fi
    done <"$findings"
    echo "clang-tidy: $unexplained finding(s) to fix"
    ((unexplained == 0))
}

stage_cppcheck() {
    [ -f "$asan/compile_commands.json" ] || { echo "no compile_commands.json (asan stage)"; return 1; }
    cppcheck --project="$asan/compile_commands.json" --enable=warning,performance,portability \
        --library=posix --inline-suppr --suppressions-list="$rel/cppcheck-suppressions.txt" \
        --file-filter="$repo/libs/*" --file-filter="$repo/shim/*" --error-exitcode=1 --quiet \
        -j "$jobs" --template='{file}:{line}: {severity}: {message} [{id}]'
}

wanted presets && run_stage presets stage_presets
wanted asan && run_stage asan stage_asan
wanted fuzz && start_fuzz
wanted clang-tidy && run_stage clang-tidy stage_clang_tidy
wanted cppcheck && run_stage cppcheck stage_cppcheck
wanted tsan && run_stage tsan stage_tsan
wanted valgrind && run_stage valgrind stage_valgrind
wanted fuzz && wait_fuzz && run_stage fuzz stage_fuzz_report

echo
if ((${#failed[@]})); then
    echo "run-reliability: FAILED: ${failed[*]} ($((SECONDS - started)) s)"
    exit 1
fi
echo "run-reliability: all reliability checks passed ($((SECONDS - started)) s)"
