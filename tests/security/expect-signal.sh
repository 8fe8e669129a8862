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
if ! kill -l "$signal_name" >/dev/null 2>&1; then
    echo "expect-signal: unknown signal '$signal_name'" >&2
    exit 2
fi

expect_name=expect-signal
expect_wanted="death by SIG$signal_name right after the line 'expect-signal: faulting access ... next'"
# shellcheck source=../common/expect-lib.sh
. "$(dirname "$0")/../common/expect-lib.sh"
tmp=$expect_tmp

expect_run "$@"
expect_killed_by "$signal_name"

last_line=$(tail -n 1 "$tmp/stdout")
if ! [[ "$last_line" =~ ^expect-signal:\ faulting\ access(\ at\ 0x[0-9a-f]+)?\ next$ ]]; then
    expect_fail "the last line on stdout is not the marker printed before the faulting access, so the crash happened elsewhere"
fi
if grep -q -- '^starmalloc: fatal: ' "$tmp/stderr"; then
    expect_fail "the allocator reported a fatal error"
fi

echo "$last_line: killed by SIG$signal_name as expected"
exit 0
