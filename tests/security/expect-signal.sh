#!/usr/bin/env bash
# expect-signal.sh <SIGNAL> <command...>
#
# Runs the command and succeeds only when
#   - it was killed by SIGNAL (e.g. SIGSEGV: a guard page or a PROT_NONE quarantined page), and
#   - the last line of its stdout is the marker "expect-signal: faulting access [at 0x<hex>] next",
#     which the program prints just before the access that must fault (so a crash anywhere
#     earlier does not pass), and
#   - its stderr holds no "starmalloc: fatal:" report (the allocator did not abort instead).
# Otherwise prints what it got and exits 1 (2 for a usage error).
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 <SIGNAL> <command...>" >&2
    exit 2
fi
signal_name=${1#SIG}
shift
command_text="$*"
if ! expected=$(kill -l "$signal_name" 2>/dev/null); then
    echo "expect-signal: unknown signal '$signal_name'" >&2
    exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/expect-signal.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# No core file for the expected crash; stdin is /dev/null.
ulimit -c 0 2>/dev/null || true
# The braces' 2>/dev/null only silences bash's own "Segmentation fault" job report.
status=0
{ "$@" </dev/null >"$tmp/stdout" 2>"$tmp/stderr"; } 2>/dev/null || status=$?

fail() {
    {
        echo "expect-signal: FAIL: $1"
        echo "  command:  $command_text"
        echo "  expected: death by SIG$signal_name right after the line 'expect-signal: faulting access ... next'"
        echo "  exit status: $status"
        echo "--- stdout ---"
        cat "$tmp/stdout"
        echo "--- stderr ---"
        cat "$tmp/stderr"
        echo "--------------"
    } >&2
    exit 1
}

# bash reports a child killed by signal N as status 128 + N; the driver itself only exits
# with 0..3.
if [ "$status" -le 128 ]; then
    fail "the command exited normally (status $status) instead of dying by SIG$signal_name"
fi
signal=$((status - 128))
if [ "$signal" -ne "$expected" ]; then
    fail "the command was killed by signal $signal ($(kill -l "$signal" 2>/dev/null || echo '?')), not SIG$signal_name"
fi

last_line=$(tail -n 1 "$tmp/stdout")
if ! [[ "$last_line" =~ ^expect-signal:\ faulting\ access(\ at\ 0x[0-9a-f]+)?\ next$ ]]; then
    fail "the last line on stdout is not the marker printed before the faulting access, so the crash happened elsewhere"
fi
if grep -q -- '^starmalloc: fatal: ' "$tmp/stderr"; then
    fail "the allocator reported a fatal error"
fi

echo "$last_line: killed by SIG$signal_name as expected"
exit 0
