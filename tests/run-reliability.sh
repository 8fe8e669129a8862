#!/usr/bin/env bash
# tests/run-reliability.sh [build-directory-prefix]
#
# The reliability stage of CI (docs/reliability.md), on a clean Debian machine:
#   presets    every hardening preset (none, light, default, paranoid) built in Release with only
#              the targets needed; `ctest -L '^(reliability|abi)$'` and stress_threads in each
#   asan       clang, AddressSanitizer + UndefinedBehaviorSanitizer: the libraries' unit tests,
#              the prefixed ABI tests, the concurrency test and the fuzz corpus replay
#   fuzz       the libFuzzer harness for $STARMALLOC_FUZZ_SECONDS (default 60) seconds, from the
#              seed corpus, in preset default (the asan build) and then in a second preset that
#              rotates over none, light and paranoid from one commit to the next (its own
#              ASan build, fuzz-<preset> below); runs in the background while the stages below
#              run
#   tsan       clang, ThreadSanitizer: the arena unit test and the concurrency test
#   valgrind   gcc with DWARF 4: memcheck on the libraries' unit tests
#   clang-tidy .clang-tidy on libs/ and shim/ (known false positives:
#              tests/reliability/clang-tidy-known.txt)
#   cppcheck   on libs/ and shim/ (suppressions: tests/reliability/cppcheck-suppressions.txt)
# Build trees go to <prefix>/reliability/<stage> (default prefix: <repo>/build). Every stage
# runs even when an earlier one fails; the script fails at the end naming those that did.
# Environment: STARMALLOC_FUZZ_SECONDS, STARMALLOC_FUZZ_PRESET (the second fuzzed preset: none,
# light or paranoid, or off; default: the rotation), STARMALLOC_RELIABILITY_STAGES (a
# space-separated subset of the stage names above, for local runs).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${1:-$repo/build}/reliability"
jobs="$(nproc 2>/dev/null || echo 2)"
fuzz_seconds="${STARMALLOC_FUZZ_SECONDS:-60}"
# Faults that only presets keeping mappings or mapping without reservations can reach went
# unseen while CI fuzzed default alone: each commit also fuzzes one other preset, in turn.
rotation=(none light paranoid)
commits="$(git -C "$repo" rev-list --count HEAD 2>/dev/null || date +%j)"
fuzz_preset="${STARMALLOC_FUZZ_PRESET:-${rotation[$((10#$commits % ${#rotation[@]}))]}}"
case "$fuzz_preset" in
none | light | paranoid | off) ;;
*)
    echo "run-reliability: STARMALLOC_FUZZ_PRESET must be none, light, paranoid or off" >&2
    exit 2
    ;;
esac
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
asan_flags="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined,fuzzer-no-link"
asan_flags+=" -fno-sanitize-recover=all"
# configure_asan <dir> <cmake args...>: a clang ASan + UBSan tree.
configure_asan() {
    local dir="$1"
    shift
    configure "$dir" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
        "-DCMAKE_C_FLAGS=$asan_flags" "-DCMAKE_CXX_FLAGS=$asan_flags" "$@"
}
stage_asan() {
    configure_asan "$asan" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
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
# fuzz_preset_log <name>: the log of the fuzzer of preset <name>.
fuzz_preset_log() {
    if [ "$1" = default ]; then echo "$prefix/fuzz.log"; else echo "$prefix/fuzz-$1.log"; fi
}
# fuzz_binary <binary> <name>: fuzzes for $fuzz_seconds s; new inputs go to fuzz-corpus[-<name>]
# (kept between local runs; the seed corpus is read-only), a failing input to
# fuzz-artifacts/[<name>-]crash-....
fuzz_binary() {
    local binary="$1" name="$2" suffix=""
    [ "$name" = default ] || suffix="-$name"
    mkdir -p "$prefix/fuzz-corpus$suffix" "$prefix/fuzz-artifacts"
    ASAN_OPTIONS=detect_leaks=1 "$binary" \
        -max_total_time="$fuzz_seconds" -timeout=30 -max_len=4096 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="$prefix/fuzz-artifacts/${suffix#-}${suffix:+-}" \
        "$prefix/fuzz-corpus$suffix" "$rel/corpus" >"$(fuzz_preset_log "$name")" 2>&1
}
# fuzz_all: default, then the rotating preset in its own ASan tree (built while the other
# stages run); fails if either fuzzer failed or the second could not be built.
fuzz_all() {
    local rc=0 dir="$prefix/asan-$fuzz_preset" log
    fuzz_binary "$asan/tests/reliability/rel_fuzz_abi" default || rc=1
    [ "$fuzz_preset" = off ] && return "$rc"
    log="$(fuzz_preset_log "$fuzz_preset")"
    if ! { configure_asan "$dir" "-DSTARMALLOC_HARDENING=$fuzz_preset" &&
        build "$dir" rel_fuzz_abi; } >"$log" 2>&1; then
        echo "fuzz: the ASan build of preset $fuzz_preset failed" >>"$log"
        return 1
    fi
    fuzz_binary "$dir/tests/reliability/rel_fuzz_abi" "$fuzz_preset" || rc=1
    return "$rc"
}
fuzz_pid=""
start_fuzz() {
    if [ ! -x "$asan/tests/reliability/rel_fuzz_abi" ]; then
        echo "fuzz: no fuzzer binary (the asan stage failed to build it)" >"$(fuzz_preset_log default)"
        fuzz_pid=none
        return
    fi
    fuzz_all &
    fuzz_pid=$!
    local presets="default and $fuzz_preset"
    [ "$fuzz_preset" = off ] && presets=default
    echo "fuzz: preset(s) $presets, $fuzz_seconds s each, in the background (pid $fuzz_pid," \
        "logs $prefix/fuzz*.log)"
}
# The fuzzers run in a child of the main shell, so they are waited for there (run_stage's
# subshell cannot); this stage only reports.
fuzz_rc=0
wait_fuzz() {
    [[ -n "$fuzz_pid" && "$fuzz_pid" != none ]] || return 0
    wait "$fuzz_pid" || fuzz_rc=$?
}
stage_fuzz_report() {
    if [ "$fuzz_pid" = none ]; then
        cat "$(fuzz_preset_log default)"
        return 1
    fi
    local name log
    for name in default "$fuzz_preset"; do
        [ "$name" = off ] && continue
        log="$(fuzz_preset_log "$name")"
        echo "fuzz: preset $name"
        grep -E "^(Done|stat::)|ERROR|SUMMARY|FAIL|failing input|Test unit written|fuzz: " "$log" ||
            true
    done
    if ((fuzz_rc != 0)); then
        for name in default "$fuzz_preset"; do
            [ "$name" = off ] && continue
            echo "---- $(fuzz_preset_log "$name") (end)"
            tail -n 60 "$(fuzz_preset_log "$name")"
        done
        echo "fuzz: the harness found a divergence or crash, or a build failed; inputs are in" \
            "$prefix/fuzz-artifacts"
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
    # --fair-sched=yes: valgrind runs one thread at a time, and its default lock lets a thread
    # that releases it take it straight back; unit.arena's fork test, whose main thread forks
    # while three threads allocate, then took 1.5 to 11 minutes from run to run (10 s fairly).
    # shellcheck disable=SC2016 # $1 belongs to the inner sh
    test_executables "$dir" unit | grep -v '/test_region$' | xargs -P "$jobs" -I{} sh -c '
        log="$1.valgrind.log"
        if valgrind -q --fair-sched=yes --error-exitcode=99 --leak-check=full "$1" >"$log" 2>&1; then
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
